//! The hand-written OpenAPI 3 description of the endpoints (`GET /openapi.json`).

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn json_body(schema: &str) -> Value {
    json!({
        "required": true,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

fn json_ok(schema: &str) -> Value {
    json!({
        "description": "OK",
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
    })
}

/// The OpenAPI 3.0 document of every endpoint.
pub fn document() -> Value {
    let query_props = json!({
        "query": { "type": "string", "description": "Query text, encoded with the index's model (exclusive with query_embeddings)." },
        "query_embeddings": {
            "type": "array",
            "description": "Query token embeddings, one array of `dim` numbers per token (exclusive with query).",
            "items": { "type": "array", "items": { "type": "number" } }
        }
    });
    let mut rerank_props = query_props.clone();
    let rerank_extra = json!({
        "documents": {
            "type": "array",
            "description": "Candidates: a string or {\"text\": string} is encoded and scored exactly; {\"id\": string} is scored from the index. At most --max-documents. Sent as `texts` (Hugging Face TEI's field) instead, the answer is TEI's bare array [{index, score, text?}].",
            "items": { "oneOf": [
                { "type": "string" },
                { "type": "object", "required": ["text"], "properties": { "text": { "type": "string" } } },
                { "type": "object", "required": ["id"], "properties": { "id": { "type": "string" } } }
            ] }
        },
        "top_n": { "type": "integer", "minimum": 1, "description": "Results returned (default: all)." },
        "return_documents": { "type": "boolean", "default": false, "description": "Echo each result's document (`return_text` is accepted as an alias)." }
    });
    let mut search_props = query_props;
    let search_extra = json!({
        "k": { "type": "integer", "minimum": 1, "default": 10, "description": "Results returned (at most --max-documents)." },
        "ncells": { "type": "integer", "minimum": 1, "description": "Compressed index: centroids probed per query token (default by k)." },
        "ndocs": { "type": "integer", "minimum": 1, "description": "Compressed index: candidates kept after the approximate score (default by k)." },
        "centroid_score_threshold": { "type": "number", "description": "Compressed index: centroid pruning threshold (default by k)." },
        "mode": { "type": "string", "enum": ["plaid", "warp"], "description": "Compressed index: the search to run (default plaid)." },
        "nprobe": { "type": "integer", "minimum": 1, "description": "WARP mode: centroids probed per query token (default derived from the index)." },
        "warp_rescore": { "type": "integer", "minimum": 0, "description": "WARP mode: documents rescored exactly (default derived from the index; 0 returns WARP scores)." },
        "return_text": { "type": "boolean", "default": true, "description": "Attach each hit's text where the index stores texts (built with --bm25); `return_documents` is accepted as an alias." }
    });
    for (props, extra) in [(&mut rerank_props, rerank_extra), (&mut search_props, search_extra)] {
        if let (Some(p), Value::Object(e)) = (props.as_object_mut(), extra) {
            p.extend(e);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "colbert-index server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "ColBERT late-interaction rerank and search over one index. Errors are {\"error\": \"one line\"}."
        },
        "paths": {
            "/rerank": { "post": {
                "summary": "Rerank documents (by id or text) against a query by MaxSim (also answered on /v1/rerank and /v2/rerank, the paths Cohere's and Jina's clients use)",
                "operationId": "rerank",
                "requestBody": json_body("RerankRequest"),
                "responses": {
                    "200": json_ok("RerankResponse"),
                    "400": error_response("Bad request: wrong types, empty query, too many documents"),
                    "413": error_response("Body larger than --max-body-bytes"),
                    "503": error_response("Deadline (--timeout-ms) exceeded")
                }
            } },
            "/search": { "post": {
                "summary": "Search the index",
                "operationId": "search",
                "requestBody": json_body("SearchRequest"),
                "responses": {
                    "200": json_ok("SearchResponse"),
                    "400": error_response("Bad request"),
                    "413": error_response("Body larger than --max-body-bytes"),
                    "503": error_response("Deadline (--timeout-ms) exceeded")
                }
            } },
            "/health": { "get": {
                "summary": "Liveness and the index's size",
                "operationId": "health",
                "responses": { "200": json_ok("Health") }
            } },
            "/metrics": { "get": {
                "summary": "Prometheus metrics (text format 0.0.4)",
                "operationId": "metrics",
                "responses": { "200": { "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } } }
            } },
            "/openapi.json": { "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } } }
            } }
        },
        "components": { "schemas": {
            "RerankRequest": { "type": "object", "required": ["documents"], "properties": rerank_props },
            "RerankResponse": { "type": "object", "required": ["results"], "properties": {
                "results": { "type": "array", "description": "Best first; ties by index.", "items": {
                    "type": "object", "required": ["index", "relevance_score"], "properties": {
                        "index": { "type": "integer", "description": "Position in the request's documents." },
                        "relevance_score": { "type": "number", "description": "MaxSim score (unnormalised)." },
                        "document": { "type": "object", "description": "The document as given ({\"text\": ...} for a string), with return_documents." }
                    } } },
                "missing": { "type": "array", "items": { "type": "string" }, "description": "Ids not in the index (left out of results); absent when none." }
            } },
            "SearchRequest": { "type": "object", "properties": search_props },
            "SearchResponse": { "type": "object", "required": ["results"], "properties": {
                "results": { "type": "array", "items": { "type": "object", "required": ["id", "score"], "properties": {
                    "id": { "type": "string" }, "score": { "type": "number" },
                    "text": { "type": "string", "description": "The document's text, where the index stores it." }
                } } }
            } },
            "Health": { "type": "object", "required": ["status", "documents", "dim", "generation"], "properties": {
                "status": { "type": "string", "enum": ["ok"] },
                "documents": { "type": "integer", "description": "Live documents of the served snapshot." },
                "dim": { "type": "integer" },
                "generation": { "type": "integer", "description": "Update generation of the served snapshot (0: never updated)." }
            } },
            "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } }
        } }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_described() {
        let doc = super::document();
        let paths = doc["paths"].as_object().unwrap();
        for route in ["/rerank", "/search", "/health", "/metrics", "/openapi.json"] {
            assert!(paths.contains_key(route), "{route}");
        }
        // Every $ref resolves.
        let text = doc.to_string();
        for r in text.split("#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
        }
    }
}
