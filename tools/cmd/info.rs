//! `colbert-index info`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use engine::Segment;
use index_format::SizeClass;

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
    let mut out = std::io::stdout().lock();
    let live = engine::Index::open(&args.index)?;
    let segments = segment_lines(&live);
    let index = Segment::open(&args.index)?;
    let meta = index.meta();
    let bytes = index.reader().size_bytes();
    let tokens = meta.n_tokens.max(1) as f64;
    let per_token = bytes as f64 / tokens;
    // Bytes (files with their footers) per size class, and the files in each.
    let mut parts: Vec<(SizeClass, u64, Vec<&str>)> = Vec::new();
    for (c, size) in index.reader().file_sizes() {
        match parts.iter_mut().find(|p| p.0 == c.size_class()) {
            Some(p) => {
                p.1 += size;
                p.2.push(c.file_name());
            }
            None => parts.push((c.size_class(), size, vec![c.file_name()])),
        }
    }
    parts.sort_by_key(|p| p.0);
    let ivf_entries = match index.reader().ivf() {
        Some(ivf) => Some(ivf.count_entries().map_err(|e| {
            anyhow::anyhow!(
                "{}: corrupt inverted file: {e}",
                args.index.join(ivf.component().file_name()).display()
            )
        })?),
        None => None,
    };
    let ivf_bytes = parts.iter().find(|p| p.0 == SizeClass::Ivf).map_or(0, |p| p.1);
    // Payload bits per IVF entry (the footer is not an entry's).
    let ivf_bits = ivf_entries.map(|n| (ivf_bytes.saturating_sub(32) * 8) as f64 / n.max(1) as f64);
    if args.json {
        let mut v = serde_json::to_value(meta)?;
        v["index_bytes"] = bytes.into();
        v["bytes_per_token"] = per_token.into();
        v["bytes_per_token_by_part"] = SizeClass::ALL
            .iter()
            .map(|&class| {
                let b = parts.iter().find(|p| p.0 == class).map_or(0, |p| p.1);
                (class.name().to_string(), serde_json::json!(b as f64 / tokens))
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        v["ivf_entries"] = ivf_entries.into();
        v["ivf_bits_per_entry"] = ivf_bits.into();
        v["nbits"] = meta.kind.nbits().into();
        v["n_centroids"] = meta.residual.map_or(0, |r| r.n_centroids).into();
        v["live_docs"] = live.n_docs().into();
        v["segments"] = segments.iter().map(|s| s.json.clone()).collect::<Vec<_>>().into();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "index          {}", args.index.display())?;
        writeln!(out, "format version {}", meta.format_version)?;
        writeln!(out, "kind           {:?} (nbits {})", meta.kind, meta.kind.nbits())?;
        writeln!(out, "dim            {}", meta.dim)?;
        if let Some(r) = meta.residual {
            writeln!(
                out,
                "centroids      {} ({} buckets, {}exact f16 embeddings {})",
                r.n_centroids,
                if r.joint_codebooks {
                    "joint per-byte codebook"
                } else if r.per_dim_buckets {
                    "per-dimension"
                } else {
                    "pooled"
                },
                if r.unit_norm { "unit-norm tokens: decoded vectors renormalised, " } else { "" },
                if r.has_embeddings { "kept" } else { "not kept" }
            )?;
        }
        if let Some(scale) = meta.build.get("residual_scale").and_then(|v| v.as_f64()) {
            if scale != 1.0 {
                writeln!(out, "decoding scale {scale:.4} (decoded residuals scaled to the sample's energy)")?;
            }
        }
        writeln!(out, "documents      {}", meta.n_docs)?;
        if segments.len() > 1 || live.n_docs() != meta.n_docs {
            writeln!(
                out,
                "live documents {} in {} segments (the figures around are the base segment's)",
                live.n_docs(),
                segments.len()
            )?;
            for s in &segments {
                writeln!(out, "  {}", s.text)?;
            }
            if let Some(advice) = rebuild_advice(&live) {
                writeln!(out, "advice         {advice}")?;
            }
        }
        writeln!(
            out,
            "tokens         {} ({:.1} per document)",
            meta.n_tokens,
            meta.n_tokens as f64 / meta.n_docs as f64
        )?;
        writeln!(out, "size           {bytes} bytes ({per_token:.3} bytes per token)")?;
        for (class, b, files) in &parts {
            let extra = match (class, ivf_entries, ivf_bits) {
                (SizeClass::Ivf, Some(n), Some(bits)) => format!(", {n} entries, {bits:.2} bits each"),
                _ => String::new(),
            };
            writeln!(
                out,
                "  {:<13}{:>9.3} bytes per token ({}{extra})",
                class.name().replace('_', "-"),
                *b as f64 / tokens,
                files.join(", ")
            )?;
        }
        writeln!(out, "created by     {}", meta.created_by)?;
        if let Some(enc) = &meta.encoder {
            writeln!(out, "encoder        {enc}")?;
        }
    }
    Ok(())
}

/// One segment of an updated index, for `info`.
struct SegmentLine {
    text: String,
    json: serde_json::Value,
}

/// How well a segment's tokens fit the centroids: the mean dot product of a token with its
/// centroid (recorded at build, or when the segment was added).
fn token_fit(meta: &index_format::IndexMeta, added: bool) -> Option<f64> {
    let key = if added { "segment_token_fit" } else { "token_fit" };
    meta.build
        .get(key)
        .and_then(|v| v.as_f64())
        .or_else(|| (!added).then(|| meta.build.get("centroid_fit").and_then(|v| v.as_f64())).flatten())
}

/// The drift below which (added segments' token fit over the base's) a rebuild is advised.
const DRIFT_REBUILD: f64 = 0.9;

fn segment_lines(index: &engine::Index) -> Vec<SegmentLine> {
    let base_fit = token_fit(index.meta(), false);
    index
        .manifest()
        .segments
        .iter()
        .zip(index.segments())
        .enumerate()
        .map(|(i, (entry, seg))| {
            let fit = token_fit(seg.meta(), i > 0);
            let drift = match (i > 0, fit, base_fit) {
                (true, Some(f), Some(b)) if b > 0.0 => Some(f / b),
                _ => None,
            };
            let text = format!(
                "{:<12} {} documents, {} deleted, {} tokens{}",
                if i == 0 { "base" } else { entry.name.as_str() },
                entry.n_docs,
                entry.deleted.len(),
                seg.meta().n_tokens,
                drift.map_or(String::new(), |d| format!(", token fit {d:.3}x the base's"))
            );
            let json = serde_json::json!({
                "name": entry.name,
                "n_docs": entry.n_docs,
                "deleted": entry.deleted.len(),
                "n_tokens": seg.meta().n_tokens,
                "token_fit": fit,
                "fit_drift": drift,
            });
            SegmentLine { text, json }
        })
        .collect()
}

/// When a full rebuild (new centroids) is advised: added documents outnumber the base's live
/// ones, or an added segment's tokens fit the centroids markedly worse than the base's did.
fn rebuild_advice(index: &engine::Index) -> Option<String> {
    let m = index.manifest();
    let base_live = m.segments[0].n_docs - m.segments[0].deleted.len() as u64;
    let added: u64 = m.segments[1..].iter().map(|s| s.n_docs - s.deleted.len() as u64).sum();
    let base_fit = token_fit(index.meta(), false)?;
    let worst = index
        .segments()
        .skip(1)
        .filter_map(|s| token_fit(s.meta(), true))
        .map(|f| f / base_fit)
        .fold(f64::INFINITY, f64::min);
    if worst < DRIFT_REBUILD {
        return Some(format!(
            "rebuild: added tokens fit the centroids {worst:.3}x as well as the base's (below {DRIFT_REBUILD}): the collection has drifted from what the centroids were trained on"
        ));
    }
    if added > base_live {
        return Some(format!("rebuild: {added} added documents outnumber the base's {base_live}; new centroids would fit them better"));
    }
    if m.segments.len() > 8 || m.segments.iter().any(|s| s.deleted.len() as u64 * 10 > s.n_docs) {
        return Some("compact: many segments or deleted documents slow search down".into());
    }
    None
}
