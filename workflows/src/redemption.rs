//! `RedemptionWorkflow` (`redeem-{hash of user and code}`): one user redeeming one code.
//!
//! The workflow id replaces the Redis lock shops use here: concurrent requests of one user for
//! one code meet the same workflow and get the same answer. The one activity is a single
//! transaction, idempotent on `(code, user)`, so a new run after the first finished answers
//! the first grant again. Deterministic code only.

use crate::contract::OrderActivities;
use crate::model::{RedeemCode, RedemptionOutcome};
use crate::policy::settle_options;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowContextView, WorkflowResult};

#[workflow]
pub struct RedemptionWorkflow {
    request: RedeemCode,
}

#[workflow_methods]
impl RedemptionWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, request: RedeemCode) -> Self {
        RedemptionWorkflow { request }
    }

    #[run(name = "redemption")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<RedemptionOutcome> {
        let request = ctx.state(|s| s.request.clone());
        let outcome = ctx
            .execute_activity(OrderActivities::redeem, request, settle_options())
            .await?;
        Ok(outcome)
    }
}
