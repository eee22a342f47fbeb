//! orderflow-sandbox: a card payment provider on loopback, for tests and `orderflow dev`.
//!
//! It is the outside world orderflow cannot reach here, so it behaves like one: a real HTTP
//! server speaking the protocol of `orderflow_provider`.
//! - `POST /v1/checkout_sessions` and `POST /v1/refunds` need `Authorization: Bearer <key>`
//!   and are idempotent on `Idempotency-Key` (same key and body: the same answer; same key,
//!   other body: 422 `idempotency_key_reused`). A refund never exceeds what was captured.
//! - `POST /v1/checkout_sessions/{id}/expire` ends a session (a paid one answers as it is,
//!   `status: paid`); a session also ends at its `expires_at`. A session that ends unpaid
//!   delivers a signed `checkout.session.expired` webhook.
//! - `POST /pay/{session_id}` is the payer paying (the session's `url`): it captures a payment
//!   and delivers a signed `payment.succeeded` webhook, retried with backoff on non-2xx. On a
//!   session opened with `capture_method: manual` it only authorizes the payment, until
//!   `capture_before` (now plus `authorization_ttl`), and the webhook is `payment.authorized`.
//!   `POST /v1/payments/{id}/capture` and `/void` (authorized, idempotent) capture it (all or
//!   part) or release it; a void of a captured payment is refused `already_captured`, and the
//!   fault `capture_first` plays the void that arrives too late (the payment is captured
//!   first). An authorization past `capture_before` shows `expired` and cannot be captured. An
//!   expired session answers 409 `session_expired`, unless the fault `pay_after_expiry` plays
//!   the payer whose click raced the expiry.
//! - Faults, per request (header `Sandbox-Fault: status=500,delay_ms=200`) or scripted for the
//!   next matching requests (`POST /_sandbox/faults`): a delay, an HTTP status instead of the
//!   operation, a timeout *after* the operation was performed, a duplicated webhook, a second
//!   event for the same payment, a late webhook.
//! - `GET /v1/payments`, `GET /v1/payments/{id}` and `GET /v1/refunds` (authorized, paged with
//!   `limit` and `starting_after`; payments also by `order_id`, `created[gte]` and
//!   `disputed[gte]`): what a
//!   provider's dashboard and reconciliation API show, what `orderflow audit` reads and what
//!   reconciliation's sweep pages through. A page never copies more than itself; payments
//!   find their cursor in the map, refunds by a scan.
//! - `POST /_sandbox/payments/{id}/dispute` is the payer's bank disputing a payment (a
//!   chargeback): the payment shows `disputed_amount` in the listing, and a signed
//!   `charge.disputed` webhook is delivered like a payment's (unless `webhook: false`, the
//!   dispute whose every webhook was lost).
//! - `GET /_sandbox/state`: every session, payment, refund and webhook delivery, for tests.
//!
//! It keeps everything in memory and must never be used to move real money.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use orderflow_provider::signature;
use orderflow_provider::{
    CAPTURE_MANUAL, CHARGE_DISPUTED, CHECKOUT_SESSION_EXPIRED, CapturePayment,
    CheckoutSessionObject, CreateCheckoutSession, CreateRefund, ErrorBody, ErrorDetail,
    IDEMPOTENCY_HEADER, PAYMENT_AUTHORIZED, PAYMENT_SUCCEEDED, Page, PaymentObject, RefundObject,
    SessionEvent, WebhookEvent,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the sandbox is set up.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The key clients must present as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// Where webhooks go (orderflow's `/v1/payments/webhook`).
    pub webhook_url: String,
    /// The secret webhooks are signed with (orderflow's `PAYMENT_WEBHOOK_SECRET`).
    pub webhook_secret: String,
    /// The sandbox's own base URL, for the sessions' `url`.
    pub public_url: String,
    /// First webhook retry delay; doubles per attempt, capped at 30 s.
    pub webhook_retry_base: Duration,
    /// Attempts per webhook before giving up.
    pub webhook_attempts: u32,
    /// How long an authorized payment can be captured (`capture_before` = payment + this).
    pub authorization_ttl: Duration,
}

/// The providers' usual authorization lifetime: 7 days.
pub const DEFAULT_AUTHORIZATION_TTL: Duration = Duration::from_secs(7 * 86_400);

/// What can go wrong with a request, on purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Wait this long before doing anything.
    #[serde(default)]
    pub delay_ms: u64,
    /// Answer this status without performing the operation.
    #[serde(default)]
    pub status: Option<u16>,
    /// Perform the operation, then hold the answer this long (the client times out).
    #[serde(default)]
    pub timeout_after_ms: Option<u64>,
    /// Deliver the payment's webhook twice, with the same event id.
    #[serde(default)]
    pub duplicate_webhook: bool,
    /// Also deliver a second event (another event id) for the same payment.
    #[serde(default)]
    pub second_event: bool,
    /// Deliver the payment's webhook this late.
    #[serde(default)]
    pub webhook_delay_ms: u64,
    /// Name this order in the webhook instead of the session's (a provider misrouting events).
    #[serde(default)]
    pub webhook_order_id: Option<String>,
    /// Pay a session that has expired (the payer's last click raced its expiry).
    #[serde(default)]
    pub pay_after_expiry: bool,
    /// On a void: capture the payment first, then refuse the void with `already_captured`
    /// (the void that arrives after the provider captured).
    #[serde(default)]
    pub capture_first: bool,
}

impl Fault {
    /// Parses the `Sandbox-Fault` header: `key=value` pairs separated by commas.
    pub fn parse_header(header: &str) -> Result<Fault, String> {
        let mut map = serde_json::Map::new();
        for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            let value = match v {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                n if k == "webhook_order_id" => Value::from(n),
                n => Value::from(
                    n.parse::<u64>()
                        .map_err(|_| format!("bad value in {pair:?}"))?,
                ),
            };
            map.insert(k.to_owned(), value);
        }
        serde_json::from_value(Value::Object(map)).map_err(|e| e.to_string())
    }
}

/// The operations faults can be scripted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Checkout,
    Refund,
    Pay,
    Expire,
    Capture,
    Void,
}

/// A fault applied to the next `times` requests of `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptedFault {
    pub op: Op,
    #[serde(default = "one")]
    pub times: u32,
    pub fault: Fault,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub order_id: String,
    pub amount: i64,
    pub currency: String,
    /// `open`, `paid` or `expired`.
    pub status: String,
    /// Unix seconds after which it takes no payment.
    pub expires_at: Option<i64>,
    /// `manual`: its payment is authorized, and captured later.
    pub capture_method: Option<String>,
}

impl SessionRecord {
    /// Whether a payer can still pay it now.
    fn payable(&self, now: i64) -> bool {
        self.status == "open" && self.expires_at.is_none_or(|t| now < t)
    }

    fn object(&self, public: &str) -> CheckoutSessionObject {
        CheckoutSessionObject {
            id: self.id.clone(),
            order_id: self.order_id.clone(),
            amount: self.amount,
            currency: self.currency.clone(),
            status: self.status.clone(),
            url: format!("{public}/pay/{}", self.id),
            expires_at: self.expires_at,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PaymentRecord {
    /// Unix seconds.
    pub created: i64,
    pub payment_id: String,
    pub session_id: String,
    pub order_id: String,
    pub amount: i64,
    pub currency: String,
    pub refunded: i64,
    /// `captured`, or `authorized` (a manual-capture session's) until `captured` or `voided`.
    pub status: String,
    /// How much was captured (all of `amount`, less a partial capture; 0 while authorized).
    pub captured: i64,
    /// Until when an authorized payment can be captured (Unix seconds).
    pub capture_before: Option<i64>,
    /// How much the payer's bank disputes, once it does.
    pub disputed: Option<i64>,
    /// When it did (Unix seconds).
    pub disputed_at: Option<i64>,
}

impl PaymentRecord {
    /// Its status at `now`: an authorization past `capture_before` has `expired`.
    fn status_now(&self, now: i64) -> &str {
        match self.capture_before {
            Some(t) if self.status == "authorized" && now >= t => "expired",
            _ => &self.status,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RefundRecord {
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub event_type: String,
    /// The payment the event is about, or the session for `checkout.session.expired`.
    pub about: String,
    pub attempt: u32,
    /// The HTTP status orderflow answered, or 0 if the request failed.
    pub status: u16,
}

#[derive(Default)]
struct Ledger {
    sessions: BTreeMap<String, SessionRecord>,
    payments: BTreeMap<String, PaymentRecord>,
    refunds: Vec<RefundRecord>,
    deliveries: Vec<DeliveryRecord>,
    /// (operation, key) -> (request fingerprint, status, answer)
    idempotency: BTreeMap<(String, String), (String, u16, Value)>,
    faults: Vec<ScriptedFault>,
    /// Requests received per operation, faults included.
    requests: BTreeMap<String, u32>,
}

/// A running sandbox: its state, shared with the HTTP handlers.
#[derive(Clone)]
pub struct Sandbox {
    config: Arc<SandboxConfig>,
    ledger: Arc<Mutex<Ledger>>,
    http: reqwest::Client,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Sandbox {
        Sandbox {
            config: Arc::new(config),
            ledger: Arc::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// The sandbox's routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/checkout_sessions", post(create_session))
            .route(
                "/v1/checkout_sessions/{session_id}/expire",
                post(expire_session),
            )
            .route("/v1/refunds", post(create_refund).get(list_refunds))
            .route("/v1/payments", get(list_payments))
            .route("/v1/payments/{payment_id}", get(get_payment))
            .route("/v1/payments/{payment_id}/capture", post(capture_payment))
            .route("/v1/payments/{payment_id}/void", post(void_payment))
            .route("/pay/{session_id}", post(pay))
            .route("/_sandbox/payments/{payment_id}/dispute", post(dispute))
            .route("/_sandbox/faults", post(add_fault))
            .route("/_sandbox/state", get(state))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Scripts a fault for the next `times` requests of `op`.
    pub fn add_fault(&self, fault: ScriptedFault) {
        self.lock().faults.push(fault);
    }

    pub fn payments(&self) -> Vec<PaymentRecord> {
        self.lock().payments.values().cloned().collect()
    }

    /// Refunds actually performed (a replayed idempotent request is not a new one).
    pub fn refunds(&self) -> Vec<RefundRecord> {
        self.lock().refunds.clone()
    }

    /// Every checkout session, with its status (`open`, `paid`, `expired`).
    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.lock().sessions.values().cloned().collect()
    }

    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.lock().deliveries.clone()
    }

    /// Captures a payment for `order_id` as if its payer had paid a session, and returns the
    /// webhook event *without* delivering it: for tests that deliver at a chosen moment.
    pub fn capture(&self, order_id: &str, amount: i64, currency: &str) -> WebhookEvent {
        self.paid_session(order_id, amount, currency, false)
    }

    /// As [`Sandbox::capture`], for a manual-capture session: the payment is only authorized
    /// (until now plus `authorization_ttl`), and the event is `payment.authorized`.
    pub fn authorize_payment(&self, order_id: &str, amount: i64, currency: &str) -> WebhookEvent {
        self.paid_session(order_id, amount, currency, true)
    }

    fn paid_session(
        &self,
        order_id: &str,
        amount: i64,
        currency: &str,
        manual: bool,
    ) -> WebhookEvent {
        let session = SessionRecord {
            id: new_id("cs"),
            order_id: order_id.to_owned(),
            amount,
            currency: currency.to_owned(),
            status: "paid".into(),
            expires_at: None,
            capture_method: manual.then(|| CAPTURE_MANUAL.to_owned()),
        };
        let mut ledger = self.lock();
        let event = self.take_payment(&mut ledger, &session);
        ledger.sessions.insert(session.id.clone(), session);
        event
    }

    /// The payment of a session just paid: captured, or only authorized (until now plus
    /// `authorization_ttl`) on a manual-capture session. Returns its webhook event.
    fn take_payment(&self, ledger: &mut Ledger, session: &SessionRecord) -> WebhookEvent {
        let manual = session.capture_method.as_deref() == Some(CAPTURE_MANUAL);
        let ttl = self.config.authorization_ttl.as_secs() as i64;
        let capture_before = manual.then(|| unix_now().saturating_add(ttl));
        let payment_id = new_id("pay");
        ledger.payments.insert(
            payment_id.clone(),
            PaymentRecord {
                created: unix_now(),
                payment_id: payment_id.clone(),
                session_id: session.id.clone(),
                order_id: session.order_id.clone(),
                amount: session.amount,
                currency: session.currency.clone(),
                refunded: 0,
                status: if manual { "authorized" } else { "captured" }.into(),
                captured: if manual { 0 } else { session.amount },
                capture_before,
                disputed: None,
                disputed_at: None,
            },
        );
        WebhookEvent {
            event_id: new_id("evt"),
            kind: if manual {
                PAYMENT_AUTHORIZED
            } else {
                PAYMENT_SUCCEEDED
            }
            .into(),
            order_id: session.order_id.clone(),
            payment_id,
            amount: session.amount,
            currency: session.currency.clone(),
            session_id: Some(session.id.clone()),
            capture_before,
        }
    }

    /// The payer's bank disputes `amount` of a payment (all of it when `None`). The payment
    /// shows it from now on; with `notify`, a signed `charge.disputed` webhook is delivered.
    pub fn dispute(
        &self,
        payment_id: &str,
        amount: Option<i64>,
        notify: bool,
    ) -> Result<WebhookEvent, Response> {
        let event = {
            let mut ledger = self.lock();
            let Some(payment) = ledger.payments.get_mut(payment_id) else {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "payment_not_found",
                    "no such payment",
                ));
            };
            if payment.disputed.is_some() {
                return Err(error(
                    StatusCode::CONFLICT,
                    "already_disputed",
                    "this payment is disputed already",
                ));
            }
            let amount = amount.unwrap_or(payment.captured);
            if amount <= 0 || amount > payment.captured {
                return Err(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_amount",
                    "a dispute is of 1 up to the payment's captured amount",
                ));
            }
            payment.disputed = Some(amount);
            payment.disputed_at = Some(unix_now());
            WebhookEvent {
                event_id: new_id("evt"),
                kind: CHARGE_DISPUTED.into(),
                order_id: payment.order_id.clone(),
                payment_id: payment.payment_id.clone(),
                amount,
                currency: payment.currency.clone(),
                session_id: Some(payment.session_id.clone()),
                capture_before: None,
            }
        };
        if notify {
            self.deliver(event.clone(), Duration::ZERO);
        }
        Ok(event)
    }

    /// How many requests of `op` arrived, faults and replays included.
    pub fn requests(&self, op: Op) -> u32 {
        self.lock().requests.get(op_name(op)).copied().unwrap_or(0)
    }

    fn take_fault(&self, op: Op, headers: &HeaderMap) -> Result<Fault, Response> {
        let mut ledger = self.lock();
        *ledger.requests.entry(op_name(op).to_owned()).or_default() += 1;
        if let Some(h) = headers.get("sandbox-fault") {
            let text = h.to_str().unwrap_or_default();
            return Fault::parse_header(text)
                .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_fault", &e));
        }
        if let Some(i) = ledger.faults.iter().position(|f| f.op == op) {
            let scripted = &mut ledger.faults[i];
            let fault = scripted.fault.clone();
            scripted.times -= 1;
            if scripted.times == 0 {
                ledger.faults.remove(i);
            }
            return Ok(fault);
        }
        Ok(Fault::default())
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), Response> {
        let expected = format!("Bearer {}", self.config.api_key);
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some(v) if v == expected => Ok(()),
            _ => Err(error(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "a valid Authorization: Bearer <api key> is required",
            )),
        }
    }

    /// What every write goes through before it is performed: the API key, the idempotency key,
    /// and the request's fault (its delay is waited out here; an injected status answers here).
    async fn admit_write(&self, op: Op, headers: &HeaderMap) -> Result<(String, Fault), Response> {
        self.authorize(headers)?;
        let key = idempotency_key(headers)?;
        let fault = self.take_fault(op, headers)?;
        match before(&fault).await {
            Some(r) => Err(r),
            None => Ok((key, fault)),
        }
    }

    /// Delivers a payment event in the background: late if asked, retried with backoff on
    /// non-2xx.
    fn deliver(&self, event: WebhookEvent, delay: Duration) {
        let body = serde_json::to_vec(&event).expect("events serialize");
        self.post_event(event.event_id, event.kind, event.payment_id, body, delay);
    }

    /// Delivers `checkout.session.expired` for a session that just ended unpaid.
    fn deliver_session_end(&self, session: &SessionRecord) {
        let event = SessionEvent {
            event_id: new_id("evt"),
            kind: CHECKOUT_SESSION_EXPIRED.into(),
            order_id: session.order_id.clone(),
            session_id: session.id.clone(),
            amount: session.amount,
            currency: session.currency.clone(),
        };
        let body = serde_json::to_vec(&event).expect("events serialize");
        self.post_event(
            event.event_id,
            event.kind,
            event.session_id,
            body,
            Duration::ZERO,
        );
    }

    /// Ends a session at `at` (Unix seconds) if it is still open then, and says so.
    fn end_at(&self, session_id: String, at: i64) {
        let sandbox = self.clone();
        tokio::spawn(async move {
            let wait = u64::try_from(at.saturating_sub(unix_now())).unwrap_or(0);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            let mut ledger = sandbox.lock();
            if let Some(session) = ledger.sessions.get_mut(&session_id)
                && session.status == "open"
            {
                session.status = "expired".into();
                sandbox.deliver_session_end(session);
            }
        });
    }

    /// POSTs a signed event body to orderflow until a 2xx, recording every attempt.
    fn post_event(
        &self,
        event_id: String,
        event_type: String,
        about: String,
        body: Vec<u8>,
        delay: Duration,
    ) {
        let sandbox = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut backoff = sandbox.config.webhook_retry_base;
            for attempt in 1..=sandbox.config.webhook_attempts {
                let now = unix_now();
                let header = signature::sign(&sandbox.config.webhook_secret, now, &body);
                let status = match sandbox
                    .http
                    .post(&sandbox.config.webhook_url)
                    .header(signature::HEADER, header)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(e) => {
                        tracing::warn!(%event_id, error = %e, "webhook delivery failed");
                        0
                    }
                };
                sandbox.lock().deliveries.push(DeliveryRecord {
                    event_id: event_id.clone(),
                    event_type: event_type.clone(),
                    about: about.clone(),
                    attempt,
                    status,
                });
                if (200..300).contains(&status) {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            tracing::error!(%event_id, "webhook given up after every attempt");
        });
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Checkout => "checkout",
        Op::Refund => "refund",
        Op::Pay => "pay",
        Op::Expire => "expire",
        Op::Capture => "capture",
        Op::Void => "void",
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    };
    (status, Json(body)).into_response()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Applies the fault's delay and status. `None` means: go on and perform the operation.
async fn before(fault: &Fault) -> Option<Response> {
    if fault.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
    }
    let status = fault.status?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(error(
        status,
        "injected_fault",
        "a fault injected by the sandbox",
    ))
}

/// Applies `timeout_after_ms` once the operation is done.
async fn after(fault: &Fault, answer: Response) -> Response {
    if let Some(ms) = fault.timeout_after_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    answer
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, Response> {
    headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_owned)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "idempotency_key_required",
                "writes need an Idempotency-Key header",
            )
        })
}

/// Runs `perform` once per idempotency key: a replay gets the stored answer.
fn once(
    ledger: &mut Ledger,
    op: Op,
    key: &str,
    fingerprint: String,
    perform: impl FnOnce(&mut Ledger) -> (StatusCode, Value),
) -> Response {
    let slot = (op_name(op).to_owned(), key.to_owned());
    if let Some((stored, status, answer)) = ledger.idempotency.get(&slot) {
        if *stored != fingerprint {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request",
            );
        }
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
        return (status, Json(answer.clone())).into_response();
    }
    let (status, answer) = perform(ledger);
    if status.is_success() {
        ledger
            .idempotency
            .insert(slot, (fingerprint, status.as_u16(), answer.clone()));
    }
    (status, Json(answer)).into_response()
}

async fn create_session(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Json(req): Json<CreateCheckoutSession>,
) -> Response {
    let (key, fault) = match sb.admit_write(Op::Checkout, &headers).await {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    if req.amount <= 0 || req.currency.len() != 3 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "amount must be positive and currency a 3-letter code",
        );
    }
    let fingerprint = serde_json::to_string(&req).unwrap_or_default();
    let public = sb.config.public_url.trim_end_matches('/').to_owned();
    let expiring = sb.clone();
    let answer = once(&mut sb.lock(), Op::Checkout, &key, fingerprint, |ledger| {
        let id = new_id("cs");
        if let Some(at) = req.expires_at {
            expiring.end_at(id.clone(), at);
        }
        let session = SessionRecord {
            id: id.clone(),
            order_id: req.order_id.clone(),
            amount: req.amount,
            currency: req.currency.clone(),
            status: "open".into(),
            expires_at: req.expires_at,
            capture_method: req.capture_method.clone(),
        };
        let object = session.object(&public);
        ledger.sessions.insert(id, session);
        (StatusCode::OK, json!(object))
    });
    after(&fault, answer).await
}

/// Ends a session: it takes no payment from now on. A paid one stays paid and answers as it
/// is (`status: paid`); an expired one answers itself again.
async fn expire_session(
    State(sb): State<Sandbox>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (_key, fault) = match sb.admit_write(Op::Expire, &headers).await {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let public = sb.config.public_url.trim_end_matches('/').to_owned();
    let answer = {
        let mut ledger = sb.lock();
        let session = match session_of(&mut ledger, &session_id) {
            Ok(session) => session,
            Err(missing) => return missing,
        };
        let ended = session.status == "open";
        if session.status != "paid" {
            session.status = "expired".into();
        }
        if ended {
            sb.deliver_session_end(session);
        }
        Json(session.object(&public)).into_response()
    };
    after(&fault, answer).await
}

/// A session by its id, or 404 `session_not_found`.
fn session_of<'l>(
    ledger: &'l mut Ledger,
    session_id: &str,
) -> Result<&'l mut SessionRecord, Response> {
    ledger.sessions.get_mut(session_id).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "session_not_found",
            "no such session",
        )
    })
}

/// The payer pays a session: one payment, then its webhook(s).
async fn pay(
    State(sb): State<Sandbox>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let fault = match sb.take_fault(Op::Pay, &headers) {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Some(r) = before(&fault).await {
        return r;
    }
    let event = {
        let mut ledger = sb.lock();
        let session = match session_of(&mut ledger, &session_id) {
            Ok(session) => session,
            Err(missing) => return missing,
        };
        if session.status == "paid" {
            return error(
                StatusCode::CONFLICT,
                "session_already_paid",
                "this session was paid already",
            );
        }
        // A payer who completes the payment as the session expires (`pay_after_expiry`) is the
        // race the order's refund exists for.
        if !session.payable(unix_now()) && !fault.pay_after_expiry {
            return error(
                StatusCode::CONFLICT,
                "session_expired",
                "this session has expired: it takes no payment",
            );
        }
        session.status = "paid".into();
        let session = session.clone();
        sb.take_payment(&mut ledger, &session)
    };
    let delay = Duration::from_millis(fault.webhook_delay_ms);
    let mut event = event;
    if let Some(order_id) = &fault.webhook_order_id {
        event.order_id = order_id.clone();
    }
    sb.deliver(event.clone(), delay);
    if fault.duplicate_webhook {
        sb.deliver(event.clone(), delay);
    }
    if fault.second_event {
        let mut second = event.clone();
        second.event_id = new_id("evt");
        sb.deliver(second, delay);
    }
    let answer = (
        StatusCode::OK,
        Json(
            json!({"payment_id": event.payment_id, "event_id": event.event_id,
            "status": if event.capture_before.is_some() { "authorized" } else { "captured" }}),
        ),
    )
        .into_response();
    after(&fault, answer).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisputeRequest {
    amount: Option<i64>,
    #[serde(default = "yes")]
    webhook: bool,
}

fn yes() -> bool {
    true
}

async fn dispute(
    State(sb): State<Sandbox>,
    Path(payment_id): Path<String>,
    body: Option<Json<DisputeRequest>>,
) -> Response {
    let (amount, notify) = body.map_or((None, true), |Json(b)| (b.amount, b.webhook));
    match sb.dispute(&payment_id, amount, notify) {
        Ok(event) => Json(json!({
            "payment_id": event.payment_id,
            "event_id": event.event_id,
            "disputed_amount": event.amount,
        }))
        .into_response(),
        Err(refused) => refused,
    }
}

async fn create_refund(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Json(req): Json<CreateRefund>,
) -> Response {
    let (key, fault) = match sb.admit_write(Op::Refund, &headers).await {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let fingerprint = serde_json::to_string(&req).unwrap_or_default();
    let answer = once(&mut sb.lock(), Op::Refund, &key, fingerprint, |ledger| {
        let Some(payment) = ledger.payments.get_mut(&req.payment_id) else {
            return refusal(
                StatusCode::NOT_FOUND,
                "payment_not_found",
                "no such payment",
            );
        };
        let left = payment.captured - payment.refunded;
        if req.amount <= 0 || req.amount > left {
            let why = format!(
                "{} is more than the {left} captured and left to refund",
                req.amount
            );
            return refusal(StatusCode::BAD_REQUEST, "amount_exceeds_payment", &why);
        }
        payment.refunded += req.amount;
        let refund = RefundRecord {
            id: new_id("re"),
            payment_id: req.payment_id.clone(),
            amount: req.amount,
            idempotency_key: key.clone(),
        };
        ledger.refunds.push(refund.clone());
        let object = RefundObject {
            id: refund.id,
            payment_id: refund.payment_id,
            amount: refund.amount,
            status: "succeeded".into(),
        };
        (StatusCode::OK, json!(object))
    });
    after(&fault, answer).await
}

/// Captures an authorized payment (all, or `amount` of it; the rest is released).
async fn capture_payment(
    State(sb): State<Sandbox>,
    Path(payment_id): Path<String>,
    headers: HeaderMap,
    Json(req): Json<CapturePayment>,
) -> Response {
    let (key, fault) = match sb.admit_write(Op::Capture, &headers).await {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let fingerprint = format!(
        "{payment_id}:{}",
        serde_json::to_string(&req).unwrap_or_default()
    );
    let answer = once(&mut sb.lock(), Op::Capture, &key, fingerprint, |ledger| {
        let Some(p) = ledger.payments.get_mut(&payment_id) else {
            return refusal(
                StatusCode::NOT_FOUND,
                "payment_not_found",
                "no such payment",
            );
        };
        let amount = req.amount.unwrap_or(p.amount);
        match p.status_now(unix_now()) {
            "authorized" if amount > 0 && amount <= p.amount => {
                p.status = "captured".into();
                p.captured = amount;
                (StatusCode::OK, json!(payment_object(p)))
            }
            "authorized" => refusal(
                StatusCode::BAD_REQUEST,
                "invalid_amount",
                "a capture is of 1 up to the authorized amount",
            ),
            "expired" => refusal(
                StatusCode::BAD_REQUEST,
                "authorization_expired",
                "the authorization lapsed at capture_before: nothing can be captured",
            ),
            "voided" => refusal(
                StatusCode::BAD_REQUEST,
                "payment_voided",
                "the authorization was voided",
            ),
            _ => refusal(
                StatusCode::BAD_REQUEST,
                "already_captured",
                "this payment is captured already",
            ),
        }
    });
    after(&fault, answer).await
}

/// Voids an authorized payment: nothing is charged. A captured one is refused
/// `already_captured` (refund it instead); a voided or lapsed one answers as it is.
async fn void_payment(
    State(sb): State<Sandbox>,
    Path(payment_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (key, fault) = match sb.admit_write(Op::Void, &headers).await {
        Ok(admitted) => admitted,
        Err(r) => return r,
    };
    let answer = once(
        &mut sb.lock(),
        Op::Void,
        &key,
        payment_id.clone(),
        |ledger| {
            let Some(p) = ledger.payments.get_mut(&payment_id) else {
                return refusal(
                    StatusCode::NOT_FOUND,
                    "payment_not_found",
                    "no such payment",
                );
            };
            if fault.capture_first && p.status == "authorized" {
                p.status = "captured".into();
                p.captured = p.amount;
            }
            match p.status.as_str() {
                "authorized" | "voided" => {
                    p.status = "voided".into();
                    (StatusCode::OK, json!(payment_object(p)))
                }
                _ => refusal(
                    StatusCode::BAD_REQUEST,
                    "already_captured",
                    "this payment is captured: refund it instead",
                ),
            }
        },
    );
    after(&fault, answer).await
}

/// A refusal as `once` stores it: not a success, so never replayed.
fn refusal(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    (status, json!({"error": {"code": code, "message": message}}))
}

fn payment_object(p: &PaymentRecord) -> PaymentObject {
    PaymentObject {
        id: p.payment_id.clone(),
        order_id: p.order_id.clone(),
        session_id: Some(p.session_id.clone()),
        amount: p.amount,
        currency: p.currency.clone(),
        status: p.status_now(unix_now()).into(),
        amount_refunded: p.refunded,
        amount_captured: (p.captured != p.amount).then_some(p.captured),
        capture_before: p.capture_before,
        created: p.created,
        disputed_amount: p.disputed,
        disputed_at: p.disputed_at,
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `?limit=1..100&starting_after=<id>`, as providers page their listings; payments can be
/// filtered by `order_id` and by `created[gte]` (Unix seconds), as Stripe's are.
#[derive(Debug, Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    starting_after: Option<String>,
    order_id: Option<String>,
    #[serde(rename = "created[gte]")]
    created_gte: Option<i64>,
    #[serde(rename = "disputed[gte]")]
    disputed_gte: Option<i64>,
}

/// One page: the first `limit` of `rest` (the items after the cursor, filtered), and whether
/// more follow. It never builds more than the page.
fn page<T: Serialize>(rest: impl Iterator<Item = T>, limit: usize) -> Response {
    let mut data: Vec<T> = rest.take(limit + 1).collect();
    let has_more = data.len() > limit;
    data.truncate(limit);
    Json(Page { data, has_more }).into_response()
}

fn unknown_cursor() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "starting_after names no object of this list",
    )
}

/// An authorized listing with a valid `limit`: the page `items` picks from the ledger.
fn listing(
    sb: &Sandbox,
    headers: &HeaderMap,
    q: &PageQuery,
    items: impl FnOnce(&Ledger, usize) -> Response,
) -> Response {
    if let Err(r) = sb.authorize(headers) {
        return r;
    }
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "limit must be between 1 and 100",
        );
    }
    items(&sb.lock(), limit)
}

/// Payments in id order, from just after `starting_after` (a range of the map, not a scan).
async fn list_payments(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    listing(&sb, &headers, &q, |ledger, limit| {
        let from = match &q.starting_after {
            None => Bound::Unbounded,
            Some(after) if ledger.payments.contains_key(after) => Bound::Excluded(after.clone()),
            Some(_) => return unknown_cursor(),
        };
        let rest = ledger
            .payments
            .range::<String, _>((from, Bound::Unbounded))
            .map(|(_, p)| p)
            .filter(|p| q.order_id.as_ref().is_none_or(|o| *o == p.order_id))
            .filter(|p| q.created_gte.is_none_or(|t| p.created >= t))
            .filter(|p| {
                q.disputed_gte
                    .is_none_or(|t| p.disputed_at.is_some_and(|at| at >= t))
            })
            .map(payment_object);
        page(rest, limit)
    })
}

async fn get_payment(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Path(payment_id): Path<String>,
) -> Response {
    if let Err(r) = sb.authorize(&headers) {
        return r;
    }
    match sb.lock().payments.get(&payment_id) {
        Some(p) => Json(payment_object(p)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "payment_not_found",
            "no such payment",
        ),
    }
}

async fn list_refunds(
    State(sb): State<Sandbox>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    listing(&sb, &headers, &q, |ledger, limit| {
        let from = match &q.starting_after {
            None => 0,
            Some(after) => match ledger.refunds.iter().position(|r| r.id == *after) {
                Some(i) => i + 1,
                None => return unknown_cursor(),
            },
        };
        let rest = ledger.refunds[from..].iter().map(|r| RefundObject {
            id: r.id.clone(),
            payment_id: r.payment_id.clone(),
            amount: r.amount,
            status: "succeeded".into(),
        });
        page(rest, limit)
    })
}

async fn add_fault(State(sb): State<Sandbox>, Json(fault): Json<ScriptedFault>) -> StatusCode {
    if fault.times > 0 {
        sb.add_fault(fault);
    }
    StatusCode::NO_CONTENT
}

async fn state(State(sb): State<Sandbox>) -> Json<Value> {
    let ledger = sb.lock();
    Json(json!({
        "sessions": ledger.sessions.values().collect::<Vec<_>>(),
        "payments": ledger.payments.values().collect::<Vec<_>>(),
        "refunds": ledger.refunds,
        "deliveries": ledger.deliveries,
        "requests": ledger.requests,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_headers_parse_into_faults_and_garbage_is_refused() {
        let f = Fault::parse_header("status=500, delay_ms=20,duplicate_webhook").unwrap();
        assert_eq!(
            f,
            Fault {
                status: Some(500),
                delay_ms: 20,
                duplicate_webhook: true,
                ..Fault::default()
            }
        );
        assert!(Fault::parse_header("explode=1").is_err());
        assert!(Fault::parse_header("delay_ms=soon").is_err());
    }
}
