//! `BaselineWorkflow` (`baseline-{n}`): the engine's ceiling for the benchmark (issue 12).
//!
//! Shaped like an order with nothing of an order in it: wait for one signal or a timer until a
//! deadline (epoch ms, so that a storm of them can share one instant), then run one activity
//! that does no work, then end. `orderflow-bench` drives it under the same load as
//! real orders, in the same worker, so that "orderflow ÷ bare workflow" measures what the order
//! logic costs the engine. It never touches the database or the provider, and no order ever
//! runs it. Deterministic code only.

use crate::contract::OrderActivities;
use crate::policy::{now_ms, settle_options};
use std::time::Duration;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult};

/// How the baseline run ended: `true` when the signal came first, `false` on the timer.
pub type BaselineOutcome = bool;

#[workflow]
pub struct BaselineWorkflow {
    /// When the timer ends the wait, in epoch ms.
    deadline_ms: i64,
    signalled: bool,
}

#[workflow_methods]
impl BaselineWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, deadline_ms: i64) -> Self {
        BaselineWorkflow {
            deadline_ms,
            signalled: false,
        }
    }

    /// The stand-in for a payment.
    #[signal(name = "baseline.signal")]
    pub fn signal(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.signalled = true;
    }

    #[run(name = "baseline")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<BaselineOutcome> {
        let deadline = ctx.state(|s| s.deadline_ms);
        let timeout = Duration::from_millis((deadline - now_ms(ctx)?).max(1) as u64);
        temporalio_sdk::workflows::select! {
            _ = ctx.timer(timeout) => {}
            _ = ctx.wait_condition(|s: &BaselineWorkflow| s.signalled) => {}
        }
        let signalled = ctx.state(|s| s.signalled);
        ctx.execute_activity(OrderActivities::baseline_step, signalled, settle_options())
            .await?;
        Ok(signalled)
    }
}
