//! Redemption codes and entitlements: `POST /v1/admin/codes`, `POST /v1/redemptions`,
//! `GET /v1/entitlements/{user_id}`.
//!
//! A redemption runs as the workflow of its `(user, code)` pair, which replaces a Redis lock;
//! the grant itself is one transaction in the activity. The handler validates, asks, and maps
//! the outcome to a status: it never writes a grant itself.

use super::hidden;
use crate::auth::{Admin, Caller};
use crate::error::{ApiError, ErrorCode};
use crate::extract::Json;
use crate::input;
use crate::responses::{ForAdmins, OnRecord, WithBody, WithToken};
use crate::{AppState, view};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use orderflow_activities::redemptions;
use orderflow_store::{Entity, now_ms};
use orderflow_workflows::model::{RedeemCode, RedemptionOutcome};
use serde::Deserialize;

/// Request bodies of these routes are capped (413 `body_too_large` beyond).
pub const MAX_REDEMPTION_BODY_BYTES: usize = 4 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/codes", post(create_code))
        .route("/v1/redemptions", post(redeem))
        .route("/v1/entitlements/{user_id}", get(entitlements))
        .layer(axum::extract::DefaultBodyLimit::max(
            MAX_REDEMPTION_BODY_BYTES,
        ))
}

type Reply<T> = Result<(StatusCode, axum::Json<T>), ApiError>;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCode {
    code: String,
    sku: String,
    #[serde(deserialize_with = "orderflow_provider::whole_number::required")]
    max_uses: i64,
}

#[utoipa::path(
    post, path = "/v1/admin/codes",
    tag = "admin",
    summary = "Create a redemption code",
    security(("bearer" = [])),
    request_body = CreateCode,
    responses(
        (status = 201, description = "the code", body = view::CodeView),
        (status = 404, description = "not found (or another user's)", body = view::ErrorBody),
        ForAdmins,
        WithBody,
    ),
)]
async fn create_code(
    _admin: Admin,
    State(state): State<AppState>,
    Json(body): Json<CreateCode>,
) -> Reply<view::CodeView> {
    input::CODE.check_text("code", &body.code)?;
    input::SKU.check_text("sku", &body.sku)?;
    input::amount(1).check_number("max_uses", body.max_uses)?;
    let code =
        redemptions::create_code(&state.db, &body.code, &body.sku, body.max_uses, now_ms()).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(view::CodeView {
            code: code.code,
            sku: code.sku,
            max_uses: code.max_uses,
            used_count: code.used_count,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    /// Taken from the token if absent.
    #[serde(default)]
    user_id: Option<String>,
    code: String,
}

#[utoipa::path(
    post, path = "/v1/redemptions",
    tag = "redemptions",
    summary = "Redeem a code (at most once per user)",
    security(("bearer" = [])),
    request_body = Redeem,
    responses(
        (status = 201, description = "the grant", body = view::RedemptionView),
        (status = 403, description = "another user", body = view::ErrorBody),
        (status = 404, description = "not found (or another user's)", body = view::ErrorBody),
        (status = 409, description = "conflict with the order's state", body = view::ErrorBody),
        WithToken,
        WithBody,
    ),
)]
#[tracing::instrument(skip(state, caller))]
async fn redeem(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<Redeem>,
) -> Reply<view::RedemptionView> {
    let user_id = caller.user_for(body.user_id.as_deref())?;
    input::USER_ID.check_text("user_id", &user_id)?;
    input::CODE.check_text("code", &body.code)?;
    let request = RedeemCode {
        code: body.code.clone(),
        user_id: user_id.clone(),
    };
    match state.engine.redeem(request).await? {
        RedemptionOutcome::Granted {
            entitlement_id,
            sku,
            redeemed_at_ms,
        } => Ok((
            StatusCode::CREATED,
            axum::Json(view::RedemptionView {
                user_id,
                code: body.code,
                sku,
                entitlement_id,
                redeemed_at: view::rfc3339(redeemed_at_ms),
            }),
        )),
        RedemptionOutcome::Refused(r) => Err(match r.code.as_str() {
            "unknown_code" => ApiError::new(ErrorCode::CodeNotFound, r.message),
            other => ApiError::reported(other, r.message, ErrorCode::InternalError),
        }),
    }
}

#[utoipa::path(
    get, path = "/v1/entitlements/{user_id}",
    tag = "accounts",
    summary = "A user's active entitlements",
    security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses(
        (status = 200, description = "the entitlements", body = view::EntitlementList),
        (status = 422, description = "`invalid_user_id`", body = view::ErrorBody),
        WithToken,
        OnRecord,
    ),
)]
async fn entitlements(
    caller: Caller,
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Reply<view::EntitlementList> {
    input::USER_ID.check_text("user_id", &user_id)?;
    if !caller.owns(&user_id) {
        return Err(hidden(Entity::Entitlements, &user_id));
    }
    let list = redemptions::entitlements(&state.db, &user_id).await?;
    Ok((
        StatusCode::OK,
        axum::Json(view::EntitlementList {
            user_id,
            entitlements: list
                .into_iter()
                .map(
                    |(entitlement_id, sku, quantity, source)| view::EntitlementView {
                        entitlement_id,
                        sku,
                        quantity,
                        source,
                    },
                )
                .collect(),
        }),
    ))
}
