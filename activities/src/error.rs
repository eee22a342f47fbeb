//! Errors of the store, classified where they happen.
//!
//! `Db` is infrastructure (connection lost, busy, timeout): Temporal retries it. Everything
//! else is a business error with a stable code: retrying cannot fix it, so activities mark it
//! non-retryable and it shows in the workflow history. Nothing here is ever turned into `Ok`.

use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A database error: transient, retried.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Lost a race on a row several times in a row: transient, retried.
    #[error("contended: {0}")]
    Busy(String),
    /// A record the caller named does not exist.
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },
    /// A write that the data forbids (would break an invariant or a state transition).
    #[error("order {order_id}: {code}: {message}")]
    Conflict {
        order_id: String,
        code: &'static str,
        message: String,
    },
    /// Input the store refuses (negative amounts, overflow).
    #[error("{code}: {message}")]
    Invalid { code: &'static str, message: String },
}

impl StoreError {
    pub fn conflict(order_id: &str, code: &'static str, message: impl Into<String>) -> Self {
        StoreError::Conflict {
            order_id: order_id.to_owned(),
            code,
            message: message.into(),
        }
    }

    pub fn not_found(entity: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            entity,
            id: id.into(),
        }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Db(_) | StoreError::Busy(_))
    }

    /// The stable code of a business error.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Db(_) | StoreError::Busy(_) => "database_unavailable",
            StoreError::NotFound { .. } => "not_found",
            StoreError::Conflict { code, .. } | StoreError::Invalid { code, .. } => code,
        }
    }
}

/// Converts a store error into an activity error: transient errors are retried, business
/// errors are non-retryable and carry their code as the failure type.
pub fn into_activity_error(e: StoreError) -> ActivityError {
    if e.is_transient() {
        ActivityError::application(ApplicationFailure::new(e))
    } else {
        ActivityError::application(ApplicationFailure::non_retryable(e))
    }
}
