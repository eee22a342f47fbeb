//! Reconciliation's side effects: finding orders whose database row and workflow disagree,
//! logging what was done, and deleting webhook-inbox rows past their retention.
//!
//! Finding asks two sources and merges them: Temporal's visibility (closed order workflows on
//! this task queue whose last `OrderStatus` was not final: terminated or failed mid-way) and the
//! database (pending orders far past their deadline, whose workflow is then described; holds
//! still reserved for orders that are closed or were never recorded). It never changes an
//! order itself: a pending or paid order whose workflow is gone is *resumed* (its workflow
//! started again from the database, see [`resume_order`]), never cancelled on a guess; holds
//! of closed or never-recorded orders are released by the ordinary activities.

use crate::Db;
use crate::error::{Service, StoreError};
use futures::StreamExt;
use orderflow_workflows::model::{
    OrderLine, PlaceOrder, ReconcileEntry, ReconcileInput, Resource, Suspect,
};
use orderflow_workflows::{OrderWorkflow, workflow_id};
use sqlx::Row;
use std::collections::BTreeMap;
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{
    Client, UntypedWorkflow, WorkflowDescribeOptions, WorkflowExecutionStatus,
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowListOptions, WorkflowStartOptions,
};

/// At most this many candidates per source per run; the next run takes the rest.
const BATCH: usize = 500;

/// Holds of an order that was never recorded are released once they are this old: a create
/// takes seconds, and its workflow is asked first.
const UNRECORDED_HOLD_AFTER_MS: i64 = 10 * 60 * 1000;

fn workflow_word(status: WorkflowExecutionStatus) -> &'static str {
    match status {
        WorkflowExecutionStatus::Running => "running",
        WorkflowExecutionStatus::Completed => "completed",
        WorkflowExecutionStatus::Failed => "failed",
        WorkflowExecutionStatus::Canceled => "canceled",
        WorkflowExecutionStatus::Terminated => "terminated",
        WorkflowExecutionStatus::ContinuedAsNew => "continued_as_new",
        WorkflowExecutionStatus::TimedOut => "timed_out",
        _ => "unknown",
    }
}

/// The suspect for an order in `status` whose workflow is `workflow`, if it is one.
fn judge(order_id: &str, status: &str, workflow: &str, stale: bool) -> Option<Suspect> {
    let (action, detail) = match (status, workflow) {
        ("pending_payment", "running") if stale => (
            "report",
            "pending long past its deadline with a running workflow",
        ),
        ("pending_payment", "running") => return None,
        ("pending_payment", _) => (
            "resume",
            "pending with no running workflow: resumed from the database (it waits again, and a payment already reported pays it)",
        ),
        ("paid", "running") => return None,
        ("paid", _) => (
            "resume",
            "paid but its workflow ended before fulfilment: resumed, fulfilment continues",
        ),
        _ => return None,
    };
    Some(Suspect {
        order_id: order_id.to_owned(),
        status: status.to_owned(),
        workflow: workflow.to_owned(),
        action: action.to_owned(),
        detail: detail.to_owned(),
        resources: Vec::new(),
    })
}

/// The status of a workflow's latest run (`running`, `terminated`, ...), or `not_found`.
pub(crate) async fn workflow_status(
    client: &Client,
    workflow_id: &str,
) -> Result<&'static str, StoreError> {
    let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id.to_owned());
    match handle.describe(WorkflowDescribeOptions::default()).await {
        Ok(d) => Ok(workflow_word(d.status())),
        Err(temporalio_client::errors::WorkflowInteractionError::NotFound(_)) => Ok("not_found"),
        Err(e) => Err(StoreError::unavailable(Service::Temporal, e)),
    }
}

/// The status of the order's latest workflow run, or `not_found`.
async fn current_status(client: &Client, order_id: &str) -> Result<String, StoreError> {
    Ok(workflow_status(client, &workflow_id(order_id))
        .await?
        .to_owned())
}

async fn db_status(db: &Db, order_id: &str) -> Result<Option<(String, Option<i64>)>, StoreError> {
    Ok(
        sqlx::query("SELECT status, expires_at FROM orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(db)
            .await?
            .map(|r| (r.get(0), r.get(1))),
    )
}

/// Finds the suspects of this task queue's orders.
pub async fn find_suspects(
    db: &Db,
    client: &Client,
    task_queue: &str,
    input: &ReconcileInput,
    now_ms: i64,
) -> Result<Vec<Suspect>, StoreError> {
    let unavailable = |e: &dyn std::fmt::Display| StoreError::unavailable(Service::Temporal, e);
    let stale_before = now_ms.saturating_sub(orderflow_workflows::decide::secs_to_ms(
        input.stale_after_secs,
    ));
    // Order id -> (db status, workflow status).
    let mut found: BTreeMap<String, (String, String, bool)> = BTreeMap::new();

    // 1. Closed order workflows whose last published status was not final.
    let query = format!(
        "WorkflowType = 'order' AND TaskQueue = '{task_queue}' AND ExecutionStatus != 'Running' \
         AND OrderStatus IN ('reserving', 'pending_payment', 'checkout_open', 'paid', 'needs_attention')"
    );
    let mut closed =
        client.list_workflows(query, WorkflowListOptions::builder().limit(BATCH).build());
    while let Some(item) = closed.next().await {
        let item = item.map_err(|e| unavailable(&e))?;
        let Some(order_id) = item.id().strip_prefix("order-").map(str::to_owned) else {
            continue;
        };
        if found.contains_key(&order_id) {
            continue;
        }
        if let Some((status, expires)) = db_status(db, &order_id).await? {
            // Visibility lists every run: the one that counts is the latest (a resumed order
            // has a running one after its terminated one).
            let latest = current_status(client, &order_id).await?;
            let workflow = match latest.as_str() {
                "not_found" => workflow_word(item.status()).to_owned(),
                other => other.to_owned(),
            };
            let stale = expires.is_some_and(|e| e < stale_before);
            found.insert(order_id, (status, workflow, stale));
        }
    }

    // 2. Pending orders far past their deadline: what does their workflow say?
    let rows = sqlx::query(
        "SELECT order_id FROM orders WHERE status = 'pending_payment' AND expires_at < $1
         ORDER BY expires_at LIMIT $2",
    )
    .bind(stale_before)
    .bind(BATCH as i64)
    .fetch_all(db)
    .await?;
    for row in rows {
        let order_id: String = row.get(0);
        if found.contains_key(&order_id) {
            continue;
        }
        let workflow = current_status(client, &order_id).await?;
        found.insert(order_id, ("pending_payment".into(), workflow, true));
    }

    let mut suspects: Vec<Suspect> = found
        .iter()
        .filter_map(|(id, (status, workflow, stale))| judge(id, status, workflow, *stale))
        .collect();

    // 3. Holds still reserved for an order that is closed, or that was never recorded (its
    //    workflow was terminated before `record_order`) and whose workflow is not running.
    let rows = sqlx::query(
        "SELECT h.order_id, h.resource, o.status FROM holds h LEFT JOIN orders o ON o.order_id = h.order_id
         WHERE h.state = 'reserved' AND (o.status IN ('cancelled', 'rejected')
             OR (o.order_id IS NULL AND h.created_at < $1))
         ORDER BY h.order_id, h.resource LIMIT $2",
    )
    .bind(now_ms.saturating_sub(UNRECORDED_HOLD_AFTER_MS))
    .bind(BATCH as i64)
    .fetch_all(db)
    .await?;
    let mut orphans: BTreeMap<String, (Option<String>, Vec<Resource>)> = BTreeMap::new();
    for row in rows {
        let name: String = row.get(1);
        let resource = Resource::parse(&name).ok_or_else(|| {
            StoreError::conflict(
                &row.get::<String, _>(0),
                "ledger_mismatch",
                format!("unknown resource {name:?}"),
            )
        })?;
        let entry = orphans
            .entry(row.get(0))
            .or_insert((row.get(2), Vec::new()));
        entry.1.push(resource);
    }
    for (order_id, (status, resources)) in orphans {
        let workflow = current_status(client, &order_id).await?;
        if workflow == "running" {
            continue;
        }
        let status = status.unwrap_or_else(|| "not_recorded".into());
        suspects.push(Suspect {
            detail: format!(
                "{} still reserved by a {status} order: released",
                resources
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            order_id,
            status,
            workflow,
            action: "release".into(),
            resources,
        });
    }
    Ok(suspects)
}

/// Starts the order's workflow again from the database (reconciliation's repair of an order
/// whose workflow is gone): the previous run must have failed, been terminated or timed out; a
/// running one is left as it is.
pub async fn resume_order(
    db: &Db,
    client: &Client,
    task_queue: &str,
    order_id: &str,
    settings: crate::contract_impl::OrderSettings,
) -> Result<(), StoreError> {
    let order = orderflow_store::get_order(db, order_id).await?;
    let input = PlaceOrder {
        order_id: order.order_id.clone(),
        user_id: order.user_id.clone(),
        items: order
            .items
            .iter()
            .map(|i| OrderLine {
                sku: i.sku.clone(),
                quantity: i.quantity,
            })
            .collect(),
        coupon_id: order.coupon_id.clone(),
        points: order.points_amount,
        wallet_amount: order.wallet_amount,
        payment_timeout_secs: 0,
        currency: order.currency.clone(),
        request_hash: order.request_hash.clone(),
        idempotency_key: String::new(),
        // The deployment's settings, as the API gives them to a new order (without them the
        // resumed run fell back to the defaults: a configured grace of 2 s became an hour).
        checkout_window_secs: Some(settings.checkout_window_secs),
        late_payment_grace_secs: Some(settings.late_payment_grace_secs),
        payment_method: order.payment_method,
        max_open_orders: None,
        resume: true,
        capture: Some(settings.capture),
    };
    let options = WorkflowStartOptions::new(task_queue.to_owned(), workflow_id(order_id))
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .build();
    match client
        .start_workflow(OrderWorkflow::run, input, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
        Err(e) => Err(StoreError::unavailable(Service::Temporal, e)),
    }
}

/// Records one line of what a run did, and (for a repair) an order event with reason
/// `reconciled`. A retried activity writes each once.
pub async fn record(db: &Db, e: &ReconcileEntry) -> Result<(), StoreError> {
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO reconcile_log (run_id, order_id, action, detail, at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (run_id, order_id, action) DO NOTHING",
    )
    .bind(&e.run_id)
    .bind(&e.order_id)
    .bind(&e.action)
    .bind(&e.detail)
    .bind(e.at_ms)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 && e.action == "repaired" {
        let step = format!("reconciled:{}", e.run_id);
        crate::orders::append_event_if_order(
            &mut tx,
            &e.order_id,
            step,
            Some("reconciled"),
            None,
            e.at_ms,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes processed inbox rows older than `before_ms`. Rows never processed are kept: their
/// event still has to be handled when the provider redelivers it.
pub async fn purge_inbox(db: &Db, before_ms: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM webhook_inbox WHERE processed_at IS NOT NULL AND processed_at < $1",
    )
    .bind(before_ms)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// The log of an order's reconciliations: `(action, detail)`.
pub async fn log_for(db: &Db, order_id: &str) -> Result<Vec<(String, String)>, StoreError> {
    Ok(
        sqlx::query("SELECT action, detail FROM reconcile_log WHERE order_id = $1 ORDER BY at")
            .bind(order_id)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::judge;

    #[test]
    fn pending_and_paid_orders_without_a_workflow_are_resumed_never_cancelled() {
        assert_eq!(
            judge("o", "pending_payment", "terminated", false)
                .unwrap()
                .action,
            "resume"
        );
        assert_eq!(
            judge("o", "pending_payment", "not_found", true)
                .unwrap()
                .action,
            "resume"
        );
        assert!(judge("o", "pending_payment", "running", false).is_none());
        assert_eq!(
            judge("o", "pending_payment", "running", true)
                .unwrap()
                .action,
            "report"
        );
        assert_eq!(
            judge("o", "paid", "terminated", false).unwrap().action,
            "resume"
        );
        assert!(judge("o", "cancelled", "terminated", false).is_none());
        assert!(judge("o", "fulfilled", "completed", false).is_none());
    }
}
