//! The one error shape every endpoint answers with: a status and `{"error": "one line"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use engine::EngineError;

/// An HTTP error: its status and a one-line message, sent as `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, on one line.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message` (newlines are folded into spaces).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let message: String = message.into();
        let message = if message.contains(['\n', '\r']) {
            message.split(['\n', '\r']).filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" ")
        } else {
            message
        };
        ApiError { status, message }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 500 Internal Server Error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<EngineError> for ApiError {
    /// The caller's mistakes (wrong dimension, bad values, untokenizable text) are 400; a
    /// corrupt index, an unloadable model or an I/O failure is 500.
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::DimMismatch { .. }
            | EngineError::InvalidArgument(_)
            | EngineError::NonFinite { .. }
            | EngineError::Tokenize { .. }
            | EngineError::DuplicateId { .. } => StatusCode::BAD_REQUEST,
            EngineError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let e = ApiError::bad_request("first\nsecond\r\n\nthird");
        assert_eq!(e.message, "first second third");
        let e: ApiError = EngineError::DimMismatch { what: "the query".into(), expected: 32, got: 8 }.into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e: ApiError = EngineError::Io { path: "x".into(), source: std::io::Error::other("gone") }.into();
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
