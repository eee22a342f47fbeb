//! Partial refunds and returns of a paid order (`orderflow_activities::order_refunds`).
//!
//! - `POST /v1/admin/orders/{order_id}/refunds`: an admin refunds an amount of the order's
//!   value, or some of its lines, with a reason. Idempotent on `Idempotency-Key`.
//! - `POST /v1/orders/{order_id}/returns`: the customer (or an admin) asks to return shipped
//!   lines. Idempotent on `Idempotency-Key`.
//! - `POST /v1/admin/returns/{return_id}/receive`: the goods are back: restocked and refunded.
//! - `GET /v1/orders/{order_id}/refunds` and `.../returns`: what was asked and how it ended.
//!
//! Each refund is recorded `pending` (with its split) before its `order-refund-{refund_id}`
//! workflow starts; a request that answered 503 after recording is repaired by sending it
//! again with the same key, which starts the same workflow. This module must never move money
//! itself: the workflow does, exactly once.

use super::hidden;
use super::orders::{hashed_id, hex_sha256, idempotency_key, owned_order};
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ErrorCode};
use crate::extract::Json;
use crate::responses::{ForAdmins, OnRecord, WithBody, WithToken};
use crate::{AppState, input, view};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use orderflow_activities::order_refunds::{self, NewRefund, NewReturn, OrderRefund};
use orderflow_store::{Entity, now_ms};
use orderflow_workflows::model::OrderLine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/orders/{order_id}/refunds", post(create_refund))
        .route("/v1/orders/{order_id}/refunds", get(list_refunds))
        .route(
            "/v1/orders/{order_id}/returns",
            post(create_return).get(list_returns),
        )
        .route(
            "/v1/admin/returns/{return_id}/receive",
            post(receive_return),
        )
}

/// Why money goes back: stable words, as providers take them.
pub const REASONS: [&str; 7] = [
    "requested_by_customer",
    "damaged",
    "not_received",
    "wrong_item",
    "goodwill",
    "duplicate",
    "other",
];

/// A line to refund or return.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundLine {
    pub sku: String,
    #[serde(deserialize_with = "orderflow_provider::whole_number::required")]
    pub quantity: i64,
}

/// The body of `POST /v1/admin/orders/{order_id}/refunds`: exactly one of `amount` (of the
/// order's value) and `lines` (at their unit prices).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    #[serde(
        default,
        deserialize_with = "orderflow_provider::whole_number::optional"
    )]
    pub amount: Option<i64>,
    #[serde(default)]
    pub lines: Option<Vec<RefundLine>>,
    pub reason: String,
}

/// The body of `POST /v1/orders/{order_id}/returns`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReturn {
    pub lines: Vec<RefundLine>,
    pub reason: String,
}

/// Checks lines like an order's: known shape, each SKU once.
fn checked_lines(lines: &[RefundLine]) -> Result<Vec<OrderLine>, ApiError> {
    input::REFUND_LINES.check_len("lines", lines.len())?;
    let mut seen = BTreeSet::new();
    for line in lines {
        input::SKU.check_text("sku", &line.sku)?;
        input::QUANTITY.check_number(&format!("quantity of {}", line.sku), line.quantity)?;
        if !seen.insert(line.sku.as_str()) {
            return Err(ApiError::new(
                ErrorCode::DuplicateSku,
                format!("SKU {} appears twice; merge the lines", line.sku),
            ));
        }
    }
    Ok(lines
        .iter()
        .map(|l| OrderLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
        })
        .collect())
}

/// A refund or return id for an order and an idempotency key: stable, not guessable.
fn id_for(prefix: &str, order_id: &str, key: &str) -> String {
    let parts: [&[u8]; 4] = [
        b"orderflow/",
        prefix.as_bytes(),
        order_id.as_bytes(),
        key.as_bytes(),
    ];
    hashed_id(prefix, &parts)
}

/// 201 for what this request created, 200 for the same request sent again.
fn created_or_replayed(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// A store refusal, with the order named.
fn refused(order_id: &str) -> impl Fn(orderflow_store::StoreError) -> ApiError + '_ {
    move |e| ApiError::from(e).for_order(order_id)
}

/// Starts (or meets) the refund's workflow.
async fn start(state: &AppState, refund: &OrderRefund) -> Result<(), ApiError> {
    state
        .engine
        .start_order_refund(&refund.refund_id, &refund.order_id)
        .await
        .map(|_| ())
}

#[utoipa::path(
    post, path = "/v1/admin/orders/{order_id}/refunds",
    tag = "admin",
    summary = "Refund part of a paid order: an amount, or some lines (idempotent on Idempotency-Key)",
    description = "The refund is split over what paid the order (the payment, wallet, points, coupon) in proportion to what each has left, by the rule in the README, and runs as its own workflow `order-refund-{refund_id}`. It starts `pending`; read it back with GET /v1/orders/{order_id}/refunds.",
    security(("bearer" = [])),
    request_body = CreateRefund,
    params(
        ("order_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "one refund per order and key"),
    ),
    responses(
        (status = 201, description = "the refund, recorded and started", body = view::PartialRefundView),
        (status = 200, description = "the same request again: the refund it made", body = view::PartialRefundView),
        (status = 404, description = "`order_not_found`", body = view::ErrorBody),
        (status = 409, description = "`order_not_refundable`: the order is not paid or fulfilled; `payment_not_captured`: its payment is only authorized until the goods ship", body = view::ErrorBody),
        ForAdmins,
        WithBody,
    ),
)]
#[tracing::instrument(skip(state, _admin, headers, body))]
async fn create_refund(
    _admin: Admin,
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<CreateRefund>,
) -> Result<(StatusCode, axum::Json<view::PartialRefundView>), ApiError> {
    input::ORDER_ID.check_text("order_id", &order_id)?;
    let key = idempotency_key(&headers)?;
    input::REFUND_REASON.check_text("reason", &body.reason)?;
    let (amount, lines) = match (&body.amount, &body.lines) {
        (Some(amount), None) => {
            input::amount(1).check_number("amount", *amount)?;
            (Some(*amount), Vec::new())
        }
        (None, Some(lines)) => (None, checked_lines(lines)?),
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRefund,
                "give either `amount` or `lines`, not both and not neither",
            )
            .for_order(&order_id));
        }
    };
    let fingerprint = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    let new = NewRefund {
        refund_id: id_for("rf", &order_id, &key),
        order_id: order_id.clone(),
        amount,
        lines,
        reason: body.reason,
        requested_by: "admin".into(),
        request_hash: hex_sha256(&[&fingerprint]),
        at: now_ms(),
    };
    let (refund, created) = order_refunds::request(&state.db, &new)
        .await
        .map_err(refused(&order_id))?;
    start(&state, &refund).await?;
    Ok((
        created_or_replayed(created),
        axum::Json(view::partial_refund(&refund)),
    ))
}

#[utoipa::path(
    get, path = "/v1/orders/{order_id}/refunds",
    tag = "orders",
    summary = "The partial refunds of an order (an admin's, and received returns')",
    security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "its partial refunds, oldest first", body = view::PartialRefundList),
        WithToken,
        OnRecord,
    ),
)]
#[tracing::instrument(skip(state, caller))]
async fn list_refunds(
    caller: Caller,
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<view::PartialRefundList>, ApiError> {
    owned_order(&state, &caller, &order_id).await?;
    let refunds = order_refunds::refunds_of(&state.db, &order_id).await?;
    Ok(axum::Json(view::PartialRefundList {
        refunds: refunds.iter().map(view::partial_refund).collect(),
        order_id,
    }))
}

#[utoipa::path(
    post, path = "/v1/orders/{order_id}/returns",
    tag = "orders",
    summary = "Ask to return shipped lines (idempotent on Idempotency-Key)",
    description = "The return is `requested`; an admin receives it when the goods are back (POST /v1/admin/returns/{return_id}/receive), which restocks and refunds the lines.",
    security(("bearer" = [])),
    request_body = CreateReturn,
    params(
        ("order_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "one return per order and key"),
    ),
    responses(
        (status = 201, description = "the return, requested", body = view::ReturnView),
        (status = 200, description = "the same request again: the return it made", body = view::ReturnView),
        (status = 409, description = "`order_not_returnable`: the order has not shipped", body = view::ErrorBody),
        WithToken,
        OnRecord,
        WithBody,
    ),
)]
#[tracing::instrument(skip(state, caller, headers, body))]
async fn create_return(
    caller: Caller,
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<CreateReturn>,
) -> Result<(StatusCode, axum::Json<view::ReturnView>), ApiError> {
    owned_order(&state, &caller, &order_id).await?;
    let key = idempotency_key(&headers)?;
    input::REFUND_REASON.check_text("reason", &body.reason)?;
    let lines = checked_lines(&body.lines)?;
    let fingerprint = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    let new = NewReturn {
        return_id: id_for("ret", &order_id, &key),
        order_id: order_id.clone(),
        lines,
        reason: body.reason,
        requested_by: if caller.is_admin() {
            "admin".into()
        } else {
            format!("user:{}", caller.user_id)
        },
        request_hash: hex_sha256(&[&fingerprint]),
        at: now_ms(),
    };
    let (ret, created) = order_refunds::request_return(&state.db, &new)
        .await
        .map_err(refused(&order_id))?;
    Ok((
        created_or_replayed(created),
        axum::Json(view::order_return(&ret)),
    ))
}

#[utoipa::path(
    get, path = "/v1/orders/{order_id}/returns",
    tag = "orders",
    summary = "The returns of an order",
    security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "its returns, oldest first", body = view::ReturnList),
        WithToken,
        OnRecord,
    ),
)]
#[tracing::instrument(skip(state, caller))]
async fn list_returns(
    caller: Caller,
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<view::ReturnList>, ApiError> {
    owned_order(&state, &caller, &order_id).await?;
    let returns = order_refunds::returns_of(&state.db, &order_id).await?;
    Ok(axum::Json(view::ReturnList {
        returns: returns.iter().map(view::order_return).collect(),
        order_id,
    }))
}

#[utoipa::path(
    post, path = "/v1/admin/returns/{return_id}/receive",
    tag = "admin",
    summary = "The goods of a return are back: restock and refund them",
    description = "In one transaction the lines are restocked, the return becomes `received` and its refund is recorded `pending` (the lines' value, split like any refund); the refund's workflow then runs, and the return ends `refunded` or `refund_failed`. Receiving it again answers the same.",
    security(("bearer" = [])),
    params(("return_id" = String, Path)),
    responses(
        (status = 200, description = "the return, received", body = view::ReturnView),
        (status = 404, description = "`return_not_found`", body = view::ErrorBody),
        (status = 422, description = "`invalid_return_id`", body = view::ErrorBody),
        ForAdmins,
    ),
)]
#[tracing::instrument(skip(state, _admin))]
async fn receive_return(
    _admin: Admin,
    State(state): State<AppState>,
    Path(return_id): Path<String>,
) -> Result<axum::Json<view::ReturnView>, ApiError> {
    input::RETURN_ID.check_text("return_id", &return_id)?;
    if !return_id.starts_with("ret_") {
        return Err(hidden(Entity::Return, &return_id));
    }
    let refund_id = format!("rf_{}", &return_id["ret_".len()..]);
    let (ret, refund) = order_refunds::receive_return(&state.db, &return_id, &refund_id, now_ms())
        .await
        .map_err(ApiError::from)?;
    if let Some(refund) = refund.as_ref().filter(|f| f.status == "pending") {
        start(&state, refund).await?;
    }
    Ok(axum::Json(view::order_return(&ret)))
}
