//! The retrieval pipeline: first stages (BM25, ColBERT, or both fused by RRF), then any number of
//! tail stages, each reranking the top of the list left by the one before.
//!
//! [`PipelineSpec`] is the description shared by the library and the CLI (`search --hybrid
//! --rerank cross-encoder:DIR --rerank-top 100`); [`PipelineSpec::build`] loads what it names
//! into a [`Pipeline`]. A tail stage reorders its top `top` candidates and leaves the rest of the
//! list after them in the order it had; [`Pipeline::search`] times every stage.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use super::bm25::Bm25Index;
use super::cross::{CrossEncoder, CrossEncoderOptions};
use super::rrf::Rrf;
use super::{Candidate, DocTexts, Reranker, Retriever, Scored};
use crate::encoder::Encoder;
use crate::error::{EngineError, Result};
use crate::index::Segment;
use crate::search::SearchParams;

/// Default number of candidates a tail stage reranks.
pub const DEFAULT_RERANK_TOP: usize = 100;

/// Which first stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstStage {
    /// ColBERT alone (the default).
    Colbert,
    /// BM25 alone.
    Bm25,
    /// BM25 and ColBERT, fused by Reciprocal Rank Fusion.
    Hybrid,
}

/// What a tail stage is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum TailKind {
    /// A `BertForSequenceClassification` cross-encoder checkpoint directory.
    CrossEncoder(PathBuf),
    /// A listwise LLM reranker: `gguf:FILE` or `openai:URL` (see [`super::llm::LlmSpec`]).
    Llm(String),
}

impl FromStr for TailKind {
    type Err = EngineError;

    /// Parses `cross-encoder:DIR` or `llm:gguf:FILE` / `llm:openai:URL`.
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once(':') {
            Some(("cross-encoder", dir)) if !dir.is_empty() => Ok(TailKind::CrossEncoder(PathBuf::from(dir))),
            Some(("llm", spec)) => {
                // Checked now, so a bad spec is reported before any model loads.
                spec.parse::<super::llm::LlmSpec>()?;
                Ok(TailKind::Llm(spec.to_string()))
            }
            _ => Err(EngineError::InvalidArgument(format!(
                "reranker {s:?}: expected cross-encoder:DIR (a BertForSequenceClassification checkpoint)"
            ))),
        }
    }
}

/// One tail stage of a [`PipelineSpec`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TailSpec {
    /// The reranker.
    pub kind: TailKind,
    /// How many of the best candidates it reranks.
    pub top: usize,
}

/// A pipeline's description: the first stages, their fusion and the tail.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PipelineSpec {
    /// Which first stages run.
    pub first: FirstStage,
    /// The fusion of the first stages (used by [`FirstStage::Hybrid`]).
    #[serde(skip)]
    pub rrf: Rrf,
    /// How many documents each first stage retrieves (at least `k` and every tail's `top`;
    /// `None`: the largest of those).
    pub depth: Option<usize>,
    /// Tail stages, in order.
    pub tail: Vec<TailSpec>,
    /// Options of cross-encoder stages.
    #[serde(skip)]
    pub cross_encoder: CrossEncoderOptions,
    /// Limit on one request of an `openai:URL` LLM stage (`None`: the client's default, 120 s).
    #[serde(skip)]
    pub llm_timeout: Option<std::time::Duration>,
}

impl Default for PipelineSpec {
    fn default() -> Self {
        PipelineSpec {
            first: FirstStage::Colbert,
            rrf: Rrf::default(),
            depth: None,
            tail: Vec::new(),
            cross_encoder: CrossEncoderOptions::default(),
            llm_timeout: None,
        }
    }
}

impl PipelineSpec {
    /// Whether the ColBERT index is searched.
    pub fn uses_colbert(&self) -> bool {
        matches!(self.first, FirstStage::Colbert | FirstStage::Hybrid)
    }

    /// Whether the BM25 index is searched.
    pub fn uses_bm25(&self) -> bool {
        matches!(self.first, FirstStage::Bm25 | FirstStage::Hybrid)
    }

    /// Documents each first stage retrieves for a final top `k`.
    pub fn depth_for(&self, k: usize) -> usize {
        let tail = self.tail.iter().map(|t| t.top).max().unwrap_or(0);
        self.depth.unwrap_or(0).max(k).max(tail)
    }

    /// Loads what the description names. `index_dir` holds the ColBERT index and its `bm25/`;
    /// `colbert` is the ColBERT first stage, required when [`PipelineSpec::uses_colbert`].
    /// Document texts for the tail come from `texts` if given, else from the BM25 index (which
    /// stores them); without either, a tail is an error.
    pub fn build<'a>(
        &self,
        index_dir: &Path,
        colbert: Option<Box<dyn Retriever + 'a>>,
        texts: Option<Box<dyn DocTexts + 'a>>,
    ) -> Result<Pipeline<'a>> {
        self.rrf.validate()?;
        if let Some(t) = self.tail.iter().find(|t| t.top == 0) {
            return Err(EngineError::InvalidArgument(format!("{:?}: rerank top must be positive", t.kind)));
        }
        let mut first: Vec<Box<dyn Retriever + 'a>> = Vec::new();
        if self.uses_bm25() {
            first.push(Box::new(Bm25Index::open_in(index_dir)?));
        }
        if self.uses_colbert() {
            first.push(colbert.ok_or_else(|| {
                EngineError::InvalidArgument("this pipeline needs the ColBERT first stage".into())
            })?);
        }
        let texts = match texts {
            Some(t) => Some(t),
            None if self.tail.is_empty() => None,
            None => match Bm25Index::open_in(index_dir) {
                Ok(b) => Some(Box::new(b) as Box<dyn DocTexts + 'a>),
                Err(e) => {
                    return Err(EngineError::InvalidArgument(format!(
                        "rerankers need document texts: give the collection, or build the index with --bm25 \
                         (which stores them) ({e})"
                    )))
                }
            },
        };
        let mut pipeline = Pipeline { first, rrf: self.rrf, depth: self.depth, tail: Vec::new(), texts };
        for t in &self.tail {
            let reranker: Box<dyn Reranker + 'a> = match &t.kind {
                TailKind::CrossEncoder(dir) => Box::new(CrossEncoder::load(dir, self.cross_encoder.clone())?),
                TailKind::Llm(spec) => Box::new(super::llm_tail::LlmTail::open(spec, self.llm_timeout)?),
            };
            pipeline = pipeline.with_stage(reranker, t.top);
        }
        Ok(pipeline)
    }
}

/// The ColBERT first stage: encodes the query text and searches the index.
pub struct ColbertRetriever<'a> {
    index: &'a Segment,
    encoder: &'a Encoder,
    params: Box<dyn Fn(usize) -> SearchParams + Sync + 'a>,
}

impl<'a> ColbertRetriever<'a> {
    /// Searches `index` with queries encoded by `encoder` (which must be the index's model),
    /// with [`SearchParams::for_k`] of the requested depth.
    pub fn new(index: &'a Segment, encoder: &'a Encoder) -> Self {
        ColbertRetriever { index, encoder, params: Box::new(SearchParams::for_k) }
    }

    /// Uses `params(depth)` as the search parameters (to apply overrides).
    pub fn with_params(mut self, params: impl Fn(usize) -> SearchParams + Sync + 'a) -> Self {
        self.params = Box::new(params);
        self
    }
}

impl Retriever for ColbertRetriever<'_> {
    fn name(&self) -> &str {
        "colbert"
    }

    fn retrieve(&self, query: &str, k: usize) -> Result<Vec<Scored>> {
        let q = self.encoder.encode_queries(&[query])?;
        if q[0].is_empty() {
            return Err(EngineError::InvalidArgument(format!(
                "query {query:?} has no tokens after tokenisation"
            )));
        }
        let hits = self.index.search(&q, &(self.params)(k))?;
        Ok(self.index.resolve(&hits[0]).into_iter().map(|(id, score)| Scored { id, score }).collect())
    }
}

/// Time spent in one stage for one query.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageTiming {
    /// The stage's name (`bm25`, `colbert`, `rrf`, `texts`, `cross-encoder`).
    pub stage: String,
    /// Wall-clock milliseconds.
    pub ms: f64,
    /// Documents the stage returned (or, for a tail, reranked).
    pub docs: usize,
}

/// The result of one query.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineResult {
    /// The final list, best first, at most `k` long.
    pub hits: Vec<Scored>,
    /// One entry per stage run, in order.
    pub timings: Vec<StageTiming>,
}

/// A tail stage: a reranker and the number of candidates it sees.
struct Stage<'a> {
    reranker: Box<dyn Reranker + 'a>,
    top: usize,
}

/// A loaded pipeline.
pub struct Pipeline<'a> {
    first: Vec<Box<dyn Retriever + 'a>>,
    rrf: Rrf,
    depth: Option<usize>,
    tail: Vec<Stage<'a>>,
    texts: Option<Box<dyn DocTexts + 'a>>,
}

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn elapsed_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

impl<'a> Pipeline<'a> {
    /// A pipeline of first stages (fused by `rrf` when there are several) and no tail.
    pub fn new(first: Vec<Box<dyn Retriever + 'a>>, rrf: Rrf) -> Result<Self> {
        if first.is_empty() {
            return Err(EngineError::InvalidArgument("a pipeline needs at least one first stage".into()));
        }
        rrf.validate()?;
        Ok(Pipeline { first, rrf, depth: None, tail: Vec::new(), texts: None })
    }

    /// Sets where tail stages read document texts.
    pub fn with_texts(mut self, texts: Box<dyn DocTexts + 'a>) -> Self {
        self.texts = Some(texts);
        self
    }

    /// Appends a tail stage that reranks the best `top` candidates.
    pub fn with_stage(mut self, reranker: Box<dyn Reranker + 'a>, top: usize) -> Self {
        self.tail.push(Stage { reranker, top });
        self
    }

    /// A one-line description, e.g. `bm25 + colbert → rrf(k=60) → cross-encoder(top 100)`.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self.first.iter().map(|r| r.name()).collect();
        let mut s = names.join(" + ");
        if self.first.len() > 1 {
            s.push_str(&format!(" → rrf(k={})", self.rrf.k));
        }
        for t in &self.tail {
            s.push_str(&format!(" → {}(top {})", t.reranker.name(), t.top));
        }
        s
    }

    /// Runs `query` through every stage and returns the best `k` documents with the time spent
    /// in each stage.
    pub fn search(&self, query: &str, k: usize) -> Result<PipelineResult> {
        let tail_top = self.tail.iter().map(|t| t.top).max().unwrap_or(0);
        let depth = self.depth.unwrap_or(0).max(k).max(tail_top);
        let mut timings = Vec::new();
        let mut lists = Vec::with_capacity(self.first.len());
        for r in &self.first {
            let start = Instant::now();
            let list = r.retrieve(query, depth)?;
            timings.push(StageTiming {
                stage: r.name().to_string(),
                ms: elapsed_ms(start),
                docs: list.len(),
            });
            lists.push(list);
        }
        let mut list = if lists.len() == 1 {
            lists.pop().unwrap_or_default()
        } else {
            let start = Instant::now();
            let mut fused = self.rrf.fuse(&lists)?;
            fused.truncate(depth);
            timings.push(StageTiming { stage: "rrf".into(), ms: elapsed_ms(start), docs: fused.len() });
            fused
        };
        for stage in &self.tail {
            let n = stage.top.min(list.len());
            if n == 0 {
                continue;
            }
            let start = Instant::now();
            let candidates = self.candidates(&list[..n])?;
            timings.push(StageTiming { stage: "texts".into(), ms: elapsed_ms(start), docs: n });
            let start = Instant::now();
            let reranked = stage.reranker.rerank(query, &candidates)?;
            check_permutation(stage.reranker.name(), &list[..n], &reranked)?;
            timings.push(StageTiming {
                stage: stage.reranker.name().to_string(),
                ms: elapsed_ms(start),
                docs: n,
            });
            // Documents below the window get scores under the window's lowest, one apart, so
            // that score order is rank order (trec_eval ranks by score, not by rank).
            let floor = reranked.iter().map(|s| s.score).fold(f32::INFINITY, f32::min);
            let mut rest = list.split_off(n);
            for (j, s) in rest.iter_mut().enumerate() {
                s.score = floor - 1.0 - j as f32;
            }
            list = reranked;
            list.extend(rest);
        }
        list.truncate(k);
        Ok(PipelineResult { hits: list, timings })
    }

    /// The texts of the listed documents.
    fn candidates(&self, list: &[Scored]) -> Result<Vec<Candidate>> {
        let texts = self.texts.as_ref().ok_or_else(|| {
            EngineError::InvalidArgument("rerankers need a source of document texts".into())
        })?;
        let ids: Vec<&str> = list.iter().map(|s| s.id.as_str()).collect();
        let found = texts.texts(&ids)?;
        list.iter()
            .zip(found)
            .map(|(s, t)| {
                let text = t.ok_or_else(|| {
                    EngineError::InvalidArgument(format!("no text for document {:?} to rerank it", s.id))
                })?;
                Ok(Candidate { id: s.id.clone(), score: s.score, text })
            })
            .collect()
    }
}

/// Errors unless `reranked` holds exactly the ids of `input`.
fn check_permutation(stage: &str, input: &[Scored], reranked: &[Scored]) -> Result<()> {
    let mut a: Vec<&str> = input.iter().map(|s| s.id.as_str()).collect();
    let mut b: Vec<&str> = reranked.iter().map(|s| s.id.as_str()).collect();
    a.sort_unstable();
    b.sort_unstable();
    if a != b {
        return Err(EngineError::InvalidArgument(format!(
            "{stage} returned {} documents that are not a reordering of its {} candidates",
            reranked.len(),
            input.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A retriever returning a fixed list.
    struct Fixed(&'static str, Vec<&'static str>);

    impl Retriever for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn retrieve(&self, _: &str, k: usize) -> Result<Vec<Scored>> {
            Ok(self
                .1
                .iter()
                .take(k)
                .enumerate()
                .map(|(i, id)| Scored { id: id.to_string(), score: -(i as f32) })
                .collect())
        }
    }

    /// Reranks by text length, longest first; or misbehaves.
    struct ByLength(bool);

    impl Reranker for ByLength {
        fn name(&self) -> &str {
            "by-length"
        }
        fn rerank(&self, _: &str, c: &[Candidate]) -> Result<Vec<Scored>> {
            let mut v: Vec<Scored> =
                c.iter().map(|c| Scored { id: c.id.clone(), score: c.text.len() as f32 }).collect();
            v.sort_by(|a, b| b.score.total_cmp(&a.score));
            if self.0 {
                v.pop();
            }
            Ok(v)
        }
    }

    fn texts() -> Box<dyn DocTexts> {
        let m: HashMap<String, String> = [("a", "x"), ("b", "xx"), ("c", "xxx"), ("d", "xxxx")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Box::new(m)
    }

    fn ids(r: &PipelineResult) -> Vec<&str> {
        r.hits.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn fuses_then_reranks_the_top_only() {
        let p = Pipeline::new(
            vec![
                Box::new(Fixed("one", vec!["a", "b", "c", "d"])),
                Box::new(Fixed("two", vec!["b", "a", "d"])),
            ],
            Rrf::default(),
        )
        .unwrap();
        let r = p.search("q", 10).unwrap();
        assert_eq!(ids(&r), ["a", "b", "d", "c"]);
        let stages: Vec<&str> = r.timings.iter().map(|t| t.stage.as_str()).collect();
        assert_eq!(stages, ["one", "two", "rrf"]);
        let p = p.with_texts(texts()).with_stage(Box::new(ByLength(false)), 2);
        assert_eq!(p.describe(), "one + two → rrf(k=60) → by-length(top 2)");
        let r = p.search("q", 3).unwrap();
        // Depth 3: the lists are a b c and b a d; c and d tie (rank 3), c's list comes first.
        assert_eq!(ids(&r), ["b", "a", "c"], "only the top 2 are reordered, then cut to k");
        let stages: Vec<&str> = r.timings.iter().map(|t| t.stage.as_str()).collect();
        assert_eq!(stages, ["one", "two", "rrf", "texts", "by-length"]);
        assert!(r.timings.iter().all(|t| t.ms >= 0.0));
        assert!(r.hits.windows(2).all(|w| w[0].score > w[1].score), "scores follow ranks: {:?}", r.hits);
    }

    #[test]
    fn stages_can_be_chained() {
        let p = Pipeline::new(vec![Box::new(Fixed("one", vec!["a", "b", "c", "d"]))], Rrf::default())
            .unwrap()
            .with_texts(texts())
            .with_stage(Box::new(ByLength(false)), 4)
            .with_stage(Box::new(ByLength(false)), 1);
        let r = p.search("q", 10).unwrap();
        assert_eq!(ids(&r), ["d", "c", "b", "a"]);
        assert_eq!(r.timings.len(), 5);
    }

    #[test]
    fn errors_on_a_lost_document_missing_texts_or_no_stage() {
        let p = Pipeline::new(vec![Box::new(Fixed("one", vec!["a", "b"]))], Rrf::default())
            .unwrap()
            .with_texts(texts())
            .with_stage(Box::new(ByLength(true)), 2);
        let err = p.search("q", 2).unwrap_err().to_string();
        assert!(err.contains("not a reordering"), "{err}");
        let p = Pipeline::new(vec![Box::new(Fixed("one", vec!["a", "zz"]))], Rrf::default())
            .unwrap()
            .with_texts(texts())
            .with_stage(Box::new(ByLength(false)), 2);
        let err = p.search("q", 2).unwrap_err().to_string();
        assert!(err.contains("\"zz\""), "{err}");
        let p = Pipeline::new(vec![Box::new(Fixed("one", vec!["a"]))], Rrf::default())
            .unwrap()
            .with_stage(Box::new(ByLength(false)), 2);
        assert!(p.search("q", 2).unwrap_err().to_string().contains("texts"));
        assert!(Pipeline::new(vec![], Rrf::default()).is_err());
    }

    #[test]
    fn spec_parsing_and_depth() {
        assert_eq!(
            "cross-encoder:/m".parse::<TailKind>().unwrap(),
            TailKind::CrossEncoder(PathBuf::from("/m"))
        );
        for bad in ["cross-encoder:", "cross-encoder", "llm:x", ""] {
            assert!(bad.parse::<TailKind>().is_err(), "{bad}");
        }
        let mut spec = PipelineSpec::default();
        assert_eq!(spec.depth_for(10), 10);
        spec.tail.push(TailSpec { kind: TailKind::CrossEncoder("/m".into()), top: 100 });
        assert_eq!(spec.depth_for(10), 100);
        assert_eq!(spec.depth_for(1000), 1000);
        spec.depth = Some(500);
        assert_eq!(spec.depth_for(10), 500);
    }
}
