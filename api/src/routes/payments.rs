//! `POST /v1/payments/webhook`: the payment provider's callback.
//!
//! Order of work: cap the body, verify the signature on the raw bytes (401, nothing parsed),
//! parse, check the payment against the stored order (422, nothing changed), then hand it to
//! the order's workflow, which deduplicates by `payment_id` and decides. A duplicate is a 200
//! no-op. The handler never marks an order paid itself.

use crate::AppState;
use crate::error::ApiError;
use crate::signature::{self, SignatureError};
use crate::temporal::{self, Answer};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use orderflow_activities::{now_ms, orders, store};
use orderflow_workflows::model::{PaymentReceived, RecordUnappliedPayment};
use serde::Deserialize;
use serde_json::{Value, json};

/// Webhook bodies are small; anything bigger is refused before it is read whole.
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/payments/webhook", post(webhook))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
}

#[derive(Debug, Deserialize)]
pub struct PaymentEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: String,
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
}

fn accepted(outcome: &str) -> (StatusCode, axum::Json<Value>) {
    (StatusCode::OK, axum::Json(json!({ "status": outcome })))
}

#[tracing::instrument(skip_all, fields(order_id, payment_id))]
async fn webhook(
    State(state): State<AppState>,
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

    let event: PaymentEvent = serde_json::from_slice(&body)
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
    let order = match store::get_order(&state.db, &event.order_id).await {
        Ok(order) => order,
        Err(orderflow_activities::StoreError::NotFound { .. }) => {
            return Err(ApiError::unprocessable(
                "unknown_order",
                "the webhook names an order that does not exist",
            )
            .for_order(&event.order_id));
        }
        Err(e) => return Err(ApiError::from(e).for_order(&event.order_id)),
    };
    if order
        .payments
        .iter()
        .any(|p| p.payment_id == event.payment_id)
    {
        return Ok(accepted("duplicate"));
    }
    if event.amount != order.payable_amount || event.currency != order.currency {
        return Err(ApiError::unprocessable(
            "amount_mismatch",
            format!(
                "the payment is {} {} but the order is payable {} {}",
                event.amount, event.currency, order.payable_amount, order.currency
            ),
        )
        .for_order(&order.order_id));
    }
    let payment = PaymentReceived {
        payment_id: event.payment_id.clone(),
        event_id: event.event_id.clone(),
        amount: event.amount,
        currency: event.currency.clone(),
    };
    match temporal::signal_payment(&state.temporal, &order.order_id, payment.clone()).await? {
        Answer::Answered(()) | Answer::Refused(_) => Ok(accepted("accepted")),
        Answer::Closed => {
            // The order's workflow has finished (the order was settled without this payment):
            // record the payment as owed back, so that it is never lost.
            let input = RecordUnappliedPayment {
                order_id: order.order_id.clone(),
                payment,
                reason: format!("order_{}", order.status),
                at_ms: now_ms(),
            };
            orders::record_unapplied_payment(&state.db, &input)
                .await
                .map_err(|e| ApiError::from(e).for_order(&order.order_id))?;
            Ok(accepted("recorded_unapplied"))
        }
    }
}
