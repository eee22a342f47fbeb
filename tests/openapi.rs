//! The OpenAPI document (fast tier: the router in process, no Temporal): served at `/openapi.json` (3.1) with Swagger UI at `/docs`; it lists
//! every route the router serves (read from the router itself: its path table, asked with each
//! method, so a new undocumented route fails here), and it is well formed: every `$ref` resolves, every operation has responses,
//! every path parameter is declared, the security schemes exist.

mod common;

use common::fast::{Who, fast_app};
use serde_json::Value;
use std::collections::BTreeSet;

/// The paths the router serves, read from the router itself (axum prints its path table in
/// its `Debug` form: `paths: {RouteId(..): "/v1/...", ...}`).
fn paths_in_router(router: &axum::Router) -> BTreeSet<String> {
    let printed = format!("{router:?}");
    let mut found = BTreeSet::new();
    for chunk in printed.split("RouteId(").skip(1) {
        if let Some((_, rest)) = chunk.split_once("): \"") {
            if let Some((path, _)) = rest.split_once('"') {
                found.insert(path.to_owned());
            }
        }
    }
    assert!(
        found.contains("/v1/orders"),
        "axum's Debug form changed; cannot read the router's paths from: {}",
        &printed[..printed.len().min(500)]
    );
    found
}

/// `(METHOD, path)` of every route the router serves: each path it knows, asked with each
/// method; a method it does not serve answers 405 (or the fallback's `route_not_found`).
async fn routes_in_router(app: &common::fast::FastApp) -> BTreeSet<(String, String)> {
    let mut served = BTreeSet::new();
    for path in paths_in_router(&app.router) {
        let concrete: String = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            let r = app.call(Who::Nobody, method, &concrete, None).await;
            let unserved = r.status == 405
                || (r.status == 404 && r.body["error"]["code"] == "route_not_found");
            if !unserved {
                served.insert((method.to_owned(), path.clone()));
            }
        }
    }
    served
}

fn routes_in_document(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            found.insert((method.to_uppercase(), path.clone()));
        }
    }
    found
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    out.push(v.as_str().unwrap().to_owned());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_covers_every_route_and_is_well_formed() {
    let app = fast_app().await;
    let r = app.call(Who::Nobody, "GET", "/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let doc = r.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    // The Swagger UI and the document itself are served beside the operations they describe.
    let beside = ["/docs", "/docs/", "/docs/{*rest}", "/openapi.json"];
    let source: BTreeSet<_> = routes_in_router(&app)
        .await
        .into_iter()
        .filter(|(_, path)| !beside.contains(&path.as_str()))
        .collect();
    let documented = routes_in_document(&doc);
    assert!(
        source.len() >= 20,
        "the router serves only these routes: {source:?}"
    );
    let missing: Vec<_> = source.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes not in the OpenAPI document: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&source).collect();
    assert!(
        extra.is_empty(),
        "documented routes the router does not serve: {extra:?}"
    );

    // Every $ref resolves to a component.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {r}"
        );
    }
    // Every operation has responses and a summary or tag; path parameters are declared; the
    // security schemes it names exist; error answers use the one error shape.
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            doc["paths"][path]["get"]["security"],
            serde_json::json!([]),
            "{path}"
        );
    }
    assert!(schemes.contains_key("bearer") && schemes.contains_key("payment_signature"));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path}: no responses"));
            assert!(!responses.is_empty(), "{method} {path}");
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(
                    declared,
                    "{method} {path}: path parameter {name} not declared"
                );
            }
            for requirement in op["security"].as_array().into_iter().flatten() {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(
                        schemes.contains_key(scheme),
                        "{method} {path}: unknown scheme {scheme}"
                    );
                }
            }
            // The shared response sets: a token means 401, a body means 413 and 422.
            let bearer = op["security"]
                .as_array()
                .is_some_and(|r| r.iter().any(|s| s.get("bearer").is_some()));
            assert!(
                !bearer || responses.contains_key("401"),
                "{method} {path}: no 401"
            );
            if op.get("requestBody").is_some() {
                for status in ["413", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    let ok = schema == "#/components/schemas/ErrorBody" || path == "/readyz";
                    assert!(ok, "{method} {path} {status}: not the error shape");
                }
            }
        }
    }

    // The error codes are one enum, the same list the API answers with.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["ErrorDetail"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    let listed: Vec<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum of strings")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let answered: Vec<&str> = orderflow_api::error::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(listed, answered);

    // Swagger UI, served from the binary.
    let request = axum::http::Request::get("/docs/")
        .body(axum::body::Body::empty())
        .unwrap();
    let docs = tower::ServiceExt::oneshot(app.router.clone(), request)
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    let page = axum::body::to_bytes(docs.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&page).contains("swagger"));
}

/// A fast app and the document it serves.
async fn served_document() -> (common::fast::FastApp, Value) {
    let app = fast_app().await;
    let doc = app
        .call(Who::Nobody, "GET", "/openapi.json", None)
        .await
        .body;
    (app, doc)
}

/// Every request field and parameter carries the rule the API enforces (`orderflow_api::input`),
/// and the API takes the document's boundary values and refuses one step past them.
#[tokio::test]
async fn the_document_states_the_rules_the_api_enforces() {
    let (app, doc) = served_document().await;
    let constrained = |schema: &Value| {
        ["minLength", "minimum", "enum", "minItems"]
            .iter()
            .any(|k| schema.get(*k).is_some())
            || schema["type"] == "boolean"
            || schema.get("$ref").is_some()
            || schema["items"].get("$ref").is_some() && schema.get("minItems").is_some()
    };
    for (name, _, _) in orderflow_api::input::BODY_FIELDS {
        for (property, schema) in doc["components"]["schemas"][*name]["properties"]
            .as_object()
            .unwrap()
        {
            assert!(
                constrained(schema),
                "{name}.{property} has no rule: {schema}"
            );
        }
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(
                    constrained(&p["schema"]),
                    "{method} {path} {}: no rule",
                    p["name"]
                );
            }
        }
    }
    // Answers name their words too: an order's status is one of the statuses a row can have.
    let status = &doc["components"]["schemas"]["Order"]["properties"]["status"]["enum"];
    assert_eq!(
        status,
        &serde_json::json!([
            "pending_payment",
            "paid",
            "fulfilled",
            "cancelled",
            "rejected"
        ])
    );
    // The webhook takes a payment event or a session event, told apart by `type`: exactly one
    // of them matches any body.
    let schemas = &doc["components"]["schemas"];
    let body = &doc["paths"]["/v1/payments/webhook"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/WebhookBody");
    let webhook = &schemas["WebhookBody"];
    let bodies: Vec<&str> = webhook["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("the webhook's body is a oneOf: {webhook}"))
        .iter()
        .filter_map(|b| b["$ref"].as_str())
        .collect();
    assert_eq!(
        bodies,
        [
            "#/components/schemas/WebhookEvent",
            "#/components/schemas/SessionEvent"
        ]
    );
    assert_eq!(
        schemas["SessionEvent"]["properties"]["type"]["enum"],
        serde_json::json!(["checkout.session.expired"])
    );
    assert_eq!(
        schemas["WebhookEvent"]["properties"]["type"]["not"]["enum"],
        serde_json::json!(["checkout.session.expired"])
    );
    let quantity = &doc["components"]["schemas"]["Item"]["properties"]["quantity"];
    assert_eq!(quantity["maximum"], orderflow_api::input::MAX_QUANTITY);

    // The boundaries, through the API: a SKU id of the longest length the document allows,
    // a price at its maximum, written as JSON Schema allows an integer to be (1.0 is 1).
    let max_id = "s".repeat(orderflow_api::input::MAX_ID_LEN);
    let max_price =
        doc["components"]["schemas"]["PutSku"]["properties"]["price"]["maximum"].clone();
    let ok = app
        .call(
            Who::Admin,
            "PUT",
            &format!("/v1/admin/skus/{max_id}"),
            Some(serde_json::json!({"price": max_price, "stock": 5.0})),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let long = format!("/v1/admin/skus/{max_id}s");
    let refused = app
        .call(
            Who::Admin,
            "PUT",
            &long,
            Some(serde_json::json!({"price": 1, "stock": 1})),
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (422, Some("invalid_sku"))
    );
    let over = max_price.as_i64().unwrap() + 1;
    let refused = app
        .call(
            Who::Admin,
            "PUT",
            "/v1/admin/skus/a",
            Some(serde_json::json!({"price": over, "stock": 1})),
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["error"]["code"].as_str()),
        (422, Some("invalid_amount"))
    );
    let fraction = app
        .call(
            Who::Admin,
            "PUT",
            "/v1/admin/skus/a",
            Some(serde_json::json!({"price": 1.5, "stock": 1})),
        )
        .await;
    assert_eq!(
        (fraction.status, fraction.body["error"]["code"].as_str()),
        (422, Some("invalid_body"))
    );
}

/// Links lead from what creates an order to what uses it, so that generated clients and
/// stateful fuzzers can walk a lifecycle.
#[tokio::test]
async fn creating_operations_link_to_the_operations_that_use_what_they_return() {
    let (_app, doc) = served_document().await;
    let links = &doc["paths"]["/v1/orders"]["post"]["responses"]["201"]["links"];
    for to in [
        "get_order",
        "order_events",
        "pay_order",
        "cancel_order",
        "ship_order",
    ] {
        assert_eq!(links[to]["operationId"], to, "{links}");
        assert_eq!(
            links[to]["parameters"]["order_id"],
            "$response.body#/order_id"
        );
    }
    let ids: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let mut targets = Vec::new();
    refs_to_operations(&doc, &mut targets);
    for target in targets {
        assert!(
            ids.contains(target.as_str()),
            "a link names {target}, which is no operation"
        );
    }
}

fn refs_to_operations(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(links) = m.get("links").and_then(Value::as_object) {
                out.extend(
                    links
                        .values()
                        .map(|l| l["operationId"].as_str().unwrap().to_owned()),
                );
            }
            m.values().for_each(|v| refs_to_operations(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs_to_operations(v, out)),
        _ => {}
    }
}
