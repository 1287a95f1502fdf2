//! Token attributes and special tokens as llama.cpp derives them (`src/llama-vocab.cpp`,
//! `llama_vocab::impl::load` and `tokenizer_st_partition`): each token's attribute from its
//! `tokenizer.ggml.token_type`, then the overrides llama.cpp applies by token text (end-of-turn,
//! fill-in-the-middle and end-of-generation tokens become control tokens), then the partition of a
//! text around the user-defined tokens before byte-level BPE sees it.
//!
//! Text is tokenized as `llama_tokenize` does with `parse_special = false`: user-defined tokens
//! are matched in the text (longest first), control and unknown tokens are not.

use std::collections::BTreeSet;

/// llama.cpp's `llama_token_attr` bits.
pub const UNKNOWN: u16 = 1 << 0;
pub const UNUSED: u16 = 1 << 1;
pub const NORMAL: u16 = 1 << 2;
pub const CONTROL: u16 = 1 << 3;
pub const USER_DEFINED: u16 = 1 << 4;
pub const BYTE: u16 = 1 << 5;

/// Which special-token ids the file sets (a uint32 within the vocabulary): llama.cpp looks for
/// a kind's token by its text only when the file does not name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamedSpecials {
    pub eot: bool,
    pub eom: bool,
    pub fim_pre: bool,
    pub fim_suf: bool,
    pub fim_mid: bool,
    pub fim_pad: bool,
    pub fim_rep: bool,
    pub fim_sep: bool,
}

/// The keys of [`NamedSpecials`], each with the kind it names (the last three are llama.cpp's
/// deprecated names of the first three FIM ids).
pub const NAMED_SPECIAL_KEYS: [(&str, usize); 11] = [
    ("tokenizer.ggml.eot_token_id", 0),
    ("tokenizer.ggml.eom_token_id", 1),
    ("tokenizer.ggml.fim_pre_token_id", 2),
    ("tokenizer.ggml.fim_suf_token_id", 3),
    ("tokenizer.ggml.fim_mid_token_id", 4),
    ("tokenizer.ggml.fim_pad_token_id", 5),
    ("tokenizer.ggml.fim_rep_token_id", 6),
    ("tokenizer.ggml.fim_sep_token_id", 7),
    ("tokenizer.ggml.prefix_token_id", 2),
    ("tokenizer.ggml.suffix_token_id", 3),
    ("tokenizer.ggml.middle_token_id", 4),
];

/// The other special-token keys llama.cpp reads as a uint32 (a key of another type makes it
/// refuse the model).
pub const OTHER_SPECIAL_KEYS: [&str; 4] = [
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.seperator_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.mask_token_id",
];

impl NamedSpecials {
    pub fn set(&mut self, kind: usize) {
        let f = [
            &mut self.eot,
            &mut self.eom,
            &mut self.fim_pre,
            &mut self.fim_suf,
            &mut self.fim_mid,
            &mut self.fim_pad,
            &mut self.fim_rep,
            &mut self.fim_sep,
        ];
        if let Some(slot) = f.into_iter().nth(kind) {
            *slot = true;
        }
    }
}

/// Texts llama.cpp takes as each kind's token when the file names none (`load`, "auto-detect
/// special tokens by text"), in the order of [`NamedSpecials`]'s fields.
const DETECTED: [&[&str]; 8] = [
    &[
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "<｜end▁of▁sentence｜>",
        "<end_of_utterance>",
    ],
    &["<|eom_id|>"],
    &[
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ],
    &[
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ],
    &[
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ],
    &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    &[
        "<|fim_repo|>",
        "<|repo_name|>",
        "<fim-repo>",
        "<REPO>",
        "<reponame>",
    ],
    &["<|file_sep|>"],
];

/// Texts of end-of-generation tokens: llama.cpp makes each a control token.
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Tokens llama.cpp always treats as user-defined (its gpt-oss workaround).
const ALWAYS_USER_DEFINED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// The attribute of a `tokenizer.ggml.token_type` value.
fn from_type(t: i32) -> u16 {
    match t {
        1 => NORMAL,
        2 => UNKNOWN,
        3 => CONTROL,
        4 => USER_DEFINED,
        5 => UNUSED,
        6 => BYTE,
        _ => 0,
    }
}

/// Every token's attributes, as llama.cpp's vocabulary load leaves them. `eos` is the EOS id in
/// use (after defaults). Where a vocabulary holds several candidate texts for one kind (both
/// `<|fim_prefix|>` and `<PRE>`, say), llama.cpp takes the first in its hash map's order, which
/// this does not reproduce: the lowest id is taken.
pub fn attributes(
    tokens: &[String],
    types: &[i32],
    named: NamedSpecials,
    eos: Option<u32>,
) -> Vec<u16> {
    let mut attr: Vec<u16> = (0..tokens.len())
        .map(|i| from_type(types.get(i).copied().unwrap_or(1)))
        .collect();
    let given = [
        named.eot,
        named.eom,
        named.fim_pre,
        named.fim_suf,
        named.fim_mid,
        named.fim_pad,
        named.fim_rep,
        named.fim_sep,
    ];
    // The detected id of each kind (None where the file names it or no text matches).
    let mut detected: [Option<usize>; 8] = [None; 8];
    for (kind, texts) in DETECTED.iter().enumerate() {
        if given[kind] {
            continue;
        }
        if let Some(id) = tokens.iter().position(|t| texts.contains(&t.as_str())) {
            detected[kind] = Some(id);
            attr[id] |= CONTROL;
        }
    }
    for (t, a) in tokens.iter().zip(attr.iter_mut()) {
        if *a & CONTROL != 0 && t.contains("unused") {
            *a |= UNUSED;
        }
    }
    let mut eog: BTreeSet<usize> = detected[5..].iter().flatten().copied().collect();
    for (id, t) in tokens.iter().enumerate() {
        if END_OF_GENERATION.contains(&t.as_str()) {
            eog.insert(id);
            attr[id] |= CONTROL;
        }
    }
    for (id, t) in tokens.iter().enumerate() {
        if ALWAYS_USER_DEFINED.contains(&t.as_str()) {
            attr[id] = USER_DEFINED;
        }
    }
    eog.extend(eos.map(|e| e as usize).filter(|&e| e < tokens.len()));
    eog.extend(detected[0]);
    eog.extend(detected[1]);
    let in_eog = |text: &str| eog.iter().find(|&&id| tokens[id] == text).copied();
    let (ret, call, calls, flush) = (
        in_eog("<|return|>"),
        in_eog("<|call|>"),
        in_eog("<|calls|>"),
        in_eog("<|flush|>"),
    );
    if let Some(end) = eog.iter().rev().find(|&&id| tokens[id] == "<|end|>") {
        let has_call = call.is_some() || calls.is_some();
        if has_call && (ret.is_some() || flush.is_some()) {
            attr[*end] = USER_DEFINED;
        }
    }
    if in_eog("<|tool_response>").is_some() || in_eog("<|plamo:eos|>").is_some() {
        if let Some(s) = in_eog("</s>") {
            attr[s] = NORMAL;
        }
    }
    attr
}

/// The tokens matched in text, in llama.cpp's order: user-defined tokens that are neither
/// control nor unknown, longest text first (ties by id), empty texts left out.
pub fn matched_in_text(tokens: &[String], attr: &[u16]) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..tokens.len())
        .filter(|&i| {
            let a = attr[i];
            a & (CONTROL | USER_DEFINED | UNKNOWN) != 0
                && a & (CONTROL | UNKNOWN) == 0
                && !tokens[i].is_empty()
        })
        .map(|i| i as u32)
        .collect();
    ids.sort_by_key(|&i| std::cmp::Reverse(tokens[i as usize].len()));
    ids
}

/// A piece of a partitioned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// `text` split around the tokens of `order` (each token in turn, over every text fragment left,
/// its leftmost occurrences first), as `tokenizer_st_partition` does.
pub fn partition<'a>(text: &'a str, order: &[u32], tokens: &[String]) -> Vec<Fragment<'a>> {
    let mut frags = vec![Fragment::Text(text)];
    if text.is_empty() {
        return Vec::new();
    }
    for &id in order {
        let needle = tokens[id as usize].as_str();
        let mut next = Vec::with_capacity(frags.len());
        for f in frags {
            let Fragment::Text(mut rest) = f else {
                next.push(f);
                continue;
            };
            while let Some(at) = rest.find(needle) {
                if at > 0 {
                    next.push(Fragment::Text(&rest[..at]));
                }
                next.push(Fragment::Token(id));
                rest = &rest[at + needle.len()..];
            }
            if !rest.is_empty() {
                next.push(Fragment::Text(rest));
            }
        }
        frags = next;
    }
    frags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn partition_hand_worked() {
        let tokens = strings(&["<a>", "<ab>", "x"]);
        // Longest first: `<ab>` is cut out before `<a>` could match inside it.
        let order = matched_in_text(&tokens, &[USER_DEFINED, USER_DEFINED, NORMAL]);
        assert_eq!(order, [1, 0]);
        use Fragment::*;
        assert_eq!(
            partition("1<ab>2<a><a>3<ab", &order, &tokens),
            [
                Text("1"),
                Token(1),
                Text("2"),
                Token(0),
                Token(0),
                Text("3<ab")
            ]
        );
        assert_eq!(partition("<a>", &order, &tokens), [Token(0)]);
        assert_eq!(partition("", &order, &tokens), []);
    }

    #[test]
    fn control_and_unknown_tokens_are_not_matched() {
        let tokens = strings(&["<c>", "<u>", "<d>", "<n>", ""]);
        let attr = [CONTROL, UNKNOWN, USER_DEFINED, NORMAL, USER_DEFINED];
        assert_eq!(matched_in_text(&tokens, &attr), [2]);
    }

    #[test]
    fn texts_make_control_tokens_as_llama_cpp_does() {
        let tokens = strings(&[
            "a",
            "<|eot_id|>",
            "<|fim_prefix|>",
            "<PRE>",
            "<|channel|>",
            "</s>",
            "<|unused_1|>",
        ]);
        let types = [1, 4, 4, 1, 3, 1, 3];
        let a = attributes(&tokens, &types, NamedSpecials::default(), None);
        assert_eq!(a[0], NORMAL);
        assert_eq!(a[1], USER_DEFINED | CONTROL);
        // Only the first FIM-prefix text found is the FIM token.
        assert_eq!(a[2], USER_DEFINED | CONTROL);
        assert_eq!(a[3], NORMAL);
        assert_eq!(a[4], USER_DEFINED);
        assert_eq!(a[5], NORMAL | CONTROL);
        assert_eq!(a[6], CONTROL | UNUSED);
        // A FIM id named by the file: no detection by text.
        let named = NamedSpecials {
            fim_pre: true,
            ..NamedSpecials::default()
        };
        assert_eq!(attributes(&tokens, &types, named, None)[2], USER_DEFINED);
    }
}
