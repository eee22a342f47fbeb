//! Errors of the store, classified where they happen.
//!
//! `Db` is infrastructure (connection lost, busy, timeout): Temporal retries it, unless the
//! database refused the write itself (a CHECK, UNIQUE, NOT NULL or foreign-key violation) or
//! returned data we cannot read: those are permanent (`constraint_violation`, `data_error`) and
//! retrying them forever would hang the order in silence. Everything else is a business error
//! with a stable code: retrying cannot fix it, so activities mark it non-retryable and it shows
//! in the workflow history. Nothing here is ever turned into `Ok`.

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
    NotFound { entity: Entity, id: String },
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
    /// Another service the store needs did not answer: transient, retried.
    #[error("{service} unavailable: {message}")]
    Unavailable { service: Service, message: String },
}

/// What a `NotFound` names. A client names the first ones; the API answers
/// `<entity>_not_found` for them, and a missing one looks exactly like another user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Order,
    Sku,
    Coupon,
    Wallet,
    Points,
    Entitlements,
    Code,
    Refund,
    /// A return of shipped lines (`ret_...`).
    Return,
    /// An events subscriber (`sub_...`).
    Subscription,
    /// One event's delivery to one subscriber, named by the event id.
    Delivery,
    /// A payment's decision row: only workflows name it.
    PaymentDecision,
    /// An order's `needs_attention` row: only workflows name it.
    AttentionRow,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Order => "order",
            Entity::Sku => "sku",
            Entity::Coupon => "coupon",
            Entity::Wallet => "wallet",
            Entity::Points => "points",
            Entity::Entitlements => "entitlements",
            Entity::Code => "code",
            Entity::Refund => "refund",
            Entity::Return => "return",
            Entity::Subscription => "subscription",
            Entity::Delivery => "delivery of event",
            Entity::PaymentDecision => "payment decision",
            Entity::AttentionRow => "needs_attention row of order",
        })
    }
}

/// A TEXT column holding a value its enum does not know is bad data: a permanent `data_error`,
/// never a guess.
impl From<orderflow_workflows::model::UnknownValue> for StoreError {
    fn from(e: orderflow_workflows::model::UnknownValue) -> Self {
        StoreError::Db(sqlx::Error::Decode(Box::new(e)))
    }
}

/// The services besides the database that the store calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Temporal,
    Provider,
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Temporal => "Temporal",
            Service::Provider => "the payment provider",
        })
    }
}

/// Whether a database error is permanent: the same statement on the same data fails again.
///
/// By kind first; then by the database's own code, so that every constraint counts (an
/// exclusion constraint or a `RAISE(ABORT)` trigger as much as a CHECK): PostgreSQL's SQLSTATE
/// class 23 (integrity constraint violation) and class 22 (data exception: a value out of
/// range), SQLite's primary result code 19 (`SQLITE_CONSTRAINT`, whatever its extended code).
fn permanent_db_code(e: &sqlx::Error) -> Option<&'static str> {
    use sqlx::error::ErrorKind;
    match e {
        sqlx::Error::Database(d) => match d.kind() {
            ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation => Some("constraint_violation"),
            _ => match d.code().as_deref() {
                Some(c) if c.len() == 5 && c.starts_with("23") => Some("constraint_violation"),
                Some(c) if c.len() == 5 && c.starts_with("22") => Some("data_error"),
                // SQLite's codes are decimal numbers of up to 4 digits; PostgreSQL's are 5.
                Some(c) if c.len() < 5 && c.parse::<i32>().is_ok_and(|n| n & 0xff == 19) => {
                    Some("constraint_violation")
                }
                _ => None,
            },
        },
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => Some("data_error"),
        _ => None,
    }
}

impl StoreError {
    pub fn conflict(order_id: &str, code: &'static str, message: impl Into<String>) -> Self {
        StoreError::Conflict {
            order_id: order_id.to_owned(),
            code,
            message: message.into(),
        }
    }

    /// `service` did not answer (or answered what we cannot use): retried.
    pub fn unavailable(service: Service, e: impl std::fmt::Display) -> Self {
        StoreError::Unavailable {
            service,
            message: e.to_string(),
        }
    }

    pub fn not_found(entity: Entity, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            entity,
            id: id.into(),
        }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Db(e) => permanent_db_code(e).is_none(),
            StoreError::Busy(_) | StoreError::Unavailable { .. } => true,
            _ => false,
        }
    }

    /// The stable code of a business error.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Db(e) => permanent_db_code(e).unwrap_or("database_unavailable"),
            StoreError::Busy(_) => "database_unavailable",
            StoreError::Unavailable {
                service: Service::Temporal,
                ..
            } => "temporal_unavailable",
            StoreError::Unavailable {
                service: Service::Provider,
                ..
            } => "provider_unavailable",
            StoreError::NotFound { .. } => "not_found",
            StoreError::Conflict { code, .. } | StoreError::Invalid { code, .. } => code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_transient_and_bad_data_is_not() {
        assert!(StoreError::Db(sqlx::Error::PoolTimedOut).is_transient());
        let decode = StoreError::Db(sqlx::Error::ColumnNotFound("x".into()));
        assert!(!decode.is_transient());
        assert_eq!(decode.code(), "data_error");
        assert!(!StoreError::not_found(Entity::Order, "o").is_transient());
    }
}
