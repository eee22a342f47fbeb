//! The fast tier: the real router on a fresh database, with an in-process stand-in for the
//! workflow engine, called with `oneshot` (no sockets, no Temporal). For validation, the
//! access rules, the error shape and the OpenAPI document (`tests/api.rs`, `tests/openapi.rs`).
//!
//! The stand-in, [`FakeEngine`], is not a workflow: it records every call, writes an order row the way the order
//! workflow's `order.record` would (so that reads and the access rules have something to
//! read), and answers updates the way a test sets it to: a typed refusal, or the engine being
//! down. It must never be used where a test claims anything about the order lifecycle: those
//! tests run the real workflows on a real dev server.

use orderflow_activities::audit::MoneyReport;
use orderflow_activities::payments::InboxEvent;
use orderflow_api::engine::{Answer, Engine};
use orderflow_api::error::ApiError;
use orderflow_provider::PaymentProvider;
use orderflow_store::{Db, Service, StoreError};
use orderflow_workflows::model::{
    Amounts, CancelOutcome, CancelRequest, CheckoutSession, OrderStatus, PlaceOrder, Placement,
    RecordOrder, RedeemCode, RedemptionOutcome, RefundPayment,
};
use orderflow_workflows::refusal::Refused;
use std::sync::{Arc, Mutex};

use super::{JWT_SECRET, OLD_SECRET, Reply, SECRET, admin_token, user_token};
use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use tower::ServiceExt;

/// Who a fast-tier request goes out as.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    User(&'a str),
    Admin,
    Nobody,
}

/// The API on a fresh database, with the fake engine.
pub struct FastApp {
    pub router: axum::Router,
    pub db: Db,
    pub engine: Arc<FakeEngine>,
}

/// A fresh database (SQLite, or PostgreSQL under `TEST_DATABASE_URL`), migrated, and the real
/// router over it with the fake engine (down until a test says otherwise).
pub async fn fast_app() -> FastApp {
    let url = super::fresh_database_url().await;
    let db = orderflow::run::open_db(&url, true)
        .await
        .expect("open the test database");
    let engine = Arc::new(FakeEngine::new(db.clone()));
    let config = orderflow_api::ApiConfig {
        task_queue: "fast-tier".into(),
        currency: "USD".into(),
        payment_timeout_secs: 1800,
        webhook_secrets: vec![SECRET.into(), OLD_SECRET.into()],
        webhook_tolerance: std::time::Duration::from_secs(300),
        workflow_wait: std::time::Duration::from_secs(5),
        checkout_window_secs: 300,
        late_payment_grace_secs: 2,
        capture: Default::default(),
        jwt_secret: JWT_SECRET.into(),
        max_open_orders_per_user: 20,
        unknown_order_hold_secs: 3,
    };
    let provider = PaymentProvider::new(&orderflow_provider::ProviderConfig {
        base_url: "http://127.0.0.1:9".into(),
        api_key: "sk_unused".into(),
        timeout: std::time::Duration::from_secs(1),
    })
    .expect("a provider client");
    let state = orderflow_api::AppState {
        db: db.clone(),
        engine: engine.clone(),
        config: Arc::new(config),
        metrics: Arc::new(orderflow_api::metrics::Metrics::new(
            std::time::Duration::ZERO,
        )),
        provider,
    };
    FastApp {
        router: orderflow_api::app(state),
        db,
        engine,
    }
}

impl FastApp {
    /// Sends `request` through the router as `who`.
    pub async fn send(&self, who: Who<'_>, mut request: Request<Body>) -> Reply {
        let token = match who {
            Who::User(user) => Some(user_token(user)),
            Who::Admin => Some(admin_token()),
            Who::Nobody => None,
        };
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// `method path` as `who`, with a JSON body if given.
    pub async fn call(&self, who: Who<'_>, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call_keyed(who, method, path, "fast", body).await
    }

    /// As [`FastApp::call`], with this idempotency key on a request with a body.
    pub async fn call_keyed(
        &self,
        who: Who<'_>,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> Reply {
        let builder = Request::builder().method(method).uri(path);
        let request = match body {
            Some(body) => builder
                .header("content-type", "application/json")
                .header("Idempotency-Key", key)
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(who, request.unwrap()).await
    }

    /// Posts `body` to the payment webhook, signed now as the provider signs it.
    pub async fn webhook(&self, body: Value) -> Reply {
        let raw = body.to_string();
        let signature = orderflow_api::signature::sign(
            SECRET,
            orderflow_store::now_ms() / 1000,
            raw.as_bytes(),
        );
        let request = Request::builder()
            .method("POST")
            .uri("/v1/payments/webhook")
            .header("content-type", "application/json")
            .header("Payment-Signature", signature)
            .body(Body::from(raw))
            .unwrap();
        self.send(Who::Nobody, request).await
    }

    /// How many rows `table` has.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

/// How the stand-in answers the calls that would reach an order's workflow.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Temporal is unreachable: every call fails as the real engine's would.
    Down,
    /// The workflow refuses every update with this.
    Refuses(Refused),
}

pub struct FakeEngine {
    db: Db,
    behaviour: Mutex<Behaviour>,
    calls: Mutex<Vec<String>>,
}

impl FakeEngine {
    pub fn new(db: Db) -> Self {
        FakeEngine {
            db,
            behaviour: Mutex::new(Behaviour::Down),
            calls: Mutex::new(Vec::new()),
        }
    }

    pub fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// Every call so far, as `method order_id`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn called(&self, method: &str, subject: &str) -> Behaviour {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{method} {subject}"));
        self.behaviour.lock().unwrap().clone()
    }

    fn answer<T>(&self, method: &str, order_id: &str) -> Result<Answer<T>, ApiError> {
        match self.called(method, order_id) {
            Behaviour::Down => Err(down().for_order(order_id)),
            Behaviour::Refuses(r) => Ok(Answer::Refused(r)),
        }
    }
}

fn down() -> ApiError {
    ApiError::unavailable(
        orderflow_api::error::ErrorCode::TemporalUnavailable,
        "the workflow engine is unavailable; retry with the same request",
        "the fake engine is down",
    )
}

#[async_trait::async_trait]
impl Engine for FakeEngine {
    async fn place_order(&self, input: PlaceOrder) -> Result<Answer<Placement>, ApiError> {
        self.called("place_order", &input.order_id);
        let total = 1000;
        let record = RecordOrder {
            amounts: Amounts {
                total,
                coupon: 0,
                points: 0,
                wallet: 0,
                payable: total,
            },
            status: OrderStatus::PendingPayment,
            expires_at_ms: Some(orderflow_store::now_ms() + 1_800_000),
            rejection: None,
            at_ms: orderflow_store::now_ms(),
            order: input.clone(),
        };
        orderflow_activities::orders::record(&self.db, &record)
            .await
            .map_err(|e| ApiError::from(e).for_order(&input.order_id))?;
        Ok(Answer::Answered(Placement {
            order_id: input.order_id,
            request_hash: input.request_hash,
            status: OrderStatus::PendingPayment,
            rejection: None,
        }))
    }
    async fn cancel_order(
        &self,
        order_id: &str,
        _request: CancelRequest,
    ) -> Result<Answer<CancelOutcome>, ApiError> {
        self.answer("cancel_order", order_id)
    }
    async fn ship_order(&self, order_id: &str) -> Result<Answer<OrderStatus>, ApiError> {
        self.answer("ship_order", order_id)
    }
    async fn checkout(&self, order_id: &str) -> Result<Answer<CheckoutSession>, ApiError> {
        self.answer("checkout", order_id)
    }
    async fn retry_order(&self, order_id: &str) -> Result<bool, ApiError> {
        self.called("retry_order", order_id);
        Err(down().for_order(order_id))
    }
    async fn redeem(&self, request: RedeemCode) -> Result<RedemptionOutcome, ApiError> {
        self.called("redeem", &request.code);
        Err(down())
    }
    async fn start_refund_retry(
        &self,
        request: RefundPayment,
        _attempt: i64,
    ) -> Result<String, ApiError> {
        self.called("start_refund_retry", &request.order_id);
        Err(down().for_order(&request.order_id))
    }
    async fn start_order_refund(
        &self,
        _refund_id: &str,
        order_id: &str,
    ) -> Result<String, ApiError> {
        self.called("start_order_refund", order_id);
        Err(down().for_order(order_id))
    }
    async fn hand_on_payment(
        &self,
        _db: &Db,
        event: &InboxEvent,
    ) -> Result<&'static str, StoreError> {
        self.called("hand_on_payment", &event.order_id);
        Err(StoreError::unavailable(
            Service::Temporal,
            "the fake engine is down",
        ))
    }
    async fn end_session(
        &self,
        order_id: &str,
        _session_id: &str,
        _event_id: &str,
    ) -> Result<bool, StoreError> {
        self.called("end_session", order_id);
        Err(StoreError::unavailable(
            Service::Temporal,
            "the fake engine is down",
        ))
    }
    async fn audit(
        &self,
        _db: &Db,
        _provider: &PaymentProvider,
        _now_ms: i64,
    ) -> Result<MoneyReport, StoreError> {
        self.called("audit", "");
        Err(StoreError::unavailable(
            Service::Temporal,
            "the fake engine is down",
        ))
    }
    async fn ready(&self) -> bool {
        !matches!(*self.behaviour.lock().unwrap(), Behaviour::Down)
    }
}
