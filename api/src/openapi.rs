//! The OpenAPI 3.1 document (`GET /openapi.json`) and Swagger UI (`GET /docs`), generated from
//! the handlers' `#[utoipa::path]` annotations and the response types of `view`.
//!
//! Every route the router serves must be listed in [`ApiDoc`]; `tests/openapi.rs` compares the
//! router's routes (from the source) with this document and fails on any gap. The Swagger UI
//! assets are vendored into the binary: nothing is fetched at run time.

use crate::view::{
    CouponView, EventView, ItemView, OrderView, PaymentView, PointsView, RefundView, SkuView,
    WalletView,
};
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The one error shape: `{"error": {"code", "message", "order_id"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `insufficient_stock`, `order_not_payable`, ...
    pub code: String,
    /// Human-readable; safe to show.
    pub message: String,
    pub order_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    pub orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub order_id: String,
    pub events: Vec<EventView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutView {
    pub order_id: String,
    pub payment_session_id: String,
    pub amount: i64,
    pub currency: String,
    /// Where the payer pays.
    pub pay_url: String,
    /// The order's deadline while this session is open.
    pub expires_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAnswer {
    pub status: String,
}

/// An order in `needs_attention` that ops asked to try again.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderRetry {
    pub order_id: String,
    /// Always `retrying`: the workflow carries on from the database.
    pub status: String,
    /// The code that had stopped it (`constraint_violation`, ...).
    pub code: String,
}

/// A refund retry that was started.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundRetry {
    pub payment_id: String,
    pub order_id: String,
    pub attempt: i64,
    /// The workflow running this attempt.
    pub workflow_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CodeView {
    pub code: String,
    pub sku: String,
    pub max_uses: i64,
    pub used_count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedemptionView {
    pub user_id: String,
    pub code: String,
    pub sku: String,
    pub entitlement_id: String,
    pub redeemed_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementView {
    pub entitlement_id: String,
    pub sku: String,
    pub quantity: i64,
    /// `order` or `redemption`.
    pub source: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementList {
    pub user_id: String,
    pub entitlements: Vec<EntitlementView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    pub database: String,
    pub temporal: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive", body = Health)))]
pub fn healthz_doc() {}

/// Readiness: the database and Temporal answer.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready", body = Readiness),
    (status = 503, description = "the database or Temporal does not answer", body = Readiness)))]
pub fn readyz_doc() {}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub fn metrics_doc() {}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 with ORDERFLOW_JWT_SECRET; claims sub (the user), role (user | admin), exp",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "payment_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Payment-Signature",
                "t=<unix>,v1=<hex HMAC-SHA256(secret, \"<t>.<raw body>\")>, 300 s tolerance",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow",
        description = "Orders as durable Temporal workflows: reservations, checkout, refunds exactly once, fulfilment.",
        version = "1"
    ),
    paths(
        crate::routes::orders::create_order,
        crate::routes::orders::list_orders,
        crate::routes::orders::get_order,
        crate::routes::orders::order_events,
        crate::routes::orders::cancel_order,
        crate::routes::orders::pay_order,
        crate::routes::orders::create_admin_order,
        crate::routes::orders::ship_order,
        crate::routes::orders::retry_order,
        crate::routes::payments::webhook,
        crate::routes::payments::audit,
        crate::routes::payments::retry_refund,
        crate::routes::accounts::put_sku,
        crate::routes::accounts::get_sku,
        crate::routes::accounts::create_coupon,
        crate::routes::accounts::get_coupon,
        crate::routes::accounts::credit_wallet,
        crate::routes::accounts::get_wallet,
        crate::routes::accounts::credit_points,
        crate::routes::accounts::get_points,
        crate::routes::redemptions::create_code,
        crate::routes::redemptions::redeem,
        crate::routes::redemptions::entitlements,
        healthz_doc,
        readyz_doc,
        metrics_doc,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, OrderView, ItemView, PaymentView, RefundView, EventView, SkuView,
        CouponView, WalletView, PointsView, OrderList, EventList, CheckoutView, WebhookAnswer,
        CodeView, RedemptionView, EntitlementView, EntitlementList, Health, Readiness,
    )),
    modifiers(&Security),
    tags(
        (name = "orders", description = "create, read, list, cancel"),
        (name = "payments", description = "checkout and the provider's webhook"),
        (name = "catalogue"), (name = "accounts"), (name = "redemptions"),
        (name = "admin", description = "needs role admin"),
        (name = "operations", description = "health, readiness, metrics; no token")
    )
)]
pub struct ApiDoc;

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
