//! orderflow-store: the database as the API and the activities both read it
//! (`docs/architecture.md`, "Crates").
//!
//! - [`db`]: the pool (SQLite or PostgreSQL through sqlx's `Any` driver) and migrations.
//! - [`error`]: `StoreError`, classified where it happens: transient (retried) or business
//!   and permanent (a stable code).
//! - [`funds`]: the wallet and points account tables, one descriptor each.
//! - at the root: schema rows, reads and admin writes (catalogue, coupons, accounts, orders),
//!   as `orderflow_store::get_order` and friends.
//!
//! This crate never changes an order's status and knows nothing of Temporal: the order
//! workflow, through the activities, is the only writer of an order's state.

pub mod db;
pub mod error;
pub mod funds;
mod queries;

pub use db::Db;
pub use error::{Entity, Service, StoreError};
pub use queries::*;

/// Unix milliseconds now. Only activities and the API read the clock; workflows never do.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
