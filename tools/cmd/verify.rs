//! `colbert-index verify`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use engine::rerank::bm25::Bm25Check;
use engine::Index;

/// Arguments of `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The index directory.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
}

/// Runs `verify`: opens the index (every live segment), recomputes every CRC32 and checks every
/// offset, and checks the BM25 sub-index's files.
pub fn run(args: &VerifyArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let index = Index::open(&args.index)?;
    let verified = index.verify()?;
    let (mut tokens, mut bytes) = (0u64, 0u64);
    for seg in index.segments() {
        tokens += seg.meta().n_tokens;
        bytes += seg.reader().size_bytes();
    }
    let segments = index.manifest().segments.len();
    let bm25 = match verified.bm25 {
        Bm25Check::Absent => String::new(),
        Bm25Check::Checksums { files, bytes } => format!("; bm25/: {files} files, {bytes} bytes checked"),
        Bm25Check::TantivyFooters => {
            "; bm25/: built without a checksum list, tantivy's own segment checksums checked".into()
        }
    };
    writeln!(
        out,
        "ok: {} ({} live documents, {} tokens{}, {} bytes checked{bm25})",
        args.index.display(),
        index.n_docs(),
        tokens,
        if segments > 1 { format!(" in {segments} segments") } else { String::new() },
        bytes
    )?;
    Ok(())
}
