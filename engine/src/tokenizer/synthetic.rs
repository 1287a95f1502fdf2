//! The small real BPE vocabulary of the synthetic models, learned from an embedded text.

use std::collections::HashMap;

use super::{byte_chars, pre_tokenize, NamedSpecials, VocabParts};

/// Text the synthetic vocabulary is trained on (written for this project).
const CORPUS: &str = "The harness runs the engine and the reference on the same model and the same \
tokens, and compares every tensor it can see. When the two disagree, it names the first place where \
they part: the step, the position, the layer and the stage. A ternary weight is minus one, zero or \
plus one, times a scale; the activations that meet it are rounded to eight bits, so the sums are \
exact integers. Models are generated from a seed, written to a file, and read back by three \
readers that were written apart from each other. Numbers such as 1, 2, 3, 10, 42, 100, 256, 1024 and \
2048 appear in prompts too, and so do words like it's, we're, they've, I'm, you'll and she'd. \
Tests should fail when something is wrong, and pass when it is right; a test that cannot fail \
proves nothing. Keep the receipts: they say what ran, on which machine, with which kernels, and how \
fast. Then the next change can be measured against this one, side by side, in the same run.";

/// A small real BPE vocabulary of exactly `n_vocab` tokens: the 256 byte tokens, merges learned
/// from an embedded English text (most frequent pair first, ties to the lexically smallest, until
/// every word is one token),
/// `<|bos|>` and `<|eos|>` control tokens, and unused tokens to fill the rest. Deterministic.
pub fn synthetic_bpe_vocab(n_vocab: usize) -> Result<VocabParts, String> {
    if n_vocab < 258 {
        return Err(format!(
            "a byte-level BPE vocabulary needs at least 258 tokens, `n_vocab` is {n_vocab}"
        ));
    }
    let bc = byte_chars();
    let mut tokens: Vec<String> = bc.iter().map(|c| c.to_string()).collect();
    let mut token_types = vec![1; 256];
    let mut words: HashMap<Vec<String>, usize> = HashMap::new();
    for w in pre_tokenize(CORPUS) {
        let syms = w.bytes().map(|b| bc[b as usize].to_string()).collect();
        *words.entry(syms).or_default() += 1;
    }
    let mut words: Vec<(Vec<String>, usize)> = words.into_iter().collect();
    words.sort();
    let mut merges = Vec::new();
    let budget = n_vocab - 258;
    while merges.len() < budget {
        let mut counts: HashMap<(String, String), usize> = HashMap::new();
        for (syms, n) in &words {
            for p in syms.windows(2) {
                *counts.entry((p[0].clone(), p[1].clone())).or_default() += n;
            }
        }
        let best = counts
            .into_iter()
            .filter(|(_, n)| *n >= 1)
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
        let Some(((l, r), _)) = best else { break };
        let joined = format!("{l}{r}");
        for (syms, _) in &mut words {
            let mut i = 0;
            while i + 1 < syms.len() {
                if syms[i] == l && syms[i + 1] == r {
                    syms[i] = joined.clone();
                    syms.remove(i + 1);
                }
                i += 1;
            }
        }
        merges.push(format!("{l} {r}"));
        tokens.push(joined);
        token_types.push(1);
    }
    let bos = tokens.len() as u32;
    tokens.push("<|bos|>".into());
    tokens.push("<|eos|>".into());
    token_types.extend([3, 3]);
    let mut k = 0;
    while tokens.len() < n_vocab {
        tokens.push(format!("<|unused_{k}|>"));
        token_types.push(5);
        k += 1;
    }
    Ok(VocabParts {
        tokens,
        token_types,
        merges,
        bos: Some(bos),
        eos: Some(bos + 1),
        add_bos: false,
        add_eos: false,
        named: NamedSpecials::default(),
    })
}
