//! Atomic index writing: build in a temporary sibling directory, rename into place on commit.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::component::Component;
use crate::error::{FormatError, Result};
use crate::footer::FooterWriter;
use crate::meta::IndexMeta;

/// Writes the files of a new index into a temporary directory, and publishes them atomically.
///
/// Dropping the writer without calling [`IndexWriter::commit`] removes the temporary directory,
/// so an error half-way through a build leaves nothing behind.
#[derive(Debug)]
pub struct IndexWriter {
    dest: PathBuf,
    tmp: PathBuf,
    overwrite: bool,
    committed: bool,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn sibling(dest: &Path, tag: &str) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "index".into());
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

/// Removes the leftovers of interrupted writes next to `dest`: siblings named
/// `.NAME.tmp-PID[-N]` or `.NAME.old-PID-N` (what [`IndexWriter`] and the embeddings writer
/// create) whose process `PID` is no longer running. Returns what was removed. Only where
/// `/proc` tells which processes run (Linux); elsewhere nothing is removed. Entries of a running
/// process, including this one, are left alone, so concurrent builds do not disturb each other.
pub fn remove_stale_siblings(dest: &Path) -> Vec<PathBuf> {
    let Some(name) = dest.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let parent = match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir(&parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = leftover_pid(&file_name, &name) else {
            continue;
        };
        if pid == std::process::id() || proc.join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        let gone = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed.sort();
    removed
}

/// The writer's process id if `file_name` is `.{name}.tmp-PID`, `.{name}.tmp-PID-N` or
/// `.{name}.old-PID-N`.
fn leftover_pid(file_name: &str, name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?.strip_prefix(name)?.strip_prefix('.')?;
    let (tag, rest) = rest.split_once('-')?;
    let (pid, n) = match rest.split_once('-') {
        Some((pid, n)) => (pid, Some(n)),
        None => (rest, None),
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let shape_ok = match tag {
        "tmp" => n.is_none_or(numeric),
        "old" => n.is_some_and(numeric),
        _ => false,
    };
    if shape_ok && numeric(pid) {
        pid.parse().ok()
    } else {
        None
    }
}

impl IndexWriter {
    /// Starts an index that will be published at `dest`. Fails if `dest` exists and
    /// `overwrite` is false, or if its parent directory does not exist. Leftovers of earlier
    /// interrupted builds of `dest` are removed first ([`remove_stale_siblings`]; call it
    /// yourself beforehand to learn what it removes, as the CLI does to report them).
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self> {
        if dest.as_os_str().is_empty() || dest.file_name().is_none() {
            return Err(FormatError::io(
                dest,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory name"),
            ));
        }
        if dest.exists() && !overwrite {
            return Err(FormatError::AlreadyExists { path: dest.to_path_buf() });
        }
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| FormatError::io(parent, e))?;
        }
        remove_stale_siblings(dest);
        let tmp = sibling(dest, "tmp");
        fs::create_dir(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
        Ok(Self { dest: dest.to_path_buf(), tmp, overwrite, committed: false })
    }

    /// The temporary directory being written.
    pub fn temp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Opens a streaming writer for one component.
    pub fn component(&self, component: Component) -> Result<ComponentWriter> {
        let path = self.tmp.join(component.file_name());
        let file = File::create(&path).map_err(|e| FormatError::io(&path, e))?;
        Ok(ComponentWriter {
            inner: FooterWriter::new(BufWriter::with_capacity(1 << 20, file), component.id()),
            path,
        })
    }

    /// Writes a whole component at once.
    pub fn write_component(&self, component: Component, payload: &[u8]) -> Result<()> {
        let mut w = self.component(component)?;
        w.write_all(payload).map_err(|e| FormatError::io(&w.path, e))?;
        w.finish()
    }

    /// Writes `meta.json` and publishes the directory at its destination.
    pub fn commit(mut self, meta: &IndexMeta) -> Result<PathBuf> {
        let json = serde_json::to_vec_pretty(meta).expect("IndexMeta serialises");
        self.write_component(Component::Meta, &json)?;
        if let Ok(dir) = File::open(&self.tmp) {
            let _ = dir.sync_all();
        }
        if self.dest.exists() {
            if !self.overwrite {
                return Err(FormatError::AlreadyExists { path: self.dest.clone() });
            }
            let old = sibling(&self.dest, "old");
            fs::rename(&self.dest, &old).map_err(|e| FormatError::io(&self.dest, e))?;
            if let Err(e) = fs::rename(&self.tmp, &self.dest) {
                let _ = fs::rename(&old, &self.dest);
                return Err(FormatError::io(&self.dest, e));
            }
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.tmp, &self.dest).map_err(|e| FormatError::io(&self.dest, e))?;
        }
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for IndexWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// A streaming writer for one component file; call [`ComponentWriter::finish`] to append the
/// footer and flush to disk.
#[derive(Debug)]
pub struct ComponentWriter {
    inner: FooterWriter<BufWriter<File>>,
    path: PathBuf,
}

impl ComponentWriter {
    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Payload bytes written so far.
    pub fn payload_len(&self) -> u64 {
        self.inner.payload_len()
    }

    /// Appends the footer, flushes and syncs the file.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        let (buf, _) = self.inner.finish().map_err(|e| FormatError::io(&path, e))?;
        let file = buf.into_inner().map_err(|e| FormatError::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| FormatError::io(&path, e))
    }
}

impl Write for ComponentWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names_are_recognised_exactly() {
        assert_eq!(leftover_pid(".idx.tmp-123-4", "idx"), Some(123));
        assert_eq!(leftover_pid(".idx.tmp-123", "idx"), Some(123));
        assert_eq!(leftover_pid(".idx.old-123-0", "idx"), Some(123));
        for other in [
            ".idx.old-123",
            ".idx.tmp-",
            ".idx.tmp-12a-1",
            ".idx.tmpx-1-2",
            ".idy.tmp-1-2",
            "idx.tmp-1-2",
            ".idx.tmp-1-2-3",
        ] {
            assert_eq!(leftover_pid(other, "idx"), None, "{other}");
        }
    }

    #[test]
    fn only_leftovers_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = 4_000_000_000u32; // above any pid_max
        let me = std::process::id();
        for d in [
            format!(".idx.tmp-{dead}-0"),
            format!(".idx.old-{dead}-3"),
            format!(".idx.tmp-{me}-99"),
            format!(".other.tmp-{dead}-0"),
        ] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join(format!(".idx.tmp-{dead}")), b"x").unwrap();
        let removed = remove_stale_siblings(&dir.path().join("idx"));
        if !Path::new("/proc/self").exists() {
            assert!(removed.is_empty());
            return;
        }
        let names: Vec<String> =
            removed.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            [format!(".idx.old-{dead}-3"), format!(".idx.tmp-{dead}"), format!(".idx.tmp-{dead}-0")]
        );
        assert!(dir.path().join(format!(".idx.tmp-{me}-99")).exists());
        assert!(dir.path().join(format!(".other.tmp-{dead}-0")).exists());
        // The writer cleans up on create.
        let leftover = dir.path().join(format!(".idx.tmp-{dead}-9"));
        fs::create_dir(&leftover).unwrap();
        let _w = IndexWriter::create(&dir.path().join("idx"), false).unwrap();
        assert!(!leftover.exists());
        assert!(dir.path().join(format!(".idx.tmp-{me}-99")).exists());
    }
}
