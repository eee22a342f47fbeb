//! `ErrorCode`: every stable code the API answers with, in one table, each with its HTTP
//! status. The table is the only place a code is spelled; the OpenAPI document lists the
//! same values (the `code` of `ErrorBody`), and a code never changes its status.
//!
//! Codes that the lower crates report as text (a reservation refused with
//! `insufficient_stock`, a store conflict such as `code_exists`) are read with
//! [`ErrorCode::parse`]; this module must never invent a code for text it does not list
//! (see `ApiError`'s conversions for what an unlisted one becomes).

use axum::http::StatusCode;

macro_rules! error_codes {
    ($($status:ident { $($(#[doc = $doc:literal])* $variant:ident = $text:literal,)* })*) => {
        /// A stable, machine-readable error code.
        /// Serialized as `rename_all` spells the variant, which the unit tests hold equal to
        /// the table's text (utoipa does not read a `rename` given through a macro).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($($(#[doc = $doc])* $variant,)*)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$($(ErrorCode::$variant,)*)*];

            /// The code as sent: `insufficient_stock`, ...
            pub fn as_str(self) -> &'static str {
                match self {
                    $($(ErrorCode::$variant => $text,)*)*
                }
            }

            /// The status every answer with this code has.
            pub fn status(self) -> StatusCode {
                match self {
                    $($(ErrorCode::$variant => StatusCode::$status,)*)*
                }
            }
        }
    };
}

error_codes! {
    BAD_REQUEST {
        /// The body is not JSON.
        InvalidJson = "invalid_json",
        /// The query string does not parse.
        InvalidQuery = "invalid_query",
        /// The body could not be read.
        UnreadableBody = "unreadable_body",
        IdempotencyKeyRequired = "idempotency_key_required",
        InvalidIdempotencyKey = "invalid_idempotency_key",
    }
    UNAUTHORIZED {
        /// The bearer token is missing, malformed, forged or expired.
        Unauthorized = "unauthorized",
        SignatureMissing = "signature_missing",
        SignatureMalformed = "signature_malformed",
        SignatureExpired = "signature_expired",
        SignatureInvalid = "signature_invalid",
    }
    FORBIDDEN {
        /// The route, or the cancel reason, needs an admin token.
        Forbidden = "forbidden",
        /// A `user_id` in the body that is not the token's subject.
        UserMismatch = "user_mismatch",
    }
    NOT_FOUND {
        RouteNotFound = "route_not_found",
        /// The order does not exist, or is another user's.
        OrderNotFound = "order_not_found",
        SkuNotFound = "sku_not_found",
        CouponNotFound = "coupon_not_found",
        WalletNotFound = "wallet_not_found",
        PointsNotFound = "points_not_found",
        EntitlementsNotFound = "entitlements_not_found",
        CodeNotFound = "code_not_found",
        RefundNotFound = "refund_not_found",
        /// No return has this id, or it is of another user's order.
        ReturnNotFound = "return_not_found",
        /// No events subscriber has this id.
        SubscriptionNotFound = "subscription_not_found",
        /// The subscriber has no delivery of this event (it was written before it subscribed,
        /// or is not of a type it takes).
        DeliveryNotFound = "delivery_not_found",
    }
    CONFLICT {
        OrderNotCancellable = "order_not_cancellable",
        OrderAlreadyShipped = "order_already_shipped",
        OrderNotPayable = "order_not_payable",
        OrderNotShippable = "order_not_shippable",
        /// A retry of an order that is not stopped in `needs_attention`.
        OrderNotStopped = "order_not_stopped",
        CodeExhausted = "code_exhausted",
        RefundAlreadySucceeded = "refund_already_succeeded",
        RefundInProgress = "refund_in_progress",
        /// The payment was taken offline: there is nothing to refund at the provider.
        RefundNotRetryable = "refund_not_retryable",
        /// A partial refund of an order that is not paid or fulfilled.
        OrderNotRefundable = "order_not_refundable",
        /// A return of an order that has not shipped.
        OrderNotReturnable = "order_not_returnable",
        /// A cancel of an order that has partial refunds: refund or return the rest instead.
        OrderPartiallyRefunded = "order_partially_refunded",
        /// A partial refund of an order whose payment is only authorized: it is captured when
        /// the goods ship (or cancel the order, which voids it).
        PaymentNotCaptured = "payment_not_captured",
    }
    PAYLOAD_TOO_LARGE {
        BodyTooLarge = "body_too_large",
    }
    UNSUPPORTED_MEDIA_TYPE {
        UnsupportedMediaType = "unsupported_media_type",
    }
    UNPROCESSABLE_ENTITY {
        /// The JSON does not have the request's shape.
        InvalidBody = "invalid_body",
        InvalidUserId = "invalid_user_id",
        InvalidOrderId = "invalid_order_id",
        InvalidSku = "invalid_sku",
        InvalidCouponId = "invalid_coupon_id",
        InvalidCode = "invalid_code",
        InvalidPaymentId = "invalid_payment_id",
        InvalidEventId = "invalid_event_id",
        InvalidSessionId = "invalid_session_id",
        InvalidItems = "invalid_items",
        InvalidQuantity = "invalid_quantity",
        DuplicateSku = "duplicate_sku",
        InvalidAmount = "invalid_amount",
        InvalidCurrency = "invalid_currency",
        InvalidPaymentTimeout = "invalid_payment_timeout",
        InvalidStatus = "invalid_status",
        InvalidLimit = "invalid_limit",
        InvalidCursor = "invalid_cursor",
        InvalidCancelReason = "invalid_cancel_reason",
        InvalidPaymentMethod = "invalid_payment_method",
        InvalidSkuKind = "invalid_sku_kind",
        InvalidCouponKind = "invalid_coupon_kind",
        InvalidSubscriptionId = "invalid_subscription_id",
        /// A subscriber URL that is not `http://` or `https://` and printable ASCII.
        InvalidUrl = "invalid_url",
        /// An event type orderflow does not publish, or the same one twice.
        InvalidEventTypes = "invalid_event_types",
        /// The Idempotency-Key was used with another request body.
        IdempotencyKeyReused = "idempotency_key_reused",
        QuotaExceeded = "quota_exceeded",
        /// A refund of more than the order has left to give back.
        RefundExceedsCapture = "refund_exceeds_capture",
        /// A refund or return names a SKU the order does not have.
        SkuNotInOrder = "sku_not_in_order",
        /// More of a line than is left to refund or return.
        QuantityExceedsOrder = "quantity_exceeds_order",
        /// A refund names both an amount and lines, or neither.
        InvalidRefund = "invalid_refund",
        /// A refund or return reason that is empty, too long or not printable.
        InvalidReason = "invalid_reason",
        InvalidReturnId = "invalid_return_id",
        InsufficientStock = "insufficient_stock",
        UnknownSku = "unknown_sku",
        CouponUnusable = "coupon_unusable",
        InsufficientPoints = "insufficient_points",
        InsufficientWalletBalance = "insufficient_wallet_balance",
        /// Points and wallet together exceed what the coupon leaves.
        AmountExceedsTotal = "amount_exceeds_total",
        /// A total or a balance would overflow.
        AmountTooLarge = "amount_too_large",
        /// A reservation failed for a reason that is not the client's (the order is rejected).
        ReservationUnavailable = "reservation_unavailable",
        /// The order was closed before its reservations were made.
        OrderClosed = "order_closed",
        /// The order was rejected for a reason this API does not list (logged as an error).
        OrderRejected = "order_rejected",
        CodeExists = "code_exists",
        SkuNotDigital = "sku_not_digital",
    }
    TOO_MANY_REQUESTS {
        /// The user holds as many unpaid orders as allowed.
        TooManyOpenOrders = "too_many_open_orders",
    }
    INTERNAL_SERVER_ERROR {
        /// A bug or an unexpected state; the cause is in the log, with the order id.
        InternalError = "internal_error",
    }
    SERVICE_UNAVAILABLE {
        TemporalUnavailable = "temporal_unavailable",
        DatabaseUnavailable = "database_unavailable",
        ProviderUnavailable = "provider_unavailable",
        /// The order's workflow did not answer in time; the same request gets its outcome.
        OrderInProgress = "order_in_progress",
    }
}

impl ErrorCode {
    /// The code a lower crate reported as text, if this API lists it.
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == text)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn codes_are_unique_snake_case_and_serialize_as_spelled() {
        let mut seen = BTreeSet::new();
        for &code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
            assert_eq!(serde_json::to_value(code).unwrap(), text);
            assert_eq!(ErrorCode::parse(text), Some(code));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }

    #[test]
    fn client_codes_are_4xx_and_only_the_documented_ones_are_5xx() {
        let server: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| c.status().is_server_error())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            server,
            [
                "internal_error",
                "temporal_unavailable",
                "database_unavailable",
                "provider_unavailable",
                "order_in_progress"
            ]
        );
    }

    /// The codes the reservation activities and the store report as text are all listed, so
    /// none of them is answered as `order_rejected` or a 500.
    #[test]
    fn every_code_the_lower_crates_report_is_listed() {
        for text in [
            orderflow_store::funds::WALLET.short_code,
            orderflow_store::funds::POINTS.short_code,
            "insufficient_stock",
            "unknown_sku",
            "coupon_unusable",
            "quota_exceeded",
            "too_many_open_orders",
            "amount_exceeds_total",
            "amount_too_large",
            "reservation_unavailable",
            "order_closed",
            "code_exists",
            "sku_not_digital",
            "refund_already_succeeded",
            "refund_in_progress",
            "refund_not_retryable",
            "order_not_refundable",
            "order_not_returnable",
            "order_partially_refunded",
            "payment_not_captured",
            "refund_exceeds_capture",
            "sku_not_in_order",
            "quantity_exceeds_order",
            "idempotency_key_reused",
        ] {
            assert!(ErrorCode::parse(text).is_some(), "{text} is not listed");
        }
        for code in orderflow_workflows::refusal::RefusalCode::ALL {
            assert!(ErrorCode::parse(code.as_str()).is_some(), "{code}");
        }
    }
}
