//! Reconciliation's side effects: finding orders whose database row and workflow disagree,
//! logging what was done, and deleting webhook-inbox rows past their retention.
//!
//! Finding asks two sources and merges them: Temporal's visibility (closed order workflows on
//! this task queue whose last `OrderStatus` was not final: terminated or failed mid-way) and the
//! database (pending orders far past their deadline, whose workflow is then described). It
//! never changes an order itself; the workflow decides and uses the ordinary activities.

use crate::Db;
use crate::error::StoreError;
use futures::StreamExt;
use orderflow_workflows::model::{ReconcileEntry, ReconcileInput, Suspect};
use orderflow_workflows::{OrderWorkflow, workflow_id};
use sqlx::Row;
use std::collections::BTreeMap;
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowListOptions,
};

/// At most this many candidates per source per run; the next run takes the rest.
const BATCH: usize = 500;

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
            "repair",
            "pending with no running workflow: cancelled and released",
        ),
        ("paid", "running") => return None,
        ("paid", _) => ("report", "paid but its workflow ended before fulfilment"),
        _ => return None,
    };
    Some(Suspect {
        order_id: order_id.to_owned(),
        status: status.to_owned(),
        workflow: workflow.to_owned(),
        action: action.to_owned(),
        detail: detail.to_owned(),
    })
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
    let unavailable = |e: &dyn std::fmt::Display| StoreError::Busy(format!("asking Temporal: {e}"));
    let stale_before = now_ms.saturating_sub(orderflow_workflows::decide::secs_to_ms(
        input.stale_after_secs,
    ));
    // Order id -> (db status, workflow status).
    let mut found: BTreeMap<String, (String, String, bool)> = BTreeMap::new();

    // 1. Closed order workflows whose last published status was not final.
    let query = format!(
        "WorkflowType = 'order' AND TaskQueue = '{task_queue}' AND ExecutionStatus != 'Running' \
         AND OrderStatus IN ('reserving', 'pending_payment', 'checkout_open', 'paid')"
    );
    let mut closed =
        client.list_workflows(query, WorkflowListOptions::builder().limit(BATCH).build());
    while let Some(item) = closed.next().await {
        let item = item.map_err(|e| unavailable(&e))?;
        let Some(order_id) = item.id().strip_prefix("order-").map(str::to_owned) else {
            continue;
        };
        if let Some((status, expires)) = db_status(db, &order_id).await? {
            let stale = expires.is_some_and(|e| e < stale_before);
            found.insert(
                order_id,
                (status, workflow_word(item.status()).to_owned(), stale),
            );
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
        let handle = client.get_workflow_handle::<OrderWorkflow>(workflow_id(&order_id));
        let workflow = match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(d) => workflow_word(d.status()).to_owned(),
            Err(temporalio_client::errors::WorkflowInteractionError::NotFound(_)) => {
                "not_found".into()
            }
            Err(e) => return Err(unavailable(&e)),
        };
        found.insert(order_id, ("pending_payment".into(), workflow, true));
    }

    Ok(found
        .iter()
        .filter_map(|(id, (status, workflow, stale))| judge(id, status, workflow, *stale))
        .collect())
}

/// Records one line of what a run did. A retried activity writes it once.
pub async fn record(db: &Db, e: &ReconcileEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO reconcile_log (run_id, order_id, action, detail, at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (run_id, order_id, action) DO NOTHING",
    )
    .bind(&e.run_id)
    .bind(&e.order_id)
    .bind(&e.action)
    .bind(&e.detail)
    .bind(e.at_ms)
    .execute(db)
    .await?;
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
    fn only_pending_orders_without_a_workflow_are_repaired() {
        assert_eq!(
            judge("o", "pending_payment", "terminated", false)
                .unwrap()
                .action,
            "repair"
        );
        assert_eq!(
            judge("o", "pending_payment", "not_found", true)
                .unwrap()
                .action,
            "repair"
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
            "report"
        );
        assert!(judge("o", "cancelled", "terminated", false).is_none());
        assert!(judge("o", "fulfilled", "completed", false).is_none());
    }
}
