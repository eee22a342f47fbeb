//! `/v1/orders`: create (idempotent), read, list, events, cancel, pay (checkout).
//!
//! Creation and cancellation go through the order's workflow and answer with its outcome in the
//! same response. Reads come from the database, which the workflow keeps up to date.

use super::hidden;
use crate::auth::{Admin, Caller};
use crate::engine::Answer;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{Json, Query};
use crate::input;
use crate::responses::{ForAdmins, OnRecord, WithBody, WithToken};
use crate::{AppState, view};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use orderflow_store::{self as store, Entity, now_ms};
use orderflow_workflows::model::{
    CancelReason, CancelRequest, OrderLine, OrderStatus, PaymentMethod, PlaceOrder,
};
use orderflow_workflows::refusal::RefusalCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Request bodies of these routes are capped (413 `body_too_large` beyond).
pub const MAX_ORDER_BODY_BYTES: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orders", post(create_order).get(list_orders))
        .route("/v1/orders/{order_id}", get(get_order))
        .route("/v1/orders/{order_id}/events", get(order_events))
        .route("/v1/orders/{order_id}/cancel", post(cancel_order))
        .route("/v1/orders/{order_id}/pay", post(pay_order))
        .route("/v1/admin/orders", post(create_admin_order))
        .route("/v1/admin/orders/{order_id}/ship", post(ship_order))
        .route("/v1/admin/orders/{order_id}/retry", post(retry_order))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_ORDER_BODY_BYTES))
}

/// The body of `POST /v1/admin/orders`: paid at once, by wallet or offline, with no deadline.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminOrder {
    pub user_id: String,
    /// Each SKU at most once (422 `duplicate_sku`: merge the lines).
    pub items: Vec<Item>,
    #[serde(default)]
    pub coupon_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "orderflow_provider::whole_number::optional"
    )]
    pub points: Option<i64>,
    /// `wallet` or `offline`.
    pub payment_method: String,
}

/// The body of `POST /v1/orders`. Its serialized form is the idempotency fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// Taken from the token if absent; must be the token's subject unless the caller is admin.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Each SKU at most once (422 `duplicate_sku`: merge the lines).
    pub items: Vec<Item>,
    #[serde(default)]
    pub coupon_id: Option<String>,
    #[serde(
        default,
        deserialize_with = "orderflow_provider::whole_number::optional"
    )]
    pub points: Option<i64>,
    #[serde(
        default,
        deserialize_with = "orderflow_provider::whole_number::optional"
    )]
    pub wallet_amount: Option<i64>,
    #[serde(
        default,
        deserialize_with = "orderflow_provider::whole_number::optional"
    )]
    pub payment_timeout_secs: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub sku: String,
    #[serde(deserialize_with = "orderflow_provider::whole_number::required")]
    pub quantity: i64,
}

impl CreateOrder {
    /// The user the order is for (resolved from the token before `validate`).
    fn user(&self) -> &str {
        self.user_id.as_deref().unwrap_or("")
    }

    fn validate(&self) -> Result<(), ApiError> {
        input::USER_ID.check_text("user_id", self.user())?;
        input::ITEMS.check_len("items", self.items.len())?;
        let mut seen = BTreeSet::new();
        for item in &self.items {
            input::SKU.check_text("sku", &item.sku)?;
            input::QUANTITY.check_number(&format!("quantity of {}", item.sku), item.quantity)?;
            if !seen.insert(item.sku.as_str()) {
                return Err(ApiError::new(
                    ErrorCode::DuplicateSku,
                    format!("SKU {} appears twice; merge the lines", item.sku),
                ));
            }
        }
        if let Some(coupon) = &self.coupon_id {
            input::COUPON_ID.check_text("coupon_id", coupon)?;
        }
        input::amount(0).check_number("points", self.points.unwrap_or(0))?;
        input::amount(0).check_number("wallet_amount", self.wallet_amount.unwrap_or(0))?;
        if let Some(t) = self.payment_timeout_secs {
            input::PAYMENT_TIMEOUT.check_number("payment_timeout_secs", t)?;
        }
        Ok(())
    }
}

pub(crate) fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// The order id for a user's idempotency key: stable, and not guessable from a sequence.
pub fn order_id_for(user_id: &str, key: &str) -> String {
    hashed_id(
        "ord",
        &[b"orderflow/order", user_id.as_bytes(), key.as_bytes()],
    )
}

/// `<prefix>_<26 hex digits>` of the hash of `parts`: an id derived from an idempotency key.
pub(crate) fn hashed_id(prefix: &str, parts: &[&[u8]]) -> String {
    format!("{prefix}_{}", &hex_sha256(parts)[..26])
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers.get("idempotency-key").ok_or_else(|| {
        ApiError::new(
            ErrorCode::IdempotencyKeyRequired,
            "this request needs an Idempotency-Key header",
        )
    })?;
    // A value that is not visible ASCII is refused like any other key outside the rule.
    let key = value.to_str().unwrap_or("");
    input::IDEMPOTENCY_KEY.check_text("Idempotency-Key", key)?;
    Ok(key.to_owned())
}

async fn order_response(
    state: &AppState,
    order_id: &str,
    status: StatusCode,
) -> Result<(StatusCode, axum::Json<view::OrderView>), ApiError> {
    let order = store::get_order(&state.db, order_id)
        .await
        .map_err(|e| ApiError::from(e).for_order(order_id))?;
    Ok(render(&order, status))
}

/// An order already loaded, as a response.
fn render(order: &store::Order, status: StatusCode) -> (StatusCode, axum::Json<view::OrderView>) {
    (status, axum::Json(view::order(order, now_ms())))
}

#[utoipa::path(
    post, path = "/v1/orders",
    tag = "orders",
    summary = "Create an order (idempotent on Idempotency-Key)",
    security(("bearer" = [])),
    request_body = CreateOrder,
    params(("Idempotency-Key" = String, Header, description = "one order per user and key")),
    responses(
        (status = 201, description = "the order, pending_payment (or paid)", body = view::OrderView),
        (status = 403, description = "`user_mismatch`: a user_id that is not the token's subject", body = view::ErrorBody),
        (status = 429, description = "too many unpaid orders", body = view::ErrorBody),
        WithToken,
        WithBody,
    ),
)]
#[tracing::instrument(skip_all, fields(order_id))]
async fn create_order(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(mut body): Json<CreateOrder>,
) -> Result<(StatusCode, axum::Json<view::OrderView>), ApiError> {
    body.user_id = Some(caller.user_for(body.user_id.as_deref())?);
    let key = idempotency_key(&headers)?;
    body.validate()?;
    let fingerprint = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    place(state, key, body, PaymentMethod::Online, fingerprint).await
}

#[utoipa::path(
    post, path = "/v1/admin/orders",
    tag = "admin",
    summary = "Create an order paid at once by wallet or offline",
    security(("bearer" = [])),
    request_body = CreateAdminOrder,
    params(("Idempotency-Key" = String, Header, description = "one order per user and key")),
    responses(
        (status = 201, description = "the order, paid", body = view::OrderView),
        ForAdmins,
        WithBody,
    ),
)]
#[tracing::instrument(skip_all, fields(order_id))]
async fn create_admin_order(
    _admin: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<CreateAdminOrder>,
) -> Result<(StatusCode, axum::Json<view::OrderView>), ApiError> {
    let key = idempotency_key(&headers)?;
    input::ADMIN_PAYMENT_METHOD.check_text("payment_method", &body.payment_method)?;
    let method = PaymentMethod::parse(&body.payment_method)
        .expect("the rule's words are payment methods (input's tests)");
    let fingerprint = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    let order = CreateOrder {
        user_id: Some(body.user_id),
        items: body.items,
        coupon_id: body.coupon_id,
        points: body.points,
        wallet_amount: None,
        payment_timeout_secs: None,
    };
    order.validate()?;
    place(state, key, order, method, fingerprint).await
}

/// Refuses at once an order that would exceed a SKU's quota. The reservation checks again in
/// its transaction; this is the fast, clear answer.
async fn check_quotas(state: &AppState, body: &CreateOrder) -> Result<(), ApiError> {
    for item in &body.items {
        if let Some((used, quota)) =
            orderflow_activities::quota::usage(&state.db, body.user(), &item.sku).await?
        {
            if used.saturating_add(item.quantity) > quota {
                return Err(ApiError::new(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "{} may hold at most {quota} of {} at once (open orders and active entitlements); {used} held",
                        body.user(),
                        item.sku
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Starts (or finds) the order's workflow and answers with its placement.
async fn place(
    state: AppState,
    key: String,
    body: CreateOrder,
    method: PaymentMethod,
    fingerprint: Vec<u8>,
) -> Result<(StatusCode, axum::Json<view::OrderView>), ApiError> {
    let order_id = order_id_for(body.user(), &key);
    tracing::Span::current().record("order_id", order_id.as_str());
    let request_hash = hex_sha256(&[&fingerprint]);
    // A replay of a request that already made its order is answered by that order, whatever
    // the quotas and the open-order cap say now: idempotency wins.
    if orderflow_activities::orders::status(&state.db, &order_id)
        .await?
        .is_none()
    {
        if method == PaymentMethod::Online {
            check_open_orders(&state, body.user()).await?;
        }
        check_quotas(&state, &body).await?;
    }
    let reused = || {
        ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request body",
        )
        .for_order(&order_id)
    };
    let input = PlaceOrder {
        order_id: order_id.clone(),
        user_id: body.user().to_owned(),
        items: body
            .items
            .iter()
            .map(|i| OrderLine {
                sku: i.sku.clone(),
                quantity: i.quantity,
            })
            .collect(),
        coupon_id: body.coupon_id.clone(),
        points: body.points.unwrap_or(0),
        wallet_amount: body.wallet_amount.unwrap_or(0),
        // Validated: 1 to 86,400 seconds.
        payment_timeout_secs: body
            .payment_timeout_secs
            .map_or(state.config.payment_timeout_secs, |t| t.unsigned_abs()),
        currency: state.config.currency.clone(),
        checkout_window_secs: Some(state.config.checkout_window_secs),
        late_payment_grace_secs: Some(state.config.late_payment_grace_secs),
        capture: Some(state.config.capture),
        payment_method: method,
        request_hash: request_hash.clone(),
        idempotency_key: key,
        max_open_orders: (method == PaymentMethod::Online)
            .then_some(state.config.max_open_orders_per_user),
        resume: false,
    };
    match state.engine.place_order(input).await? {
        Answer::Answered(placement) => {
            if placement.request_hash != request_hash {
                return Err(reused());
            }
            if let (OrderStatus::Rejected, Some(r)) = (placement.status, &placement.rejection) {
                return Err(rejected(&r.code, r.message.clone()).for_order(&order_id));
            }
        }
        // The workflow of this key already finished: the stored order is the answer.
        Answer::Closed | Answer::Refused(_) => {
            let order = match store::get_order(&state.db, &order_id).await {
                Ok(order) => order,
                Err(e) => return Err(ApiError::from(e).for_order(&order_id)),
            };
            if order.request_hash != request_hash {
                return Err(reused());
            }
            if let (Some(code), OrderStatus::Rejected) = (&order.reject_code, order.status) {
                let message = order.reject_message.clone().unwrap_or_default();
                return Err(rejected(code, message).for_order(&order_id));
            }
        }
    }
    order_response(&state, &order_id, StatusCode::CREATED).await
}

/// A rejected order's answer: its code (422, or 429 for the open-order cap); a code the API
/// does not list is `order_rejected`.
fn rejected(code: &str, message: String) -> ApiError {
    ApiError::reported(code, message, ErrorCode::OrderRejected)
}

/// Too many unpaid orders at once hold stock that others cannot buy: refuse more (429).
async fn check_open_orders(state: &AppState, user_id: &str) -> Result<(), ApiError> {
    let open = store::open_orders(&state.db, user_id).await?;
    let cap = state.config.max_open_orders_per_user;
    if open >= cap {
        return Err(ApiError::new(
            ErrorCode::TooManyOpenOrders,
            format!("{user_id} has {open} unpaid orders; pay or cancel one first (at most {cap})"),
        ));
    }
    Ok(())
}

/// The order, if the caller may see it; another user's order is "not found", like a missing one.
pub(crate) async fn owned_order(
    state: &AppState,
    caller: &Caller,
    order_id: &str,
) -> Result<store::Order, ApiError> {
    let order = store::get_order(&state.db, order_id).await?;
    if !caller.owns(&order.user_id) {
        return Err(hidden(Entity::Order, order_id));
    }
    Ok(order)
}

#[utoipa::path(
    get, path = "/v1/orders/{order_id}",
    tag = "orders",
    summary = "An order",
    security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "the order", body = view::OrderView),
        WithToken,
        OnRecord,
    ),
)]
#[tracing::instrument(skip(state, caller))]
async fn get_order(
    caller: Caller,
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<(StatusCode, axum::Json<view::OrderView>), ApiError> {
    let order = owned_order(&state, &caller, &order_id).await?;
    Ok(render(&order, StatusCode::OK))
}

#[utoipa::path(
    get, path = "/v1/orders/{order_id}/events",
    tag = "orders",
    summary = "The operation log of an order",
    security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "its events", body = view::EventList),
        WithToken,
        OnRecord,
    ),
)]
#[tracing::instrument(skip(state, caller))]
async fn order_events(
    caller: Caller,
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<view::EventList>, ApiError> {
    owned_order(&state, &caller, &order_id).await?;
    let events = store::order_events(&state.db, &order_id).await?;
    Ok(axum::Json(view::EventList {
        events: events.iter().map(view::event).collect(),
        order_id,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    user_id: Option<String>,
    status: Option<String>,
    is_expired: Option<bool>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/orders",
    tag = "orders",
    summary = "List orders, newest first",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "a page of orders", body = view::OrderList),
        (status = 400, description = "`invalid_query`: a parameter of the wrong type, or one this operation does not take", body = view::ErrorBody),
        (status = 403, description = "another user's list", body = view::ErrorBody),
        (status = 422, description = "a parameter outside its rule, with a stable `invalid_*` code", body = view::ErrorBody),
        WithToken,
    ),
)]
#[tracing::instrument(skip(state, caller))]
async fn list_orders(
    caller: Caller,
    State(state): State<AppState>,
    Query(mut q): Query<ListQuery>,
) -> Result<axum::Json<view::OrderList>, ApiError> {
    if !caller.is_admin() {
        q.user_id = Some(caller.user_for(q.user_id.as_deref())?);
    }
    let status = match q.status.as_deref() {
        None => None,
        Some(text) => {
            input::ORDER_STATUS.check_text("status", text)?;
            OrderStatus::parse(text)
        }
    };
    if let Some(user) = &q.user_id {
        input::USER_ID.check_text("user_id", user)?;
    }
    let limit = q.limit.unwrap_or(20);
    input::LIMIT.check_number("limit", limit)?;
    let after = q.cursor.as_deref().map(input::parse_cursor).transpose()?;
    let now = now_ms();
    let filter = store::OrderFilter {
        user_id: q.user_id,
        status,
        is_expired: q.is_expired,
        after,
        limit,
        now_ms: now,
    };
    let (orders, more) = store::list_orders(&state.db, &filter).await?;
    let next_cursor = match (more, orders.last()) {
        (true, Some(last)) => Some(input::cursor(last.created_at, &last.order_id)),
        _ => None,
    };
    Ok(axum::Json(view::OrderList {
        orders: orders.iter().map(|o| view::order(o, now)).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    reason: String,
}

#[utoipa::path(
    post, path = "/v1/orders/{order_id}/cancel",
    tag = "orders",
    summary = "Cancel an order (before it ships)",
    security(("bearer" = [])),
    request_body = CancelBody,
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "the cancelled order, everything undone", body = view::OrderView),
        (status = 403, description = "reason admin needs an admin", body = view::ErrorBody),
        (status = 409, description = "conflict with the order's state", body = view::ErrorBody),
        WithToken,
        WithBody,
        OnRecord,
    ),
)]
#[tracing::instrument(skip(state, body, caller))]
async fn cancel_order(
    caller: Caller,
    State(state): State<AppState>,
    Path(order_id): Path<String>,
    Json(body): Json<CancelBody>,
) -> Result<(StatusCode, axum::Json<view::OrderView>), ApiError> {
    let order = owned_order(&state, &caller, &order_id).await?;
    if body.reason == "admin" && !caller.is_admin() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only an admin cancels with reason \"admin\"",
        )
        .for_order(&order_id));
    }
    input::CANCEL_REASON
        .check_text("reason", &body.reason)
        .map_err(|e| e.for_order(&order_id))?;
    let reason = CancelReason::ALL
        .into_iter()
        .find(|r| r.as_str() == body.reason)
        .expect("the rule's words are cancel reasons (input's tests)");
    let not_cancellable = |status: OrderStatus| {
        ApiError::new(
            ErrorCode::OrderNotCancellable,
            format!("the order is {status} and can no longer be cancelled"),
        )
        .for_order(&order_id)
    };
    let shipped = || {
        ApiError::new(
            ErrorCode::OrderAlreadyShipped,
            "the order has shipped and can no longer be cancelled",
        )
        .for_order(&order_id)
    };
    if order.shipment.as_deref() == Some("shipped") {
        return Err(shipped());
    }
    let partly =
        orderflow_activities::order_refunds::partial_refunds_of(&state.db, &order_id).await?;
    if order.status != OrderStatus::Cancelled && partly > 0 {
        return Err(ApiError::new(
            ErrorCode::OrderPartiallyRefunded,
            "the order has partial refunds: refund the rest instead of cancelling it",
        )
        .for_order(&order_id));
    }
    match order.status {
        OrderStatus::Cancelled => return Ok(render(&order, StatusCode::OK)),
        OrderStatus::PendingPayment | OrderStatus::Paid | OrderStatus::Fulfilled => {}
        other @ (OrderStatus::Rejected | OrderStatus::Reserving) => {
            return Err(not_cancellable(other));
        }
    }
    match state
        .engine
        .cancel_order(&order_id, CancelRequest { reason })
        .await?
    {
        Answer::Answered(outcome) if outcome.status == OrderStatus::Cancelled => {
            order_response(&state, &order_id, StatusCode::OK).await
        }
        Answer::Refused(r) if r.code == RefusalCode::OrderAlreadyShipped => Err(shipped()),
        // Not cancelled (a payment or a shipment won), refused or closed: the workflow settled
        // the order another way; the row says how.
        Answer::Answered(_) | Answer::Refused(_) | Answer::Closed => {
            let order = store::get_order(&state.db, &order_id).await?;
            match (order.status, order.shipment.as_deref()) {
                (OrderStatus::Cancelled, _) => Ok(render(&order, StatusCode::OK)),
                (_, Some("shipped")) => Err(shipped()),
                (other, _) => Err(not_cancellable(other)),
            }
        }
    }
}

/// `POST /v1/admin/orders/{id}/ship`: the pending shipment of a paid order leaves; the order
/// is `fulfilled`. Refused with 409 `order_not_shippable` once the order is cancelled (or
/// being cancelled), already shipped, or has nothing to ship.
#[utoipa::path(
    post, path = "/v1/admin/orders/{order_id}/ship",
    tag = "admin",
    summary = "Ship a paid order's goods",
    security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "the fulfilled order", body = view::OrderView),
        (status = 409, description = "conflict with the order's state", body = view::ErrorBody),
        ForAdmins,
        OnRecord,
    ),
)]
#[tracing::instrument(skip(state, _admin))]
async fn ship_order(
    _admin: Admin,
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<(StatusCode, axum::Json<view::OrderView>), ApiError> {
    let order = store::get_order(&state.db, &order_id).await?;
    let not_shippable =
        |why: String| ApiError::new(ErrorCode::OrderNotShippable, why).for_order(&order_id);
    if order.shipment.as_deref() != Some("pending") {
        return Err(not_shippable(format!(
            "the order is {} and its shipment is {}",
            order.status,
            order.shipment.as_deref().unwrap_or("not there")
        )));
    }
    match state.engine.ship_order(&order_id).await? {
        Answer::Answered(_) => order_response(&state, &order_id, StatusCode::OK).await,
        Answer::Refused(r) => Err(not_shippable(r.message)),
        Answer::Closed => Err(not_shippable("the order's workflow has ended".into())),
    }
}

/// `POST /v1/admin/orders/{id}/retry`: an order stopped in `needs_attention` by a permanent
/// error tries again, once ops fixed the cause. Its workflow reads the order back from the
/// database and carries on; if the same error stops it again, it is raised again.
#[utoipa::path(
    post, path = "/v1/admin/orders/{order_id}/retry",
    tag = "admin",
    summary = "Retry an order that needs attention",
    security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 202, description = "the order's workflow carries on", body = view::OrderRetry),
        (status = 409, description = "`order_not_stopped`: the order does not need attention", body = view::ErrorBody),
        (status = 422, description = "invalid order id", body = view::ErrorBody),
        ForAdmins,
        OnRecord,
    ),
)]
#[tracing::instrument(skip(state, _admin))]
async fn retry_order(
    _admin: Admin,
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<(StatusCode, axum::Json<view::OrderRetry>), ApiError> {
    input::ORDER_ID.check_text("order_id", &order_id)?;
    let stopped = orderflow_activities::attention::of_order(&state.db, &order_id)
        .await
        .map_err(orderflow_store::StoreError::from)?;
    let not_stopped =
        |why: &str| ApiError::new(ErrorCode::OrderNotStopped, why).for_order(&order_id);
    let Some(stopped) = stopped else {
        store::get_order(&state.db, &order_id).await?;
        return Err(not_stopped("the order does not need attention"));
    };
    if !state.engine.retry_order(&order_id).await? {
        return Err(not_stopped("the order's workflow has ended"));
    }
    tracing::warn!(code = %stopped.code, "order retried by ops");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(view::OrderRetry {
            order_id,
            status: "retrying".into(),
            code: stopped.code,
        }),
    ))
}

/// `POST /v1/orders/{id}/pay`: a checkout session for the payable amount, through the
/// workflow's `order.checkout` update (validated there: pending, deadline not passed).
#[utoipa::path(
    post, path = "/v1/orders/{order_id}/pay",
    tag = "payments",
    summary = "Open a checkout session",
    security(("bearer" = [])),
    params(("order_id" = String, Path)),
    responses(
        (status = 200, description = "the session", body = view::CheckoutView),
        (status = 409, description = "conflict with the order's state", body = view::ErrorBody),
        WithToken,
        OnRecord,
    ),
)]
#[tracing::instrument(skip(state, caller))]
async fn pay_order(
    caller: Caller,
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<axum::Json<view::CheckoutView>, ApiError> {
    let order = owned_order(&state, &caller, &order_id).await?;
    let not_payable =
        |why: String| ApiError::new(ErrorCode::OrderNotPayable, why).for_order(&order_id);
    if order.status != OrderStatus::PendingPayment {
        return Err(not_payable(format!(
            "the order is {} and cannot be paid",
            order.status
        )));
    }
    match state.engine.checkout(&order_id).await? {
        Answer::Answered(session) => Ok(axum::Json(view::CheckoutView {
            order_id,
            payment_session_id: session.session_id,
            amount: session.amount,
            currency: session.currency,
            pay_url: session.pay_url,
            expires_at: view::rfc3339(session.expires_at_ms),
        })),
        Answer::Refused(r) if r.code == RefusalCode::ProviderUnavailable => {
            Err(ApiError::unavailable(
                ErrorCode::ProviderUnavailable,
                "the payment provider is unavailable; retry shortly",
                r.message,
            )
            .for_order(&order_id))
        }
        Answer::Refused(r) => Err(not_payable(r.message)),
        Answer::Closed => Err(not_payable("the order is settled".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_depend_on_user_and_key_and_are_not_sequential() {
        let a = order_id_for("alice", "k1");
        assert_eq!(a, order_id_for("alice", "k1"));
        assert_ne!(a, order_id_for("bob", "k1"));
        assert_ne!(a, order_id_for("alice", "k2"));
        // Length-prefixed parts: moving a character between user and key changes the id.
        assert_ne!(order_id_for("ab", "c"), order_id_for("a", "bc"));
        assert!(a.starts_with("ord_") && a.len() == 30);
    }
}
