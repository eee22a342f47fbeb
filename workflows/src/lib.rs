//! orderflow-workflows: the deterministic order logic.
//!
//! - [`model`]: the types that cross the Temporal boundary (workflow input, signals, updates,
//!   activity inputs and outputs). Their serde shape is part of every recorded history.
//! - [`contract`]: the activity *contract*, declared with `#[activity_definitions]`. The
//!   activities crate implements it; this crate only sees the types.
//! - [`decide`]: pure decision functions (pricing, what wakes a waiting order), unit-tested
//!   without a server.
//! - [`order`]: `OrderWorkflow`, one order from reservation to paid, cancelled or rejected.
//! - [`refund`]: `RefundWorkflow`, the refund of one payment, exactly once.
//! - [`order_refund`]: `OrderRefundWorkflow`, one partial refund of a paid order (an amount,
//!   some lines, or a received return), exactly once.
//! - [`payment`]: `PaymentDecisionWorkflow`, the durable decision about a payment that its order
//!   could not take (apply it, or refund it).
//! - [`reconcile`]: `ReconcileWorkflow`, the scheduled repair of rows and workflows that disagree.
//! - [`redemption`]: `RedemptionWorkflow`, one user redeeming one code.
//! - [`baseline`]: `BaselineWorkflow`, the bare workflow the benchmark compares orders with.
//!
//! This crate must never do I/O, read a clock, or depend on axum, sqlx or reqwest.

pub mod baseline;
pub mod contract;
pub mod decide;
pub mod model;
pub mod order;
pub mod order_refund;
pub mod payment;
pub mod policy;
pub mod reconcile;
pub mod redemption;
pub mod refund;
pub mod refusal;
pub mod sometimes;

pub use baseline::BaselineWorkflow;
pub use order::OrderWorkflow;
pub use order_refund::OrderRefundWorkflow;
pub use payment::PaymentDecisionWorkflow;
pub use reconcile::ReconcileWorkflow;
pub use redemption::RedemptionWorkflow;
pub use refund::RefundWorkflow;

/// The task queue that order workflows and their activities run on by default.
pub const TASK_QUEUE: &str = "orderflow-orders";

/// The workflow id of an order. Every component derives it from this one function.
pub fn workflow_id(order_id: &str) -> String {
    format!("order-{order_id}")
}

/// The workflow id of the benchmark's bare workflow number `n` of run `run`.
pub fn baseline_workflow_id(run: &str, n: u64) -> String {
    format!("baseline-{run}-{n}")
}

/// The workflow id of the refund of a payment. The order workflow (as a child) and the API
/// (after the order workflow closed) both start it with this id and a reuse policy that
/// rejects duplicates, so a payment has at most one refund workflow, ever.
pub fn refund_workflow_id(payment_id: &str) -> String {
    format!("refund-{payment_id}")
}

/// The workflow id of the decision about a payment its order could not take. The webhook and
/// the inbox re-drive signal-with-start it, so one payment has one decision in progress.
pub fn payment_workflow_id(payment_id: &str) -> String {
    format!("payment-{payment_id}")
}

/// The workflow id of a partial refund (an admin's, or a received return's), and the
/// idempotency key its provider call uses: one refund id, one provider refund, ever.
pub fn order_refund_workflow_id(refund_id: &str) -> String {
    format!("order-refund-{refund_id}")
}

/// The workflow id of an ops-requested retry of a refund the provider refused.
pub fn refund_retry_workflow_id(payment_id: &str, attempt: i64) -> String {
    format!("refund-{payment_id}-attempt-{attempt}")
}

/// The workflow id of a user's redemption of a code: the same pair always meets the same
/// workflow, and different pairs never do (the code's length prefix makes the split unique).
pub fn redemption_workflow_id(user_id: &str, code: &str) -> String {
    format!("redeem-{}:{code}:{user_id}", code.len())
}

/// Search attribute names registered with the Temporal server (see `orderflow dev`).
pub mod search {
    use temporalio_common::search_attributes::{SearchAttributeKey, Timestamp};

    /// Keyword: the order status, as in the REST API, plus the steps ops watch: `checkout_open`
    /// on an order; `refund_pending`, `refunded`, `refund_failed` on a refund workflow.
    pub const ORDER_STATUS: SearchAttributeKey<String> = SearchAttributeKey::keyword("OrderStatus");
    /// Keyword: the customer (`user_id`).
    pub const CUSTOMER_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("CustomerId");
    /// Datetime: when an unpaid order is cancelled.
    pub const PAYMENT_DEADLINE: SearchAttributeKey<Timestamp> =
        SearchAttributeKey::datetime("PaymentDeadline");

    /// Keyword: the order a workflow belongs to (set on refund workflows, whose ids name the
    /// payment), so `OrderId = "ord_..."` finds every workflow of an order.
    pub const ORDER_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("OrderId");

    /// `(name, type)` of every search attribute, for registration.
    pub const ALL: [(&str, &str); 4] = [
        ("OrderStatus", "Keyword"),
        ("CustomerId", "Keyword"),
        ("PaymentDeadline", "Datetime"),
        ("OrderId", "Keyword"),
    ];
}
