//! The OpenAPI document (fast tier: the router in process, no Temporal): served at `/openapi.json` (3.1) with Swagger UI at `/docs`; it lists
//! every route the router serves (read from the router's source, so a new undocumented route
//! fails here), and it is well formed: every `$ref` resolves, every operation has responses,
//! every path parameter is declared, the security schemes exist.

mod common;

use common::fast::{Who, fast_app};
use serde_json::Value;
use std::collections::BTreeSet;

/// `(METHOD, path)` of every `.route(...)` in the API's source.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("api/src");
    let mut files = vec![dir.join("lib.rs")];
    for e in std::fs::read_dir(dir.join("routes")).unwrap() {
        files.push(e.unwrap().path());
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for chunk in text.split(".route(\"").skip(1) {
            let (path, rest) = chunk.split_once('"').unwrap();
            // The call runs until the next route or layer, or the end of the router function.
            let call = rest.split(".route(").next().unwrap();
            let call = call.split("\n}").next().unwrap();
            let call = call.split(".layer(").next().unwrap();
            let call = call.split(".merge(").next().unwrap();
            for method in ["get", "post", "put", "delete", "patch"] {
                let direct = format!("{method}(");
                let chained = format!(".{method}(");
                let routing = format!("routing::{method}(");
                if call.contains(&direct) || call.contains(&chained) || call.contains(&routing) {
                    found.insert((method.to_uppercase(), path.to_owned()));
                }
            }
        }
    }
    found
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

    let source = routes_in_source();
    let documented = routes_in_document(&doc);
    assert!(
        source.len() >= 20,
        "the source scan found the routes: {source:?}"
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
