//! orderflow-store: the database as the API and the activities both read it
//! (`docs/architecture.md`, "Crates").
//!
//! - [`db`]: the pool (SQLite or PostgreSQL through sqlx's `Any` driver) and migrations.
//! - [`error`]: `StoreError`, classified where it happens: transient (retried) or business
//!   and permanent (a stable code).
//! - [`events_out`]: subscribers of the events orderflow publishes, and their delivery log.
//! - [`funds`]: the wallet and points account tables, one descriptor each.
//! - at the root: schema rows, reads and admin writes (catalogue, coupons, accounts, orders),
//!   as `orderflow_store::get_order` and friends.
//!
//! This crate never changes an order's status and knows nothing of Temporal: the order
//! workflow, through the activities, is the only writer of an order's state.

pub mod db;
pub mod error;
pub mod events_out;
pub mod funds;
mod queries;

pub use db::Db;
pub use error::{Entity, Service, StoreError};
pub use queries::*;

/// RFC 3339 (UTC) for Unix milliseconds: how every time leaves orderflow, in the API's answers
/// and in the events it sends.
pub fn rfc3339(ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Unix milliseconds now. Only activities and the API read the clock; workflows never do.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
