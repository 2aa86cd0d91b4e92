//! The HTTP client's response parser (`search --llm openai:URL`): the input is what the server
//! sent. `body_complete` (asked after every read) and `parse_response` run on it and on every
//! prefix at a few cut points, and a parsed body is read as a chat completion.
#![no_main]

use engine::rerank::llm::openai::http::{body_complete, parse_response, MAX_BODY};
use engine::rerank::llm::openai::OpenAiChat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for cut in [data.len(), data.len() / 2, data.len().saturating_sub(1)] {
        let raw = &data[..cut];
        let _ = body_complete(raw);
        if let Ok(response) = parse_response(raw) {
            assert!(response.body.len() <= MAX_BODY.max(raw.len()));
            let _ = OpenAiChat::parse_answer(&response.body);
        }
    }
});
