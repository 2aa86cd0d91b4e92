//! A checksum list for a directory whose files this format does not lay out itself: the BM25
//! sub-index (`bm25/`, written by tantivy), whose files have no footer of ours.
//!
//! The list is the file [`Component::FileChecksums`] (`checksums.crc32`) inside that directory:
//! a UTF-8 payload of one line per file, sorted by name,
//!
//! ```text
//! {CRC32 of the whole file, 8 lowercase hex digits} {length in bytes} {file name}\n
//! ```
//!
//! followed by the usual footer (its own CRC covers the list). [`read`] checks the list and
//! every name in it (a plain file name of the directory: no `/`, not `.` or `..`); [`check_sizes`]
//! is the cheap check of opening (every listed file is a regular file of the recorded length),
//! [`verify`] recomputes every CRC. Errors name the file at fault.
#![deny(clippy::arithmetic_side_effects)]

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use crate::component::Component;
use crate::error::{FormatError, Result};
use crate::footer::{Footer, FooterWriter};
use crate::fsx;
use crate::reader::open_regular;

/// Largest checksum list read (a line is under 100 bytes; a BM25 index has tens of files).
pub const MAX_LIST_BYTES: u64 = 16 << 20;

/// One file of a checksum list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChecksum {
    /// The file's name in the directory.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// The CRC32 (IEEE) of its whole content.
    pub crc32: u32,
}

/// The CRC32 and length of the file at `path`, read in blocks (a file may be larger than memory).
fn checksum(path: &Path) -> Result<(u32, u64)> {
    let mut file = open_regular(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                len = len.saturating_add(n as u64);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FormatError::io(path, e)),
        }
    }
    Ok((hasher.finalize(), len))
}

/// Why `name` cannot be in a checksum list, if it cannot.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name == "." || name == ".." {
        Some("is not a file name")
    } else if name.contains(['/', '\\', '\0', '\n', '\r']) {
        Some("is not a plain file name")
    } else if name == Component::FileChecksums.file_name() {
        Some("is the list itself")
    } else {
        None
    }
}

/// Computes the checksums of every regular file of `dir` except those `skip` accepts, writes
/// them as `dir/checksums.crc32` (synced, and the directory after it) and returns them.
///
/// # Errors
/// If `dir` holds something other than regular files (besides what `skip` accepts), a file
/// whose name cannot be listed, or on an I/O error; each names the path.
pub fn record(dir: &Path, skip: impl Fn(&str) -> bool) -> Result<Vec<FileChecksum>> {
    let mut list = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| FormatError::io(dir, e))? {
        let entry = entry.map_err(|e| FormatError::io(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(FormatError::corrupt(&path, "a file name that is not UTF-8 cannot be listed"));
        };
        if name == Component::FileChecksums.file_name() || skip(&name) {
            continue;
        }
        if let Some(problem) = name_problem(&name) {
            return Err(FormatError::corrupt(&path, format!("the name {problem}")));
        }
        let (crc32, len) = checksum(&path)?;
        list.push(FileChecksum { name, len, crc32 });
    }
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let payload: String = list.iter().map(|f| format!("{:08x} {} {}\n", f.crc32, f.len, f.name)).collect();
    let path = dir.join(Component::FileChecksums.file_name());
    let write = || -> std::io::Result<()> {
        let mut w = FooterWriter::new(BufWriter::new(File::create(&path)?), Component::FileChecksums.id());
        w.write_all(payload.as_bytes())?;
        let (buf, _) = w.finish()?;
        fsx::sync_file(&buf.into_inner().map_err(|e| e.into_error())?)
    };
    write().map_err(|e| FormatError::io(&path, e))?;
    fsx::sync_dir(dir).map_err(|e| FormatError::io(dir, e))?;
    Ok(list)
}

/// Reads and checks `dir/checksums.crc32` (footer, CRC, every line); `Ok(None)` when there is
/// none (a directory written before lists were recorded).
///
/// # Errors
/// A corrupt list, naming it.
pub fn read(dir: &Path) -> Result<Option<Vec<FileChecksum>>> {
    let path = dir.join(Component::FileChecksums.file_name());
    let file = match open_regular(&path) {
        Ok(f) => f,
        Err(FormatError::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.metadata().map_err(|e| FormatError::io(&path, e))?.len();
    if size > MAX_LIST_BYTES {
        return Err(FormatError::corrupt(&path, format!("{size} bytes, more than a checksum list holds")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_LIST_BYTES).read_to_end(&mut bytes).map_err(|e| FormatError::io(&path, e))?;
    let (payload, footer) = Footer::split(&path, &bytes, Component::FileChecksums.id())?;
    footer.check_crc(&path, payload)?;
    let text =
        std::str::from_utf8(payload).map_err(|_| FormatError::corrupt(&path, "the list is not UTF-8"))?;
    let mut list: Vec<FileChecksum> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i.saturating_add(1);
        let bad = |what: &str| FormatError::corrupt(&path, format!("line {line_no}: {what}"));
        let mut fields = line.splitn(3, ' ');
        let (Some(crc), Some(len), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected `CRC32 LENGTH NAME`"));
        };
        let crc32 = u32::from_str_radix(crc, 16)
            .ok()
            .filter(|_| crc.len() == 8)
            .ok_or_else(|| bad("the CRC32 is not 8 hex digits"))?;
        let len: u64 = len.parse().map_err(|_| bad("the length is not a number"))?;
        if let Some(problem) = name_problem(name) {
            return Err(bad(&format!("{name:?} {problem}")));
        }
        if list.last().is_some_and(|prev| prev.name.as_str() >= name) {
            return Err(bad("the names are not sorted and unique"));
        }
        list.push(FileChecksum { name: name.to_string(), len, crc32 });
    }
    Ok(Some(list))
}

/// The cheap check: every listed file of `dir` is a regular file of its recorded length.
///
/// # Errors
/// The first file missing, not a regular file, or of another length, naming it.
pub fn check_sizes(dir: &Path, list: &[FileChecksum]) -> Result<()> {
    for f in list {
        let path = dir.join(&f.name);
        let len = open_regular(&path)?.metadata().map_err(|e| FormatError::io(&path, e))?.len();
        if len != f.len {
            return Err(FormatError::Truncated {
                path,
                detail: format!("{len} bytes, the checksum list records {}", f.len),
            });
        }
    }
    Ok(())
}

/// Recomputes the CRC32 of every listed file of `dir`; returns the bytes read.
///
/// # Errors
/// The first file missing, of another length or with another CRC32, naming it.
pub fn verify(dir: &Path, list: &[FileChecksum]) -> Result<u64> {
    check_sizes(dir, list)?;
    let mut total = 0u64;
    for f in list {
        let path = dir.join(&f.name);
        let (computed, len) = checksum(&path)?;
        if len != f.len {
            return Err(FormatError::Truncated {
                path,
                detail: format!("{len} bytes, the checksum list records {}", f.len),
            });
        }
        if computed != f.crc32 {
            return Err(FormatError::ChecksumMismatch { path, stored: f.crc32, computed });
        }
        total = total.saturating_add(len);
    }
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in files {
            fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    #[test]
    fn records_reads_and_verifies() {
        let dir = dir_with(&[("b.idx", b"postings"), ("meta.json", b"{}"), (".lock", b"")]);
        let list = record(dir.path(), |n| n == ".lock").unwrap();
        let names: Vec<&str> = list.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["b.idx", "meta.json"]);
        assert_eq!(list[0].crc32, crc32fast::hash(b"postings"));
        assert_eq!(read(dir.path()).unwrap().unwrap(), list);
        check_sizes(dir.path(), &list).unwrap();
        assert_eq!(verify(dir.path(), &list).unwrap(), 10);
        assert!(read(&dir.path().join("absent")).unwrap().is_none());
    }

    #[test]
    fn damage_is_named() {
        let dir = dir_with(&[("a.store", b"0123456789"), ("meta.json", b"{}")]);
        let list = record(dir.path(), |_| false).unwrap();
        let a = dir.path().join("a.store");
        fs::write(&a, b"0123456780").unwrap();
        check_sizes(dir.path(), &list).unwrap();
        let err = verify(dir.path(), &list).unwrap_err();
        assert!(matches!(err, FormatError::ChecksumMismatch { .. }), "{err}");
        assert!(err.to_string().contains("a.store"), "{err}");
        fs::write(&a, b"01234").unwrap();
        let err = check_sizes(dir.path(), &list).unwrap_err().to_string();
        assert!(err.contains("a.store") && err.contains("5 bytes"), "{err}");
        fs::remove_file(&a).unwrap();
        let err = verify(dir.path(), &list).unwrap_err();
        assert!(matches!(err, FormatError::Missing { .. }), "{err}");
    }

    #[test]
    fn hostile_lists_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(Component::FileChecksums.file_name());
        let write = |payload: &str| {
            let mut w = FooterWriter::new(Vec::new(), Component::FileChecksums.id());
            w.write_all(payload.as_bytes()).unwrap();
            fs::write(&path, w.finish().unwrap().0).unwrap();
        };
        for (payload, needle) in [
            ("0000000a 1 ../etc/passwd\n", "plain file name"),
            ("0000000a 1 .\n", "not a file name"),
            ("0000000a 18446744073709551616 a\n", "length"),
            ("a 1 x\n", "8 hex digits"),
            ("0000000a 1\n", "CRC32 LENGTH NAME"),
            ("0000000a 1 b\n0000000a 1 a\n", "sorted"),
            ("0000000a 1 checksums.crc32\n", "list itself"),
        ] {
            write(payload);
            let err = read(dir.path()).unwrap_err().to_string();
            assert!(err.contains("checksums.crc32") && err.contains(needle), "{payload:?}: {err}");
        }
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(read(dir.path()), Err(FormatError::ChecksumMismatch { .. })));
    }
}
