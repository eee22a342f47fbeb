//! Route groups, merged in `crate::app`.

pub mod accounts;
pub mod orders;
pub mod payments;
pub mod redemptions;

use crate::error::{ApiError, ErrorCode};
use orderflow_store::Entity;

/// The identifier-like fields a client sends, each with its refusal code.
#[derive(Debug, Clone, Copy)]
pub enum IdField {
    UserId,
    OrderId,
    Sku,
    CouponId,
    Code,
    PaymentId,
    EventId,
    SessionId,
}

impl IdField {
    fn name(self) -> &'static str {
        match self {
            IdField::UserId => "user_id",
            IdField::OrderId => "order_id",
            IdField::Sku => "sku",
            IdField::CouponId => "coupon_id",
            IdField::Code => "code",
            IdField::PaymentId => "payment_id",
            IdField::EventId => "event_id",
            IdField::SessionId => "session_id",
        }
    }

    fn refusal(self) -> ErrorCode {
        match self {
            IdField::UserId => ErrorCode::InvalidUserId,
            IdField::OrderId => ErrorCode::InvalidOrderId,
            IdField::Sku => ErrorCode::InvalidSku,
            IdField::CouponId => ErrorCode::InvalidCouponId,
            IdField::Code => ErrorCode::InvalidCode,
            IdField::PaymentId => ErrorCode::InvalidPaymentId,
            IdField::EventId => ErrorCode::InvalidEventId,
            IdField::SessionId => ErrorCode::InvalidSessionId,
        }
    }
}

/// Checks an identifier-like string from a client: 1 to 128 printable ASCII characters.
pub fn check_id(field: IdField, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            field.refusal(),
            format!(
                "{} must be 1 to 128 printable ASCII characters without spaces",
                field.name()
            ),
        ));
    }
    Ok(())
}

/// Checks a money or points amount from a client.
pub fn check_amount(field: &str, value: i64, min: i64) -> Result<(), ApiError> {
    let max = orderflow_store::MAX_BALANCE;
    if value < min || value > max {
        return Err(ApiError::new(
            ErrorCode::InvalidAmount,
            format!("{field} must be between {min} and {max}"),
        ));
    }
    Ok(())
}

/// What another user's object answers: exactly what a missing one does, so ids do not leak.
pub fn hidden(entity: Entity, id: &str) -> ApiError {
    crate::error::not_found(entity, id)
}
