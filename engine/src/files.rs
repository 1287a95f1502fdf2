//! Opening and reading files a user or another tool hands over (models, trace files, scenarios,
//! receipts, reports): regular files only, and never more bytes than the kind of file may have.
//!
//! Opening a named pipe for reading blocks until some writer opens it, and a device such as
//! `/dev/zero` reads without end, so a plain `File::open` plus `read_to_end` on such a path hangs
//! or fills memory. [`open_regular`] opens without blocking (`O_NONBLOCK`, which does nothing to
//! a regular file's reads or maps) and refuses anything but a regular file; [`read_limited`] and
//! [`read_text_limited`] also refuse a file longer than a bound, before allocating for it, and
//! read at most the size it had when opened.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// `path` opened for reading if it is a regular file (symbolic links followed); an
/// `InvalidInput` error naming what it is otherwise (a directory, a named pipe, a device, a
/// socket).
pub fn open_regular(path: &Path) -> io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK);
    }
    let f = o.open(path)?;
    let meta = f.metadata()?;
    if meta.is_file() {
        Ok(f)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file: {}", kind(&meta)),
        ))
    }
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a file"
}

/// The bytes of the regular file `path`, refused (`InvalidData`, before anything is allocated
/// for them) when it is longer than `max` bytes; `what` names the kind of file in that error.
pub fn read_limited(path: &Path, max: u64, what: &str) -> io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes, more than the {max} a {what} may have"),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read_limited`] as UTF-8 text.
pub fn read_text_limited(path: &Path, max: u64, what: &str) -> io::Result<String> {
    let mut text = String::from_utf8(read_limited(path, max, what)?).map_err(|e| {
        // Where the first byte that is not UTF-8 is, as an editor counts (1-based).
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[start..]).chars().count() + 1;
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not UTF-8 text: the byte at line {line}, column {column} is not UTF-8"),
        )
    })?;
    // A byte-order mark some editors write: not part of the text.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Most bytes of a text file a person writes (a scenario, a model spec, `models.lock`): a few
/// KiB in practice.
pub const MAX_TEXT_BYTES: u64 = 4 << 20;
/// Most bytes of a JSON file a tool writes (a receipt, a bench report, a tuning cache, a
/// reference's `generated.json`).
pub const MAX_JSON_BYTES: u64 = 64 << 20;
/// Most bytes of a run's `report.json` or a golden snapshot (every scenario, point and step).
pub const MAX_REPORT_BYTES: u64 = 512 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_read_within_its_bound_and_refused_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        std::fs::write(&p, b"[1, 2]").unwrap();
        assert_eq!(read_text_limited(&p, 6, "receipt").unwrap(), "[1, 2]");
        // A byte-order mark is dropped; a byte that is not UTF-8 is placed.
        let t = dir.path().join("s.yaml");
        std::fs::write(&t, "\u{feff}a: 1\n").unwrap();
        assert_eq!(read_text_limited(&t, 64, "scenario").unwrap(), "a: 1\n");
        std::fs::write(&t, b"a: 1\nb\xc3\xa9: \xff\n").unwrap();
        let e = read_text_limited(&t, 64, "scenario")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the byte at line 2, column 5 is not UTF-8"),
            "{e}"
        );
        let e = read_limited(&p, 5, "receipt").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "6 bytes, more than the 5 a receipt may have");
        std::fs::write(&p, b"\xff\xfe").unwrap();
        assert!(read_text_limited(&p, 6, "receipt")
            .unwrap_err()
            .to_string()
            .starts_with("not UTF-8 text"));
    }

    #[cfg(unix)]
    #[test]
    fn directories_devices_and_pipes_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_regular(dir.path()).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file: a directory");
        let e = read_limited(Path::new("/dev/zero"), 1 << 40, "receipt").unwrap_err();
        assert_eq!(e.to_string(), "not a regular file: a device");
        // A named pipe with no writer: a blocking open would wait here for ever.
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = open_regular(&fifo).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file: a named pipe");
        // Through a symbolic link, the target is what counts.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        assert_eq!(
            open_regular(&link).unwrap_err().to_string(),
            "not a regular file: a named pipe"
        );
    }
}
