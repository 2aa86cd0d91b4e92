//! The endpoints: request parsing and checks on the runtime thread, scoring on a blocking one.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use engine::maxsim::{PreparedQuery, Scorer};
use engine::{Index, Query, SearchMode, SearchParams};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::AppState;

type Shared = State<Arc<AppState>>;

/// Parses a JSON body. The body is read as bytes (so the size limit answers 413 in our error
/// shape) and any `Content-Type` is accepted (`curl -d` sends a form type).
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// Runs `work` on a blocking thread (scoring and encoding are CPU-bound) once one of the
/// server's `max_concurrency` permits is free (waiters are served in arrival order).
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = state
        .permits
        .acquire()
        .await
        .map_err(|e| ApiError::internal(format!("the server is shutting down: {e}")))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
}

/// The query of a request: text or token embeddings, checked against the index.
enum QuerySpec {
    Text(String),
    Tokens(Vec<f32>),
}

fn no_model(index: &Index) -> Option<ApiError> {
    index.meta().encoder.is_none().then(|| {
        ApiError::bad_request(
            "this index was built from precomputed embeddings and has no model: \
             send query_embeddings (and documents by id)",
        )
    })
}

impl QuerySpec {
    fn new(
        query: Option<String>,
        embeddings: Option<Vec<Vec<f32>>>,
        index: &Index,
    ) -> Result<Self, ApiError> {
        match (query, embeddings) {
            (Some(_), Some(_)) => {
                Err(ApiError::bad_request("give either query or query_embeddings, not both"))
            }
            (None, None) => Err(ApiError::bad_request(
                "missing field `query` (a string) or `query_embeddings` (an array of token vectors)",
            )),
            (Some(text), None) => {
                if text.trim().is_empty() {
                    return Err(ApiError::bad_request("query is empty"));
                }
                if let Some(e) = no_model(index) {
                    return Err(e);
                }
                Ok(QuerySpec::Text(text))
            }
            (None, Some(rows)) => {
                if rows.is_empty() {
                    return Err(ApiError::bad_request("query_embeddings is empty"));
                }
                let dim = index.dim();
                if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != dim) {
                    return Err(ApiError::bad_request(format!(
                        "query_embeddings[{i}] has {} values; the index's dimension is {dim}",
                        row.len()
                    )));
                }
                Ok(QuerySpec::Tokens(rows.concat()))
            }
        }
    }

    /// The query's token embeddings (text encoded with the index's model), checked by the
    /// index as its own queries are (dimension, finite, small enough not to overflow scores).
    fn tokens(self, index: &Index) -> Result<Vec<f32>, ApiError> {
        let tokens = match self {
            QuerySpec::Tokens(t) => t,
            QuerySpec::Text(text) => {
                let encoded = index.encoder()?.encode_queries(&[text.as_str()])?;
                encoded.into_iter().next().filter(|t| !t.is_empty()).ok_or_else(|| {
                    ApiError::bad_request(format!("query {text:?} has no tokens after tokenization"))
                })?
            }
        };
        index.rerank::<&str>(Query::tokens(&tokens, index.dim())?, &[], 0)?;
        Ok(tokens)
    }
}

/// `POST /rerank`'s body: Cohere / Jina shape (`documents`), or Hugging Face TEI's (`texts`,
/// answered in TEI's shape); other fields such as `model` are ignored.
#[derive(Deserialize)]
pub(crate) struct RerankRequest {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    query_embeddings: Option<Vec<Vec<f32>>>,
    #[serde(default)]
    documents: Option<Vec<Value>>,
    /// TEI's name for the documents: the answer is then TEI's bare array.
    #[serde(default)]
    texts: Option<Vec<Value>>,
    #[serde(default)]
    top_n: Option<usize>,
    #[serde(default, alias = "return_text")]
    return_documents: Option<bool>,
}

/// One document to rerank.
enum Doc {
    /// Scored from the index.
    Id(String),
    /// Encoded with the index's model and scored exactly.
    Text(String),
}

fn document(i: usize, v: &Value) -> Result<Doc, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "documents[{i}] must be a string, {{\"id\": string}} or {{\"text\": string}}"
        ))
    };
    match v {
        Value::String(s) => Ok(Doc::Text(s.clone())),
        Value::Object(m) => match (m.get("text"), m.get("id")) {
            (Some(Value::String(t)), _) => Ok(Doc::Text(t.clone())),
            (None, Some(Value::String(id))) => Ok(Doc::Id(id.clone())),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

#[derive(Serialize)]
struct RerankResult {
    index: usize,
    relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<Value>,
}

#[derive(Serialize)]
struct RerankResponse {
    results: Vec<RerankResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing: Vec<String>,
}

pub(crate) async fn rerank(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, ApiError> {
    let req: RerankRequest = parse(body)?;
    let (documents, tei) = match (req.documents, req.texts) {
        (Some(documents), None) => (documents, false),
        (None, Some(texts)) => (texts, true),
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give documents or texts, not both")),
        (None, None) => return Err(ApiError::bad_request("invalid request body: missing field `documents`")),
    };
    let (served, max) = (state.served(), state.config.max_documents);
    let index = &served.index;
    let query = QuerySpec::new(req.query, req.query_embeddings, index)?;
    if documents.is_empty() {
        return Err(ApiError::bad_request("documents is empty"));
    }
    if documents.len() > max {
        return Err(ApiError::bad_request(format!(
            "{} documents; this server accepts at most {max} per request (--max-documents)",
            documents.len()
        )));
    }
    if req.top_n == Some(0) {
        return Err(ApiError::bad_request("top_n must be at least 1"));
    }
    let docs: Vec<Doc> =
        documents.iter().enumerate().map(|(i, v)| document(i, v)).collect::<Result<_, _>>()?;
    if docs.iter().any(|d| matches!(d, Doc::Text(_))) {
        if let Some(e) = no_model(index) {
            return Err(e);
        }
    }
    let top_n = req.top_n.unwrap_or(docs.len()).min(docs.len());
    let originals = req.return_documents.unwrap_or(false).then_some(documents);
    let index = served.index;
    let (mut results, missing) = blocking(&state, move || score_documents(&index, query, &docs)).await?;
    results.truncate(top_n);
    if tei {
        return tei_answer(results, missing, originals.as_deref());
    }
    let results = results
        .into_iter()
        .map(|(index, relevance_score)| RerankResult {
            index,
            relevance_score,
            document: originals.as_ref().map(|o| match &o[index] {
                Value::String(s) => serde_json::json!({ "text": s }),
                v => v.clone(),
            }),
        })
        .collect();
    Ok(Json(RerankResponse { results, missing }).into_response())
}

/// Hugging Face TEI's answer: a bare array of `{index, score, text?}`. It has no place for
/// unknown ids, so they are an error here rather than silently dropped.
fn tei_answer(
    results: Vec<(usize, f32)>,
    missing: Vec<String>,
    originals: Option<&[Value]>,
) -> Result<axum::response::Response, ApiError> {
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!(
            "unknown document ids {missing:?} (a TEI-shaped request has no `missing` field to list them)"
        )));
    }
    let answer: Vec<TeiHit> = results
        .into_iter()
        .map(|(index, score)| TeiHit {
            index,
            score,
            text: originals.and_then(|o| match &o[index] {
                Value::String(s) => Some(s.clone()),
                Value::Object(m) => m.get("text").and_then(Value::as_str).map(String::from),
                _ => None,
            }),
        })
        .collect();
    Ok(Json(answer).into_response())
}

/// One result of a TEI-shaped answer.
#[derive(Serialize)]
struct TeiHit {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// (position, score) pairs best first, and the unknown ids.
type Scored = (Vec<(usize, f32)>, Vec<String>);

/// Scores every document: ids from the index ([`Index::rerank`]), texts encoded and scored by
/// exact MaxSim. Returns (position, score) best first (ties by position) and the unknown ids.
fn score_documents(index: &Index, query: QuerySpec, docs: &[Doc]) -> Result<Scored, ApiError> {
    let tokens = query.tokens(index)?;
    let dim = index.dim();
    let mut scores: Vec<Option<f32>> = vec![None; docs.len()];
    let ids: Vec<&str> =
        docs.iter().filter_map(|d| if let Doc::Id(id) = d { Some(id.as_str()) } else { None }).collect();
    let mut missing = Vec::new();
    if !ids.is_empty() {
        let r = index.rerank(Query::tokens(&tokens, dim)?, &ids, ids.len())?;
        let by_id: HashMap<&str, f32> = r.hits.iter().map(|h| (h.id.as_str(), h.score)).collect();
        for (slot, d) in scores.iter_mut().zip(docs) {
            if let Doc::Id(id) = d {
                *slot = by_id.get(id.as_str()).copied();
            }
        }
        missing = r.missing;
    }
    let texts: Vec<(usize, &str)> = docs
        .iter()
        .enumerate()
        .filter_map(|(i, d)| if let Doc::Text(t) = d { Some((i, t.as_str())) } else { None })
        .collect();
    if !texts.is_empty() {
        let strs: Vec<&str> = texts.iter().map(|(_, t)| *t).collect();
        let encoded = index.encoder()?.encode_documents(&strs)?;
        let prepared = PreparedQuery::new(&tokens, dim);
        let mut scorer = Scorer::new(&prepared);
        for ((i, _), doc) in texts.iter().zip(&encoded) {
            if !doc.len().is_multiple_of(dim) {
                return Err(ApiError::internal(format!(
                    "the model encodes {}-value rows that are not of the index's dimension {dim}",
                    doc.len()
                )));
            }
            scores[*i] = Some(scorer.score_f32(doc));
        }
    }
    let mut results: Vec<(usize, f32)> =
        scores.into_iter().enumerate().filter_map(|(i, s)| Some((i, s?))).collect();
    results.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok((results, missing))
}

fn ten() -> usize {
    10
}

/// `POST /search`'s body.
#[derive(Deserialize)]
pub(crate) struct SearchRequest {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    query_embeddings: Option<Vec<Vec<f32>>>,
    #[serde(default = "ten")]
    k: usize,
    #[serde(default)]
    ncells: Option<usize>,
    #[serde(default)]
    ndocs: Option<usize>,
    #[serde(default)]
    centroid_score_threshold: Option<f32>,
    /// `"auto"` (default: WARP for k ≤ 10 on an index that stores its layout, else PLAID),
    /// `"plaid"` or `"warp"`.
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    nprobe: Option<usize>,
    #[serde(default)]
    warp_rescore: Option<usize>,
    /// Attach each document's text where the index stores it (default true).
    #[serde(default, alias = "return_documents")]
    return_text: Option<bool>,
}

#[derive(Serialize)]
struct SearchHit {
    id: String,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

#[derive(Serialize)]
struct SearchResponse {
    results: Vec<SearchHit>,
}

pub(crate) async fn search(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let req: SearchRequest = parse(body)?;
    let max = state.config.max_documents;
    let served = state.served();
    let query = QuerySpec::new(req.query, req.query_embeddings, &served.index)?;
    if req.k == 0 || req.k > max {
        return Err(ApiError::bad_request(format!(
            "k must be between 1 and {max} (--max-documents), not {}",
            req.k
        )));
    }
    if req.ncells == Some(0) || req.ndocs == Some(0) || req.nprobe == Some(0) {
        return Err(ApiError::bad_request("ncells, ndocs and nprobe must be at least 1"));
    }
    let mode = match req.mode.as_deref() {
        None | Some("auto") => SearchMode::Auto,
        Some("plaid") => SearchMode::Plaid,
        Some("warp") => SearchMode::Warp,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "mode must be \"auto\", \"plaid\" or \"warp\", not {other:?}"
            )))
        }
    };
    let defaults = SearchParams::for_k(req.k);
    let params = SearchParams {
        ncells: req.ncells.unwrap_or(defaults.ncells),
        ndocs: req.ndocs.unwrap_or(defaults.ndocs),
        // A depth in the request is used as given; the default scales with the index.
        scale_ndocs: req.ndocs.is_none(),
        centroid_score_threshold: req.centroid_score_threshold.unwrap_or(defaults.centroid_score_threshold),
        mode,
        nprobe: req.nprobe,
        warp_rescore: req.warp_rescore,
        ..defaults
    };
    let k = req.k;
    let texts = served.texts.filter(|_| req.return_text.unwrap_or(true));
    let index = served.index;
    let results = blocking(&state, move || {
        let tokens = query.tokens(&index)?;
        let hits = index.search(Query::tokens(&tokens, index.dim())?, k, &params)?;
        hits.into_iter()
            .map(|h| {
                let text = match &texts {
                    Some(store) => store.text(&h.id)?,
                    None => None,
                };
                Ok(SearchHit { id: h.id, score: h.score, text })
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(SearchResponse { results }))
}

pub(crate) async fn health(State(state): Shared) -> impl IntoResponse {
    let index = state.served().index;
    Json(serde_json::json!({
        "status": "ok",
        "documents": index.n_docs(),
        "dim": index.dim(),
        "generation": index.manifest().generation,
    }))
}

pub(crate) async fn metrics(State(state): Shared) -> impl IntoResponse {
    let index = state.served().index;
    let text = state.metrics.render(index.n_docs(), index.manifest().generation);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

pub(crate) async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
