//! JUnit XML, one `<testcase>` per trial. Messages come from child processes (llama.cpp's log,
//! an external reference's output), so they may hold anything: ANSI colour sequences are
//! removed, and the characters XML 1.0 cannot carry at all (control characters other than tab,
//! newline and carriage return; U+FFFE, U+FFFF) are written as visible `\u{..}` text. JUnit
//! consumers refuse a file with a raw ESC byte in it.

use std::fmt::Write;

use super::Report;
use crate::run::Status;

/// `s` without ANSI escape sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL` or `ESC \`),
/// and two-character escapes (`ESC c`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                        chars.next();
                        break;
                    }
                }
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

/// Whether XML 1.0 allows `c` in a document at all (even as a character reference).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Escape for XML element content or a double-quoted attribute (`attr`: newlines and tabs are
/// kept as character references, which attribute normalization would otherwise turn to spaces).
pub fn xml_escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in strip_ansi(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\n' if attr => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attr => out.push_str("&#9;"),
            c if !xml_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The report as JUnit XML.
pub fn junit(r: &Report) -> String {
    let esc = |s: &str| xml_escape(s, true);
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"harness\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n<testsuite name=\"scenarios\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
        r.rows.len(),
        r.failed,
        r.ignored,
        r.seconds,
        r.rows.len(),
        r.failed,
        r.ignored,
        r.seconds
    );
    for row in &r.rows {
        let v = &row.verdict;
        let _ = write!(
            x,
            "  <testcase classname=\"scenarios::{}\" name=\"{}\" time=\"{:.3}\">",
            esc(&row.scenario),
            esc(&row.check),
            v.seconds
        );
        match v.status {
            Status::Pass => {}
            Status::Fail => {
                let _ = write!(
                    x,
                    "<failure message=\"{}\">{}</failure>",
                    esc(&super::first_line_of_failure(&v.message)),
                    xml_escape(&v.message, false)
                );
            }
            Status::Ignored => {
                let _ = write!(x, "<skipped message=\"{}\"/>", esc(&v.message));
            }
        }
        x.push_str("</testcase>\n");
    }
    x.push_str("</testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_sequences_are_removed_and_other_controls_shown() {
        assert_eq!(
            strip_ansi("\u{1b}[1;31merror\u{1b}[0m: x \u{1b}]0;title\u{7}y"),
            "error: x y"
        );
        assert_eq!(
            xml_escape("a\u{0}b\u{8}<c>&\"\n", true),
            "a\\u{0}b\\u{8}&lt;c&gt;&amp;&quot;&#10;"
        );
        assert_eq!(xml_escape("l1\nl2\t\u{fffe}", false), "l1\nl2\t\\u{fffe}");
    }
}
