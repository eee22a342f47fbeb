//! Extractors whose rejections answer in the `ApiError` shape instead of axum's plain text.

use crate::error::{ApiError, ErrorCode};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};

/// `axum::Json`, with 400 `invalid_json` / 415 `unsupported_media_type` / 422 `invalid_body` / 413 `body_too_large`.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// `axum::extract::Query`, with 400 `invalid_query`.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::new(ErrorCode::InvalidBody, e.body_text()),
            JsonRejection::MissingJsonContentType(e) => {
                ApiError::new(ErrorCode::UnsupportedMediaType, e.body_text())
            }
            JsonRejection::BytesRejection(e)
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::new(
                    ErrorCode::BodyTooLarge,
                    "the request body is larger than this route accepts",
                )
            }
            JsonRejection::BytesRejection(e) => {
                ApiError::new(ErrorCode::UnreadableBody, e.body_text())
            }
            other => ApiError::new(ErrorCode::InvalidJson, other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(ErrorCode::InvalidQuery, r.body_text())
    }
}
