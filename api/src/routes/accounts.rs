//! Catalogue, coupons, wallets and points: the admin writes that set up state, and the reads.

use super::hidden;
use crate::auth::{Admin, Caller};
use crate::error::ApiError;
use crate::extract::Json;
use crate::input;
use crate::responses::{ForAdmins, OnRecord, WithBody, WithToken};
use crate::{AppState, view};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use orderflow_activities::funds::{POINTS, WALLET};
use orderflow_store::{self as store, Entity};
use serde::Deserialize;

/// Request bodies of these routes are capped (413 `body_too_large` beyond).
pub const MAX_ADMIN_BODY_BYTES: usize = 4 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/skus/{sku}", put(put_sku))
        .route("/v1/skus/{sku}", get(get_sku))
        .route("/v1/admin/coupons", post(create_coupon))
        .route("/v1/coupons/{coupon_id}", get(get_coupon))
        .route("/v1/admin/wallets/{user_id}/credit", post(credit_wallet))
        .route("/v1/wallets/{user_id}", get(get_wallet))
        .route("/v1/admin/points/{user_id}/credit", post(credit_points))
        .route("/v1/points/{user_id}", get(get_points))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES))
}

type Reply<T> = Result<(StatusCode, axum::Json<T>), ApiError>;

fn ok<T>(status: StatusCode, body: T) -> Reply<T> {
    Ok((status, axum::Json(body)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSku {
    #[serde(deserialize_with = "orderflow_provider::whole_number::required")]
    price: i64,
    #[serde(deserialize_with = "orderflow_provider::whole_number::required")]
    stock: i64,
    /// `digital` or `physical` (default).
    #[serde(default)]
    kind: Option<String>,
    /// Units a user may hold at once in open orders plus active entitlements; absent: no limit.
    #[serde(
        default,
        deserialize_with = "orderflow_provider::whole_number::optional"
    )]
    quota: Option<i64>,
}

#[utoipa::path(
    put, path = "/v1/admin/skus/{sku}",
    tag = "admin",
    summary = "Create or update a SKU",
    security(("bearer" = [])),
    request_body = PutSku,
    params(("sku" = String, Path)),
    responses(
        (status = 200, description = "the SKU", body = view::SkuView),
        ForAdmins,
        WithBody,
    ),
)]
async fn put_sku(
    _admin: Admin,
    State(state): State<AppState>,
    Path(sku): Path<String>,
    Json(body): Json<PutSku>,
) -> Reply<view::SkuView> {
    input::SKU.check_text("sku", &sku)?;
    input::amount(0).check_number("price", body.price)?;
    input::amount(0).check_number("stock", body.stock)?;
    let kind = body.kind.unwrap_or_else(|| "physical".into());
    input::SKU_KIND.check_text("kind", &kind)?;
    if let Some(quota) = body.quota {
        input::amount(0).check_number("quota", quota)?;
    }
    let spec = store::SkuSpec {
        price: body.price,
        stock: body.stock,
        kind,
        quota: body.quota,
    };
    ok(
        StatusCode::OK,
        view::sku(&store::put_sku(&state.db, &sku, &spec).await?),
    )
}

#[utoipa::path(
    get, path = "/v1/skus/{sku}",
    tag = "catalogue",
    summary = "A SKU",
    security(("bearer" = [])),
    params(("sku" = String, Path)),
    responses(
        (status = 200, description = "the SKU", body = view::SkuView),
        WithToken,
        OnRecord,
    ),
)]
async fn get_sku(
    _caller: Caller,
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Reply<view::SkuView> {
    ok(
        StatusCode::OK,
        view::sku(&store::get_sku(&state.db, &sku).await?),
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCoupon {
    user_id: String,
    kind: String,
    #[serde(deserialize_with = "orderflow_provider::whole_number::required")]
    amount: i64,
}

#[utoipa::path(
    post, path = "/v1/admin/coupons",
    tag = "admin",
    summary = "Create a coupon for a user",
    security(("bearer" = [])),
    request_body = CreateCoupon,
    responses(
        (status = 201, description = "the coupon", body = view::CouponView),
        ForAdmins,
        WithBody,
    ),
)]
async fn create_coupon(
    _admin: Admin,
    State(state): State<AppState>,
    Json(body): Json<CreateCoupon>,
) -> Reply<view::CouponView> {
    input::USER_ID.check_text("user_id", &body.user_id)?;
    input::COUPON_KIND.check_text("kind", &body.kind)?;
    input::amount(1).check_number("amount", body.amount)?;
    ok(
        StatusCode::CREATED,
        view::coupon(
            &store::create_coupon(&state.db, &body.user_id, &body.kind, body.amount).await?,
        ),
    )
}

#[utoipa::path(
    get, path = "/v1/coupons/{coupon_id}",
    tag = "accounts",
    summary = "A coupon",
    security(("bearer" = [])),
    params(("coupon_id" = String, Path)),
    responses(
        (status = 200, description = "the coupon", body = view::CouponView),
        WithToken,
        OnRecord,
    ),
)]
async fn get_coupon(
    caller: Caller,
    State(state): State<AppState>,
    Path(coupon_id): Path<String>,
) -> Reply<view::CouponView> {
    let coupon = store::get_coupon(&state.db, &coupon_id).await?;
    if !caller.owns(&coupon.user_id) {
        return Err(hidden(Entity::Coupon, &coupon_id));
    }
    ok(StatusCode::OK, view::coupon(&coupon))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditWallet {
    #[serde(deserialize_with = "orderflow_provider::whole_number::required")]
    amount: i64,
}

#[utoipa::path(
    post, path = "/v1/admin/wallets/{user_id}/credit",
    tag = "admin",
    summary = "Credit a wallet",
    security(("bearer" = [])),
    request_body = CreditWallet,
    params(("user_id" = String, Path)),
    responses(
        (status = 200, description = "the wallet", body = view::WalletView),
        ForAdmins,
        WithBody,
    ),
)]
async fn credit_wallet(
    _admin: Admin,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Json(body): Json<CreditWallet>,
) -> Reply<view::WalletView> {
    input::USER_ID.check_text("user_id", &user_id)?;
    input::amount(1).check_number("amount", body.amount)?;
    ok(
        StatusCode::OK,
        view::wallet(&store::credit(&state.db, WALLET, &user_id, body.amount).await?),
    )
}

#[utoipa::path(
    get, path = "/v1/wallets/{user_id}",
    tag = "accounts",
    summary = "A wallet",
    security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses(
        (status = 200, description = "the wallet", body = view::WalletView),
        WithToken,
        OnRecord,
    ),
)]
async fn get_wallet(
    caller: Caller,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Reply<view::WalletView> {
    if !caller.owns(&user_id) {
        return Err(hidden(Entity::Wallet, &user_id));
    }
    ok(
        StatusCode::OK,
        view::wallet(&store::get_account(&state.db, WALLET, &user_id).await?),
    )
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditPoints {
    #[serde(deserialize_with = "orderflow_provider::whole_number::required")]
    points: i64,
}

#[utoipa::path(
    post, path = "/v1/admin/points/{user_id}/credit",
    tag = "admin",
    summary = "Credit points",
    security(("bearer" = [])),
    request_body = CreditPoints,
    params(("user_id" = String, Path)),
    responses(
        (status = 200, description = "the points account", body = view::PointsView),
        ForAdmins,
        WithBody,
    ),
)]
async fn credit_points(
    _admin: Admin,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Json(body): Json<CreditPoints>,
) -> Reply<view::PointsView> {
    input::USER_ID.check_text("user_id", &user_id)?;
    input::amount(1).check_number("points", body.points)?;
    ok(
        StatusCode::OK,
        view::points(&store::credit(&state.db, POINTS, &user_id, body.points).await?),
    )
}

#[utoipa::path(
    get, path = "/v1/points/{user_id}",
    tag = "accounts",
    summary = "A points account",
    security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses(
        (status = 200, description = "the points account", body = view::PointsView),
        WithToken,
        OnRecord,
    ),
)]
async fn get_points(
    caller: Caller,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Reply<view::PointsView> {
    if !caller.owns(&user_id) {
        return Err(hidden(Entity::Points, &user_id));
    }
    ok(
        StatusCode::OK,
        view::points(&store::get_account(&state.db, POINTS, &user_id).await?),
    )
}
