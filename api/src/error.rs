//! `ApiError`: every error the API answers, in one JSON shape:
//! `{"error": {"code": "...", "message": "...", "order_id": "..."}}`.
//!
//! Client errors (4xx) carry a stable `code` and a message that is safe to show. Server errors
//! (5xx) log their cause with the order id and answer a generic message; they must never be
//! the answer to bad input.

pub use crate::error_code::ErrorCode;
use crate::view::{ErrorBody, ErrorDetail};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orderflow_store::{Entity, Service, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A 4xx with a stable code.
    #[error("{code}: {message}")]
    Client {
        code: ErrorCode,
        message: String,
        order_id: Option<String>,
    },
    /// Temporal, the provider or the database is unreachable or too slow: 503, safe to retry.
    #[error("unavailable: {cause}")]
    Unavailable {
        code: ErrorCode,
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
    /// An error with its code's status (see `ErrorCode`): a 4xx, or a 503 whose message is
    /// also its logged cause.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let message = message.into();
        if code.status().is_server_error() {
            return ApiError::unavailable(code, message.clone(), message);
        }
        ApiError::Client {
            code,
            message,
            order_id: None,
        }
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal {
            order_id: None,
            cause: cause.to_string(),
        }
    }
    pub fn unavailable(
        code: ErrorCode,
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

    /// A refusal a lower crate reported as text (a rejected reservation, a store conflict):
    /// its listed code; an unlisted one is logged as an error (list it in `ErrorCode`) and
    /// answered as `unlisted` (a 500 for `InternalError`), never sent unchecked.
    pub fn reported(text: &str, message: impl Into<String>, unlisted: ErrorCode) -> Self {
        let message = message.into();
        match ErrorCode::parse(text) {
            Some(code) => ApiError::new(code, message),
            None => {
                tracing::error!(code = text, %message, "a code the API does not list");
                match unlisted {
                    ErrorCode::InternalError => ApiError::internal(format!("{text}: {message}")),
                    code => ApiError::new(code, message),
                }
            }
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
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Client { code, .. } | ApiError::Unavailable { code, .. } => *code,
            ApiError::Internal { .. } => ErrorCode::InternalError,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code().status()
    }
}

/// What a missing entity a client named answers.
pub fn not_found(entity: Entity, id: &str) -> ApiError {
    let code = match entity {
        Entity::Order => ErrorCode::OrderNotFound,
        Entity::Sku => ErrorCode::SkuNotFound,
        Entity::Coupon => ErrorCode::CouponNotFound,
        Entity::Wallet => ErrorCode::WalletNotFound,
        Entity::Points => ErrorCode::PointsNotFound,
        Entity::Entitlements => ErrorCode::EntitlementsNotFound,
        Entity::Code => ErrorCode::CodeNotFound,
        Entity::Refund => ErrorCode::RefundNotFound,
        Entity::Return => ErrorCode::ReturnNotFound,
        Entity::Subscription => ErrorCode::SubscriptionNotFound,
        Entity::Delivery => ErrorCode::DeliveryNotFound,
        // No client names these: a handler that lets one through has a bug.
        Entity::PaymentDecision | Entity::AttentionRow => {
            return ApiError::internal(format!("{entity} {id} not found"));
        }
    };
    ApiError::new(code, format!("{entity} {id} not found"))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { entity, id } => not_found(entity, &id),
            StoreError::Invalid { code, message } => {
                ApiError::reported(code, message, ErrorCode::InternalError)
            }
            StoreError::Conflict {
                order_id,
                code,
                message,
            } => ApiError::reported(code, message, ErrorCode::InternalError).for_order(&order_id),
            e @ StoreError::Unavailable {
                service: Service::Temporal,
                ..
            } => ApiError::unavailable(
                ErrorCode::TemporalUnavailable,
                "the workflow engine is unavailable; retry with the same request",
                e,
            ),
            e @ StoreError::Unavailable {
                service: Service::Provider,
                ..
            } => ApiError::unavailable(
                ErrorCode::ProviderUnavailable,
                "the payment provider is unavailable; retry later",
                e,
            ),
            e @ (StoreError::Db(_) | StoreError::Busy(_)) if e.is_transient() => {
                ApiError::unavailable(
                    ErrorCode::DatabaseUnavailable,
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
                (code, message, order_id)
            }
            ApiError::Internal { order_id, cause } => {
                tracing::error!(order_id = order_id.as_deref().unwrap_or(""), %cause, "internal error");
                (
                    ErrorCode::InternalError,
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
