//! Route groups, merged in `crate::app`. What each field accepts is in `crate::input`.

pub mod accounts;
pub mod events;
pub mod orders;
pub mod payments;
pub mod redemptions;
pub mod refunds;

use crate::error::ApiError;
use orderflow_store::Entity;

/// What another user's object answers: exactly what a missing one does, so ids do not leak.
pub fn hidden(entity: Entity, id: &str) -> ApiError {
    crate::error::not_found(entity, id)
}
