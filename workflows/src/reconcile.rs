//! `ReconcileWorkflow` (`reconcile`): run every minute by a Temporal Schedule, it looks for
//! orders whose database row and workflow disagree, repairs what is safe to repair, reports the
//! rest, and deletes webhook-inbox rows past their retention. Its result and its log rows say
//! what it did; each run is visible in the Temporal UI under the schedule.
//!
//! Repairs never guess. An order `pending_payment` or `paid` whose workflow is gone
//! (terminated, failed) is resumed: its workflow is started again from the database, so a
//! pending order waits again and is paid by a payment already reported for it (or cancelled at
//! its deadline), and a paid order is fulfilled. Holds still reserved for an order that is
//! cancelled, rejected or was never recorded are released, with the same idempotent activities
//! the order workflow uses. A running workflow far past its deadline is reported. Each repair
//! is an order event with reason `reconciled` and a `reconcile_log` row.
//!
//! It also hands on again every webhook-inbox event still unprocessed a short while after it
//! arrived (default 60 s): provider redelivery is not the only path.
//!
//! Deterministic code only.

use crate::contract::OrderActivities;
use crate::model::{
    Move, OrderRef, PurgeInbox, ReconcileEntry, ReconcileInput, ReconcileReport, RedriveInbox,
};
use crate::order::settle;
use crate::policy::{now_ms, settle_options, sweep_options};

/// Inbox events unprocessed this long are re-driven, unless configured.
pub const DEFAULT_REDRIVE_AFTER_SECS: u64 = 60;
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
            let order = || OrderRef {
                order_id: order_id.clone(),
            };
            if suspect.action == "resume" {
                ctx.execute_activity(OrderActivities::resume_order, order(), settle_options())
                    .await?;
                report.repaired.push(order_id.clone());
            } else if suspect.action == "release" {
                // What a closed or never-recorded order still holds.
                settle(ctx, &order_id, &suspect.resources, Move::Release).await?;
                report.repaired.push(order_id.clone());
            } else {
                report.reported.push(order_id.clone());
            }
            let entry = ReconcileEntry {
                run_id: run_id.clone(),
                order_id,
                action: if suspect.action == "report" {
                    "reported".into()
                } else {
                    "repaired".into()
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
        let after = input
            .redrive_after_secs
            .unwrap_or(DEFAULT_REDRIVE_AFTER_SECS);
        let now = now_ms(ctx)?;
        report.inbox_redriven = ctx
            .execute_activity(
                OrderActivities::redrive_inbox,
                RedriveInbox {
                    before_ms: now.saturating_sub(crate::decide::secs_to_ms(after)),
                },
                sweep_options(),
            )
            .await?;
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
