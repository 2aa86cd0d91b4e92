//! `colbert-index serve`: the HTTP server (crate `colbert-server`) over one index.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use colbert_server::{Config, Server};
use engine::Index;

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The index directory.
    #[arg(long, value_name = "DIR")]
    pub index: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Largest request body accepted, in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Most documents one /rerank request may carry, and the largest k of /search (400 beyond).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_documents: usize,
    /// Deadline of one request in milliseconds (503 beyond).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Requests scored at once (default: one per core); more wait their turn in arrival order,
    /// within their deadline. Bounds the server's CPU and memory under any load.
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<usize>,
    /// Check the index for updates (`add`, `delete`, `compact`, a rebuild with --overwrite)
    /// every SECS seconds and serve them without a restart; 0 never checks.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub reload_secs: u64,
    /// An index built with --warp-layout: map its stored layout's pages at startup and after
    /// each reload, so that the first WARP searches do not each wait on page faults. `auto`
    /// does when the layout is at most half the memory this process may use (the machine's,
    /// or its memory control group's limit); an index larger than memory is left to be read as
    /// it is searched.
    #[arg(long, value_enum, default_value_t = PrepareWarp::Auto)]
    pub prepare_warp: PrepareWarp,
}

/// When `serve` maps a stored WARP layout up front.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrepareWarp {
    /// When it is at most half the memory the process may use.
    Auto,
    /// Always (reads the whole layout from disk if it is not cached).
    Always,
    /// Never: pages are read at each probed centroid's first use.
    Never,
}

impl PrepareWarp {
    /// The largest layout to map, in bytes.
    fn max_bytes(self) -> u64 {
        match self {
            PrepareWarp::Auto => super::memory::usable_bytes().map_or(0, |m| m / 2),
            PrepareWarp::Always => u64::MAX,
            PrepareWarp::Never => 0,
        }
    }
}

/// Runs `serve` until SIGTERM or ctrl-c, then lets the requests in flight finish.
pub fn run(args: &ServeArgs) -> Result<()> {
    if args.max_documents == 0
        || args.max_body_bytes == 0
        || args.timeout_ms == 0
        || args.max_concurrency == Some(0)
    {
        bail!("--max-documents, --max-body-bytes, --timeout-ms and --max-concurrency must be at least 1");
    }
    let index = Index::open(&args.index)?;
    // Load the recorded model now rather than on the first text request.
    if index.meta().encoder.is_some() {
        if let Err(e) = index.encoder() {
            eprintln!("warning: text queries and documents will fail: {e}");
        }
    }
    let defaults = Config::default();
    let config = Config {
        max_body_bytes: args.max_body_bytes,
        max_documents: args.max_documents,
        timeout: Duration::from_millis(args.timeout_ms),
        max_concurrency: args.max_concurrency.unwrap_or(defaults.max_concurrency),
        reload_interval: (args.reload_secs > 0).then(|| Duration::from_secs(args.reload_secs)),
        prepare_warp_max_bytes: args.prepare_warp.max_bytes(),
    };
    let stored_warp = index.stored_warp_bytes();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    let (documents, dim) = (index.n_docs(), index.dim());
    runtime.block_on(async {
        let shutdown = colbert_server::shutdown_signal().context("cannot install signal handlers")?;
        let started = std::time::Instant::now();
        let server = Server::bind((args.host.as_str(), args.port), index, config).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                anyhow::Error::new(e)
            } else {
                anyhow::Error::new(e).context(format!("cannot listen on {}:{}", args.host, args.port))
            }
        })?;
        let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
        if server.warp_mapped_bytes() > 0 {
            eprintln!(
                "mapped the stored WARP layout ({:.1} MiB) in {:.2} s",
                mib(server.warp_mapped_bytes()),
                started.elapsed().as_secs_f64()
            );
        } else if stored_warp > 0 {
            eprintln!(
                "the stored WARP layout ({:.1} MiB) is read as it is searched (--prepare-warp)",
                mib(stored_warp)
            );
        }
        eprintln!(
            "listening on http://{} ({}: {documents} documents, dim {dim})",
            server.local_addr(),
            args.index.display()
        );
        server
            .serve(async move {
                shutdown.await;
                eprintln!("shutting down: finishing the requests in flight");
            })
            .await
            .context("server failed")
    })?;
    // Work abandoned past its deadline is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    eprintln!("stopped");
    Ok(())
}
