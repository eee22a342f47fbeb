//! `Engine`: everything the API asks of the workflow engine, as one trait in `AppState`.
//!
//! The real engine is [`crate::temporal::TemporalEngine`]. Behind the trait, the API's own
//! logic (validation, access, the error shape, the OpenAPI document) runs in tests with a fresh
//! database and an in-process stand-in, in well under a second, while every end-to-end test
//! keeps the real Temporal dev server. Implementations never change an order's status
//! themselves: they ask its workflow, which is the only writer of it.

use crate::error::ApiError;
use orderflow_activities::audit::MoneyReport;
use orderflow_activities::payments::InboxEvent;
use orderflow_provider::PaymentProvider;
use orderflow_store::Db;
use orderflow_workflows::model::{
    CancelOutcome, CancelRequest, CheckoutSession, OrderStatus, PlaceOrder, Placement, RedeemCode,
    RedemptionOutcome, RefundPayment,
};
use orderflow_workflows::refusal::Refused;

/// What asking a workflow produced.
#[derive(Debug)]
pub enum Answer<T> {
    /// The workflow answered.
    Answered(T),
    /// The workflow refused (an update validator), with its stable code.
    Refused(Refused),
    /// The workflow is closed (or never existed): read the database instead.
    Closed,
}

/// The workflow engine, as the API uses it. A call that waits for a workflow's answer waits at
/// most the configured `workflow_wait`, then answers 503 `order_in_progress` (or
/// `temporal_unavailable`).
#[async_trait::async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Starts the order's workflow unless it exists, and waits for the reservation outcome.
    async fn place_order(&self, input: PlaceOrder) -> Result<Answer<Placement>, ApiError>;
    /// Asks a pending (or paid, not shipped) order to cancel, and waits until it is settled.
    async fn cancel_order(
        &self,
        order_id: &str,
        request: CancelRequest,
    ) -> Result<Answer<CancelOutcome>, ApiError>;
    /// Asks a paid order to ship.
    async fn ship_order(&self, order_id: &str) -> Result<Answer<OrderStatus>, ApiError>;
    /// Asks a pending order for a checkout session.
    async fn checkout(&self, order_id: &str) -> Result<Answer<CheckoutSession>, ApiError>;
    /// Tells an order stopped in `needs_attention` to try again; `false` if its workflow ended.
    async fn retry_order(&self, order_id: &str) -> Result<bool, ApiError>;
    /// Redeems a code for a user, at most once per pair.
    async fn redeem(&self, request: RedeemCode) -> Result<RedemptionOutcome, ApiError>;
    /// Starts attempt `attempt` of a refund ops asked to retry; answers its workflow id.
    async fn start_refund_retry(
        &self,
        request: RefundPayment,
        attempt: i64,
    ) -> Result<String, ApiError>;
    /// Starts (or meets) the workflow of a partial refund the store recorded `pending`;
    /// answers its workflow id.
    async fn start_order_refund(&self, refund_id: &str, order_id: &str)
    -> Result<String, ApiError>;
    /// Hands a reported payment on to its order or to its own decision
    /// (`orderflow_activities::handoff`); answers the outcome the inbox records.
    async fn hand_on_payment(
        &self,
        db: &Db,
        event: &InboxEvent,
    ) -> Result<&'static str, orderflow_store::StoreError>;
    /// Tells a pending order that the provider ended one of its checkout sessions unpaid;
    /// `false` if its workflow has ended.
    async fn end_session(
        &self,
        order_id: &str,
        session_id: &str,
        event_id: &str,
    ) -> Result<bool, orderflow_store::StoreError>;
    /// The two-way money audit, with the liveness of every in-flight item's owner.
    async fn audit(
        &self,
        db: &Db,
        provider: &PaymentProvider,
        now_ms: i64,
    ) -> Result<MoneyReport, orderflow_store::StoreError>;
    /// Whether the engine answers (for `/readyz`).
    async fn ready(&self) -> bool;
}
