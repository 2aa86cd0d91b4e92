//! The manifest of an updated index (`manifest.bin`, format v5): which segments are live and
//! which of their documents are deleted.
//!
//! An index is its **base segment** (the files at the root of the index directory, as every
//! version writes them) plus, once documents have been added or deleted, the segments and
//! tombstones that `manifest.bin` names. Segments are subdirectories `seg-NNNNNN/` in the
//! single-segment layout; once published they are never modified. The manifest is replaced
//! atomically (written to a temporary file, synced, renamed over the old one, directory synced),
//! so a reader sees the state before an update or after it, never a mix. Without a manifest the
//! index is its base segment alone.
//!
//! The payload is the [`Manifest`] encoded with bincode 2 (standard configuration: variable-length
//! integers, little-endian), followed by the usual footer (component 20).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use bincode::{Decode, Encode};

use crate::component::Component;
use crate::error::{FormatError, Result};
use crate::footer::{Footer, FooterWriter};
use crate::fsx;

/// The base segment's name: the index directory itself.
pub const BASE: &str = ".";

/// Largest manifest read (64 MiB: sixteen million tombstones).
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// One live segment.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SegmentEntry {
    /// `.` for the base segment, else the subdirectory `seg-NNNNNN`.
    pub name: String,
    /// Its number of documents (as in its `meta.json`; checked when opened).
    pub n_docs: u64,
    /// Its deleted documents: strictly increasing document numbers below `n_docs`.
    pub deleted: Vec<u32>,
}

/// The live state of an updated index.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Manifest {
    /// Increases by one with every published update.
    pub generation: u64,
    /// The number the next new segment is named after (`seg-{next_segment:06}`).
    pub next_segment: u64,
    /// The live segments, oldest first; the first is always the base segment ([`BASE`]).
    pub segments: Vec<SegmentEntry>,
}

impl Manifest {
    /// The state of an index that has never been updated: its base segment of `n_docs`
    /// documents, nothing deleted.
    pub fn base_only(n_docs: u64) -> Self {
        Manifest {
            generation: 0,
            next_segment: 1,
            segments: vec![SegmentEntry { name: BASE.into(), n_docs, deleted: Vec::new() }],
        }
    }

    /// The directory name of segment number `n`.
    pub fn segment_name(n: u64) -> String {
        format!("seg-{n:06}")
    }

    /// Whether `name` is a segment subdirectory name (`seg-` and six or more digits).
    pub fn is_segment_name(name: &str) -> bool {
        name.strip_prefix("seg-").is_some_and(|d| d.len() >= 6 && d.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Checks the invariants a reader relies on; `path` names the file in errors.
    pub fn check(&self, path: &Path) -> Result<()> {
        let bad = |detail: String| Err(FormatError::corrupt(path, detail));
        match self.segments.first() {
            Some(s) if s.name == BASE => {}
            _ => return bad("the first segment is not the base segment".into()),
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.segments {
            if s.name != BASE && !Self::is_segment_name(&s.name) {
                return bad(format!("invalid segment name {:?}", s.name));
            }
            if !names.insert(s.name.as_str()) {
                return bad(format!("segment {} is listed twice", s.name));
            }
            if s.name != BASE {
                let n: u64 = s.name[4..].parse().unwrap_or(u64::MAX);
                if n >= self.next_segment {
                    return bad(format!(
                        "segment {} is numbered past next_segment {}",
                        s.name, self.next_segment
                    ));
                }
            }
            if s.deleted.windows(2).any(|w| w[0] >= w[1]) {
                return bad(format!(
                    "the deleted documents of segment {} are not strictly increasing",
                    s.name
                ));
            }
            if let Some(&last) = s.deleted.last() {
                if u64::from(last) >= s.n_docs {
                    return bad(format!("segment {} deletes document {last} of {}", s.name, s.n_docs));
                }
            }
        }
        Ok(())
    }

    /// Number of live (not deleted) documents.
    pub fn live_docs(&self) -> u64 {
        self.segments.iter().map(|s| s.n_docs.saturating_sub(s.deleted.len() as u64)).sum()
    }

    /// Reads `dir/manifest.bin`; `Ok(None)` when the index has none (never updated).
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(Component::Manifest.file_name());
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FormatError::io(&path, e)),
        };
        if !meta.is_file() {
            return Err(FormatError::corrupt(&path, "not a regular file"));
        }
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(FormatError::corrupt(
                &path,
                format!("{} bytes, more than a manifest holds", meta.len()),
            ));
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            // Replaced between the two calls: the caller retries on the new one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FormatError::io(&path, e)),
        };
        let (payload, footer) = Footer::split(&path, &bytes, Component::Manifest.id())?;
        footer.check_crc(&path, payload)?;
        let config = bincode::config::standard().with_limit::<{ MAX_MANIFEST_BYTES as usize }>();
        let (manifest, used): (Manifest, usize) = bincode::decode_from_slice(payload, config)
            .map_err(|e| FormatError::corrupt(&path, format!("invalid manifest: {e}")))?;
        if used != payload.len() {
            return Err(FormatError::corrupt(&path, "trailing bytes after the manifest"));
        }
        manifest.check(&path)?;
        Ok(Some(manifest))
    }

    /// Publishes `self` as `dir/manifest.bin` atomically: written and synced under a temporary
    /// name, renamed over the old manifest, and the directory synced.
    pub fn publish(&self, dir: &Path) -> Result<()> {
        let path = dir.join(Component::Manifest.file_name());
        self.check(&path)?;
        let tmp = dir.join(format!(".manifest.bin.tmp-{}", std::process::id()));
        let payload = bincode::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| FormatError::corrupt(&path, format!("cannot encode the manifest: {e}")))?;
        let write = || -> std::io::Result<()> {
            let file = File::create(&tmp)?;
            let mut w = FooterWriter::new(std::io::BufWriter::new(file), Component::Manifest.id());
            w.write_all(&payload)?;
            let (buf, _) = w.finish()?;
            let file = buf.into_inner().map_err(|e| e.into_error())?;
            fsx::sync_file(&file)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(FormatError::io(&tmp, e));
        }
        if let Err(e) = fsx::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(FormatError::io(&path, e));
        }
        fsx::sync_dir(dir).map_err(|e| FormatError::io(dir, e))
    }

    /// The paths in `dir` that no live segment uses and no writer is writing: segment
    /// directories the manifest does not name (left by an update killed before it published),
    /// temporary segments and manifests. Only a writer holding the index's lock may remove them.
    pub fn unused_entries(&self, dir: &Path) -> Vec<PathBuf> {
        unused_entries(dir, Some(self))
    }
}

/// [`Manifest::unused_entries`] for an index with or without a manifest.
pub fn unused_entries(dir: &Path, manifest: Option<&Manifest>) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let live: std::collections::HashSet<&str> =
        manifest.map(|m| m.segments.iter().map(|s| s.name.as_str()).collect()).unwrap_or_default();
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (Manifest::is_segment_name(&name) && !live.contains(name.as_str()))
                || name.starts_with(".manifest.bin.tmp-")
                || name.starts_with(".seg-")
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            generation: 3,
            next_segment: 3,
            segments: vec![
                SegmentEntry { name: BASE.into(), n_docs: 10, deleted: vec![1, 4] },
                SegmentEntry { name: "seg-000002".into(), n_docs: 2, deleted: vec![] },
            ],
        }
    }

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), None);
        let m = sample();
        m.publish(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), Some(m.clone()));
        let mut next = m.clone();
        next.generation += 1;
        next.segments[0].deleted.push(9);
        next.publish(dir.path()).unwrap();
        assert_eq!(Manifest::read(dir.path()).unwrap(), Some(next));
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["manifest.bin"], "no temporary file is left");
    }

    #[test]
    fn damage_and_broken_invariants_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        sample().publish(dir.path()).unwrap();
        let path = dir.path().join("manifest.bin");
        let good = fs::read(&path).unwrap();
        // (The footer's last four bytes are reserved.)
        for i in 0..good.len() - 4 {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            fs::write(&path, &bad).unwrap();
            let err = Manifest::read(dir.path()).unwrap_err();
            assert!(err.to_string().contains("manifest.bin"), "{err}");
        }
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(Manifest::read(dir.path()).is_err());
        let p = Path::new("m");
        let mut m = sample();
        m.segments[0].deleted = vec![4, 1];
        assert!(m.check(p).is_err());
        let mut m = sample();
        m.segments[0].deleted = vec![10];
        assert!(m.check(p).is_err());
        let mut m = sample();
        m.segments.swap(0, 1);
        assert!(m.check(p).is_err());
        let mut m = sample();
        m.segments[1].name = "../x".into();
        assert!(m.check(p).is_err());
        let mut m = sample();
        m.next_segment = 2;
        assert!(m.check(p).is_err());
        assert!(Manifest::is_segment_name("seg-000001") && !Manifest::is_segment_name("seg-1"));
    }

    #[test]
    fn unused_entries_are_the_unnamed_segments_and_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["seg-000002", "seg-000005", ".seg-000006.tmp-1-0"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join(".manifest.bin.tmp-7"), b"x").unwrap();
        fs::write(dir.path().join("meta.json"), b"x").unwrap();
        let names: Vec<String> = sample()
            .unused_entries(dir.path())
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [".manifest.bin.tmp-7", ".seg-000006.tmp-1-0", "seg-000005"]);
    }
}
