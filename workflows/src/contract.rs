//! The activity contract: names, inputs and outputs of every side effect an order performs.
//!
//! Declared here with `#[activity_definitions]` and implemented in `orderflow-activities` with
//! `#[activity(definition = markers::...)]`, so the workflow sees only types. The names are
//! pinned: they are recorded in histories, so renaming a method must not rename the activity.

#![allow(unused_variables)]

use crate::model::*;
use temporalio_common::ActivityError;
use temporalio_macros::activity_definitions;

/// Every activity an order workflow runs.
pub struct OrderActivities;

#[activity_definitions]
impl OrderActivities {
    /// Every reservation of an order in one transaction: stock (pricing the order), then the
    /// coupon, points and wallet. All or nothing; a refusal reserves nothing. Orders started
    /// before this existed reserve resource by resource, with the four below.
    #[activity(name = "order.reserve")]
    pub fn reserve_order(input: ReserveOrder) -> Result<OrderReservation, ActivityError> {
        unimplemented!()
    }
    /// Holds stock for every line, all or nothing, and prices the order from the catalogue.
    #[activity(name = "order.reserve_stock")]
    pub fn reserve_stock(input: ReserveStock) -> Result<Reservation, ActivityError> {
        unimplemented!()
    }
    /// Holds coupon value: part of an amount coupon's balance, or a whole discount coupon.
    #[activity(name = "order.reserve_coupon")]
    pub fn reserve_coupon(input: ReserveCoupon) -> Result<Reservation, ActivityError> {
        unimplemented!()
    }
    #[activity(name = "order.reserve_points")]
    pub fn reserve_points(input: ReserveFunds) -> Result<Reservation, ActivityError> {
        unimplemented!()
    }
    /// Freezes wallet funds (balance -> frozen).
    #[activity(name = "order.reserve_wallet")]
    pub fn reserve_wallet(input: ReserveFunds) -> Result<Reservation, ActivityError> {
        unimplemented!()
    }

    /// Creates the order row (`pending_payment` or `rejected`) and its first event.
    #[activity(name = "order.record_order")]
    pub fn record_order(input: RecordOrder) -> Result<(), ActivityError> {
        unimplemented!()
    }
    /// Moves every listed hold of an order (capture, release or return) in one transaction, in
    /// reservation order. For moves outside an outcome: a
    /// rejection, a resumed paid order, reconciliation's releases.
    #[activity(name = "order.settle_holds")]
    pub fn settle_holds(input: SettleHolds) -> Result<(), ActivityError> {
        unimplemented!()
    }
    /// `pending_payment -> paid` and every capture, in one transaction.
    #[activity(name = "order.pay")]
    pub fn pay_order(input: PayOrder) -> Result<(), ActivityError> {
        unimplemented!()
    }
    /// `pending_payment -> cancelled` and every release, in one transaction.
    #[activity(name = "order.cancel")]
    pub fn cancel_order(input: CancelOrder) -> Result<(), ActivityError> {
        unimplemented!()
    }
    /// `paid | fulfilled -> cancelled`, the payment owed back, and every return (wallet, stock,
    /// coupon, points), in one transaction.
    #[activity(name = "order.cancel_paid")]
    pub fn cancel_paid_order(input: CancelOrder) -> Result<(), ActivityError> {
        unimplemented!()
    }
    /// Shows an order that stopped on a permanent error to ops: the `needs_attention` row, an
    /// order event, the audit and the metric.
    #[activity(name = "order.needs_attention")]
    pub fn raise_attention(input: NeedsAttention) -> Result<(), ActivityError> {
        unimplemented!()
    }
    /// Ops asked for a retry: the row is resolved (raised again if the retry stops too).
    #[activity(name = "order.attention_resolved")]
    pub fn resolve_attention(input: AttentionResolved) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Asks the provider for a checkout session (idempotent on `checkout-{order_id}-{attempt}`).
    #[activity(name = "payment.open_checkout")]
    pub fn open_checkout(input: OpenCheckout) -> Result<ProviderSession, ActivityError> {
        unimplemented!()
    }
    /// Ends the order's checkout sessions that are still open at the provider, and records
    /// each as `expired` (or `paid`, if its payment beat the expiry). Returns how many it ended.
    #[activity(name = "payment.expire_checkouts")]
    pub fn expire_checkouts(input: ExpireCheckouts) -> Result<u32, ActivityError> {
        unimplemented!()
    }
    /// Stores the session and moves `expires_at` to the session's deadline.
    #[activity(name = "order.record_checkout")]
    pub fn record_checkout(input: RecordCheckout) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Step 1 since refunds are exactly-once on our own record: records the payment as owed
    /// back and a `pending` refund row if there is none, and answers what the row says: call
    /// the provider (with the attempt's key), or the outcome it already has. Never calls out.
    #[activity(name = "refund.begin")]
    pub fn begin_refund(input: RefundPayment) -> Result<RefundBegun, ActivityError> {
        unimplemented!()
    }
    /// Step 2: asks the provider to refund, with the idempotency key `refund-{payment_id}`. An
    /// authorization (`capture_before_ms`) is voided first (`void-{payment_id}`), and refunded
    /// only if the provider answers that it is captured already. Transient errors are retried;
    /// a refusal is a value, so that step 3 records it.
    #[activity(name = "refund.call_provider")]
    pub fn call_provider_refund(input: RefundPayment) -> Result<RefundOutcome, ActivityError> {
        unimplemented!()
    }
    /// Captures the authorization that paid an order (`capture-{payment_id}`) and records it
    /// on the payment's row. A refusal (voided, lapsed) is a value, for the workflow to act on.
    #[activity(name = "order.capture_authorization")]
    pub fn capture_authorization(
        input: CaptureAuthorization,
    ) -> Result<CaptureOutcome, ActivityError> {
        unimplemented!()
    }
    /// Step 3: `pending -> succeeded | failed`.
    #[activity(name = "refund.record_result")]
    pub fn record_refund_result(input: RecordRefundResult) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// A partial refund's step 1: what its row says (call the provider with the payment's
    /// share, settle without it, or the outcome it already has). Never calls out.
    #[activity(name = "order_refund.begin")]
    pub fn begin_order_refund(input: OrderRefundRef) -> Result<OrderRefundBegun, ActivityError> {
        unimplemented!()
    }
    /// A partial refund's last step, in one transaction: `pending -> succeeded | failed`, and
    /// on success the wallet, points and coupon shares given back.
    #[activity(name = "order_refund.finish")]
    pub fn finish_order_refund(input: RecordOrderRefund) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Grants what a paid order bought: entitlements, or a pending shipment. A quota violation
    /// here (the final safeguard) is a non-retryable business error.
    #[activity(name = "order.fulfil")]
    pub fn fulfil(input: OrderAt) -> Result<Fulfilment, ActivityError> {
        unimplemented!()
    }
    /// Shipment `pending -> shipped`, order `paid -> fulfilled`.
    #[activity(name = "order.mark_shipped")]
    pub fn mark_shipped(input: OrderAt) -> Result<(), ActivityError> {
        unimplemented!()
    }
    /// Intercepts the pending shipment and revokes the order's entitlements.
    #[activity(name = "order.stop_fulfilment")]
    pub fn stop_fulfilment(input: OrderAt) -> Result<(), ActivityError> {
        unimplemented!()
    }

    /// Redeems a code for a user, at most once, never beyond `max_uses`.
    #[activity(name = "redemption.redeem")]
    pub fn redeem(input: RedeemCode) -> Result<RedemptionOutcome, ActivityError> {
        unimplemented!()
    }

    /// Finds orders whose row and workflow disagree (asks Temporal about each candidate).
    #[activity(name = "reconcile.find_suspects")]
    pub fn find_suspects(input: ReconcileInput) -> Result<Vec<Suspect>, ActivityError> {
        unimplemented!()
    }
    /// Reads an order back for a resumed workflow: status, amounts, holds, payments.
    #[activity(name = "order.load")]
    pub fn load_order(input: OrderRef) -> Result<LoadedOrder, ActivityError> {
        unimplemented!()
    }
    /// Starts the order's workflow again from the database (its previous run is gone): a
    /// pending order waits again, a paid one is fulfilled. A running one is left alone.
    #[activity(name = "reconcile.resume_order")]
    pub fn resume_order(input: OrderRef) -> Result<(), ActivityError> {
        unimplemented!()
    }
    /// Records what reconciliation did, once per run and order and action.
    #[activity(name = "reconcile.record")]
    pub fn record_reconciliation(input: ReconcileEntry) -> Result<(), ActivityError> {
        unimplemented!()
    }
    /// Records a payment its order could not take (`payment_decisions`, state `holding`), and
    /// answers when its decision is due; `None` if it is decided already.
    #[activity(name = "payment.hold")]
    pub fn hold_payment(input: StrayPayment) -> Result<Option<i64>, ActivityError> {
        unimplemented!()
    }
    /// Decides a held payment from the provider's record and ours: hand it to its order's
    /// running workflow (this activity signals it), refund it, or look again later.
    #[activity(name = "payment.decide")]
    pub fn decide_payment(input: StrayPayment) -> Result<PaymentVerdict, ActivityError> {
        unimplemented!()
    }
    /// Records how a held payment's decision ended.
    #[activity(name = "payment.record_decision")]
    pub fn record_payment_decision(input: PaymentDecided) -> Result<(), ActivityError> {
        unimplemented!()
    }
    /// Hands on every inbox event received before `before_ms` and still unprocessed, exactly as
    /// the webhook would have, and every payment the provider captured before then that
    /// orderflow never heard of. Returns how many.
    #[activity(name = "reconcile.redrive_inbox")]
    pub fn redrive_inbox(input: RedriveInbox) -> Result<u64, ActivityError> {
        unimplemented!()
    }
    /// Deletes processed webhook-inbox rows past their retention. Returns how many.
    #[activity(name = "reconcile.purge_inbox")]
    pub fn purge_inbox(input: PurgeInbox) -> Result<u64, ActivityError> {
        unimplemented!()
    }

    /// The benchmark's bare workflow's one step: does nothing, touches nothing.
    #[activity(name = "bench.baseline_step")]
    pub fn baseline_step(signalled: bool) -> Result<(), ActivityError> {
        unimplemented!()
    }
}

/// The marker types of the contract, for `#[activity(definition = markers::ReserveStock)]`.
pub mod markers {
    pub use super::order_activities::*;
}
