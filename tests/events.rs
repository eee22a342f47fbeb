//! Events out to other services, end to end (issue 14, point 5): a real subscriber (an HTTP
//! server in this test that checks every signature and deduplicates on the event id, as the
//! README tells receivers to), the real worker's dispatcher, the real stack behind them.
//!
//! - The subscriber is down for a while (`EVENTS_OUTAGE_SECS`, 120 by default) while orders
//!   are placed, paid, fulfilled, cancelled and refunded. When it comes back, every event
//!   arrives, in order per order, and is handled exactly once; an answer that comes too late
//!   brings the event again and the receiver drops the copy; a redelivery ops ask for does too.
//! - A worker killed between the subscriber's answer and its record loses nothing: the next
//!   worker sends the event again and the receiver handles it once.
//!
//! Every test ends with `assert_invariants()`.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{TestApp, WorkerMode, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One event as it arrived.
#[derive(Debug, Clone)]
struct Arrival {
    event_id: String,
    event_type: String,
    order_id: String,
    seq: i64,
}

#[derive(Default)]
struct Inbox {
    /// Every request that got past the signature check, in arrival order (copies too).
    arrivals: Vec<Arrival>,
    /// The events handled, in handling order: each once.
    handled: Vec<Arrival>,
    /// Requests refused while down.
    refused_while_down: u32,
    /// What a receiver must never see: a forged signature, an event out of its order's sequence.
    problems: Vec<String>,
}

/// A subscriber as the README describes one: verifies `Orderflow-Signature`, handles each
/// event id once, expects an order's events in `seq` order.
#[derive(Default)]
struct Receiver {
    inbox: Mutex<Inbox>,
    down: AtomicBool,
    secret: Mutex<String>,
    /// An event whose first delivery is handled but answered too late (a lost answer).
    stall_once: Mutex<Option<String>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if r.down.load(Ordering::SeqCst) {
        r.inbox.lock().unwrap().refused_while_down += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let secret = r.secret.lock().unwrap().clone();
    let signature = headers
        .get("orderflow-signature")
        .and_then(|v| v.to_str().ok());
    let now = orderflow_store::now_ms() / 1000;
    if let Err(e) = orderflow_api::signature::verify(signature, &body, &[secret], now, 300) {
        r.inbox
            .lock()
            .unwrap()
            .problems
            .push(format!("signature refused: {e}"));
        return StatusCode::UNAUTHORIZED;
    }
    let event: Value = serde_json::from_slice(&body).expect("an event is JSON");
    let arrival = Arrival {
        event_id: event["id"].as_str().unwrap().to_owned(),
        event_type: event["type"].as_str().unwrap().to_owned(),
        order_id: event["order_id"].as_str().unwrap().to_owned(),
        seq: event["seq"].as_i64().unwrap(),
    };
    let stall = {
        let mut inbox = r.inbox.lock().unwrap();
        if headers
            .get("orderflow-event-id")
            .and_then(|v| v.to_str().ok())
            != Some(arrival.event_id.as_str())
        {
            inbox.problems.push(format!(
                "{}: no matching Orderflow-Event-Id",
                arrival.event_id
            ));
        }
        inbox.arrivals.push(arrival.clone());
        if inbox.handled.iter().any(|h| h.event_id == arrival.event_id) {
            return StatusCode::OK; // a copy: handled already
        }
        let last = inbox
            .handled
            .iter()
            .filter(|h| h.order_id == arrival.order_id)
            .map(|h| h.seq)
            .max()
            .unwrap_or(0);
        if arrival.seq != last + 1 {
            let problem = format!("{} arrived after seq {last}", arrival.event_id);
            inbox.problems.push(problem);
            return StatusCode::CONFLICT;
        }
        inbox.handled.push(arrival.clone());
        let mut stall = r.stall_once.lock().unwrap();
        (stall.as_deref() == Some(arrival.event_id.as_str()))
            .then(|| stall.take())
            .is_some()
    };
    if stall {
        tokio::time::sleep(Duration::from_secs(common::EVENTS_TIMEOUT_SECS + 2)).await;
    }
    StatusCode::OK
}

impl Receiver {
    /// Serves on a free port; returns the URL to subscribe.
    async fn start(self: &Arc<Self>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/orderflow-events", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/orderflow-events", axum::routing::post(receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn handled(&self) -> Vec<Arrival> {
        self.inbox.lock().unwrap().handled.clone()
    }

    fn arrivals_of(&self, event_id: &str) -> usize {
        let inbox = self.inbox.lock().unwrap();
        inbox
            .arrivals
            .iter()
            .filter(|a| a.event_id == event_id)
            .count()
    }

    fn problems(&self) -> Vec<String> {
        self.inbox.lock().unwrap().problems.clone()
    }
}

/// A receiver, serving, subscribed to every event type with the secret it checks; and its
/// subscription id.
async fn subscribed_receiver(app: &TestApp) -> (Arc<Receiver>, String) {
    let receiver = Arc::new(Receiver::default());
    let url = receiver.start().await;
    let created = app
        .as_admin()
        .post("/v1/admin/event-subscriptions", json!({"url": url}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body["event_types"],
        json!(orderflow_store::events_out::EVENT_TYPES)
    );
    let secret = created.body["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    *receiver.secret.lock().unwrap() = secret.to_owned();
    let sub = created.body["subscription_id"].as_str().unwrap().to_owned();
    (receiver, sub)
}

async fn outbox_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox_events")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Waits until every event written so far is delivered and handled.
async fn all_delivered(app: &TestApp, receiver: &Receiver, secs: u64) {
    app.eventually(secs, "every event delivered", || async {
        let written = outbox_events(app).await;
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM event_deliveries WHERE status <> 'delivered'")
                .fetch_one(&app.db)
                .await
                .unwrap();
        (open == 0 && receiver.handled().len() as i64 == written).then_some(())
    })
    .await;
}

/// The event types handled for each order, in handling order.
fn types_by_order(handled: &[Arrival]) -> BTreeMap<String, Vec<String>> {
    let mut by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in handled {
        by_order
            .entry(a.order_id.clone())
            .or_default()
            .push(a.event_type.clone());
    }
    by_order
}

/// Alice's order of one `sku`; returns its id.
async fn place(app: &TestApp, key: &str, sku: &str) -> String {
    let created = app
        .create_order(
            key,
            json!({"user_id": "alice", "items": [{"sku": sku, "quantity": 1}]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.body["order_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_subscriber_that_was_down_gets_every_event_in_order_and_handles_each_once() {
    let app = spawn_app().await;
    app.put_sku_with(
        "course",
        json!({"price": 800, "stock": 50, "kind": "digital"}),
    )
    .await;
    app.put_sku_with(
        "lamp",
        json!({"price": 1000, "stock": 50, "kind": "physical"}),
    )
    .await;

    let (receiver, sub) = subscribed_receiver(&app).await;

    // The subscriber goes down; the shop carries on.
    let outage = Duration::from_secs(
        std::env::var("EVENTS_OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120),
    );
    let down_since = Instant::now();
    receiver.down.store(true, Ordering::SeqCst);
    let fulfilled = place(&app, "fulfilled", "course").await;
    app.checkout_and_pay(&fulfilled, None).await;
    app.wait_status(&fulfilled, "fulfilled").await;
    let cancelled = place(&app, "cancelled", "lamp").await;
    assert_eq!(app.cancel(&cancelled, "user").await.status, 200);
    let refunded = place(&app, "refunded", "lamp").await;
    app.checkout_and_pay(&refunded, None).await;
    app.wait_status(&refunded, "paid").await;
    assert_eq!(app.cancel(&refunded, "admin").await.status, 200);
    app.eventually(60, "the refund", || async {
        let o = app.order(&refunded).await;
        (o["refunds"][0]["status"] == "succeeded").then_some(())
    })
    .await;
    // A lamp shipped, returned and refunded in part.
    let returned = place(&app, "returned", "lamp").await;
    app.checkout_and_pay(&returned, None).await;
    app.wait_shipment(&returned, "pending").await;
    let shipped = app
        .as_admin()
        .post(&format!("/v1/admin/orders/{returned}/ship"), json!({}))
        .await;
    assert_eq!(shipped.status, 200, "{}", shipped.body);
    let asked = app
        .as_user("alice")
        .post_keyed(
            &format!("/v1/orders/{returned}/returns"),
            "return-1",
            json!({"lines": [{"sku": "lamp", "quantity": 1}], "reason": "damaged"}),
        )
        .await;
    assert_eq!(asked.status, 201, "{}", asked.body);
    let return_id = asked.body["return_id"].as_str().unwrap();
    let received = app
        .as_admin()
        .post(&format!("/v1/admin/returns/{return_id}/receive"), json!({}))
        .await;
    assert_eq!(received.status, 200, "{}", received.body);
    app.eventually(60, "the return refunded", || async {
        let r = app
            .as_admin()
            .get(&format!("/v1/orders/{returned}/returns"))
            .await;
        (r.body["returns"][0]["status"] == "refunded").then_some(())
    })
    .await;
    tokio::time::sleep(outage.saturating_sub(down_since.elapsed())).await;

    // Nothing got through, and the log says why.
    assert!(receiver.handled().is_empty());
    let log = app
        .as_admin()
        .get(&format!(
            "/v1/admin/event-subscriptions/{sub}/deliveries?limit=100"
        ))
        .await;
    assert_eq!(log.status, 200, "{}", log.body);
    let deliveries = log.body["deliveries"].as_array().unwrap().clone();
    assert_eq!(deliveries.len() as i64, outbox_events(&app).await);
    for d in &deliveries {
        assert_eq!(d["status"], "pending", "{d}");
        let attempts = d["attempts"].as_i64().unwrap();
        if d["seq"] == 1 {
            // Each order's first event was tried again and again, and refused.
            assert!(attempts >= 2, "{d}");
            assert_eq!(d["last_status_code"], json!(503), "{d}");
        } else {
            // The later ones wait for it: an order's events go out in order.
            assert_eq!(attempts, 0, "{d}");
        }
    }
    let metrics = app.scrape(&format!("{}/metrics", app.base)).await;
    let pending = format!(
        "orderflow_events_undelivered{{subscription=\"{sub}\",status=\"pending\"}} {}",
        deliveries.len()
    );
    assert!(metrics.contains(&pending), "{pending} in:\n{metrics}");
    let refused = receiver.inbox.lock().unwrap().refused_while_down;
    println!(
        "the subscriber was down for {:.0} s and refused {refused} deliveries",
        down_since.elapsed().as_secs_f64()
    );

    // It comes back: everything arrives, in order, once each.
    receiver.down.store(false, Ordering::SeqCst);
    all_delivered(&app, &receiver, 60).await;
    let by_order = types_by_order(&receiver.handled());
    let expect = |types: &[&str]| Some(types.iter().map(|t| t.to_string()).collect::<Vec<_>>());
    assert_eq!(
        by_order.get(&fulfilled).cloned(),
        expect(&["order.placed", "order.paid", "order.fulfilled"])
    );
    assert_eq!(
        by_order.get(&cancelled).cloned(),
        expect(&["order.placed", "order.cancelled"])
    );
    assert_eq!(
        by_order.get(&refunded).cloned(),
        expect(&[
            "order.placed",
            "order.paid",
            "order.cancelled",
            "refund.succeeded"
        ])
    );
    assert_eq!(
        by_order.get(&returned).cloned(),
        expect(&[
            "order.placed",
            "order.paid",
            "order.fulfilled",
            "return.requested",
            "return.received",
            "refund.succeeded",
            "return.refunded"
        ])
    );

    // An answer lost on the way back: the event comes again, and the copy is dropped.
    // (The order's id, and so its first event's, is known before it is placed.)
    let placed = format!(
        "evt_{}_1",
        orderflow_api::order_id_for("alice", "late-answer")
    );
    *receiver.stall_once.lock().unwrap() = Some(placed.clone());
    let late = place(&app, "late-answer", "lamp").await;
    assert_eq!(app.cancel(&late, "user").await.status, 200);
    all_delivered(&app, &receiver, 60).await;
    assert!(receiver.arrivals_of(&placed) >= 2, "the event came again");
    let entry = app
        .as_admin()
        .get(&format!(
            "/v1/admin/event-subscriptions/{sub}/deliveries/{placed}"
        ))
        .await;
    assert_eq!(entry.status, 200, "{}", entry.body);
    let attempts = entry.body["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{}", entry.body);
    assert_eq!(attempts[0]["status_code"], json!(null));
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("timeout"),
        "{}",
        entry.body
    );
    assert_eq!(attempts.last().unwrap()["status_code"], 200);
    assert_eq!(entry.body["delivery"]["status"], "delivered");
    assert_eq!(entry.body["delivery"]["event"]["type"], "order.placed");

    // Ops redeliver an event: it arrives again, and is still handled once.
    let first = format!("evt_{fulfilled}_1");
    let before = receiver.arrivals_of(&first);
    let again = app
        .as_admin()
        .post(
            &format!("/v1/admin/event-subscriptions/{sub}/deliveries/{first}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(again.status, 202, "{}", again.body);
    app.eventually(30, "the redelivery", || async {
        (receiver.arrivals_of(&first) > before).then_some(())
    })
    .await;
    // ... and recorded as delivered again.
    all_delivered(&app, &receiver, 30).await;
    let missing = app
        .as_admin()
        .post(
            &format!("/v1/admin/event-subscriptions/{sub}/deliveries/evt_nope_1/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(
        (missing.status, missing.code()),
        (404, "delivery_not_found")
    );

    let handled = receiver.handled();
    let mut ids: Vec<&str> = handled.iter().map(|a| a.event_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), handled.len(), "an event was handled twice");
    assert_eq!(handled.len() as i64, outbox_events(&app).await);
    assert_eq!(receiver.problems(), Vec::<String>::new());

    // Disabled: nothing more is sent to it.
    let disabled = app
        .as_admin()
        .call(
            "POST",
            &format!("/v1/admin/event-subscriptions/{sub}/disable"),
            None,
        )
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    assert!(
        disabled.body["disabled_at"].is_string(),
        "{}",
        disabled.body
    );
    let after = place(&app, "after-disable", "lamp").await;
    assert_eq!(app.cancel(&after, "user").await.status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!receiver.handled().iter().any(|a| a.order_id == after));

    // Retention: delivered events go, with their log; nothing else had a delivery to keep.
    let purged =
        orderflow_activities::events_out::purge_delivered(&app.db, orderflow_store::now_ms() + 1)
            .await
            .unwrap();
    assert_eq!(purged as usize, handled.len());
    for table in [
        "outbox_events",
        "event_deliveries",
        "event_delivery_attempts",
    ] {
        let left: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(left, 0, "{table}");
    }

    app.assert_invariants().await;
}

#[tokio::test]
async fn a_worker_killed_between_the_answer_and_its_record_loses_no_event() {
    let app = spawn_app_with(WorkerMode::External).await;
    app.put_sku_with(
        "lamp",
        json!({"price": 1000, "stock": 50, "kind": "physical"}),
    )
    .await;
    let (receiver, sub) = subscribed_receiver(&app).await;

    let (user, key) = ("events-crash", "killed-mid-delivery");
    let order = orderflow_api::order_id_for(user, key);
    let markers = common::tempdir("faults").to_string_lossy().into_owned();
    let failpoints = format!("event_delivery.after_post=return({order})");
    let env = [
        ("FAILPOINTS", failpoints.as_str()),
        ("ORDERFLOW_FAULTS_DIR", markers.as_str()),
    ];
    let deaths = AtomicU32::new(0);
    let work = async {
        let body = json!({"user_id": user, "items": [{"sku": "lamp", "quantity": 1}]});
        let created =
            common::until_answered("create", || app.create_order(key, body.clone())).await;
        assert_eq!(created.status, 201, "{}", created.body);
        let cancelled = common::until_answered("cancel", || app.cancel(&order, "user")).await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.body);
        all_delivered(&app, &receiver, 90).await;
    };
    tokio::select! {
        () = work => {}
        () = app.supervise(&env, &deaths) => unreachable!("the supervisor runs until dropped"),
    }
    assert_eq!(
        deaths.load(Ordering::SeqCst),
        1,
        "killed once, after the POST"
    );
    let placed = format!("evt_{order}_1");
    assert_eq!(
        receiver.arrivals_of(&placed),
        2,
        "sent, the worker died before recording the answer, sent again"
    );
    assert_eq!(
        types_by_order(&receiver.handled()).get(&order).cloned(),
        Some(vec![
            "order.placed".to_owned(),
            "order.cancelled".to_owned()
        ])
    );
    assert_eq!(receiver.problems(), Vec::<String>::new());
    let entry = app
        .as_admin()
        .get(&format!(
            "/v1/admin/event-subscriptions/{sub}/deliveries/{placed}"
        ))
        .await;
    assert_eq!(
        entry.body["delivery"]["status"], "delivered",
        "{}",
        entry.body
    );
    app.assert_invariants().await;
}
