//! Chat templates: the GGUF's `tokenizer.chat_template` (Jinja) is recognised by its markers and
//! rendered by a built-in equivalent; no Jinja engine is involved.
//!
//! Recognised families:
//! - **ChatML** (SmolLM2, Qwen2/2.5, many others): the template mentions `<|im_start|>`. Renders
//!   `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then `<|im_start|>assistant\n`. The
//!   turn ends at `<|im_end|>`. Templates that add a default system message when none is given
//!   do not matter here: the reranker always sends one.
//! - **Llama 3**: the template mentions `<|start_header_id|>`. Renders `<|begin_of_text|>`, then
//!   `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>` per message (content
//!   trimmed, as the template does), then the assistant header. The turn ends at `<|eot_id|>`.
//!
//! Any other template is refused with an error that quotes its start. A GGUF without a template
//! whose vocabulary has `<|im_start|>` and `<|im_end|>` is taken as ChatML.

use super::super::ChatMessage;

/// A supported chat template family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\ncontent<|im_end|>\n`.
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>`.
    Llama3,
}

impl ChatTemplate {
    /// Recognises `template` (the Jinja text of the GGUF file `path`, if any); `has_token` says
    /// whether the vocabulary holds a token, for GGUFs without a template.
    ///
    /// # Errors
    /// [`crate::EngineError::Model`] naming `path` when the family is not supported.
    pub fn detect(
        path: &std::path::Path,
        template: Option<&str>,
        has_token: impl Fn(&str) -> bool,
    ) -> crate::Result<Self> {
        Self::recognise(template, has_token)
            .map_err(|problem| crate::EngineError::Model { path: path.to_path_buf(), problem })
    }

    fn recognise(template: Option<&str>, has_token: impl Fn(&str) -> bool) -> Result<Self, String> {
        match template {
            Some(t) if t.contains("<|im_start|>") => Ok(ChatTemplate::ChatMl),
            Some(t) if t.contains("<|start_header_id|>") => Ok(ChatTemplate::Llama3),
            Some(t) => {
                let start: String = t.chars().take(80).collect();
                Err(format!(
                    "tokenizer.chat_template is not a supported family (ChatML, Llama 3): {:?}…",
                    start
                ))
            }
            None if has_token("<|im_start|>") && has_token("<|im_end|>") => Ok(ChatTemplate::ChatMl),
            None => Err("the GGUF has no tokenizer.chat_template and no ChatML tokens".into()),
        }
    }

    /// The prompt text for `messages`, ending where the assistant's answer starts.
    pub fn render(self, messages: &[ChatMessage]) -> String {
        let mut out = String::new();
        match self {
            ChatTemplate::ChatMl => {
                for m in messages {
                    out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role.as_str(), m.content));
                }
                out.push_str("<|im_start|>assistant\n");
            }
            ChatTemplate::Llama3 => {
                out.push_str("<|begin_of_text|>");
                for m in messages {
                    out.push_str(&format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.role.as_str(),
                        m.content.trim()
                    ));
                }
                out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
        }
        out
    }

    /// The token that ends the assistant's turn.
    pub fn end_of_turn(self) -> &'static str {
        match self {
            ChatTemplate::ChatMl => "<|im_end|>",
            ChatTemplate::Llama3 => "<|eot_id|>",
        }
    }

    /// The family's name.
    pub fn name(self) -> &'static str {
        match self {
            ChatTemplate::ChatMl => "ChatML",
            ChatTemplate::Llama3 => "Llama 3",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::Role;
    use super::*;

    const SMOLLM2: &str =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
        {{ '<|im_start|>system\\nYou are a helpful AI assistant<|im_end|>\\n' }}{% endif %}\
        {{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}\
        {% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn chatml_renders_like_the_smollm2_template() {
        let t = ChatTemplate::recognise(Some(SMOLLM2), |_| false).unwrap();
        assert_eq!(t, ChatTemplate::ChatMl);
        let msgs = [ChatMessage::new(Role::System, "sys"), ChatMessage::new(Role::User, "hi\nthere")];
        assert_eq!(
            t.render(&msgs),
            "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nhi\nthere<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(t.end_of_turn(), "<|im_end|>");
    }

    #[test]
    fn llama3_is_recognised_and_rendered() {
        let t = ChatTemplate::recognise(Some("{{ '<|start_header_id|>' + role }}"), |_| false).unwrap();
        let msgs = [ChatMessage::new(Role::User, " q ")];
        assert_eq!(
            t.render(&msgs),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn unknown_or_missing_templates_are_refused() {
        let err = ChatTemplate::recognise(Some("<start_of_turn>user\n"), |_| true).unwrap_err();
        assert!(err.contains("<start_of_turn>") && err.contains("ChatML"), "{err}");
        assert!(ChatTemplate::recognise(None, |_| false).is_err());
        assert_eq!(ChatTemplate::recognise(None, |_| true).unwrap(), ChatTemplate::ChatMl);
    }
}
