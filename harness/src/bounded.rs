//! Checks a YAML or JSON document's shape before it is deserialized, for what the parsers let
//! through:
//!
//! - **Alias bombs.** serde_norway expands every YAML alias where it is used: a 1 MB string
//!   aliased 3000 times in a 1 MB scenario allocates 3 GB. The walk counts the nodes and scalar
//!   bytes the document expands to, without allocating them, and refuses it past
//!   [`MAX_EXPANDED_NODES`] or [`MAX_EXPANDED_BYTES`].
//! - **Repeated keys.** serde refuses a struct's repeated field, but a map field (a scenario's
//!   `tolerances.points`, a receipt's `verdicts`) keeps the last value silently: `"parity":
//!   "fail", "parity": "pass"` would read as a pass. The walk refuses any mapping that repeats a
//!   key, at any depth.
//!
//! Errors are the format's own (`serde_norway::Error` with its line and column, or
//! `serde_json::Error`), so callers report them as they report a parse error.

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Most nodes (scalars, sequences, mappings) a document may expand to.
pub const MAX_EXPANDED_NODES: usize = 1 << 20;
/// Most scalar bytes a document may expand to (four times the largest text file read).
pub const MAX_EXPANDED_BYTES: usize = 16 << 20;

/// Walk one YAML document: refused past the expansion bounds or on a repeated key.
///
/// Nesting past serde_norway's recursion limit is left to the typed read: it has the same limit
/// (so it cannot go deeper), and it names the first field that does not belong, which a document
/// nested 200 levels deep under an unknown key deserves more than "recursion limit exceeded".
pub fn yaml(text: &str) -> Result<(), serde_norway::Error> {
    let limits = (MAX_EXPANDED_NODES, MAX_EXPANDED_BYTES);
    match walk(serde_norway::Deserializer::from_str(text), limits) {
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => Ok(()),
        other => other,
    }
}

/// Walk one JSON document: refused on a repeated key. JSON has no aliases, so what it expands
/// to is bounded by its size, which the caller's read limit bounds (a run's `report.json` may
/// hold millions of values).
pub fn json(text: impl AsRef<[u8]>) -> Result<(), serde_json::Error> {
    let mut d = serde_json::Deserializer::from_slice(text.as_ref());
    walk(&mut d, (usize::MAX, usize::MAX))?;
    d.end()
}

fn walk<'de, D: Deserializer<'de>>(d: D, limits: (usize, usize)) -> Result<(), D::Error> {
    let budget = Budget {
        nodes: Cell::new(0),
        bytes: Cell::new(0),
        limits,
    };
    Walk {
        budget: &budget,
        key: false,
    }
    .deserialize(d)
    .map(|_| ())
}

struct Budget {
    nodes: Cell<usize>,
    bytes: Cell<usize>,
    /// Most nodes and scalar bytes.
    limits: (usize, usize),
}

impl Budget {
    fn take<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let nodes = self.nodes.get() + 1;
        let bytes = self.bytes.get().saturating_add(bytes);
        self.nodes.set(nodes);
        self.bytes.set(bytes);
        if nodes > self.limits.0 || bytes > self.limits.1 {
            return Err(E::custom(format!(
                "the document expands to more than {} values or {} MiB of text (aliases repeating large values?): write it without them",
                self.limits.0,
                self.limits.1 >> 20
            )));
        }
        Ok(())
    }
}

/// A mapping key's text when it is a scalar; nothing for any other node (values are counted,
/// never copied).
type Key = Option<String>;

#[derive(Clone, Copy)]
struct Walk<'b> {
    budget: &'b Budget,
    /// Whether this node is a mapping key, whose text the duplicate check needs.
    key: bool,
}

impl<'b> Walk<'b> {
    fn nested(self, key: bool) -> Walk<'b> {
        Walk { key, ..self }
    }

    fn text<E: de::Error>(self, bytes: usize, text: impl FnOnce() -> String) -> Result<Key, E> {
        self.budget.take(bytes)?;
        Ok(self.key.then(text))
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! scalar {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<E: de::Error>(self, v: $t) -> Result<Key, E> {
            self.text(8, || v.to_string())
        }
    )*};
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128,
        visit_u128: u128, visit_f64: f64, visit_char: char);

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        self.text(v.len(), || v.to_owned())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Key, E> {
        self.budget.take(v.len())?;
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
        self.budget.take(0)?;
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Key, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        self.deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Key, A::Error> {
        self.budget.take(0)?;
        while seq.next_element_seed(self.nested(false))?.is_some() {}
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        self.budget.take(0)?;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key_seed(self.nested(true))? {
            if let Some(k) = key {
                if !seen.insert(k.clone()) {
                    return Err(de::Error::custom(format!(
                        "the key `{k}` appears twice in one mapping: give each key once"
                    )));
                }
            }
            map.next_value_seed(self.nested(false))?;
        }
        Ok(None)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Key, A::Error> {
        // A YAML tag (`!name value`): nothing here reads one, and serde would take the value
        // under it silently.
        let (tag, _) = data.variant_seed(self.nested(true))?;
        Err(de::Error::custom(format!(
            "the tag `!{}` means nothing here: write the value without it",
            tag.unwrap_or_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_bomb_is_refused_and_ordinary_aliases_pass() {
        let big = "y".repeat(1 << 20);
        let bomb = format!("prompts: [&b '{big}', {}]\n", vec!["*b"; 20].join(", "));
        let e = yaml(&bomb).unwrap_err().to_string();
        assert!(e.contains("expands to more than"), "{e}");
        // Nested lists of lists: few bytes, a million nodes.
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (i, prev) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let name = ["b", "c", "d", "e", "f"][i];
            laughs += &format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(", ")
            );
        }
        // (serde_norway's own repetition limit or the walk's bound, whichever comes first.)
        assert!(yaml(&laughs).is_err());
        yaml("tol: &t { rel_l2_max: 0.1 }\npoints:\n  a: *t\n  b: *t\n").unwrap();
        yaml("").unwrap();
    }

    #[test]
    fn custom_tags_are_refused_and_core_ones_read() {
        let e = yaml("threads: !foo 2\n").unwrap_err().to_string();
        assert!(e.contains("the tag `!foo` means nothing here"), "{e}");
        yaml("threads: !!int 2\ndescription: !!str x\n").unwrap();
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth_in_yaml_and_json() {
        let e = yaml("tolerances:\n  points:\n    a: 1\n    b: 2\n    a: 3\n").unwrap_err();
        // Named by its path, at the mapping's first line.
        assert!(
            e.to_string()
                .starts_with("tolerances.points: the key `a` appears twice"),
            "{e}"
        );
        assert_eq!(e.location().map(|l| l.line()), Some(3), "{e}");
        let e = json(r#"{"verdicts": {"parity": "fail", "parity": "pass"}}"#).unwrap_err();
        assert!(
            e.to_string().contains("the key `parity` appears twice"),
            "{e}"
        );
        json(r#"{"verdicts": {"parity": "fail", "golden": "pass"}, "x": [{"a": 1}, {"a": 2}]}"#)
            .unwrap();
        assert!(json(r#"{"a": 1} {"b": 2}"#).is_err());
    }

    #[test]
    fn a_json_document_of_more_values_than_a_yaml_one_may_expand_to_reads() {
        // A long run's report.json: past the alias-expansion bounds, which JSON cannot need.
        let big = format!("[{}0]", "0,".repeat(MAX_EXPANDED_NODES + 10));
        json(&big).unwrap();
        assert!(yaml(&big).is_err());
    }
}
