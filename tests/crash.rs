//! Crash tests (issue 11): the worker is killed with SIGKILL at every fault point of
//! `orderflow_activities::faults`, just before a transaction commits and just after it
//! committed, for `CRASH_ORDERS_PER_POINT` orders per point (10 in CI; `--long`, by hand, is 100:
//! `CRASH_ORDERS_PER_POINT=100 ./scripts/test --test crash -- --nocapture`).
//!
//! Every order is armed at one point and dies there once. A supervisor restarts the worker as
//! soon as it dies, as an orchestrator would, with the same arming (a point fires once per
//! order, across restarts). Then: every order ends as its path says; every effect happened
//! exactly once (stock counters, coupon, wallet and points balances, one capture and at most one
//! refund per payment at the provider); every armed point fired, so the killed activity was
//! attempted again; and the two-way audit is clean.
//!
//! The same, with every `after_commit` point armed to lose the commit's acknowledgement instead
//! (the activity fails after its transaction committed): each effect still happens once.
//!
//! And the race the 2-hour soak found: the deadline's cancel commits, the worker dies before
//! its workflow task is reported, and a payment arrives meanwhile. The order stays cancelled and
//! the payment is refunded once.
//!
//! Real dev server, real database, real `orderflow worker` processes, real provider sandbox.

#![cfg(feature = "faults")]

mod common;

use common::{TestApp, WorkerMode, spawn_app_with};
use orderflow_activities::faults::POINTS;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

const PRICE: i64 = 1000;
const COUPON: i64 = 100;
const POINTS_USED: i64 = 50;
const WALLET_USED: i64 = 50;
const PAYABLE: i64 = PRICE - COUPON - POINTS_USED - WALLET_USED;
const CREDIT: i64 = 1000;
const STOCK: i64 = 100_000;

/// What happens to an order after it is placed: the path decides the points it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Never paid: its deadline releases every hold.
    TimesOut,
    /// Paid (a digital good): captured and fulfilled.
    Paid,
    /// Paid (a physical good, not shipped), then cancelled: returned and refunded.
    PaidThenCancelled,
    /// Paid (a digital good), then refunded by an admin for its whole value as a partial
    /// refund: every source given back once, the order still fulfilled.
    PaidThenRefundedInPart,
    /// Authorized (a physical good, `ORDER_CAPTURE=at_shipment`), then shipped: captured once.
    AuthorizedThenShipped,
}

fn path_through(point: &str) -> Path {
    match point.split('.').next().unwrap() {
        "reserve" | "release" => Path::TimesOut,
        "capture" | "fulfil" => Path::Paid,
        "return" | "refund" | "refund_result" => Path::PaidThenCancelled,
        "order_refund" => Path::PaidThenRefundedInPart,
        "capture_authorization" => Path::AuthorizedThenShipped,
        other => panic!("no path passes {other}"),
    }
}

struct Armed {
    point: &'static str,
    /// `order_id` or `order_id/<resource>` for a reservation.
    target: String,
    order_id: String,
    user: String,
    coupon_id: String,
    key: String,
    path: Path,
}

fn orders_per_point() -> usize {
    std::env::var("CRASH_ORDERS_PER_POINT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

async fn drive(app: &TestApp, o: &Armed) {
    let body = json!({
        "user_id": o.user,
        "items": [{"sku": match o.path { Path::Paid | Path::PaidThenRefundedInPart => "ebook", _ => "book" }, "quantity": 1}],
        "coupon_id": o.coupon_id,
        "points": POINTS_USED,
        "wallet_amount": WALLET_USED,
        "payment_timeout_secs": match o.path { Path::TimesOut => 2, _ => 3600 },
    });
    let created = common::until_answered("create", || app.create_order(&o.key, body.clone())).await;
    assert_eq!(created.status, 201, "{}: {}", o.order_id, created.body);
    assert_eq!(created.body["order_id"], o.order_id.as_str());
    if o.path == Path::TimesOut {
        return;
    }
    let event = match o.path {
        Path::AuthorizedThenShipped => app.sandbox.authorize_payment(&o.order_id, PAYABLE, "USD"),
        _ => app.captured(&o.order_id, PAYABLE),
    };
    let delivered = common::until_answered("webhook", || app.deliver(&event)).await;
    assert_eq!(delivered.status, 200, "{}", delivered.body);
    assert_eq!(
        delivered.body["status"], "signalled",
        "{}: {}",
        o.order_id, delivered.body
    );
    if o.path == Path::PaidThenCancelled {
        let what = format!("{} ({}) paid", o.order_id, o.point);
        app.eventually(300, &what, || async {
            (app.order(&o.order_id).await["status"] == "paid").then_some(())
        })
        .await;
        let cancelled = common::until_answered("cancel", || app.cancel(&o.order_id, "user")).await;
        assert_eq!(cancelled.status, 200, "{}: {}", o.order_id, cancelled.body);
    }
    if o.path == Path::AuthorizedThenShipped {
        let what = format!("{} ({}) waiting for its shipment", o.order_id, o.point);
        app.eventually(300, &what, || async {
            (app.order(&o.order_id).await["shipment_status"] == "pending").then_some(())
        })
        .await;
        let path = format!("/v1/admin/orders/{}/ship", o.order_id);
        let shipped =
            common::until_answered("ship", || app.as_admin().post(&path, json!({}))).await;
        // A ship whose answer was lost with the worker is still carried out; asked again, it
        // is refused as shipped already.
        assert!(
            shipped.status == 200 || shipped.code() == "order_not_shippable",
            "{}: {}",
            o.order_id,
            shipped.body
        );
    }
    if o.path == Path::PaidThenRefundedInPart {
        let what = format!("{} ({}) fulfilled", o.order_id, o.point);
        app.eventually(300, &what, || async {
            (app.order(&o.order_id).await["status"] == "fulfilled").then_some(())
        })
        .await;
        let path = format!("/v1/admin/orders/{}/refunds", o.order_id);
        let body = json!({"amount": PRICE, "reason": "goodwill"});
        let refunded = common::until_answered("partial refund", || {
            app.as_admin().post_keyed(&path, "all-of-it", body.clone())
        })
        .await;
        assert!(
            [200, 201].contains(&refunded.status),
            "{}: {}",
            o.order_id,
            refunded.body
        );
    }
}

#[tokio::test]
async fn every_fault_point_kills_the_worker_and_every_effect_happens_exactly_once() {
    crash_at(&POINTS, Fault::Kill).await;
}

/// The database committed, and its answer was lost on the way back (a connection cut between
/// the commit and its acknowledgement): the activity fails with a transient error, Temporal
/// runs it again, and the retry finds the work done.
#[tokio::test]
async fn every_commit_whose_acknowledgement_is_lost_is_applied_once() {
    let after_commit: Vec<&str> = POINTS
        .iter()
        .copied()
        .filter(|p| p.ends_with(".after_commit"))
        .collect();
    crash_at(&after_commit, Fault::LostAck).await;
}

/// The deadline's cancel commits, and the worker dies before its workflow task is reported; a
/// payment arrives meanwhile. The 2-hour soak found this: the task ran again with the payment
/// in it, decided to pay, and found its order already cancelled (`needs_attention`, the payment
/// held). The order stays cancelled, the payment is refunded once, and nothing needs attention.
#[tokio::test]
async fn a_payment_that_arrives_while_the_deadlines_cancel_is_unreported_is_refunded_once() {
    let app = spawn_app_with(WorkerMode::External).await;
    app.put_sku_with(
        "book",
        json!({"price": PRICE, "stock": STOCK, "kind": "physical"}),
    )
    .await;
    let (user, key) = ("crash-racing-payment", "racing");
    let order_id = orderflow_api::order_id_for(user, key);
    let markers = common::tempdir("faults").to_string_lossy().into_owned();
    let failpoints = format!("release.after_commit=return({order_id})");
    let env = [
        ("FAILPOINTS", failpoints.as_str()),
        ("ORDERFLOW_FAULTS_DIR", markers.as_str()),
    ];
    let deaths = AtomicU32::new(0);
    let work = async {
        let body = json!({"user_id": user, "items": [{"sku": "book", "quantity": 1}], "payment_timeout_secs": 2});
        let created =
            common::until_answered("create", || app.create_order(key, body.clone())).await;
        assert_eq!(created.status, 201, "{}", created.body);
        app.eventually(
            60,
            "the worker killed after the cancel's commit",
            || async {
                let fired = std::fs::read_dir(&markers).map_or(0, |d| d.count());
                (fired > 0).then_some(())
            },
        )
        .await;
        let event = app.captured(&order_id, PRICE);
        let delivered = common::until_answered("webhook", || app.deliver(&event)).await;
        assert_eq!(delivered.status, 200, "{}", delivered.body);
        app.eventually(120, "the order cancelled", || async {
            (app.order(&order_id).await["status"] == "cancelled").then_some(())
        })
        .await;
        app.settled(&order_id).await;
    };
    tokio::select! {
        () = work => {}
        () = app.supervise(&env, &deaths) => unreachable!("the supervisor runs until dropped"),
    }
    assert_eq!(
        deaths.load(Ordering::SeqCst),
        1,
        "killed once, after the commit"
    );
    let attention: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM needs_attention WHERE order_id = $1")
            .bind(&order_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(attention, 0, "{order_id} needed attention");
    let payments: Vec<_> = app
        .sandbox
        .payments()
        .into_iter()
        .filter(|p| p.order_id == order_id)
        .collect();
    assert_eq!(payments.len(), 1);
    let refunds = app
        .sandbox
        .refunds()
        .into_iter()
        .filter(|r| r.payment_id == payments[0].payment_id)
        .count();
    assert_eq!(refunds, 1, "{order_id}: the late payment refunded once");
    app.assert_invariants().await;
    let _ = std::fs::remove_dir_all(&markers);
}

/// What the armed points do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL the worker.
    Kill,
    /// Fail the activity after its commit, as a lost acknowledgement.
    LostAck,
}

/// Arms each of `points` for `CRASH_ORDERS_PER_POINT` orders, drives them all to their end,
/// and checks that every effect happened exactly once.
async fn crash_at(points: &[&'static str], fault: Fault) {
    let started = Instant::now();
    // Physical goods are captured at shipment: the `AuthorizedThenShipped` path.
    let app =
        common::spawn_app_with_tuned(WorkerMode::External, common::Tuning::at_shipment()).await;
    app.put_sku_with(
        "book",
        json!({"price": PRICE, "stock": STOCK, "kind": "physical"}),
    )
    .await;
    app.put_sku_with(
        "ebook",
        json!({"price": PRICE, "stock": STOCK, "kind": "digital"}),
    )
    .await;

    let per_point = orders_per_point();
    let resources = ["stock", "coupon", "points", "wallet"];
    let mut armed = Vec::new();
    for &point in points {
        for n in 0..per_point {
            // Workflow ids are the namespace's: the two tests of this binary share one server,
            // so their users (and so their order ids) differ by fault.
            let mode = match fault {
                Fault::Kill => "kill",
                Fault::LostAck => "lostack",
            };
            let user = format!("crash-{mode}-{}-{n}", point.replace('.', "-"));
            let key = format!("crash-{n}");
            let order_id = orderflow_api::order_id_for(&user, &key);
            let mut target = if point.starts_with("reserve.") {
                format!("{order_id}/{}", resources[n % resources.len()])
            } else {
                order_id.clone()
            };
            if fault == Fault::LostAck {
                target = format!("lost_ack:{target}");
            }
            app.credit_wallet(&user, CREDIT).await;
            app.credit_points(&user, CREDIT).await;
            let coupon_id = app.create_coupon(&user, "amount", COUPON).await;
            armed.push(Armed {
                point,
                target,
                order_id,
                user,
                coupon_id,
                key,
                path: path_through(point),
            });
        }
    }
    let mut spec: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for a in &armed {
        spec.entry(a.point).or_default().push(&a.target);
    }
    let failpoints: Vec<String> = spec
        .iter()
        .map(|(point, targets)| format!("{point}=return({})", targets.join(",")))
        .collect();
    let markers = common::tempdir("faults").to_string_lossy().into_owned();
    let failpoints = failpoints.join(";");
    let env = [
        ("FAILPOINTS", failpoints.as_str()),
        ("ORDERFLOW_FAULTS_DIR", markers.as_str()),
    ];
    let deaths = AtomicU32::new(0);
    let work = async {
        // At most 64 clients at once, as real traffic arrives: 1,400 orders started in the same
        // instant (the long mode) overload two cores until reservations time out and orders
        // are rejected, which is load shedding, not what this test is about.
        use futures::StreamExt;
        futures::stream::iter(&armed)
            .for_each_concurrent(64, |o| drive(&app, o))
            .await;
        for o in &armed {
            let want = match o.path {
                Path::Paid | Path::PaidThenRefundedInPart | Path::AuthorizedThenShipped => {
                    "fulfilled"
                }
                Path::TimesOut | Path::PaidThenCancelled => "cancelled",
            };
            let what = format!("{} ({}) {want}", o.order_id, o.point);
            app.eventually(300, &what, || async {
                (app.order(&o.order_id).await["status"] == want).then_some(())
            })
            .await;
            app.settled(&o.order_id).await;
            if o.path == Path::PaidThenRefundedInPart {
                let what = format!("{} ({}) refunded in part", o.order_id, o.point);
                app.eventually(300, &what, || async {
                    let refunds =
                        orderflow_activities::order_refunds::refunds_of(&app.db, &o.order_id)
                            .await
                            .unwrap();
                    (refunds.len() == 1 && refunds[0].status == "succeeded").then_some(())
                })
                .await;
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = app.supervise(&env, &deaths) => unreachable!("the supervisor runs until dropped"),
    }

    // Every armed point fired once for its order: the worker died there, and the order still
    // finished, so the killed activity ran again.
    let fired = std::fs::read_dir(&markers).unwrap().count();
    assert_eq!(fired, armed.len(), "every armed point fired once");
    let deaths = deaths.load(Ordering::SeqCst) as usize;
    let want_deaths = match fault {
        Fault::Kill => fired,
        Fault::LostAck => 0,
    };
    assert_eq!(
        deaths, want_deaths,
        "the worker died at the fault points armed to kill it, and nowhere else"
    );

    // Exactly once, effect by effect.
    let count = |p: Path| armed.iter().filter(|o| o.path == p).count() as i64;
    let book = app.sku("book").await;
    let ebook = app.sku("ebook").await;
    let shipped = count(Path::AuthorizedThenShipped);
    assert_eq!(
        (book["reserved"].as_i64(), book["sold"].as_i64()),
        (Some(0), Some(shipped)),
        "{book}"
    );
    assert_eq!(book["available"], STOCK - shipped, "{book}");
    // A partial refund gives money back, not stock: its ebook stays sold.
    let sold = count(Path::Paid) + count(Path::PaidThenRefundedInPart);
    assert_eq!(ebook["sold"], sold, "{ebook}");
    assert_eq!(ebook["available"], STOCK - sold, "{ebook}");
    for o in &armed {
        let spent = matches!(o.path, Path::Paid | Path::AuthorizedThenShipped);
        let wallet = app
            .as_admin()
            .get(&format!("/v1/wallets/{}", o.user))
            .await
            .body;
        let points = app
            .as_admin()
            .get(&format!("/v1/points/{}", o.user))
            .await
            .body;
        let coupon = app
            .as_admin()
            .get(&format!("/v1/coupons/{}", o.coupon_id))
            .await
            .body;
        let (wallet_left, points_left, coupon_left) = match spent {
            true => (CREDIT - WALLET_USED, CREDIT - POINTS_USED, 0),
            false => (CREDIT, CREDIT, COUPON),
        };
        let at = format!("{} at {}", o.order_id, o.point);
        assert_eq!(
            (&wallet["balance"], &wallet["frozen"]),
            (&json!(wallet_left), &json!(0)),
            "{at}: {wallet}"
        );
        assert_eq!(
            (&points["points"], &points["reserved"]),
            (&json!(points_left), &json!(0)),
            "{at}: {points}"
        );
        assert_eq!(
            (&coupon["balance"], &coupon["reserved"]),
            (&json!(coupon_left), &json!(0)),
            "{at}: {coupon}"
        );
    }
    let payments = app.sandbox.payments();
    let refunds = app.sandbox.refunds();
    for o in &armed {
        let paid: Vec<_> = payments
            .iter()
            .filter(|p| p.order_id == o.order_id)
            .collect();
        let want_paid = usize::from(o.path != Path::TimesOut);
        assert_eq!(paid.len(), want_paid, "{} at {}", o.order_id, o.point);
        let refunded = refunds
            .iter()
            .filter(|r| paid.iter().any(|p| p.payment_id == r.payment_id))
            .count();
        let want_refunds = usize::from(matches!(
            o.path,
            Path::PaidThenCancelled | Path::PaidThenRefundedInPart
        ));
        assert_eq!(
            refunded, want_refunds,
            "{} at {}: refunds at the provider",
            o.order_id, o.point
        );
        if o.path == Path::AuthorizedThenShipped {
            assert_eq!(
                (paid[0].status.as_str(), paid[0].captured),
                ("captured", PAYABLE),
                "{} at {}: captured in full",
                o.order_id,
                o.point
            );
            let captures = app
                .steps(&o.order_id)
                .await
                .iter()
                .filter(|s| s.starts_with("captured:"))
                .count();
            assert_eq!(captures, 1, "{} at {}: captured once", o.order_id, o.point);
        }
    }
    app.assert_invariants().await;
    let _ = std::fs::remove_dir_all(&markers);

    let mut by_point: BTreeMap<&str, usize> = BTreeMap::new();
    for o in &armed {
        *by_point.entry(o.point).or_default() += 1;
    }
    println!(
        "crash tests ({fault:?}): {} orders, {} points, {fired} faults, {deaths} kills, 0 double effects, audit clean, {:.0} s",
        armed.len(),
        by_point.len(),
        started.elapsed().as_secs_f64()
    );
    for (point, n) in by_point {
        println!("  {point:<28} {n} orders, {fault:?} once each");
    }
}
