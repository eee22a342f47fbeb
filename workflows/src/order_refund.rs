//! `OrderRefundWorkflow` (`order-refund-{refund_id}`): one partial refund of a paid order, an
//! admin's (an amount or some lines) or a received return's, exactly once.
//!
//! The API records the refund `pending`, with its split over what paid the order, before it
//! starts this workflow; the row is the truth, as for whole refunds (`refund.rs`). Three steps:
//! 1. `order_refund.begin`: what the row says (the payment's share to ask for, no share, or an
//!    outcome it already has);
//! 2. the provider call, the same activity whole refunds use, with the payment's share as its
//!    amount and the row's own idempotency key (`order-refund-{refund_id}`), retried until the
//!    provider answers;
//! 3. `order_refund.finish`: the outcome, and on success the wallet, points and coupon shares
//!    given back, in one transaction.
//!
//! Deterministic code only (see `order/mod.rs`).

use crate::contract::OrderActivities;
use crate::model::{OrderRefundBegun, OrderRefundRef, RecordOrderRefund, RefundOutcome};
use crate::policy::{now_ms, provider_options, settle_options};
use crate::search;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowContextView, WorkflowResult};

#[workflow]
pub struct OrderRefundWorkflow {
    request: OrderRefundRef,
}

#[workflow_methods]
impl OrderRefundWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, request: OrderRefundRef) -> Self {
        OrderRefundWorkflow { request }
    }

    #[run(name = "order_refund")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<Option<RefundOutcome>> {
        let request = ctx.state(|s| s.request.clone());
        publish(ctx, &request, "partial_refund_pending");
        let begun = ctx
            .execute_activity(
                OrderActivities::begin_order_refund,
                request.clone(),
                settle_options(),
            )
            .await?;
        let outcome = match begun {
            OrderRefundBegun::Done(outcome) => {
                publish(ctx, &request, status(Some(&outcome)));
                return Ok(Some(outcome));
            }
            OrderRefundBegun::NoProviderShare => None,
            // A payment taken offline is given back outside orderflow: the refund says so.
            OrderRefundBegun::Call(call) => match crate::refund::offline(&call) {
                Some(refused) => Some(refused),
                None => Some(
                    ctx.execute_activity(
                        OrderActivities::call_provider_refund,
                        call,
                        provider_options(),
                    )
                    .await?,
                ),
            },
        };
        let result = RecordOrderRefund {
            refund_id: request.refund_id.clone(),
            order_id: request.order_id.clone(),
            outcome: outcome.clone(),
            at_ms: now_ms(ctx)?,
        };
        ctx.execute_activity(
            OrderActivities::finish_order_refund,
            result,
            settle_options(),
        )
        .await?;
        publish(ctx, &request, status(outcome.as_ref()));
        Ok(outcome)
    }
}

/// The `OrderStatus` search attribute a partial refund ends with.
fn status(outcome: Option<&RefundOutcome>) -> &'static str {
    match outcome {
        Some(RefundOutcome::Failed { .. }) => "partial_refund_failed",
        _ => "partially_refunded",
    }
}

/// Search attributes: `OrderStatus` is the refund's step; `OrderId` finds it from its order.
fn publish(ctx: &WorkflowContext<OrderRefundWorkflow>, request: &OrderRefundRef, status: &str) {
    ctx.upsert_search_attributes(vec![
        search::ORDER_STATUS.value_set(status.to_owned()),
        search::ORDER_ID.value_set(request.order_id.clone()),
    ]);
}
