//! ColBERT tokenisation: marker insertion, truncation, `[MASK]` query expansion and the document
//! skiplist.
//!
//! A text becomes `lead marker content trail`, where `lead`/`trail` are the special tokens the
//! tokenizer's post-processor adds around a single sequence (`[CLS]` and `[SEP]` for BERT and
//! ModernBERT) and `marker` is the optional query or document marker token. The content is cut so
//! that the whole sequence fits the maximum length; this matches both Stanford ColBERT (which
//! tokenises `". " + text` and overwrites the `.` with the marker) and PyLate (which tokenises with
//! a maximum length one short and inserts the marker id after position 0).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::config::{model_error, read_json, ColbertSettings};
use crate::error::{EngineError, Result};

/// One tokenised input, ready to batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    /// Token ids, special tokens, marker and expansion tokens included.
    pub ids: Vec<u32>,
    /// 1 where the other tokens may attend to this token, 0 for masked-out expansion tokens.
    pub attention: Vec<u32>,
    /// Whether the token's embedding is part of the output (false for skiplisted document tokens).
    pub keep: Vec<bool>,
}

/// Whether a text is a query or a document: they follow different rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// A query: query marker, truncated or expanded to the query length, nothing dropped.
    Query,
    /// A document: document marker, truncated to the document length, skiplist tokens dropped.
    Document,
}

/// A tokenizer that applies the ColBERT rules of a model.
#[derive(Debug, Clone)]
pub struct ColbertTokenizer {
    tokenizer: Tokenizer,
    path: PathBuf,
    settings: ColbertSettings,
    lead: Vec<u32>,
    trail: Vec<u32>,
    query_marker: Option<u32>,
    doc_marker: Option<u32>,
    mask: Option<u32>,
    skiplist: HashSet<u32>,
    max_id: u32,
}

/// The `mask_token` of a `tokenizer_config.json`, which may be a string or an `AddedToken` object.
fn configured_mask_token(config: Option<&Path>) -> Result<Option<String>> {
    let Some(path) = config else { return Ok(None) };
    let v: serde_json::Value = read_json(path)?;
    Ok(match v.get("mask_token") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(obj) => obj.get("content").and_then(|c| c.as_str()).map(String::from),
        None => None,
    })
}

fn lowercase_setting(config: Option<&Path>) -> Result<bool> {
    let Some(path) = config else { return Ok(true) };
    let v: serde_json::Value = read_json(path)?;
    Ok(v.get("do_lower_case").and_then(|b| b.as_bool()).unwrap_or(true))
}

/// Builds a BERT WordPiece tokenizer from a `vocab.txt`, as `BertTokenizerFast` does.
fn wordpiece_from_vocab(vocab: &Path, lowercase: bool) -> Result<Tokenizer> {
    let vocab_str = vocab.to_str().ok_or_else(|| model_error(vocab, "path is not valid UTF-8"))?;
    let wp = WordPiece::from_file(vocab_str)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| model_error(vocab, format!("not a WordPiece vocabulary: {e}")))?;
    let mut tok = Tokenizer::new(wp);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    let id = |t: &str| tok.token_to_id(t).ok_or_else(|| model_error(vocab, format!("vocabulary lacks {t}")));
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tok.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .filter(|t| tok.token_to_id(t).is_some())
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tok.add_special_tokens(&specials);
    Ok(tok)
}

/// Characters of text kept per token of the maximum length: a text is cut to `maxlen ×` this
/// many characters before it is tokenised, since the tokenizer holds about 95 bytes per input
/// byte and everything past the first `maxlen` tokens is dropped anyway. A token covers at least
/// one character of normal text (a word piece, a punctuation mark, a CJK character), so the
/// tokens kept are those of the whole text unless the text has on average more than 32
/// characters of nothing (whitespace, control characters) per token.
pub const CHARS_PER_TOKEN: usize = 32;

/// The start of `text` holding at most `max_chars` characters, cut at the last whitespace of
/// that prefix when there is one in its second half (so that no word is split in two and
/// tokenised differently), else at a character boundary.
pub fn cut_text(text: &str, max_chars: usize) -> &str {
    let Some((end, _)) = text.char_indices().nth(max_chars) else { return text };
    let head = &text[..end];
    match head.rfind(char::is_whitespace) {
        Some(i) if i >= end / 2 => &head[..i],
        _ => head,
    }
}

fn tokenize_error(e: impl std::fmt::Display) -> EngineError {
    EngineError::Tokenize { problem: e.to_string() }
}

impl ColbertTokenizer {
    /// Loads `path` (a `tokenizer.json` or a `vocab.txt`), disables its own padding and truncation,
    /// and resolves the marker, mask and skiplist tokens. `vocab_size` is the model's embedding
    /// count: a tokenizer producing larger ids is rejected.
    pub fn load(
        path: &Path,
        tokenizer_config: Option<&Path>,
        settings: &ColbertSettings,
        vocab_size: usize,
    ) -> Result<Self> {
        let mut tokenizer = if path.extension().is_some_and(|e| e == "json") {
            Tokenizer::from_file(path).map_err(|e| model_error(path, format!("unreadable tokenizer: {e}")))?
        } else {
            wordpiece_from_vocab(path, lowercase_setting(tokenizer_config)?)?
        };
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| model_error(path, format!("cannot disable truncation: {e}")))?;

        let max_id = tokenizer.get_vocab(true).values().copied().max().unwrap_or(0);
        if max_id as usize >= vocab_size {
            return Err(model_error(
                path,
                format!(
                    "tokenizer produces ids up to {max_id} but the model has only {vocab_size} token \
                     embeddings: the tokenizer does not belong to these weights"
                ),
            ));
        }

        // The special tokens around one sequence: encode an empty text and a probe text, and find
        // where the probe's content sits in the full encoding.
        let full = tokenizer.encode("", true).map_err(|e| model_error(path, e.to_string()))?;
        let template = full.get_ids().to_vec();
        let probe = tokenizer.encode("a", true).map_err(|e| model_error(path, e.to_string()))?;
        let probe_content = tokenizer.encode("a", false).map_err(|e| model_error(path, e.to_string()))?;
        let (pids, cids) = (probe.get_ids(), probe_content.get_ids());
        let split = (0..=pids.len().saturating_sub(cids.len()))
            .find(|&i| pids[i..].starts_with(cids))
            .filter(|&i| pids.len() == template.len() + cids.len() && pids[..i] == template[..i])
            .ok_or_else(|| model_error(path, "cannot locate the text between the special tokens"))?;
        let (lead, trail) = (template[..split].to_vec(), template[split..].to_vec());

        let marker_id = |m: &Option<String>, what: &str| -> Result<Option<u32>> {
            m.as_ref()
                .map(|m| {
                    tokenizer.token_to_id(m).ok_or_else(|| {
                        model_error(path, format!("the {what} marker {m:?} is not a token of this tokenizer"))
                    })
                })
                .transpose()
        };
        let query_marker = marker_id(&settings.query_marker, "query")?;
        let doc_marker = marker_id(&settings.doc_marker, "document")?;
        let mask = match configured_mask_token(tokenizer_config)? {
            Some(t) => tokenizer.token_to_id(&t),
            None => tokenizer.token_to_id("[MASK]").or_else(|| tokenizer.token_to_id("<mask>")),
        };
        if settings.expand_queries && mask.is_none() {
            return Err(model_error(path, "query expansion needs a mask token and the tokenizer has none"));
        }
        let skiplist = settings.skiplist_words.iter().filter_map(|w| tokenizer.token_to_id(w)).collect();
        let fixed = lead.len() + trail.len();
        for (len, what) in [(settings.query_maxlen, "query"), (settings.doc_maxlen, "document")] {
            if len < fixed + 1 {
                return Err(model_error(path, format!("{what} length {len} leaves no room for text")));
            }
        }
        Ok(ColbertTokenizer {
            tokenizer,
            path: path.to_path_buf(),
            settings: settings.clone(),
            lead,
            trail,
            query_marker,
            doc_marker,
            mask,
            skiplist,
            max_id,
        })
    }

    /// The tokenizer file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The largest token id the tokenizer can produce.
    pub fn max_id(&self) -> u32 {
        self.max_id
    }

    /// The token ids dropped from documents.
    pub fn skiplist_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.skiplist.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Tokenises one text under the ColBERT rules for `kind`. Never fails on an empty text. Only
    /// the text's first `maxlen ×` [`CHARS_PER_TOKEN`] characters are tokenised (see
    /// [`cut_text`]).
    pub fn tokenize(&self, text: &str, kind: TextKind) -> Result<TokenizedText> {
        self.tokenize_within(text, kind, CHARS_PER_TOKEN)
    }

    /// [`ColbertTokenizer::tokenize`] reading at most `maxlen × chars_per_token` characters.
    fn tokenize_within(&self, text: &str, kind: TextKind, chars_per_token: usize) -> Result<TokenizedText> {
        let (marker, maxlen) = match kind {
            TextKind::Query => (self.query_marker, self.settings.query_maxlen),
            TextKind::Document => (self.doc_marker, self.settings.doc_maxlen),
        };
        let text = cut_text(text, maxlen.saturating_mul(chars_per_token));
        let content = self.tokenizer.encode(text, false).map_err(tokenize_error)?;
        let budget = maxlen - self.lead.len() - self.trail.len() - usize::from(marker.is_some());
        let content = content.get_ids();
        let content = &content[..content.len().min(budget)];
        let mut ids = Vec::with_capacity(maxlen);
        ids.extend_from_slice(&self.lead);
        ids.extend(marker);
        ids.extend_from_slice(content);
        ids.extend_from_slice(&self.trail);
        let mut attention = vec![1u32; ids.len()];
        let keep = match kind {
            TextKind::Query => {
                if let Some(mask) = self.mask.filter(|_| self.settings.expand_queries) {
                    let fill = u32::from(self.settings.attend_to_expansion);
                    attention.resize(maxlen, fill);
                    ids.resize(maxlen, mask);
                }
                vec![true; ids.len()]
            }
            TextKind::Document => ids.iter().map(|id| !self.skiplist.contains(id)).collect(),
        };
        Ok(TokenizedText { ids, attention, keep })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WordPiece tokenizer over a few words, with the plain settings at `maxlen` tokens.
    fn tokenizer(dir: &Path, maxlen: usize) -> ColbertTokenizer {
        let words = "[PAD] [UNK] [CLS] [SEP] [MASK] the quick brown fox jump ##s over lazy dog . ,";
        let vocab = dir.join("vocab.txt");
        std::fs::write(&vocab, words.split(' ').collect::<Vec<_>>().join("\n")).unwrap();
        let settings =
            ColbertSettings { query_maxlen: maxlen, doc_maxlen: maxlen, ..ColbertSettings::plain() };
        ColbertTokenizer::load(&vocab, None, &settings, 100).unwrap()
    }

    #[test]
    fn texts_are_cut_at_whitespace_within_the_budget() {
        assert_eq!(cut_text("short", 10), "short");
        assert_eq!(cut_text("one two three", 9), "one two");
        assert_eq!(cut_text("abcdefghij", 4), "abcd");
        // Multi-byte characters are counted as characters and never split.
        assert_eq!(cut_text("ééééé", 3), "ééé");
        assert_eq!(cut_text("a\u{2028}bcd", 4), "a\u{2028}bcd".chars().take(4).collect::<String>());
        let huge = "word ".repeat(1 << 20);
        assert!(cut_text(&huge, 8192).chars().count() <= 8192);
    }

    /// D10 (docs/RELIABILITY.md): a text is cut to a character budget before it is tokenised
    /// (the tokenizer holds ~95 bytes per input byte). The cut must not change the tokens kept
    /// of a normal text, and must bound a huge one.
    #[test]
    fn the_cut_keeps_the_tokens_of_normal_text() {
        let dir = tempfile::TempDir::new().unwrap();
        for maxlen in [8, 32, 256] {
            let tok = tokenizer(dir.path(), maxlen);
            let sentence = "The quick brown fox jumps over the lazy dog, ";
            for repeats in [1, 3, 50, 5000] {
                let text = sentence.repeat(repeats);
                for kind in [TextKind::Query, TextKind::Document] {
                    let whole = tok.tokenize_within(&text, kind, usize::MAX).unwrap();
                    let cut = tok.tokenize(&text, kind).unwrap();
                    assert_eq!(cut, whole, "maxlen {maxlen}, {repeats} sentences, {kind:?}");
                    assert!(whole.ids.len() <= maxlen);
                }
            }
            // A 16 MB text is tokenised from its first maxlen × 32 characters only: the same
            // tokens as that prefix, whatever follows it.
            let huge = format!("{}{}", sentence.repeat(maxlen), "x".repeat(16 << 20));
            let prefix = cut_text(&huge, maxlen * CHARS_PER_TOKEN);
            assert!(prefix.len() <= maxlen * CHARS_PER_TOKEN);
            assert_eq!(
                tok.tokenize(&huge, TextKind::Document).unwrap(),
                tok.tokenize_within(prefix, TextKind::Document, usize::MAX).unwrap()
            );
            // What shows the cut: text past the budget is not read, even after nothing but blanks.
            let late = format!("{}fox", " ".repeat(maxlen * CHARS_PER_TOKEN + 10));
            let fox = tok.tokenizer.token_to_id("fox").unwrap();
            assert!(tok.tokenize_within(&late, TextKind::Document, usize::MAX).unwrap().ids.contains(&fox));
            assert!(!tok.tokenize(&late, TextKind::Document).unwrap().ids.contains(&fox));
        }
    }
}
