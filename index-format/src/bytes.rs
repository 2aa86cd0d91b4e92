//! Zero-copy byte buffers over a memory map or a heap vector, and typed views of them.
//!
//! This module holds the crate's memory `unsafe` (mapping files and typed views, each with its
//! length and alignment checks); [`crate::fsx`] holds the rest, its system calls.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

use half::f16;

/// Plain-old-data element types that may be viewed directly from little-endian bytes.
///
/// Sealed: implemented for primitive integers, `f32` and `f16`, for which every bit pattern is
/// a valid value and which have no padding.
pub trait Plain: Copy + Send + Sync + 'static + private::Sealed {}

mod private {
    pub trait Sealed {}
}

macro_rules! plain {
    ($($t:ty),*) => { $(impl private::Sealed for $t {} impl Plain for $t {})* };
}
plain!(u8, u16, u32, u64, i32, i64, f32, f16);

#[cfg(not(target_endian = "little"))]
compile_error!("colbert-index reads its little-endian files in place and needs a little-endian CPU");

enum Backing {
    Mmap(memmap2::Mmap),
    Vec(Vec<u8>),
}

impl Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Vec(v) => v,
        }
    }
}

/// A cheaply cloneable, sliceable view into a shared buffer (a memory map or a `Vec`).
#[derive(Clone)]
pub struct Bytes {
    backing: Arc<Backing>,
    range: Range<usize>,
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bytes").field("len", &self.len()).finish()
    }
}

impl Bytes {
    /// Wraps a memory map.
    pub fn from_mmap(mmap: memmap2::Mmap) -> Self {
        let len = mmap.len();
        Self { backing: Arc::new(Backing::Mmap(mmap)), range: 0..len }
    }

    /// Wraps a heap buffer.
    pub fn from_vec(v: Vec<u8>) -> Self {
        let len = v.len();
        Self { backing: Arc::new(Backing::Vec(v)), range: 0..len }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.backing[self.range.clone()]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// A sub-view; `None` if `range` is out of bounds.
    pub fn slice(&self, range: Range<usize>) -> Option<Bytes> {
        if range.start > range.end || range.end > self.len() {
            return None;
        }
        let start = self.range.start + range.start;
        Some(Bytes { backing: self.backing.clone(), range: start..start + range.len() })
    }

    /// Tells the kernel this process is done with `range` (relative to this view) of a memory
    /// map: the pages it touches, widened by the kernel's fault-around window (a fault maps up to
    /// 64 KiB of neighbouring cached pages too), leave the process's resident set, and a later
    /// read faults them back in from the file. Streaming readers call it on what they have
    /// consumed, so that reading a file larger than RAM does not grow the resident set. A no-op
    /// for heap buffers, off Unix, and on failure (it is only a hint).
    pub fn release(&self, range: Range<usize>) {
        #[cfg(unix)]
        if let Backing::Mmap(m) = &*self.backing {
            const WINDOW: usize = 64 * 1024;
            let a = (self.range.start + range.start).saturating_sub(WINDOW) / WINDOW * WINDOW;
            let b = ((self.range.start + range.end).saturating_add(WINDOW)).min(m.len());
            if a < b {
                // SAFETY: the map is read-only and file-backed (`map_file`), so discarding its
                // pages cannot lose data or change what any outstanding slice reads: the next
                // access faults the same bytes back in from the file, which is never modified
                // while mapped (the contract documented on `map_file`).
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, a, b - a) };
            }
        }
        #[cfg(not(unix))]
        let _ = range;
    }

    /// Tells the kernel this memory map is read at random: a page fault reads that page, not a
    /// read-ahead window around it. Right for the per-document payloads that search and rerank
    /// touch a few documents at a time (on an index larger than the page cache, read-ahead
    /// would evict useful pages for neighbours nobody asked for). A no-op for heap buffers,
    /// off Unix, and on failure (it is only a hint).
    pub fn advise_random(&self) {
        #[cfg(unix)]
        if let Backing::Mmap(m) = &*self.backing {
            let _ = m.advise(memmap2::Advice::Random);
        }
    }

    /// Views the bytes as a slice of `T`; `None` if the length is not a multiple of
    /// `size_of::<T>()` or the start is not aligned for `T`.
    pub fn typed<T: Plain>(&self) -> Option<&[T]> {
        cast_slice(self.as_slice())
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Views bytes as a slice of `T`, checking length and alignment.
pub fn cast_slice<T: Plain>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size)
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
    {
        return None;
    }
    // SAFETY: `T: Plain` is a primitive for which every bit pattern is valid and which has no
    // padding; the pointer is aligned for `T` (checked above), the length is an exact multiple
    // of `size_of::<T>()` (checked above), and the returned slice borrows `bytes`, so it cannot
    // outlive the memory.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), bytes.len() / size) })
}

/// Views a slice of `T` as its bytes (little-endian on the only supported targets).
pub fn as_bytes<T: Plain>(values: &[T]) -> &[u8] {
    // SAFETY: `T: Plain` has no padding, so every byte of the slice is initialised; `u8` has
    // alignment 1; the length covers exactly the same memory, borrowed for the same lifetime.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

/// Memory-maps a whole file read-only.
pub fn map_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only. Index files are written once into a temporary directory and
    // never modified in place after the rename that publishes them; a process that truncates or
    // rewrites a published index file while it is mapped breaks that contract (as with every
    // mmap-based engine), which is documented in docs/FORMAT.md.
    unsafe { memmap2::Mmap::map(file) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_views_check_length_and_alignment() {
        let v: Vec<u64> = vec![1, 2, 3];
        let b = Bytes::from_vec(as_bytes(&v).to_vec());
        assert_eq!(b.typed::<u64>().unwrap(), &[1, 2, 3]);
        assert!(b.slice(0..7).unwrap().typed::<u64>().is_none());
        if (b.as_ptr() as usize).is_multiple_of(8) {
            assert!(b.slice(1..9).unwrap().typed::<u64>().is_none());
        }
        assert_eq!(b.slice(8..16).unwrap().typed::<u64>().unwrap(), &[2]);
        assert!(b.slice(10..30).is_none());
    }
}
