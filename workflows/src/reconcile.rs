//! `ReconcileWorkflow` (`reconcile`): run every minute by a Temporal Schedule, it looks for
//! orders whose database row and workflow disagree, repairs what is safe to repair, reports the
//! rest, and deletes webhook-inbox rows past their retention. Its result and its log rows say
//! what it did; each run is visible in the Temporal UI under the schedule.
//!
//! Repair, for an order still `pending_payment` whose workflow is gone (terminated, failed):
//! mark it cancelled (reason `reconciled`) and release every reservation, with the same
//! idempotent activities the order workflow uses. A payment for it that arrives later is then
//! refunded like any late payment. Everything else (a paid order whose workflow is gone, a
//! running workflow far past its deadline) is reported, never guessed at.
//!
//! Deterministic code only.

use crate::contract::OrderActivities;
use crate::model::{
    CancelReason, MarkCancelled, OrderRef, PurgeInbox, ReconcileEntry, ReconcileInput,
    ReconcileReport,
};
use crate::policy::{now_ms, settle_options};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowContextView, WorkflowResult};

#[workflow]
pub struct ReconcileWorkflow {
    input: ReconcileInput,
}

#[workflow_methods]
impl ReconcileWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: ReconcileInput) -> Self {
        ReconcileWorkflow { input }
    }

    #[run(name = "reconcile")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<ReconcileReport> {
        let input = ctx.state(|s| s.input.clone());
        let run_id = ctx.info().run_id().to_owned();
        let mut report = ReconcileReport::default();
        let suspects = ctx
            .execute_activity(
                OrderActivities::find_suspects,
                input.clone(),
                settle_options(),
            )
            .await?;
        for suspect in suspects {
            let order_id = suspect.order_id.clone();
            if suspect.action == "repair" {
                let at_ms = now_ms(ctx)?;
                ctx.execute_activity(
                    OrderActivities::mark_cancelled,
                    MarkCancelled {
                        order_id: order_id.clone(),
                        reason: CancelReason::Reconciled,
                        at_ms,
                    },
                    settle_options(),
                )
                .await?;
                let order = || OrderRef {
                    order_id: order_id.clone(),
                };
                ctx.execute_activity(OrderActivities::release_wallet, order(), settle_options())
                    .await?;
                ctx.execute_activity(OrderActivities::release_points, order(), settle_options())
                    .await?;
                ctx.execute_activity(OrderActivities::release_coupon, order(), settle_options())
                    .await?;
                ctx.execute_activity(OrderActivities::release_stock, order(), settle_options())
                    .await?;
                report.repaired.push(order_id.clone());
            } else {
                report.reported.push(order_id.clone());
            }
            let entry = ReconcileEntry {
                run_id: run_id.clone(),
                order_id,
                action: if suspect.action == "repair" {
                    "repaired".into()
                } else {
                    "reported".into()
                },
                detail: format!(
                    "{} (order {}, workflow {})",
                    suspect.detail, suspect.status, suspect.workflow
                ),
                at_ms: now_ms(ctx)?,
            };
            ctx.execute_activity(
                OrderActivities::record_reconciliation,
                entry,
                settle_options(),
            )
            .await?;
        }
        let now = now_ms(ctx)?;
        let retention_ms = crate::decide::secs_to_ms(input.inbox_retention_secs);
        report.inbox_purged = ctx
            .execute_activity(
                OrderActivities::purge_inbox,
                PurgeInbox {
                    before_ms: now.saturating_sub(retention_ms),
                },
                settle_options(),
            )
            .await?;
        Ok(report)
    }
}
