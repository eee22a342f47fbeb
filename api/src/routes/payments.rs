//! `POST /v1/payments/webhook`: the payment provider's callback.
//!
//! Order of work, each step before the next:
//! 1. cap the body (64 KiB), verify the signature on the raw bytes in constant time, with the
//!    timestamp tolerance and either secret of a rotation (401, nothing parsed, nothing stored);
//! 2. parse, and record the event in the inbox keyed by `event_id` (insert-or-ignore). An
//!    event already processed is a 200 no-op: duplicates never reach the workflow twice;
//! 3. check the order and the payment: an unknown order, a payment already captured, or an
//!    amount or currency that is not the order's are recorded as the event's outcome. A
//!    mismatched payment never pays the order; the workflow refunds it;
//! 4. hand the payment on: a signal to the open workflow (which deduplicates by `payment_id`),
//!    or, if the workflow has closed, a `refund-{payment_id}` workflow;
//! 5. mark the event processed. If step 4 failed (Temporal down), the event stays unprocessed
//!    and the 503 makes the provider redeliver it.
//!
//! The handler never marks an order paid and never moves money itself.

use crate::AppState;
use crate::error::ApiError;
use crate::signature::{self, SignatureError};
use crate::temporal::{self, Answer};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use orderflow_activities::payments::{self, Inbox, InboxEvent};
use orderflow_activities::provider::WebhookEvent;
use orderflow_activities::{now_ms, store};
use orderflow_workflows::decide;
use orderflow_workflows::model::{OrderStatus, PaymentReceived, RefundPayment};
use serde_json::{Value, json};

/// Webhook bodies are small; anything bigger is refused before it is read whole.
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/payments/webhook", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
}

fn accepted(outcome: &str) -> (StatusCode, axum::Json<Value>) {
    (StatusCode::OK, axum::Json(json!({ "status": outcome })))
}

/// Counts each webhook by outcome: the `status` it was answered with, or the error code.
#[utoipa::path(post, path = "/v1/payments/webhook", tag = "payments", summary = "Payment provider callback (signed, no token)", security(("payment_signature" = [])), request_body = WebhookEvent, responses((status = 200, description = "handled: signalled, refund_started, duplicate, already_captured, amount_mismatch, unknown_order or ignored", body = crate::openapi::WebhookAnswer), (status = 401, description = "signature missing, malformed, expired or invalid", body = crate::openapi::ErrorBody), (status = 413, description = "body too large", body = crate::openapi::ErrorBody), (status = 422, description = "invalid input or a business refusal, with a stable code", body = crate::openapi::ErrorBody), (status = 503, description = "the database or Temporal is unavailable; retry", body = crate::openapi::ErrorBody)))]
async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let result = handle_webhook(&state, headers, body).await;
    let outcome = match &result {
        Ok((_, body)) => body.0["status"].as_str().unwrap_or("ok").to_owned(),
        Err(e) => e.code().to_owned(),
    };
    state.metrics.webhook(&outcome);
    result
}

#[tracing::instrument(skip_all, fields(order_id, payment_id))]
async fn handle_webhook(
    state: &AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let header = match headers.get(signature::HEADER) {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::unauthorized(
                SignatureError::Malformed.code(),
                SignatureError::Malformed.to_string(),
            )
        })?),
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
    .map_err(|e| ApiError::unauthorized(e.code(), e.to_string()))?;

    let event: WebhookEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::unprocessable("invalid_body", e.to_string()))?;
    let span = tracing::Span::current();
    span.record("order_id", event.order_id.as_str());
    span.record("payment_id", event.payment_id.as_str());
    if event.kind != "payment.succeeded" {
        return Ok(accepted("ignored"));
    }
    for (field, value) in [
        ("event_id", &event.event_id),
        ("payment_id", &event.payment_id),
        ("order_id", &event.order_id),
    ] {
        super::check_id(field, value)?;
    }
    let received = InboxEvent {
        event_id: event.event_id.clone(),
        event_type: event.kind.clone(),
        order_id: event.order_id.clone(),
        payment_id: event.payment_id.clone(),
        amount: event.amount,
        currency: event.currency.clone(),
        received_at: now_ms(),
    };
    let for_order =
        |e: orderflow_activities::StoreError| ApiError::from(e).for_order(&event.order_id);
    if let Inbox::Processed { outcome } = payments::receive(&state.db, &received)
        .await
        .map_err(for_order)?
    {
        tracing::info!(%outcome, "duplicate webhook event");
        return Ok(accepted("duplicate"));
    }
    let outcome = hand_on(state, &event).await?;
    payments::processed(&state.db, &event.event_id, outcome, now_ms())
        .await
        .map_err(for_order)?;
    Ok(accepted(outcome))
}

/// Step 3 and 4: decides where the payment goes and sends it there. Returns the outcome.
async fn hand_on(state: &AppState, event: &WebhookEvent) -> Result<&'static str, ApiError> {
    let order = match store::get_order(&state.db, &event.order_id).await {
        Ok(order) => order,
        Err(orderflow_activities::StoreError::NotFound { .. }) => {
            tracing::error!(
                "a signed payment names an order that does not exist; recorded for ops"
            );
            return Ok("unknown_order");
        }
        Err(e) => return Err(ApiError::from(e).for_order(&event.order_id)),
    };
    let recorded = payments::payment_status(&state.db, &event.payment_id)
        .await
        .map_err(|e| ApiError::from(e).for_order(&order.order_id))?;
    match recorded {
        Some((order_id, status)) if status == "captured" && order_id == order.order_id => {
            return Ok("already_captured");
        }
        Some((order_id, _)) if order_id != order.order_id => {
            tracing::error!(recorded_for = %order_id, "a payment id is reported for two orders; recorded for ops");
            return Ok("payment_order_mismatch");
        }
        _ => {}
    }
    let payment = PaymentReceived {
        payment_id: event.payment_id.clone(),
        event_id: event.event_id.clone(),
        amount: event.amount,
        currency: event.currency.clone(),
    };
    let mismatch = !decide::pays_for(&payment, order.payable_amount, &order.currency);
    match temporal::signal_payment(&state.temporal, &order.order_id, payment.clone()).await? {
        Answer::Answered(()) | Answer::Refused(_) if mismatch => Ok("amount_mismatch"),
        Answer::Answered(()) | Answer::Refused(_) => Ok("signalled"),
        Answer::Closed => {
            let status = orderflow_activities::orders::parse_status(&order.status);
            let Some(
                status @ (OrderStatus::Paid
                | OrderStatus::Fulfilled
                | OrderStatus::Cancelled
                | OrderStatus::Rejected),
            ) = status
            else {
                // Pending in the database with no workflow: it must be repaired (reconciliation),
                // not refunded under an order that may still be paid. The provider redelivers.
                return Err(ApiError::unavailable(
                    "order_workflow_missing",
                    "the order is pending but its workflow is not running; retry later",
                    format!(
                        "order {} is {} without a running workflow",
                        order.order_id, order.status
                    ),
                )
                .for_order(&order.order_id));
            };
            let reason =
                decide::refund_reason(status, &payment, order.payable_amount, &order.currency);
            let request = RefundPayment {
                order_id: order.order_id.clone(),
                user_id: order.user_id.clone(),
                payment,
                reason: reason.to_owned(),
                requested_at_ms: now_ms(),
            };
            temporal::start_refund(&state.temporal, &state.config, request).await?;
            tracing::info!(%reason, "late payment: refund workflow started");
            Ok("refund_started")
        }
    }
}
