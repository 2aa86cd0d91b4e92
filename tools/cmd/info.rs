//! `colbert-index info`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use engine::Index;

/// Arguments of `info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The index directory.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// Print the metadata and sizes as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `info`.
pub fn run(args: &InfoArgs) -> Result<()> {
    let index = Index::open(&args.index)?;
    let meta = index.meta();
    let bytes = index.reader().size_bytes();
    let per_token = bytes as f64 / meta.n_tokens.max(1) as f64;
    if args.json {
        let mut v = serde_json::to_value(meta)?;
        v["index_bytes"] = bytes.into();
        v["bytes_per_token"] = per_token.into();
        v["nbits"] = meta.kind.nbits().into();
        v["n_centroids"] = meta.residual.map_or(0, |r| r.n_centroids).into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("index          {}", args.index.display());
        println!("format version {}", meta.format_version);
        println!("kind           {:?} (nbits {})", meta.kind, meta.kind.nbits());
        println!("dim            {}", meta.dim);
        if let Some(r) = meta.residual {
            println!(
                "centroids      {} ({} buckets, exact f16 embeddings {})",
                r.n_centroids,
                if r.joint_codebooks {
                    "joint per-byte codebook"
                } else if r.per_dim_buckets {
                    "per-dimension"
                } else {
                    "pooled"
                },
                if r.has_embeddings { "kept" } else { "not kept" }
            );
        }
        println!("documents      {}", meta.n_docs);
        println!(
            "tokens         {} ({:.1} per document)",
            meta.n_tokens,
            meta.n_tokens as f64 / meta.n_docs as f64
        );
        println!("size           {bytes} bytes ({per_token:.1} bytes per token)");
        println!("created by     {}", meta.created_by);
        if let Some(enc) = &meta.encoder {
            println!("encoder        {enc}");
        }
    }
    Ok(())
}
