//! Minimal `.npy` (NumPy format version 1.0) reading and writing for little-endian f32 arrays.
//!
//! Trace values and logits travel between the engine, the reference and the harness as `.npy`
//! files (see [`crate::trace`]). Writes are atomic: a temporary file in the same folder
//! (`tempfile`), persisted under the final name.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An error reading an `.npy` file: the file, and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{path}` is not an f32 .npy file: {what}")]
    Format { path: PathBuf, what: String },
}

/// Serialize a C-order little-endian f32 array as `.npy` bytes.
pub fn to_npy_bytes(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let shape_str = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_str}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Write `bytes` to `path` atomically: a crash leaves the old file or the new one. The data is
/// synced before the rename, so a power loss cannot leave an empty file under the new name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_renamed(path, bytes, true)
}

/// Write a scratch file (trace values) by rename without syncing: a crashed process never leaves
/// half a file, but a power loss may (trace directories are rewritten by every run).
pub fn write_scratch(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_renamed(path, bytes, false)
}

fn write_renamed(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let mut f = temp_beside(path)?;
    f.write_all(bytes)?;
    if sync {
        f.as_file().sync_all()?;
    }
    f.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A temporary file in `path`'s directory (so the rename is atomic), named `.<name>.<random>.tmp`,
/// removed when dropped unless persisted with [`tempfile::NamedTempFile::persist`]. Its
/// permissions are those `File::create` would give (0666 less the umask), not tempfile's 0600.
///
/// A `path` that exists as anything but a regular file (a device such as `/dev/null`, a pipe, a
/// socket, a directory, a symbolic link) is refused: renaming a new file over it would replace
/// it, not write to it.
pub fn temp_beside(path: &Path) -> io::Result<tempfile::NamedTempFile> {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        let t = m.file_type();
        if !t.is_file() {
            use std::os::unix::fs::FileTypeExt;
            let what = if t.is_symlink() {
                "a symbolic link"
            } else if t.is_dir() {
                "a directory"
            } else if t.is_char_device() || t.is_block_device() {
                "a device"
            } else if t.is_fifo() {
                "a pipe"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "`{}` is {what}: output files are written whole and renamed into place, which would replace it rather than write to it; give the path of a regular file",
                    path.display()
                ),
            ));
        }
    }
    let (dir, prefix) = beside(path);
    builder(&prefix, 0o666).tempfile_in(dir).map_err(|e| {
        // tempfile names its own temporary path; say which directory is missing instead.
        if e.kind() == io::ErrorKind::NotFound && !dir.is_dir() {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the directory `{}` does not exist: create it first, or give a path in one that does",
                    dir.display()
                ),
            )
        } else {
            e
        }
    })
}

/// A temporary directory beside `path` (`.<name>.<random>.tmp`), removed with its contents when
/// dropped unless kept ([`tempfile::TempDir::keep`]): a directory filled there and renamed to
/// `path` appears whole. Permissions as `create_dir` would give (0777 less the umask).
pub fn temp_dir_beside(path: &Path) -> io::Result<tempfile::TempDir> {
    let (dir, prefix) = beside(path);
    builder(&prefix, 0o777).tempdir_in(dir)
}

fn beside(path: &Path) -> (&Path, String) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, format!(".{name}."))
}

fn builder(prefix: &str, mode: u32) -> tempfile::Builder<'_, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    b
}

/// Write an f32 array as `.npy`, atomically.
pub fn write_npy(path: &Path, shape: &[usize], values: &[f32]) -> io::Result<()> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    write_atomic(path, &to_npy_bytes(shape, values))
}

/// Largest `.npy` file [`read_npy`] reads (4 GiB): a trace tensor is far smaller.
pub const MAX_NPY_BYTES: u64 = 4 << 30;

/// Read an f32 little-endian C-order `.npy` file: its shape and values. Only a regular file is
/// read, and at most its size as it was opened (never more than [`MAX_NPY_BYTES`]), so a path to a
/// device or a pipe is refused rather than read without end.
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
    use std::io::Read;
    let io = |source| NpyError::Io {
        path: path.to_owned(),
        source,
    };
    let format = |what: String| NpyError::Format {
        path: path.to_owned(),
        what,
    };
    let file = crate::files::open_regular(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            format(e.to_string())
        } else {
            io(e)
        }
    })?;
    let meta = file.metadata().map_err(io)?;
    if meta.len() > MAX_NPY_BYTES {
        return Err(format(format!(
            "{} bytes, more than the {} a trace tensor may have",
            meta.len(),
            MAX_NPY_BYTES
        )));
    }
    // The header first: the file's size must be the one its shape gives before any data is
    // read, so a header that claims little in front of gigabytes (or the reverse) costs nothing.
    let mut file = file.take(meta.len());
    let mut head = vec![0u8; 12.min(meta.len() as usize)];
    file.read_exact(&mut head).map_err(io)?;
    let header_len = match head.get(6) {
        Some(1) if head.len() >= 10 => u16::from_le_bytes([head[8], head[9]]) as usize,
        Some(2 | 3) if head.len() >= 12 => {
            u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize
        }
        // Too short or an unknown version: the parser names it.
        _ => return parse_npy(&head).map_err(format),
    };
    let prefix = if head[6] == 1 { 10 } else { 12 };
    if header_len > MAX_NPY_HEADER || (prefix + header_len) as u64 > meta.len() {
        return Err(format(format!(
            "header of {header_len} bytes: more than the file's {} bytes or the {MAX_NPY_HEADER} a header may have",
            meta.len()
        )));
    }
    let mut bytes = head;
    (&mut file)
        .take((prefix + header_len).saturating_sub(bytes.len()) as u64)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let (shape, _) = parse_npy_header(&bytes).map_err(format)?;
    let count = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
    let want = count
        .and_then(|c| c.checked_mul(4))
        .and_then(|d| d.checked_add(bytes.len() as u64));
    if want != Some(meta.len()) {
        return Err(format(format!(
            "file holds {} bytes, shape {shape:?} needs a {}-byte header and {} × 4 bytes of data",
            meta.len(),
            bytes.len(),
            count.map_or("too many".to_string(), |c| c.to_string())
        )));
    }
    bytes.reserve_exact((meta.len() as usize).saturating_sub(bytes.len()));
    file.read_to_end(&mut bytes).map_err(io)?;
    parse_npy(&bytes).map_err(format)
}

/// Longest `.npy` header [`read_npy`] reads (numpy writes under 200 bytes; its own limit for
/// reading is 10,000).
pub const MAX_NPY_HEADER: usize = 64 << 10;

/// Parse `.npy` bytes (versions 1.0 to 3.0, dtype `<f4`, C order).
pub fn parse_npy(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    let (shape, end) = parse_npy_header(bytes)?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    let data = &bytes[end..];
    if Some(data.len()) != count.checked_mul(4) {
        return Err(format!(
            "data holds {} bytes, shape {shape:?} needs {count} × 4",
            data.len(),
        ));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    Ok((shape, values.collect()))
}

/// The shape in a `.npy` header and where its data starts (the header checked as [`parse_npy`]
/// checks it; `bytes` may end with the header).
fn parse_npy_header(bytes: &[u8]) -> Result<(Vec<usize>, usize), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("bad magic (expected `\\x93NUMPY`)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported version {v}")),
    };
    let end = start.checked_add(header_len).filter(|&e| e <= bytes.len());
    let end = end.ok_or("header runs past the end of the file")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not UTF-8")?;
    if !header.is_ascii() {
        return Err("header is not ASCII (numpy writes an ASCII dict)".into());
    }
    let field = |key: &str| -> Result<&str, String> {
        let pat = format!("'{key}':");
        let i = header.find(&pat).ok_or(format!("header lacks `{key}`"))?;
        Ok(header[i + pat.len()..].trim_start())
    };
    let descr = field("descr")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'float32'")) {
        return Err(format!(
            "dtype is {}, expected '<f4'",
            descr.split(',').next().unwrap_or("")
        ));
    }
    if !field("fortran_order")?.starts_with("False") {
        return Err("fortran_order arrays are not supported".into());
    }
    let shape_str = field("shape")?;
    let close = shape_str.find(')').ok_or("malformed shape")?;
    if !shape_str.starts_with('(') || close == 0 {
        return Err("malformed shape (expected a tuple such as `(2, 3)`)".into());
    }
    let shape = shape_str[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape dimension `{s}`"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((shape, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_writes_replace_whole_keep_the_usual_mode_and_leave_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["r.json"]);
        #[cfg(unix)]
        {
            // The mode a plain `File::create` gives here (0666 less the umask), not 0600.
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.path().join("plain");
            std::fs::File::create(&plain).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&p), mode(&plain));
            std::fs::remove_file(&plain).unwrap();
        }
        // A directory in the way: the write fails and no temporary file is left behind.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"x").unwrap();
        assert!(write_atomic(&blocked, b"data").is_err());
        assert_eq!(names(dir.path()), ["blocked", "r.json"]);
        // A missing directory is named, not the temporary file tempfile would have made in it.
        let missing = dir.path().join("no").join("such");
        let e = write_atomic(&missing.join("x.json"), b"data").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            e.to_string(),
            format!(
                "the directory `{}` does not exist: create it first, or give a path in one that does",
                missing.display()
            )
        );
        assert_eq!(names(dir.path()), ["blocked", "r.json"]);
        // A pipe or a symbolic link in the way is refused, not replaced by the rename (a device
        // such as /dev/null is refused the same way).
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            let fifo = dir.path().join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                let e = write_atomic(&fifo, b"data").unwrap_err().to_string();
                assert!(e.contains("is a pipe"), "{e}");
                assert!(std::fs::symlink_metadata(&fifo)
                    .unwrap()
                    .file_type()
                    .is_fifo());
                std::fs::remove_file(&fifo).unwrap();
            }
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&p, &link).unwrap();
            let e = write_atomic(&link, b"data").unwrap_err().to_string();
            assert!(e.contains("is a symbolic link"), "{e}");
            assert!(std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(std::fs::read(&p).unwrap(), b"new");
            std::fs::remove_file(&link).unwrap();
        }
        // A temporary directory beside a path: removed when dropped, with what it holds.
        let t = temp_dir_beside(&dir.path().join("trace")).unwrap();
        assert!(t
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(".trace."));
        std::fs::write(t.path().join("a.npy"), b"x").unwrap();
        drop(t);
        assert_eq!(names(dir.path()), ["blocked", "r.json"]);
    }

    #[test]
    fn round_trip_and_alignment() {
        let v: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let b = to_npy_bytes(&[2, 3], &v);
        let header_len = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(parse_npy(&b).unwrap(), (vec![2, 3], v.clone()));
        let b1 = to_npy_bytes(&[6], &v);
        assert!(std::str::from_utf8(&b1[10..74])
            .unwrap()
            .contains("'shape': (6,)"));
        assert!(parse_npy(&b1[..b1.len() - 1]).is_err());
    }

    /// Hostile headers are errors, never panics: a shape of `)`, non-ASCII bytes, a shape whose
    /// element count overflows, a header length past the end.
    #[test]
    fn hostile_headers_are_errors() {
        let with_header = |h: &str| {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(h.len() as u16).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            b
        };
        for h in [
            "{'descr': '<f4', 'fortran_order': False, 'shape': )}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': é(2,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (é)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 3)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape':",
            "{'descr':",
        ] {
            assert!(parse_npy(&with_header(h)).is_err(), "{h}");
        }
        let mut b = with_header("{}");
        b[8] = 0xff;
        assert!(parse_npy(&b).is_err());
        assert!(parse_npy(b"\x93NUMPY\x02\x00\x01").is_err());
    }

    /// The file's size is held to its header's shape before the data is read: a small shape in
    /// front of gigabytes (a sparse file here, no disk) is refused by sizes alone, and so are
    /// short files, headers past the end and every one of the hostile headers above on disk.
    #[test]
    fn read_npy_holds_the_file_size_to_the_header_before_reading_data() {
        let dir = tempfile::tempdir().unwrap();
        let v: Vec<f32> = (0..2048).map(|i| i as f32).collect();
        let good = to_npy_bytes(&[8, 256], &v);
        let path = dir.path().join("a.npy");
        std::fs::write(&path, &good).unwrap();
        assert_eq!(read_npy(&path).unwrap(), (vec![8, 256], v));
        // 3 GiB past an 8 KiB shape.
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.set_len(3 << 30).unwrap();
        let e = read_npy(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!("file holds {} bytes, shape [8, 256]", 3u64 << 30)),
            "{e}"
        );
        // One byte short of the shape.
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        let e = read_npy(&path).unwrap_err().to_string();
        assert!(e.contains("shape [8, 256] needs"), "{e}");
        // A header length past the end; a file shorter than the magic; a bad version.
        let mut b = good.clone();
        b[8] = 0xff;
        b[9] = 0xff;
        b.truncate(200);
        std::fs::write(&path, &b).unwrap();
        assert!(read_npy(&path)
            .unwrap_err()
            .to_string()
            .contains("header of 65535 bytes"));
        for bytes in [&b"\x93NUM"[..], b"\x93NUMPY\x07\x00\x00\x00\x00\x00"] {
            std::fs::write(&path, bytes).unwrap();
            assert!(read_npy(&path).is_err());
        }
        // A version-1 header of length 0 or 1 (shorter than the 12 bytes read first).
        for len in [0u8, 1] {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&[len, 0, b'{', b'}', 0, 0]);
            std::fs::write(&path, &b).unwrap();
            assert!(read_npy(&path).is_err());
        }
    }

    /// A path to a device is refused, not read without end.
    #[test]
    fn devices_are_refused() {
        let e = read_npy(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
