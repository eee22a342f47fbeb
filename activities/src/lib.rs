//! orderflow-activities: every side effect of an order, and the only crate that moves
//! money or stock (the database itself is `orderflow-store`'s).
//!
//! - [`error`]: how a `StoreError` (from `orderflow-store`) becomes an activity error.
//! - [`holds`]: the per-order, per-resource hold state machine and its append-only ledger,
//!   which make every reserve, release and capture idempotent.
//! - [`stock`], [`coupons`], [`funds`] (points and wallet): the resources an order holds.
//! - [`orders`]: the order row, its events and payments.
//! - [`outcome`]: one transaction per outcome (paid, cancelled, cancelled after payment): the
//!   status change and every hold move commit together.
//! - [`payments`]: checkout sessions, the webhook inbox and refunds (exactly once on the row).
//! - [`order_refunds`]: partial refunds (an amount, some lines) and returns of a paid order,
//!   each split over what paid it and exactly once on its own row.
//! - [`handoff`]: where a reported payment goes, and the decision about one its order cannot
//!   take (apply it or refund it); the inbox re-drive.
//! - [`disputes`]: a payment the payer's bank contests, recorded once with what was done (its
//!   digital goods revoked, or its order flagged for ops).
//! - [`events_out`]: the outbox of events for other services (written with each step of an
//!   order's log) and the dispatcher that delivers them, signed, at least once, in order.
//! - [`quota`]: per-user, per-SKU quotas, moved with the stock hold or the redemption.
//! - [`fulfilment`]: entitlements, shipments, cancel after payment.
//! - [`reconcile`]: what reconciliation finds (asking Temporal too), logs and purges.
//! - [`redemptions`]: redemption codes, granted at most once per user and never beyond `max_uses`.
//! - [`attention`]: orders that stopped on a permanent error and wait for ops.
//! - [`audit`]: the conservation invariants of `docs/architecture.md`, checked against the data,
//!   and the two-way money audit against the provider's own ledger.
//! - [`contract_impl`]: `OrderActivitiesImpl`, the Temporal activities implementing the
//!   contract of `orderflow_workflows::contract`, each a thin wrapper on one store function.
//!
//! Nothing here decides an order's fate: the workflow decides, these functions do exactly one
//! transaction each and never report `Ok` for work that did not happen.

pub mod attention;
pub mod audit;
pub mod contract_impl;
pub mod coupons;
pub mod disputes;
pub mod error;
pub mod events_out;
pub mod faults;
pub mod fulfilment;
pub mod funds;
pub mod handoff;
pub mod holds;
pub mod order_refunds;
pub mod orders;
pub mod outcome;
pub mod payments;
pub mod quota;
pub mod reconcile;
pub mod redemptions;
pub mod reservation;
pub mod stock;

pub use contract_impl::{OrderActivitiesImpl, OrderSettings};
/// The provider protocol and client (the `orderflow-provider` crate), as the activities use it.
pub use orderflow_provider as provider;
pub use orderflow_store::{Db, Service, StoreError, db, now_ms};
