//! `ApiError`: every error the API answers, in one JSON shape:
//! `{"error": {"code": "...", "message": "...", "order_id": "..."}}`.
//!
//! Client errors (4xx) carry a stable `code` and a message that is safe to show. Server errors
//! (5xx) log their cause with the order id and answer a generic message; they must never be
//! the answer to bad input.

use crate::view::{ErrorBody, ErrorDetail};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orderflow_store::{Service, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A 4xx with a stable code.
    #[error("{code}: {message}")]
    Client {
        status: StatusCode,
        code: String,
        message: String,
        order_id: Option<String>,
    },
    /// Temporal or the database is unreachable or too slow: 503, safe to retry.
    #[error("unavailable: {cause}")]
    Unavailable {
        code: &'static str,
        message: String,
        order_id: Option<String>,
        cause: String,
    },
    /// A bug or an unexpected state: 500. The cause is logged, not returned.
    #[error("internal: {cause}")]
    Internal {
        order_id: Option<String>,
        cause: String,
    },
}

impl ApiError {
    pub fn client(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Client {
            status,
            code: code.into(),
            message: message.into(),
            order_id: None,
        }
    }
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unprocessable(code: &str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::NOT_FOUND, code, message)
    }
    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, code, message)
    }
    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal {
            order_id: None,
            cause: cause.to_string(),
        }
    }
    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        cause: impl std::fmt::Display,
    ) -> Self {
        ApiError::Unavailable {
            code,
            message: message.into(),
            order_id: None,
            cause: cause.to_string(),
        }
    }

    /// Attaches the order this error is about.
    pub fn for_order(mut self, id: &str) -> Self {
        match &mut self {
            ApiError::Client { order_id, .. }
            | ApiError::Unavailable { order_id, .. }
            | ApiError::Internal { order_id, .. } => *order_id = Some(id.to_owned()),
        }
        self
    }

    /// The stable code of this error (`internal_error` for a 500).
    pub fn code(&self) -> &str {
        match self {
            ApiError::Client { code, .. } => code,
            ApiError::Unavailable { code, .. } => code,
            ApiError::Internal { .. } => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { entity, id } => {
                let code = format!("{}_not_found", entity.replace(' ', "_"));
                ApiError::not_found(&code, format!("{entity} {id} not found"))
            }
            StoreError::Invalid { code, message } => ApiError::unprocessable(code, message),
            StoreError::Conflict {
                order_id,
                code,
                message,
            } => ApiError::conflict(code, message).for_order(&order_id),
            e @ StoreError::Unavailable {
                service: Service::Temporal,
                ..
            } => ApiError::unavailable(
                "temporal_unavailable",
                "the workflow engine is unavailable; retry with the same request",
                e,
            ),
            e @ StoreError::Unavailable {
                service: Service::Provider,
                ..
            } => ApiError::unavailable(
                "provider_unavailable",
                "the payment provider is unavailable; retry later",
                e,
            ),
            e @ (StoreError::Db(_) | StoreError::Busy(_)) if e.is_transient() => {
                ApiError::unavailable(
                    "database_unavailable",
                    "the database is unavailable; retry later",
                    e,
                )
            }
            // The database refused a write the handler let through: a bug, not bad input.
            e @ (StoreError::Db(_) | StoreError::Busy(_)) => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (code, message, order_id) = match self {
            ApiError::Client {
                code,
                message,
                order_id,
                ..
            } => (code, message, order_id),
            ApiError::Unavailable {
                code,
                message,
                order_id,
                cause,
            } => {
                tracing::warn!(order_id = order_id.as_deref().unwrap_or(""), %cause, "answering 503");
                (code.to_owned(), message, order_id)
            }
            ApiError::Internal { order_id, cause } => {
                tracing::error!(order_id = order_id.as_deref().unwrap_or(""), %cause, "internal error");
                (
                    "internal_error".to_owned(),
                    "internal error; it has been logged".to_owned(),
                    order_id,
                )
            }
        };
        let error = ErrorDetail {
            code,
            message,
            order_id,
        };
        (status, axum::Json(ErrorBody { error })).into_response()
    }
}
