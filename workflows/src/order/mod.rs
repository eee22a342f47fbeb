//! `OrderWorkflow`: one order from reservation to fulfilled, cancelled or rejected, as an
//! explicit phase machine. `docs/architecture.md` draws the phases and says where new steps go.
//!
//! Deterministic code only. Talk to the world through `ctx`: activities, timers, signals,
//! updates. No clocks (use `ctx.workflow_time()`), no RNG, no I/O, no `tokio::select!` (use
//! `temporalio_sdk::workflows::select!`), no HashMap iteration (use BTreeSet/BTreeMap). Once
//! released, a change that adds, removes or reorders `ctx.*` calls goes behind
//! `ctx.patched("...")` with a new recorded history under `tests/histories/` (see the README's
//! upgrade policy).
//!
//! The lifecycle, as [`lifecycle`] reads top to bottom:
//! 1. [`reserve`]: hold stock, coupon, points and wallet (a saga: a refusal releases what was
//!    held, and the order ends `rejected`); the `order.placed` update answers the HTTP caller;
//! 2. [`wait`]: wait for a matching payment, a cancel or the deadline (an updatable timer; an
//!    open checkout session moves the deadline out so the payer is not cancelled under), then
//!    commit the outcome in one transaction: `paid` with every capture, or `cancelled` with
//!    every release;
//! 3. [`fulfil`]: once paid, grant entitlements, or create a shipment and wait for `order.ship`.
//!    A cancel before shipping, or a fulfilment that fails for good, undoes the paid order;
//! 4. [`refunds`]: at rest, every payment that did not pay for the order (late, duplicate,
//!    wrong amount) is refunded by its `refund-{payment_id}` child, through the late-payment
//!    grace window. Then the run ends.
//!
//! A step that fails for good (a constraint violation, unreadable data, an inconsistent hold)
//! does not fail the run: the step rolled back whole, the order waits in
//! [`Phase::NeedsAttention`] (search attribute, event, audit, metric), and `order.retry` carries
//! it on from the database, the way reconciliation resumes an order whose run is gone.

mod fulfil;
mod refunds;
mod reserve;
mod wait;

use crate::contract::OrderActivities;
use crate::decide::{self, Wake};
use crate::model::*;
use crate::policy::{DbStep, db_step, now_ms, settle_options};
use crate::refusal::{RefusalCode, Refused};
use crate::search;
use std::collections::BTreeSet;
use temporalio_common::search_attributes::Timestamp;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ApplicationFailure, OutgoingWorkflowError, SyncWorkflowContext, WorkflowContext,
    WorkflowContextView, WorkflowResult, WorkflowTermination,
};

pub(crate) use reserve::settle;

type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Where an order is in its life. Each phase holds only the data valid in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Holding stock, coupon, points and wallet; `order.placed` waits for the outcome.
    Reserving,
    /// Waiting for a payment, a cancel or the deadline.
    AwaitingPayment(Waiting),
    /// The wait is over: the outcome (paid, or cancelled) is being committed.
    Settling,
    /// Paid: the fulfil activity runs (an `order.ship` waits for it to say what ships).
    Fulfilling,
    /// A shipment waits for the admin; `shipping` while `order.ship` commits it.
    AwaitingShipment { shipping: bool },
    /// A paid order is being undone: fulfilment stopped, cancelled, refunded, returned.
    Compensating,
    /// At rest since `since_ms`: late and duplicate payments are refunded until the grace
    /// window ends. `shipped`: the goods have left (a cancel is refused).
    Grace { since_ms: i64, shipped: bool },
    /// The grace window is over: nothing more is accepted; the run ends once every open
    /// handler is answered and every payment handled.
    Closing { shipped: bool },
    /// A step failed for good; waiting for ops (`order.retry`). The code is on the
    /// `needs_attention` row and the order's event.
    NeedsAttention,
}

/// The wait for payment: the deadline (data, not a timer, so that a checkout can move it) and
/// the checkout session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub deadline_ms: i64,
    /// Grows whenever the deadline moves, so that the wait re-arms its timer.
    pub version: u64,
    /// The deadline the order was created with; checkout extensions are capped from it.
    pub original_ms: i64,
    /// The latest session, and whether one is being opened right now.
    pub checkout: Option<CheckoutSession>,
    pub opening: bool,
    pub attempts: u32,
}

impl Waiting {
    fn new(deadline_ms: i64) -> Self {
        Waiting {
            deadline_ms,
            version: 0,
            original_ms: deadline_ms,
            checkout: None,
            opening: false,
            attempts: 0,
        }
    }
}

/// The authorization that paid the order, while it is not captured: captured when the shipment
/// leaves, or acted on (`CapturePolicy::on_expiry`) a margin before `capture_before_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub payment_id: String,
    pub capture_before_ms: i64,
}

impl Authorization {
    /// The authorization a payment is, if it is one not captured yet.
    fn of(payment: &PaymentReceived) -> Option<Authorization> {
        Some(Authorization {
            payment_id: payment.payment_id.clone(),
            capture_before_ms: payment.capture_before_ms?,
        })
    }
}

/// The patch under which a payment may be only authorized (issue 14): the shipment captures
/// it, and a timer acts before its `capture_before`. Histories recorded before it never met an
/// authorization, and never reach the code behind it.
pub const AUTHORIZE_THEN_CAPTURE: &str = "authorize-then-capture";

/// The state of one order, as the engine replays it.
#[workflow]
pub struct OrderWorkflow {
    input: PlaceOrder,
    phase: Phase,
    /// The status as stored, and as `order.state` and the search attribute show it.
    status: OrderStatus,
    rejection: Option<Refusal>,
    amounts: Amounts,
    /// Payments in arrival order, deduplicated by `payment_id` (signals are not deduplicated
    /// by Temporal).
    payments: Vec<PaymentReceived>,
    seen_payment_ids: BTreeSet<String>,
    /// The payment that paid for the order.
    applied_payment: Option<String>,
    cancel_request: Option<CancelReason>,
    /// Update handlers still running; the run answers them all before it ends.
    open_handlers: u32,
    /// Retries ops asked for (`order.retry`), counted so that none is missed.
    retries_requested: u32,
    /// Whether a checkout session was asked for while the order waited: its cancel then ends
    /// the sessions at the provider.
    checkout_tried: bool,
    /// The applied payment, while it is an authorization not captured yet.
    authorization: Option<Authorization>,
}

#[workflow_methods]
impl OrderWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: PlaceOrder) -> Self {
        OrderWorkflow {
            input,
            phase: Phase::Reserving,
            status: OrderStatus::Reserving,
            rejection: None,
            amounts: Amounts::default(),
            payments: Vec::new(),
            seen_payment_ids: BTreeSet::new(),
            applied_payment: None,
            cancel_request: None,
            open_handlers: 0,
            retries_requested: 0,
            checkout_tried: false,
            authorization: None,
        }
    }

    /// The lifecycle; a step that fails for good waits for ops, then carries on.
    #[run(name = "order")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<OrderStatus> {
        let mut outcome = lifecycle(ctx).await;
        loop {
            let problem = match &outcome {
                Err(WorkflowTermination::Failed(failure)) => Problem::of(failure),
                _ => return outcome,
            };
            wait_for_ops(ctx, problem).await?;
            outcome = resume(ctx).await;
        }
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
        } else {
            crate::sometimes::reached(
                crate::sometimes::DUPLICATE_PAYMENT_SIGNAL,
                &self.input.order_id,
            );
        }
    }

    /// The provider ended a checkout session unpaid: it is not handed out again, and the next
    /// checkout opens a new one. It issues no command, so histories before it replay as they
    /// were.
    #[signal(name = "order.session_ended")]
    pub fn session_ended(&mut self, _ctx: &mut SyncWorkflowContext<Self>, ended: SessionEnded) {
        if let Some(w) = self.waiting_mut()
            && w.checkout
                .as_ref()
                .is_some_and(|s| s.session_id == ended.session_id)
        {
            w.checkout = None;
        }
    }

    /// Ops fixed what stopped the order in `needs_attention`: try again.
    #[signal(name = "order.retry")]
    pub fn retry(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.retries_requested += 1;
    }

    /// Answers once the reservation saga is decided: the HTTP caller of `POST /v1/orders`
    /// learns `pending_payment` or `rejected` in the same response.
    #[update(name = "order.placed")]
    pub async fn placed(ctx: &mut WorkflowContext<Self>) -> Placement {
        let ctx: &WorkflowContext<Self> = ctx;
        counted(ctx, async {
            // Only a cancellation of the workflow itself ends this wait early; the placement
            // is then reported as it stands.
            let _ = ctx
                .wait_condition(|s: &Self| s.status != OrderStatus::Reserving)
                .await;
            ctx.state(|s| Placement {
                order_id: s.input.order_id.clone(),
                request_hash: s.input.request_hash.clone(),
                status: s.status,
                rejection: s.rejection.clone(),
            })
        })
        .await
    }

    #[update_validator(cancel)]
    fn validate_cancel(
        &self,
        _ctx: &WorkflowContextView,
        _request: &CancelRequest,
    ) -> Result<(), HandlerError> {
        if self.status == OrderStatus::Cancelled {
            return Ok(());
        }
        match &self.phase {
            _ if self.shipping_or_shipped() => {
                Err(Refused::new(RefusalCode::OrderAlreadyShipped, "the shipment has left").into())
            }
            Phase::Reserving | Phase::AwaitingPayment(_) | Phase::Settling => Ok(()),
            Phase::Fulfilling
            | Phase::AwaitingShipment { .. }
            | Phase::Compensating
            | Phase::Grace { .. }
                if matches!(self.status, OrderStatus::Paid | OrderStatus::Fulfilled) =>
            {
                Ok(())
            }
            _ => Err(Refused::new(
                RefusalCode::OrderNotCancellable,
                format!("the order is {}", self.status),
            )
            .into()),
        }
    }

    /// Cancels the order and answers once it is undone: a pending order released, a paid one
    /// stopped, refunded and returned. If a payment or a shipment won the race, the answer
    /// says so.
    #[update(name = "order.cancel")]
    pub async fn cancel(ctx: &mut WorkflowContext<Self>, request: CancelRequest) -> CancelOutcome {
        let ctx: &WorkflowContext<Self> = ctx;
        counted(ctx, async {
            // A ship that got in first (running or done) wins. Check and set in one step, like
            // the ship's own.
            let shipping = ctx.state_mut(|s| {
                let shipping = s.shipping_or_shipped();
                if !shipping {
                    s.cancel_request.get_or_insert(request.reason);
                }
                shipping
            });
            let _ = if shipping {
                ctx.wait_condition(|s: &Self| {
                    !matches!(s.phase, Phase::AwaitingShipment { shipping: true })
                })
                .await
            } else {
                ctx.wait_condition(|s: &Self| s.cancel_answered()).await
            };
            ctx.state(|s| CancelOutcome { status: s.status })
        })
        .await
    }

    #[update_validator(checkout)]
    fn validate_checkout(
        &self,
        _ctx: &WorkflowContextView,
        _request: &CheckoutRequest,
    ) -> Result<(), HandlerError> {
        match (&self.phase, self.status) {
            (Phase::AwaitingPayment(_), OrderStatus::PendingPayment) => Ok(()),
            (_, OrderStatus::PendingPayment) => {
                Err(Refused::new(RefusalCode::OrderNotPayable, "the order is being settled").into())
            }
            (_, status) => Err(Refused::new(
                RefusalCode::OrderNotPayable,
                format!("the order is {status}"),
            )
            .into()),
        }
    }

    /// Opens (or hands out again) a provider checkout session for the payable amount, and
    /// moves the deadline so that the order is not cancelled while the payer pays.
    #[update(name = "order.checkout")]
    pub async fn checkout(
        ctx: &mut WorkflowContext<Self>,
        request: CheckoutRequest,
    ) -> Result<CheckoutSession, HandlerError> {
        counted(ctx, wait::open_checkout(ctx, request)).await
    }

    #[update_validator(ship)]
    fn validate_ship(
        &self,
        _ctx: &WorkflowContextView,
        _request: &ShipRequest,
    ) -> Result<(), HandlerError> {
        self.ship_refusal().map_or(Ok(()), |r| Err(r.into()))
    }

    /// The admin ships a paid order's goods: shipment `shipped`, order `fulfilled`. A cancel
    /// that arrives while this runs is refused (`order_already_shipped`), and a ship that
    /// arrives after a cancel is refused: exactly one of them wins.
    #[update(name = "order.ship")]
    pub async fn ship(
        ctx: &mut WorkflowContext<Self>,
        _request: ShipRequest,
    ) -> Result<OrderStatus, HandlerError> {
        counted(ctx, fulfil::ship(ctx)).await
    }

    #[query(name = "order.state")]
    pub fn state(&self, _ctx: &WorkflowContextView) -> OrderState {
        OrderState {
            order_id: self.input.order_id.clone(),
            status: self.status,
            expires_at_ms: self.waiting().map(|w| w.deadline_ms),
            settled: !matches!(
                self.phase,
                Phase::Reserving
                    | Phase::AwaitingPayment(_)
                    | Phase::Settling
                    | Phase::NeedsAttention
            ),
            payments_seen: self.payments.len(),
        }
    }
}

impl OrderWorkflow {
    fn waiting(&self) -> Option<&Waiting> {
        match &self.phase {
            Phase::AwaitingPayment(w) => Some(w),
            _ => None,
        }
    }

    fn waiting_mut(&mut self) -> Option<&mut Waiting> {
        match &mut self.phase {
            Phase::AwaitingPayment(w) => Some(w),
            _ => None,
        }
    }

    /// Why a ship must be refused now, if it must; read by the validator, and again by the
    /// handler once fulfilment said what ships.
    fn ship_refusal(&self) -> Option<Refused> {
        let why = if self.cancel_request.is_some() || self.status == OrderStatus::Cancelled {
            "the order is cancelled or being cancelled".to_owned()
        } else if self.shipping_or_shipped() {
            "the order has shipped already".to_owned()
        } else {
            match (&self.phase, self.status) {
                (Phase::AwaitingShipment { .. }, _) => return None,
                // Paid and not fulfilled yet: the handler waits for fulfilment to say what ships.
                (Phase::Settling | Phase::Fulfilling, OrderStatus::Paid) => return None,
                (_, status) => format!("the order is {status} with nothing to ship"),
            }
        };
        Some(Refused::new(RefusalCode::OrderNotShippable, why))
    }

    /// The goods are leaving or have left: a cancel is too late.
    fn shipping_or_shipped(&self) -> bool {
        matches!(
            self.phase,
            Phase::AwaitingShipment { shipping: true }
                | Phase::Grace { shipped: true, .. }
                | Phase::Closing { shipped: true }
        )
    }

    /// Whether a cancel has its answer: the order came to rest cancelled (or was rejected),
    /// or nothing more will change.
    fn cancel_answered(&self) -> bool {
        match self.phase {
            Phase::Closing { .. } => true,
            Phase::Grace { .. } => {
                matches!(self.status, OrderStatus::Cancelled | OrderStatus::Rejected)
            }
            _ => false,
        }
    }

    /// A cancel of a paid order that is still due: not shipped, not closing, not done.
    fn cancel_due(&self) -> Option<CancelReason> {
        let paid = matches!(self.status, OrderStatus::Paid | OrderStatus::Fulfilled);
        let open = matches!(
            self.phase,
            Phase::AwaitingShipment { shipping: false } | Phase::Grace { shipped: false, .. }
        );
        self.cancel_request.filter(|_| paid && open)
    }

    /// When the uncaptured authorization must be acted on: only while the order waits for its
    /// shipment, with no cancel asked for (a ship captures it; a cancel voids it).
    fn authorization_due_ms(&self) -> Option<i64> {
        let waiting = self.phase == Phase::AwaitingShipment { shipping: false };
        let auth = self.authorization.as_ref().filter(|_| waiting)?;
        let margin = self.input.capture.map_or(0, |c| c.margin_secs);
        self.cancel_request.is_none().then(|| {
            auth.capture_before_ms
                .saturating_sub(decide::secs_to_ms(margin))
        })
    }

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
            self.waiting().map(|w| w.deadline_ms),
            now_ms,
        )
    }
}

/// The order came to rest with `status` at `since_ms`: the grace window starts, and ops see the
/// status. `shipped`: its goods have left (a cancel is too late from now on).
fn at_rest(
    ctx: &WorkflowContext<OrderWorkflow>,
    status: OrderStatus,
    since_ms: i64,
    shipped: bool,
) {
    ctx.state_mut(|s| {
        s.status = status;
        s.phase = Phase::Grace { since_ms, shipped };
    });
    publish(ctx, status, None);
}

/// Runs an update handler's body, counted as open until it answers: the run does not end
/// while one is open.
async fn counted<T>(ctx: &WorkflowContext<OrderWorkflow>, body: impl Future<Output = T>) -> T {
    ctx.state_mut(|s| s.open_handlers += 1);
    let out = body.await;
    ctx.state_mut(|s| s.open_handlers -= 1);
    out
}

/// A new order, top to bottom.
async fn lifecycle(ctx: &WorkflowContext<OrderWorkflow>) -> WorkflowResult<OrderStatus> {
    let input = ctx.state(|s| s.input.clone());
    // Started by reconciliation for an order whose previous run is gone.
    if input.resume {
        return resume(ctx).await;
    }
    publish(ctx, OrderStatus::Reserving, None);

    // 1. Reserve. `held` lists every resource a reservation was attempted for, so that a
    //    rejection releases (or tombstones) each of them.
    let mut held = Vec::new();
    let amounts = match reserve::reserve_all(ctx, &input, &mut held).await {
        Ok(amounts) => amounts,
        Err(refusal) => {
            reserve::reject(ctx, &held, refusal).await?;
            return refunds::rest(ctx, &held).await;
        }
    };

    // 2. Nothing left to pay, or an admin order paid offline: paid at creation, no deadline.
    let offline = input.payment_method == PaymentMethod::Offline;
    if amounts.payable == 0 || offline {
        reserve::record_order(ctx, OrderStatus::PendingPayment, amounts, None, None).await?;
        ctx.state_mut(|s| s.amounts = amounts);
        let payment = offline.then(|| offline_payment(&input, amounts.payable));
        if let Some(p) = &payment {
            ctx.state_mut(|s| {
                s.seen_payment_ids.insert(p.payment_id.clone());
                s.payments.push(p.clone());
            });
        }
        wait::pay(ctx, &held, payment).await?;
        return paid(ctx, &held).await;
    }

    // 3. Wait for the payment, a cancel or the deadline, and settle.
    let now = now_ms(ctx)?;
    let deadline = decide::deadline(now, input.payment_timeout_secs);
    reserve::record_order(
        ctx,
        OrderStatus::PendingPayment,
        amounts,
        Some(deadline),
        None,
    )
    .await?;
    ctx.state_mut(|s| {
        s.amounts = amounts;
        s.status = OrderStatus::PendingPayment;
        s.phase = Phase::AwaitingPayment(Waiting::new(deadline));
    });
    publish(ctx, OrderStatus::PendingPayment, Some(deadline));
    wait_then_settle(ctx, &held).await
}

/// Steps 2 to 4 of a pending order: the wait, its outcome, then fulfilment or rest.
async fn wait_then_settle(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
) -> WorkflowResult<OrderStatus> {
    match wait::wait_for_payment(ctx).await? {
        Wake::Pay(payment) => {
            wait::pay(ctx, held, Some(payment)).await?;
            paid(ctx, held).await
        }
        Wake::Cancel(reason) => {
            wait::cancel(ctx, held, reason).await?;
            refunds::rest(ctx, held).await
        }
        Wake::Wait => unreachable!("the wait only ends on a decision"),
    }
}

/// Steps 3 and 4 of a paid order: fulfil, then rest through the grace window.
async fn paid(
    ctx: &WorkflowContext<OrderWorkflow>,
    held: &[Resource],
) -> WorkflowResult<OrderStatus> {
    fulfil::fulfil(ctx, held).await?;
    refunds::rest(ctx, held).await
}

/// A run started for an order whose previous run is gone (reconciliation), or one that ops
/// asked to retry: the order is read back from the database and carried on from where it is,
/// never guessed at. A pending order paid meanwhile (a held payment, an unprocessed inbox
/// event, a payment only the provider has) is paid and fulfilled; one that was not is cancelled
/// (`reconciled`, unless a cancel was already asked for) and released. A paid one has its
/// captures completed and is fulfilled. Every step is the same idempotent activity.
async fn resume(ctx: &WorkflowContext<OrderWorkflow>) -> WorkflowResult<OrderStatus> {
    let order_id = ctx.state(|s| s.input.order_id.clone());
    // Remote: it may ask the provider for the order's payments, heartbeating.
    let loaded = ctx
        .execute_activity(
            OrderActivities::load_order,
            OrderRef {
                order_id: order_id.clone(),
            },
            settle_options(),
        )
        .await?;
    let held = loaded.held.clone();
    let now = now_ms(ctx)?;
    ctx.state_mut(|s| {
        s.status = loaded.status;
        s.amounts = loaded.amounts;
        for p in loaded.applied.iter().chain(&loaded.waiting) {
            if s.seen_payment_ids.insert(p.payment_id.clone()) {
                s.payments.push(p.clone());
            }
        }
        s.applied_payment = loaded.applied.as_ref().map(|p| p.payment_id.clone());
        // Read back uncaptured: the shipment still captures it, and the timer still runs.
        s.authorization = loaded.applied.as_ref().and_then(Authorization::of);
    });
    publish(ctx, loaded.status, loaded.expires_at_ms);
    match loaded.status {
        OrderStatus::PendingPayment => {
            let deadline = loaded.expires_at_ms.unwrap_or(now);
            ctx.state_mut(|s| {
                s.phase = Phase::AwaitingPayment(Waiting::new(deadline));
                if loaded.waiting.is_empty() {
                    s.cancel_request.get_or_insert(CancelReason::Reconciled);
                }
            });
            wait_then_settle(ctx, &held).await
        }
        OrderStatus::Paid => {
            ctx.state_mut(|s| s.phase = Phase::Settling);
            settle(ctx, &order_id, &held, Move::Capture).await?;
            paid(ctx, &held).await
        }
        other => Err(ApplicationFailure::non_retryable(format!(
            "order {order_id}: a {other} order is not resumed"
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
    ///
    /// A remote activity's failure carries the application failure as its cause; a local
    /// activity's may be the application failure itself. So the failure chain is walked, top
    /// first, to the first application failure with a type.
    fn of(failure: &OutgoingWorkflowError) -> Problem {
        let mut next = match failure {
            OutgoingWorkflowError::ActivityExecution(e) => e.failure(),
            _ => None,
        };
        while let Some(f) = next {
            if let Some(info) = f.maybe_application_failure()
                && !info.r#type.is_empty()
            {
                return Problem {
                    code: info.r#type.clone(),
                    message: f.message.clone(),
                };
            }
            next = f.cause.as_deref();
        }
        Problem {
            code: "settlement_failed".to_owned(),
            message: failure.to_string(),
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
    let seen = ctx.state_mut(|s| {
        s.phase = Phase::NeedsAttention;
        s.retries_requested
    });
    let raised = NeedsAttention {
        order_id: order_id.clone(),
        code: problem.code,
        message: problem.message,
        at_ms: now_ms(ctx)?,
    };
    db_step(
        ctx,
        OrderActivities::raise_attention,
        raised,
        DbStep::Settle,
    )
    .await?;
    publish_step(ctx, "needs_attention", None);
    ctx.wait_condition(move |s: &OrderWorkflow| s.retries_requested > seen)
        .await?;
    let resolved = AttentionResolved {
        order_id,
        at_ms: now_ms(ctx)?,
    };
    db_step(
        ctx,
        OrderActivities::resolve_attention,
        resolved,
        DbStep::Settle,
    )
    .await?;
    Ok(())
}

/// The payment an admin order paid offline: recorded like any other, never sent to a provider.
fn offline_payment(input: &PlaceOrder, amount: i64) -> PaymentReceived {
    PaymentReceived {
        payment_id: format!("offline-{}", input.order_id),
        event_id: format!("admin-{}", input.order_id),
        amount,
        currency: input.currency.clone(),
        capture_before_ms: None,
    }
}

/// Upserts the search attributes that ops filter on in the Web UI. `PaymentDeadline` is only
/// ever set, not unset: the server rejects the SDK's unset encoding for Datetime attributes,
/// and `OrderStatus` says whether the deadline still matters (the README's query pairs them).
fn publish(ctx: &WorkflowContext<OrderWorkflow>, status: OrderStatus, deadline_ms: Option<i64>) {
    publish_step(ctx, status.as_str(), deadline_ms);
}

/// `publish` with a step that is not a stored status (`checkout_open`, `needs_attention`).
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
