//! `bitnet-harness`: runs YAML scenarios against the BitNet engine and the llama.cpp reference,
//! compares traces, keeps goldens and writes reports (see DESIGN.md for the data flow):
//! [`scenario`] → model (in [`run`]) → engine and [`reference`](mod@reference) → [`compare`] → verdicts
//! ([`run`]) → [`golden`] / [`report`].

pub mod bench;
pub mod bounded;
pub mod calibrate;
pub mod compare;
pub mod fetch;
pub mod golden;
pub mod receipt;
pub mod reference;
pub mod replay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod tune;

/// `word` as one word of a POSIX shell command the harness suggests (`harness bless NAME`),
/// quoted where the shell would otherwise split or expand it.
pub fn shell_word(word: &str) -> String {
    match shlex::try_quote(word) {
        Ok(q) => q.into_owned(),
        // A NUL cannot reach a shell; say which word it was.
        Err(_) => format!("{word:?}"),
    }
}

#[cfg(test)]
mod shell_word_tests {
    use super::shell_word;

    #[test]
    fn plain_names_stay_bare_and_others_are_quoted_for_sh() {
        assert_eq!(shell_word("tiny"), "tiny");
        assert_eq!(shell_word("kv_f16-2"), "kv_f16-2");
        // Each quoted form read back by POSIX sh gives the name (hand-worked).
        assert_eq!(shell_word("my scenario"), "'my scenario'");
        assert_eq!(shell_word("a;rm -rf x"), "'a;rm -rf x'");
        assert_eq!(shell_word("it's"), r#""it's""#);
        assert_eq!(shell_word("$(x)"), "'$(x)'");
    }
}
