//! Reranks a few passages with any LLM backend and prints what happened.
//!
//! ```text
//! cargo build --release --workspace --examples
//! target/release/examples/llm_rerank gguf:MODEL.gguf "QUERY" "PASSAGE 1" "PASSAGE 2" ...
//! target/release/examples/llm_rerank openai:http://127.0.0.1:8080 "QUERY" "PASSAGE 1" ...
//! ```
//! Prints the backend, each model answer, the new order, the repairs, calls, tokens and time.

use engine::rerank::llm::{
    ChatAnswer, ChatBackend, ChatRequest, GgufOptions, ListwiseConfig, ListwiseReranker, LlmSpec,
    OpenAiOptions,
};

/// Prints every answer of the backend it wraps.
struct Echo(Box<dyn ChatBackend>);

impl ChatBackend for Echo {
    fn chat(&mut self, request: &ChatRequest<'_>) -> engine::Result<ChatAnswer> {
        let answer = self.0.chat(request)?;
        println!("answer: {:?}", answer.text);
        Ok(answer)
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: llm_rerank gguf:FILE|openai:URL QUERY PASSAGE...");
        std::process::exit(2);
    }
    let run = || -> engine::Result<()> {
        let spec: LlmSpec = args[1].parse()?;
        let backend = spec.open(GgufOptions::default(), OpenAiOptions::new(""))?;
        println!("backend: {}", backend.describe());
        let mut rr = ListwiseReranker::new(Echo(backend), ListwiseConfig::default())?;
        let passages: Vec<&str> = args[3..].iter().map(String::as_str).collect();
        let out = rr.rerank(&args[2], &passages)?;
        for (rank, &i) in out.order.iter().enumerate() {
            println!("{:>3}. [{}] {}", rank + 1, i + 1, passages[i]);
        }
        println!(
            "repairs {:?}, {} calls, {} prompt + {} answer tokens, {:.2} s (prompt {:.2} s)",
            out.repairs,
            out.llm_calls,
            out.prompt_tokens,
            out.answer_tokens,
            out.elapsed.as_secs_f64(),
            out.prompt_time.as_secs_f64()
        );
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
