//! Step 4: the order at rest. Every payment that did not pay for it (late, duplicate, wrong
//! amount) is refunded by its `refund-{payment_id}` child, through the late-payment grace
//! window; a cancel of a paid order that is still due is carried out; then the run ends.
//!
//! A payment is never acknowledged and then dropped: the last look at the payments is the last
//! thing before returning. A signal that lands in the same workflow task is seen, and one that
//! lands later makes the server reject the completion, so the next task sees it.

use super::{AUTHORIZE_THEN_CAPTURE, OrderWorkflow, Phase, fulfil};
use crate::decide;
use crate::model::*;
use crate::policy::now_ms;
use crate::refund::RefundWorkflow;
use crate::refund_workflow_id;
use temporalio_sdk::{
    ApplicationFailure, ChildWorkflowOptions, ChildWorkflowStartError,
    StartChildWorkflowExecutionFailedCause, WorkflowContext, WorkflowResult,
};

/// Rests until the grace window after the order came to rest is over (none for a rejected
/// order; none starts while a shipment waits), refunding and undoing as needed; then ends.
pub(super) async fn rest(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
) -> WorkflowResult<OrderStatus> {
    let mut handled = 0;
    loop {
        let status = ctx.state(|s| s.status);
        refund_unapplied(ctx, status, &mut handled).await?;
        if let Some(reason) = ctx.state(|s| s.cancel_due()) {
            fulfil::compensate(ctx, held, reason).await?;
            continue;
        }
        let now = now_ms(ctx)?;
        let authorization_due = match ctx.state(|s| s.authorization_due_ms()) {
            Some(due) if ctx.patched(AUTHORIZE_THEN_CAPTURE) => Some(due),
            _ => None,
        };
        if authorization_due.is_some_and(|due| now >= due) {
            fulfil::authorization_expiring(ctx).await?;
            continue;
        }
        let (phase, grace_ms) = ctx.state(|s| {
            let grace = match s.status {
                OrderStatus::Rejected => 0,
                _ => s.grace_ms(),
            };
            (s.phase.clone(), grace)
        });
        let grace_end = match phase {
            Phase::Grace { since_ms, .. } => Some(since_ms.saturating_add(grace_ms)),
            Phase::Closing { .. } => Some(i64::MIN),
            _ => None,
        };
        match grace_end {
            Some(end) if now >= end => {
                ctx.state_mut(|s| {
                    let shipped = s.shipping_or_shipped();
                    s.phase = Phase::Closing { shipped };
                });
                ctx.wait_condition(|s: &OrderWorkflow| s.open_handlers == 0)
                    .await?;
                if ctx.state(|s| s.payments.len()) == handled {
                    return Ok(ctx.state(|s| s.status));
                }
            }
            _ => {
                let woken = move |s: &OrderWorkflow| {
                    s.payments.len() > handled
                        || s.phase != phase
                        || s.cancel_due().is_some()
                        || (authorization_due.is_some() && s.authorization.is_none())
                };
                match grace_end.or(authorization_due) {
                    Some(end) => {
                        temporalio_sdk::workflows::select! {
                            _ = ctx.timer(decide::until(now, end)) => {}
                            _ = ctx.wait_condition(woken) => {}
                        }
                    }
                    None => ctx.wait_condition(woken).await?,
                }
            }
        }
    }
}

/// Refunds every payment received since `handled` that did not pay for the order, and moves
/// `handled` past them.
async fn refund_unapplied(
    ctx: &WorkflowContext<OrderWorkflow>,
    status: OrderStatus,
    handled: &mut usize,
) -> WorkflowResult<()> {
    let (applied, pending) = ctx.state(|s| {
        (
            s.applied_payment.clone(),
            s.payments[(*handled).min(s.payments.len())..].to_vec(),
        )
    });
    for payment in pending {
        *handled += 1;
        if applied.as_deref() != Some(payment.payment_id.as_str()) {
            refund(ctx, status, payment, None).await?;
        }
    }
    Ok(())
}

/// Refunds a payment through its `refund-{payment_id}` child and waits for the outcome. If
/// that workflow already exists (another run refunds, or refunded, this payment), the refund
/// row says which and how it ended: the steps run here, exactly once on that row.
pub(super) async fn refund(
    ctx: &WorkflowContext<OrderWorkflow>,
    status: OrderStatus,
    payment: PaymentReceived,
    reason: Option<&str>,
) -> WorkflowResult<()> {
    let (order_id, user_id, payable, currency) = ctx.state(|s| {
        (
            s.input.order_id.clone(),
            s.input.user_id.clone(),
            s.amounts.payable,
            s.input.currency.clone(),
        )
    });
    let reason =
        reason.unwrap_or_else(|| decide::refund_reason(status, &payment, payable, &currency));
    let workflow_id = refund_workflow_id(&payment.payment_id);
    let request = RefundPayment {
        order_id,
        user_id,
        payment,
        reason: reason.to_owned(),
        requested_at_ms: now_ms(ctx)?,
        idempotency_key: None,
    };
    let options = ChildWorkflowOptions::builder()
        .workflow_id(workflow_id.clone())
        .id_reuse_policy(temporalio_sdk::WorkflowIdReusePolicy::RejectDuplicate)
        .parent_close_policy(temporalio_sdk::ParentClosePolicy::Abandon)
        .build();
    match ctx
        .start_child_workflow(RefundWorkflow::run, request.clone(), options)
        .await
    {
        Ok(started) => {
            started.result().await.map_err(|e| {
                ApplicationFailure::non_retryable(format!(
                    "refund workflow {workflow_id} failed and needs an operator: {e}"
                ))
            })?;
            Ok(())
        }
        Err(ChildWorkflowStartError::StartFailed {
            cause: StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
            ..
        }) => {
            crate::refund::refund_payment(ctx, request).await?;
            Ok(())
        }
        Err(e) => Err(ApplicationFailure::new(format!(
            "cannot start refund workflow {workflow_id}: {e}"
        ))
        .into()),
    }
}
