//! orderflow-api: the REST edge (the README's "The API"; `docs/architecture.md` for where
//! a new endpoint goes).
//!
//! - [`app`] builds the router from an [`AppState`]; tests call it on port 0.
//! - [`auth`]: bearer JWTs (HS256): who calls, and what they may touch.
//! - [`error`]: `ApiError`, the one JSON error shape; 4xx carry a stable code, 5xx never leak.
//! - [`extract`]: JSON and query extractors whose rejections use that shape.
//! - [`engine`]: the `Engine` trait, everything the API asks of the workflow engine;
//!   [`temporal`] is the real one, the Temporal server (start, update, signal) in one place.
//! - [`input`]: what every request field accepts; the handlers and the document read it.
//! - [`view`]: the response shapes.
//! - [`openapi`]: the OpenAPI 3.1 document at `/openapi.json` and Swagger UI at `/docs`.
//! - `routes`: orders, payments, catalogue/accounts (admin and reads).
//!
//! Handlers validate input, then either read the database or ask an order's workflow. They
//! never change an order's status themselves: the workflow is the only writer of that.

pub mod auth;
pub mod engine;
pub mod error;
mod error_code;
pub mod extract;
pub mod input;
pub mod metrics;
pub mod openapi;
mod responses;
mod routes;
pub mod temporal;
pub mod view;

/// Webhook signatures live with the provider protocol; re-exported for callers of the API.
pub use orderflow_provider::signature;
pub use routes::orders::order_id_for;

use axum::Router;
use orderflow_store::Db;
use std::sync::Arc;
use std::time::Duration;

/// Settings the API needs at request time.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub task_queue: String,
    /// The one currency of this deployment (ISO 4217 code).
    pub currency: String,
    /// The default payment deadline, in seconds.
    pub payment_timeout_secs: u64,
    /// Webhook secrets: the current one first; during a rotation, the previous one too.
    pub webhook_secrets: Vec<String>,
    /// How far a webhook timestamp may be from now.
    pub webhook_tolerance: Duration,
    /// How long `POST /v1/orders` and cancel wait for the workflow before answering 503.
    pub workflow_wait: Duration,
    /// How long an open checkout session holds off the deadline (see README).
    pub checkout_window_secs: u64,
    /// How long a settled order's workflow stays open to refund late payments itself.
    pub late_payment_grace_secs: u64,
    /// When card payments are captured, and what an order does before an authorization lapses.
    pub capture: orderflow_workflows::model::CapturePolicy,
    /// The HS256 secret client tokens are signed with.
    pub jwt_secret: String,
    /// At most this many unpaid orders per user (429 `too_many_open_orders` beyond).
    pub max_open_orders_per_user: i64,
    /// How long a payment for an unknown order is held before it is refunded.
    pub unknown_order_hold_secs: u64,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// The workflow engine: Temporal ([`temporal::TemporalEngine`]), or a stand-in in tests.
    pub engine: Arc<dyn engine::Engine>,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<metrics::Metrics>,
    /// The payment provider's API, for the audit (its payment and refund listings).
    pub provider: orderflow_provider::PaymentProvider,
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(routes::orders::router())
        .merge(routes::payments::router())
        .merge(routes::accounts::router())
        .merge(routes::redemptions::router())
        .merge(routes::events::router())
        .merge(routes::refunds::router())
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics::metrics))
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/docs")
                .external_url_unchecked("/openapi.json", openapi::document()),
        )
        .fallback(|| async {
            error::ApiError::new(error::ErrorCode::RouteNotFound, "no such route")
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /healthz`: the process answers.
async fn healthz() -> axum::Json<view::Health> {
    axum::Json(view::Health {
        status: "ok".into(),
    })
}

/// `GET /readyz`: 200 when the database and Temporal both answer, 503 naming what does not.
async fn readyz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> (axum::http::StatusCode, axum::Json<view::Readiness>) {
    let db = tokio::time::timeout(Duration::from_secs(3), orderflow_store::ping(&state.db)).await;
    let db_ok = matches!(db, Ok(Ok(_)));
    let temporal_ok = state.engine.ready().await;
    let status = if db_ok && temporal_ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" }.to_owned();
    (
        status,
        axum::Json(view::Readiness {
            status: word(db_ok && temporal_ok),
            database: word(db_ok),
            temporal: word(temporal_ok),
        }),
    )
}
