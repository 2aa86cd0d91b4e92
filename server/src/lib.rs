//! `colbert-index serve`: an HTTP server over one shared [`engine::Index`].
//!
//! - `POST /rerank`: a Cohere / Jina style rerank of documents given by id (scored from the
//!   index) or as text (encoded with the index's model and scored by exact MaxSim);
//! - `POST /search`: the index's search, for a text query or query token embeddings;
//! - `GET /health`, `GET /metrics` (Prometheus text format), `GET /openapi.json`.
//!
//! Every error is `{"error": "one line"}` with a 4xx or 5xx status. Scoring runs on tokio's
//! blocking threads, at most [`Config::max_concurrency`] requests at a time (the others wait in
//! arrival order, within their deadline), so the runtime's threads keep accepting and answering.
//! [`Server::serve`] reloads the index every [`Config::reload_interval`]: updates published by
//! `colbert-index add`/`delete`/`compact` are served without a restart, each request seeing one
//! consistent snapshot. The library never prints: [`Server::bind`] returns the bound address for
//! the caller to report.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let index = engine::Index::open("my-index").expect("an index");
//! let server = colbert_server::Server::bind("127.0.0.1:0", index, colbert_server::Config::default()).await?;
//! eprintln!("listening on http://{}", server.local_addr());
//! server.serve(colbert_server::shutdown_signal()?).await
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
pub mod error;
pub mod metrics;
mod openapi;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine::Index;
use tokio::net::{TcpListener, ToSocketAddrs};

pub use error::ApiError;
pub use metrics::Metrics;
pub use openapi::document as openapi_document;

/// The server's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most documents one `/rerank` request may carry, and the largest `k` of `/search` (400
    /// beyond).
    pub max_documents: usize,
    /// Deadline of one request, from its headers to its response (503 beyond).
    pub timeout: Duration,
    /// Requests scored at once; more wait their turn (at least 1).
    pub max_concurrency: usize,
    /// How often [`Server::serve`] checks the index for published updates (`None`: never).
    pub reload_interval: Option<Duration>,
    /// Map the pages of an index's stored WARP layout (format v7, built with `--warp-layout`)
    /// at [`Server::bind`] and after each reload, when its files total at most this many bytes,
    /// so that the first searches do not each pay page faults ([`Index::prepare_warp`]). 0
    /// never does; a layout larger than memory should not be mapped whole (`colbert-index
    /// serve` defaults to half the memory the process may use).
    pub prepare_warp_max_bytes: u64,
}

impl Default for Config {
    /// 16 MiB bodies, 1000 documents, 30 s, one request per core, reload every 5 s, no WARP
    /// layout mapped up front (the library does not look at the machine's memory).
    fn default() -> Self {
        Config {
            max_body_bytes: 16 << 20,
            max_documents: 1000,
            timeout: Duration::from_secs(30),
            max_concurrency: std::thread::available_parallelism().map_or(1, usize::from),
            reload_interval: Some(Duration::from_secs(5)),
            prepare_warp_max_bytes: 0,
        }
    }
}

/// What every handler shares: the index, its stored texts, the limits and the metrics.
#[derive(Debug)]
pub(crate) struct AppState {
    served: RwLock<Served>,
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    pub(crate) permits: tokio::sync::Semaphore,
}

/// The snapshot being served.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub(crate) index: Index,
    /// The documents' texts, where the index stores them (built with `--bm25`).
    pub(crate) texts: Option<Arc<engine::rerank::bm25::Bm25Index>>,
}

impl Served {
    fn new(index: Index) -> Served {
        let texts = engine::rerank::bm25::Bm25Index::open_in(index.dir()).ok().map(Arc::new);
        Served { index, texts }
    }
}

impl AppState {
    fn new(index: Index, config: Config) -> Arc<AppState> {
        let permits = tokio::sync::Semaphore::new(config.max_concurrency.max(1));
        Arc::new(AppState {
            served: RwLock::new(Served::new(index)),
            config,
            metrics: Metrics::default(),
            permits,
        })
    }

    /// The snapshot to answer one request from (cheap: reference counts).
    pub(crate) fn served(&self) -> Served {
        self.served.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Serves the index's current state if an update was published since the last check;
    /// returns whether it changed.
    fn reload(&self) -> engine::Result<bool> {
        let current = self.served();
        let fresh = current.index.reload()?;
        // A compaction or a rebuild replaces the base segment (its metadata differs): its texts
        // are reopened too.
        let replaced_dir = fresh.meta() != current.index.meta();
        let changed = replaced_dir || fresh.manifest() != current.index.manifest();
        if changed {
            // Only a new snapshot has pages to map: an unchanged one was mapped before.
            prepare_warp(&fresh, self.config.prepare_warp_max_bytes)?;
            let texts = if replaced_dir { Served::new(fresh.clone()).texts } else { current.texts };
            *self.served.write().unwrap_or_else(|p| p.into_inner()) = Served { index: fresh, texts };
        }
        Ok(changed)
    }
}

/// Maps `index`'s stored WARP layout if it has one of at most `max_bytes`; returns the bytes
/// mapped (0: none). Segments kept from an earlier snapshot are visited again (cheaply: their
/// pages are mapped already).
fn prepare_warp(index: &Index, max_bytes: u64) -> engine::Result<u64> {
    let stored = index.stored_warp_bytes();
    if stored == 0 || stored > max_bytes {
        return Ok(0);
    }
    index.prepare_warp()?;
    Ok(stored)
}

/// The router serving every endpoint over `index` (for embedding in another axum application,
/// or testing without a socket). It serves `index` as given: reloading is [`Server::serve`]'s.
pub fn router(index: Index, config: Config) -> Router {
    app(AppState::new(index, config))
}

fn app(state: Arc<AppState>) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/rerank", post(api::rerank))
        .route(metrics::RERANK_ALIASES[0], post(api::rerank))
        .route(metrics::RERANK_ALIASES[1], post(api::rerank))
        .route("/search", post(api::search))
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .route("/openapi.json", get(api::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no endpoint {}; see GET /openapi.json", req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}; see GET /openapi.json", req.method(), req.uri().path()),
    )
}

/// Records a request in the metrics even when its client goes away (the future is dropped).
struct Tracked<'a> {
    metrics: &'a Metrics,
    path: String,
    start: Instant,
    status: u16,
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.metrics.finish(&self.path, self.status, self.start.elapsed());
    }
}

/// Applies the deadline and records the request's status and latency. A request past its
/// deadline answers 503; its scoring, already running on a blocking thread, finishes unseen.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    state.metrics.start();
    // A client that disconnects mid-request is counted as nginx does: 499.
    let mut tracked = Tracked {
        metrics: &state.metrics,
        path: req.uri().path().to_owned(),
        start: Instant::now(),
        status: 499,
    };
    let timeout = state.config.timeout;
    let response = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request did not finish within its deadline of {} ms", timeout.as_millis()),
        )
        .into_response(),
    };
    tracked.status = response.status().as_u16();
    response
}

/// A server bound to its address, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    addr: SocketAddr,
    warp_mapped: u64,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port; [`Server::local_addr`] tells which), then maps
    /// the index's stored WARP layout where [`Config::prepare_warp_max_bytes`] allows (on a
    /// blocking thread: reading it from disk may take seconds).
    ///
    /// # Errors
    /// If the address cannot be resolved or bound, or the stored layout is corrupt (an error of
    /// kind [`std::io::ErrorKind::InvalidData`] naming the file).
    pub async fn bind(addr: impl ToSocketAddrs, index: Index, config: Config) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let max_bytes = config.prepare_warp_max_bytes;
        let (index, warp_mapped) = tokio::task::spawn_blocking(move || {
            let mapped = prepare_warp(&index, max_bytes);
            (index, mapped)
        })
        .await
        .map_err(std::io::Error::other)?;
        // `InvalidData`: the index is at fault, not the address.
        let warp_mapped = warp_mapped.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(Server { listener, state: AppState::new(index, config), addr, warp_mapped })
    }

    /// Bytes of the stored WARP layout [`Server::bind`] mapped (0: none, or none stored).
    pub fn warp_mapped_bytes(&self) -> u64 {
        self.warp_mapped
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops accepting connections and returns once the
    /// requests in flight have been answered. Every [`Config::reload_interval`] it checks the
    /// index for published updates and serves the new state (a failed check keeps the current
    /// one and is counted in `/metrics`).
    ///
    /// # Errors
    /// If the listener fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let reloader = self
            .state
            .config
            .reload_interval
            .map(|every| tokio::spawn(reload_every(self.state.clone(), every)));
        let served = axum::serve(self.listener, app(self.state)).with_graceful_shutdown(shutdown).await;
        if let Some(task) = reloader {
            task.abort();
        }
        served
    }
}

/// Checks the index for updates every `every`, on a blocking thread (a check reads the manifest;
/// a change opens the new segments).
async fn reload_every(state: Arc<AppState>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let shared = state.clone();
        let outcome = tokio::task::spawn_blocking(move || shared.reload()).await;
        state.metrics.reloaded(matches!(outcome, Ok(Ok(_))), matches!(outcome, Ok(Ok(true))));
    }
}

/// A future that completes on SIGTERM or SIGINT (ctrl-c). The handlers are installed when this
/// is called (not when the future is first polled), so a signal arriving just after cannot kill
/// the process. Call it inside a tokio runtime.
///
/// # Errors
/// If a signal handler cannot be installed.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use engine::{BuildOptions, IndexBuilder};

    use super::*;

    /// An index of three 2-token documents of dimension 8.
    fn tiny_index(dir: &std::path::Path) -> Index {
        let doc =
            |hot: usize| -> Vec<f32> { (0..16).map(|i| if i % 8 == hot { 1.0 } else { 0.0 }).collect() };
        let path = dir.join("idx");
        let mut builder = IndexBuilder::create(&path, 8, BuildOptions::default()).unwrap();
        for (id, hot) in [("doc-1", 1), ("doc-2", 2), ("doc-3", 3)] {
            builder.add(id, &doc(hot)).unwrap();
        }
        builder.finish().unwrap();
        Index::open(&path).unwrap()
    }

    /// A server maps a stored WARP layout at bind when it is within the configured size.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bind_maps_a_stored_warp_layout_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warp");
        let params = engine::CompressedParams { warp_layout: true, ..engine::CompressedParams::new(2) };
        let mut b = engine::CompressedBuilder::create(&path, 8, params, BuildOptions::default()).unwrap();
        let tokens: Vec<f32> = (0..64 * 8).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        b.train(&tokens, 64).unwrap();
        for (d, doc) in tokens.chunks_exact(4 * 8).enumerate() {
            b.add(&format!("d{d}"), doc).unwrap();
        }
        b.finish().unwrap();
        let index = Index::open(&path).unwrap();
        let stored = index.stored_warp_bytes();
        assert!(stored > 0);
        for (budget, mapped) in [(u64::MAX, stored), (stored, stored), (stored - 1, 0), (0, 0)] {
            let config = Config { prepare_warp_max_bytes: budget, ..Config::default() };
            let server = Server::bind("127.0.0.1:0", index.clone(), config).await.unwrap();
            assert_eq!(server.warp_mapped_bytes(), mapped, "budget {budget}");
        }
        let plain = tiny_index(dir.path());
        let config = Config { prepare_warp_max_bytes: u64::MAX, ..Config::default() };
        assert_eq!(Server::bind("127.0.0.1:0", plain, config).await.unwrap().warp_mapped_bytes(), 0);
    }

    fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head[9..12].parse().unwrap(), serde_json::from_str(body).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_embedded_server_answers_and_shuts_down() {
        let dir = tempfile::tempdir().unwrap();
        let index = tiny_index(dir.path());
        let config = Config { max_documents: 2, ..Config::default() };
        let server = Server::bind("127.0.0.1:0", index, config).await.unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        let answers = tokio::task::spawn_blocking(move || {
            let q = serde_json::json!([[0, 0, 1, 0, 0, 0, 0, 0]]);
            vec![
                call(addr, "GET", "/health", ""),
                call(
                    addr,
                    "POST",
                    "/rerank",
                    &serde_json::json!({"query_embeddings": q, "documents": [{"id": "doc-3"}, {"id": "doc-2"}]})
                        .to_string(),
                ),
                call(addr, "POST", "/search", &serde_json::json!({"query_embeddings": q, "k": 1}).to_string()),
                call(addr, "POST", "/search", &serde_json::json!({"query_embeddings": q, "k": 3}).to_string()),
                call(addr, "POST", "/rerank", "{\"documents\": 5}"),
                call(
                    addr,
                    "POST",
                    "/v2/rerank",
                    &serde_json::json!({"query_embeddings": q, "documents": [{"id": "doc-3"}, {"id": "doc-2"}]})
                        .to_string(),
                ),
            ]
        })
        .await
        .unwrap();
        assert_eq!(
            answers[0],
            (200, serde_json::json!({"status": "ok", "documents": 3, "dim": 8, "generation": 0}))
        );
        assert_eq!(answers[1].0, 200);
        assert_eq!(answers[5], answers[1], "Cohere's versioned path answers as /rerank");
        assert_eq!(answers[1].1["results"][0]["index"], 1);
        assert_eq!(answers[1].1["results"][0]["relevance_score"], 1.0);
        assert_eq!(answers[2].1, serde_json::json!({"results": [{"id": "doc-2", "score": 1.0}]}));
        assert_eq!(answers[3].0, 400);
        assert_eq!(answers[4].0, 400);
        assert!(answers[4].1["error"].as_str().unwrap().contains("invalid type"), "{:?}", answers[4]);
        stop.send(()).unwrap();
        serving.await.unwrap().unwrap();
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
