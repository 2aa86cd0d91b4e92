//! The RankGPT sliding window over a ranked list.
//!
//! With `n` passages, window `w` and step `s`, the windows are `[n-w, n)`, `[n-w-s, n-s)`, … and
//! the last one is `[0, min(n, w))` (it overlaps its neighbour by more than `w - s` when the list
//! does not divide evenly; RankGPT's loop leaves the front unranked instead). Each window is
//! reordered in place by the model's answer before the next one is shown; a passage the model
//! puts in the top `w - s` of a window is carried into the next, so a relevant passage near the
//! bottom can reach the top. A list of at most `w` passages takes one call; 100 passages with the defaults take 9.

use std::time::{Duration, Instant};

use super::parse::{answer_is_complete, parse_permutation, Repairs};
use super::prompt::ranking_messages;
use super::{ChatBackend, ChatRequest};
use crate::error::{EngineError, Result};

/// Settings of [`ListwiseReranker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListwiseConfig {
    /// Passages shown to the model at once (RankGPT: 20).
    pub window: usize,
    /// How far the window moves towards the front after each call (RankGPT: 10); at most
    /// `window`.
    pub step: usize,
    /// Per-passage budget in characters (see [`super::prompt`]).
    pub max_passage_chars: usize,
    /// Most answer tokens per window; `None` allows `6 × window + 8`, enough for `[12] > ` per id.
    pub max_answer_tokens: Option<usize>,
}

impl Default for ListwiseConfig {
    fn default() -> Self {
        ListwiseConfig { window: 20, step: 10, max_passage_chars: 600, max_answer_tokens: None }
    }
}

impl ListwiseConfig {
    /// Checks the settings, naming the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.window < 2 {
            return Err(EngineError::InvalidArgument(format!(
                "LLM rerank window must be at least 2, got {}",
                self.window
            )));
        }
        if self.step == 0 || self.step > self.window {
            return Err(EngineError::InvalidArgument(format!(
                "LLM rerank step must be in 1..={} (the window), got {}",
                self.window, self.step
            )));
        }
        if self.max_passage_chars == 0 {
            return Err(EngineError::InvalidArgument("LLM rerank passage budget must be positive".into()));
        }
        Ok(())
    }

    /// The windows, as `(start, end)` ranges, in the order they are ranked.
    pub fn windows(&self, n: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        if n < 2 {
            return out;
        }
        let mut end = n;
        loop {
            let start = end.saturating_sub(self.window);
            if start == 0 {
                out.push((0, n.min(self.window)));
                return out;
            }
            out.push((start, end));
            end -= self.step;
        }
    }
}

/// What a rerank did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RerankOutcome {
    /// The new order: `order[r]` is the input position of the passage now at rank `r`; always a
    /// permutation of `0..n`.
    pub order: Vec<usize>,
    /// Repairs made to the model's answers, summed over windows.
    pub repairs: Repairs,
    /// Windows whose answer needed at least one repair.
    pub repaired_windows: usize,
    /// Calls made to the model (one per window).
    pub llm_calls: usize,
    /// Prompt tokens, summed over calls (0 when a remote server does not report usage).
    pub prompt_tokens: usize,
    /// Answer tokens, summed over calls (0 when a remote server does not report usage).
    pub answer_tokens: usize,
    /// Wall time of the whole rerank.
    pub elapsed: Duration,
    /// Time spent processing prompts, summed over calls where the backend measures it.
    pub prompt_time: Duration,
}

impl RerankOutcome {
    /// `items` (in the input order of the rerank) in the new order; fails when `items` does not
    /// have as many elements as the reranked list.
    pub fn apply<T: Clone>(&self, items: &[T]) -> Result<Vec<T>> {
        if items.len() != self.order.len() {
            return Err(EngineError::InvalidArgument(format!(
                "cannot apply a rerank of {} passages to {} items",
                self.order.len(),
                items.len()
            )));
        }
        Ok(self.order.iter().map(|&i| items[i].clone()).collect())
    }
}

/// A listwise reranker: RankGPT's sliding window over any [`ChatBackend`].
pub struct ListwiseReranker<B> {
    backend: B,
    config: ListwiseConfig,
}

impl<B: ChatBackend> ListwiseReranker<B> {
    /// A reranker asking `backend`; fails on invalid settings.
    pub fn new(backend: B, config: ListwiseConfig) -> Result<Self> {
        config.validate()?;
        Ok(ListwiseReranker { backend, config })
    }

    /// The settings.
    pub fn config(&self) -> &ListwiseConfig {
        &self.config
    }

    /// The backend (for its description, or to reuse it).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Reranks `passages` (in first-stage order, best first) for `query`. Backend errors (server
    /// down, model failure) are returned as they are; a bad answer never is an error, it is
    /// repaired.
    pub fn rerank(&mut self, query: &str, passages: &[&str]) -> Result<RerankOutcome> {
        let started = Instant::now();
        let mut out = RerankOutcome { order: (0..passages.len()).collect(), ..Default::default() };
        for (start, end) in self.config.windows(passages.len()) {
            let ids = &out.order[start..end];
            let texts: Vec<&str> = ids.iter().map(|&i| passages[i]).collect();
            let messages = ranking_messages(query, &texts, self.config.max_passage_chars);
            let len = texts.len();
            let complete = move |answer: &str| answer_is_complete(answer, len);
            let request = ChatRequest {
                messages: &messages,
                max_new_tokens: self.config.max_answer_tokens.unwrap_or(6 * len + 8),
                is_complete: Some(&complete),
            };
            let answer = self.backend.chat(&request)?;
            let (local, repairs) = parse_permutation(&answer.text, len);
            let reordered: Vec<usize> = local.iter().map(|&j| ids[j]).collect();
            out.order[start..end].copy_from_slice(&reordered);
            out.repairs.add(repairs);
            out.repaired_windows += usize::from(repairs.total() > 0);
            out.llm_calls += 1;
            out.prompt_tokens += answer.prompt_tokens;
            out.answer_tokens += answer.answer_tokens;
            out.prompt_time += answer.prompt_time.unwrap_or_default();
        }
        out.elapsed = started.elapsed();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{ChatAnswer, ChatMessage};
    use super::*;

    /// A backend answering from a list of canned answers, recording the prompts it saw.
    struct Scripted {
        answers: Vec<String>,
        prompts: Vec<Vec<ChatMessage>>,
    }

    impl ChatBackend for Scripted {
        fn chat(&mut self, request: &ChatRequest<'_>) -> Result<ChatAnswer> {
            self.prompts.push(request.messages.to_vec());
            let text = self.answers.get(self.prompts.len() - 1).cloned().unwrap_or_default();
            Ok(ChatAnswer { text, prompt_tokens: 10, answer_tokens: 2, prompt_time: None })
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn scripted(answers: &[&str]) -> Scripted {
        Scripted { answers: answers.iter().map(|s| s.to_string()).collect(), prompts: Vec::new() }
    }

    fn config(window: usize, step: usize) -> ListwiseConfig {
        ListwiseConfig { window, step, ..Default::default() }
    }

    #[test]
    fn windows_slide_from_the_back_and_end_at_the_front() {
        assert_eq!(config(20, 10).windows(100).len(), 9);
        assert_eq!(config(20, 10).windows(100)[0], (80, 100));
        assert_eq!(config(20, 10).windows(100)[8], (0, 20));
        assert_eq!(config(20, 10).windows(25), vec![(5, 25), (0, 20)]);
        assert_eq!(config(20, 10).windows(20), vec![(0, 20)]);
        assert_eq!(config(20, 10).windows(7), vec![(0, 7)]);
        assert_eq!(config(20, 10).windows(1), vec![]);
        assert_eq!(config(3, 3).windows(7), vec![(4, 7), (1, 4), (0, 3)]);
    }

    #[test]
    fn bad_settings_are_rejected() {
        assert!(ListwiseReranker::new(scripted(&[]), config(1, 1)).is_err());
        assert!(ListwiseReranker::new(scripted(&[]), config(5, 0)).is_err());
        assert!(ListwiseReranker::new(scripted(&[]), config(5, 6)).is_err());
    }

    #[test]
    fn a_late_passage_climbs_to_the_top_through_the_windows() {
        // 5 passages, window 3, step 2: windows (2,5) then (0,3). The model always puts the
        // window's last passage first.
        let passages = ["a", "b", "c", "d", "e"];
        let mut rr =
            ListwiseReranker::new(scripted(&["[3] > [1] > [2]", "[3] [1] [2]"]), config(3, 2)).unwrap();
        let out = rr.rerank("q", &passages).unwrap();
        // Window (2,5) = c d e -> e c d; list a b e c d; window (0,3) = a b e -> e a b.
        assert_eq!(out.order, vec![4, 0, 1, 2, 3]);
        assert_eq!(out.apply(&passages).unwrap(), vec!["e", "a", "b", "c", "d"]);
        assert!(out.apply(&passages[..4]).is_err());
        assert_eq!(out.llm_calls, 2);
        assert_eq!(out.repairs, Repairs::default());
        assert_eq!((out.prompt_tokens, out.answer_tokens), (20, 4));
        let second = &rr.backend().prompts[1][1].content;
        assert!(second.contains("[1] a\n[2] b\n[3] e\n"), "{second}");
    }

    #[test]
    fn repairs_are_counted_per_window() {
        let mut rr = ListwiseReranker::new(scripted(&["[2] > [2]", "garbage"]), config(3, 2)).unwrap();
        let out = rr.rerank("q", &["a", "b", "c", "d", "e"]).unwrap();
        assert_eq!(out.repairs, Repairs { out_of_range: 0, duplicate: 1, missing: 5 });
        assert_eq!(out.repaired_windows, 2);
        // Window (2,5) = c d e -> d c e; window (0,3) = a b d unchanged.
        assert_eq!(out.order, vec![0, 1, 3, 2, 4]);
    }

    #[test]
    fn backend_errors_propagate() {
        struct Down;
        impl ChatBackend for Down {
            fn chat(&mut self, _: &ChatRequest<'_>) -> Result<ChatAnswer> {
                Err(EngineError::Remote { url: "http://x".into(), problem: "down".into() })
            }
            fn describe(&self) -> String {
                "down".into()
            }
        }
        let mut rr = ListwiseReranker::new(Down, ListwiseConfig::default()).unwrap();
        assert!(matches!(rr.rerank("q", &["a", "b"]), Err(EngineError::Remote { .. })));
        assert_eq!(rr.rerank("q", &["a"]).unwrap().order, vec![0], "one passage needs no call");
    }

    /// A backend answering random strings: random ids, garbage, adversarial fragments.
    struct RandomAnswers {
        state: u64,
    }

    impl RandomAnswers {
        fn next(&mut self) -> u64 {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.state
        }
    }

    impl ChatBackend for RandomAnswers {
        fn chat(&mut self, request: &ChatRequest<'_>) -> Result<ChatAnswer> {
            let pieces = ["[", "]", " > ", "[-1]", "[0]", "[99999999999999999999]", "🙂", "[[2]]", "x"];
            let len = self.next() % 40;
            let mut text = String::new();
            for _ in 0..len {
                let r = self.next();
                if r.is_multiple_of(3) {
                    text.push_str(pieces[(r / 3 % pieces.len() as u64) as usize]);
                } else {
                    text.push_str(&format!("[{}]", r / 3 % 30));
                }
            }
            assert!(request.max_new_tokens > 0);
            Ok(ChatAnswer { text, ..Default::default() })
        }
        fn describe(&self) -> String {
            "random".into()
        }
    }

    proptest! {
        #[test]
        fn random_answers_always_give_a_permutation(
            seed in 1u64..u64::MAX, n in 0usize..70, window in 2usize..25, step_frac in 0.0f64..1.0,
        ) {
            let step = 1 + ((window - 1) as f64 * step_frac) as usize;
            let texts: Vec<String> = (0..n).map(|i| format!("passage {i}")).collect();
            let passages: Vec<&str> = texts.iter().map(String::as_str).collect();
            let mut rr = ListwiseReranker::new(RandomAnswers { state: seed }, config(window, step)).unwrap();
            let out = rr.rerank("query", &passages).unwrap();
            let mut sorted = out.order.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            prop_assert_eq!(out.llm_calls, config(window, step).windows(n).len());
        }
    }
}
