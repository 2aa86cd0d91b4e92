//! The durable file-system steps of publishing an index, in one place: syncing files and
//! directories, renaming, exchanging two directories atomically, and the writer lock.
//!
//! Every step also counts towards an optional **crash point** ([`set_crash_point`]): the process
//! kills itself with SIGKILL just before step `n`. The crash-safety tests use it to stop a writer
//! at every step of an update and check what a reader then sees.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{FormatError, Result};

static STEPS: AtomicU64 = AtomicU64::new(0);
static CRASH_AT: AtomicU64 = AtomicU64::new(0);

/// Makes the process kill itself (SIGKILL where there are signals, else abort) just before its
/// `n`-th durable step (sync, rename or exchange; counted from 1). `0` turns it off. For
/// crash-safety tests only.
pub fn set_crash_point(n: u64) {
    CRASH_AT.store(n, Ordering::SeqCst);
}

/// Durable steps taken so far by this process.
pub fn steps_taken() -> u64 {
    STEPS.load(Ordering::SeqCst)
}

fn step() {
    let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    if CRASH_AT.load(Ordering::SeqCst) == n {
        #[cfg(unix)]
        // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}

/// `fsync`s a file.
pub fn sync_file(file: &File) -> std::io::Result<()> {
    step();
    file.sync_all()
}

/// `fsync`s a directory, so that the entries created or renamed in it are durable. A no-op
/// where directories cannot be opened (not Unix).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    step();
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Renames `from` to `to` (replacing a file at `to`, as `rename(2)`).
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    step();
    std::fs::rename(from, to)
}

/// Exchanges the directories `a` and `b` in one atomic step (Linux `renameat2` with
/// `RENAME_EXCHANGE`). Returns `Ok(false)` where the system or file system cannot do it, so the
/// caller can fall back to two renames.
pub fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    step();
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let ca = CString::new(a.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL byte in path"))?;
        let cb = CString::new(b.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL byte in path"))?;
        // SAFETY: both pointers are valid NUL-terminated strings that outlive the call;
        // renameat2 only reads them.
        let rc = unsafe {
            libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE)
        };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
            _ => Err(err),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        Ok(false)
    }
}

/// The exclusive right to change one index, held until dropped. Taken on a lock file beside the
/// index (`.NAME.lock` in its parent directory, so that it survives the index directory being
/// replaced) with `flock(2)`: the kernel releases it when the process exits or is killed, so a
/// crash never leaves an index locked.
#[derive(Debug)]
pub struct WriteLock {
    _file: File,
    path: PathBuf,
}

impl WriteLock {
    /// The lock file of the index at `index`.
    pub fn path_for(index: &Path) -> PathBuf {
        let name =
            index.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "index".into());
        index.with_file_name(format!(".{name}.lock"))
    }

    /// Takes the lock of the index at `index` without waiting. `what` (e.g. `"add"`) is recorded
    /// in the lock file so that a second writer's error can name the holder.
    ///
    /// # Errors
    /// [`FormatError::Busy`] naming the holder when another process holds it; an I/O error if
    /// the lock file cannot be created.
    pub fn acquire(index: &Path, what: &str) -> Result<WriteLock> {
        let path = Self::path_for(index);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| FormatError::io(&path, e))?;
        if !try_lock(&file).map_err(|e| FormatError::io(&path, e))? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(FormatError::Busy {
                path: index.to_path_buf(),
                holder: if holder.is_empty() { "another process".into() } else { holder.to_string() },
            });
        }
        let record = format!("process {} ({what})", std::process::id());
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(record.as_bytes());
        Ok(WriteLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor this `File` owns and keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(err)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("idx");
        let first = WriteLock::acquire(&index, "add").unwrap();
        assert_eq!(first.path(), dir.path().join(".idx.lock"));
        // flock locks belong to the open file description: a second open in the same process
        // conflicts like another process would.
        let err = WriteLock::acquire(&index, "delete").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FormatError::Busy { .. }), "{msg}");
        assert!(
            msg.contains("idx") && msg.contains(&format!("process {} (add)", std::process::id())),
            "{msg}"
        );
        drop(first);
        WriteLock::acquire(&index, "delete").unwrap();
    }

    #[test]
    fn directories_are_exchanged_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("x"), b"1").unwrap();
        if exchange(&a, &b).unwrap() {
            assert!(b.join("x").exists() && !a.join("x").exists());
        }
    }
}
