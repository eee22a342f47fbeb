//! Every call the API makes to the Temporal server, in one place.
//!
//! The API starts and updates order workflows; it never runs workflow code. (Payments are
//! signalled by `orderflow_activities::handoff`, which the inbox re-drive shares.) Errors
//! are sorted here into what the handler needs to know: the workflow answered, refused, or is
//! already closed (then the database row is the truth), or Temporal is unavailable (503).

use crate::ApiConfig;
use crate::engine::{Answer, Engine};
use crate::error::{ApiError, ErrorCode};
use orderflow_activities::audit::MoneyReport;
use orderflow_activities::handoff::{self, HandOff};
use orderflow_activities::payments::InboxEvent;
use orderflow_provider::PaymentProvider;
use orderflow_store::{Db, StoreError};
use orderflow_workflows::model::{
    CancelOutcome, CancelRequest, CheckoutRequest, CheckoutSession, OrderRefundRef, OrderStatus,
    PlaceOrder, Placement, RedeemCode, RedemptionOutcome, RefundPayment, ShipRequest,
};
use orderflow_workflows::refusal::Refused;
use orderflow_workflows::{
    OrderRefundWorkflow, OrderWorkflow, RedemptionWorkflow, RefundWorkflow,
    order_refund_workflow_id, redemption_workflow_id, refund_retry_workflow_id, workflow_id,
};
use std::sync::Arc;
use temporalio_client::errors::{
    WorkflowStartError, WorkflowUpdateError, WorkflowUpdateWithStartError,
};
use temporalio_client::{
    Client, WorkflowExecuteUpdateOptions, WorkflowGetResultOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowSignalOptions, WorkflowStartOptions,
    WorkflowUpdateWithStartOptions,
};
use temporalio_common::{HasWorkflowDefinition, UpdateDefinition};

/// The Temporal server, as the API's [`Engine`].
#[derive(Clone)]
pub struct TemporalEngine {
    pub client: Client,
    pub config: Arc<ApiConfig>,
}

fn unavailable(order_id: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(
        ErrorCode::TemporalUnavailable,
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
        Err(WorkflowUpdateError::Failed(failure)) => match Refused::from_failure(&failure) {
            Some(refused) => Ok(Answer::Refused(refused)),
            // Not a refusal: the workflow ended before the update finished (the server says
            // so as a failure). The database row is the truth, as for a closed workflow.
            None => {
                tracing::warn!(order_id, message = %failure.message, "update failed without a refusal");
                Ok(Answer::Closed)
            }
        },
        Err(e) => Err(unavailable(order_id, e)),
    }
}
fn waiting(order_id: &str) -> ApiError {
    ApiError::unavailable(
        ErrorCode::OrderInProgress,
        "the order is still being processed; retry the same request to get its outcome",
        "timed out waiting for the workflow",
    )
    .for_order(order_id)
}

type OrderRun = <OrderWorkflow as HasWorkflowDefinition>::Run;

impl TemporalEngine {
    /// Starts `workflow` as `id`, once ever: an id that exists (running or finished) is met,
    /// not started again. Answers the id.
    async fn start_once<W>(
        &self,
        workflow: W,
        input: W::Input,
        id: String,
        order_id: &str,
    ) -> Result<String, ApiError>
    where
        W: HasWorkflowDefinition,
        W::Input: Send,
    {
        let options = WorkflowStartOptions::new(self.config.task_queue.clone(), id.clone())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .build();
        match self.client.start_workflow(workflow, input, options).await {
            Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(id),
            Err(e) => Err(unavailable(order_id, e)),
        }
    }

    /// Runs one update on an order's workflow, waiting at most `workflow_wait` for its answer.
    async fn update_order<U>(
        &self,
        order_id: &str,
        update: U,
        input: U::Input,
    ) -> Result<Answer<U::Output>, ApiError>
    where
        U: UpdateDefinition<Workflow = OrderRun>,
        U::Input: Send,
        U::Output: 'static,
    {
        let handle = self
            .client
            .get_workflow_handle::<OrderWorkflow>(workflow_id(order_id));
        let call = handle.execute_update(update, input, WorkflowExecuteUpdateOptions::default());
        let result = tokio::time::timeout(self.config.workflow_wait, call)
            .await
            .map_err(|_| waiting(order_id))?;
        update_answer(order_id, result)
    }
}

#[async_trait::async_trait]
impl Engine for TemporalEngine {
    /// Starts the order workflow if it does not exist (the id comes from the idempotency key), and
    /// waits for the reservation outcome. A closed workflow of the same id is never started again.
    #[tracing::instrument(skip_all, fields(order_id = %input.order_id, workflow_id = %workflow_id(&input.order_id)))]
    async fn place_order(&self, input: PlaceOrder) -> Result<Answer<Placement>, ApiError> {
        let order_id = input.order_id.clone();
        let options = WorkflowUpdateWithStartOptions::new(
            self.config.task_queue.clone(),
            workflow_id(&order_id),
            WorkflowIdConflictPolicy::UseExisting,
        )
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .update_id(format!("placed-{}", input.request_hash))
        .build();
        let call = self.client.execute_update_with_start_workflow(
            OrderWorkflow::run,
            input,
            OrderWorkflow::placed,
            (),
            options,
        );
        let result = tokio::time::timeout(self.config.workflow_wait, call)
            .await
            .map_err(|_| waiting(&order_id))?;
        match result {
            Ok(placement) => Ok(Answer::Answered(placement)),
            Err(WorkflowUpdateWithStartError::Start(WorkflowStartError::AlreadyStarted {
                ..
            })) => Ok(Answer::Closed),
            Err(WorkflowUpdateWithStartError::Update(e)) => update_answer(&order_id, Err(e)),
            Err(e) => Err(unavailable(&order_id, e)),
        }
    }

    /// Asks a pending order to cancel, and waits until it is settled.
    #[tracing::instrument(skip_all, fields(order_id = %order_id, workflow_id = %workflow_id(order_id)))]
    async fn cancel_order(
        &self,
        order_id: &str,
        request: CancelRequest,
    ) -> Result<Answer<CancelOutcome>, ApiError> {
        self.update_order(order_id, OrderWorkflow::cancel, request)
            .await
    }

    /// Asks a paid order to ship.
    #[tracing::instrument(skip_all, fields(order_id = %order_id, workflow_id = %workflow_id(order_id)))]
    async fn ship_order(&self, order_id: &str) -> Result<Answer<OrderStatus>, ApiError> {
        self.update_order(order_id, OrderWorkflow::ship, ShipRequest::default())
            .await
    }

    /// Asks a pending order for a checkout session.
    #[tracing::instrument(skip_all, fields(order_id = %order_id, workflow_id = %workflow_id(order_id)))]
    async fn checkout(&self, order_id: &str) -> Result<Answer<CheckoutSession>, ApiError> {
        self.update_order(
            order_id,
            OrderWorkflow::checkout,
            CheckoutRequest::default(),
        )
        .await
    }

    /// Signals an order stopped in `needs_attention` to try again; `false` if its workflow is
    /// closed or missing.
    #[tracing::instrument(skip_all, fields(order_id = %order_id, workflow_id = %workflow_id(order_id)))]
    async fn retry_order(&self, order_id: &str) -> Result<bool, ApiError> {
        let options = WorkflowSignalOptions::default();
        orderflow_activities::handoff::signal_order_workflow(
            &self.client,
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
    async fn redeem(&self, request: RedeemCode) -> Result<RedemptionOutcome, ApiError> {
        let id = redemption_workflow_id(&request.user_id, &request.code);
        let options = WorkflowStartOptions::new(self.config.task_queue.clone(), id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
            .build();
        let fail = |e: &dyn std::fmt::Display| {
            ApiError::unavailable(
                ErrorCode::TemporalUnavailable,
                "the workflow engine is unavailable; retry the redemption",
                e.to_string(),
            )
        };
        let handle = self
            .client
            .start_workflow(RedemptionWorkflow::run, request, options)
            .await
            .map_err(|e| fail(&e))?;
        let result = tokio::time::timeout(
            self.config.workflow_wait,
            handle.get_result(WorkflowGetResultOptions::default()),
        )
        .await
        .map_err(|_| fail(&"timed out waiting for the redemption"))?;
        result.map_err(|e| fail(&e))
    }

    /// Starts attempt `attempt` of a refund that ops asked to retry, as its own workflow
    /// (`refund-{payment_id}-attempt-{n}`); the refund row, already `pending` with the attempt's
    /// key, is what it runs.
    #[tracing::instrument(skip_all, fields(order_id = %request.order_id, payment_id = %request.payment.payment_id))]
    async fn start_refund_retry(
        &self,
        request: RefundPayment,
        attempt: i64,
    ) -> Result<String, ApiError> {
        let order_id = request.order_id.clone();
        let id = refund_retry_workflow_id(&request.payment.payment_id, attempt);
        self.start_once(RefundWorkflow::run, request, id, &order_id)
            .await
    }

    /// Starts a partial refund's workflow (`order-refund-{refund_id}`); one that exists, running
    /// or finished, is met, never started twice.
    #[tracing::instrument(skip_all, fields(order_id = %order_id, refund_id = %refund_id))]
    async fn start_order_refund(
        &self,
        refund_id: &str,
        order_id: &str,
    ) -> Result<String, ApiError> {
        let request = OrderRefundRef {
            refund_id: refund_id.to_owned(),
            order_id: order_id.to_owned(),
        };
        let id = order_refund_workflow_id(refund_id);
        self.start_once(OrderRefundWorkflow::run, request, id, order_id)
            .await
    }

    async fn hand_on_payment(
        &self,
        db: &Db,
        event: &InboxEvent,
    ) -> Result<&'static str, StoreError> {
        let to = HandOff {
            client: self.client.clone(),
            task_queue: self.config.task_queue.clone(),
            unknown_order_hold_secs: self.config.unknown_order_hold_secs,
        };
        handoff::hand_on(db, &to, event).await
    }

    async fn end_session(
        &self,
        order_id: &str,
        session_id: &str,
        event_id: &str,
    ) -> Result<bool, StoreError> {
        handoff::session_ended(&self.client, order_id, session_id, event_id).await
    }

    async fn audit(
        &self,
        db: &Db,
        provider: &PaymentProvider,
        now_ms: i64,
    ) -> Result<MoneyReport, StoreError> {
        orderflow_activities::audit::run(db, provider, &self.client, now_ms).await
    }

    async fn ready(&self) -> bool {
        use temporalio_common::protos::temporal::api::workflowservice::v1::GetSystemInfoRequest;
        let mut service = self.client.connection().workflow_service();
        let asked = service.get_system_info(temporalio_client::tonic::Request::new(
            GetSystemInfoRequest::default(),
        ));
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(3), asked).await,
            Ok(Ok(_))
        )
    }
}
