//! Events out to other services, for admins: register a subscriber URL, see what was delivered
//! to it and what was answered, and redeliver (README, "Events out").
//!
//! These routes only read and steer the outbox (`orderflow_store::events_out`); the worker's
//! dispatcher sends. They must never send an event themselves or mark one delivered.

use crate::auth::Admin;
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::input;
use crate::responses::{ForAdmins, OnRecord, WithBody};
use crate::{AppState, view};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use orderflow_store::events_out::{self, EVENT_TYPES};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/event-subscriptions",
            post(create_subscription).get(list_subscriptions),
        )
        .route(
            "/v1/admin/event-subscriptions/{subscription_id}",
            get(get_subscription),
        )
        .route(
            "/v1/admin/event-subscriptions/{subscription_id}/disable",
            post(disable_subscription),
        )
        .route(
            "/v1/admin/event-subscriptions/{subscription_id}/deliveries",
            get(list_deliveries),
        )
        .route(
            "/v1/admin/event-subscriptions/{subscription_id}/deliveries/{event_id}",
            get(get_delivery),
        )
        .route(
            "/v1/admin/event-subscriptions/{subscription_id}/deliveries/{event_id}/redeliver",
            post(redeliver),
        )
        .layer(axum::extract::DefaultBodyLimit::max(
            super::accounts::MAX_ADMIN_BODY_BYTES,
        ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscription {
    /// Where each event is POSTed: `http://` or `https://`, then printable ASCII. Redirects
    /// are not followed.
    url: String,
    /// The event types to deliver, each once; absent: all of them.
    #[serde(default)]
    event_types: Option<Vec<String>>,
}

#[utoipa::path(
    post, path = "/v1/admin/event-subscriptions",
    tag = "admin",
    summary = "Subscribe a URL to events",
    description = "Every event of the chosen types written from now on is POSTed to `url`, signed with `Orderflow-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>` (the scheme of the payment webhook), retried with backoff for 3 days until a 2xx comes back, in order per order. Deliver at least once: deduplicate on the event `id`.",
    security(("bearer" = [])),
    request_body = CreateSubscription,
    responses(
        (status = 201, description = "the subscriber, with its signing secret", body = view::SubscriptionView),
        ForAdmins,
        WithBody,
    ),
)]
async fn create_subscription(
    _admin: Admin,
    State(state): State<AppState>,
    Json(body): Json<CreateSubscription>,
) -> Result<(StatusCode, axum::Json<view::SubscriptionView>), ApiError> {
    input::SUBSCRIBER_URL.check_text("url", &body.url)?;
    let event_types = match body.event_types {
        None => EVENT_TYPES.map(str::to_owned).to_vec(),
        Some(types) => {
            input::EVENT_TYPES.check_words("event_types", &types)?;
            types
        }
    };
    let created = events_out::create_subscription(&state.db, &body.url, &event_types).await?;
    tracing::info!(subscription_id = %created.subscription_id, "events subscriber registered");
    Ok((
        StatusCode::CREATED,
        axum::Json(view::subscription(&created)),
    ))
}

#[utoipa::path(
    get, path = "/v1/admin/event-subscriptions",
    tag = "admin",
    summary = "Every events subscriber",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "oldest first, disabled ones too", body = view::SubscriptionList),
        ForAdmins,
    ),
)]
async fn list_subscriptions(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<axum::Json<view::SubscriptionList>, ApiError> {
    let all = events_out::list_subscriptions(&state.db).await?;
    Ok(axum::Json(view::SubscriptionList {
        subscriptions: all.iter().map(view::subscription).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/admin/event-subscriptions/{subscription_id}",
    tag = "admin",
    summary = "An events subscriber",
    security(("bearer" = [])),
    params(("subscription_id" = String, Path)),
    responses(
        (status = 200, description = "the subscriber", body = view::SubscriptionView),
        (status = 422, description = "`invalid_subscription_id`", body = view::ErrorBody),
        ForAdmins,
        OnRecord,
    ),
)]
async fn get_subscription(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<view::SubscriptionView>, ApiError> {
    input::SUBSCRIPTION_ID.check_text("subscription_id", &id)?;
    let found = events_out::get_subscription(&state.db, &id).await?;
    Ok(axum::Json(view::subscription(&found)))
}

#[utoipa::path(
    post, path = "/v1/admin/event-subscriptions/{subscription_id}/disable",
    tag = "admin",
    summary = "Disable an events subscriber",
    description = "Nothing more is delivered to it, pending deliveries included. The subscriber and its delivery log stay readable (a `POST`, not a `DELETE`: nothing is removed). Disabling it again changes nothing.",
    security(("bearer" = [])),
    params(("subscription_id" = String, Path)),
    responses(
        (status = 200, description = "the subscriber, disabled", body = view::SubscriptionView),
        (status = 422, description = "`invalid_subscription_id`", body = view::ErrorBody),
        ForAdmins,
        OnRecord,
    ),
)]
async fn disable_subscription(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<view::SubscriptionView>, ApiError> {
    input::SUBSCRIPTION_ID.check_text("subscription_id", &id)?;
    let disabled = events_out::disable_subscription(&state.db, &id).await?;
    tracing::info!(subscription_id = %id, "events subscriber disabled");
    Ok(axum::Json(view::subscription(&disabled)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// At most this many, newest first (default 20).
    limit: Option<i64>,
}

#[utoipa::path(
    get, path = "/v1/admin/event-subscriptions/{subscription_id}/deliveries",
    tag = "admin",
    summary = "A subscriber's deliveries",
    security(("bearer" = [])),
    params(("subscription_id" = String, Path), DeliveriesQuery),
    responses(
        (status = 200, description = "newest event first", body = view::DeliveryList),
        (status = 400, description = "`invalid_query`: a parameter of the wrong type, or one this operation does not take", body = view::ErrorBody),
        (status = 422, description = "`invalid_subscription_id` or `invalid_limit`", body = view::ErrorBody),
        ForAdmins,
        OnRecord,
    ),
)]
async fn list_deliveries(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<axum::Json<view::DeliveryList>, ApiError> {
    input::SUBSCRIPTION_ID.check_text("subscription_id", &id)?;
    let limit = q.limit.unwrap_or(20);
    input::LIMIT.check_number("limit", limit)?;
    let deliveries = events_out::list_deliveries(&state.db, &id, limit).await?;
    Ok(axum::Json(view::DeliveryList {
        deliveries: deliveries.iter().map(view::delivery).collect(),
        subscription_id: id,
    }))
}

#[utoipa::path(
    get, path = "/v1/admin/event-subscriptions/{subscription_id}/deliveries/{event_id}",
    tag = "admin",
    summary = "A delivery and every attempt at it",
    security(("bearer" = [])),
    params(("subscription_id" = String, Path), ("event_id" = String, Path)),
    responses(
        (status = 200, description = "the delivery and its attempts", body = view::DeliveryLog),
        (status = 422, description = "`invalid_subscription_id` or `invalid_event_id`", body = view::ErrorBody),
        ForAdmins,
        OnRecord,
    ),
)]
async fn get_delivery(
    _admin: Admin,
    State(state): State<AppState>,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<axum::Json<view::DeliveryLog>, ApiError> {
    check_delivery_path(&id, &event_id)?;
    let found = events_out::get_delivery(&state.db, &id, &event_id).await?;
    Ok(axum::Json(view::delivery_log(&found)))
}

#[utoipa::path(
    post, path = "/v1/admin/event-subscriptions/{subscription_id}/deliveries/{event_id}/redeliver",
    tag = "admin",
    summary = "Deliver an event again",
    description = "Whatever its state, the delivery becomes `pending`, due now, with a fresh retry period. A receiver that deduplicates on the event id handles it once.",
    security(("bearer" = [])),
    params(("subscription_id" = String, Path), ("event_id" = String, Path)),
    responses(
        (status = 202, description = "the delivery, due now", body = view::DeliveryLog),
        (status = 422, description = "`invalid_subscription_id` or `invalid_event_id`", body = view::ErrorBody),
        ForAdmins,
        OnRecord,
    ),
)]
async fn redeliver(
    _admin: Admin,
    State(state): State<AppState>,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<(StatusCode, axum::Json<view::DeliveryLog>), ApiError> {
    check_delivery_path(&id, &event_id)?;
    let due = events_out::redeliver(&state.db, &id, &event_id).await?;
    tracing::info!(subscription_id = %id, event_id = %event_id, "event redelivery asked");
    Ok((StatusCode::ACCEPTED, axum::Json(view::delivery_log(&due))))
}

fn check_delivery_path(id: &str, event_id: &str) -> Result<(), ApiError> {
    input::SUBSCRIPTION_ID.check_text("subscription_id", id)?;
    input::EVENT_ID.check_text("event_id", event_id)
}
