//! A seeded corruption sweep (issue 20, "Hardening"): every file of a small compressed, a small
//! uncompressed and a small updated index is damaged in turn — bytes flipped, words overwritten,
//! the file truncated, with the footer left as it was (so the CRC or the length catches it) and
//! with the footer fixed up (so the damage reaches the parsers) — and `search`,
//! `search --exhaustive`, `search --mode warp`, `info` and `verify` are run on it in a child process under an
//! address-space limit and a watchdog. None may panic, abort, die by a signal or hang; every
//! failure is a one-line error naming a file of the index; and `verify` must refuse every file
//! whose footer was left as it was, naming that file.
//!
//! The seed is fixed (set `COLBERT_CORRUPTION_SEED` to explore others); a failure prints it and
//! the trial, so it can be replayed.

use std::fs;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use index_format::footer::{FooterWriter, FOOTER_LEN};
use tempfile::TempDir;

use crate::common::*;

const DEFAULT_SEED: u64 = 0x20_c0de;
/// Address space a child may map (KiB): far above what these indexes need (tens of MB) and far
/// below what a size read from a corrupt file would ask for.
const MEMORY_LIMIT_KIB: u64 = 4 << 20;
/// A child still running after this is hanging (they take milliseconds).
const WATCHDOG: Duration = Duration::from_secs(60);
/// Worker threads (each runs its children one at a time, on its own copies of the indexes).
const WORKERS: usize = 2;

/// How a file is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// One byte anywhere (payload or footer) XORed with a non-zero value; footer as it was.
    Flip,
    /// The file cut short; footer as it was (so gone, or in the wrong place).
    Truncate,
    /// One payload byte XORed, the footer's CRC recomputed.
    FlipFixed,
    /// One aligned 8-byte payload word overwritten (all ones, a large or a random value), the
    /// footer's CRC recomputed.
    WordFixed,
    /// The payload cut short, the footer's length and CRC recomputed.
    TruncateFixed,
}

impl Damage {
    /// The kinds each file gets: one with its footer kept (a flip or a cut, alternating from file
    /// to file) and the three that reach the parsers.
    fn for_file(n: usize) -> [Damage; 4] {
        let kept = if n.is_multiple_of(2) { Damage::Flip } else { Damage::Truncate };
        [kept, Damage::FlipFixed, Damage::WordFixed, Damage::TruncateFixed]
    }

    /// Whether the footer is left as it was: then `verify` must name the file.
    fn footer_kept(self) -> bool {
        matches!(self, Damage::Flip | Damage::Truncate)
    }
}

/// Sets the footer of `file` (its last 32 bytes) to describe `payload`, keeping its version and
/// component, and returns payload + footer.
fn with_fixed_footer(payload: &[u8], footer: &[u8]) -> Vec<u8> {
    let mut w = FooterWriter::new(std::io::sink(), 0);
    w.write_all(payload).unwrap();
    let (_, computed) = w.finish().unwrap();
    let mut footer = footer.to_vec();
    footer[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    footer[24..28].copy_from_slice(&computed.crc32.to_le_bytes());
    [payload, &footer].concat()
}

/// The damaged bytes of `file` and a description of the damage.
fn damage(file: &[u8], how: Damage, rng: &mut Rng) -> (Vec<u8>, String) {
    let (payload, footer) = file.split_at(file.len().saturating_sub(FOOTER_LEN));
    let xor = 1 + rng.below(255) as u8;
    match how {
        Damage::Flip => {
            let at = rng.below(file.len() as u64) as usize;
            let mut out = file.to_vec();
            out[at] ^= xor;
            (out, format!("byte {at} of {} XOR {xor:#04x}", file.len()))
        }
        Damage::Truncate => {
            let len = rng.below(file.len() as u64) as usize;
            (file[..len].to_vec(), format!("cut to {len} of {} bytes", file.len()))
        }
        Damage::FlipFixed | Damage::WordFixed if payload.is_empty() => (file.to_vec(), "nothing".into()),
        Damage::FlipFixed => {
            let at = rng.below(payload.len() as u64) as usize;
            let mut p = payload.to_vec();
            p[at] ^= xor;
            (
                with_fixed_footer(&p, footer),
                format!("payload byte {at} of {} XOR {xor:#04x}, CRC fixed", p.len()),
            )
        }
        Damage::WordFixed => {
            let words = (payload.len() / 8).max(1);
            let at = (rng.below(words as u64) as usize * 8).min(payload.len().saturating_sub(8));
            let value = match rng.below(3) {
                0 => u64::MAX,
                1 => (1 << 40) + rng.below(1 << 20),
                _ => rng.next_u64(),
            };
            let mut p = payload.to_vec();
            let end = (at + 8).min(p.len());
            p[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
            (with_fixed_footer(&p, footer), format!("payload word at {at} set to {value:#x}, CRC fixed"))
        }
        Damage::TruncateFixed => {
            let len = rng.below(payload.len() as u64 + 1) as usize;
            let len = len.min(payload.len().saturating_sub(1));
            (
                with_fixed_footer(&payload[..len], footer),
                format!("payload cut to {len} of {} bytes, footer fixed", payload.len()),
            )
        }
    }
}

/// Runs the CLI under the address-space limit and the watchdog; returns (status, stderr), or
/// an error describing a hang.
fn run_limited(args: &[&str]) -> Result<(std::process::ExitStatus, String), String> {
    let script = format!("ulimit -v {MEMORY_LIMIT_KIB} && exec \"$0\" \"$@\"");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_colbert-index"))
        .args(args)
        // (A backtrace of the debug binary takes seconds to print; the panic message is enough.)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return Ok((out.status, String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        if start.elapsed() > WATCHDOG {
            child.kill().unwrap();
            child.wait().unwrap();
            return Err(format!("still running after {WATCHDOG:?}: it hangs"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(dir.join(&rel)).unwrap() {
            let e = e.unwrap();
            let path = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Builds the three indexes from one synthetic corpus: `compressed` (nbits 2), `plain`
/// (uncompressed) and `updated` (compressed, then documents added as `seg-000001/` and others
/// deleted, so it has a manifest). Returns them and the queries file.
fn build_indexes(dir: &Path) -> (Vec<(&'static str, PathBuf)>, PathBuf) {
    let docs = dir.join("docs.safetensors");
    let queries = dir.join("queries.safetensors");
    let synth = |out: &Path, n: &str, seed: &str| {
        let mut args = vec!["synth", "--out", s(out), "--docs", n, "--tokens-per-doc", "16", "--dim", "64"];
        args.extend(["--clusters", "32", "--seed", seed, "--n-queries", "2"]);
        if out == docs {
            args.extend(["--queries-out", s(&queries)]);
        }
        cli_ok(&args);
    };
    synth(&docs, "200", "7");
    let compressed = dir.join("compressed");
    let plain = dir.join("plain");
    let updated = dir.join("updated");
    cli_ok(&["build", "--embeddings", s(&docs), "--index", s(&compressed)]);
    cli_ok(&["build", "--embeddings", s(&docs), "--index", s(&plain), "--nbits", "16"]);
    // The updated index keeps the centroid-grouped layout (v7 `warp_*` files, in both segments).
    cli_ok(&["build", "--embeddings", s(&docs), "--index", s(&updated), "--warp-layout"]);
    let more = dir.join("more.safetensors");
    synth(&more, "12", "8");
    let ids = dir.join("more.ids");
    fs::write(&ids, (0..12).map(|i| format!("new-{i}\n")).collect::<String>()).unwrap();
    cli_ok(&["add", "--index", s(&updated), "--embeddings", s(&more), "--ids", s(&ids)]);
    let gone = dir.join("gone.ids");
    fs::write(&gone, "3\n17\nnew-2\n").unwrap();
    cli_ok(&["delete", "--index", s(&updated), "--ids", s(&gone)]);
    for idx in [&compressed, &plain, &updated] {
        cli_ok(&["verify", "--index", s(idx)]);
    }
    assert!(updated.join("manifest.bin").is_file() && updated.join("seg-000001").is_dir());
    assert!(updated.join("warp_docs.u32").is_file() && updated.join("seg-000001/warp_docs.u32").is_file());
    (vec![("compressed", compressed), ("plain", plain), ("updated", updated)], queries)
}

/// One damaged file: where, how, and the seed of its damage.
struct Trial {
    index: usize,
    file: PathBuf,
    how: Damage,
    seed: u64,
}

/// Runs one trial on the indexes in `work` (restoring the file after); returns its failures.
fn run_trial(t: &Trial, work: &[(&str, PathBuf)], queries: &Path, seed: u64) -> Vec<String> {
    let (name, idx) = &work[t.index];
    let path = idx.join(&t.file);
    let original = fs::read(&path).unwrap();
    let (damaged, what) = damage(&original, t.how, &mut Rng::new(t.seed));
    fs::write(&path, &damaged).unwrap();
    let q = s(queries);
    let mut failures = Vec::new();
    let file_name = t.file.file_name().unwrap().to_str().unwrap();
    for args in [
        vec!["search", "--index", s(idx), "--query-embeddings", q],
        vec!["search", "--index", s(idx), "--query-embeddings", q, "--exhaustive"],
        vec!["search", "--index", s(idx), "--query-embeddings", q, "--mode", "warp"],
        vec!["info", "--index", s(idx)],
        vec!["verify", "--index", s(idx)],
    ] {
        let command = if args.contains(&"--exhaustive") {
            "search --exhaustive"
        } else if args.contains(&"--mode") {
            "search --mode warp"
        } else {
            args[0]
        };
        let trial = format!("seed {seed:#x}: {name}/{} ({what}): colbert-index {command}", t.file.display());
        let (status, err) = match run_limited(&args) {
            Ok(r) => r,
            Err(hang) => {
                failures.push(format!("{trial}: {hang}"));
                continue;
            }
        };
        let line = err.trim_end();
        if let Some(sig) = status.signal() {
            failures.push(format!("{trial}: killed by signal {sig}: {line}"));
        } else if status.code() == Some(101) || err.contains("panicked") {
            failures.push(format!("{trial}: panicked: {line}"));
        } else if !status.success() {
            if line.lines().count() != 1 || !line.starts_with("error: ") {
                failures.push(format!("{trial}: not a one-line error: {err:?}"));
            } else if !line.contains(s(idx)) {
                failures.push(format!("{trial}: the error names no file of the index: {line}"));
            } else if args[0] == "verify" && t.how.footer_kept() && !line.contains(file_name) {
                failures.push(format!("{trial}: verify does not name {file_name}: {line}"));
            }
        } else if args[0] == "verify" && t.how.footer_kept() {
            failures.push(format!("{trial}: verify accepted the damaged file"));
        }
    }
    fs::write(&path, &original).unwrap();
    failures
}

/// The sweep: 4 kinds of damage × every file of three indexes (54) × 5 commands (about 1,080
/// child processes, split over two workers).
#[test]
fn every_damaged_file_is_an_error_or_a_result_never_a_crash() {
    let seed = std::env::var("COLBERT_CORRUPTION_SEED")
        .ok()
        .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        .unwrap_or(DEFAULT_SEED);
    let dir = TempDir::new().unwrap();
    let (indexes, queries) = build_indexes(dir.path());
    let mut rng = Rng::new(seed);
    let mut trials = Vec::new();
    for (i, (_, idx)) in indexes.iter().enumerate() {
        for (n, file) in files_under(idx).into_iter().enumerate() {
            for how in Damage::for_file(n + i) {
                trials.push(Trial { index: i, file: file.clone(), how, seed: rng.next_u64() });
            }
        }
    }
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (trials, indexes, queries, dir) = (&trials, &indexes, &queries, dir.path());
                scope.spawn(move || {
                    let work: Vec<(&str, PathBuf)> = indexes
                        .iter()
                        .map(|(name, idx)| {
                            let copy = dir.join(format!("worker{w}")).join(name);
                            copy_dir(idx, &copy);
                            (*name, copy)
                        })
                        .collect();
                    trials
                        .iter()
                        .skip(w)
                        .step_by(WORKERS)
                        .flat_map(|t| run_trial(t, &work, queries, seed))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} trials × 5 commands failed (seed {seed:#x}; rerun with COLBERT_CORRUPTION_SEED={seed:x}):\n{}",
        failures.len(),
        trials.len(),
        failures.join("\n")
    );
}
