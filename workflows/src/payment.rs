//! `PaymentDecisionWorkflow` (`payment-{payment_id}`): one durable decision for a payment that
//! its order could not take, so that no captured payment depends on its order workflow being
//! alive.
//!
//! The webhook (and the inbox re-drive) signal-with-start it for a payment whose order is
//! unknown, whose order is not the one the payment was made for, whose amount or currency is
//! not the order's, or whose order workflow is closed or missing. It then:
//! 1. records the payment as held (`payment_decisions`), so the audit sees an owner for it;
//! 2. waits until the decision is due: at once, or after the unknown-order hold (a payment
//!    may race its own order's creation);
//! 3. decides from the provider's record and ours: hand it to its order's running workflow
//!    (which applies it), refund it (the refund steps of `refund.rs`, exactly once on the
//!    refund row), or look again later (a pending order whose workflow is gone waits for
//!    reconciliation, which pays the order with this payment);
//! 4. records the decision.
//!
//! A run after a finished one (a redelivered event, a re-drive) re-reads the truth: a payment
//! already refunded is never refunded again. Deterministic code only (see `order/mod.rs`).

use crate::contract::OrderActivities;
use crate::decide::{secs_to_ms, until};
use crate::model::{PaymentDecided, PaymentVerdict, RefundOutcome, StrayPayment};
use crate::policy::{now_ms, settle_options};
use crate::refund::refund_payment;
use crate::search;
use std::time::Duration;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult};

/// How often a decision that must wait looks again, at most.
const MAX_WAIT_SECS: u64 = 300;

#[workflow]
pub struct PaymentDecisionWorkflow {
    input: StrayPayment,
}

#[workflow_methods]
impl PaymentDecisionWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: StrayPayment) -> Self {
        PaymentDecisionWorkflow { input }
    }

    /// The same payment reported again (a redelivery, a re-drive): the decision in progress
    /// covers it, so there is nothing to record. It exists for signal-with-start.
    #[signal(name = "payment.reported")]
    pub fn reported(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _again: StrayPayment) {}

    #[run(name = "payment_decision")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<String> {
        let input = ctx.state(|s| s.input.clone());
        publish(ctx, &input, "payment_held");
        let due = ctx
            .execute_activity(
                OrderActivities::hold_payment,
                input.clone(),
                settle_options(),
            )
            .await?;
        let Some(due_ms) = due else {
            publish(ctx, &input, "payment_decided");
            return Ok("decided_before".into());
        };
        let now = now_ms(ctx)?;
        if now < due_ms {
            ctx.timer(until(now, due_ms)).await;
        }
        let (state, detail) = loop {
            let verdict = ctx
                .execute_activity(
                    OrderActivities::decide_payment,
                    input.clone(),
                    settle_options(),
                )
                .await?;
            match verdict {
                PaymentVerdict::Applied { detail } => break ("applied", detail),
                PaymentVerdict::NothingToDo { detail } => break ("nothing_to_do", detail),
                PaymentVerdict::Wait { secs, .. } => {
                    let secs = secs.clamp(1, MAX_WAIT_SECS);
                    ctx.timer(Duration::from_millis(secs_to_ms(secs) as u64))
                        .await;
                }
                PaymentVerdict::Refund(request) => {
                    let reason = request.reason.clone();
                    break match refund_payment(ctx, request).await? {
                        Some(RefundOutcome::Succeeded {
                            provider_refund_id, ..
                        }) => (
                            "refunded",
                            format!("{reason}: refunded as {provider_refund_id}"),
                        ),
                        Some(RefundOutcome::Failed { code, message }) => (
                            "refund_failed",
                            format!("{reason}: the provider refused the refund: {code}: {message}"),
                        ),
                        None => ("applied", "it paid its order after all".to_owned()),
                    };
                }
            }
        };
        let decided = PaymentDecided {
            payment_id: input.payment.payment_id.clone(),
            state: state.to_owned(),
            detail,
            at_ms: now_ms(ctx)?,
        };
        ctx.execute_activity(
            OrderActivities::record_payment_decision,
            decided,
            settle_options(),
        )
        .await?;
        publish(ctx, &input, &format!("payment_{state}"));
        Ok(state.to_owned())
    }
}

/// Search attributes: `OrderStatus` is the decision's step; `OrderId` finds it from its order.
fn publish(ctx: &WorkflowContext<PaymentDecisionWorkflow>, input: &StrayPayment, step: &str) {
    ctx.upsert_search_attributes(vec![
        search::ORDER_STATUS.value_set(step.to_owned()),
        search::ORDER_ID.value_set(input.order_id.clone()),
    ]);
}
