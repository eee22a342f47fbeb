//! What the workflows share: activity retry policies and the workflow clock.
//!
//! Deterministic code only, like the workflows that use it. The policies are part of every
//! history the workflows record: changing a timeout here is a workflow change.

use std::time::{Duration, UNIX_EPOCH};
use temporalio_common::RetryPolicy;
use temporalio_sdk::{ActivityOptions, ApplicationFailure, WorkflowContext};

/// Reservations fail fast: the HTTP caller is waiting for the outcome.
pub fn reserve_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_interval(Duration::from_secs(2))
                .maximum_attempts(5)
                .build(),
        )
        .build()
}

/// Settlement retries until it succeeds: a release or a refund record must never be given up
/// on. Only a non-retryable business error stops it, and that fails the workflow visibly.
pub fn settle_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .maximum_interval(Duration::from_secs(60))
                .build(),
        )
        .build()
}

/// Reconciliation's inbox re-drive and provider sweep: like settlement it retries until it
/// succeeds, but one run may page through a long window of the provider's payments (the first
/// sweep reads the whole history). So it is bounded by its heartbeat (a worker that dies is
/// noticed in seconds) and a generous start-to-close, not by settlement's 30 s.
pub fn sweep_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30 * 60))
        .heartbeat_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .maximum_interval(Duration::from_secs(60))
                .build(),
        )
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
