//! Database-level tests of the activities (no Temporal): every release and capture is
//! idempotent on its business key, a release that matches no row fails loudly, and the
//! migrations roll back cleanly. SQLite by default, PostgreSQL with `TEST_DATABASE_URL`.

mod common;

use orderflow_activities::funds::{POINTS, WALLET};
use orderflow_activities::{audit, coupons, funds, orders, outcome, reservation, stock};
use orderflow_store::{self as store, Db, StoreError};
use orderflow_workflows::model::*;

fn sku_spec(price: i64, stock: i64) -> store::SkuSpec {
    store::SkuSpec {
        price,
        stock,
        kind: "physical".into(),
        quota: None,
    }
}

async fn fresh_db() -> Db {
    orderflow::run::open_db(&common::fresh_database_url().await, true)
        .await
        .unwrap()
}

/// The shop alice buys in: 5 books at 1000, 100 wallet funds, 100 points, and a 500 coupon
/// (its id is returned).
async fn alices_shop(db: &Db) -> String {
    store::put_sku(db, "book", &sku_spec(1000, 5))
        .await
        .unwrap();
    store::credit(db, WALLET, "alice", 100).await.unwrap();
    store::credit(db, POINTS, "alice", 100).await.unwrap();
    store::create_coupon(db, "alice", "amount", 500)
        .await
        .unwrap()
        .coupon_id
}

/// An order holding 2 books, 300 of a coupon, 50 points and 70 wallet funds.
async fn reserve_everything(db: &Db, order_id: &str) -> String {
    let coupon = alices_shop(db).await;
    let line = OrderLine {
        sku: "book".into(),
        quantity: 2,
    };
    let stock_in = ReserveStock {
        order_id: order_id.into(),
        items: vec![line],
        user_id: "alice".into(),
        max_open_orders: None,
    };
    assert_eq!(
        stock::reserve(db, &stock_in).await.unwrap(),
        Reservation::Reserved { amount: 2000 }
    );
    let coupon_in = ReserveCoupon {
        order_id: order_id.into(),
        user_id: "alice".into(),
        coupon_id: coupon.clone(),
        max_discount: 300,
    };
    assert_eq!(
        coupons::reserve(db, &coupon_in).await.unwrap(),
        Reservation::Reserved { amount: 300 }
    );
    let funds_in = |amount| ReserveFunds {
        order_id: order_id.into(),
        user_id: "alice".into(),
        amount,
    };
    assert_eq!(
        funds::reserve(db, POINTS, &funds_in(50)).await.unwrap(),
        Reservation::Reserved { amount: 50 }
    );
    assert_eq!(
        funds::reserve(db, WALLET, &funds_in(70)).await.unwrap(),
        Reservation::Reserved { amount: 70 }
    );
    // A retried reservation (the first attempt committed, its answer was lost) answers the same.
    assert_eq!(
        stock::reserve(db, &stock_in).await.unwrap(),
        Reservation::Reserved { amount: 2000 }
    );
    assert_eq!(
        coupons::reserve(db, &coupon_in).await.unwrap(),
        Reservation::Reserved { amount: 300 }
    );
    assert_eq!(
        funds::reserve(db, WALLET, &funds_in(70)).await.unwrap(),
        Reservation::Reserved { amount: 70 }
    );
    coupon
}

async fn account(db: &Db, kind: funds::Account) -> store::Account {
    store::get_account(db, kind, "alice").await.unwrap()
}

async fn release_all(db: &Db, order_id: &str) {
    outcome::settle_one(db, order_id, Resource::Stock, Move::Release)
        .await
        .unwrap();
    outcome::settle_one(db, order_id, Resource::Coupon, Move::Release)
        .await
        .unwrap();
    outcome::settle_one(db, order_id, Resource::Points, Move::Release)
        .await
        .unwrap();
    outcome::settle_one(db, order_id, Resource::Wallet, Move::Release)
        .await
        .unwrap();
}

#[tokio::test]
async fn each_release_runs_twice_and_after_a_crash_following_its_commit_with_one_effect() {
    let db = fresh_db().await;
    let coupon = reserve_everything(&db, "ord_1").await;
    // First run commits; the second is what Temporal does after a worker crash that followed
    // the commit; the third is a plain duplicate delivery.
    for _ in 0..3 {
        release_all(&db, "ord_1").await;
    }
    assert_eq!(store::get_sku(&db, "book").await.unwrap().available, 5);
    let c = store::get_coupon(&db, &coupon).await.unwrap();
    assert_eq!((c.balance, c.reserved), (500, 0));
    assert_eq!(account(&db, WALLET).await.balance, 100);
    assert_eq!(account(&db, POINTS).await.balance, 100);
    // A reservation attempt that arrives after the release cannot take anything any more.
    let late = ReserveFunds {
        order_id: "ord_1".into(),
        user_id: "alice".into(),
        amount: 70,
    };
    assert!(
        matches!(funds::reserve(&db, WALLET, &late).await.unwrap(), Reservation::Refused(r) if r.code == "order_closed")
    );
    assert_eq!(account(&db, WALLET).await.balance, 100);
}

#[tokio::test]
async fn each_capture_is_idempotent_and_a_captured_hold_can_never_be_released() {
    let db = fresh_db().await;
    let coupon = reserve_everything(&db, "ord_2").await;
    for _ in 0..2 {
        outcome::settle_one(&db, "ord_2", Resource::Stock, Move::Capture)
            .await
            .unwrap();
        outcome::settle_one(&db, "ord_2", Resource::Coupon, Move::Capture)
            .await
            .unwrap();
        outcome::settle_one(&db, "ord_2", Resource::Points, Move::Capture)
            .await
            .unwrap();
        outcome::settle_one(&db, "ord_2", Resource::Wallet, Move::Capture)
            .await
            .unwrap();
    }
    assert_eq!(store::get_sku(&db, "book").await.unwrap().sold, 2);
    assert_eq!(store::get_coupon(&db, &coupon).await.unwrap().used, 300);
    assert_eq!(account(&db, WALLET).await.spent, 70);
    let err = outcome::settle_one(&db, "ord_2", Resource::Stock, Move::Release)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                code: "already_captured",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient(), "a business error is never retried");
    assert_eq!(store::get_sku(&db, "book").await.unwrap().sold, 2);
}

#[tokio::test]
async fn a_release_whose_update_matches_no_row_fails_loudly_and_changes_nothing() {
    let db = fresh_db().await;
    let coupon = reserve_everything(&db, "ord_3").await;
    // The coupon row disappears under the order (an operator's mistake, a bad migration).
    sqlx::query("DELETE FROM coupons WHERE coupon_id = $1")
        .bind(&coupon)
        .execute(&db)
        .await
        .unwrap();
    let err = outcome::settle_one(&db, "ord_3", Resource::Coupon, Move::Release)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                code: "coupon_mismatch",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient());
    // Nothing was recorded: the hold is still reserved and the ledger has no release.
    let (state,): (String,) =
        sqlx::query_as("SELECT state FROM holds WHERE order_id = 'ord_3' AND resource = 'coupon'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(state, "reserved");
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM ledger WHERE order_id = 'ord_3' AND action = 'release'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(n, 0);
    // Capturing what was never reserved fails loudly too.
    let err = outcome::settle_one(&db, "ord_never", Resource::Stock, Move::Capture)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                code: "nothing_reserved",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn the_audit_catches_money_created_out_of_thin_air() {
    let db = fresh_db().await;
    reserve_everything(&db, "ord_4").await;
    release_all(&db, "ord_4").await;
    assert_eq!(audit::check(&db).await.unwrap(), Vec::<String>::new());
    sqlx::query(
        "UPDATE skus SET reserved = reserved + 1, available = available - 1 WHERE sku = 'book'",
    )
    .execute(&db)
    .await
    .unwrap();
    let violations = audit::check(&db).await.unwrap();
    assert!(
        violations.iter().any(|v| v.contains("stock book")),
        "{violations:?}"
    );
}

#[tokio::test]
async fn migrations_roll_back_cleanly_and_apply_again() {
    let db = fresh_db().await;
    store::put_sku(&db, "book", &sku_spec(1, 1)).await.unwrap();
    orderflow_store::db::migrate_down(&db, 0).await.unwrap();
    let gone = sqlx::query("SELECT COUNT(*) FROM skus")
        .fetch_one(&db)
        .await;
    assert!(gone.is_err(), "the tables are dropped");
    orderflow_store::db::migrate_up(&db).await.unwrap();
    assert!(matches!(
        store::get_sku(&db, "book").await,
        Err(StoreError::NotFound { .. })
    ));
    store::put_sku(&db, "book", &sku_spec(1, 1)).await.unwrap();
}

/// A cancelled order with one late payment, as the refund workflow finds it.
async fn late_payment(db: &Db, order_id: &str) -> RefundPayment {
    pending_order(db, order_id).await;
    let cancel = MarkCancelled {
        order_id: order_id.into(),
        reason: CancelReason::Timeout,
        at_ms: 1_500,
    };
    let held = Resource::ALL.to_vec();
    outcome::cancel(db, &CancelOrder { cancel, held })
        .await
        .unwrap();
    RefundPayment {
        order_id: order_id.into(),
        user_id: "alice".into(),
        payment: PaymentReceived {
            payment_id: format!("pay_{order_id}"),
            event_id: format!("evt_{order_id}"),
            amount: 1330,
            currency: "USD".into(),
            capture_before_ms: None,
        },
        reason: "order_cancelled".into(),
        requested_at_ms: 2_000,
        idempotency_key: None,
    }
}

/// `reserve_everything`, and the order recorded `pending_payment` (payable 1580).
async fn pending_order(db: &Db, order_id: &str) -> String {
    let coupon = reserve_everything(db, order_id).await;
    let order = PlaceOrder {
        order_id: order_id.into(),
        user_id: "alice".into(),
        items: vec![OrderLine {
            sku: "book".into(),
            quantity: 2,
        }],
        coupon_id: Some(coupon.clone()),
        points: 50,
        wallet_amount: 70,
        payment_timeout_secs: 60,
        currency: "USD".into(),
        request_hash: "h".into(),
        idempotency_key: "k".into(),
        checkout_window_secs: None,
        late_payment_grace_secs: None,
        payment_method: PaymentMethod::Online,
        max_open_orders: None,
        resume: false,
        capture: None,
    };
    let amounts = Amounts {
        total: 2000,
        coupon: 300,
        points: 50,
        wallet: 70,
        payable: 1580,
    };
    let record = RecordOrder {
        order,
        status: OrderStatus::PendingPayment,
        amounts,
        expires_at_ms: Some(60_000),
        rejection: None,
        at_ms: 1_000,
    };
    orders::record(db, &record).await.unwrap();
    coupon
}

/// 2 books at 1000 with a 500 coupon, 50 points and `wallet` wallet funds, for alice.
fn whole_order(order_id: &str, coupon_id: &str, wallet: i64) -> ReserveOrder {
    ReserveOrder {
        order_id: order_id.into(),
        user_id: "alice".into(),
        items: vec![OrderLine {
            sku: "book".into(),
            quantity: 2,
        }],
        coupon_id: Some(coupon_id.into()),
        points: 50,
        wallet_amount: wallet,
        payment_method: PaymentMethod::Online,
        max_open_orders: None,
    }
}

#[tokio::test]
async fn an_orders_reservations_commit_together_or_not_at_all_and_a_retry_answers_the_same() {
    let db = fresh_db().await;
    let coupon = alices_shop(&db).await;

    // The wallet, reserved last, refuses: the stock, coupon and points it got first are not
    // held, and the refusal names the wallet.
    let refused = reservation::reserve_order(&db, &whole_order("ord_no", &coupon, 101))
        .await
        .unwrap();
    match &refused {
        OrderReservation::Refused(r) => assert_eq!(r.code, WALLET.short_code, "{r:?}"),
        other => panic!("reserved {other:?}"),
    }
    let book = store::get_sku(&db, "book").await.unwrap();
    assert_eq!((book.available, book.reserved), (5, 0));
    let c = store::get_coupon(&db, &coupon).await.unwrap();
    assert_eq!((c.balance, c.reserved), (500, 0));
    assert_eq!(account(&db, POINTS).await.balance, 100);
    assert_eq!(account(&db, WALLET).await.balance, 100);
    assert!(hold_states(&db, "ord_no").await.is_empty());

    // Reserved: every hold at once, priced as `decide::price` says. A retry (the first answer
    // was lost after the commit) answers the same amounts and takes nothing more.
    let order = whole_order("ord_yes", &coupon, 70);
    let want = OrderReservation::Reserved(Amounts {
        total: 2000,
        coupon: 500,
        points: 50,
        wallet: 70,
        payable: 1380,
    });
    for _ in 0..2 {
        let reserved = reservation::reserve_order(&db, &order).await.unwrap();
        assert_eq!(reserved, want);
        assert_eq!(
            reservation::held_by(&order, &reserved),
            [
                Resource::Stock,
                Resource::Coupon,
                Resource::Points,
                Resource::Wallet
            ]
        );
    }
    assert_eq!(store::get_sku(&db, "book").await.unwrap().reserved, 2);
    assert_eq!(store::get_coupon(&db, &coupon).await.unwrap().reserved, 500);
    assert_eq!(account(&db, POINTS).await.balance, 50);
    assert_eq!(account(&db, WALLET).await.balance, 30);
    assert_eq!(hold_states(&db, "ord_yes").await, ["reserved"; 4]);

    // An order whose holds were tombstoned (its workflow gave up on a reservation that could
    // not run) refuses a late attempt, and takes nothing.
    for resource in [
        Resource::Stock,
        Resource::Coupon,
        Resource::Points,
        Resource::Wallet,
    ] {
        outcome::settle_one(&db, "ord_late", resource, Move::Release)
            .await
            .unwrap();
    }
    let late = reservation::reserve_order(&db, &whole_order("ord_late", &coupon, 10))
        .await
        .unwrap();
    assert!(
        matches!(&late, OrderReservation::Refused(r) if r.code == "order_closed"),
        "{late:?}"
    );
    assert_eq!(store::get_sku(&db, "book").await.unwrap().reserved, 2);
    assert_eq!(account(&db, POINTS).await.balance, 50);

    // Holds reserved together are released like any others.
    release_all(&db, "ord_yes").await;
    assert_eq!(store::get_sku(&db, "book").await.unwrap().available, 5);
    assert_eq!(store::get_coupon(&db, &coupon).await.unwrap().balance, 500);
    assert_eq!(account(&db, POINTS).await.balance, 100);
    assert_eq!(account(&db, WALLET).await.balance, 100);
    assert_eq!(audit::check(&db).await.unwrap(), Vec::<String>::new());
}

async fn hold_states(db: &Db, order_id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT state FROM holds WHERE order_id = $1 ORDER BY resource")
        .bind(order_id)
        .fetch_all(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_outcome_commits_its_status_and_every_hold_move_together_or_not_at_all() {
    use orderflow_activities::outcome;
    let db = fresh_db().await;
    let coupon = pending_order(&db, "ord_tx").await;
    let held = Resource::ALL.to_vec();
    let cancel = CancelOrder {
        cancel: MarkCancelled {
            order_id: "ord_tx".into(),
            reason: CancelReason::Timeout,
            at_ms: 5_000,
        },
        held: held.clone(),
    };
    // The coupon row is gone: its release fails, and so does the whole cancel, status and
    // wallet included. Nothing is half done.
    let saved: (String, String, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT coupon_id, user_id, amount, balance, reserved, used, created_at FROM coupons WHERE coupon_id = $1",
    )
    .bind(&coupon)
    .fetch_one(&db)
    .await
    .unwrap();
    sqlx::query("DELETE FROM coupons WHERE coupon_id = $1")
        .bind(&coupon)
        .execute(&db)
        .await
        .unwrap();
    let err = outcome::cancel(&db, &cancel).await.unwrap_err();
    assert_eq!(err.code(), "coupon_mismatch", "{err}");
    assert_eq!(
        orders::status(&db, "ord_tx").await.unwrap(),
        Some(OrderStatus::PendingPayment)
    );
    assert_eq!(
        account(&db, WALLET).await.held,
        70,
        "the wallet is still frozen"
    );
    assert_eq!(hold_states(&db, "ord_tx").await, vec!["reserved"; 4]);
    // Put back, the same cancel commits everything at once; a retry changes nothing.
    sqlx::query("INSERT INTO coupons (coupon_id, user_id, kind, amount, balance, reserved, used, created_at) VALUES ($1, $2, 'amount', $3, $4, $5, $6, $7)")
        .bind(&saved.0).bind(&saved.1).bind(saved.2).bind(saved.3).bind(saved.4).bind(saved.5).bind(saved.6)
        .execute(&db)
        .await
        .unwrap();
    for _ in 0..2 {
        outcome::cancel(&db, &cancel).await.unwrap();
    }
    assert_eq!(
        orders::status(&db, "ord_tx").await.unwrap(),
        Some(OrderStatus::Cancelled)
    );
    assert_eq!(hold_states(&db, "ord_tx").await, vec!["released"; 4]);
    assert_eq!(account(&db, WALLET).await.held, 0);
    assert!(audit::check(&db).await.unwrap().is_empty());

    // Paid: status, payment and every capture together, then cancelled after payment with
    // everything returned together.
    pending_order(&db, "ord_tx2").await;
    let pay = PayOrder {
        paid: MarkPaid {
            order_id: "ord_tx2".into(),
            payment: Some(PaymentReceived {
                payment_id: "pay_tx2".into(),
                event_id: "evt_tx2".into(),
                amount: 1580,
                currency: "USD".into(),
                capture_before_ms: None,
            }),
            at_ms: 6_000,
        },
        held: held.clone(),
    };
    for _ in 0..2 {
        outcome::pay(&db, &pay).await.unwrap();
    }
    assert_eq!(hold_states(&db, "ord_tx2").await, vec!["captured"; 4]);
    assert!(audit::check(&db).await.unwrap().is_empty());
    let cancel_paid = CancelOrder {
        cancel: MarkCancelled {
            order_id: "ord_tx2".into(),
            reason: CancelReason::User,
            at_ms: 7_000,
        },
        held,
    };
    for _ in 0..2 {
        outcome::cancel_paid(&db, &cancel_paid).await.unwrap();
    }
    assert_eq!(hold_states(&db, "ord_tx2").await, vec!["returned"; 4]);
    assert_eq!(store::get_sku(&db, "book").await.unwrap().sold, 0);
    assert!(audit::check(&db).await.unwrap().is_empty());
}

#[tokio::test]
async fn each_refund_step_runs_twice_with_one_effect_and_a_second_outcome_is_refused() {
    let db = fresh_db().await;
    let refund = late_payment(&db, "ord_r1").await;
    let begin = |r| orderflow_activities::payments::begin_refund(&db, r, None);
    for _ in 0..2 {
        let begun = begin(&refund).await.unwrap();
        assert!(matches!(begun, RefundBegun::Call { .. }), "{begun:?}");
    }
    let ok = RecordRefundResult {
        order_id: "ord_r1".into(),
        payment_id: refund.payment.payment_id.clone(),
        outcome: RefundOutcome::Succeeded {
            provider_refund_id: "re_1".into(),
            voided: false,
        },
        at_ms: 3_000,
    };
    let record = orderflow_activities::payments::record_refund_result;
    record(&db, &ok).await.unwrap();
    record(&db, &ok).await.unwrap();
    // Another outcome for the same refund: a conflict, never Ok, and nothing changes.
    let other = RecordRefundResult {
        outcome: RefundOutcome::Succeeded {
            provider_refund_id: "re_2".into(),
            voided: false,
        },
        ..ok.clone()
    };
    let err = record(&db, &other).await.unwrap_err();
    assert_eq!(err.code(), "refund_conflict", "{err}");
    // A different refund of the same payment: refused too.
    let bigger = RefundPayment {
        payment: PaymentReceived {
            amount: 9_999,
            ..refund.payment.clone()
        },
        ..refund.clone()
    };
    assert!(begin(&bigger).await.is_err());

    let order = store::get_order(&db, "ord_r1").await.unwrap();
    assert_eq!(order.payments.len(), 1);
    assert_eq!(order.payments[0].status, "unapplied");
    assert_eq!(order.refunds.len(), 1);
    assert_eq!(
        (
            order.refunds[0].status.as_str(),
            order.refunds[0].provider_refund_id.as_deref(),
            order.refunds[0].amount
        ),
        ("succeeded", Some("re_1"), 1330)
    );
    let steps: Vec<String> = store::order_events(&db, "ord_r1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.step)
        .collect();
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.starts_with("refund:") || s.starts_with("payment:"))
            .count(),
        3,
        "{steps:?}"
    );
    assert_eq!(audit::check(&db).await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_captured_payment_can_never_be_refunded_as_owed() {
    let db = fresh_db().await;
    let refund = late_payment(&db, "ord_r2").await;
    // The same payment id already captured for the order: the refund step refuses it.
    sqlx::query(
        "INSERT INTO payments (payment_id, order_id, event_id, amount, currency, status, received_at)
         VALUES ($1, 'ord_r2', 'e', 1330, 'USD', 'captured', 1)",
    )
    .bind(&refund.payment.payment_id)
    .execute(&db)
    .await
    .unwrap();
    let begun = orderflow_activities::payments::begin_refund(&db, &refund, None)
        .await
        .unwrap();
    assert!(matches!(begun, RefundBegun::Applied), "{begun:?}");
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refunds")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing was recorded");
}

#[tokio::test]
async fn the_inbox_answers_new_then_unprocessed_then_processed() {
    use orderflow_activities::payments::{Inbox, InboxEvent, processed, receive};
    let db = fresh_db().await;
    let event = InboxEvent {
        event_id: "evt_1".into(),
        event_type: "payment.succeeded".into(),
        order_id: "ord_1".into(),
        payment_id: "pay_1".into(),
        amount: 100,
        currency: "USD".into(),
        received_at: 1,
        session_id: None,
        capture_before: None,
    };
    assert_eq!(receive(&db, &event).await.unwrap(), Inbox::New);
    // Received but not handed on (a crash, an outage): the redelivery processes it again.
    assert_eq!(receive(&db, &event).await.unwrap(), Inbox::Unprocessed);
    processed(&db, "evt_1", "signalled", 2).await.unwrap();
    assert_eq!(
        receive(&db, &event).await.unwrap(),
        Inbox::Processed {
            outcome: "signalled".into()
        }
    );
    assert_eq!(
        processed(&db, "evt_unknown", "signalled", 2)
            .await
            .unwrap_err()
            .code(),
        "inbox_missing"
    );
}

#[tokio::test]
async fn a_page_of_orders_carries_each_orders_own_items_payments_and_refunds() {
    let db = fresh_db().await;
    // ord_l1: cancelled, with a late payment being refunded; ord_l2: pending, nothing else.
    let refund = late_payment(&db, "ord_l1").await;
    orderflow_activities::payments::begin_refund(&db, &refund, None)
        .await
        .unwrap();
    pending_order(&db, "ord_l2").await;
    let filter = store::OrderFilter {
        limit: 10,
        now_ms: 5_000,
        ..Default::default()
    };
    let (page, more) = store::list_orders(&db, &filter).await.unwrap();
    assert!(!more);
    let ids: Vec<&str> = page.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    for listed in &page {
        let alone = store::get_order(&db, &listed.order_id).await.unwrap();
        assert_eq!(listed.items, alone.items, "{}", listed.order_id);
        assert_eq!(listed.payments, alone.payments, "{}", listed.order_id);
        assert_eq!(listed.refunds, alone.refunds, "{}", listed.order_id);
        assert_eq!(listed.shipment, alone.shipment, "{}", listed.order_id);
        assert_eq!(listed.items.len(), 1, "{}", listed.order_id);
    }
    let by_id = |id: &str| page.iter().find(|o| o.order_id == id).unwrap();
    assert_eq!(by_id("ord_l1").refunds.len(), 1);
    assert_eq!(by_id("ord_l1").refunds[0].payment_id, "pay_ord_l1");
    assert!(by_id("ord_l2").refunds.is_empty());
    assert!(by_id("ord_l2").payments.is_empty());
}

/// A dispute of a payment orderflow cannot tie to any order is still recorded, flagged for
/// ops, and recorded once however often it is reported (the webhook and the inbox re-drive
/// both call `record`).
#[tokio::test]
async fn a_dispute_for_no_order_here_is_recorded_once_and_flagged_for_ops() {
    let db = fresh_db().await;
    let event = orderflow_activities::payments::InboxEvent {
        event_id: "evt_dispute_1".into(),
        event_type: orderflow_activities::provider::CHARGE_DISPUTED.into(),
        order_id: "ord_elsewhere".into(),
        payment_id: "pay_elsewhere".into(),
        amount: 700,
        currency: "USD".into(),
        received_at: 1,
        session_id: None,
        capture_before: None,
    };
    for at in [10, 20] {
        let outcome = orderflow_activities::disputes::record(&db, &event, at)
            .await
            .unwrap();
        assert_eq!(outcome, orderflow_activities::disputes::RECORDED);
    }
    let recorded = orderflow_activities::disputes::all(&db).await.unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let d = &recorded[0];
    assert_eq!(
        (
            d.order_id.as_str(),
            d.amount,
            d.revoked_entitlements,
            d.flagged_for_ops,
            d.recorded_at
        ),
        ("ord_elsewhere", 700, 0, true, 10)
    );
    assert!(d.detail.contains("no such order"), "{}", d.detail);
}

/// Orders reserving while others release the same SKU, points and wallet rows never deadlock:
/// every transaction that moves several resources locks their rows in one order (stock,
/// coupon, points, wallet). Releases once ran in reverse, and on PostgreSQL a release holding
/// the points row while waiting for the SKU row met a reservation holding the SKU row while
/// waiting for the points row: `deadlock detected`, a second's wait, and a failed step.
#[tokio::test]
async fn reservations_and_releases_running_together_never_deadlock() {
    const ROUNDS: usize = 3;
    const EACH: usize = 12;
    let db = fresh_db().await;
    store::put_sku(&db, "book", &sku_spec(1000, 10_000))
        .await
        .unwrap();
    store::credit(&db, WALLET, "alice", 1_000_000)
        .await
        .unwrap();
    store::credit(&db, POINTS, "alice", 1_000_000)
        .await
        .unwrap();
    let mut coupons = Vec::new();
    for _ in 0..(ROUNDS + 1) * EACH {
        let coupon = store::create_coupon(&db, "alice", "amount", 500)
            .await
            .unwrap();
        coupons.push(coupon.coupon_id);
    }
    let reserve = |db: Db, order_id: String, coupon: String| async move {
        match reservation::reserve_order(&db, &whole_order(&order_id, &coupon, 10)).await {
            Ok(OrderReservation::Reserved(_)) => Ok(()),
            Ok(refused) => Err(format!("{order_id} refused: {refused:?}")),
            Err(e) => Err(format!("{order_id} reserving: {e}")),
        }
    };
    // Round 0 reserves; each later round releases the previous round's orders while it
    // reserves new ones, all at once.
    for round in 0..=ROUNDS {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..EACH {
            let order_id = format!("ord_r{round}_{i}");
            tasks.spawn(reserve(
                db.clone(),
                order_id,
                coupons[round * EACH + i].clone(),
            ));
            if round > 0 {
                let release = SettleHolds {
                    order_id: format!("ord_r{}_{i}", round - 1),
                    held: Resource::ALL.to_vec(),
                    how: Move::Release,
                };
                let db = db.clone();
                tasks.spawn(async move {
                    outcome::settle_holds(&db, &release)
                        .await
                        .map_err(|e| format!("{} releasing: {e}", release.order_id))
                });
            }
        }
        let failed: Vec<String> = tasks
            .join_all()
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        assert!(failed.is_empty(), "round {round}: {failed:#?}");
    }
    let book = store::get_sku(&db, "book").await.unwrap();
    assert_eq!(
        book.reserved,
        2 * EACH as i64,
        "only the last round's orders hold stock"
    );
    for (kind, each) in [(POINTS, 50), (WALLET, 10)] {
        let held = account(&db, kind).await;
        assert_eq!(
            held.held,
            each * EACH as i64,
            "only the last round's orders hold funds"
        );
        assert_eq!(
            held.balance + held.held,
            1_000_000,
            "nothing created or lost"
        );
    }
}
