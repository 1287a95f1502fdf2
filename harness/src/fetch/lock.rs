//! `models.lock`: the real models the harness can fetch, each with its URL, size, hashes, license
//! and architecture. A YAML file at the repository root; errors name the file, the line and the
//! field expected.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock file's format version.
pub const LOCK_VERSION: u32 = 1;

/// The fields of a locked model, for "did you mean" and for missing-field hints.
const MODEL_FIELDS: &[&str] = &[
    "name",
    "url",
    "size",
    "sha256",
    "blake3",
    "license",
    "architecture",
    "description",
];

/// A parsed, validated `models.lock`.
#[derive(Debug, Clone)]
pub struct ModelLock {
    /// Where it was read from (as given).
    pub path: PathBuf,
    pub models: Vec<LockedModel>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LockFile {
    version: u32,
    models: Vec<LockedModel>,
}

/// One model of the lock.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LockedModel {
    /// What scenarios (`model: { locked: NAME }`) and `harness fetch-models NAME` call it; also
    /// the file name: `<dir>/<name>.gguf`.
    pub name: String,
    /// Where to download it from (`http://` or `https://`; redirects are followed).
    pub url: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file (64 hex digits); at least one of `sha256`, `blake3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// BLAKE3 of the file (64 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// The model's license (SPDX id where there is one).
    pub license: String,
    /// `general.architecture` of the GGUF file.
    pub architecture: String,
    /// Free text: where the hashes were taken from, what the model is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ModelLock {
    /// The model called `name`.
    pub fn get(&self, name: &str) -> Option<&LockedModel> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The names of the locked models, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }
}

/// A bad lock file: where (line and column 0 when the file cannot be read), and what was
/// expected.
#[derive(Debug, thiserror::Error)]
pub struct LockError {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path, self.line, self.column, self.message
            )
        }
    }
}

/// Read and validate a lock file.
pub fn load_lock(path: &Path) -> Result<ModelLock, LockError> {
    let text = bitnet_engine::files::read_text_limited(
        path,
        bitnet_engine::files::MAX_TEXT_BYTES,
        "lock file",
    )
    .map_err(|e| LockError {
        path: path.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read the lock file: {e}"),
    })?;
    parse_lock(&text, path)
}

/// Parse and validate a lock file's text (`path` names it in errors).
pub fn parse_lock(text: &str, path: &Path) -> Result<ModelLock, LockError> {
    let shown = path.display().to_string();
    let parsed = crate::bounded::yaml(text).and_then(|()| serde_norway::from_str(text));
    let file: LockFile = parsed.map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let mut message = e.to_string();
        // serde_norway appends " at line L column C"; the prefix already says where.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        if message.contains("missing field") && message.contains("models[") {
            message.push_str(
                "; a model needs `name`, `url`, `size`, `sha256` and/or `blake3`, `license`, `architecture`",
            );
        }
        if let Some(rest) = message.find("unknown field `").map(|i| &message[i + 15..]) {
            if let Some(word) = rest.split('`').next() {
                if let Some(m) = crate::scenario::did_you_mean(word, MODEL_FIELDS.iter().copied())
                {
                    let hint = format!("; did you mean `{m}`?");
                    message.push_str(&hint);
                }
            }
        }
        LockError {
            path: shown.clone(),
            line,
            column,
            message,
        }
    })?;
    let err = |model: Option<usize>, field: &str, message: String| {
        let (line, column) = locate_field(text, model, field);
        LockError {
            path: shown.clone(),
            line,
            column,
            message,
        }
    };
    if file.version != LOCK_VERSION {
        return Err(err(
            None,
            "version",
            format!("`version` is {}, expected {LOCK_VERSION}", file.version),
        ));
    }
    if file.models.is_empty() {
        return Err(err(
            None,
            "models",
            "`models` is empty: lock at least one model".into(),
        ));
    }
    for (i, m) in file.models.iter().enumerate() {
        let at = |field: &str, message: String| err(Some(i), field, message);
        let valid_name = !m.name.is_empty()
            && !m.name.starts_with('.')
            && m.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(at(
                "name",
                format!(
                    "`models[{i}].name` is `{}`, expected letters, digits, `-`, `_` or `.` (it names the file `<name>.gguf`)",
                    m.name
                ),
            ));
        }
        if let Some(j) = file.models[..i].iter().position(|o| o.name == m.name) {
            return Err(at(
                "name",
                format!(
                    "`models[{i}].name` `{}` is also the name of `models[{j}]`: names are unique",
                    m.name
                ),
            ));
        }
        if !(m.url.starts_with("https://") || m.url.starts_with("http://")) {
            return Err(at(
                "url",
                format!(
                    "`{}`: `url` is `{}`, expected an `https://` or `http://` URL",
                    m.name, m.url
                ),
            ));
        }
        if m.size == 0 {
            return Err(at(
                "size",
                format!(
                    "`{}`: `size` is 0, expected the file's size in bytes",
                    m.name
                ),
            ));
        }
        if m.sha256.is_none() && m.blake3.is_none() {
            return Err(at(
                "name",
                format!(
                    "`{}`: expected `sha256` or `blake3` (64 hex digits): a download is verified against it",
                    m.name
                ),
            ));
        }
        for (field, v) in [("sha256", &m.sha256), ("blake3", &m.blake3)] {
            if let Some(h) = v {
                if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Err(at(
                        field,
                        format!("`{}`: `{field}` must be 64 hex digits, found `{h}`", m.name),
                    ));
                }
            }
        }
        for (field, v) in [("license", &m.license), ("architecture", &m.architecture)] {
            if v.trim().is_empty() {
                return Err(at(field, format!("`{}`: `{field}` is empty", m.name)));
            }
        }
    }
    let mut models = file.models;
    for m in &mut models {
        // Compared case-insensitively; shown in lowercase.
        m.sha256 = m.sha256.take().map(|h| h.to_ascii_lowercase());
        m.blake3 = m.blake3.take().map(|h| h.to_ascii_lowercase());
    }
    Ok(ModelLock {
        path: path.to_owned(),
        models,
    })
}

/// The nearest `models.lock` in `dir` or above it.
pub fn find_lock(dir: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    dir.ancestors()
        .map(|d| d.join("models.lock"))
        .find(|p| p.is_file())
}

/// The 1-based line and column of `field` in model `model` (the `model`-th item of the
/// `models:` list), or of a top-level key when `model` is `None`; the item's own line when the
/// field is not written there.
fn locate_field(text: &str, model: Option<usize>, field: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let key_at = |line: &str| -> Option<usize> {
        let pat = format!("{field}:");
        let mut from = 0;
        while let Some(i) = line[from..].find(&pat) {
            let at = from + i;
            let before = line[..at].chars().last();
            if before.is_none_or(|c| c.is_whitespace() || matches!(c, '-' | '{' | ',')) {
                return Some(at);
            }
            from = at + pat.len();
        }
        None
    };
    let Some(model) = model else {
        for (i, l) in lines.iter().enumerate() {
            if let Some(c) = key_at(l) {
                if l.len() - l.trim_start().len() == c {
                    return (i + 1, c + 1);
                }
            }
        }
        return (1, 1);
    };
    // Items of the `models:` list: lines starting with `-` at the first item's indentation.
    let Some(start) = lines
        .iter()
        .position(|l| l.trim_start().starts_with("models:"))
    else {
        return (1, 1);
    };
    let mut items = Vec::new();
    let mut indent = None;
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = l.trim_start();
        let ind = l.len() - trimmed.len();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with('-') && indent.is_none_or(|x| x == ind) {
            indent = Some(ind);
            items.push(i);
        } else if indent.is_some_and(|x| ind < x) || (indent.is_none() && ind == 0) {
            break;
        }
    }
    let Some(&first) = items.get(model) else {
        return (start + 1, 1);
    };
    let end = items.get(model + 1).copied().unwrap_or(lines.len());
    for (i, l) in lines.iter().enumerate().take(end).skip(first) {
        if let Some(c) = key_at(l) {
            return (i + 1, c + 1);
        }
    }
    let l = lines[first];
    (first + 1, l.len() - l.trim_start().len() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: 1\nmodels:\n  - name: a\n    url: https://example.invalid/a.gguf\n    size: 10\n    sha256: 0000000000000000000000000000000000000000000000000000000000000000\n    license: MIT\n    architecture: bitnet\n  - name: b\n    url: http://127.0.0.1:1/b.gguf\n    size: 3\n    blake3: 1111111111111111111111111111111111111111111111111111111111111111\n    license: MIT\n    architecture: bitnet\n";

    fn error_of(text: &str) -> String {
        parse_lock(text, Path::new("models.lock"))
            .expect_err("an error")
            .to_string()
    }

    #[test]
    fn a_good_lock_parses() {
        let lock = parse_lock(GOOD, Path::new("models.lock")).unwrap();
        assert_eq!(lock.names(), ["a", "b"]);
        assert_eq!(lock.get("b").unwrap().size, 3);
        assert!(lock.get("c").is_none());
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let cases: &[(&str, String, &[&str])] = &[
            (
                "bad hex",
                GOOD.replace("sha256: 0000", "sha256: zz00"),
                &["models.lock:6:5", "`sha256` must be 64 hex digits"],
            ),
            (
                "no hash",
                GOOD.replace(
                    "    blake3: 1111111111111111111111111111111111111111111111111111111111111111\n",
                    "",
                ),
                &["models.lock:9:5", "expected `sha256` or `blake3`"],
            ),
            (
                "missing url",
                GOOD.replace("    url: http://127.0.0.1:1/b.gguf\n", ""),
                &["models.lock:9:", "missing field `url`", "a model needs"],
            ),
            (
                "misspelt field",
                GOOD.replace("license: MIT\n    architecture: bitnet\n  - name: b", "licence: MIT\n    architecture: bitnet\n  - name: b"),
                &["models.lock:7:", "unknown field `licence`", "did you mean `license`?"],
            ),
            (
                "duplicate name",
                GOOD.replace("name: b", "name: a"),
                &["models.lock:9:5", "names are unique"],
            ),
            (
                "bad url",
                GOOD.replace("http://127.0.0.1:1/b.gguf", "ftp://x/b.gguf"),
                &["models.lock:10:5", "expected an `https://` or `http://` URL"],
            ),
            (
                "zero size",
                GOOD.replace("size: 3", "size: 0"),
                &["models.lock:11:5", "`size` is 0"],
            ),
            (
                "wrong version",
                GOOD.replace("version: 1", "version: 2"),
                &["models.lock:1:1", "`version` is 2, expected 1"],
            ),
            (
                "size not a number",
                GOOD.replace("size: 3", "size: three"),
                &["models.lock:11:", "size"],
            ),
            (
                "a name with a slash",
                GOOD.replace("name: b", "name: ../b"),
                &["models.lock:9:5", "`models[1].name` is `../b`"],
            ),
        ];
        for (what, text, parts) in cases {
            let e = error_of(text);
            for p in *parts {
                assert!(e.contains(p), "{what}: `{e}` lacks `{p}`");
            }
        }
    }

    #[test]
    fn hashes_are_lowercased() {
        let lock = parse_lock(
            &GOOD.replace(
                "0000000000000000000000000000000000000000000000000000000000000000",
                "ABCDEF0000000000000000000000000000000000000000000000000000000000",
            ),
            Path::new("models.lock"),
        )
        .unwrap();
        assert!(lock.models[0]
            .sha256
            .as_ref()
            .unwrap()
            .starts_with("abcdef"));
    }
}
