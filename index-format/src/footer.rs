//! The 32-byte footer at the end of every index file, and a writer that computes it.
//!
//! ```text
//! offset  size  field
//!      0     8  magic  b"CBRTIDX\0"
//!      8     4  format version (u32 LE)
//!     12     4  component id (u32 LE)
//!     16     8  payload length in bytes (u64 LE)
//!     24     4  CRC32 (IEEE) of the payload (u32 LE)
//!     28     4  reserved, zero
//! ```

use std::io::{self, Write};
use std::path::Path;

use crate::error::{FormatError, Result};
use crate::version::{FormatVersion, FORMAT_VERSION, OLDEST_SUPPORTED_VERSION};

/// The footer's magic bytes.
pub const MAGIC: [u8; 8] = *b"CBRTIDX\0";
/// The footer's size in bytes.
pub const FOOTER_LEN: usize = 32;

/// A decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Format version of the file.
    pub version: u32,
    /// Component id (see [`crate::Component::id`]).
    pub component: u32,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// CRC32 of the payload.
    pub crc32: u32,
}

impl Footer {
    /// Encodes the footer.
    pub fn to_bytes(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&self.component.to_le_bytes());
        out[16..24].copy_from_slice(&self.payload_len.to_le_bytes());
        out[24..28].copy_from_slice(&self.crc32.to_le_bytes());
        out
    }

    /// Splits a whole file into payload and footer, checking magic, version, component, length
    /// and that the reserved bytes are zero.
    pub fn split<'a>(path: &Path, file: &'a [u8], component: u32) -> Result<(&'a [u8], Footer)> {
        if file.len() < FOOTER_LEN {
            return Err(FormatError::Truncated {
                path: path.to_path_buf(),
                detail: format!("{} bytes, shorter than the {FOOTER_LEN}-byte footer", file.len()),
            });
        }
        let (payload, raw) = file.split_at(file.len() - FOOTER_LEN);
        if raw[0..8] != MAGIC {
            return Err(FormatError::BadMagic { path: path.to_path_buf() });
        }
        let u32_at = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().expect("4 bytes"));
        let footer = Footer {
            version: u32_at(8),
            component: u32_at(12),
            payload_len: u64::from_le_bytes(raw[16..24].try_into().expect("8 bytes")),
            crc32: u32_at(24),
        };
        if !FormatVersion::is_supported(footer.version) {
            return Err(FormatError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: footer.version,
                oldest: OLDEST_SUPPORTED_VERSION,
                newest: FORMAT_VERSION,
            });
        }
        if footer.component != component {
            return Err(FormatError::WrongComponent {
                path: path.to_path_buf(),
                expected: component,
                found: footer.component,
            });
        }
        if raw[28..32] != [0; 4] {
            return Err(FormatError::corrupt(
                path,
                format!("the footer's reserved bytes are {:02x?}, expected zero", &raw[28..32]),
            ));
        }
        if footer.payload_len != payload.len() as u64 {
            return Err(FormatError::Truncated {
                path: path.to_path_buf(),
                detail: format!(
                    "footer records {} payload bytes, the file holds {}",
                    footer.payload_len,
                    payload.len()
                ),
            });
        }
        Ok((payload, footer))
    }

    /// Recomputes the payload's CRC32 and compares it with the footer's.
    pub fn check_crc(&self, path: &Path, payload: &[u8]) -> Result<()> {
        let computed = crc32fast::hash(payload);
        if computed != self.crc32 {
            return Err(FormatError::ChecksumMismatch {
                path: path.to_path_buf(),
                stored: self.crc32,
                computed,
            });
        }
        Ok(())
    }
}

/// Wraps a writer, counting and checksumming the payload, and appends the footer on
/// [`FooterWriter::finish`].
#[derive(Debug)]
pub struct FooterWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
    len: u64,
    component: u32,
}

impl<W: Write> FooterWriter<W> {
    /// Starts a payload for `component`.
    pub fn new(inner: W, component: u32) -> Self {
        Self { inner, hasher: crc32fast::Hasher::new(), len: 0, component }
    }

    /// Bytes of payload written so far.
    pub fn payload_len(&self) -> u64 {
        self.len
    }

    /// Appends the footer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<(W, Footer)> {
        let footer = Footer {
            version: FORMAT_VERSION,
            component: self.component,
            payload_len: self.len,
            crc32: self.hasher.clone().finalize(),
        };
        self.inner.write_all(&footer.to_bytes())?;
        self.inner.flush()?;
        Ok((self.inner, footer))
    }
}

impl<W: Write> Write for FooterWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(payload: &[u8], component: u32) -> Vec<u8> {
        let mut w = FooterWriter::new(Vec::new(), component);
        w.write_all(payload).unwrap();
        w.finish().unwrap().0
    }

    #[test]
    fn round_trip() {
        let f = file_with(b"hello", 7);
        let (p, footer) = Footer::split(Path::new("x"), &f, 7).unwrap();
        assert_eq!(p, b"hello");
        footer.check_crc(Path::new("x"), p).unwrap();
    }

    #[test]
    fn detects_every_kind_of_damage() {
        let f = file_with(b"hello world", 3);
        let p = Path::new("x");
        assert!(matches!(Footer::split(p, &f[..10], 3), Err(FormatError::Truncated { .. })));
        assert!(matches!(Footer::split(p, &f[1..], 3), Err(FormatError::Truncated { .. })));
        assert!(matches!(Footer::split(p, &f, 4), Err(FormatError::WrongComponent { .. })));
        let mut bad = f.clone();
        let n = bad.len();
        bad[n - FOOTER_LEN] ^= 1;
        assert!(matches!(Footer::split(p, &bad, 3), Err(FormatError::BadMagic { .. })));
        let mut newer = f.clone();
        newer[n - FOOTER_LEN + 8] = (FORMAT_VERSION + 1) as u8;
        let err = Footer::split(p, &newer, 3).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
        let mut reserved = f.clone();
        reserved[n - 1] = 1;
        let err = Footer::split(p, &reserved, 3).unwrap_err();
        assert!(matches!(err, FormatError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("reserved"), "{err}");
        let mut flipped = f.clone();
        flipped[2] ^= 0x10;
        let (payload, footer) = Footer::split(p, &flipped, 3).unwrap();
        assert!(matches!(footer.check_crc(p, payload), Err(FormatError::ChecksumMismatch { .. })));
    }
}
