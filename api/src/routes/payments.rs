//! `POST /v1/payments/webhook`: the payment provider's callback.
//!
//! Order of work, each step before the next:
//! 1. cap the body (64 KiB), verify the signature on the raw bytes in constant time, with the
//!    timestamp tolerance and either secret of a rotation (401, nothing parsed, nothing stored);
//! 2. parse, and record the event in the inbox keyed by `event_id` (insert-or-ignore). An
//!    event already processed is a 200 no-op: duplicates never reach the workflow twice;
//!    An amount ≤ 0 or a currency that is not ISO 4217 is a 422 before anything is recorded;
//! 3. hand the payment on (`orderflow_activities::handoff`): a payment that pays a pending
//!    order with a running workflow is signalled to it (it deduplicates by `payment_id`); any
//!    other (unknown order, another order's payment, wrong amount or currency, workflow closed
//!    or missing) goes to its durable `payment-{payment_id}` decision, which applies or refunds
//!    it. A mismatched payment never pays the order. A `charge.disputed` event instead is
//!    recorded with what it does to the order (`orderflow_activities::disputes`), in one
//!    transaction and without Temporal. A `checkout.session.expired` body (a session, no
//!    payment) closes the session's row and tells the order's workflow, which then never hands
//!    that session out again; it needs no inbox, since both steps can be done again. Any other
//!    type is answered `ignored`;
//! 4. mark the event processed. If step 3 failed (Temporal down), the event stays unprocessed:
//!    the 503 makes the provider redeliver it, and reconciliation re-drives it in any case.
//!
//! The handler never marks an order paid and never moves money itself.

use crate::auth::Admin;
use crate::error::{ApiError, ErrorCode};
use crate::input;
use crate::responses::{ForAdmins, OnRecord};
use crate::signature::{self, SignatureError};
use crate::{AppState, view};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use orderflow_activities::disputes;
use orderflow_activities::payments::{self, Inbox, InboxEvent};
use orderflow_provider::{SessionEvent, WebhookBody, WebhookEvent};
use orderflow_store::now_ms;

/// Webhook bodies are small; anything bigger is refused before it is read whole.
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/payments/webhook", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .route("/v1/admin/audit", get(audit))
        .route("/v1/admin/refunds/{payment_id}/retry", post(retry_refund))
}

/// The two-way money audit (see `orderflow_activities::audit::run`): every payment the provider
/// captured is applied or refunded, or owned by a run that will; every refund is one we meant.
#[utoipa::path(
    get, path = "/v1/admin/audit",
    tag = "admin",
    summary = "Two-way money audit against the provider",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the report; `discrepancies` is empty when no money is stranded", body = orderflow_activities::audit::MoneyReport),
        ForAdmins,
    ),
)]
async fn audit(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<axum::Json<orderflow_activities::audit::MoneyReport>, ApiError> {
    let report = state
        .engine
        .audit(&state.db, &state.provider, now_ms())
        .await?;
    Ok(axum::Json(report))
}

/// Retries a refund the provider refused, as a new attempt with its own idempotency key.
#[utoipa::path(
    post, path = "/v1/admin/refunds/{payment_id}/retry",
    tag = "admin",
    summary = "Retry a failed refund",
    security(("bearer" = [])),
    params(("payment_id" = String, Path)),
    responses(
        (status = 202, description = "the new attempt is running: `{payment_id, order_id, attempt, workflow_id}`", body = view::RefundRetry),
        (status = 409, description = "the refund succeeded, is in progress, or was paid offline", body = view::ErrorBody),
        (status = 422, description = "invalid payment id", body = view::ErrorBody),
        ForAdmins,
        OnRecord,
    ),
)]
async fn retry_refund(
    State(state): State<AppState>,
    _admin: Admin,
    Path(payment_id): Path<String>,
) -> Result<(StatusCode, axum::Json<view::RefundRetry>), ApiError> {
    input::PAYMENT_ID.check_text("payment_id", &payment_id)?;
    let (request, attempt) = payments::retry_refund(&state.db, &payment_id, now_ms()).await?;
    let order_id = request.order_id.clone();
    let workflow_id = state.engine.start_refund_retry(request, attempt).await?;
    tracing::warn!(%payment_id, %order_id, attempt, "refund retried by ops");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(view::RefundRetry {
            payment_id,
            order_id,
            attempt,
            workflow_id,
        }),
    ))
}

/// Checks every field of a webhook event by the rules the document states for it.
fn check_event(event: &WebhookEvent) -> Result<(), ApiError> {
    input::EVENT_ID.check_text("event_id", &event.event_id)?;
    input::EVENT_TYPE.check_text("type", &event.kind)?;
    input::ORDER_ID.check_text("order_id", &event.order_id)?;
    input::PAYMENT_ID.check_text("payment_id", &event.payment_id)?;
    if let Some(session) = &event.session_id {
        input::SESSION_ID.check_text("session_id", session)?;
    }
    input::amount(1).check_number("amount", event.amount)?;
    if let Some(at) = event.capture_before {
        input::UNIX_SECONDS.check_number("capture_before", at)?;
    }
    input::Rule::Currency.check_text("currency", &event.currency)
}

/// The `type` of a webhook body, if it has one (the body is parsed in full by its type's shape).
fn event_type(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Typed>(body).ok().map(|t| t.kind)
}

/// A `checkout.session.expired` event: the provider ended one of the order's sessions unpaid.
/// The session row is closed (its step logged once) and the order's workflow told, so that it
/// never hands that session out again. Answers `session_closed`, or `unknown_session` (not a
/// session of that order: nothing changes). A redelivery does the same again, harmlessly.
async fn session_ended(
    state: &AppState,
    body: &[u8],
) -> Result<(StatusCode, axum::Json<view::WebhookAnswer>), ApiError> {
    let event: SessionEvent = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidBody, e.to_string()))?;
    tracing::Span::current().record("order_id", event.order_id.as_str());
    input::EVENT_ID.check_text("event_id", &event.event_id)?;
    input::ORDER_ID.check_text("order_id", &event.order_id)?;
    input::SESSION_ID.check_text("session_id", &event.session_id)?;
    input::amount(1).check_number("amount", event.amount)?;
    input::Rule::Currency.check_text("currency", &event.currency)?;
    let for_order = |e: orderflow_store::StoreError| ApiError::from(e).for_order(&event.order_id);
    let by = payments::SessionEndedBy::Provider;
    let ours = payments::close_session(
        &state.db,
        &event.order_id,
        &event.session_id,
        "expired",
        by,
        now_ms(),
    )
    .await
    .map_err(for_order)?;
    if !ours {
        tracing::warn!(session_id = %event.session_id, "the provider ended a session of no order here");
        return Ok(accepted("unknown_session"));
    }
    state
        .engine
        .end_session(&event.order_id, &event.session_id, &event.event_id)
        .await
        .map_err(for_order)?;
    Ok(accepted("session_closed"))
}

fn accepted(outcome: &str) -> (StatusCode, axum::Json<view::WebhookAnswer>) {
    let status = outcome.to_owned();
    (StatusCode::OK, axum::Json(view::WebhookAnswer { status }))
}

/// Counts each webhook by outcome: the `status` it was answered with, or the error code.
#[utoipa::path(
    post, path = "/v1/payments/webhook",
    tag = "payments",
    summary = "Payment provider callback (signed, no token)",
    security(("payment_signature" = [])),
    request_body = WebhookBody,
    responses(
        (status = 200, description = "handled: signalled, duplicate, already_captured, ignored, dispute_recorded (a `charge.disputed`: its `amount` is the disputed amount), session_closed or unknown_session (a `checkout.session.expired`, whose body names a session and no payment); or handed to the payment's decision: unknown_order, order_mismatch, amount_mismatch, refund_started, workflow_missing", body = view::WebhookAnswer),
        (status = 401, description = "signature missing, malformed, expired or invalid", body = view::ErrorBody),
        (status = 413, description = "body too large", body = view::ErrorBody),
        (status = 422, description = "invalid input or a business refusal, with a stable code", body = view::ErrorBody),
        (status = 503, description = "the database or Temporal is unavailable; retry", body = view::ErrorBody),
    ),
)]
async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<view::WebhookAnswer>), ApiError> {
    let result = handle_webhook(&state, headers, body).await;
    let outcome = match &result {
        Ok((_, body)) => body.0.status.clone(),
        Err(e) => e.code().as_str().to_owned(),
    };
    state.metrics.webhook(&outcome);
    result
}

/// A webhook whose signature does not hold: 401 with what was wrong.
fn signature_refused(e: SignatureError) -> ApiError {
    let code = match e {
        SignatureError::Missing => ErrorCode::SignatureMissing,
        SignatureError::Malformed => ErrorCode::SignatureMalformed,
        SignatureError::Expired => ErrorCode::SignatureExpired,
        SignatureError::Mismatch => ErrorCode::SignatureInvalid,
    };
    ApiError::new(code, e.to_string())
}

#[tracing::instrument(skip_all, fields(order_id, payment_id))]
async fn handle_webhook(
    state: &AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<view::WebhookAnswer>), ApiError> {
    let header = match headers.get(signature::HEADER) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| signature_refused(SignatureError::Malformed))?,
        ),
        None => None,
    };
    let tolerance = state.config.webhook_tolerance.as_secs() as i64;
    signature::verify(
        header,
        &body,
        &state.config.webhook_secrets,
        now_ms() / 1000,
        tolerance,
    )
    .map_err(signature_refused)?;

    if event_type(&body).as_deref() == Some(orderflow_provider::CHECKOUT_SESSION_EXPIRED) {
        return session_ended(state, &body).await;
    }
    let event: WebhookEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidBody, e.to_string()))?;
    let span = tracing::Span::current();
    span.record("order_id", event.order_id.as_str());
    span.record("payment_id", event.payment_id.as_str());
    // Every event is checked as the document describes it, also one of a type this API
    // ignores: what the document forbids is refused whatever the type.
    check_event(&event)?;
    let disputed = event.kind == orderflow_provider::CHARGE_DISPUTED;
    let authorized = event.kind == orderflow_provider::PAYMENT_AUTHORIZED;
    if event.kind != orderflow_provider::PAYMENT_SUCCEEDED && !disputed && !authorized {
        return Ok(accepted("ignored"));
    }
    let received = InboxEvent {
        event_id: event.event_id.clone(),
        event_type: event.kind.clone(),
        order_id: event.order_id.clone(),
        payment_id: event.payment_id.clone(),
        amount: event.amount,
        currency: event.currency.clone(),
        received_at: now_ms(),
        session_id: event.session_id.clone(),
        // Only an authorization has a capture deadline; on any other event it means nothing.
        capture_before: event
            .capture_before
            .filter(|_| authorized)
            .map(|s| s.saturating_mul(1000)),
    };
    let for_order = |e: orderflow_store::StoreError| ApiError::from(e).for_order(&event.order_id);
    if let Inbox::Processed { outcome } = payments::receive(&state.db, &received)
        .await
        .map_err(for_order)?
    {
        tracing::info!(%outcome, "duplicate webhook event");
        return Ok(accepted("duplicate"));
    }
    // A dispute needs no workflow: one transaction records it and acts on it.
    let outcome = if disputed {
        disputes::record(&state.db, &received, now_ms())
            .await
            .map_err(for_order)?
    } else {
        state
            .engine
            .hand_on_payment(&state.db, &received)
            .await
            .map_err(for_order)?
    };
    payments::processed(&state.db, &event.event_id, outcome, now_ms())
        .await
        .map_err(for_order)?;
    Ok(accepted(outcome))
}
