//! The end-to-end test harness, in three parts:
//!
//! - [`harness`]: `spawn_app()` gives each test a fresh database, its own task queue and
//!   worker, the real router on port 0 and a real provider sandbox on port 0 (its webhooks go
//!   to that router), against one real `temporal server start-dev` per test binary. SQLite by
//!   default; PostgreSQL when `TEST_DATABASE_URL` is set (a fresh database is created per test).
//! - [`client`]: requests as a named caller. A request carries the token of the user the test
//!   names (`app.as_user("alice")`), the admin's only when the test says `as_admin()`, and
//!   none otherwise. Domain helpers act as whoever would: the buyer for an order, the admin
//!   for the catalogue.
//! - [`invariants`]: what every scenario ends with, `assert_invariants()`: the conservation
//!   invariants, plus the money checked against the provider in both directions.
//!
//! [`fast`] is the fast tier: the router called in process, with a stand-in for Temporal.

#![allow(dead_code)]

pub mod client;
pub mod fast;
pub mod harness;
pub mod invariants;
pub mod scenario;

pub use client::*;
pub use harness::*;

pub const SECRET: &str = "whsec_test_current";
pub const OLD_SECRET: &str = "whsec_test_previous";
pub const PROVIDER_KEY: &str = "sk_test_sandbox";
pub const JWT_SECRET: &str = "jwt_test_secret";
/// Late payments within this many seconds of settlement are refunded by the order workflow.
pub const GRACE_SECS: u64 = 2;
/// Provider calls time out after this long in tests.
pub const PROVIDER_TIMEOUT_SECS: u64 = 2;
/// A payment for an unknown order is refunded after this long in tests.
pub const UNKNOWN_ORDER_HOLD_SECS: u64 = 3;
