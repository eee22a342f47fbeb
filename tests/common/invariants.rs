//! What every scenario ends with: the conservation invariants of `docs/architecture.md`
//! against the database, and the two-way money audit against the provider sandbox's own
//! ledger. Never weakened to get green: an unclean audit prints the whole report.

use super::*;
use orderflow_workflows::{OrderWorkflow, workflow_id};
use std::time::Duration;
use temporalio_client::WorkflowGetResultOptions;

impl TestApp {
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
        .unwrap_or_else(|_| panic!("order {order_id}: its workflow did not finish within 60 s"));
        result.unwrap_or_else(|e| panic!("order {order_id}: workflow failed: {e}"));
    }

    /// The conservation invariants of `docs/architecture.md` (section 3) against the database, and the
    /// two-way money audit against the provider sandbox's own ledger (read through its listing
    /// API, as `orderflow audit` reads a real provider): every payment it captured is applied
    /// to exactly one order or refunded once, every refund it holds is one we meant, within its
    /// payment. Money still in flight is waited for (60 s), then reported.
    pub async fn assert_invariants(&self) {
        let report = self.audit_settled(60).await;
        assert!(
            report.is_clean() && report.in_progress.is_empty(),
            "the audit is not clean:\n{}",
            report.render()
        );
    }

    /// The two-way audit, once nothing is in flight any more (or after `secs`).
    pub async fn audit_settled(&self, secs: u64) -> orderflow_activities::audit::MoneyReport {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let report = self.audit().await;
            let settled = report.in_progress.is_empty() && report.is_clean();
            if settled || std::time::Instant::now() >= deadline {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The two-way audit now, as ops run it.
    pub async fn audit(&self) -> orderflow_activities::audit::MoneyReport {
        let provider =
            orderflow_provider::PaymentProvider::new(&self.provider).expect("a provider client");
        orderflow_activities::audit::run(
            &self.db,
            &provider,
            &self.client,
            orderflow_store::now_ms(),
        )
        .await
        .expect("the audit reads the provider, the database and Temporal")
    }

    /// Waits until the refund of `payment_id` has its outcome (whichever run performs it: the
    /// order's `refund-{payment_id}` child or the payment's decision), and returns it from the
    /// refund row, which is the truth.
    pub async fn refunded(&self, payment_id: &str) -> orderflow_workflows::model::RefundOutcome {
        self.eventually(60, &format!("the refund of {payment_id}"), || async {
            let (status, refund_id, failure): (String, Option<String>, Option<String>) =
                sqlx::query_as(
                    "SELECT status, provider_refund_id, failure FROM refunds WHERE payment_id = $1",
                )
                .bind(payment_id)
                .fetch_optional(&self.db)
                .await
                .unwrap()?;
            orderflow_activities::payments::refund_outcome(&status, refund_id, failure)
        })
        .await
    }
}
