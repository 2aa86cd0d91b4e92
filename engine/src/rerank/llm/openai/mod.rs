//! An OpenAI-compatible chat backend: `POST /v1/chat/completions`, as served by llama.cpp's
//! `llama-server`, vLLM, Ollama and others.
//!
//! The request asks for greedy decoding (`temperature: 0`) and at most the requested number of
//! tokens; the answer is `choices[0].message.content`, with token counts from `usage` when the
//! server reports them. Connection failures, broken connections and 5xx/429 answers are retried
//! with exponential backoff; a timeout, a 4xx answer or an answer that is not a chat completion
//! fails at once. Every error names the endpoint. Plain HTTP only (see [`http`]).

pub mod http;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use self::http::{post_json, HttpError, HttpUrl};
use super::{ChatAnswer, ChatBackend, ChatRequest};
use crate::error::{EngineError, Result};

/// Settings of [`OpenAiChat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiOptions {
    /// The server: a base such as `http://127.0.0.1:8080` or `http://host:8000/v1`, or the full
    /// `…/chat/completions` endpoint (see [`OpenAiOptions::endpoint`]).
    pub url: String,
    /// The `model` field of requests; omitted when `None` (llama.cpp's server does not need it;
    /// vLLM and Ollama want the served model's name).
    pub model: Option<String>,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit on one request once connected (sending it and reading the whole answer).
    pub timeout: Duration,
    /// Further attempts after a retryable failure.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
}

impl OpenAiOptions {
    /// Options for the server at `url` with the defaults: 5 s to connect, 120 s per request,
    /// 3 retries starting at 250 ms.
    pub fn new(url: impl Into<String>) -> Self {
        OpenAiOptions {
            url: url.into(),
            model: None,
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(120),
            retries: 3,
            backoff: Duration::from_millis(250),
        }
    }

    /// The chat completions endpoint for [`OpenAiOptions::url`]: kept when it ends with
    /// `/chat/completions`, `/chat/completions` appended when it ends with `/v1`, else
    /// `/v1/chat/completions` appended.
    pub fn endpoint(&self) -> String {
        let base = self.url.trim_end_matches('/');
        if base.ends_with("/chat/completions") {
            base.to_string()
        } else if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        }
    }
}

/// A chat backend calling an OpenAI-compatible server.
pub struct OpenAiChat {
    options: OpenAiOptions,
    endpoint: String,
    url: HttpUrl,
}

impl OpenAiChat {
    /// A client for `options.url`; fails on a URL it cannot call (no network access happens
    /// here, so a server that is down is only reported by the first request).
    pub fn new(options: OpenAiOptions) -> Result<Self> {
        let endpoint = options.endpoint();
        let url = HttpUrl::parse(&endpoint)
            .map_err(|e| EngineError::Remote { url: endpoint.clone(), problem: e.to_string() })?;
        Ok(OpenAiChat { options, endpoint, url })
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn error(&self, problem: impl Into<String>) -> EngineError {
        EngineError::Remote { url: self.endpoint.clone(), problem: problem.into() }
    }

    /// The JSON body of a request.
    pub fn request_body(&self, request: &ChatRequest<'_>) -> Value {
        let messages: Vec<Value> =
            request.messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect();
        let mut body = json!({
            "messages": messages,
            "max_tokens": request.max_new_tokens,
            "temperature": 0.0,
            "stream": false,
        });
        if let Some(model) = &self.options.model {
            body["model"] = json!(model);
        }
        body
    }

    /// Reads a completion (the body of a 200 answer: `choices[0].message.content` and the
    /// `usage` counts).
    ///
    /// # Errors
    /// [`HttpError::BadAnswer`] saying what is wrong with the body.
    pub fn parse_answer(body: &[u8]) -> Result<ChatAnswer, HttpError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| HttpError::BadAnswer(format!("the answer is not JSON ({e}): {}", snippet(body))))?;
        let text = v.pointer("/choices/0/message/content").and_then(Value::as_str).ok_or_else(|| {
            HttpError::BadAnswer(format!("the answer has no choices[0].message.content: {}", snippet(body)))
        })?;
        let count = |key: &str| v.pointer(key).and_then(Value::as_u64).unwrap_or(0) as usize;
        Ok(ChatAnswer {
            text: text.to_string(),
            prompt_tokens: count("/usage/prompt_tokens"),
            answer_tokens: count("/usage/completion_tokens"),
            prompt_time: None,
        })
    }
}

/// The start of a response body, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s.replace(['\n', '\r'], " ")
}

impl ChatBackend for OpenAiChat {
    fn chat(&mut self, request: &ChatRequest<'_>) -> Result<ChatAnswer> {
        let body = serde_json::to_vec(&self.request_body(request)).expect("JSON values serialise");
        let mut headers = Vec::new();
        if let Some(key) = &self.options.api_key {
            headers.push(("Authorization", format!("Bearer {key}")));
        }
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let failure = match post_json(
                &self.url,
                &headers,
                &body,
                self.options.connect_timeout,
                self.options.timeout,
            ) {
                Ok(resp) if resp.status == 200 => {
                    return Self::parse_answer(&resp.body).map_err(|e| self.error(e.to_string()));
                }
                Ok(resp) if resp.status >= 500 || resp.status == 429 => {
                    format!("HTTP {}: {}", resp.status, snippet(&resp.body))
                }
                Ok(resp) => return Err(self.error(format!("HTTP {}: {}", resp.status, snippet(&resp.body)))),
                Err(
                    e @ (HttpError::Timeout(_)
                    | HttpError::Malformed(_)
                    | HttpError::BadAnswer(_)
                    | HttpError::BadUrl(_)),
                ) => return Err(self.error(e.to_string())),
                Err(e) => e.to_string(),
            };
            if attempt >= self.options.retries {
                let tries = attempt + 1;
                let secs = started.elapsed().as_secs_f64();
                return Err(self.error(format!("{failure} (after {tries} attempts in {secs:.1} s)")));
            }
            std::thread::sleep(self.options.backoff.saturating_mul(1 << attempt.min(16)));
            attempt += 1;
        }
    }

    fn describe(&self) -> String {
        match &self.options.model {
            Some(m) => format!("openai:{} (model {m})", self.endpoint),
            None => format!("openai:{}", self.endpoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_completed_from_a_base_url() {
        let ep = |u: &str| OpenAiOptions::new(u).endpoint();
        assert_eq!(ep("http://h:8080"), "http://h:8080/v1/chat/completions");
        assert_eq!(ep("http://h:8080/"), "http://h:8080/v1/chat/completions");
        assert_eq!(ep("http://h/v1"), "http://h/v1/chat/completions");
        assert_eq!(ep("http://h/v1/chat/completions"), "http://h/v1/chat/completions");
    }

    #[test]
    fn answers_are_read_or_rejected_with_the_body() {
        let a = OpenAiChat::parse_answer(
            br#"{"choices":[{"message":{"role":"assistant","content":"[2] > [1]"}}],
                "usage":{"prompt_tokens":50,"completion_tokens":7}}"#,
        )
        .unwrap();
        assert_eq!((a.text.as_str(), a.prompt_tokens, a.answer_tokens), ("[2] > [1]", 50, 7));
        let a = OpenAiChat::parse_answer(br#"{"choices":[{"message":{"content":"x"}}]}"#).unwrap();
        assert_eq!((a.prompt_tokens, a.answer_tokens), (0, 0));
        assert!(OpenAiChat::parse_answer(b"<html>").unwrap_err().to_string().contains("not JSON"));
        assert!(OpenAiChat::parse_answer(br#"{"error":"x"}"#)
            .unwrap_err()
            .to_string()
            .contains("choices[0]"));
    }

    #[test]
    fn bad_urls_are_rejected_naming_them() {
        let err = OpenAiChat::new(OpenAiOptions::new("https://api.example.com")).err().unwrap().to_string();
        assert!(
            err.contains("https://api.example.com/v1/chat/completions") && err.contains("proxy"),
            "{err}"
        );
    }
}
