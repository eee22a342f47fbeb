//! `OrderActivitiesImpl`: the Temporal activities that implement the workflow's contract.
//!
//! Each activity is a thin wrapper: one store function, one transaction, and the error
//! classification of `error::into_activity_error` (transient errors retried, business errors
//! non-retryable). The spans carry `order_id`. No logic lives here that a test could not reach
//! by calling the store function directly.

use crate::Db;
use crate::error::into_activity_error;
use crate::funds::{POINTS, WALLET};
use crate::provider::{
    CreateCheckoutSession, CreateRefund, PaymentProvider, ProviderError, SessionExpiry,
};
use orderflow_workflows::contract::markers;
use orderflow_workflows::model::*;
use std::sync::Arc;
use std::time::Duration;
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// The activity implementations, sharing one database pool and one provider client.
pub struct OrderActivitiesImpl {
    pub db: Db,
    pub provider: PaymentProvider,
    /// How long a payment for an unknown order is held before it is refunded (the inbox
    /// re-drive hands payments on with it, as the webhook does).
    pub unknown_order_hold_secs: u64,
    /// The deployment's order settings, for an order workflow started again by reconciliation
    /// (the API gives them to new orders).
    pub settings: OrderSettings,
}

/// The deployment's settings that an order workflow carries in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderSettings {
    /// `ORDER_CHECKOUT_WINDOW`.
    pub checkout_window_secs: u64,
    /// `ORDER_LATE_PAYMENT_GRACE`.
    pub late_payment_grace_secs: u64,
    /// `ORDER_CAPTURE`, `ORDER_AUTHORIZATION_EXPIRY` and `ORDER_AUTHORIZATION_MARGIN`.
    pub capture: CapturePolicy,
}

impl OrderActivitiesImpl {
    pub fn new(
        db: Db,
        provider: PaymentProvider,
        unknown_order_hold_secs: u64,
        settings: OrderSettings,
    ) -> Self {
        OrderActivitiesImpl {
            db,
            provider,
            unknown_order_hold_secs,
            settings,
        }
    }
}

/// Inbox events re-driven per reconciliation run, at most.
const REDRIVE_BATCH: i64 = 500;

/// Runs a provider call while heartbeating every second, so that the server notices a dead
/// worker within the heartbeat timeout and retries elsewhere (with the same idempotency key).
async fn heartbeating<T>(ctx: &ActivityContext, call: impl Future<Output = T>) -> T {
    tokio::pin!(call);
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            out = &mut call => return out,
            _ = beat.tick() => {
                let _ = ctx.record_heartbeat(()).await;
            }
        }
    }
}

/// An activity's answer once its transaction is over: the `after_commit` fault point (for the
/// crash tests; empty in a normal build) when it committed, then the error classification. A
/// point armed to lose the commit's acknowledgement answers what a dropped connection would: a
/// transient database error, after the commit.
fn committed<T>(
    result: Result<T, crate::StoreError>,
    point: &str,
    order_id: &str,
    resource: Option<&str>,
) -> Result<T, ActivityError> {
    if result.is_ok() && crate::faults::after_commit(point, order_id, resource) {
        return Err(commit_answer_lost());
    }
    result.map_err(into_activity_error)
}

/// What an activity answers when a `lost_ack` fault point fires: the transient error of a
/// connection lost after the commit.
fn commit_answer_lost() -> ActivityError {
    let lost = std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "fault point: the answer to the commit was lost",
    );
    into_activity_error(crate::StoreError::Db(sqlx::Error::Io(lost)))
}

/// A provider failure the caller may retry (with the same idempotency key).
fn provider_unavailable(e: ProviderError) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(e))
}

/// The order id an activity input is about, for its tracing span.
pub trait AboutOrder {
    fn order_id(&self) -> &str;
}

macro_rules! about_order {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => { $(impl AboutOrder for $t { fn order_id(&self) -> &str { let $v = self; $e } })* };
}
about_order! {
    ReserveOrder => |x| &x.order_id,
    ReserveStock => |x| &x.order_id,
    ReserveCoupon => |x| &x.order_id,
    ReserveFunds => |x| &x.order_id,
    OrderRef => |x| &x.order_id,
    RecordOrder => |x| &x.order.order_id,
    MarkPaid => |x| &x.order_id,
    MarkCancelled => |x| &x.order_id,
    SettleHolds => |x| &x.order_id,
    NeedsAttention => |x| &x.order_id,
    AttentionResolved => |x| &x.order_id,
    OpenCheckout => |x| &x.order_id,
    ExpireCheckouts => |x| &x.order_id,
    RecordCheckout => |x| &x.order_id,
    RefundPayment => |x| &x.order_id,
    RecordRefundResult => |x| &x.order_id,
    OrderRefundRef => |x| &x.order_id,
    RecordOrderRefund => |x| &x.order_id,
    PayOrder => |x| &x.paid.order_id,
    CancelOrder => |x| &x.cancel.order_id,
    StrayPayment => |x| &x.order_id,
    OrderAt => |x| &x.order_id,
}

#[activities]
impl OrderActivitiesImpl {
    #[activity(definition = markers::ReserveOrder)]
    #[tracing::instrument(name = "reserve_order", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn reserve_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReserveOrder,
    ) -> Result<OrderReservation, ActivityError> {
        let reserved = crate::reservation::reserve_order(&self.db, &input).await;
        // One commit for every hold: each held resource's point is reached after it.
        let lost = reserved.as_ref().is_ok_and(|r| {
            crate::reservation::held_by(&input, r)
                .iter()
                .any(|resource| {
                    crate::faults::after_commit(
                        "reserve.after_commit",
                        &input.order_id,
                        Some(resource.as_str()),
                    )
                })
        });
        if lost {
            return Err(commit_answer_lost());
        }
        reserved.map_err(into_activity_error)
    }

    #[activity(definition = markers::ReserveStock)]
    #[tracing::instrument(name = "reserve_stock", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn reserve_stock(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReserveStock,
    ) -> Result<Reservation, ActivityError> {
        let reserved = crate::stock::reserve(&self.db, &input).await;
        committed(
            reserved,
            "reserve.after_commit",
            &input.order_id,
            Some("stock"),
        )
    }

    #[activity(definition = markers::ReserveCoupon)]
    #[tracing::instrument(name = "reserve_coupon", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn reserve_coupon(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReserveCoupon,
    ) -> Result<Reservation, ActivityError> {
        let reserved = crate::coupons::reserve(&self.db, &input).await;
        committed(
            reserved,
            "reserve.after_commit",
            &input.order_id,
            Some("coupon"),
        )
    }

    #[activity(definition = markers::ReservePoints)]
    #[tracing::instrument(name = "reserve_points", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn reserve_points(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReserveFunds,
    ) -> Result<Reservation, ActivityError> {
        let reserved = crate::funds::reserve(&self.db, POINTS, &input).await;
        committed(
            reserved,
            "reserve.after_commit",
            &input.order_id,
            Some("points"),
        )
    }

    #[activity(definition = markers::ReserveWallet)]
    #[tracing::instrument(name = "reserve_wallet", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn reserve_wallet(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReserveFunds,
    ) -> Result<Reservation, ActivityError> {
        let reserved = crate::funds::reserve(&self.db, WALLET, &input).await;
        committed(
            reserved,
            "reserve.after_commit",
            &input.order_id,
            Some("wallet"),
        )
    }

    #[activity(definition = markers::RecordOrder)]
    #[tracing::instrument(name = "record_order", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn record_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordOrder,
    ) -> Result<(), ActivityError> {
        crate::orders::record(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::SettleHolds)]
    #[tracing::instrument(name = "settle_holds", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn settle_holds(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: SettleHolds,
    ) -> Result<(), ActivityError> {
        crate::outcome::settle_holds(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::PayOrder)]
    #[tracing::instrument(name = "pay_order", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn pay_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PayOrder,
    ) -> Result<(), ActivityError> {
        let paid = crate::outcome::pay(&self.db, &input).await;
        committed(paid, "capture.after_commit", input.order_id(), None)
    }

    #[activity(definition = markers::CancelOrder)]
    #[tracing::instrument(name = "cancel_order", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn cancel_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CancelOrder,
    ) -> Result<(), ActivityError> {
        let cancelled = crate::outcome::cancel(&self.db, &input).await;
        committed(cancelled, "release.after_commit", input.order_id(), None)
    }

    #[activity(definition = markers::CancelPaidOrder)]
    #[tracing::instrument(name = "cancel_paid_order", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn cancel_paid_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CancelOrder,
    ) -> Result<(), ActivityError> {
        let cancelled = crate::outcome::cancel_paid(&self.db, &input).await;
        committed(cancelled, "return.after_commit", input.order_id(), None)
    }

    #[activity(definition = markers::RaiseAttention)]
    #[tracing::instrument(name = "raise_attention", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn raise_attention(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: NeedsAttention,
    ) -> Result<(), ActivityError> {
        tracing::error!(code = %input.code, message = %input.message, "order needs attention");
        crate::attention::raise(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::ResolveAttention)]
    #[tracing::instrument(name = "resolve_attention", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn resolve_attention(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: AttentionResolved,
    ) -> Result<(), ActivityError> {
        crate::attention::resolve(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::OpenCheckout)]
    #[tracing::instrument(name = "open_checkout", skip_all, fields(order_id = %input.order_id(), workflow_id = ?ctx.info().workflow_id))]
    pub async fn open_checkout(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: OpenCheckout,
    ) -> Result<ProviderSession, ActivityError> {
        // Physical goods are captured when they ship, if the deployment says so.
        let manual = input.capture == CaptureTiming::AtShipment
            && crate::fulfilment::ships(&self.db, &input.order_id)
                .await
                .map_err(into_activity_error)?;
        let request = CreateCheckoutSession {
            order_id: input.order_id.clone(),
            amount: input.amount,
            currency: input.currency.clone(),
            // Whole seconds, rounded up: the session never ends before the order's deadline.
            expires_at: input.expires_at_ms.map(|ms| (ms + 999).div_euclid(1000)),
            capture_method: manual.then(|| crate::provider::CAPTURE_MANUAL.to_owned()),
        };
        let key = format!("checkout-{}-{}", input.order_id, input.attempt);
        let call = self.provider.create_checkout_session(&request, &key);
        match heartbeating(&ctx, call).await {
            Ok(session) => Ok(ProviderSession {
                session_id: session.id,
                pay_url: session.url,
            }),
            Err(e @ ProviderError::Unavailable(_)) => Err(provider_unavailable(e)),
            Err(e) => Err(ActivityError::application(
                ApplicationFailure::non_retryable(e),
            )),
        }
    }

    #[activity(definition = markers::ExpireCheckouts)]
    #[tracing::instrument(name = "expire_checkouts", skip_all, fields(order_id = %input.order_id(), workflow_id = ?ctx.info().workflow_id))]
    pub async fn expire_checkouts(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ExpireCheckouts,
    ) -> Result<u32, ActivityError> {
        let order_id = input.order_id.as_str();
        let open = crate::payments::open_sessions(&self.db, order_id)
            .await
            .map_err(into_activity_error)?;
        let mut expired = 0;
        for session in open {
            let call = self.provider.expire_checkout_session(&session);
            let closed_as = match heartbeating(&ctx, call).await {
                Ok(SessionExpiry::Expired) => {
                    expired += 1;
                    "expired"
                }
                Ok(SessionExpiry::AlreadyPaid) => "paid",
                Err(e @ ProviderError::Unavailable(_)) => return Err(provider_unavailable(e)),
                Err(e) => {
                    return Err(ActivityError::application(
                        ApplicationFailure::non_retryable(e),
                    ));
                }
            };
            // Logged when the provider answered, and never before the cancel (another worker's
            // clock may be behind the one that cancelled).
            let at = crate::now_ms().max(input.at_ms + 1);
            let by = crate::payments::SessionEndedBy::Order;
            crate::payments::close_session(&self.db, order_id, &session, closed_as, by, at)
                .await
                .map_err(into_activity_error)?;
        }
        Ok(expired)
    }

    #[activity(definition = markers::RecordCheckout)]
    #[tracing::instrument(name = "record_checkout", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn record_checkout(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordCheckout,
    ) -> Result<(), ActivityError> {
        crate::payments::record_checkout(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::BeginRefund)]
    #[tracing::instrument(name = "begin_refund", skip_all, fields(order_id = %input.order_id(), payment_id = %input.payment.payment_id, workflow_id = ?ctx.info().workflow_id))]
    pub async fn begin_refund(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RefundPayment,
    ) -> Result<RefundBegun, ActivityError> {
        let owner = ctx.info().workflow_id.clone();
        crate::payments::begin_refund(&self.db, &input, owner.as_deref())
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::HoldPayment)]
    #[tracing::instrument(name = "hold_payment", skip_all, fields(order_id = %input.order_id(), payment_id = %input.payment.payment_id, workflow_id = ?_ctx.info().workflow_id))]
    pub async fn hold_payment(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: StrayPayment,
    ) -> Result<Option<i64>, ActivityError> {
        tracing::warn!(reason = %input.reason, amount = input.payment.amount, "payment its order cannot take: held for a decision");
        crate::handoff::hold(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::DecidePayment)]
    #[tracing::instrument(name = "decide_payment", skip_all, fields(order_id = %input.order_id(), payment_id = %input.payment.payment_id, workflow_id = ?ctx.info().workflow_id))]
    pub async fn decide_payment(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: StrayPayment,
    ) -> Result<PaymentVerdict, ActivityError> {
        let client = ctx.client();
        let verdict =
            crate::handoff::decide(&self.db, &self.provider, &client, &input, crate::now_ms())
                .await
                .map_err(into_activity_error)?;
        tracing::info!(?verdict, "payment decided");
        Ok(verdict)
    }

    #[activity(definition = markers::RecordPaymentDecision)]
    #[tracing::instrument(name = "record_payment_decision", skip_all, fields(payment_id = %input.payment_id, workflow_id = ?_ctx.info().workflow_id))]
    pub async fn record_payment_decision(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PaymentDecided,
    ) -> Result<(), ActivityError> {
        crate::handoff::record_decision(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::RedriveInbox)]
    #[tracing::instrument(name = "redrive_inbox", skip_all, fields(workflow_id = ?ctx.info().workflow_id))]
    pub async fn redrive_inbox(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RedriveInbox,
    ) -> Result<u64, ActivityError> {
        let to = crate::handoff::HandOff {
            client: ctx.client(),
            task_queue: ctx.info().task_queue.clone(),
            unknown_order_hold_secs: self.unknown_order_hold_secs,
        };
        let now = crate::now_ms();
        let redriven = crate::handoff::redrive(&self.db, &to, input.before_ms, REDRIVE_BATCH, now)
            .await
            .map_err(into_activity_error)?;
        let sweep = crate::handoff::sweep_provider(
            &self.db,
            &self.provider,
            &to,
            input.before_ms / 1000,
            now,
        );
        let swept = heartbeating(&ctx, sweep)
            .await
            .map_err(into_activity_error)?;
        let disputes =
            crate::handoff::sweep_disputes(&self.db, &self.provider, input.before_ms / 1000, now);
        let disputes = heartbeating(&ctx, disputes)
            .await
            .map_err(into_activity_error)?;
        Ok(redriven + swept + disputes)
    }

    /// A refusal is returned as `Failed`, so that step 3 records it; transient failures are
    /// errors, retried by the workflow's policy with the same idempotency key.
    #[activity(definition = markers::CallProviderRefund)]
    #[tracing::instrument(name = "call_provider_refund", skip_all, fields(order_id = %input.order_id(), payment_id = %input.payment.payment_id, workflow_id = ?ctx.info().workflow_id))]
    pub async fn call_provider_refund(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RefundPayment,
    ) -> Result<RefundOutcome, ActivityError> {
        let request = CreateRefund {
            payment_id: input.payment.payment_id.clone(),
            amount: input.payment.amount,
            reason: input.reason.clone(),
        };
        let key = input.idempotency_key();
        crate::faults::point("refund.before_provider", input.order_id(), None);
        // An authorization is voided if it still can be: free, and the payer's hold goes at
        // once. Captured meanwhile (`already_captured`): refunded like any payment.
        if input.payment.capture_before_ms.is_some() {
            let payment_id = input.payment.payment_id.as_str();
            match heartbeating(&ctx, self.provider.void(payment_id)).await {
                Ok(_) => {
                    crate::faults::point("refund.after_provider", input.order_id(), None);
                    tracing::info!("authorization voided at the provider");
                    return Ok(RefundOutcome::Succeeded {
                        provider_refund_id: format!("{}{payment_id}", crate::payments::VOID_PREFIX),
                        voided: true,
                    });
                }
                Err(ProviderError::Refused { code, .. }) if code == "already_captured" => {
                    tracing::warn!("too late to void: the payment is captured, so it is refunded");
                }
                Err(ProviderError::Refused { code, message, .. }) => {
                    tracing::error!(%code, %message, "the provider refused the void");
                    return Ok(RefundOutcome::Failed { code, message });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "void call failed; it will be retried");
                    return Err(provider_unavailable(e));
                }
            }
        }
        let call = self.provider.refund(&request, &key);
        match heartbeating(&ctx, call).await {
            Ok(refund) => {
                crate::faults::point("refund.after_provider", input.order_id(), None);
                tracing::info!(refund_id = %refund.id, "refunded at the provider");
                Ok(RefundOutcome::Succeeded {
                    provider_refund_id: refund.id,
                    voided: false,
                })
            }
            Err(ProviderError::Refused { code, message, .. }) => {
                tracing::error!(%code, %message, "the provider refused the refund");
                Ok(RefundOutcome::Failed { code, message })
            }
            Err(e) => {
                tracing::warn!(error = %e, "refund call failed; it will be retried");
                Err(provider_unavailable(e))
            }
        }
    }

    /// Captures at the provider (key `capture-{payment_id}`), then records it on the payment's
    /// row. A refusal is a value for the workflow; transient failures are retried.
    #[activity(definition = markers::CaptureAuthorization)]
    #[tracing::instrument(name = "capture_authorization", skip_all, fields(order_id = %input.order_id, payment_id = %input.payment_id, workflow_id = ?ctx.info().workflow_id))]
    pub async fn capture_authorization(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CaptureAuthorization,
    ) -> Result<CaptureOutcome, ActivityError> {
        let call = self.provider.capture(&input.payment_id, None);
        match heartbeating(&ctx, call).await {
            Ok(_) => {}
            // Captured already by another hand (the provider's dashboard, a void that came too
            // late): the money is taken all the same.
            Err(ProviderError::Refused { code, .. }) if code == "already_captured" => {}
            Err(ProviderError::Refused { code, message, .. }) => {
                tracing::error!(%code, %message, "the provider refused to capture");
                return Ok(CaptureOutcome::Refused { code, message });
            }
            Err(e) => return Err(provider_unavailable(e)),
        }
        let recorded = crate::payments::record_capture(&self.db, &input).await;
        committed(
            recorded,
            "capture_authorization.after_commit",
            &input.order_id,
            None,
        )?;
        Ok(CaptureOutcome::Captured)
    }

    #[activity(definition = markers::RecordRefundResult)]
    #[tracing::instrument(name = "record_refund_result", skip_all, fields(order_id = %input.order_id(), payment_id = %input.payment_id, workflow_id = ?_ctx.info().workflow_id))]
    pub async fn record_refund_result(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordRefundResult,
    ) -> Result<(), ActivityError> {
        let recorded = crate::payments::record_refund_result(&self.db, &input).await;
        committed(
            recorded,
            "refund_result.after_commit",
            input.order_id(),
            None,
        )
    }

    #[activity(definition = markers::BeginOrderRefund)]
    #[tracing::instrument(name = "begin_order_refund", skip_all, fields(order_id = %input.order_id(), refund_id = %input.refund_id, workflow_id = ?_ctx.info().workflow_id))]
    pub async fn begin_order_refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderRefundRef,
    ) -> Result<OrderRefundBegun, ActivityError> {
        crate::order_refunds::begin(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::FinishOrderRefund)]
    #[tracing::instrument(name = "finish_order_refund", skip_all, fields(order_id = %input.order_id(), refund_id = %input.refund_id, workflow_id = ?_ctx.info().workflow_id))]
    pub async fn finish_order_refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecordOrderRefund,
    ) -> Result<(), ActivityError> {
        let finished = crate::order_refunds::finish(&self.db, &input).await;
        committed(
            finished,
            "order_refund.after_commit",
            input.order_id(),
            None,
        )
    }

    #[activity(definition = markers::Fulfil)]
    #[tracing::instrument(name = "fulfil", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn fulfil(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderAt,
    ) -> Result<Fulfilment, ActivityError> {
        let fulfilled = crate::fulfilment::fulfil(&self.db, &input).await;
        committed(fulfilled, "fulfil.after_commit", input.order_id(), None)
    }

    #[activity(definition = markers::MarkShipped)]
    #[tracing::instrument(name = "mark_shipped", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn mark_shipped(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderAt,
    ) -> Result<(), ActivityError> {
        crate::fulfilment::mark_shipped(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::StopFulfilment)]
    #[tracing::instrument(name = "stop_fulfilment", skip_all, fields(order_id = %input.order_id(), workflow_id = ?_ctx.info().workflow_id))]
    pub async fn stop_fulfilment(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OrderAt,
    ) -> Result<(), ActivityError> {
        crate::fulfilment::stop(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::Redeem)]
    #[tracing::instrument(name = "redeem", skip_all, fields(code = %input.code, user_id = %input.user_id, workflow_id = ?_ctx.info().workflow_id))]
    pub async fn redeem(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RedeemCode,
    ) -> Result<RedemptionOutcome, ActivityError> {
        crate::redemptions::redeem(&self.db, &input, crate::now_ms())
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::FindSuspects)]
    #[tracing::instrument(name = "find_suspects", skip_all, fields(workflow_id = ?ctx.info().workflow_id))]
    pub async fn find_suspects(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ReconcileInput,
    ) -> Result<Vec<Suspect>, ActivityError> {
        let client = ctx.client();
        let task_queue = ctx.info().task_queue.clone();
        crate::reconcile::find_suspects(&self.db, &client, &task_queue, &input, crate::now_ms())
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::LoadOrder)]
    #[tracing::instrument(name = "load_order", skip_all, fields(order_id = %input.order_id(), workflow_id = ?ctx.info().workflow_id))]
    pub async fn load_order(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: OrderRef,
    ) -> Result<LoadedOrder, ActivityError> {
        let mut loaded = crate::orders::load(&self.db, &input.order_id)
            .await
            .map_err(into_activity_error)?;
        if loaded.status == OrderStatus::PendingPayment && loaded.waiting.is_empty() {
            // Paid at the provider, but no webhook reached us: that pays it too.
            let captured = heartbeating(&ctx, self.provider.payments_for_order(&input.order_id))
                .await
                .map_err(provider_unavailable)?;
            for p in captured {
                let recorded = crate::payments::payment_status(&self.db, &p.id)
                    .await
                    .map_err(into_activity_error)?;
                if recorded.is_none() && p.amount == loaded.amounts.payable {
                    loaded.waiting.push(PaymentReceived {
                        event_id: format!("reconciled-{}", p.id),
                        capture_before_ms: p.authorized_until_ms(),
                        payment_id: p.id,
                        amount: p.amount,
                        currency: p.currency,
                    });
                }
            }
        }
        tracing::info!(status = %loaded.status, waiting = loaded.waiting.len(), "order loaded for its resumed workflow");
        Ok(loaded)
    }

    #[activity(definition = markers::ResumeOrder)]
    #[tracing::instrument(name = "resume_order", skip_all, fields(order_id = %input.order_id(), workflow_id = ?ctx.info().workflow_id))]
    pub async fn resume_order(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: OrderRef,
    ) -> Result<(), ActivityError> {
        tracing::warn!("resuming the order's workflow from the database");
        let client = ctx.client();
        let task_queue = ctx.info().task_queue.clone();
        crate::reconcile::resume_order(
            &self.db,
            &client,
            &task_queue,
            &input.order_id,
            self.settings,
        )
        .await
        .map_err(into_activity_error)
    }

    #[activity(definition = markers::RecordReconciliation)]
    #[tracing::instrument(name = "record_reconciliation", skip_all, fields(order_id = %input.order_id, workflow_id = ?_ctx.info().workflow_id))]
    pub async fn record_reconciliation(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReconcileEntry,
    ) -> Result<(), ActivityError> {
        tracing::warn!(action = %input.action, detail = %input.detail, "reconciliation");
        crate::reconcile::record(&self.db, &input)
            .await
            .map_err(into_activity_error)
    }

    #[activity(definition = markers::PurgeInbox)]
    #[tracing::instrument(name = "purge_inbox", skip_all, fields(workflow_id = ?_ctx.info().workflow_id))]
    pub async fn purge_inbox(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PurgeInbox,
    ) -> Result<u64, ActivityError> {
        crate::reconcile::purge_inbox(&self.db, input.before_ms)
            .await
            .map_err(into_activity_error)
    }

    /// The benchmark's bare workflow (`BaselineWorkflow`): one activity that does no work, so
    /// that its cost is the engine's alone.
    #[activity(definition = markers::BaselineStep)]
    pub async fn baseline_step(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _signalled: bool,
    ) -> Result<(), ActivityError> {
        Ok(())
    }
}
