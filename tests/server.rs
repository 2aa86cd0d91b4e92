//! `colbert-index serve` end to end over loopback: the binary is started with `--port 0`, the
//! address read from its stderr, and requests sent by a minimal HTTP/1.1 client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use engine::embeddings::QueryEmbeddings;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common::*;

/// A running server, killed when dropped.
struct Served {
    child: Child,
    addr: String,
    /// The server's stderr lines after the listening line.
    log: mpsc::Receiver<String>,
}

impl Served {
    fn start(index: &Path, extra: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_colbert-index"))
            .args(["serve", "--index", s(index), "--host", "127.0.0.1", "--port", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start colbert-index serve");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Owned by `Served` from here, so a failure below still kills and reaps it.
        let mut served = Served { child, addr: String::new(), log: rx };
        let deadline = Instant::now() + Duration::from_secs(60);
        while served.addr.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = served.log.recv_timeout(left).expect("the server should print its address");
            if let Some(rest) = line.strip_prefix("listening on http://") {
                served.addr = rest.split_whitespace().next().unwrap().to_string();
            }
        }
        served
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        request(&self.addr, method, path, body)
    }

    /// POSTs `body` as JSON and parses the JSON answer.
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.call("POST", path, Some(&body.to_string()));
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn head(method: &str, path: &str, len: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

/// Reads a whole `Connection: close` response: (status, body).
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("a UTF-8 response");
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end: {text:?}"));
    let status =
        headers.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{headers}"));
    assert!(!headers.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{headers}");
    (status, body.to_string())
}

fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the server");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream
}

fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = connect(addr);
    let body = body.unwrap_or("");
    stream.write_all(head(method, path, body.len()).as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    read_response(&mut stream)
}

/// Asserts a `{"error": "one line"}` answer with `status` mentioning `needle`.
fn assert_error(got: (u16, String), status: u16, needle: &str) {
    let (code, text) = got;
    assert_eq!(code, status, "{text}");
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let msg = v["error"].as_str().unwrap_or_else(|| panic!("no error field: {text}"));
    assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
    assert!(msg.contains(needle), "error {msg:?} should mention {needle:?}");
}

/// A synthetic index of 80 documents `d0..d79` (dim 32, nbits 2) and 4 queries of 8 tokens.
fn synth_index(dir: &Path) -> (PathBuf, Vec<Vec<f32>>) {
    let p = |n: &str| s(&dir.join(n)).to_owned();
    cli_ok(&[
        "synth",
        "--docs",
        "80",
        "--tokens-per-doc",
        "8",
        "--max-tokens-per-doc",
        "24",
        "--dim",
        "32",
        "--clusters",
        "60",
        "--seed",
        "42",
        "--out",
        &p("docs.st"),
        "--queries-out",
        &p("q.st"),
        "--n-queries",
        "4",
        "--query-len",
        "8",
    ]);
    let ids: String = (0..80).map(|i| format!("d{i}\n")).collect();
    std::fs::write(dir.join("ids.txt"), ids).unwrap();
    let idx = dir.join("idx");
    cli_ok(&["build", "--embeddings", &p("docs.st"), "--ids", &p("ids.txt"), "--index", s(&idx)]);
    (idx, QueryEmbeddings::open(&dir.join("q.st")).unwrap().queries)
}

fn rows(q: &[f32], dim: usize) -> Value {
    Value::Array(q.chunks_exact(dim).map(|r| json!(r)).collect())
}

/// (id, score to 6 decimals) of a TREC run's lines for query `qid`.
fn trec(run: &str, qid: &str) -> Vec<(String, String)> {
    run.lines()
        .filter(|l| l.starts_with(&format!("{qid} ")))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[2].to_string(), f[4].to_string())
        })
        .collect()
}

fn score6(v: &Value) -> String {
    format!("{:.6}", v.as_f64().unwrap() as f32)
}

#[test]
fn rerank_and_search_match_the_cli_and_bad_requests_get_json_errors() {
    let dir = TempDir::new().unwrap();
    let (idx, queries) = synth_index(dir.path());
    let server = Served::start(&idx, &["--max-documents", "30", "--max-body-bytes", "8192"]);

    let (status, health) = server.post("/nothing", &json!({}));
    assert_eq!(status, 404, "{health}");
    let (status, text) = server.call("GET", "/health", None);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"status": "ok", "documents": 80, "dim": 32, "generation": 0})
    );

    // Search equals the CLI's search, query by query.
    let run = cli_ok(&[
        "search",
        "--index",
        s(&idx),
        "--query-embeddings",
        s(&dir.path().join("q.st")),
        "-k",
        "20",
    ]);
    // A /search response's hits as (id, score to 6 decimals), as `trec` reads a run.
    let hits = |body: &Value| -> Vec<(String, String)> {
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["id"].as_str().unwrap().to_string(), score6(&h["score"])))
            .collect()
    };
    let mut searches = 0;
    for (qi, q) in queries.iter().enumerate() {
        let (status, got) = server.post("/search", &json!({"query_embeddings": rows(q, 32), "k": 20}));
        assert_eq!(status, 200, "{got}");
        searches += 1;
        assert_eq!(hits(&got), trec(&run, &qi.to_string()), "query {qi}");
    }
    // WARP mode over HTTP equals the CLI's WARP search.
    let warp_run = cli_ok(&[
        "search",
        "--index",
        s(&idx),
        "--query-embeddings",
        s(&dir.path().join("q.st")),
        "-k",
        "20",
        "--mode",
        "warp",
    ]);
    let (status, got) =
        server.post("/search", &json!({"query_embeddings": rows(&queries[1], 32), "k": 20, "mode": "warp"}));
    assert_eq!(status, 200, "{got}");
    searches += 1;
    assert_eq!(hits(&got), trec(&warp_run, "1"), "WARP query 1");

    // Rerank by id equals the CLI's rerank of the same candidates (given in another order).
    let mut cands: Vec<String> = trec(&run, "0").into_iter().map(|(id, _)| id).collect();
    cands.reverse();
    cands.insert(3, "ghost".into());
    let tsv: String = cands.iter().map(|c| format!("0\t{c}\n")).collect();
    std::fs::write(dir.path().join("cands.tsv"), tsv).unwrap();
    let cli_rerank = cli_ok(&[
        "rerank",
        "--index",
        s(&idx),
        "--query-embeddings",
        s(&dir.path().join("q.st")),
        "--candidates",
        s(&dir.path().join("cands.tsv")),
        "-k",
        "30",
    ]);
    let docs: Vec<Value> = cands.iter().map(|c| json!({"id": c})).collect();
    let body =
        json!({"query_embeddings": rows(&queries[0], 32), "documents": docs, "return_documents": true});
    let (status, got) = server.post("/rerank", &body);
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["missing"], json!(["ghost"]));
    let results = got["results"].as_array().unwrap();
    assert_eq!(results.len(), 20);
    let ranked: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            let i = r["index"].as_u64().unwrap() as usize;
            assert_eq!(r["document"], json!({"id": cands[i]}));
            (cands[i].clone(), score6(&r["relevance_score"]))
        })
        .collect();
    assert_eq!(ranked, trec(&cli_rerank, "0"));
    // top_n keeps the best; without return_documents no document is echoed.
    let body = json!({"query_embeddings": rows(&queries[0], 32), "documents": docs, "top_n": 3});
    let (status, top) = server.post("/rerank", &body);
    assert_eq!(status, 200, "{top}");
    assert_eq!(top["results"].as_array().unwrap().len(), 3);
    assert_eq!(top["results"][0]["index"], results[0]["index"]);
    assert!(top["results"][0].get("document").is_none());

    // Bad requests: 4xx with a one-line JSON error.
    let q0 = rows(&queries[0], 32);
    let bad = |body: &str, status: u16, needle: &str| {
        assert_error(server.call("POST", "/rerank", Some(body)), status, needle)
    };
    bad("{\"query_embeddings\": \"x\", \"documents\": []}", 400, "invalid type");
    bad("{\"query\": 3, \"documents\": [\"a\"]}", 400, "invalid type");
    bad("not json", 400, "invalid request body");
    bad(&json!({"query": "   ", "documents": ["a"]}).to_string(), 400, "query is empty");
    bad(&json!({"query_embeddings": q0}).to_string(), 400, "missing field `documents`");
    bad(&json!({"documents": [{"id": "d1"}]}).to_string(), 400, "query_embeddings");
    bad(&json!({"query_embeddings": q0, "documents": []}).to_string(), 400, "documents is empty");
    bad(&json!({"query_embeddings": q0, "documents": [1]}).to_string(), 400, "documents[0]");
    bad(
        &json!({"query_embeddings": [[1.0, 2.0]], "documents": [{"id": "d1"}]}).to_string(),
        400,
        "dimension is 32",
    );
    bad(&json!({"query": "text", "documents": [{"id": "d1"}]}).to_string(), 400, "no model");
    bad(&json!({"query_embeddings": q0, "documents": ["some text"]}).to_string(), 400, "no model");
    let many: Vec<Value> = (0..31).map(|i| json!({"id": format!("d{i}")})).collect();
    bad(&json!({"query_embeddings": q0, "documents": many}).to_string(), 400, "at most 30");
    bad(
        &json!({"query_embeddings": q0, "documents": [{"id": "x".repeat(9000)}]}).to_string(),
        413,
        "length limit",
    );
    let search_bad = |body: Value, needle: &str| {
        assert_error(server.call("POST", "/search", Some(&body.to_string())), 400, needle)
    };
    search_bad(json!({"query_embeddings": q0, "k": 0}), "k must be between 1 and 30");
    search_bad(json!({"query_embeddings": q0, "mode": "fast"}), "mode must be");
    search_bad(json!({"query_embeddings": q0, "k": 31}), "k must be between 1 and 30");
    search_bad(json!({"query_embeddings": q0, "k": "ten"}), "invalid type");
    search_bad(json!({"query_embeddings": [vec![1e39f64; 32]]}), "non-finite");
    search_bad(json!({"query_embeddings": [vec![1e20f64; 32]]}), "");
    assert_error(server.call("GET", "/search", None), 405, "GET is not allowed");
    assert_error(server.call("GET", "/nowhere", None), 404, "/nowhere");

    // The OpenAPI document lists every route.
    let (status, text) = server.call("GET", "/openapi.json", None);
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for route in ["/rerank", "/search", "/health", "/metrics", "/openapi.json"] {
        assert!(doc["paths"].get(route).is_some(), "{route} missing from {text}");
    }

    // The metrics counted the requests made.
    let (status, metrics) = server.call("GET", "/metrics", None);
    assert_eq!(status, 200);
    let count = |endpoint: &str, code: u16| -> u64 {
        let prefix = format!("colbert_requests_total{{endpoint=\"{endpoint}\",status=\"{code}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.parse().unwrap())
    };
    assert_eq!(count("/search", 200), searches, "{metrics}");
    assert_eq!(count("/rerank", 200), 2, "{metrics}");
    assert_eq!(count("/rerank", 400), 12, "{metrics}");
    assert_eq!(count("/rerank", 413), 1, "{metrics}");
    assert_eq!(count("/search", 400), 6, "{metrics}");
    assert_eq!(count("/search", 405), 1, "{metrics}");
    assert_eq!(count("/health", 200), 1, "{metrics}");
    assert_eq!(count("/openapi.json", 200), 1, "{metrics}");
    assert_eq!(count("other", 404), 2, "{metrics}");
    // Successful searches, the six refused (400) and the GET (405).
    assert!(
        metrics.contains(&format!(
            "colbert_request_duration_seconds_count{{endpoint=\"/search\"}} {}\n",
            searches + 7
        )),
        "{metrics}"
    );
    assert!(metrics.contains("colbert_index_documents 80\n"), "{metrics}");
}

#[cfg(unix)]
#[test]
fn sigterm_lets_the_request_in_flight_finish_and_the_deadline_answers_503() {
    let dir = TempDir::new().unwrap();
    let (idx, queries) = synth_index(dir.path());
    let body = json!({"query_embeddings": rows(&queries[1], 32), "documents": [{"id": "d1"}, {"id": "d2"}]})
        .to_string();
    let (first, rest) = body.split_at(body.len() / 2);

    // A request whose body is still arriving is in flight past its deadline: 503.
    {
        let server = Served::start(&idx, &["--timeout-ms", "200"]);
        let mut stream = connect(&server.addr);
        stream.write_all(head("POST", "/rerank", body.len()).as_bytes()).unwrap();
        stream.write_all(first.as_bytes()).unwrap();
        assert_error(read_response(&mut stream), 503, "deadline of 200 ms");
        let (status, _) = server.call("GET", "/health", None);
        assert_eq!(status, 200);
    }

    // SIGTERM while a request is half sent: the request is answered, then the process exits 0.
    let mut server = Served::start(&idx, &[]);
    let mut stream = connect(&server.addr);
    stream.write_all(head("POST", "/rerank", body.len()).as_bytes()).unwrap();
    stream.write_all(first.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // Wait until the server has seen the signal before sending the rest.
    let seen = server.log.recv_timeout(Duration::from_secs(30)).expect("the server should report the signal");
    assert!(seen.starts_with("shutting down"), "{seen}");
    stream.write_all(rest.as_bytes()).unwrap();
    let (status, text) = read_response(&mut stream);
    assert_eq!(status, 200, "{text}");
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["results"].as_array().unwrap().len(), 2, "{text}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    // The listener is closed.
    assert!(TcpStream::connect(&server.addr).is_err());
}

const DOCS: &str = "d1\tThe boundary layer on a flat plate at supersonic speed.\n\
d2\tHeat transfer to blunt bodies in hypersonic flow.\n\
d3\tAeroelastic models of heated high speed aircraft.\n\
d4\tLaminar flow over swept wings.\n";

#[test]
fn text_queries_and_documents_use_the_index_model() {
    let Some(model) = tiny_model() else { return };
    let dir = TempDir::new().unwrap();
    let coll = dir.path().join("docs.tsv");
    std::fs::write(&coll, DOCS).unwrap();
    let idx = dir.path().join("idx");
    cli_ok(&[
        "build",
        "--collection",
        s(&coll),
        "--model",
        s(&model),
        "--index",
        s(&idx),
        "--nbits",
        "16",
        "--bm25",
    ]);
    let server = Served::start(&idx, &[]);

    let query = "hypersonic heat transfer";
    let run = cli_ok(&["search", "--index", s(&idx), "--query", query, "-k", "4", "--format", "trec"]);
    let qid = run.split(' ').next().unwrap();
    let (status, got) = server.post("/search", &json!({"query": query, "k": 4}));
    assert_eq!(status, 200, "{got}");
    let hits: Vec<(String, String)> = got["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].as_str().unwrap().to_string(), score6(&h["score"])))
        .collect();
    assert_eq!(hits, trec(&run, qid));
    // The index stores its texts (--bm25): each hit carries its own, unless asked not to.
    for h in got["results"].as_array().unwrap() {
        let line = DOCS.lines().find(|l| l.split('\t').next() == h["id"].as_str()).unwrap();
        assert_eq!(h["text"].as_str(), line.split_once('\t').map(|x| x.1), "{got}");
    }
    let (_, bare) = server.post("/search", &json!({"query": query, "k": 2, "return_text": false}));
    assert!(bare["results"][0].get("text").is_none(), "{bare}");

    // Texts are encoded and scored exactly; the same documents by id score from the index
    // (f16 embeddings, encoded by build): the same ranking, scores within rounding.
    let texts: Vec<&str> = DOCS.lines().map(|l| l.split_once('\t').unwrap().1).collect();
    let (status, by_text) =
        server.post("/rerank", &json!({"query": query, "documents": texts, "return_documents": true}));
    assert_eq!(status, 200, "{by_text}");
    let ids: Vec<Value> = (1..=4).map(|i| json!({"id": format!("d{i}")})).collect();
    let (status, by_id) = server.post("/rerank", &json!({"query": query, "documents": ids}));
    assert_eq!(status, 200, "{by_id}");
    // TEI's request shape (`texts`, `return_text`) gets TEI's answer: a bare array.
    let (status, tei) = server.post("/rerank", &json!({"query": query, "texts": texts, "return_text": true}));
    assert_eq!(status, 200, "{tei}");
    let (t, i) = (by_text["results"].as_array().unwrap(), by_id["results"].as_array().unwrap());
    assert_eq!(t.len(), 4);
    for ((a, b), c) in t.iter().zip(i).zip(tei.as_array().unwrap()) {
        assert_eq!(a["index"], b["index"], "{by_text} vs {by_id}");
        let (x, y) = (a["relevance_score"].as_f64().unwrap(), b["relevance_score"].as_f64().unwrap());
        assert!((x - y).abs() < 0.02 * y.abs().max(1.0), "{x} vs {y}");
        let text = json!(texts[a["index"].as_u64().unwrap() as usize]);
        assert_eq!(a["document"]["text"], text);
        assert_eq!(
            (&c["index"], &c["score"], &c["text"]),
            (&a["index"], &a["relevance_score"], &text),
            "{tei}"
        );
    }
    // TEI's answer cannot list unknown ids: they are a 400 there.
    let (status, err) = server.post("/rerank", &json!({"query": query, "texts": [{"id": "ghost"}]}));
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("ghost"), "{err}");
    assert_eq!(t[0]["index"], 1, "{by_text}");
    // Mixed: a text, an id and an object with text.
    let (status, mixed) = server.post(
        "/rerank",
        &json!({"query": query, "documents": ["wings", {"id": "d2"}, {"text": texts[1]}], "top_n": 2}),
    );
    assert_eq!(status, 200, "{mixed}");
    let r = mixed["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    let idx_of: Vec<u64> = r.iter().map(|x| x["index"].as_u64().unwrap()).collect();
    assert!(idx_of.contains(&1) && idx_of.contains(&2), "{mixed}");
}

/// Polls `/health` until the served index reaches `generation` (the server checks every second).
fn await_generation(server: &Served, generation: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, health) = server.call("GET", "/health", None);
        let health: Value = serde_json::from_str(&health).unwrap();
        if health["generation"] == json!(generation) {
            return;
        }
        assert!(Instant::now() < deadline, "the server did not pick up generation {generation}: {health}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn updates_are_served_without_a_restart() {
    let dir = TempDir::new().unwrap();
    let (idx, queries) = synth_index(dir.path());
    let server = Served::start(&idx, &["--reload-secs", "1"]);
    let q = rows(&queries[0], 32);
    let rerank = |ids: &[&str]| {
        let docs: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
        let (status, got) = server.post("/rerank", &json!({"query_embeddings": q, "documents": docs}));
        assert_eq!(status, 200, "{got}");
        got
    };
    assert_eq!(rerank(&["d0", "n0"])["missing"], json!(["n0"]));

    let p = |n: &str| s(&dir.path().join(n)).to_owned();
    cli_ok(&[
        "synth",
        "--docs",
        "3",
        "--tokens-per-doc",
        "8",
        "--dim",
        "32",
        "--seed",
        "7",
        "--out",
        &p("new.st"),
    ]);
    std::fs::write(dir.path().join("new-ids.txt"), "n0\nn1\nn2\n").unwrap();
    cli_ok(&["add", "--index", s(&idx), "--embeddings", &p("new.st"), "--ids", &p("new-ids.txt")]);
    await_generation(&server, 1);
    let got = rerank(&["d0", "n0"]);
    assert!(got.get("missing").is_none() && got["results"].as_array().unwrap().len() == 2, "{got}");

    std::fs::write(dir.path().join("gone.txt"), "d0\n").unwrap();
    cli_ok(&["delete", "--index", s(&idx), "--ids", &p("gone.txt")]);
    await_generation(&server, 2);
    assert_eq!(rerank(&["d0", "n0"])["missing"], json!(["d0"]));
    let (_, metrics) = server.call("GET", "/metrics", None);
    assert!(metrics.contains("colbert_index_reloads_total 2\n"), "{metrics}");
    assert!(metrics.contains("colbert_index_generation 2\n"), "{metrics}");
}

#[test]
fn serve_refuses_bad_arguments_in_one_line() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("no-index");
    cli_err(&["serve", "--index", s(&missing), "--port", "0"], &["no-index"]);
    let (idx, _) = synth_index(dir.path());
    cli_err(&["serve", "--index", s(&idx), "--port", "0", "--max-documents", "0"], &["--max-documents"]);
    cli_err(&["serve", "--index", s(&idx), "--port", "0", "--max-concurrency", "0"], &["--max-concurrency"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    cli_err(&["serve", "--index", s(&idx), "--port", &port], &["cannot listen on 127.0.0.1:", &port]);
}
