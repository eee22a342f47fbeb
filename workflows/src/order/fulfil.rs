//! Step 3 of a paid order: fulfil it (an entitlement, or a shipment the admin ships), or undo
//! it (a cancel before shipping, a fulfilment that failed for good).
//!
//! Exactly one of ship and cancel wins: each checks and sets the phase in one step. Undoing a
//! paid order commits its status and every return in one transaction (`order.cancel_paid`),
//! then refunds the payment exactly once on its refund row.

use super::{
    AUTHORIZE_THEN_CAPTURE, HandlerError, OrderWorkflow, Phase, at_rest, publish, refunds,
};
use crate::contract::OrderActivities;
use crate::model::*;
use crate::policy::{DbStep, db_step, now_ms, provider_options, settle_options};
use crate::refusal::{RefusalCode, Refused};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// Fulfils a paid order, unless a cancel is already waiting: a digital order is `fulfilled` at
/// once and rests; a physical one waits for its shipment; one that cannot be fulfilled is
/// undone (`fulfilment_failed`).
pub(super) async fn fulfil(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
) -> WorkflowResult<()> {
    let order_id = ctx.state_mut(|s| {
        s.phase = Phase::Fulfilling;
        s.input.order_id.clone()
    });
    let at_ms = now_ms(ctx)?;
    if ctx.state(|s| s.cancel_request.is_some()) {
        // Undone by the rest that follows, before anything is granted or shipped.
        ctx.state_mut(|s| {
            s.phase = Phase::Grace {
                since_ms: at_ms,
                shipped: false,
            }
        });
        return Ok(());
    }
    let fulfilled = ctx
        .execute_activity(
            OrderActivities::fulfil,
            OrderAt { order_id, at_ms },
            settle_options(),
        )
        .await;
    match fulfilled {
        Ok(f) if f.needs_shipping => {
            ctx.state_mut(|s| s.phase = Phase::AwaitingShipment { shipping: false });
        }
        Ok(_) => at_rest(ctx, OrderStatus::Fulfilled, now_ms(ctx)?, false),
        // Retries are unlimited: an error here is a business failure, for good.
        Err(_) => compensate(ctx, held, CancelReason::FulfilmentFailed).await?,
    }
    Ok(())
}

/// `order.ship`: waits for fulfilment to say what ships, then ships it, unless a cancel got in
/// first.
pub(super) async fn ship(
    ctx: &WorkflowContext<OrderWorkflow>,
) -> Result<OrderStatus, HandlerError> {
    let _ = ctx
        .wait_condition(|s: &OrderWorkflow| {
            s.cancel_request.is_some()
                || !matches!(
                    s.phase,
                    Phase::Reserving
                        | Phase::AwaitingPayment(_)
                        | Phase::Settling
                        | Phase::Fulfilling
                )
        })
        .await;
    let refusal = ctx.state_mut(|s| {
        let refusal = s.ship_refusal();
        if refusal.is_none() {
            s.phase = Phase::AwaitingShipment { shipping: true };
        }
        refusal
    });
    if let Some(refused) = refusal {
        return Err(refused.into());
    }
    // An authorized payment is captured before the goods leave; if the provider refuses, they
    // do not leave, and the order is undone (its authorization voided).
    if ctx.state(|s| s.authorization.is_some()) && ctx.patched(AUTHORIZE_THEN_CAPTURE) {
        if let Some(refused) = capture(ctx).await? {
            ctx.state_mut(|s| s.phase = Phase::AwaitingShipment { shipping: false });
            return Err(refused.into());
        }
    }
    let at_ms = now_ms(ctx)?;
    let order_id = ctx.state(|s| s.input.order_id.clone());
    let shipped = db_step(
        ctx,
        OrderActivities::mark_shipped,
        OrderAt { order_id, at_ms },
        DbStep::Outcome,
    )
    .await;
    if let Err(e) = shipped {
        ctx.state_mut(|s| s.phase = Phase::AwaitingShipment { shipping: false });
        return Err(e.into());
    }
    at_rest(ctx, OrderStatus::Fulfilled, at_ms, true);
    Ok(OrderStatus::Fulfilled)
}

/// Captures the order's authorization (key `capture-{payment_id}`, so that a ship and the
/// expiry timer capturing at once capture once), and forgets it. If the provider refuses for
/// good, the order is to be undone (`capture_failed`), and the refusal says why.
pub(super) async fn capture(
    ctx: &WorkflowContext<OrderWorkflow>,
) -> WorkflowResult<Option<Refused>> {
    let Some((order_id, auth)) = ctx.state(|s| {
        let auth = s.authorization.clone()?;
        Some((s.input.order_id.clone(), auth))
    }) else {
        return Ok(None);
    };
    let request = CaptureAuthorization {
        order_id,
        payment_id: auth.payment_id,
        at_ms: now_ms(ctx)?,
    };
    let outcome = ctx
        .execute_activity(
            OrderActivities::capture_authorization,
            request,
            provider_options(),
        )
        .await?;
    Ok(match outcome {
        CaptureOutcome::Captured => {
            ctx.state_mut(|s| s.authorization = None);
            None
        }
        CaptureOutcome::Refused { code, message } => {
            ctx.state_mut(|s| {
                s.cancel_request.get_or_insert(CancelReason::CaptureFailed);
            });
            Some(Refused::new(
                RefusalCode::OrderNotShippable,
                format!(
                    "the provider refused to capture the payment ({code}: {message}); the order is cancelled"
                ),
            ))
        }
    })
}

/// The authorization nears its `capture_before` and the goods have not left: capture it, or
/// void it by cancelling the order, as the deployment says (`ORDER_AUTHORIZATION_EXPIRY`).
/// Never left to lapse silently.
pub(super) async fn authorization_expiring(
    ctx: &WorkflowContext<OrderWorkflow>,
) -> WorkflowResult<()> {
    let on_expiry = ctx.state(|s| s.input.capture.unwrap_or_default().on_expiry);
    match on_expiry {
        AuthorizationExpiry::Capture => {
            capture(ctx).await?;
        }
        AuthorizationExpiry::Void => ctx.state_mut(|s| {
            s.cancel_request
                .get_or_insert(CancelReason::AuthorizationExpiring);
        }),
    }
    Ok(())
}

/// Undoes a paid order: stop fulfilment (intercept the shipment, revoke entitlements), mark it
/// cancelled with every return (wallet, stock, coupon, points) in one transaction, then refund
/// the payment. Every step is idempotent and retried until it succeeds. The order then rests.
pub(super) async fn compensate(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
    reason: CancelReason,
) -> WorkflowResult<()> {
    let order_id = ctx.state_mut(|s| {
        s.phase = Phase::Compensating;
        s.input.order_id.clone()
    });
    let at_ms = now_ms(ctx)?;
    ctx.execute_activity(
        OrderActivities::stop_fulfilment,
        OrderAt {
            order_id: order_id.clone(),
            at_ms,
        },
        settle_options(),
    )
    .await?;
    let outcome = CancelOrder::new(order_id, reason, at_ms, held);
    db_step(
        ctx,
        OrderActivities::cancel_paid_order,
        outcome,
        DbStep::Outcome,
    )
    .await?;
    ctx.state_mut(|s| s.status = OrderStatus::Cancelled);
    publish(ctx, OrderStatus::Cancelled, None);
    let applied = ctx.state(|s| {
        s.applied_payment
            .as_ref()
            .and_then(|id| s.payments.iter().find(|p| &p.payment_id == id).cloned())
    });
    if let Some(payment) = applied {
        let why = match reason {
            CancelReason::FulfilmentFailed => "fulfilment_failed",
            _ => "order_cancelled",
        };
        refunds::refund(ctx, OrderStatus::Cancelled, payment, Some(why)).await?;
    }
    let now = now_ms(ctx)?;
    ctx.state_mut(|s| {
        s.phase = Phase::Grace {
            since_ms: now,
            shipped: false,
        }
    });
    Ok(())
}
