//! `colbert-index verify`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use engine::Segment;

/// Arguments of `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The index directory.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
}

/// Runs `verify`: opens the index, recomputes every CRC32 and checks every offset.
pub fn run(args: &VerifyArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let index = Segment::open(&args.index)?;
    index.verify()?;
    let meta = index.meta();
    writeln!(
        out,
        "ok: {} ({} documents, {} tokens, {} bytes checked)",
        args.index.display(),
        meta.n_docs,
        meta.n_tokens,
        index.reader().size_bytes()
    )?;
    Ok(())
}
