//! The textual name of a backend, as the CLI takes it: `gguf:FILE` or `openai:URL`.

use std::path::PathBuf;
use std::str::FromStr;

use super::{ChatBackend, GgufChat, GgufOptions, OpenAiChat, OpenAiOptions};
use crate::error::{EngineError, Result};

/// Which chat backend to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmSpec {
    /// `gguf:FILE`: a local GGUF model ([`GgufChat`]).
    Gguf(PathBuf),
    /// `openai:URL`: an OpenAI-compatible server ([`OpenAiChat`]).
    OpenAi(String),
}

impl FromStr for LlmSpec {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some(("gguf", file)) if !file.is_empty() => Ok(LlmSpec::Gguf(PathBuf::from(file))),
            Some(("openai", url)) if !url.is_empty() => Ok(LlmSpec::OpenAi(url.to_string())),
            _ => Err(EngineError::InvalidArgument(format!(
                "LLM backend {s:?} should be gguf:FILE or openai:URL (e.g. openai:http://127.0.0.1:8080)"
            ))),
        }
    }
}

impl LlmSpec {
    /// Opens the backend: loads the GGUF model with `gguf`, or makes a client for the server with
    /// `openai` as the options (its `url` replaced by the spec's).
    pub fn open(&self, gguf: GgufOptions, openai: OpenAiOptions) -> Result<Box<dyn ChatBackend + Send>> {
        Ok(match self {
            LlmSpec::Gguf(path) => Box::new(GgufChat::load(path, gguf)?),
            LlmSpec::OpenAi(url) => Box::new(OpenAiChat::new(OpenAiOptions { url: url.clone(), ..openai })?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_say_what_is_expected() {
        assert_eq!("gguf:/m/a.gguf".parse::<LlmSpec>().unwrap(), LlmSpec::Gguf("/m/a.gguf".into()));
        assert_eq!(
            "openai:http://h:8080/v1".parse::<LlmSpec>().unwrap(),
            LlmSpec::OpenAi("http://h:8080/v1".into())
        );
        for bad in ["", "gguf:", "openai:", "ollama:x", "model.gguf"] {
            let err = bad.parse::<LlmSpec>().unwrap_err().to_string();
            assert!(err.contains("gguf:FILE or openai:URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn open_reports_backend_problems() {
        let gguf = LlmSpec::Gguf("/nonexistent/model.gguf".into());
        let err = gguf.open(GgufOptions::default(), OpenAiOptions::new("")).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/model.gguf"), "{err}");
        let openai = LlmSpec::OpenAi("http://127.0.0.1:9".into());
        let backend = openai.open(GgufOptions::default(), OpenAiOptions::new("ignored")).unwrap();
        assert_eq!(backend.describe(), "openai:http://127.0.0.1:9/v1/chat/completions");
    }
}
