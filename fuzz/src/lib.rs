//! Helpers shared by the fuzz targets: a per-process scratch directory (on tmpfs where there is
//! one), and the two ways an input becomes a file: replacing a template's content, or editing it.
//!
//! Inputs that edit a template reach deep into a parser from the first run, without a seed
//! corpus: a fuzzer starting from nothing rarely writes a valid footer, header or bincode
//! structure by itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use index_format::footer::{FooterWriter, FOOTER_LEN};

const SCRATCH_PREFIX: &str = "colbert-fuzz-";

/// This process's scratch directory, `colbert-fuzz-PID` in `/dev/shm` (or the temporary
/// directory). libFuzzer ends the process with `exit`, which runs no destructor, so instead of
/// removing its own directory each process removes those of processes that no longer run.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        // (Only where /proc lists the processes.)
        let sweep = Path::new("/proc/self").exists();
        for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten().filter(|_| sweep) {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = parent.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("a scratch directory");
        dir
    })
}

/// Writes `bytes` as `name` in the scratch directory; returns its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, bytes).expect("write a scratch file");
    path
}

/// `template` with edits applied: `edits` is a sequence of 5-byte records, a little-endian u32
/// offset (taken modulo the length) and the byte to put there; an incomplete last record is
/// ignored.
pub fn edited(template: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut out = template.to_vec();
    if out.is_empty() {
        return out;
    }
    for rec in edits.chunks_exact(5) {
        let at = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]) as usize % out.len();
        out[at] = rec[4];
    }
    out
}

/// `payload` followed by `footer` (the 32-byte footer of an index file) with its payload length
/// and CRC32 set to describe `payload`: version and component are kept, so the file passes the
/// footer checks and its content reaches the parsers.
pub fn with_fixed_footer(payload: &[u8], footer: &[u8]) -> Vec<u8> {
    let mut w = FooterWriter::new(std::io::sink(), 0);
    w.write_all(payload).expect("a sink accepts everything");
    let (_, computed) = w.finish().expect("a sink accepts everything");
    let mut footer = footer.to_vec();
    footer[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    footer[24..28].copy_from_slice(&computed.crc32.to_le_bytes());
    [payload, &footer].concat()
}

/// How an input turns into the bytes of an index file (a payload plus a footer), from the
/// `original` file: the flags of `mode` (one byte of the input) pick whether `rest` replaces the
/// payload or edits it ([`edited`]), and whether the footer is fixed to match
/// ([`with_fixed_footer`]) or the result is written as it is (edits then apply to the whole
/// file, footer included).
pub fn index_file_bytes(original: &[u8], mode: u8, rest: &[u8]) -> Vec<u8> {
    let replace = mode & 0x40 != 0;
    let raw = mode & 0x80 != 0;
    let split = original.len().saturating_sub(FOOTER_LEN);
    let (payload, footer) = original.split_at(split);
    match (replace, raw) {
        (true, true) => rest.to_vec(),
        (true, false) => with_fixed_footer(rest, footer),
        (false, true) => edited(original, rest),
        (false, false) => with_fixed_footer(&edited(payload, rest), footer),
    }
}
