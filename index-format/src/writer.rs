//! Atomic index writing: build in a temporary sibling directory, rename into place on commit.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::component::Component;
use crate::error::{FormatError, Result};
use crate::footer::FooterWriter;
use crate::fsx::{self, WriteLock};
use crate::meta::IndexMeta;

/// Writes the files of a new index (or of a new segment of an index) into a temporary
/// directory, and publishes them atomically.
///
/// Dropping the writer without calling [`IndexWriter::commit`] removes the temporary directory,
/// so an error half-way through a build leaves nothing behind.
#[derive(Debug)]
pub struct IndexWriter {
    target: Target,
    tmp: PathBuf,
    committed: bool,
}

#[derive(Debug)]
enum Target {
    /// A whole index at `dest`; with `lock`, replacing the index there.
    Index { dest: PathBuf, overwrite: bool, _lock: Option<WriteLock> },
    /// The segment subdirectory `name` of the index at `index` (whose lock the caller holds).
    Segment { index: PathBuf, name: String },
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn sibling(dest: &Path, tag: &str) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "index".into());
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    dest.with_file_name(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    }
}

/// Checks that `path` may be replaced by a new index: an index of this format (a directory with
/// a `meta.json` ending in this format's footer, or a `manifest.bin`) or an empty directory.
/// Anything else (a file, a directory of other things) is refused, so that `--overwrite` never
/// deletes what is not an index.
pub fn check_replaceable(path: &Path) -> Result<()> {
    let not = |detail: &str| Err(FormatError::NotAnIndex { path: path.to_path_buf(), detail: detail.into() });
    let meta = fs::symlink_metadata(path).map_err(|e| FormatError::io(path, e))?;
    if meta.file_type().is_symlink() {
        return not("a symbolic link");
    }
    if !meta.is_dir() {
        return not("a file, not a directory");
    }
    if has_footer(&path.join(Component::Meta.file_name()))
        || path.join(Component::Manifest.file_name()).is_file()
    {
        return Ok(());
    }
    let mut entries = fs::read_dir(path).map_err(|e| FormatError::io(path, e))?;
    if entries.next().is_none() {
        return Ok(());
    }
    not("a directory without this format's meta.json")
}

/// Whether `path` is a regular file ending in this format's footer magic.
fn has_footer(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(meta) = fs::symlink_metadata(path) else { return false };
    if !meta.is_file() || meta.len() < crate::footer::FOOTER_LEN as u64 {
        return false;
    }
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::End(-(crate::footer::FOOTER_LEN as i64)))?;
            f.read_exact(&mut magic)
        })
        .is_ok()
        && magic == crate::footer::MAGIC
}

/// Removes the leftovers of interrupted writes next to `dest`: siblings named
/// `.NAME.tmp-PID[-N]` or `.NAME.old-PID-N` (what [`IndexWriter`] and the embeddings writer
/// create) whose process `PID` is no longer running; an `.old` one is moved back to `dest`
/// instead when nothing is at `dest` (a replace interrupted between its two renames). Returns
/// what was removed. Only where
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
        // An index moved aside by a replace that died before the new one was in place (only
        // where directories cannot be exchanged atomically): the only copy, so it goes back.
        if file_name.contains(".old-")
            && fs::symlink_metadata(dest).is_err()
            && fs::rename(&path, dest).is_ok()
        {
            continue;
        }
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
    /// `overwrite` is false, if `overwrite` is set and `dest` is neither an index of this format
    /// nor an empty directory ([`check_replaceable`]), if another process is changing the index
    /// there ([`WriteLock`]), or if its parent directory does not exist. Leftovers of earlier
    /// interrupted builds of `dest` are removed first ([`remove_stale_siblings`]; call it
    /// yourself beforehand to learn what it removes, as the CLI does to report them).
    pub fn create(dest: &Path, overwrite: bool) -> Result<Self> {
        if dest.as_os_str().is_empty() || dest.file_name().is_none() {
            return Err(FormatError::io(
                dest,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory name"),
            ));
        }
        let exists = fs::symlink_metadata(dest).is_ok();
        if exists && !overwrite {
            return Err(FormatError::AlreadyExists { path: dest.to_path_buf() });
        }
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| FormatError::io(parent, e))?;
        }
        let lock = if exists {
            check_replaceable(dest)?;
            Some(WriteLock::acquire(dest, "build --overwrite")?)
        } else {
            None
        };
        remove_stale_siblings(dest);
        let tmp = sibling(dest, "tmp");
        fs::create_dir(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
        Ok(Self {
            target: Target::Index { dest: dest.to_path_buf(), overwrite, _lock: lock },
            tmp,
            committed: false,
        })
    }

    /// Starts an index that will replace the index at `dest`, whose write lock the caller
    /// holds (compaction): published as [`IndexWriter::create`] with `overwrite` publishes.
    pub fn create_replacement(dest: &Path, lock: &WriteLock) -> Result<Self> {
        if lock.path() != WriteLock::path_for(dest) {
            return Err(FormatError::Busy { path: dest.to_path_buf(), holder: "another lock".into() });
        }
        check_replaceable(dest)?;
        let tmp = sibling(dest, "tmp");
        fs::create_dir(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
        Ok(Self {
            target: Target::Index { dest: dest.to_path_buf(), overwrite: true, _lock: None },
            tmp,
            committed: false,
        })
    }

    /// Starts a new segment `name` (see [`crate::Manifest::segment_name`]) of the index at
    /// `index`, written in a temporary subdirectory and renamed to `index/name` on commit. The
    /// caller must hold the index's [`WriteLock`] and publish a manifest naming the segment
    /// afterwards: until then readers ignore it.
    pub fn create_segment(index: &Path, name: &str) -> Result<Self> {
        if !crate::Manifest::is_segment_name(name) {
            return Err(FormatError::io(
                index.join(name),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a segment name"),
            ));
        }
        let dest = index.join(name);
        if fs::symlink_metadata(&dest).is_ok() {
            return Err(FormatError::AlreadyExists { path: dest });
        }
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let tmp = index.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        fs::create_dir(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
        Ok(Self {
            target: Target::Segment { index: index.to_path_buf(), name: name.to_string() },
            tmp,
            committed: false,
        })
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

    /// Writes `meta.json` and publishes the directory at its destination; returns it.
    ///
    /// A replaced index is exchanged with the new one in one atomic step where the system can
    /// (Linux `renameat2`), so that the path always holds a complete index, old or new, and
    /// readers opening it see one or the other; the old one is then removed. Elsewhere it is
    /// moved aside first (`.NAME.old-PID-N`, which [`remove_stale_siblings`] moves back if the
    /// process dies before the new one is in place).
    pub fn commit(mut self, meta: &IndexMeta) -> Result<PathBuf> {
        let json = serde_json::to_vec_pretty(meta).expect("IndexMeta serialises");
        self.write_component(Component::Meta, &json)?;
        fsx::sync_dir(&self.tmp).map_err(|e| FormatError::io(&self.tmp, e))?;
        let published = match &self.target {
            Target::Segment { index, name } => {
                let dest = index.join(name);
                if fs::symlink_metadata(&dest).is_ok() {
                    return Err(FormatError::AlreadyExists { path: dest });
                }
                fsx::rename(&self.tmp, &dest).map_err(|e| FormatError::io(&dest, e))?;
                self.committed = true;
                fsx::sync_dir(index).map_err(|e| FormatError::io(index, e))?;
                dest
            }
            Target::Index { dest, overwrite, .. } => {
                let dest = dest.clone();
                if fs::symlink_metadata(&dest).is_ok() {
                    if !overwrite {
                        return Err(FormatError::AlreadyExists { path: dest });
                    }
                    check_replaceable(&dest)?;
                    self.replace(&dest)?;
                } else {
                    fsx::rename(&self.tmp, &dest).map_err(|e| FormatError::io(&dest, e))?;
                    self.committed = true;
                }
                let parent = parent_of(&dest);
                fsx::sync_dir(&parent).map_err(|e| FormatError::io(&parent, e))?;
                dest
            }
        };
        Ok(published)
    }

    /// Puts the complete temporary directory at `dest`, where an index is.
    fn replace(&mut self, dest: &Path) -> Result<()> {
        if fsx::exchange(&self.tmp, dest).map_err(|e| FormatError::io(dest, e))? {
            // The temporary path now holds the old index.
            self.committed = true;
            let _ = fs::remove_dir_all(&self.tmp);
            return Ok(());
        }
        let old = sibling(dest, "old");
        fsx::rename(dest, &old).map_err(|e| FormatError::io(dest, e))?;
        if let Err(e) = fsx::rename(&self.tmp, dest) {
            let _ = fs::rename(&old, dest);
            return Err(FormatError::io(dest, e));
        }
        self.committed = true;
        let _ = fs::remove_dir_all(&old);
        Ok(())
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
        fsx::sync_file(&file).map_err(|e| FormatError::io(&path, e))
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
        // The new index is in place: the old one moved aside is garbage.
        fs::create_dir(dir.path().join("idx")).unwrap();
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
        let _w = IndexWriter::create(&dir.path().join("idx"), true).unwrap();
        assert!(!leftover.exists());
        assert!(dir.path().join(format!(".idx.tmp-{me}-99")).exists());
    }

    #[test]
    fn an_index_moved_aside_by_a_dead_replace_is_moved_back() {
        let dir = tempfile::tempdir().unwrap();
        let dead = 4_000_000_000u32;
        let old = dir.path().join(format!(".idx.old-{dead}-1"));
        fs::create_dir(&old).unwrap();
        fs::write(old.join("meta.json"), b"x").unwrap();
        remove_stale_siblings(&dir.path().join("idx"));
        if Path::new("/proc/self").exists() {
            assert!(dir.path().join("idx/meta.json").exists() && !old.exists());
        }
    }

    #[test]
    fn overwrite_refuses_what_is_not_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("mydocs");
        fs::create_dir(&docs).unwrap();
        fs::write(docs.join("thesis.tex"), b"x").unwrap();
        let err = IndexWriter::create(&docs, true).unwrap_err();
        assert!(matches!(err, FormatError::NotAnIndex { .. }), "{err}");
        assert!(docs.join("thesis.tex").exists());
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(IndexWriter::create(&file, true), Err(FormatError::NotAnIndex { .. })));
        // A fake meta.json without the footer is not an index either.
        fs::write(docs.join("meta.json"), b"{}").unwrap();
        assert!(matches!(IndexWriter::create(&docs, true), Err(FormatError::NotAnIndex { .. })));
    }
}
