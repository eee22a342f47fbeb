//! How a store error becomes an activity error (`orderflow_store::error` classifies it).
//!
//! `Db` is infrastructure (connection lost, busy, timeout): Temporal retries it, unless the
//! database refused the write itself (a CHECK, UNIQUE, NOT NULL or foreign-key violation) or
//! returned data we cannot read: those are permanent (`constraint_violation`, `data_error`) and
//! retrying them forever would hang the order in silence. Everything else is a business error
//! with a stable code: retrying cannot fix it, so activities mark it non-retryable and it shows
//! in the workflow history. Nothing here is ever turned into `Ok`.

use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

pub use orderflow_store::{Entity, Service, StoreError};

/// Converts a store error into an activity error: transient errors are retried, business
/// and permanent errors are non-retryable. Their stable code is the failure's type (the
/// workflow reads it there, without parsing) and starts the message.
pub fn into_activity_error(e: StoreError) -> ActivityError {
    if e.is_transient() {
        ActivityError::application(ApplicationFailure::new(e))
    } else {
        let code = e.code();
        let failure = ApplicationFailure::builder(format!("{code}: {e}"))
            .type_name(code.to_owned())
            .non_retryable(true)
            .build();
        ActivityError::application(failure)
    }
}
