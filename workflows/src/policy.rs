//! What the workflows share: activity retry policies and the workflow clock.
//!
//! Deterministic code only, like the workflows that use it. The policies are part of every
//! history the workflows record: changing a timeout here is a workflow change.

use std::time::{Duration, UNIX_EPOCH};
use temporalio_common::data_converters::TemporalDeserializable;
use temporalio_common::{ActivityDefinition, RetryPolicy};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, ApplicationFailure, LocalActivityOptions,
    WorkflowContext,
};

/// A reservation's attempt, and its retries: few and quick, the HTTP caller is waiting.
const RESERVE_ATTEMPT: Duration = Duration::from_secs(10);
fn reserve_retries() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(200))
        .maximum_interval(Duration::from_secs(2))
        .maximum_attempts(5)
        .build()
}

/// A settlement's attempt, and its retries: until it succeeds, backing off to a minute.
const SETTLE_ATTEMPT: Duration = Duration::from_secs(30);
fn settle_retries() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(500))
        .maximum_interval(Duration::from_secs(60))
        .build()
}

/// Reservations fail fast: the HTTP caller is waiting for the outcome.
pub fn reserve_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(RESERVE_ATTEMPT)
        .retry_policy(reserve_retries())
        .build()
}

/// Settlement retries until it succeeds: a release or a refund record must never be given up
/// on. Only a non-retryable business error stops it, and that fails the workflow visibly.
pub fn settle_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(SETTLE_ATTEMPT)
        .retry_policy(settle_retries())
        .build()
}

/// Reconciliation's inbox re-drive and provider sweep: like settlement it retries until it
/// succeeds, but one run may page through a long window of the provider's payments (the first
/// sweep reads the whole history). So it is bounded by its heartbeat (a worker that dies is
/// noticed in seconds) and a generous start-to-close, not by settlement's 30 s.
pub fn sweep_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30 * 60))
        .heartbeat_timeout(Duration::from_secs(30))
        .retry_policy(settle_retries())
        .build()
}

/// Calls to the payment provider: unlimited retries with backoff (a provider outage delays a
/// refund, it never drops it), and a heartbeat so that a worker that dies mid-call is noticed
/// in seconds, not at the end of the start-to-close timeout.
pub fn provider_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .heartbeat_timeout(Duration::from_secs(3))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(60))
                .build(),
        )
        .build()
}

/// Checkout sessions: the payer is waiting, so a few quick attempts, then the update fails.
pub fn checkout_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15))
        .heartbeat_timeout(Duration::from_secs(3))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(300))
                .maximum_interval(Duration::from_secs(2))
                .maximum_attempts(4)
                .build(),
        )
        .build()
}

/// Workflow time in Unix milliseconds (deterministic: recorded in the history).
pub fn now_ms<W>(ctx: &WorkflowContext<W>) -> Result<i64, ApplicationFailure> {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| ApplicationFailure::new("workflow time is not available"))
}

/// The patch under which the short database steps run as local activities (issue 12): in the
/// worker that runs the workflow task, recorded as one marker each, with no activity task for
/// the server to dispatch. Histories recorded before it replay their remote activities.
pub const LOCAL_DB_STEPS: &str = "local-db-steps";

/// The patch under which an order's outcome steps (paid, cancelled, shipped, cancelled after
/// payment) are remote activities again, while the other short steps stay local. Which outcome
/// a workflow task picks depends on the signals and timers it sees, and a local activity
/// commits *before* the task that decided it is recorded: a task that failed after the commit
/// (its worker killed) was run again with a payment that had arrived meanwhile, decided
/// otherwise, and found its order already cancelled (the 2-hour soak, issue 11: 5 orders of
/// 7,387). A remote activity is scheduled by the completed task, so its decision is durable
/// before anything commits.
pub const DURABLE_OUTCOMES: &str = "durable-outcomes";

/// The retries of a short database step: [`db_step`] runs it with the same policy, locally or
/// remotely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbStep {
    /// A reservation, while the HTTP caller waits: [`reserve_options`].
    Reserve,
    /// A step that must happen eventually (a release, a record): [`settle_options`].
    Settle,
    /// An outcome that a signal or a timer chose (paid, cancelled, shipped): as `Settle`, but
    /// remote in runs with [`DURABLE_OUTCOMES`].
    Outcome,
}

impl DbStep {
    fn remote(self) -> ActivityOptions {
        match self {
            DbStep::Reserve => reserve_options(),
            DbStep::Settle | DbStep::Outcome => settle_options(),
        }
    }

    /// The same timeouts and retries as [`DbStep::remote`]. A local activity's
    /// schedule-to-close defaults to 100 s in the SDK, which would give up on a settlement
    /// during a database outage: a settlement's is ten years, so it retries until it succeeds
    /// (backoffs over 10 s wait on a durable timer, not in the worker).
    fn local(self) -> LocalActivityOptions {
        let (start_to_close, schedule_to_close, retry_policy) = match self {
            DbStep::Reserve => (RESERVE_ATTEMPT, Duration::from_secs(60), reserve_retries()),
            DbStep::Settle | DbStep::Outcome => (
                SETTLE_ATTEMPT,
                Duration::from_secs(10 * 365 * 24 * 3600),
                settle_retries(),
            ),
        };
        LocalActivityOptions::builder()
            .start_to_close_timeout(start_to_close)
            .schedule_to_close_timeout(schedule_to_close)
            .retry_policy(retry_policy)
            .timer_backoff_threshold(Duration::from_secs(10))
            .build()
    }
}

/// Runs a short database step (idempotent on its business key, one transaction): as a local
/// activity in runs that have the [`LOCAL_DB_STEPS`] patch, as a remote one in runs recorded
/// before it. The patch is decided once per run, at its first step; an outcome is remote
/// again in runs with [`DURABLE_OUTCOMES`], decided at the run's first outcome.
pub async fn db_step<W, AD>(
    ctx: &WorkflowContext<W>,
    activity: AD,
    input: impl Into<AD::Input>,
    step: DbStep,
) -> Result<AD::Output, ActivityExecutionError>
where
    AD: ActivityDefinition,
    AD::Output: TemporalDeserializable,
{
    let local =
        ctx.patched(LOCAL_DB_STEPS) && !(step == DbStep::Outcome && ctx.patched(DURABLE_OUTCOMES));
    if local {
        ctx.execute_local_activity(activity, input, step.local())
            .await
    } else {
        ctx.execute_activity(activity, input, step.remote()).await
    }
}
