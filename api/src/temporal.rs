//! Every call the API makes to the Temporal server, in one place.
//!
//! The API starts and updates order workflows; it never runs workflow code. (Payments are
//! signalled by `orderflow_activities::handoff`, which the inbox re-drive shares.) Errors
//! are sorted here into what the handler needs to know: the workflow answered, refused, or is
//! already closed (then the database row is the truth), or Temporal is unavailable (503).

use crate::ApiConfig;
use crate::error::ApiError;
use orderflow_workflows::model::{
    CancelOutcome, CancelRequest, CheckoutRequest, CheckoutSession, OrderStatus, PlaceOrder,
    Placement, RedeemCode, RedemptionOutcome, RefundPayment, ShipRequest,
};
use orderflow_workflows::{
    OrderWorkflow, RedemptionWorkflow, RefundWorkflow, redemption_workflow_id,
    refund_retry_workflow_id, workflow_id,
};
use temporalio_client::errors::{
    WorkflowStartError, WorkflowUpdateError, WorkflowUpdateWithStartError,
};
use temporalio_client::{
    Client, WorkflowExecuteUpdateOptions, WorkflowGetResultOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowSignalOptions, WorkflowStartOptions,
    WorkflowUpdateWithStartOptions,
};
use temporalio_common::{HasWorkflowDefinition, UpdateDefinition};

/// What asking a workflow produced.
#[derive(Debug)]
pub enum Answer<T> {
    /// The workflow answered.
    Answered(T),
    /// The workflow refused (an update validator), with its message.
    Refused(String),
    /// The workflow is closed (or never existed): read the database instead.
    Closed,
}

fn unavailable(order_id: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(
        "temporal_unavailable",
        "the workflow engine is unavailable; retry with the same request",
        e,
    )
    .for_order(order_id)
}

fn update_answer<T>(
    order_id: &str,
    result: Result<T, WorkflowUpdateError>,
) -> Result<Answer<T>, ApiError> {
    match result {
        Ok(v) => Ok(Answer::Answered(v)),
        Err(WorkflowUpdateError::NotFound(_)) => Ok(Answer::Closed),
        Err(WorkflowUpdateError::Failed(failure)) => Ok(Answer::Refused(failure.message.clone())),
        Err(e) => Err(unavailable(order_id, e)),
    }
}

/// Starts the order workflow if it does not exist (the id comes from the idempotency key), and
/// waits for the reservation outcome. A closed workflow of the same id is never started again.
#[tracing::instrument(skip_all, fields(order_id = %input.order_id, workflow_id = %workflow_id(&input.order_id)))]
pub async fn place_order(
    client: &Client,
    config: &ApiConfig,
    input: PlaceOrder,
) -> Result<Answer<Placement>, ApiError> {
    let order_id = input.order_id.clone();
    let options = WorkflowUpdateWithStartOptions::new(
        config.task_queue.clone(),
        workflow_id(&order_id),
        WorkflowIdConflictPolicy::UseExisting,
    )
    .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
    .update_id(format!("placed-{}", input.request_hash))
    .build();
    let call = client.execute_update_with_start_workflow(
        OrderWorkflow::run,
        input,
        OrderWorkflow::placed,
        (),
        options,
    );
    let result = tokio::time::timeout(config.workflow_wait, call)
        .await
        .map_err(|_| waiting(&order_id))?;
    match result {
        Ok(placement) => Ok(Answer::Answered(placement)),
        Err(WorkflowUpdateWithStartError::Start(WorkflowStartError::AlreadyStarted { .. })) => {
            Ok(Answer::Closed)
        }
        Err(WorkflowUpdateWithStartError::Update(e)) => update_answer(&order_id, Err(e)),
        Err(e) => Err(unavailable(&order_id, e)),
    }
}

fn waiting(order_id: &str) -> ApiError {
    ApiError::unavailable(
        "order_in_progress",
        "the order is still being processed; retry the same request to get its outcome",
        "timed out waiting for the workflow",
    )
    .for_order(order_id)
}

type OrderRun = <OrderWorkflow as HasWorkflowDefinition>::Run;

/// Runs one update on an order's workflow, waiting at most `workflow_wait` for its answer.
async fn update_order<U>(
    client: &Client,
    config: &ApiConfig,
    order_id: &str,
    update: U,
    input: U::Input,
) -> Result<Answer<U::Output>, ApiError>
where
    U: UpdateDefinition<Workflow = OrderRun>,
    U::Input: Send,
    U::Output: 'static,
{
    let handle = client.get_workflow_handle::<OrderWorkflow>(workflow_id(order_id));
    let call = handle.execute_update(update, input, WorkflowExecuteUpdateOptions::default());
    let result = tokio::time::timeout(config.workflow_wait, call)
        .await
        .map_err(|_| waiting(order_id))?;
    update_answer(order_id, result)
}

/// Asks a pending order to cancel, and waits until it is settled.
#[tracing::instrument(skip_all, fields(order_id = %order_id, workflow_id = %workflow_id(order_id)))]
pub async fn cancel_order(
    client: &Client,
    config: &ApiConfig,
    order_id: &str,
    request: CancelRequest,
) -> Result<Answer<CancelOutcome>, ApiError> {
    update_order(client, config, order_id, OrderWorkflow::cancel, request).await
}

/// Asks a paid order to ship.
#[tracing::instrument(skip_all, fields(order_id = %order_id, workflow_id = %workflow_id(order_id)))]
pub async fn ship_order(
    client: &Client,
    config: &ApiConfig,
    order_id: &str,
) -> Result<Answer<OrderStatus>, ApiError> {
    update_order(
        client,
        config,
        order_id,
        OrderWorkflow::ship,
        ShipRequest::default(),
    )
    .await
}

/// Signals an order stopped in `needs_attention` to try again; `false` if its workflow is
/// closed or missing.
#[tracing::instrument(skip_all, fields(order_id = %order_id, workflow_id = %workflow_id(order_id)))]
pub async fn retry_order(client: &Client, order_id: &str) -> Result<bool, ApiError> {
    let options = WorkflowSignalOptions::default();
    orderflow_activities::handoff::signal_order_workflow(
        client,
        order_id,
        OrderWorkflow::retry,
        (),
        options,
    )
    .await
    .map_err(|e| unavailable(order_id, e))
}

/// Redeems a code for a user through the pair's workflow. Concurrent calls for one pair meet
/// the running workflow (UseExisting); a call after it finished starts a new run, whose
/// activity answers the first grant again.
pub async fn redeem(
    client: &Client,
    config: &ApiConfig,
    request: RedeemCode,
) -> Result<RedemptionOutcome, ApiError> {
    let id = redemption_workflow_id(&request.user_id, &request.code);
    let options = WorkflowStartOptions::new(config.task_queue.clone(), id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .build();
    let fail = |e: &dyn std::fmt::Display| {
        ApiError::unavailable(
            "temporal_unavailable",
            "the workflow engine is unavailable; retry the redemption",
            e.to_string(),
        )
    };
    let handle = client
        .start_workflow(RedemptionWorkflow::run, request, options)
        .await
        .map_err(|e| fail(&e))?;
    let result = tokio::time::timeout(
        config.workflow_wait,
        handle.get_result(WorkflowGetResultOptions::default()),
    )
    .await
    .map_err(|_| fail(&"timed out waiting for the redemption"))?;
    result.map_err(|e| fail(&e))
}

/// Asks a pending order for a checkout session.
#[tracing::instrument(skip_all, fields(order_id = %order_id, workflow_id = %workflow_id(order_id)))]
pub async fn checkout(
    client: &Client,
    config: &ApiConfig,
    order_id: &str,
) -> Result<Answer<CheckoutSession>, ApiError> {
    update_order(
        client,
        config,
        order_id,
        OrderWorkflow::checkout,
        CheckoutRequest::default(),
    )
    .await
}

/// Starts attempt `attempt` of a refund that ops asked to retry, as its own workflow
/// (`refund-{payment_id}-attempt-{n}`); the refund row, already `pending` with the attempt's
/// key, is what it runs.
#[tracing::instrument(skip_all, fields(order_id = %request.order_id, payment_id = %request.payment.payment_id))]
pub async fn start_refund_retry(
    client: &Client,
    config: &ApiConfig,
    request: RefundPayment,
    attempt: i64,
) -> Result<String, ApiError> {
    let order_id = request.order_id.clone();
    let id = refund_retry_workflow_id(&request.payment.payment_id, attempt);
    let options = WorkflowStartOptions::new(config.task_queue.clone(), id.clone())
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .build();
    match client
        .start_workflow(RefundWorkflow::run, request, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(id),
        Err(e) => Err(unavailable(&order_id, e)),
    }
}
