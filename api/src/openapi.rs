//! The OpenAPI 3.1 document (`GET /openapi.json`) and Swagger UI (`GET /docs`), generated from
//! the handlers' `#[utoipa::path]` annotations and the response types of `view`.
//!
//! The schemas live in `view` with the shapes the handlers send; this module only reads them
//! and the routes (no module imports this one but the router), so there is no import circle.
//! Every route the router serves must be listed in [`ApiDoc`]; `tests/openapi.rs` compares the
//! router's routes (from the source) with this document and fails on any gap. The Swagger UI
//! assets are vendored into the binary: nothing is fetched at run time.

use crate::error::ErrorCode;
use crate::view::{
    CheckoutView, CodeView, CouponView, EntitlementList, EntitlementView, ErrorBody, ErrorDetail,
    EventList, EventView, Health, ItemView, OrderList, OrderView, PaymentView, PointsView,
    Readiness, RedemptionView, RefundView, SkuView, WalletView, WebhookAnswer,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        ErrorBody, ErrorDetail, ErrorCode, OrderView, ItemView, PaymentView, RefundView, EventView, SkuView,
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
