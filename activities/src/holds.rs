//! The hold state machine: what an order holds of each resource, and the ledger behind it.
//!
//! One `holds` row per (order, resource) moves `reserved -> released` or `reserved -> captured`,
//! never both, and a captured hold may later be given back: `captured -> returned` (a cancel
//! after payment). Never back otherwise. Each transition also inserts a `ledger` row keyed by
//! (order, resource, action) in the same transaction. Together they make every activity
//! idempotent on its business key: a retry after a crash that followed the commit finds the
//! transition done and does nothing. A transition the data forbids is a typed error, never `Ok`.
//!
//! Every function here starts with a write, so that SQLite takes the write lock first (see `db`).

use crate::error::StoreError;
use orderflow_workflows::model::{Refusal, Reservation, Resource};
use sqlx::{Any, Row, Transaction};

pub type Tx<'a> = Transaction<'a, Any>;

/// A hold as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Whose resource: the coupon id, the user id, or empty for stock (see `order_items`).
    pub subject: String,
    pub amount: i64,
    pub state: String,
}

impl Hold {
    /// For a retried reservation: the refusal to answer if the order released this hold
    /// before the reservation got here (a tombstone), `None` if it is still held.
    pub fn closed(&self) -> Option<Reservation> {
        (self.state == "released").then(|| {
            Reservation::Refused(Refusal::new("order_closed", "the order was already closed"))
        })
    }
}

/// What starting a reservation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// This call inserted the hold: it must now take the resource, then call [`finish_reserve`].
    Fresh,
    /// A previous attempt got here first (it reserved, or the order already released it).
    Existing(Hold),
}

async fn load(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
) -> Result<Option<Hold>, StoreError> {
    let row = sqlx::query(
        "SELECT subject, amount, state FROM holds WHERE order_id = $1 AND resource = $2",
    )
    .bind(order_id)
    .bind(resource.as_str())
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| Hold {
        subject: r.get(0),
        amount: r.get(1),
        state: r.get(2),
    }))
}

async fn append_ledger(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
    action: &str,
    hold: &Hold,
    now: i64,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "INSERT INTO ledger (order_id, resource, action, subject, amount, at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (order_id, resource, action) DO NOTHING",
    )
    .bind(order_id)
    .bind(resource.as_str())
    .bind(action)
    .bind(&hold.subject)
    .bind(hold.amount)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::conflict(
            order_id,
            "ledger_mismatch",
            format!(
                "the ledger already has a {action} of {} although the hold was just moved",
                resource.as_str()
            ),
        ));
    }
    Ok(())
}

/// Ends a reservation's own transaction: commits it if it reserved (or found its reservation
/// already made), rolls it back if it refused, so that a refusal leaves nothing behind.
pub async fn commit_reserved(tx: Tx<'_>, reserved: Reservation) -> Result<Reservation, StoreError> {
    keep_if(tx, matches!(reserved, Reservation::Reserved { .. })).await?;
    Ok(reserved)
}

/// Commits the transaction if `reserved`, rolls it back otherwise: how every reservation ends,
/// one resource's or a whole order's.
pub async fn keep_if(tx: Tx<'_>, reserved: bool) -> Result<(), StoreError> {
    if reserved {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(())
}

/// Inserts a hold row unless one exists; true if this call inserted it.
async fn insert_hold(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
    subject: &str,
    state: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO holds (order_id, resource, subject, amount, state, created_at, updated_at)
         VALUES ($1, $2, $3, 0, $4, $5, $5)
         ON CONFLICT (order_id, resource) DO NOTHING",
    )
    .bind(order_id)
    .bind(resource.as_str())
    .bind(subject)
    .bind(state)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The hold this transaction works on disappeared: the data is inconsistent.
fn vanished(order_id: &str) -> StoreError {
    StoreError::conflict(
        order_id,
        "ledger_mismatch",
        "hold vanished during reservation",
    )
}

/// Starts a reservation by inserting the hold row in state `reserved` (amount 0 for now).
pub async fn begin_reserve(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
    subject: &str,
    now: i64,
) -> Result<Begin, StoreError> {
    if insert_hold(tx, order_id, resource, subject, "reserved", now).await? {
        return Ok(Begin::Fresh);
    }
    let hold = load(tx, order_id, resource)
        .await?
        .ok_or_else(|| vanished(order_id))?;
    Ok(Begin::Existing(hold))
}

/// Completes a fresh reservation: records the amount held and the `reserve` ledger row.
pub async fn finish_reserve(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
    amount: i64,
    now: i64,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE holds SET amount = $3 WHERE order_id = $1 AND resource = $2 AND state = 'reserved'",
    )
    .bind(order_id)
    .bind(resource.as_str())
    .bind(amount)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(vanished(order_id));
    }
    let hold = load(tx, order_id, resource)
        .await?
        .ok_or_else(|| vanished(order_id))?;
    append_ledger(tx, order_id, resource, "reserve", &hold, now).await?;
    // Every reservation commits right after this.
    crate::faults::point("reserve.before_commit", order_id, Some(resource.as_str()));
    Ok(())
}

/// Moves a hold to `released`. Returns the hold whose resource the caller must now give back,
/// or `None` when there is nothing to give back: already released, or never reserved (then a
/// `released` tombstone is written, so a reservation still in flight cannot take it later).
/// A captured hold is an error: an order is never both paid and released.
pub async fn begin_release(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
    now: i64,
) -> Result<Option<Hold>, StoreError> {
    if insert_hold(tx, order_id, resource, "", "released", now).await? {
        let nothing = Hold {
            subject: String::new(),
            amount: 0,
            state: "released".into(),
        };
        append_ledger(tx, order_id, resource, "release", &nothing, now).await?;
        return Ok(None);
    }
    transition(
        tx, order_id, resource, "reserved", "released", "release", now,
    )
    .await
}

/// Moves a hold to `captured`. Returns the hold the caller must now capture, or `None` if it
/// already was. Capturing a released or never-reserved hold is an error.
pub async fn begin_capture(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
    now: i64,
) -> Result<Option<Hold>, StoreError> {
    transition(
        tx, order_id, resource, "reserved", "captured", "capture", now,
    )
    .await
}

/// Moves a captured hold to `returned`. Returns the hold whose resource the caller must now give
/// back, or `None` if it already was, or if nothing was ever held (no hold row at all: the
/// order never used this resource). Returning a reserved or released hold is an error.
pub async fn begin_return(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
    now: i64,
) -> Result<Option<Hold>, StoreError> {
    if load(tx, order_id, resource).await?.is_none() {
        return Ok(None);
    }
    transition(
        tx, order_id, resource, "captured", "returned", "return", now,
    )
    .await
}

/// How a settled hold moves (the workflow's own `Move`, one type on both sides).
pub use orderflow_workflows::model::Move;

/// Starts `how` on the hold (see `begin_release`, `begin_capture`, `begin_return`).
pub async fn begin(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
    how: Move,
    now: i64,
) -> Result<Option<Hold>, StoreError> {
    match how {
        Move::Release => begin_release(tx, order_id, resource, now).await,
        Move::Capture => begin_capture(tx, order_id, resource, now).await,
        Move::Return => begin_return(tx, order_id, resource, now).await,
    }
}

async fn transition(
    tx: &mut Tx<'_>,
    order_id: &str,
    resource: Resource,
    from: &str,
    to: &str,
    action: &str,
    now: i64,
) -> Result<Option<Hold>, StoreError> {
    let moved = sqlx::query("UPDATE holds SET state = $3, updated_at = $4 WHERE order_id = $1 AND resource = $2 AND state = $5")
        .bind(order_id)
        .bind(resource.as_str())
        .bind(to)
        .bind(now)
        .bind(from)
        .execute(&mut **tx)
        .await?;
    let hold = load(tx, order_id, resource).await?;
    match (moved.rows_affected(), hold) {
        (1, Some(hold)) => {
            append_ledger(tx, order_id, resource, action, &hold, now).await?;
            Ok(Some(hold))
        }
        (_, Some(hold)) if hold.state == to => Ok(None),
        (_, Some(hold)) => Err(StoreError::conflict(
            order_id,
            match hold.state.as_str() {
                "captured" => "already_captured",
                "reserved" => "not_captured",
                "returned" => "already_returned",
                _ => "already_released",
            },
            format!(
                "cannot {action} {}: it is {}",
                resource.as_str(),
                hold.state
            ),
        )),
        (_, None) => Err(StoreError::conflict(
            order_id,
            "nothing_reserved",
            format!(
                "cannot {action} {}: the order never reserved it",
                resource.as_str()
            ),
        )),
    }
}

/// Checks that a conditional `UPDATE` on a resource row matched exactly one row.
pub fn expect_one(
    rows: u64,
    order_id: &str,
    code: &'static str,
    what: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::conflict(order_id, code, what()))
    }
}
