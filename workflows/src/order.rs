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
//!    While a checkout session is open (`order.checkout` update), the deadline moves out to
//!    `session start + checkout window`, so the order is not cancelled under the payer;
//! 3. settle: capture everything (`paid`), or mark `cancelled` and then release everything;
//! 4. stay open for the late-payment grace window: every payment that did not pay for the
//!    order (late, duplicate, wrong amount) is refunded by a `refund-{payment_id}` child
//!    workflow. After the window the API refunds late payments itself, with the same id.
//!
//! 5. (v3) once paid, fulfil: grant entitlements, or create a shipment and wait for the admin to
//!    ship it. A cancel before shipping stops fulfilment, marks the order cancelled (returning
//!    wallet funds in the same transaction), refunds the payment and returns the rest. A
//!    fulfilment that fails for good is compensated the same way (`fulfilment_failed`).
//!
//! A step that fails for good (a constraint violation, data the store cannot read, an
//! inconsistent hold) stops the order in `needs_attention` (`PATCH_ATTENTION`): the step rolled
//! back whole, the order is shown to ops (search attribute, event, audit, metric), and the
//! `order.retry` signal carries it on from the database, like a resumed run.
//!
//! Versions: `PATCH_REFUNDS` (checkout, grace window, refunds), `PATCH_FULFILMENT`
//! (fulfilment, cancel after payment, admin orders, quotas), `PATCH_REFUND_ROW` (an existing
//! refund resolved by its row; goods returned even when a refund fails) and `PATCH_ONE_TX`
//! (each outcome, its status and every hold move, in one transaction). Orders started before a patch take
//! the old path; `tests/histories/v1-*.json` and `v2-*.json` guard those paths.

use crate::contract::OrderActivities;
use crate::decide::{self, Wake};
use crate::model::*;
use crate::policy::{checkout_options, now_ms, reserve_options, settle_options};
use crate::refund::RefundWorkflow;
use crate::{refund_workflow_id, search};
use std::collections::BTreeSet;
use std::time::Duration;
use temporalio_common::error::IncomingError;
use temporalio_common::search_attributes::Timestamp;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ApplicationFailure, ChildWorkflowOptions, OutgoingWorkflowError,
    SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult, WorkflowTermination,
};

/// The patch that added checkout sessions, the late-payment grace window and refunds.
pub const PATCH_REFUNDS: &str = "order-v2-checkout-and-refunds";
/// The patch that added fulfilment, cancel after payment, admin orders and quotas.
pub const PATCH_FULFILMENT: &str = "order-v3-fulfilment";
/// The patch that resolves an existing `refund-{payment_id}` by the refund row, and returns a
/// cancelled order's stock, coupon and points even when its refund failed.
pub const PATCH_REFUND_ROW: &str = "order-v4-refund-row";
/// The patch that commits each outcome (paid; cancelled before or after payment) as one
/// transaction: the status change and every hold move together.
pub const PATCH_ONE_TX: &str = "order-v4-one-transaction";
/// The patch that stops an order on a permanent error in `needs_attention` (visible, waiting
/// for ops to fix the cause and retry) instead of failing the workflow.
pub const PATCH_ATTENTION: &str = "order-v4-needs-attention";

type HandlerError = Box<dyn std::error::Error + Send + Sync>;

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
    /// The deadline the order was created with; checkout extensions are capped from it.
    original_deadline_ms: Option<i64>,
    /// The latest checkout session, and whether one is being opened right now.
    checkout: Option<CheckoutSession>,
    checkout_in_flight: bool,
    checkout_attempts: u32,
    /// The wait for payment is over (paid, cancelled or timed out): no more checkouts.
    wait_over: bool,
    /// Started with `PATCH_FULFILMENT`: fulfilment and cancel after payment apply.
    v3: bool,
    /// A shipment is pending, waiting for `order.ship`.
    awaiting_shipment: bool,
    ship_in_flight: bool,
    shipped: bool,
    /// The workflow is past the point where a paid order can be cancelled.
    closing: bool,
    /// The fulfil activity has answered (or was skipped for a cancel).
    fulfil_done: bool,
    /// A paid order is being compensated (cancel after payment): not answered yet.
    compensating: bool,
    /// Captures or releases are all done.
    settled: bool,
    /// Update handlers still waiting; the run waits for them before it returns.
    open_handlers: u32,
    /// Retries ops asked for (`order.retry`), counted so that one is never missed.
    retries_requested: u32,
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
            original_deadline_ms: None,
            checkout: None,
            checkout_in_flight: false,
            checkout_attempts: 0,
            wait_over: false,
            v3: false,
            awaiting_shipment: false,
            ship_in_flight: false,
            shipped: false,
            closing: false,
            fulfil_done: false,
            compensating: false,
            settled: false,
            open_handlers: 0,
            retries_requested: 0,
        }
    }

    /// The lifecycle, and what happens when a step of it fails for good: the order waits in
    /// `needs_attention` for ops, then carries on from the database (as a resumed run does).
    #[run(name = "order")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<OrderStatus> {
        let mut outcome = lifecycle(ctx).await;
        loop {
            let problem = match &outcome {
                Err(WorkflowTermination::Failed(failure)) => Problem::of(failure),
                _ => return outcome,
            };
            if !ctx.patched(PATCH_ATTENTION) {
                return outcome;
            }
            wait_for_ops(ctx, problem).await?;
            outcome = resume(ctx).await;
        }
    }

    /// Ops fixed what stopped the order in `needs_attention`: try again.
    #[signal(name = "order.retry")]
    pub fn retry(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.retries_requested += 1;
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
            OrderStatus::Paid | OrderStatus::Fulfilled
                if self.v3 && (self.shipped || self.ship_in_flight) =>
            {
                Err("order_already_shipped: the shipment has left".into())
            }
            OrderStatus::Paid | OrderStatus::Fulfilled if self.v3 && !self.closing => Ok(()),
            other => Err(format!("order_not_cancellable: the order is {other}").into()),
        }
    }

    /// Cancels a pending order and answers once every reservation is released. If a payment
    /// won the race, the answer says `paid`.
    #[update(name = "order.cancel")]
    pub async fn cancel(ctx: &mut WorkflowContext<Self>, request: CancelRequest) -> CancelOutcome {
        // v3: a ship that got in first (its handler is running or done) wins; the cancel then
        // answers with the shipped order. Check and set happen in one step, like the ship's.
        let shipping = ctx.state_mut(|s| {
            s.open_handlers += 1;
            let shipping = s.v3 && (s.ship_in_flight || s.shipped);
            if !shipping {
                s.cancel_request.get_or_insert(request.reason);
            }
            shipping
        });
        if shipping {
            let _ = ctx.wait_condition(|s: &Self| !s.ship_in_flight).await;
            return ctx.state_mut(|s| {
                s.open_handlers -= 1;
                CancelOutcome { status: s.status }
            });
        }
        // v3: a paid order answers once it is cancelled and compensated.
        let _ = ctx
            .wait_condition(|s: &Self| {
                s.settled
                    && (!s.v3
                        || (s.status == OrderStatus::Cancelled && !s.compensating)
                        || s.status == OrderStatus::Rejected
                        || s.closing)
            })
            .await;
        ctx.state_mut(|s| {
            s.open_handlers -= 1;
            CancelOutcome { status: s.status }
        })
    }

    #[update_validator(checkout)]
    fn validate_checkout(
        &self,
        _ctx: &WorkflowContextView,
        _request: &CheckoutRequest,
    ) -> Result<(), HandlerError> {
        if self.status != OrderStatus::PendingPayment || self.wait_over {
            let shown = if self.wait_over && self.status == OrderStatus::PendingPayment {
                "being settled"
            } else {
                self.status.as_str()
            };
            return Err(format!("order_not_payable: the order is {shown}").into());
        }
        Ok(())
    }

    /// Opens (or hands out again) a provider checkout session for the payable amount, and
    /// moves the deadline so that the order is not cancelled while the payer pays.
    #[update(name = "order.checkout")]
    pub async fn checkout(
        ctx: &mut WorkflowContext<Self>,
        request: CheckoutRequest,
    ) -> Result<CheckoutSession, HandlerError> {
        ctx.state_mut(|s| s.open_handlers += 1);
        let result = open_checkout(ctx, request).await;
        ctx.state_mut(|s| s.open_handlers -= 1);
        result
    }

    #[update_validator(ship)]
    fn validate_ship(
        &self,
        _ctx: &WorkflowContextView,
        _request: &ShipRequest,
    ) -> Result<(), HandlerError> {
        if self.cancel_request.is_some() || self.status == OrderStatus::Cancelled {
            return Err("order_not_shippable: the order is cancelled or being cancelled".into());
        }
        if self.shipped || self.ship_in_flight {
            return Err("order_not_shippable: the order has shipped already".into());
        }
        // Paid and not fulfilled yet: the handler waits for fulfilment to say what to ship.
        let fulfilling = self.v3 && self.status == OrderStatus::Paid && !self.fulfil_done;
        if !self.awaiting_shipment && !fulfilling {
            return Err(format!(
                "order_not_shippable: the order is {} with nothing to ship",
                self.status
            )
            .into());
        }
        Ok(())
    }

    /// The admin ships a paid order's goods: shipment `shipped`, order `fulfilled`. A cancel
    /// that arrives while this runs is refused (`order_already_shipped`), and a ship that
    /// arrives after a cancel is refused: exactly one of them wins.
    #[update(name = "order.ship")]
    pub async fn ship(
        ctx: &mut WorkflowContext<Self>,
        _request: ShipRequest,
    ) -> Result<OrderStatus, HandlerError> {
        ctx.state_mut(|s| s.open_handlers += 1);
        let _ = ctx
            .wait_condition(|s: &Self| s.fulfil_done || s.cancel_request.is_some())
            .await;
        let refusal = ctx.state_mut(|s| {
            let refusal = if s.cancel_request.is_some() || s.status == OrderStatus::Cancelled {
                Some("order_not_shippable: the order is cancelled or being cancelled")
            } else if s.shipped || s.ship_in_flight {
                Some("order_not_shippable: the order has shipped already")
            } else if !s.awaiting_shipment {
                Some("order_not_shippable: the order has nothing to ship")
            } else {
                None
            };
            match refusal {
                Some(_) => s.open_handlers -= 1,
                None => s.ship_in_flight = true,
            }
            refusal
        });
        if let Some(why) = refusal {
            return Err(why.into());
        }
        let at_ms = now_ms(ctx)?;
        let order_id = ctx.state(|s| s.input.order_id.clone());
        let shipped = ctx
            .execute_activity(
                OrderActivities::mark_shipped,
                OrderAt { order_id, at_ms },
                settle_options(),
            )
            .await;
        ctx.state_mut(|s| {
            s.ship_in_flight = false;
            s.open_handlers -= 1;
        });
        shipped?;
        ctx.state_mut(|s| {
            s.shipped = true;
            s.status = OrderStatus::Fulfilled;
        });
        publish(ctx, OrderStatus::Fulfilled, None);
        Ok(OrderStatus::Fulfilled)
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
    /// The late-payment grace window, in milliseconds.
    fn grace_ms(&self) -> i64 {
        decide::secs_to_ms(
            self.input
                .late_payment_grace_secs
                .unwrap_or(decide::DEFAULT_LATE_PAYMENT_GRACE_SECS),
        )
    }

    fn checkout_window_secs(&self) -> u64 {
        self.input
            .checkout_window_secs
            .unwrap_or(decide::DEFAULT_CHECKOUT_WINDOW_SECS)
    }

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

/// Steps 1 to 4 of a new order, top to bottom.
async fn lifecycle(ctx: &WorkflowContext<OrderWorkflow>) -> WorkflowResult<OrderStatus> {
    let input = ctx.state(|s| s.input.clone());
    // Started by reconciliation for an order whose previous run is gone (never true in a
    // history from before resumes existed).
    if input.resume {
        return resume(ctx).await;
    }
    let v3 = ctx.patched(PATCH_FULFILMENT);
    ctx.state_mut(|s| s.v3 = v3);
    publish(ctx, OrderStatus::Reserving, None);

    // 1. Reserve. `held` lists every resource a reservation was attempted for, so that a
    //    rejection releases (or tombstones) each of them.
    let mut held = Vec::new();
    let priced = reserve_all(ctx, &input, &mut held, v3).await;
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

    // 2. Nothing left to pay, or an admin order paid offline: paid at creation, no deadline,
    //    no webhook.
    let offline = v3 && input.payment_method == PaymentMethod::Offline;
    if amounts.payable == 0 || offline {
        record_order(ctx, OrderStatus::PendingPayment, amounts, None, None, now).await?;
        ctx.state_mut(|s| s.amounts = amounts);
        let payment = offline.then(|| offline_payment(&input, amounts.payable));
        if let Some(p) = &payment {
            ctx.state_mut(|s| {
                s.seen_payment_ids.insert(p.payment_id.clone());
                s.payments.push(p.clone());
            });
        }
        pay(ctx, &held, payment).await?;
        if v3 {
            return after_payment(ctx, &held).await;
        }
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
        s.original_deadline_ms = Some(deadline);
    });
    publish(ctx, OrderStatus::PendingPayment, Some(deadline));
    wait_then_settle(ctx, &held, v3).await
}

/// Steps 3 and 4 of a pending order: wait for a payment, a cancel or the deadline; then settle.
async fn wait_then_settle(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
    v3: bool,
) -> WorkflowResult<OrderStatus> {
    let outcome = loop {
        let now = now_ms(ctx)?;
        let (wake, deadline, version) =
            ctx.state(|s| (s.wake(now), s.deadline_ms, s.deadline_version));
        if wake != Wake::Wait {
            ctx.state_mut(|s| s.wait_over = true);
            break wake;
        }
        let remaining = deadline.map_or(Duration::from_secs(3600), |d| decide::until(now, d));
        temporalio_sdk::workflows::select! {
            _ = ctx.timer(remaining) => {}
            _ = ctx.wait_condition(|s: &OrderWorkflow| s.deadline_version != version || s.wake(i64::MIN) != Wake::Wait) => {}
        }
    };
    let status = match outcome {
        Wake::Pay(payment) => {
            pay(ctx, held, Some(payment)).await?;
            if v3 {
                return after_payment(ctx, held).await;
            }
            OrderStatus::Paid
        }
        Wake::Cancel(reason) => {
            cancel(ctx, held, reason).await?;
            OrderStatus::Cancelled
        }
        Wake::Wait => unreachable!("the wait loop only breaks on a decision"),
    };
    finish(ctx, status).await
}

/// A run that reconciliation started for an order whose previous run is gone: the order is read
/// back from the database and carried on from where it is, never guessed at. A pending order
/// that was paid meanwhile (a held payment, an unprocessed inbox event, a payment only the
/// provider has) is paid and fulfilled; one that was not is cancelled (`reconciled`) and
/// released. A paid one has its captures completed and is fulfilled. Every step is the same
/// idempotent activity the first run used.
async fn resume(ctx: &WorkflowContext<OrderWorkflow>) -> WorkflowResult<OrderStatus> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    let loaded = ctx
        .execute_activity(
            OrderActivities::load_order,
            OrderRef { order_id },
            settle_options(),
        )
        .await?;
    let held = loaded.held.clone();
    ctx.state_mut(|s| {
        s.v3 = true;
        s.status = loaded.status;
        s.amounts = loaded.amounts;
        s.deadline_ms = loaded.expires_at_ms;
        s.original_deadline_ms = loaded.expires_at_ms;
        for p in loaded.applied.iter().chain(&loaded.waiting) {
            if s.seen_payment_ids.insert(p.payment_id.clone()) {
                s.payments.push(p.clone());
            }
        }
        s.applied_payment = loaded.applied.as_ref().map(|p| p.payment_id.clone());
    });
    publish(ctx, loaded.status, loaded.expires_at_ms);
    match loaded.status {
        // Paid meanwhile (a held payment, an unprocessed event, or one only the provider has
        // seen): the wait ends with it at once. Not paid: cancelled and released now.
        OrderStatus::PendingPayment => {
            if loaded.waiting.is_empty() {
                // A cancel asked for before the run stopped (ops retried it) keeps its reason.
                ctx.state_mut(|s| {
                    s.cancel_request.get_or_insert(CancelReason::Reconciled);
                });
            }
            wait_then_settle(ctx, &held, true).await
        }
        OrderStatus::Paid => {
            ctx.state_mut(|s| s.wait_over = true);
            settle_all(ctx, &held, Settle::Capture).await?;
            ctx.state_mut(|s| s.settled = true);
            after_payment(ctx, &held).await
        }
        other => Err(ApplicationFailure::non_retryable(format!(
            "order {}: a {other} order is not resumed",
            ctx.state(|s| s.input.order_id.clone())
        ))
        .into()),
    }
}

/// What stopped an order for good: the failure's stable code and what it said.
struct Problem {
    code: String,
    message: String,
}

impl Problem {
    /// Reads the code from the failure's type (set by the activities from their `StoreError`),
    /// never from its text. A failure of the workflow's own making is `settlement_failed`.
    fn of(failure: &OutgoingWorkflowError) -> Problem {
        let application = match failure {
            OutgoingWorkflowError::ActivityExecution(e) => match e.cause() {
                Some(IncomingError::Application(app)) => Some(app),
                _ => None,
            },
            _ => None,
        };
        match application {
            Some(app) => Problem {
                code: app.type_name().unwrap_or("activity_failed").to_owned(),
                message: app.source_error().to_string(),
            },
            None => Problem {
                code: "settlement_failed".to_owned(),
                message: failure.to_string(),
            },
        }
    }
}

/// A step failed for good. Nothing it did committed (one transaction per outcome), so the
/// order shows as `needs_attention` (search attribute, order event, audit, metric) and waits
/// for ops to fix the cause and ask for a retry. It is never retried in silence.
async fn wait_for_ops(
    ctx: &WorkflowContext<OrderWorkflow>,
    problem: Problem,
) -> WorkflowResult<()> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    let seen = ctx.state(|s| s.retries_requested);
    let raised = NeedsAttention {
        order_id: order_id.clone(),
        code: problem.code,
        message: problem.message,
        at_ms: now_ms(ctx)?,
    };
    ctx.execute_activity(OrderActivities::raise_attention, raised, settle_options())
        .await?;
    publish_step(ctx, "needs_attention", None);
    ctx.wait_condition(move |s: &OrderWorkflow| s.retries_requested > seen)
        .await?;
    let resolved = AttentionResolved {
        order_id,
        at_ms: now_ms(ctx)?,
    };
    ctx.execute_activity(
        OrderActivities::resolve_attention,
        resolved,
        settle_options(),
    )
    .await?;
    Ok(())
}

/// Upserts the search attributes that ops filter on in the Web UI. `PaymentDeadline` is only
/// ever set, not unset: the server (1.32 dev) rejects the SDK's unset encoding for Datetime
/// attributes, and `OrderStatus` already says whether the deadline still matters.
fn publish(ctx: &WorkflowContext<OrderWorkflow>, status: OrderStatus, deadline_ms: Option<i64>) {
    publish_step(ctx, status.as_str(), deadline_ms);
}

/// `publish` with a step that is not a stored status (`checkout_open`).
fn publish_step(ctx: &WorkflowContext<OrderWorkflow>, step: &str, deadline_ms: Option<i64>) {
    let customer = ctx.state(|s| s.input.user_id.clone());
    let mut updates = vec![
        search::ORDER_STATUS.value_set(step.to_owned()),
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
    v3: bool,
) -> Result<Amounts, Refusal> {
    let order_id = input.order_id.clone();
    held.push(Resource::Stock);
    let stock = ReserveStock {
        order_id: order_id.clone(),
        items: input.items.clone(),
        user_id: if v3 {
            input.user_id.clone()
        } else {
            String::new()
        },
        max_open_orders: input.max_open_orders.filter(|_| v3),
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
    let wallet = if v3 {
        decide::wallet_share(
            input.payment_method,
            total,
            coupon,
            input.points,
            input.wallet_amount,
        )
    } else {
        input.wallet_amount
    };
    let amounts = decide::price(total, coupon, input.points, wallet)?;

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
pub(crate) enum Settle {
    Capture,
    Release,
    /// Gives back what a paid order captured (the wallet returns with the cancel itself).
    Return,
}

/// Captures, releases or returns one held resource with its own activity. A wallet return is
/// no activity: it happens in the same transaction as the cancel.
pub(crate) async fn settle_one<W>(
    ctx: &WorkflowContext<W>,
    how: Settle,
    resource: Resource,
    order_id: &str,
) -> Result<(), ActivityExecutionError> {
    let input = OrderRef {
        order_id: order_id.to_owned(),
    };
    let opts = settle_options();
    match (how, resource) {
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
        (Settle::Return, Resource::Stock) => {
            ctx.execute_activity(OrderActivities::return_stock, input, opts)
                .await
        }
        (Settle::Return, Resource::Coupon) => {
            ctx.execute_activity(OrderActivities::return_coupon, input, opts)
                .await
        }
        (Settle::Return, Resource::Points) => {
            ctx.execute_activity(OrderActivities::return_points, input, opts)
                .await
        }
        // Returned in the same transaction as the cancel (`cancel_after_payment`).
        (Settle::Return, Resource::Wallet) => Ok(()),
    }
}

/// Captures, releases or returns every held resource (releases and returns in reverse order).
/// Every one is attempted even if another fails for good; then the failures fail the workflow,
/// loudly.
async fn settle_all(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
    how: Settle,
) -> WorkflowResult<()> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    let order: Vec<Resource> = match how {
        Settle::Capture => held.to_vec(),
        Settle::Release | Settle::Return => held.iter().rev().copied().collect(),
    };
    let mut failures = Vec::new();
    for resource in order {
        if let Err(e) = settle_one(ctx, how, resource, &order_id).await {
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
    let one_tx = ctx.patched(PATCH_ONE_TX);
    if one_tx {
        let outcome = PayOrder {
            paid: input,
            held: held.to_vec(),
        };
        ctx.execute_activity(OrderActivities::pay_order, outcome, settle_options())
            .await?;
    } else {
        ctx.execute_activity(OrderActivities::mark_paid, input, settle_options())
            .await?;
    }
    ctx.state_mut(|s| {
        s.status = OrderStatus::Paid;
        s.deadline_ms = None;
        s.applied_payment = applied;
    });
    publish(ctx, OrderStatus::Paid, None);
    if !one_tx {
        settle_all(ctx, held, Settle::Capture).await?;
    }
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
    let one_tx = ctx.patched(PATCH_ONE_TX);
    if one_tx {
        let outcome = CancelOrder {
            cancel: input,
            held: held.to_vec(),
        };
        ctx.execute_activity(OrderActivities::cancel_order, outcome, settle_options())
            .await?;
    } else {
        ctx.execute_activity(OrderActivities::mark_cancelled, input, settle_options())
            .await?;
    }
    ctx.state_mut(|s| {
        s.status = OrderStatus::Cancelled;
        s.deadline_ms = None;
    });
    publish(ctx, OrderStatus::Cancelled, None);
    if !one_tx {
        settle_all(ctx, held, Settle::Release).await?;
    }
    ctx.state_mut(|s| s.settled = true);
    Ok(())
}

/// Ends the workflow. Every payment that did not pay for the order is refunded, during the
/// late-payment grace window too; then open update handlers are waited for.
///
/// The last look at the payments is the last thing before returning: a signal that lands in
/// the same workflow task is seen, and one that lands later makes the server reject the
/// completion, so the next task sees it. A payment is never acknowledged and then dropped.
async fn finish(
    ctx: &WorkflowContext<OrderWorkflow>,
    status: OrderStatus,
) -> WorkflowResult<OrderStatus> {
    if !ctx.patched(PATCH_REFUNDS) {
        return finish_v1(ctx, status).await;
    }
    let grace_ms = ctx.state(|s| s.grace_ms());
    let settled_at = now_ms(ctx)?;
    let grace_end = match status {
        OrderStatus::Rejected => settled_at,
        _ => settled_at.saturating_add(grace_ms),
    };
    let mut handled = 0;
    loop {
        refund_unapplied(ctx, status, &mut handled).await?;
        let now = now_ms(ctx)?;
        if now < grace_end {
            temporalio_sdk::workflows::select! {
                _ = ctx.timer(decide::until(now, grace_end)) => {}
                _ = ctx.wait_condition(move |s: &OrderWorkflow| s.payments.len() > handled) => {}
            }
            continue;
        }
        ctx.wait_condition(|s: &OrderWorkflow| s.open_handlers == 0)
            .await?;
        if ctx.state(|s| s.payments.len()) == handled {
            return Ok(status);
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

/// Refunds a payment that did not pay for the order through its `refund-{payment_id}` workflow,
/// and waits for the outcome. If that workflow already exists, someone else is refunding this
/// payment: nothing more to do.
async fn refund(
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
        // Another run refunds (or refunded) this payment; which one, and how it ended, is the
        // refund row's to say: run the steps here, exactly once on that row.
        Err(temporalio_sdk::ChildWorkflowStartError::StartFailed {
            cause: temporalio_sdk::StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
            ..
        }) if ctx.patched(PATCH_REFUND_ROW) => {
            crate::refund::refund_payment(ctx, request).await?;
            Ok(())
        }
        Err(temporalio_sdk::ChildWorkflowStartError::StartFailed {
            cause: temporalio_sdk::StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
            ..
        }) => Ok(()),
        Err(e) => Err(ApplicationFailure::new(format!(
            "cannot start refund workflow {workflow_id}: {e}"
        ))
        .into()),
    }
}

/// Opens a checkout session (see `OrderWorkflow::checkout`). The deadline moves *before* the
/// provider is called, in the same workflow task that accepted the update: the timer cannot
/// fire between the acceptance and the extension.
async fn open_checkout(
    ctx: &WorkflowContext<OrderWorkflow>,
    _request: CheckoutRequest,
) -> Result<CheckoutSession, HandlerError> {
    let now = now_ms(ctx)?;
    let not_payable = |why: &str| -> HandlerError { format!("order_not_payable: {why}").into() };
    let (deadline, window) = ctx.state(|s| (s.deadline_ms, s.checkout_window_secs()));
    match deadline {
        Some(d) if now < d => {}
        _ => return Err(not_payable("the payment deadline has passed")),
    }
    // Another request is opening a session: hand out the same one.
    if ctx.state(|s| s.checkout_in_flight) {
        ctx.wait_condition(|s: &OrderWorkflow| !s.checkout_in_flight)
            .await?;
    }
    if let Some(mut session) = ctx.state(|s| s.checkout.clone())
        && decide::session_reusable(session.started_ms, now, window)
    {
        session.expires_at_ms = ctx
            .state(|s| s.deadline_ms)
            .unwrap_or(session.expires_at_ms);
        return Ok(session);
    }
    if ctx.state(|s| s.status != OrderStatus::PendingPayment || s.wait_over) {
        return Err(not_payable("the order is no longer pending"));
    }
    let (order_id, amount, currency, attempt, expires_at) = ctx.state_mut(|s| {
        let original = s.original_deadline_ms.unwrap_or(deadline.unwrap_or(now));
        let extended =
            decide::checkout_deadline(s.deadline_ms.unwrap_or(now), original, now, window);
        s.deadline_ms = Some(extended);
        s.deadline_version += 1;
        s.checkout_in_flight = true;
        s.checkout_attempts += 1;
        (
            s.input.order_id.clone(),
            s.amounts.payable,
            s.input.currency.clone(),
            s.checkout_attempts,
            extended,
        )
    });
    let opened = ctx
        .execute_activity(
            OrderActivities::open_checkout,
            OpenCheckout {
                order_id: order_id.clone(),
                attempt,
                amount,
                currency: currency.clone(),
            },
            checkout_options(),
        )
        .await;
    let provider = match opened {
        Ok(p) => p,
        Err(e) => {
            ctx.state_mut(|s| s.checkout_in_flight = false);
            return Err(format!(
                "provider_unavailable: the payment provider did not open a session: {e}"
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
    let recorded = ctx
        .execute_activity(
            OrderActivities::record_checkout,
            RecordCheckout {
                order_id,
                session: session.clone(),
            },
            settle_options(),
        )
        .await;
    ctx.state_mut(|s| {
        s.checkout_in_flight = false;
        s.checkout = Some(session.clone());
    });
    recorded?;
    if ctx.state(|s| s.status == OrderStatus::PendingPayment && !s.wait_over) {
        publish_step(ctx, "checkout_open", Some(expires_at));
    }
    Ok(session)
}

/// v1 of `finish`, for orders started before `PATCH_REFUNDS`: records every payment that did
/// not pay for the order, waits for open update handlers, and ends the workflow.
async fn finish_v1(
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

/// The payment an admin order paid offline: recorded like any other, never sent to a provider.
fn offline_payment(input: &PlaceOrder, amount: i64) -> PaymentReceived {
    PaymentReceived {
        payment_id: format!("offline-{}", input.order_id),
        event_id: format!("admin-{}", input.order_id),
        amount,
        currency: input.currency.clone(),
    }
}

/// v3, once paid: fulfil, then wait for the shipment (physical goods), a cancel, and late or
/// duplicate payments until the grace window after the order came to rest. Then end.
async fn after_payment(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
) -> WorkflowResult<OrderStatus> {
    let grace_ms = ctx.state(|s| s.grace_ms());
    let order_id = ctx.state(|s| s.input.order_id.clone());

    // Fulfil, unless a cancel is already waiting.
    let mut rest_since = None;
    if ctx.state(|s| s.cancel_request.is_some()) {
        ctx.state_mut(|s| s.fulfil_done = true);
    } else {
        let at_ms = now_ms(ctx)?;
        let fulfilled = ctx
            .execute_activity(
                OrderActivities::fulfil,
                OrderAt {
                    order_id: order_id.clone(),
                    at_ms,
                },
                settle_options(),
            )
            .await;
        ctx.state_mut(|s| s.fulfil_done = true);
        match fulfilled {
            Ok(f) if f.needs_shipping => ctx.state_mut(|s| s.awaiting_shipment = true),
            Ok(_) => {
                ctx.state_mut(|s| s.status = OrderStatus::Fulfilled);
                publish(ctx, OrderStatus::Fulfilled, None);
                rest_since = Some(now_ms(ctx)?);
            }
            // Retries are unlimited: an error here is a business failure, for good.
            Err(_) => {
                compensate(ctx, held, CancelReason::FulfilmentFailed).await?;
                rest_since = Some(now_ms(ctx)?);
            }
        }
    }

    let mut handled = 0;
    loop {
        let status = ctx.state(|s| s.status);
        refund_unapplied(ctx, status, &mut handled).await?;
        // A cancel before shipping.
        let cancel = ctx.state(|s| {
            s.cancel_request
                .filter(|_| s.status != OrderStatus::Cancelled && !s.shipped && !s.closing)
        });
        if let Some(reason) = cancel {
            compensate(ctx, held, reason).await?;
            rest_since = Some(now_ms(ctx)?);
            continue;
        }
        let now = now_ms(ctx)?;
        if rest_since.is_none() && ctx.state(|s| s.shipped) {
            rest_since = Some(now);
        }
        let grace_end = rest_since.map(|t| t.saturating_add(grace_ms));
        match grace_end {
            Some(end) if now >= end => {
                ctx.state_mut(|s| s.closing = true);
                ctx.wait_condition(|s: &OrderWorkflow| s.open_handlers == 0)
                    .await?;
                if ctx.state(|s| s.payments.len()) == handled {
                    return Ok(ctx.state(|s| s.status));
                }
            }
            _ => {
                let shipped = ctx.state(|s| s.shipped);
                let woken = move |s: &OrderWorkflow| {
                    s.payments.len() > handled
                        || s.shipped != shipped
                        || (s.cancel_request.is_some()
                            && s.status != OrderStatus::Cancelled
                            && !s.shipped)
                };
                match grace_end {
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

/// Undoes a paid order: stop fulfilment (intercept the shipment, revoke entitlements), mark it
/// cancelled (its wallet funds return in the same transaction), refund the payment, and return
/// the stock, coupon and points. Every step is idempotent and retried until it succeeds.
async fn compensate(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
    reason: CancelReason,
) -> WorkflowResult<()> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    let at_ms = now_ms(ctx)?;
    ctx.state_mut(|s| s.compensating = true);
    ctx.execute_activity(
        OrderActivities::stop_fulfilment,
        OrderAt {
            order_id: order_id.clone(),
            at_ms,
        },
        settle_options(),
    )
    .await?;
    let cancelled = MarkCancelled {
        order_id: order_id.clone(),
        reason,
        at_ms,
    };
    let one_tx = ctx.patched(PATCH_ONE_TX);
    if one_tx {
        let outcome = CancelOrder {
            cancel: cancelled,
            held: held.to_vec(),
        };
        ctx.execute_activity(
            OrderActivities::cancel_paid_order,
            outcome,
            settle_options(),
        )
        .await?;
    } else {
        ctx.execute_activity(
            OrderActivities::cancel_after_payment,
            cancelled,
            settle_options(),
        )
        .await?;
    }
    ctx.state_mut(|s| {
        s.status = OrderStatus::Cancelled;
        s.awaiting_shipment = false;
    });
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
        let refunded = refund(ctx, OrderStatus::Cancelled, payment, Some(why)).await;
        if refunded.is_err() && !one_tx && ctx.patched(PATCH_REFUND_ROW) {
            // The goods come back even if the money could not: then the failure is raised.
            settle_all(ctx, held, Settle::Return).await?;
            ctx.state_mut(|s| s.compensating = false);
        }
        refunded?;
    }
    // With one transaction per outcome, everything came back with the cancel itself.
    if !one_tx {
        settle_all(ctx, held, Settle::Return).await?;
    }
    ctx.state_mut(|s| s.compensating = false);
    Ok(())
}
