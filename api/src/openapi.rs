//! The OpenAPI 3.1 document (`GET /openapi.json`) and Swagger UI (`GET /docs`), generated from
//! the handlers' `#[utoipa::path]` annotations and the response types of `view`.
//!
//! The schemas live in `view` with the shapes the handlers send; this module only reads them
//! and the routes (no module imports this one but the router), so there is no import circle.
//! Every route the router serves must be listed in [`ApiDoc`]; `tests/openapi.rs` compares the
//! router's routes (from the source) with this document and fails on any gap. The Swagger UI
//! assets are vendored into the binary: nothing is fetched at run time.

use crate::error::ErrorCode;
use crate::input;
use crate::view::{
    AttemptView, CheckoutView, CodeView, CouponView, DeliveryList, DeliveryLog, DeliveryView,
    EntitlementList, EntitlementView, ErrorBody, ErrorDetail, EventList, EventView, Health,
    ItemView, LineView, OrderList, OrderView, PartialRefundList, PartialRefundView, PaymentView,
    PointsView, Readiness, RedemptionView, RefundView, ReturnList, ReturnView, SkuView,
    SubscriptionList, SubscriptionView, WalletView, WebhookAnswer,
};
use orderflow_store::events_out::{DELIVERY_STATES, EVENT_TYPES};
use orderflow_workflows::model::{CancelReason, PaymentMethod};
use serde_json::{Value, json};
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
        crate::routes::events::create_subscription,
        crate::routes::events::list_subscriptions,
        crate::routes::events::get_subscription,
        crate::routes::events::disable_subscription,
        crate::routes::events::list_deliveries,
        crate::routes::events::get_delivery,
        crate::routes::events::redeliver,
        crate::routes::refunds::create_refund,
        crate::routes::refunds::list_refunds,
        crate::routes::refunds::create_return,
        crate::routes::refunds::list_returns,
        crate::routes::refunds::receive_return,
        healthz_doc,
        readyz_doc,
        metrics_doc,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, ErrorCode, OrderView, ItemView, PaymentView, RefundView, EventView, SkuView,
        CouponView, WalletView, PointsView, OrderList, EventList, CheckoutView, WebhookAnswer,
        CodeView, RedemptionView, EntitlementView, EntitlementList, Health, Readiness,
        SubscriptionView, SubscriptionList, DeliveryView, DeliveryList, AttemptView, DeliveryLog,
        PartialRefundView, PartialRefundList, ReturnView, ReturnList, LineView,
    )),
    modifiers(&Security),
    tags(
        (name = "orders", description = "create, read, list, cancel"),
        (name = "payments", description = "checkout and the provider's webhook"),
        (name = "catalogue"), (name = "accounts"), (name = "redemptions"),
        (name = "admin", description = "needs role admin; events out to other services are here too"),
        (name = "operations", description = "health, readiness, metrics; no token")
    )
)]
pub struct ApiDoc;

/// A link from an operation's answer to an operation that uses what it returns (OpenAPI
/// `links`), so that a client generator, a reader and a stateful fuzzer can walk a lifecycle.
struct Link {
    from: &'static str,
    status: &'static str,
    to: &'static str,
    /// `(parameter, runtime expression)`.
    parameters: &'static [(&'static str, &'static str)],
    /// The whole request body (JSON, with runtime expressions in its strings), if the link
    /// gives one.
    body: Option<&'static str>,
}

const ORDER_ID: &[(&str, &str)] = &[("order_id", "$response.body#/order_id")];
const USER_IN_PATH: &[(&str, &str)] = &[("user_id", "$request.path.user_id")];

/// A link that hands the order id its source answered with to `to`.
const fn order_link(from: &'static str, status: &'static str, to: &'static str) -> Link {
    Link {
        from,
        status,
        to,
        parameters: ORDER_ID,
        body: None,
    }
}

/// A link from a new subscriber to an operation on it.
const fn subscription_link(to: &'static str) -> Link {
    Link {
        from: "create_subscription",
        status: "201",
        to,
        parameters: &[("subscription_id", "$response.body#/subscription_id")],
        body: None,
    }
}

const LINKS: &[Link] = &[
    order_link("create_order", "201", "get_order"),
    order_link("create_order", "201", "order_events"),
    order_link("create_order", "201", "pay_order"),
    order_link("create_order", "201", "cancel_order"),
    order_link("create_order", "201", "ship_order"),
    order_link("create_admin_order", "201", "get_order"),
    order_link("create_admin_order", "201", "ship_order"),
    order_link("create_admin_order", "201", "cancel_order"),
    order_link("pay_order", "200", "get_order"),
    order_link("create_admin_order", "201", "create_refund"),
    order_link("create_admin_order", "201", "list_refunds"),
    order_link("create_admin_order", "201", "create_return"),
    order_link("create_admin_order", "201", "list_returns"),
    Link {
        from: "create_return",
        status: "201",
        to: "receive_return",
        parameters: &[("return_id", "$response.body#/return_id")],
        body: None,
    },
    Link {
        from: "put_sku",
        status: "200",
        to: "create_order",
        parameters: &[],
        body: Some(r#"{"items": [{"sku": "$response.body#/sku", "quantity": 1}]}"#),
    },
    Link {
        from: "put_sku",
        status: "200",
        to: "create_admin_order",
        parameters: &[],
        body: Some(
            r#"{"user_id": "walk-in", "items": [{"sku": "$response.body#/sku", "quantity": 1}], "payment_method": "offline"}"#,
        ),
    },
    Link {
        from: "put_sku",
        status: "200",
        to: "create_code",
        parameters: &[],
        body: Some(
            r#"{"code": "$response.body#/sku", "sku": "$response.body#/sku", "max_uses": 3}"#,
        ),
    },
    Link {
        from: "create_code",
        status: "201",
        to: "redeem",
        parameters: &[],
        body: Some(r#"{"code": "$response.body#/code"}"#),
    },
    Link {
        from: "create_coupon",
        status: "201",
        to: "get_coupon",
        parameters: &[("coupon_id", "$response.body#/coupon_id")],
        body: None,
    },
    Link {
        from: "put_sku",
        status: "200",
        to: "get_sku",
        parameters: &[("sku", "$response.body#/sku")],
        body: None,
    },
    Link {
        from: "credit_wallet",
        status: "200",
        to: "get_wallet",
        parameters: USER_IN_PATH,
        body: None,
    },
    Link {
        from: "credit_points",
        status: "200",
        to: "get_points",
        parameters: USER_IN_PATH,
        body: None,
    },
    subscription_link("get_subscription"),
    subscription_link("list_deliveries"),
    subscription_link("disable_subscription"),
    Link {
        from: "redeem",
        status: "201",
        to: "entitlements",
        parameters: &[("user_id", "$response.body#/user_id")],
        body: None,
    },
];

/// The document, as served: the generated one, with every field's rule from `crate::input` and
/// the links between operations written in.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    constrain(&mut doc);
    separate_webhook_bodies(&mut doc);
    one_refund_measure(&mut doc);
    enumerate_answers(&mut doc);
    link(&mut doc);
    mark_open_operations(&mut doc);
    doc
}

/// A shipment's states, as `activities::fulfilment` writes them.
const SHIPMENT_STATES: [&str; 3] = ["pending", "shipped", "intercepted"];

/// The words a field of an answer takes, so that generated clients get enumerations and
/// Schemathesis checks every answer against them.
fn enumerate_answers(doc: &mut Value) {
    let words = |rule: input::Rule| match rule {
        input::Rule::OneOf { words, .. } => words.to_vec(),
        other => unreachable!("{other:?} is not an enumeration"),
    };
    let fields: [(&str, &str, Vec<&str>); 13] = [
        ("Order", "status", words(input::ORDER_STATUS)),
        (
            "Order",
            "cancel_reason",
            CancelReason::ALL.map(CancelReason::as_str).to_vec(),
        ),
        (
            "Order",
            "payment_method",
            PaymentMethod::ALL.map(PaymentMethod::as_str).to_vec(),
        ),
        ("Order", "shipment_status", SHIPMENT_STATES.to_vec()),
        ("Sku", "kind", words(input::SKU_KIND)),
        ("Coupon", "kind", words(input::COUPON_KIND)),
        ("Delivery", "status", DELIVERY_STATES.to_vec()),
        ("Delivery", "event_type", EVENT_TYPES.to_vec()),
        (
            "PartialRefund",
            "status",
            vec!["pending", "succeeded", "failed"],
        ),
        ("PartialRefund", "kind", vec!["amount", "lines", "return"]),
        ("Refund", "method", vec!["refund", "void"]),
        ("PartialRefund", "reason", words(input::REFUND_REASON)),
        (
            "Return",
            "status",
            vec!["requested", "received", "refunded", "refund_failed"],
        ),
    ];
    for (schema, property, words) in fields {
        let field = &mut doc["components"]["schemas"][schema]["properties"][property];
        assert!(
            field.is_object(),
            "{schema}.{property} is not in the document"
        );
        field["enum"] = enumeration(field, json!(words));
    }
}

/// An operation that takes no token says so (`security: []`) instead of saying nothing.
fn mark_open_operations(doc: &mut Value) {
    for operation in operations_mut(doc) {
        if let Some(fields) = operation.as_object_mut() {
            fields.entry("security").or_insert_with(|| json!([]));
        }
    }
}

/// Every operation of the document (each method of each path).
fn operations_mut(doc: &mut Value) -> impl Iterator<Item = &mut Value> {
    doc["paths"]
        .as_object_mut()
        .expect("paths")
        .values_mut()
        .flat_map(|item| item.as_object_mut().expect("a path item").values_mut())
}

/// Merges a rule's keywords into a field's schema. A nullable field (`type: [t, "null"]`) keeps
/// `null` allowed when the rule is an enumeration.
fn apply(schema: &mut Value, rule: input::Rule) {
    for (keyword, value) in rule.keywords() {
        schema[keyword] = if keyword == "enum" {
            enumeration(schema, value)
        } else {
            value
        };
    }
    // A bounded integer needs no format: the bounds say more than `int64`.
    if let (input::Rule::Range { .. }, Some(fields)) = (rule, schema.as_object_mut()) {
        fields.remove("format");
    }
}

/// The values of an `enum` for a field: its words, and `null` too if the field is nullable
/// (`type: [t, "null"]`), so that an absent value stays allowed.
fn enumeration(field: &Value, mut words: Value) -> Value {
    let nullable = field["type"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "null"));
    if nullable {
        words
            .as_array_mut()
            .expect("an enum is a list")
            .push(Value::Null);
    }
    words
}

/// The webhook takes one of two bodies, told apart by `type`: a session event's is
/// `checkout.session.expired`, and a payment event's is any other, so exactly one of the
/// `oneOf` matches any body.
fn separate_webhook_bodies(doc: &mut Value) {
    let field = &mut doc["components"]["schemas"]["WebhookEvent"]["properties"]["type"];
    assert!(
        field.is_object(),
        "WebhookEvent.type is not in the document"
    );
    field["not"] = json!({"enum": [orderflow_provider::CHECKOUT_SESSION_EXPIRED]});
}

/// A partial refund names exactly one of `amount` and `lines` (with a value).
fn one_refund_measure(doc: &mut Value) {
    let schema = &mut doc["components"]["schemas"]["CreateRefund"];
    assert!(schema.is_object(), "CreateRefund is not in the document");
    // (Either may also be sent as `null`, which counts as absent.)
    schema["oneOf"] = json!([
        {"required": ["amount"], "properties": {"amount": {"type": "integer"}}},
        {"required": ["lines"], "properties": {"lines": {"type": "array"}}},
    ]);
}

fn constrain(doc: &mut Value) {
    for (schema, property, rule) in input::BODY_FIELDS {
        let field = &mut doc["components"]["schemas"][*schema]["properties"][*property];
        assert!(
            field.is_object(),
            "input::BODY_FIELDS names {schema}.{property}, which the document does not have"
        );
        apply(field, *rule);
    }
    for operation in operations_mut(doc) {
        let parameters = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut);
        for parameter in parameters.into_iter().flatten() {
            let name = parameter["name"].as_str().unwrap_or_default().to_owned();
            let (_, rule) = input::PARAMETERS
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("parameter {name} has no rule in input::PARAMETERS"));
            apply(&mut parameter["schema"], *rule);
        }
    }
}

fn operation_mut<'a>(doc: &'a mut Value, id: &str) -> &'a mut Value {
    operations_mut(doc)
        .find(|op| op["operationId"] == id)
        .unwrap_or_else(|| panic!("no operation {id}"))
}

fn link(doc: &mut Value) {
    for link in LINKS {
        let parameters: serde_json::Map<String, Value> = link
            .parameters
            .iter()
            .map(|(name, expression)| ((*name).to_owned(), json!(expression)))
            .collect();
        let answer = &mut operation_mut(doc, link.from)["responses"][link.status];
        assert!(
            answer.is_object(),
            "{} has no {} answer to link from",
            link.from,
            link.status
        );
        let mut to = json!({
            "operationId": link.to,
            "parameters": parameters,
            "description": format!("{} with what {} returned", link.to, link.from),
        });
        if let Some(body) = link.body {
            to["requestBody"] = serde_json::from_str(body).expect("a link's body is JSON");
            // Schemathesis: send this body as it is, not merged into a generated one.
            to["x-schemathesis"] = json!({"merge_body": false});
        }
        answer["links"][link.to] = to;
    }
}
