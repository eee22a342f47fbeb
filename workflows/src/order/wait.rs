//! Step 2 of a pending order: the wait for a payment, a cancel or the deadline, the checkout
//! session that moves the deadline, and the outcome committed in one transaction.
//!
//! The deadline is data in [`Waiting`], not a timer: a checkout moves it (bumping its version)
//! and the wait re-arms. Never commits an outcome but through `order.pay` and `order.cancel`,
//! each one transaction with every hold move.

use super::{HandlerError, OrderWorkflow, Phase, at_rest, publish, publish_step};
use crate::contract::OrderActivities;
use crate::decide::{self, Wake};
use crate::model::*;
use crate::policy::{DbStep, checkout_options, db_step, now_ms, provider_options};
use crate::refusal::{RefusalCode, Refused};
use std::time::Duration;
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// Waits until a payment pays the order, a cancel is asked for, or the deadline passes; the
/// order is then `Settling`.
pub(super) async fn wait_for_payment(ctx: &WorkflowContext<OrderWorkflow>) -> WorkflowResult<Wake> {
    loop {
        let now = now_ms(ctx)?;
        let (wake, deadline, version) = ctx.state(|s| {
            let w = s.waiting();
            (s.wake(now), w.map(|w| w.deadline_ms), w.map(|w| w.version))
        });
        if wake != Wake::Wait {
            if matches!(wake, Wake::Pay(_)) && deadline.is_some_and(|d| now >= d) {
                let order_id = ctx.state(|s| s.input.order_id.clone());
                crate::sometimes::reached(
                    crate::sometimes::PAYMENT_AND_DEADLINE_TOGETHER,
                    &order_id,
                );
            }
            ctx.state_mut(|s| {
                s.checkout_tried = s.waiting().is_some_and(|w| w.attempts > 0);
                s.phase = Phase::Settling;
            });
            return Ok(wake);
        }
        let remaining = deadline.map_or(Duration::from_secs(3600), |d| decide::until(now, d));
        temporalio_sdk::workflows::select! {
            _ = ctx.timer(remaining) => {}
            _ = ctx.wait_condition(|s: &OrderWorkflow| {
                s.waiting().map(|w| w.version) != version || s.wake(i64::MIN) != Wake::Wait
            }) => {}
        }
    }
}

/// `pending_payment -> paid`: the payment recorded and every hold captured, in one transaction.
pub(super) async fn pay(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
    payment: Option<PaymentReceived>,
) -> WorkflowResult<()> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    let applied = payment.as_ref().map(|p| p.payment_id.clone());
    let authorization = payment.as_ref().and_then(super::Authorization::of);
    let outcome = PayOrder {
        paid: MarkPaid {
            order_id,
            payment,
            at_ms: now_ms(ctx)?,
        },
        held: held.to_vec(),
    };
    db_step(ctx, OrderActivities::pay_order, outcome, DbStep::Outcome).await?;
    ctx.state_mut(|s| {
        s.status = OrderStatus::Paid;
        s.phase = Phase::Settling;
        s.applied_payment = applied;
        s.authorization = authorization;
    });
    publish(ctx, OrderStatus::Paid, None);
    Ok(())
}

/// `pending_payment -> cancelled` and every release, in one transaction (the status first: no
/// payment can apply from then on). The order then rests.
pub(super) async fn cancel(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
    reason: CancelReason,
) -> WorkflowResult<()> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    let checkout_tried = ctx.state(|s| s.checkout_tried);
    let at_ms = now_ms(ctx)?;
    let outcome = CancelOrder::new(order_id.clone(), reason, at_ms, held);
    db_step(ctx, OrderActivities::cancel_order, outcome, DbStep::Outcome).await?;
    at_rest(ctx, OrderStatus::Cancelled, at_ms, false);
    if checkout_tried && ctx.patched(SESSIONS_END_WITH_ORDER) {
        // A payer still on the checkout page can no longer pay a cancelled order. If the
        // provider refuses for good, the sessions still end at their own `expires_at` (the
        // deadline), and a payment that slips through is refunded like any late one.
        let expire = ExpireCheckouts { order_id, at_ms };
        let _ = ctx
            .execute_activity(
                OrderActivities::expire_checkouts,
                expire,
                provider_options(),
            )
            .await;
    }
    Ok(())
}

/// The patch under which checkout sessions end with their order (issue 14): a session is
/// opened with the order's deadline as its `expires_at`, and a cancel expires the sessions
/// still open. Histories recorded before it open sessions without one and expire nothing.
pub const SESSIONS_END_WITH_ORDER: &str = "sessions-end-with-order";

/// Opens a checkout session (see `OrderWorkflow::checkout`). The deadline moves *before* the
/// provider is called, in the same workflow task that accepted the update: the timer cannot
/// fire between the acceptance and the extension.
pub(super) async fn open_checkout(
    ctx: &WorkflowContext<OrderWorkflow>,
    _request: CheckoutRequest,
) -> Result<CheckoutSession, HandlerError> {
    let now = now_ms(ctx)?;
    let not_payable =
        |why: &str| -> HandlerError { Refused::new(RefusalCode::OrderNotPayable, why).into() };
    let window = ctx.state(|s| s.checkout_window_secs());
    match ctx.state(|s| s.waiting().map(|w| w.deadline_ms)) {
        Some(d) if now < d => {}
        Some(_) => return Err(not_payable("the payment deadline has passed")),
        None => return Err(not_payable("the order is no longer pending")),
    }
    // Another request is opening a session: hand out the same one.
    if ctx.state(|s| s.waiting().is_some_and(|w| w.opening)) {
        ctx.wait_condition(|s: &OrderWorkflow| !s.waiting().is_some_and(|w| w.opening))
            .await?;
    }
    let reusable = ctx.state(|s| {
        let w = s.waiting()?;
        let mut session = w.checkout.clone()?;
        decide::session_reusable(session.started_ms, now, window).then(|| {
            session.expires_at_ms = w.deadline_ms;
            session
        })
    });
    if let Some(session) = reusable {
        return Ok(session);
    }
    let opening = ctx.state_mut(|s| {
        let (order_id, amount, currency) = (
            s.input.order_id.clone(),
            s.amounts.payable,
            s.input.currency.clone(),
        );
        let w = s.waiting_mut()?;
        let extended = decide::checkout_deadline(w.deadline_ms, w.original_ms, now, window);
        if extended > w.deadline_ms {
            crate::sometimes::reached(crate::sometimes::CHECKOUT_EXTENDED_DEADLINE, &order_id);
        }
        w.deadline_ms = extended;
        w.version += 1;
        w.opening = true;
        w.attempts += 1;
        Some((order_id, amount, currency, w.attempts, extended))
    });
    let Some((order_id, amount, currency, attempt, expires_at)) = opening else {
        return Err(not_payable("the order is no longer pending"));
    };
    let opened = ctx
        .execute_activity(
            OrderActivities::open_checkout,
            OpenCheckout {
                order_id: order_id.clone(),
                attempt,
                amount,
                currency: currency.clone(),
                expires_at_ms: ctx.patched(SESSIONS_END_WITH_ORDER).then_some(expires_at),
                capture: ctx.state(|s| s.input.capture.map(|c| c.timing).unwrap_or_default()),
            },
            checkout_options(),
        )
        .await;
    let done_opening = |session: Option<&CheckoutSession>| {
        ctx.state_mut(|s| {
            if let Some(w) = s.waiting_mut() {
                w.opening = false;
                if let Some(session) = session {
                    w.checkout = Some(session.clone());
                }
            }
        })
    };
    let provider = match opened {
        Ok(p) => p,
        Err(e) => {
            done_opening(None);
            return Err(Refused::new(
                RefusalCode::ProviderUnavailable,
                format!("the payment provider did not open a session: {e}"),
            )
            .into());
        }
    };
    let session = CheckoutSession {
        session_id: provider.session_id,
        pay_url: provider.pay_url,
        amount,
        currency,
        started_ms: now,
        expires_at_ms: expires_at,
    };
    let recorded = db_step(
        ctx,
        OrderActivities::record_checkout,
        RecordCheckout {
            order_id,
            session: session.clone(),
        },
        DbStep::Settle,
    )
    .await;
    done_opening(Some(&session));
    recorded?;
    if ctx.state(|s| s.waiting().is_some()) {
        publish_step(ctx, "checkout_open", Some(expires_at));
    }
    Ok(session)
}
