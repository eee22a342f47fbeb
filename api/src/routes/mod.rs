//! Route groups, merged in `crate::app`.

pub mod accounts;
pub mod orders;
pub mod payments;
pub mod redemptions;

use crate::error::ApiError;

/// Checks an identifier-like string from a client: 1 to 128 printable ASCII characters.
pub fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::unprocessable(
            &format!("invalid_{field}"),
            format!("{field} must be 1 to 128 printable ASCII characters without spaces"),
        ));
    }
    Ok(())
}

/// Checks a money or points amount from a client.
pub fn check_amount(field: &str, value: i64, min: i64) -> Result<(), ApiError> {
    let max = orderflow_store::MAX_BALANCE;
    if value < min || value > max {
        return Err(ApiError::unprocessable(
            "invalid_amount",
            format!("{field} must be between {min} and {max}"),
        ));
    }
    Ok(())
}

/// What another user's object answers: exactly what a missing one does, so ids do not leak.
pub fn hidden(entity: &'static str, id: &str) -> ApiError {
    ApiError::from(orderflow_store::StoreError::not_found(entity, id))
}
