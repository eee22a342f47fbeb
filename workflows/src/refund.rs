//! `RefundWorkflow` (`refund-{payment_id}`): gives one payment back, exactly once.
//!
//! Started by an order workflow (as a child, for payments that arrive while it is open) or by
//! the API (for payments that arrive after it closed). Both use the same workflow id with a
//! reuse policy that rejects duplicates, so one payment has one refund workflow, ever. Inside,
//! three steps, each idempotent on the payment:
//! 1. `refund.begin`: record a `pending` refund row (and the payment as owed back) before any
//!    money moves, or answer what the row already says;
//! 2. call the provider with the idempotency key `refund-{payment_id}`; transient errors and
//!    timeouts are retried with backoff, and a retry after a timeout that followed a success
//!    gets the same refund back, not a second one;
//! 3. record `succeeded` or `failed`.
//!
//! The refund row is the truth: a refund already `succeeded` or `failed` never calls the provider again,
//! whatever Temporal remembers (a second run after the first one's history is gone, a
//! terminated run, an order workflow and a payment decision both refunding one payment); a
//! `pending` one resumes with its attempt's key. [`refund_payment`] is those steps, run by this
//! workflow, by the order workflow when `refund-{payment_id}` already exists, and by the
//! `payment-{payment_id}` decision.
//!
//! Deterministic code only (see `order/mod.rs`).

use crate::contract::OrderActivities;
use crate::model::{RecordRefundResult, RefundBegun, RefundOutcome, RefundPayment};
use crate::policy::{now_ms, provider_options, settle_options};
use crate::search;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowContextView, WorkflowResult};

#[workflow]
pub struct RefundWorkflow {
    request: RefundPayment,
}

#[workflow_methods]
impl RefundWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, request: RefundPayment) -> Self {
        RefundWorkflow { request }
    }

    #[run(name = "refund")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<RefundOutcome> {
        let request = ctx.state(|s| s.request.clone());
        publish(ctx, &request, "refund_pending");
        let outcome = refund_payment(ctx, request.clone()).await?;
        publish(ctx, &request, outcome_status(outcome.as_ref()));
        Ok(outcome.unwrap_or(RefundOutcome::Failed {
            code: "payment_applied".into(),
            message: "the payment paid its order: nothing to refund".into(),
        }))
    }
}

/// The `OrderStatus` a refund ends with.
fn outcome_status(outcome: Option<&RefundOutcome>) -> &'static str {
    match outcome {
        Some(RefundOutcome::Succeeded { .. }) => "refunded",
        Some(RefundOutcome::Failed { .. }) => "refund_failed",
        None => "refund_not_needed",
    }
}

/// The three steps of a refund, exactly once on the refund row (see the module doc). Returns
/// the outcome, or `None` if the payment turned out to have paid its order.
pub async fn refund_payment<W>(
    ctx: &WorkflowContext<W>,
    mut request: RefundPayment,
) -> WorkflowResult<Option<RefundOutcome>> {
    let begun = ctx
        .execute_activity(
            OrderActivities::begin_refund,
            request.clone(),
            settle_options(),
        )
        .await?;
    let outcome = match begun {
        RefundBegun::Applied => return Ok(None),
        RefundBegun::Done(outcome) => return Ok(Some(outcome)),
        RefundBegun::Call { idempotency_key } => {
            request.idempotency_key = Some(idempotency_key);
            match offline(&request) {
                Some(refused) => refused,
                None => call_provider(ctx, &request).await?,
            }
        }
    };
    record_result(ctx, &request, &outcome).await?;
    Ok(Some(outcome))
}

/// An admin order paid offline was never paid through the provider: the money goes back
/// outside orderflow, and the refund says so (`refund_failed`, for ops).
pub(crate) fn offline(request: &RefundPayment) -> Option<RefundOutcome> {
    request
        .payment
        .payment_id
        .starts_with("offline-")
        .then(|| RefundOutcome::Failed {
            code: "offline_payment".into(),
            message: "paid offline: return the money outside orderflow".into(),
        })
}

/// Step 2: the provider call, retried with the request's idempotency key.
async fn call_provider<W>(
    ctx: &WorkflowContext<W>,
    request: &RefundPayment,
) -> WorkflowResult<RefundOutcome> {
    Ok(ctx
        .execute_activity(
            OrderActivities::call_provider_refund,
            request.clone(),
            provider_options(),
        )
        .await?)
}

/// Step 3: the outcome on the refund row.
async fn record_result<W>(
    ctx: &WorkflowContext<W>,
    request: &RefundPayment,
    outcome: &RefundOutcome,
) -> WorkflowResult<()> {
    let result = RecordRefundResult {
        order_id: request.order_id.clone(),
        payment_id: request.payment.payment_id.clone(),
        outcome: outcome.clone(),
        at_ms: now_ms(ctx)?,
    };
    ctx.execute_activity(
        OrderActivities::record_refund_result,
        result,
        settle_options(),
    )
    .await?;
    Ok(())
}

/// Search attributes: `OrderStatus` is the refund's step; `OrderId` and `CustomerId` find it.
fn publish(ctx: &WorkflowContext<RefundWorkflow>, request: &RefundPayment, status: &str) {
    ctx.upsert_search_attributes(vec![
        search::ORDER_STATUS.value_set(status.to_owned()),
        search::ORDER_ID.value_set(request.order_id.clone()),
        search::CUSTOMER_ID.value_set(request.user_id.clone()),
    ]);
}
