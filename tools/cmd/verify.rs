//! `colbert-index verify`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use engine::Index;

/// Arguments of `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The index directory.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
}

/// Runs `verify`: opens the index (every live segment), recomputes every CRC32 and checks every
/// offset.
pub fn run(args: &VerifyArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let index = Index::open(&args.index)?;
    index.verify()?;
    let (mut tokens, mut bytes) = (0u64, 0u64);
    for seg in index.segments() {
        tokens += seg.meta().n_tokens;
        bytes += seg.reader().size_bytes();
    }
    let segments = index.manifest().segments.len();
    writeln!(
        out,
        "ok: {} ({} live documents, {} tokens{}, {} bytes checked)",
        args.index.display(),
        index.n_docs(),
        tokens,
        if segments > 1 { format!(" in {segments} segments") } else { String::new() },
        bytes
    )?;
    Ok(())
}
