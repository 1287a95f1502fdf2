//! Byte-level BPE tokenizer, as llama.cpp runs `tokenizer.ggml.model = "gpt2"` vocabularies
//! (`src/llama-vocab.cpp` `llm_tokenizer_bpe`, `src/unicode.cpp`
//! `unicode_regex_split_custom_gpt2`), and the small real BPE vocabulary of the synthetic models.
//!
//! Text prompts go through the vocabulary stored in the GGUF: pre-tokenization with the GPT-2
//! rules, bytes mapped to printable code points (GPT-2's `bytes_to_unicode`), then merges by rank
//! (the leftmost pair of the lowest rank first), and byte tokens for anything left unmerged.

use std::collections::HashMap;

use unicode_general_category::{get_general_category, GeneralCategory as G};

use crate::gguf::{GgufFile, Value};

mod names;
mod special;
mod synthetic;
use special::Fragment;
pub use special::NamedSpecials;
pub use synthetic::synthetic_bpe_vocab;

/// Why a vocabulary could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("`{file}`: tokenizer key `{key}`: {what}")]
    Key {
        file: String,
        key: String,
        what: String,
    },
    #[error("`{file}`: tokenizer model `{model}` is not supported (supported: gpt2; `none` has no tokenizer)")]
    Model { file: String, model: String },
    #[error("`{file}`: pre-tokenizer `{pre}` is not supported (supported: gpt-2, default, and the LLaMA 3 family: llama-bpe, llama3, llama-v3, falcon3, falcon-h1, pixtral, midm-2.0, lfm2, jina-v5-nano)")]
    Pre { file: String, pre: String },
}

/// The parts of a BPE vocabulary, as stored under `tokenizer.ggml.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabParts {
    pub tokens: Vec<String>,
    /// llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub token_types: Vec<i32>,
    /// `"left right"`, by rank.
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token`: EOS last when special tokens are added.
    pub add_eos: bool,
    /// The special-token ids the file names (those llama.cpp then does not look for by text).
    pub named: NamedSpecials,
}

/// A byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_chars: [char; 256],
    char_bytes: HashMap<char, u8>,
    /// Each token's attributes as llama.cpp derives them ([`special::attributes`]).
    attr: Vec<u16>,
    /// The user-defined tokens matched in text before BPE, in matching order.
    matched: Vec<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub pre: PreTokenizer,
}

/// GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the others to 256 + n in order.
pub fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).expect("valid")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid")
        };
    }
    out
}

fn is_letter(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
    )
}

fn is_number(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::DecimalNumber | G::LetterNumber | G::OtherNumber
    )
}

/// llama.cpp's whitespace set (`unicode_set_whitespace`).
fn is_whitespace(c: char) -> bool {
    matches!(
        c as u32,
        0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
    )
}

/// GPT-2 pre-tokenization, as `unicode_regex_split_custom_gpt2` implements
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
pub fn pre_tokenize(text: &str) -> Vec<String> {
    let c: Vec<char> = text.chars().collect();
    let n = c.len();
    let at = |i: usize| c.get(i).copied();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < n {
        let start = pos;
        let cpt = c[pos];
        if cpt == '\'' && pos + 1 < n {
            let a = c[pos + 1];
            if matches!(a, 's' | 't' | 'm' | 'd') {
                out.push(c[pos..pos + 2].iter().collect());
                pos += 2;
                continue;
            }
            if pos + 2 < n && matches!((a, c[pos + 2]), ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                out.push(c[pos..pos + 3].iter().collect());
                pos += 3;
                continue;
            }
        }
        let probe = if cpt == ' ' { at(pos + 1) } else { Some(cpt) };
        let class = |x: Option<char>| -> u8 {
            match x {
                None => 0,
                Some(x) if is_letter(x) => 1,
                Some(x) if is_number(x) => 2,
                Some(x) if is_whitespace(x) => 3,
                Some(_) => 4,
            }
        };
        let k = class(probe);
        if k == 1 || k == 2 || k == 4 {
            pos += usize::from(cpt == ' ');
            while class(at(pos)) == k {
                pos += 1;
            }
            out.push(c[start..pos].iter().collect());
            continue;
        }
        let mut ws = 0;
        while at(pos + ws).is_some_and(is_whitespace) {
            ws += 1;
        }
        if ws > 1 && pos + ws < n {
            // \s+(?!\S): leave the last whitespace for the next word.
            pos += ws - 1;
        } else if ws > 0 {
            pos += ws;
        } else {
            pos += 1;
        }
        out.push(c[start..pos].iter().collect());
    }
    out
}

/// LLaMA 3 pre-tokenization, as `unicode_regex_split_custom_llama3` implements
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
pub fn pre_tokenize_llama3(text: &str) -> Vec<String> {
    let c: Vec<char> = text.chars().collect();
    let n = c.len();
    let at = |i: usize| c.get(i).copied();
    let letter = |i: usize| at(i).is_some_and(is_letter);
    let number = |i: usize| at(i).is_some_and(is_number);
    let space = |i: usize| at(i).is_some_and(is_whitespace);
    let crlf = |i: usize| matches!(at(i), Some('\r' | '\n'));
    let lower = |i: usize| at(i).map(|x| x.to_lowercase().next().unwrap_or(x));
    let mut out = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    let add = |end: usize, start: &mut usize, out: &mut Vec<String>| {
        if end > *start {
            out.push(c[*start..end].iter().collect());
        }
        *start = end;
    };
    while pos < n {
        let cpt = c[pos];
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if cpt == '\'' && pos + 1 < n {
            let a = lower(pos + 1);
            if matches!(a, Some('s' | 't' | 'm' | 'd')) {
                pos += 2;
                add(pos, &mut start, &mut out);
                continue;
            }
            if pos + 2 < n {
                let b = lower(pos + 2);
                if matches!(
                    (a, b),
                    (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l'))
                ) {
                    pos += 3;
                    add(pos, &mut start, &mut out);
                    continue;
                }
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(cpt == '\r' || cpt == '\n' || is_number(cpt)) && (is_letter(cpt) || letter(pos + 1)) {
            pos += 1;
            while letter(pos) {
                pos += 1;
            }
            add(pos, &mut start, &mut out);
            continue;
        }
        // \p{N}{1,3}
        if is_number(cpt) {
            let mut ini = pos;
            while number(pos) {
                pos += 1;
                if pos - ini >= 3 {
                    add(pos, &mut start, &mut out);
                    ini = pos;
                }
            }
            add(pos, &mut start, &mut out);
            continue;
        }
        // <space>?[^\s\p{L}\p{N}]+[\r\n]*
        let other = |i: usize| at(i).is_some() && !space(i) && !letter(i) && !number(i);
        let probe = if cpt == ' ' { pos + 1 } else { pos };
        if other(probe) {
            pos += usize::from(cpt == ' ');
            while other(pos) {
                pos += 1;
            }
            while crlf(pos) {
                pos += 1;
            }
            add(pos, &mut start, &mut out);
            continue;
        }
        let mut ws = 0;
        let mut last_crlf_end = 0;
        while space(pos + ws) {
            if crlf(pos + ws) {
                last_crlf_end = pos + ws + 1;
            }
            ws += 1;
        }
        if last_crlf_end > 0 {
            // \s*[\r\n]+
            pos = last_crlf_end;
        } else if ws > 1 && pos + ws < n {
            // \s+(?!\S)
            pos += ws - 1;
        } else if ws > 0 {
            pos += ws;
        } else {
            pos += 1;
        }
        add(pos, &mut start, &mut out);
    }
    out
}

/// Which pre-tokenizer a vocabulary uses (`tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `gpt-2` / `default`: [`pre_tokenize`].
    Gpt2,
    /// The LLaMA 3 family (`llama-bpe`, ...): [`pre_tokenize_llama3`], and a word that is itself
    /// a token is taken whole, without merges (llama.cpp's `ignore_merges`).
    Llama3,
}

impl PreTokenizer {
    /// The pre-tokenizer llama.cpp picks for a `tokenizer.ggml.pre` value.
    pub fn from_name(pre: &str) -> Option<PreTokenizer> {
        match pre {
            "gpt-2" | "default" => Some(PreTokenizer::Gpt2),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => Some(PreTokenizer::Llama3),
            _ => None,
        }
    }
}

/// A merge's two sides as llama.cpp reads `"left right"`: split at the first space after the
/// first byte; a merge without one pairs two empty strings.
pub fn merge_pair(m: &str) -> (&str, &str) {
    match m.bytes().skip(1).position(|b| b == b' ') {
        Some(at) => (&m[..at + 1], &m[at + 2..]),
        None => ("", ""),
    }
}

impl Tokenizer {
    /// Build from vocabulary parts (GPT-2 pre-tokenization).
    pub fn from_parts(p: &VocabParts) -> Tokenizer {
        Tokenizer::from_parts_with(p, PreTokenizer::Gpt2)
    }

    /// Build from vocabulary parts with the given pre-tokenizer.
    pub fn from_parts_with(p: &VocabParts, pre: PreTokenizer) -> Tokenizer {
        let byte_chars = byte_chars();
        let char_bytes = byte_chars
            .iter()
            .enumerate()
            .map(|(b, &ch)| (ch, b as u8))
            .collect();
        let ids = p
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        // The first rank of a pair repeated stands, as in llama.cpp's map.
        let mut ranks = HashMap::with_capacity(p.merges.len());
        for (i, m) in p.merges.iter().enumerate() {
            let (l, r) = merge_pair(m);
            ranks.entry((l.to_string(), r.to_string())).or_insert(i);
        }
        let attr = special::attributes(&p.tokens, &p.token_types, p.named, p.eos);
        let matched = special::matched_in_text(&p.tokens, &attr);
        Tokenizer {
            tokens: p.tokens.clone(),
            ids,
            ranks,
            byte_chars,
            char_bytes,
            attr,
            matched,
            bos: p.bos,
            eos: p.eos,
            add_bos: p.add_bos,
            add_eos: p.add_eos,
            pre,
        }
    }

    /// The tokenizer of a GGUF file: `None` when it has none (`tokenizer.ggml.model` absent or
    /// `none`); an error names the key that is missing or malformed.
    pub fn from_gguf(f: &GgufFile) -> Result<Option<Tokenizer>, TokenizerError> {
        let file = f.name().to_string();
        let key_err = |key: &str, what: &str| TokenizerError::Key {
            file: file.clone(),
            key: key.into(),
            what: what.into(),
        };
        let model = match f.get("tokenizer.ggml.model") {
            None => return Ok(None),
            Some(v) => v
                .as_str()
                .ok_or_else(|| key_err("tokenizer.ggml.model", "expected a string"))?
                .to_string(),
        };
        match model.as_str() {
            "none" | "no_vocab" => return Ok(None),
            "gpt2" => {}
            _ => return Err(TokenizerError::Model { file, model }),
        }
        let pre = match f.get("tokenizer.ggml.pre") {
            None => "default",
            Some(Value::String(p)) if p.is_empty() => "default",
            Some(Value::String(p)) => p.as_str(),
            Some(v) => {
                return Err(key_err(
                    "tokenizer.ggml.pre",
                    &format!(
                        "expected a string, found {} {}",
                        v.type_name(),
                        v.display_short()
                    ),
                ))
            }
        };
        let Some(pre_type) = PreTokenizer::from_name(pre) else {
            return Err(TokenizerError::Pre {
                file,
                pre: pre.into(),
            });
        };
        let strings = |key: &str| -> Result<Vec<String>, TokenizerError> {
            let a = match f.get(key) {
                None => return Err(key_err(key, "missing, expected an array of strings")),
                Some(Value::Array(a)) => a,
                Some(v) => {
                    return Err(key_err(
                        key,
                        &format!(
                            "expected an array of strings, found {} {}",
                            v.type_name(),
                            v.display_short()
                        ),
                    ))
                }
            };
            a.values
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| key_err(key, "expected strings"))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        // llama.cpp aborts on a vocabulary with one string twice (its text-to-id map would drop
        // one of them): refuse it, naming both ids.
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if let Some(first) = seen.insert(t.as_str(), i) {
                return Err(key_err(
                    "tokenizer.ggml.tokens",
                    &format!("token {i} repeats token {first}'s string {t:?}; each must be unique"),
                ));
            }
        }
        let merges = strings("tokenizer.ggml.merges")?;
        // As llama.cpp reads them: each key of exactly its type (llama.cpp refuses the model
        // otherwise), token types an int32 array covering every token.
        let found = |v: &Value| format!("found {} {}", v.type_name(), v.display_short());
        let token_types = match f.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) if a.values.iter().all(|v| matches!(v, Value::I32(_))) => {
                if a.values.len() < tokens.len() {
                    return Err(key_err(
                        "tokenizer.ggml.token_type",
                        &format!(
                            "{} types for {} tokens, expected one per token",
                            a.values.len(),
                            tokens.len()
                        ),
                    ));
                }
                a.values
                    .iter()
                    .filter_map(Value::as_i64)
                    .map(|t| t as i32)
                    .collect()
            }
            Some(v) => {
                return Err(key_err(
                    "tokenizer.ggml.token_type",
                    &format!("expected an array of int32, {}", found(v)),
                ))
            }
            None => vec![1; tokens.len()],
        };
        // A special token's id: a uint32 when present. llama.cpp's defaults for a `gpt2`
        // vocabulary are 11, and an id past the vocabulary falls back to the default (disabled
        // when that is past it too).
        let n_tokens = tokens.len() as u64;
        let default_id = (11 < n_tokens).then_some(11);
        let special = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match f.get(key) {
                None => Ok(default_id),
                Some(Value::U32(id)) if u64::from(*id) < n_tokens => Ok(Some(*id)),
                Some(Value::U32(_)) => Ok(default_id),
                Some(v) => Err(key_err(key, &format!("expected a uint32, {}", found(v)))),
            }
        };
        // Without the key, llama.cpp adds a BOS for the LLaMA 3 pre-tokenizers only.
        let flag = |key: &str, default: bool| match f.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(key_err(key, &format!("expected a bool, {}", found(v)))),
        };
        let add_bos = flag(
            "tokenizer.ggml.add_bos_token",
            pre_type == PreTokenizer::Llama3,
        )?;
        let add_eos = flag("tokenizer.ggml.add_eos_token", false)?;
        // The other special ids llama.cpp reads: each a uint32 (it refuses the model otherwise);
        // one within the vocabulary stops llama.cpp looking for that kind's token by its text.
        let mut named = NamedSpecials::default();
        for (key, kind) in special::NAMED_SPECIAL_KEYS {
            match f.get(key) {
                None => {}
                Some(Value::U32(id)) if u64::from(*id) < n_tokens => named.set(kind),
                Some(Value::U32(_)) => {}
                Some(v) => return Err(key_err(key, &format!("expected a uint32, {}", found(v)))),
            }
        }
        for key in special::OTHER_SPECIAL_KEYS {
            if let Some(v) = f.get(key).filter(|v| !matches!(v, Value::U32(_))) {
                return Err(key_err(key, &format!("expected a uint32, {}", found(v))));
            }
        }
        Ok(Some(Tokenizer::from_parts_with(
            &VocabParts {
                tokens,
                token_types,
                merges,
                bos: special("tokenizer.ggml.bos_token_id")?,
                eos: special("tokenizer.ggml.eos_token_id")?,
                add_bos,
                add_eos,
                named,
            },
            pre_type,
        )))
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Token ids of `text` as `llama_tokenize(add_special, parse_special = false)` gives them:
    /// BOS first and EOS last when the vocabulary asks for them and `add_special`; user-defined
    /// tokens cut out of the text first, byte-level BPE on the pieces between them.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        for f in special::partition(text, &self.matched, &self.tokens) {
            match f {
                Fragment::Token(id) => out.push(id),
                Fragment::Text(t) => self.encode_text(t, &mut out),
            }
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// Byte-level BPE of a piece of text without special tokens.
    fn encode_text(&self, text: &str, out: &mut Vec<u32>) {
        let words = match self.pre {
            PreTokenizer::Gpt2 => pre_tokenize(text),
            PreTokenizer::Llama3 => pre_tokenize_llama3(text),
        };
        for word in words {
            let mapped: String = word.bytes().map(|b| self.byte_chars[b as usize]).collect();
            if self.pre == PreTokenizer::Llama3 {
                if let Some(&id) = self.ids.get(&mapped) {
                    out.push(id);
                    continue;
                }
            }
            let mut symbols: Vec<String> = mapped.chars().map(String::from).collect();
            loop {
                let mut best: Option<(usize, usize)> = None;
                for i in 0..symbols.len().saturating_sub(1) {
                    if let Some(&r) = self
                        .ranks
                        .get(&(symbols[i].clone(), symbols[i + 1].clone()))
                    {
                        let r = if crate::planted::on("tokenizer_merge_rank_reversed") {
                            usize::MAX - r
                        } else {
                            r
                        };
                        if best.is_none_or(|(br, _)| r < br) {
                            best = Some((r, i));
                        }
                    }
                }
                let Some((_, i)) = best else { break };
                let right = symbols.remove(i + 1);
                symbols[i].push_str(&right);
            }
            for s in symbols {
                match self.ids.get(&s) {
                    Some(&id) => out.push(id),
                    None => {
                        // A symbol the vocabulary lacks: as llama.cpp, each byte of its text
                        // looked up as a one-byte token (only ASCII can be one), the rest
                        // dropped.
                        for b in s.bytes().filter(u8::is_ascii) {
                            if let Some(&id) = self.ids.get(&char::from(b).to_string()) {
                                out.push(id);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Text of `ids`, each token rendered as `llama_token_to_piece(special = false)` renders it
    /// for a BPE vocabulary (invalid UTF-8 in the joined bytes replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(t) = self.tokens.get(id as usize) {
                self.piece(t, self.attr[id as usize], &mut bytes);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// One token's bytes: control and unknown tokens none, user-defined ones their text, normal
    /// ones their text mapped back to bytes (a character outside the byte map written as
    /// llama.cpp writes it, `[UNK_BYTE_0x..` and the token's text `]`), byte tokens the byte of
    /// their `<0xHH>` text, any other type none.
    fn piece(&self, t: &str, attr: u16, bytes: &mut Vec<u8>) {
        if attr & (special::CONTROL | special::UNKNOWN) != 0 {
        } else if attr & special::USER_DEFINED != 0 {
            bytes.extend_from_slice(t.as_bytes());
        } else if attr & special::NORMAL != 0 {
            for ch in t.chars() {
                match self.char_bytes.get(&ch) {
                    Some(&b) => bytes.push(b),
                    None => {
                        bytes.extend_from_slice(b"[UNK_BYTE_0x");
                        for b in ch.to_string().bytes() {
                            bytes.extend_from_slice(format!("{b:02x}").as_bytes());
                        }
                        bytes.extend_from_slice(t.as_bytes());
                        bytes.push(b']');
                    }
                }
            }
        } else if attr & special::BYTE != 0 {
            // `strtol(text.substr(3, 2), 16)`: the hex digits there, 0 when none.
            let hex: String = t
                .bytes()
                .skip(3)
                .take(2)
                .take_while(u8::is_ascii_hexdigit)
                .map(char::from)
                .collect();
            bytes.push(u8::from_str_radix(&hex, 16).unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_pre_tokenization_hand_worked() {
        // As the GPT-2 regex splits them: contractions, ` ?letters`, ` ?digits`, ` ?other`,
        // whitespace runs leaving one space to the next word.
        assert_eq!(pre_tokenize("Hello world"), ["Hello", " world"]);
        assert_eq!(pre_tokenize("it's 42!"), ["it", "'s", " 42", "!"]);
        assert_eq!(pre_tokenize("a   b"), ["a", "  ", " b"]);
        assert_eq!(pre_tokenize("end  "), ["end", "  "]);
        assert_eq!(pre_tokenize("x\n\ny"), ["x", "\n", "\n", "y"]);
        assert_eq!(pre_tokenize("we're ok"), ["we", "'re", " ok"]);
        assert_eq!(pre_tokenize("héllo wörld"), ["héllo", " wörld"]);
        assert_eq!(pre_tokenize("..."), ["..."]);
    }

    #[test]
    fn llama3_pre_tokenization_hand_cases() {
        let p = |t: &str| pre_tokenize_llama3(t);
        // Letters take one leading non-letter, non-number, non-newline character.
        assert_eq!(p("Hello world"), ["Hello", " world"]);
        assert_eq!(p("(hello)"), ["(hello", ")"]);
        // Contractions in any case; digits in runs of at most three.
        assert_eq!(p("IT'S 12345"), ["IT", "'S", " ", "123", "45"]);
        assert_eq!(p("we'RE"), ["we", "'RE"]);
        // Punctuation keeps the newlines after it; whitespace ending in a newline is one piece.
        assert_eq!(p("a.\n\nb"), ["a", ".\n\n", "b"]);
        assert_eq!(p("x  \n y"), ["x", "  \n", " y"]);
        // \s+(?!\S) leaves the last space for the next word; trailing spaces stay together.
        assert_eq!(p("a   b  "), ["a", "  ", " b", "  "]);
    }

    #[test]
    fn bpe_merges_by_rank_hand_worked() {
        // Vocabulary: bytes, then merges "a b" (rank 0) and "ab c" (rank 1).
        let bc = byte_chars();
        let mut tokens: Vec<String> = bc.iter().map(|c| c.to_string()).collect();
        tokens.push("ab".into());
        tokens.push("abc".into());
        let p = VocabParts {
            token_types: vec![1; tokens.len()],
            tokens,
            merges: vec!["a b".into(), "ab c".into()],
            bos: None,
            eos: None,
            add_bos: false,
            add_eos: false,
            named: NamedSpecials::default(),
        };
        let t = Tokenizer::from_parts(&p);
        assert_eq!(t.encode("abc", true), vec![257]);
        assert_eq!(t.encode("abd", true), vec![256, b'd' as u32]);
        // " abc" is one word; the space maps to `Ġ` (byte 32, token 32) and is not merged.
        assert_eq!(bc[32], 'Ġ');
        assert_eq!(t.encode(" abc", true), vec![32, 257]);
        assert_eq!(t.decode(&t.encode("abd ab\n", false)), "abd ab\n");
        // Equal ranks (one pair, overlapping): the leftmost pair merges first, so "aaa" is
        // "aa" + "a" and "aaaaa" is "aa" + "aa" + "a".
        let mut tokens: Vec<String> = bc.iter().map(|c| c.to_string()).collect();
        tokens.push("aa".into());
        let t = Tokenizer::from_parts(&VocabParts {
            token_types: vec![1; tokens.len()],
            tokens,
            merges: vec!["a a".into()],
            bos: None,
            eos: None,
            add_bos: false,
            add_eos: false,
            named: NamedSpecials::default(),
        });
        let a = u32::from(b'a');
        assert_eq!(t.encode("aaa", false), vec![256, a]);
        assert_eq!(t.encode("aaaaa", false), vec![256, 256, a]);
    }

    /// llama.cpp's BPE fallback and byte tokens, hand-worked: a symbol the vocabulary lacks keeps
    /// only the one-byte tokens of its ASCII bytes (`text_to_token` of one raw byte, which only
    /// ASCII can match: token texts are UTF-8); a byte token `<0xHH>` renders as the byte HH
    /// (`strtol(.., 16)`).
    #[test]
    fn missing_symbols_fall_back_to_ascii_bytes_and_byte_tokens_render_their_byte() {
        let bc = byte_chars();
        // The ASCII byte characters, 'Ã' (byte 0xC3) and 'Â' (byte 0xC2), but not '©' (0xA9);
        // then byte tokens.
        let mut tokens: Vec<String> = bc[..128].iter().map(|c| c.to_string()).collect();
        tokens.push(bc[0xC3].to_string()); // 128
        tokens.push(bc[0xC2].to_string()); // 129
        let mut token_types = vec![1; tokens.len()];
        for b in ["<0x0A>", "<0x41>", "<0xC3>", "<0xA9>", "<0xzz>"] {
            tokens.push(b.into()); // 130 ..= 134
            token_types.push(6);
        }
        let t = Tokenizer::from_parts(&VocabParts {
            token_types,
            tokens,
            merges: vec![],
            bos: None,
            eos: None,
            add_bos: false,
            add_eos: false,
            named: NamedSpecials::default(),
        });
        // "é" is bytes C3 A9: symbol 'Ã' is a token; '©' is not, and its UTF-8 bytes (C2 A9) are
        // not ASCII, so nothing of it is kept (not 'Â', whose byte is C2).
        assert_eq!(t.encode("é", false), vec![128]);
        assert_eq!(
            t.encode("aé!", false),
            vec![u32::from(b'a'), 128, u32::from(b'!')]
        );
        // Byte tokens: hex, not decimal; no hex digits after `<0x` give byte 0.
        assert_eq!(t.decode(&[130, 131]), "\nA");
        assert_eq!(t.decode(&[132, 133]), "é");
        assert_eq!(t.decode(&[134]), "\0");
    }

    #[test]
    fn synthetic_vocab_is_deterministic_and_exact_in_size() {
        let a = synthetic_bpe_vocab(512).unwrap();
        assert_eq!(a, synthetic_bpe_vocab(512).unwrap());
        assert_eq!(a.tokens.len(), 512);
        assert_eq!(a.tokens[a.bos.unwrap() as usize], "<|bos|>");
        let big = synthetic_bpe_vocab(32002).unwrap();
        assert_eq!(big.tokens.len(), 32002);
        assert!(big.merges.len() > 300, "{}", big.merges.len());
        assert!(synthetic_bpe_vocab(100).is_err());
        let t = Tokenizer::from_parts(&a);
        let ids = t.encode("The harness runs the engine", false);
        assert!(
            ids.len() < 10,
            "merges learned from the corpus apply: {ids:?}"
        );
        assert_eq!(t.decode(&ids), "The harness runs the engine");
    }

    proptest::proptest! {
        #[test]
        fn encode_decode_round_trips(s in "\\PC{0,40}") {
            let t = Tokenizer::from_parts(&synthetic_bpe_vocab(400).unwrap());
            proptest::prop_assert_eq!(t.decode(&t.encode(&s, false)), s);
        }
    }
}
