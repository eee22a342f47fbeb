//! `OrderWorkflow`: one order from reservation to paid, cancelled or rejected.
//!
//! Deterministic code only. Talk to the world through `ctx`: activities, timers, signals,
//! updates. No clocks (use `ctx.workflow_time()`), no RNG, no I/O, no `tokio::select!` (use
//! `temporalio_sdk::workflows::select!`), no HashMap iteration (use BTreeSet/BTreeMap).
//! Reordering or adding `ctx.*` calls in a released workflow needs `ctx.patched("...")` and a
//! new recorded history under `tests/histories/`.
//!
//! The lifecycle:
//! 1. reserve stock, coupon, points and wallet (a saga: a refusal releases what was held, and
//!    the order ends `rejected`); the `order.placed` update answers the HTTP caller;
//! 2. wait for a matching payment, a cancel request or the deadline (an updatable timer);
//! 3. settle: capture everything (`paid`), or mark `cancelled` and then release everything;
//! 4. record every payment that did not pay for the order, so it is refunded, never dropped.

use crate::contract::OrderActivities;
use crate::decide::{self, Wake};
use crate::model::*;
use crate::search;
use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};
use temporalio_common::RetryPolicy;
use temporalio_common::search_attributes::Timestamp;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, ApplicationFailure, SyncWorkflowContext,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// The state of one order, as the engine replays it.
#[workflow]
pub struct OrderWorkflow {
    input: PlaceOrder,
    status: OrderStatus,
    rejection: Option<Refusal>,
    amounts: Amounts,
    /// When an unpaid order is cancelled. Data, not a timer, so that it can be moved.
    deadline_ms: Option<i64>,
    deadline_version: u64,
    /// Payments in arrival order, deduplicated by `payment_id` (signals are not deduplicated
    /// by Temporal).
    payments: Vec<PaymentReceived>,
    seen_payment_ids: BTreeSet<String>,
    /// The payment that paid for the order.
    applied_payment: Option<String>,
    cancel_request: Option<CancelReason>,
    /// Captures or releases are all done.
    settled: bool,
    /// Update handlers still waiting; the run waits for them before it returns.
    open_handlers: u32,
}

#[workflow_methods]
impl OrderWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: PlaceOrder) -> Self {
        OrderWorkflow {
            input,
            status: OrderStatus::Reserving,
            rejection: None,
            amounts: Amounts::default(),
            deadline_ms: None,
            deadline_version: 0,
            payments: Vec::new(),
            seen_payment_ids: BTreeSet::new(),
            applied_payment: None,
            cancel_request: None,
            settled: false,
            open_handlers: 0,
        }
    }

    #[run(name = "order")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<OrderStatus> {
        let input = ctx.state(|s| s.input.clone());
        publish(ctx, OrderStatus::Reserving, None);

        // 1. Reserve. `held` lists every resource a reservation was attempted for, so that a
        //    rejection releases (or tombstones) each of them.
        let mut held = Vec::new();
        let priced = reserve_all(ctx, &input, &mut held).await;
        let now = now_ms(ctx)?;
        let amounts = match priced {
            Ok(amounts) => amounts,
            Err(refusal) => {
                settle_all(ctx, &held, Settle::Release).await?;
                record_order(
                    ctx,
                    OrderStatus::Rejected,
                    Amounts::default(),
                    None,
                    Some(refusal.clone()),
                    now,
                )
                .await?;
                ctx.state_mut(|s| {
                    s.status = OrderStatus::Rejected;
                    s.rejection = Some(refusal);
                    s.settled = true;
                });
                publish(ctx, OrderStatus::Rejected, None);
                return finish(ctx, OrderStatus::Rejected).await;
            }
        };

        // 2. Nothing left to pay: paid at creation, no deadline, no webhook.
        if amounts.payable == 0 {
            record_order(ctx, OrderStatus::PendingPayment, amounts, None, None, now).await?;
            ctx.state_mut(|s| s.amounts = amounts);
            pay(ctx, &held, None).await?;
            return finish(ctx, OrderStatus::Paid).await;
        }

        let deadline = decide::deadline(now, input.payment_timeout_secs);
        record_order(
            ctx,
            OrderStatus::PendingPayment,
            amounts,
            Some(deadline),
            None,
            now,
        )
        .await?;
        ctx.state_mut(|s| {
            s.amounts = amounts;
            s.status = OrderStatus::PendingPayment;
            s.deadline_ms = Some(deadline);
        });
        publish(ctx, OrderStatus::PendingPayment, Some(deadline));

        // 3. Wait for a payment, a cancel or the deadline.
        let outcome = loop {
            let now = now_ms(ctx)?;
            let (wake, deadline, version) =
                ctx.state(|s| (s.wake(now), s.deadline_ms, s.deadline_version));
            if wake != Wake::Wait {
                break wake;
            }
            let remaining = deadline.map_or(Duration::from_secs(3600), |d| {
                Duration::from_millis((d - now).max(1) as u64)
            });
            temporalio_sdk::workflows::select! {
                _ = ctx.timer(remaining) => {}
                _ = ctx.wait_condition(|s: &Self| s.deadline_version != version || s.wake(i64::MIN) != Wake::Wait) => {}
            }
        };

        // 4. Settle.
        let status = match outcome {
            Wake::Pay(payment) => {
                pay(ctx, &held, Some(payment)).await?;
                OrderStatus::Paid
            }
            Wake::Cancel(reason) => {
                cancel(ctx, &held, reason).await?;
                OrderStatus::Cancelled
            }
            Wake::Wait => unreachable!("the wait loop only breaks on a decision"),
        };
        finish(ctx, status).await
    }

    /// The provider reported a payment. Deduplicated here by `payment_id`.
    #[signal(name = "order.payment_succeeded")]
    pub fn payment_succeeded(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        payment: PaymentReceived,
    ) {
        if self.seen_payment_ids.insert(payment.payment_id.clone()) {
            self.payments.push(payment);
        }
    }

    /// Answers once the reservation saga is decided: the HTTP caller of `POST /v1/orders`
    /// learns `pending_payment` or `rejected` in the same response.
    #[update(name = "order.placed")]
    pub async fn placed(ctx: &mut WorkflowContext<Self>) -> Placement {
        ctx.state_mut(|s| s.open_handlers += 1);
        // A cancellation of the wait only happens when the workflow itself is cancelled; the
        // placement is then reported as it stands.
        let _ = ctx
            .wait_condition(|s: &Self| s.status != OrderStatus::Reserving)
            .await;
        ctx.state_mut(|s| {
            s.open_handlers -= 1;
            Placement {
                order_id: s.input.order_id.clone(),
                request_hash: s.input.request_hash.clone(),
                status: s.status,
                rejection: s.rejection.clone(),
            }
        })
    }

    #[update_validator(cancel)]
    fn validate_cancel(
        &self,
        _ctx: &WorkflowContextView,
        _request: &CancelRequest,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match self.status {
            OrderStatus::Reserving | OrderStatus::PendingPayment | OrderStatus::Cancelled => Ok(()),
            other => Err(format!("order_not_cancellable: the order is {other}").into()),
        }
    }

    /// Cancels a pending order and answers once every reservation is released. If a payment
    /// won the race, the answer says `paid`.
    #[update(name = "order.cancel")]
    pub async fn cancel(ctx: &mut WorkflowContext<Self>, request: CancelRequest) -> CancelOutcome {
        ctx.state_mut(|s| {
            s.open_handlers += 1;
            s.cancel_request.get_or_insert(request.reason);
        });
        let _ = ctx.wait_condition(|s: &Self| s.settled).await;
        ctx.state_mut(|s| {
            s.open_handlers -= 1;
            CancelOutcome { status: s.status }
        })
    }

    #[query(name = "order.state")]
    pub fn state(&self, _ctx: &WorkflowContextView) -> OrderState {
        OrderState {
            order_id: self.input.order_id.clone(),
            status: self.status,
            expires_at_ms: self.deadline_ms,
            settled: self.settled,
            payments_seen: self.payments.len(),
        }
    }
}

impl OrderWorkflow {
    /// What ends the wait now; `now_ms = i64::MIN` asks about messages only, not the clock.
    fn wake(&self, now_ms: i64) -> Wake {
        decide::wake(
            &self.payments,
            self.amounts.payable,
            &self.input.currency,
            self.cancel_request,
            self.deadline_ms,
            now_ms,
        )
    }
}

/// Reservations fail fast: the HTTP caller is waiting for the outcome.
fn reserve_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_interval(Duration::from_secs(2))
                .maximum_attempts(5)
                .build(),
        )
        .build()
}

/// Settlement retries until it succeeds: a release must never be given up on. Only a
/// non-retryable business error stops it, and that fails the workflow visibly.
fn settle_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .maximum_interval(Duration::from_secs(60))
                .build(),
        )
        .build()
}

fn now_ms(ctx: &WorkflowContext<OrderWorkflow>) -> Result<i64, ApplicationFailure> {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| ApplicationFailure::new("workflow time is not available"))
}

/// Upserts the search attributes that ops filter on in the Web UI. `PaymentDeadline` is only
/// ever set, not unset: the server (1.32 dev) rejects the SDK's unset encoding for Datetime
/// attributes, and `OrderStatus` already says whether the deadline still matters.
fn publish(ctx: &WorkflowContext<OrderWorkflow>, status: OrderStatus, deadline_ms: Option<i64>) {
    let customer = ctx.state(|s| s.input.user_id.clone());
    let mut updates = vec![
        search::ORDER_STATUS.value_set(status.as_str().to_owned()),
        search::CUSTOMER_ID.value_set(customer),
    ];
    if let Some(ms) = deadline_ms {
        let at = Timestamp::new(
            ms.div_euclid(1000),
            (ms.rem_euclid(1000) * 1_000_000) as i32,
        );
        updates.push(search::PAYMENT_DEADLINE.value_set(at));
    }
    ctx.upsert_search_attributes(updates);
}

/// A reservation activity that could not run (retries exhausted) is a refusal too: the order is
/// rejected and everything attempted is released.
fn reservation(result: Result<Reservation, ActivityExecutionError>) -> Result<i64, Refusal> {
    match result {
        Ok(Reservation::Reserved { amount }) => Ok(amount),
        Ok(Reservation::Refused(refusal)) => Err(refusal),
        Err(e) => Err(Refusal::new(
            "reservation_unavailable",
            format!("a reservation could not be made: {e}"),
        )),
    }
}

/// The reservation saga. Pushes each resource onto `held` *before* trying it.
async fn reserve_all(
    ctx: &WorkflowContext<OrderWorkflow>,
    input: &PlaceOrder,
    held: &mut Vec<Resource>,
) -> Result<Amounts, Refusal> {
    let order_id = input.order_id.clone();
    held.push(Resource::Stock);
    let stock = ReserveStock {
        order_id: order_id.clone(),
        items: input.items.clone(),
    };
    let total = reservation(
        ctx.execute_activity(OrderActivities::reserve_stock, stock, reserve_options())
            .await,
    )?;

    let mut coupon = 0;
    if let Some(coupon_id) = &input.coupon_id {
        held.push(Resource::Coupon);
        let req = ReserveCoupon {
            order_id: order_id.clone(),
            user_id: input.user_id.clone(),
            coupon_id: coupon_id.clone(),
            max_discount: decide::coupon_cap(total),
        };
        coupon = reservation(
            ctx.execute_activity(OrderActivities::reserve_coupon, req, reserve_options())
                .await,
        )?;
    }
    let amounts = decide::price(total, coupon, input.points, input.wallet_amount)?;

    let funds = |amount| ReserveFunds {
        order_id: order_id.clone(),
        user_id: input.user_id.clone(),
        amount,
    };
    if amounts.points > 0 {
        held.push(Resource::Points);
        let req = funds(amounts.points);
        reservation(
            ctx.execute_activity(OrderActivities::reserve_points, req, reserve_options())
                .await,
        )?;
    }
    if amounts.wallet > 0 {
        held.push(Resource::Wallet);
        let req = funds(amounts.wallet);
        reservation(
            ctx.execute_activity(OrderActivities::reserve_wallet, req, reserve_options())
                .await,
        )?;
    }
    Ok(amounts)
}

#[derive(Clone, Copy)]
enum Settle {
    Capture,
    Release,
}

/// Captures or releases every held resource (releases in reverse order). Every one is
/// attempted even if another fails for good; then the failures fail the workflow, loudly.
async fn settle_all(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
    how: Settle,
) -> WorkflowResult<()> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    let order: Vec<Resource> = match how {
        Settle::Capture => held.to_vec(),
        Settle::Release => held.iter().rev().copied().collect(),
    };
    let mut failures = Vec::new();
    for resource in order {
        let input = OrderRef {
            order_id: order_id.clone(),
        };
        let opts = settle_options();
        let result = match (how, resource) {
            (Settle::Release, Resource::Stock) => {
                ctx.execute_activity(OrderActivities::release_stock, input, opts)
                    .await
            }
            (Settle::Release, Resource::Coupon) => {
                ctx.execute_activity(OrderActivities::release_coupon, input, opts)
                    .await
            }
            (Settle::Release, Resource::Points) => {
                ctx.execute_activity(OrderActivities::release_points, input, opts)
                    .await
            }
            (Settle::Release, Resource::Wallet) => {
                ctx.execute_activity(OrderActivities::release_wallet, input, opts)
                    .await
            }
            (Settle::Capture, Resource::Stock) => {
                ctx.execute_activity(OrderActivities::capture_stock, input, opts)
                    .await
            }
            (Settle::Capture, Resource::Coupon) => {
                ctx.execute_activity(OrderActivities::capture_coupon, input, opts)
                    .await
            }
            (Settle::Capture, Resource::Points) => {
                ctx.execute_activity(OrderActivities::capture_points, input, opts)
                    .await
            }
            (Settle::Capture, Resource::Wallet) => {
                ctx.execute_activity(OrderActivities::capture_wallet, input, opts)
                    .await
            }
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", resource.as_str()));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ApplicationFailure::non_retryable(format!(
            "order {order_id}: settlement failed and needs an operator: {}",
            failures.join("; ")
        ))
        .into())
    }
}

async fn record_order(
    ctx: &WorkflowContext<OrderWorkflow>,
    status: OrderStatus,
    amounts: Amounts,
    expires_at_ms: Option<i64>,
    rejection: Option<Refusal>,
    at_ms: i64,
) -> WorkflowResult<()> {
    let order = ctx.state(|s| s.input.clone());
    let input = RecordOrder {
        order,
        status,
        amounts,
        expires_at_ms,
        rejection,
        at_ms,
    };
    ctx.execute_activity(OrderActivities::record_order, input, settle_options())
        .await?;
    Ok(())
}

/// `pending_payment -> paid`, then capture every reservation.
async fn pay(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
    payment: Option<PaymentReceived>,
) -> WorkflowResult<()> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    let at_ms = now_ms(ctx)?;
    let applied = payment.as_ref().map(|p| p.payment_id.clone());
    let input = MarkPaid {
        order_id,
        payment,
        at_ms,
    };
    ctx.execute_activity(OrderActivities::mark_paid, input, settle_options())
        .await?;
    ctx.state_mut(|s| {
        s.status = OrderStatus::Paid;
        s.deadline_ms = None;
        s.applied_payment = applied;
    });
    publish(ctx, OrderStatus::Paid, None);
    settle_all(ctx, held, Settle::Capture).await?;
    ctx.state_mut(|s| s.settled = true);
    Ok(())
}

/// Marks the order cancelled first, so that no payment can be applied any more, then releases.
async fn cancel(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
    reason: CancelReason,
) -> WorkflowResult<()> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    let at_ms = now_ms(ctx)?;
    let input = MarkCancelled {
        order_id,
        reason,
        at_ms,
    };
    ctx.execute_activity(OrderActivities::mark_cancelled, input, settle_options())
        .await?;
    ctx.state_mut(|s| {
        s.status = OrderStatus::Cancelled;
        s.deadline_ms = None;
    });
    publish(ctx, OrderStatus::Cancelled, None);
    settle_all(ctx, held, Settle::Release).await?;
    ctx.state_mut(|s| s.settled = true);
    Ok(())
}

/// Records every payment that did not pay for the order, waits for open update handlers, and
/// ends the workflow.
async fn finish(
    ctx: &WorkflowContext<OrderWorkflow>,
    status: OrderStatus,
) -> WorkflowResult<OrderStatus> {
    let mut recorded = 0;
    loop {
        let (order_id, applied, pending) = ctx.state(|s| {
            (
                s.input.order_id.clone(),
                s.applied_payment.clone(),
                s.payments[recorded.min(s.payments.len())..].to_vec(),
            )
        });
        if pending.is_empty() {
            break;
        }
        for payment in pending {
            recorded += 1;
            if applied.as_deref() == Some(payment.payment_id.as_str()) {
                continue;
            }
            let reason = match status {
                OrderStatus::Paid => "order_already_paid",
                OrderStatus::Rejected => "order_rejected",
                _ => "order_cancelled",
            };
            let at_ms = now_ms(ctx)?;
            let input = RecordUnappliedPayment {
                order_id: order_id.clone(),
                payment,
                reason: reason.into(),
                at_ms,
            };
            ctx.execute_activity(
                OrderActivities::record_unapplied_payment,
                input,
                settle_options(),
            )
            .await?;
        }
    }
    ctx.wait_condition(|s: &OrderWorkflow| s.open_handlers == 0)
        .await?;
    Ok(status)
}
