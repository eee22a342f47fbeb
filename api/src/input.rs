//! What the API accepts from a client, field by field: the one source that both the handlers'
//! checks and the OpenAPI document read, so that what the document allows the API accepts and
//! what the API refuses the document forbids.
//!
//! A [`Rule`] is a constraint in the words of JSON Schema (lengths, a pattern, a range, an
//! enumeration); [`Rule::check_text`], [`Rule::check_number`] and [`Rule::check_len`] are the
//! handler side of the same constraint. [`BODY_FIELDS`] and [`PARAMETERS`] say which rule
//! governs every request field and parameter the document describes; `crate::openapi` writes
//! them into the document, and `tests/openapi.rs` fails on a field with no rule. This module must never hold a check that the document cannot state: a refusal
//! that depends on the database (stock, balances, a code already taken) belongs to the
//! handlers and the store, and answers with its own business code.

use crate::error::{ApiError, ErrorCode};
use orderflow_store::MAX_BALANCE;
use orderflow_workflows::model::OrderStatus;
use serde_json::{Value, json};

/// At most this many lines in an order.
pub const MAX_ITEMS: usize = 100;
/// At most this many units of one SKU in an order.
pub const MAX_QUANTITY: i64 = 10_000;
/// The range of an order's own payment deadline, in seconds.
pub const MIN_TIMEOUT_SECS: i64 = 1;
pub const MAX_TIMEOUT_SECS: i64 = 24 * 3600;
/// At most this many orders on one page of `GET /v1/orders` (20 when `limit` is absent).
pub const MAX_PAGE: i64 = 100;
/// The longest identifier a client may send.
pub const MAX_ID_LEN: usize = 128;
/// The longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// The most digits of a cursor's time (milliseconds; 18 digits always fit an `i64`).
const MAX_CURSOR_TIME_DIGITS: usize = 18;

/// Printable ASCII without spaces (`u8::is_ascii_graphic`), as a JSON Schema pattern.
const PRINTABLE: &str = "^[!-~]+$";
/// An http(s) URL as [`Rule::Url`] checks it: printable ASCII without brackets (no IPv6
/// literal hosts: a bracket outside a valid one makes URL parsers, Python's included, fail).
const URL: &str = r"^https?://[!-Z\\^-~]+$";

/// A constraint on one field or parameter.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// 1 to `max` printable ASCII characters without spaces.
    Text { max: usize, code: ErrorCode },
    /// An integer in `min..=max`.
    Range { min: i64, max: i64, code: ErrorCode },
    /// One of these words.
    OneOf {
        words: &'static [&'static str],
        code: ErrorCode,
    },
    /// A list of 1 to `max` entries (each with its own rules, by its schema).
    List { max: usize, code: ErrorCode },
    /// A boolean; its type says everything.
    Flag,
    /// A page cursor: `<created_at>:<order_id>`, as `next_cursor` hands it out.
    Cursor,
    /// One of the ISO 4217 currency codes.
    Currency,
    /// An `http://` or `https://` URL of at most `max` printable ASCII characters, without
    /// `[` or `]`.
    Url { max: usize, code: ErrorCode },
    /// A list of 1 or more of these words, each at most once.
    Words {
        words: &'static [&'static str],
        code: ErrorCode,
    },
}

/// An identifier (user, order, SKU, coupon, code, payment, event, session).
pub const fn id(code: ErrorCode) -> Rule {
    Rule::Text {
        max: MAX_ID_LEN,
        code,
    }
}

/// An amount of money or points from `min` up to the largest balance the store keeps.
pub const fn amount(min: i64) -> Rule {
    Rule::Range {
        min,
        max: MAX_BALANCE,
        code: ErrorCode::InvalidAmount,
    }
}

/// A provider's Unix time in seconds (`capture_before`): after 1970, before the year 10000.
pub const UNIX_SECONDS: Rule = Rule::Range {
    min: 1,
    max: 253_402_300_799,
    code: ErrorCode::InvalidBody,
};

pub const USER_ID: Rule = id(ErrorCode::InvalidUserId);
pub const ORDER_ID: Rule = id(ErrorCode::InvalidOrderId);
pub const SKU: Rule = id(ErrorCode::InvalidSku);
pub const COUPON_ID: Rule = id(ErrorCode::InvalidCouponId);
pub const CODE: Rule = id(ErrorCode::InvalidCode);
pub const PAYMENT_ID: Rule = id(ErrorCode::InvalidPaymentId);
pub const EVENT_ID: Rule = id(ErrorCode::InvalidEventId);
pub const SESSION_ID: Rule = id(ErrorCode::InvalidSessionId);
pub const SUBSCRIPTION_ID: Rule = id(ErrorCode::InvalidSubscriptionId);
pub const RETURN_ID: Rule = id(ErrorCode::InvalidReturnId);
/// Why money goes back (a partial refund or a return).
pub const REFUND_REASON: Rule = Rule::OneOf {
    words: &crate::routes::refunds::REASONS,
    code: ErrorCode::InvalidReason,
};
/// The lines of a partial refund or a return.
pub const REFUND_LINES: Rule = Rule::List {
    max: MAX_ITEMS,
    code: ErrorCode::InvalidItems,
};
/// The longest subscriber URL.
pub const MAX_URL_LEN: usize = 2048;
pub const SUBSCRIBER_URL: Rule = Rule::Url {
    max: MAX_URL_LEN,
    code: ErrorCode::InvalidUrl,
};
pub const EVENT_TYPES: Rule = Rule::Words {
    words: &orderflow_store::events_out::EVENT_TYPES,
    code: ErrorCode::InvalidEventTypes,
};
/// A webhook event's `type`: any identifier (types this API does not handle are ignored).
pub const EVENT_TYPE: Rule = id(ErrorCode::InvalidBody);
/// The one type of a session event's body (a payment event's `type` is any other).
pub const SESSION_EVENT_TYPE: Rule = Rule::OneOf {
    words: &[orderflow_provider::CHECKOUT_SESSION_EXPIRED],
    code: ErrorCode::InvalidBody,
};
pub const IDEMPOTENCY_KEY: Rule = Rule::Text {
    max: MAX_IDEMPOTENCY_KEY_LEN,
    code: ErrorCode::InvalidIdempotencyKey,
};
pub const ITEMS: Rule = Rule::List {
    max: MAX_ITEMS,
    code: ErrorCode::InvalidItems,
};
pub const QUANTITY: Rule = Rule::Range {
    min: 1,
    max: MAX_QUANTITY,
    code: ErrorCode::InvalidQuantity,
};
pub const PAYMENT_TIMEOUT: Rule = Rule::Range {
    min: MIN_TIMEOUT_SECS,
    max: MAX_TIMEOUT_SECS,
    code: ErrorCode::InvalidPaymentTimeout,
};
pub const LIMIT: Rule = Rule::Range {
    min: 1,
    max: MAX_PAGE,
    code: ErrorCode::InvalidLimit,
};
pub const CANCEL_REASON: Rule = Rule::OneOf {
    words: &["user", "admin"],
    code: ErrorCode::InvalidCancelReason,
};
pub const ADMIN_PAYMENT_METHOD: Rule = Rule::OneOf {
    words: &["wallet", "offline"],
    code: ErrorCode::InvalidPaymentMethod,
};
pub const SKU_KIND: Rule = Rule::OneOf {
    words: &["physical", "digital"],
    code: ErrorCode::InvalidSkuKind,
};
pub const COUPON_KIND: Rule = Rule::OneOf {
    words: &["amount", "discount"],
    code: ErrorCode::InvalidCouponKind,
};
pub const ORDER_STATUS: Rule = Rule::OneOf {
    words: &ORDER_STATUS_WORDS,
    code: ErrorCode::InvalidStatus,
};
const ORDER_STATUS_WORDS: [&str; 5] = {
    let s = OrderStatus::STORED;
    [
        s[0].as_str(),
        s[1].as_str(),
        s[2].as_str(),
        s[3].as_str(),
        s[4].as_str(),
    ]
};

/// The rule of every property of every request body: `(schema, property, rule)`.
pub const BODY_FIELDS: &[(&str, &str, Rule)] = &[
    ("CreateOrder", "user_id", USER_ID),
    ("CreateOrder", "items", ITEMS),
    ("CreateOrder", "coupon_id", COUPON_ID),
    ("CreateOrder", "points", amount(0)),
    ("CreateOrder", "wallet_amount", amount(0)),
    ("CreateOrder", "payment_timeout_secs", PAYMENT_TIMEOUT),
    ("CreateAdminOrder", "user_id", USER_ID),
    ("CreateAdminOrder", "items", ITEMS),
    ("CreateAdminOrder", "coupon_id", COUPON_ID),
    ("CreateAdminOrder", "points", amount(0)),
    ("CreateAdminOrder", "payment_method", ADMIN_PAYMENT_METHOD),
    ("Item", "sku", SKU),
    ("Item", "quantity", QUANTITY),
    ("CancelBody", "reason", CANCEL_REASON),
    ("PutSku", "price", amount(0)),
    ("PutSku", "stock", amount(0)),
    ("PutSku", "kind", SKU_KIND),
    ("PutSku", "quota", amount(0)),
    ("CreateCoupon", "user_id", USER_ID),
    ("CreateCoupon", "kind", COUPON_KIND),
    ("CreateCoupon", "amount", amount(1)),
    ("CreditWallet", "amount", amount(1)),
    ("CreditPoints", "points", amount(1)),
    ("CreateCode", "code", CODE),
    ("CreateCode", "sku", SKU),
    ("CreateCode", "max_uses", amount(1)),
    ("Redeem", "code", CODE),
    ("Redeem", "user_id", USER_ID),
    ("WebhookEvent", "event_id", EVENT_ID),
    ("WebhookEvent", "type", EVENT_TYPE),
    ("WebhookEvent", "order_id", ORDER_ID),
    ("WebhookEvent", "payment_id", PAYMENT_ID),
    ("WebhookEvent", "session_id", SESSION_ID),
    ("WebhookEvent", "amount", amount(1)),
    ("WebhookEvent", "currency", Rule::Currency),
    ("WebhookEvent", "capture_before", UNIX_SECONDS),
    ("SessionEvent", "event_id", EVENT_ID),
    ("SessionEvent", "type", SESSION_EVENT_TYPE),
    ("SessionEvent", "order_id", ORDER_ID),
    ("SessionEvent", "session_id", SESSION_ID),
    ("SessionEvent", "amount", amount(1)),
    ("SessionEvent", "currency", Rule::Currency),
    ("CreateRefund", "amount", amount(1)),
    ("CreateRefund", "lines", REFUND_LINES),
    ("CreateRefund", "reason", REFUND_REASON),
    ("CreateReturn", "lines", REFUND_LINES),
    ("CreateReturn", "reason", REFUND_REASON),
    ("RefundLine", "sku", SKU),
    ("RefundLine", "quantity", QUANTITY),
    ("CreateSubscription", "url", SUBSCRIBER_URL),
    ("CreateSubscription", "event_types", EVENT_TYPES),
];

/// The rule of every path, query and header parameter, by its name (one meaning per name).
pub const PARAMETERS: &[(&str, Rule)] = &[
    ("order_id", ORDER_ID),
    ("user_id", USER_ID),
    ("sku", SKU),
    ("coupon_id", COUPON_ID),
    ("payment_id", PAYMENT_ID),
    ("Idempotency-Key", IDEMPOTENCY_KEY),
    ("status", ORDER_STATUS),
    ("is_expired", Rule::Flag),
    ("limit", LIMIT),
    ("cursor", Rule::Cursor),
    ("subscription_id", SUBSCRIPTION_ID),
    ("event_id", EVENT_ID),
    ("return_id", RETURN_ID),
];

impl Rule {
    /// The constraint as JSON Schema keywords, to merge into a field's schema.
    pub fn keywords(self) -> Vec<(&'static str, Value)> {
        match self {
            Rule::Text { max, .. } => vec![
                ("minLength", json!(1)),
                ("maxLength", json!(max)),
                ("pattern", json!(PRINTABLE)),
            ],
            Rule::Range { min, max, .. } => vec![("minimum", json!(min)), ("maximum", json!(max))],
            Rule::OneOf { words, .. } => vec![("enum", json!(words))],
            Rule::List { max, .. } => vec![("minItems", json!(1)), ("maxItems", json!(max))],
            Rule::Flag => vec![],
            Rule::Cursor => vec![
                ("minLength", json!(3)),
                ("maxLength", json!(MAX_CURSOR_TIME_DIGITS + 1 + MAX_ID_LEN)),
                (
                    "pattern",
                    json!(format!(
                        "^[0-9]{{1,{MAX_CURSOR_TIME_DIGITS}}}:[!-~]{{1,{MAX_ID_LEN}}}$"
                    )),
                ),
            ],
            Rule::Currency => vec![("enum", json!(orderflow_provider::ISO_4217))],
            Rule::Url { max, .. } => vec![
                ("minLength", json!(8)),
                ("maxLength", json!(max)),
                ("pattern", json!(URL)),
            ],
            Rule::Words { words, .. } => vec![
                ("minItems", json!(1)),
                ("maxItems", json!(words.len())),
                ("uniqueItems", json!(true)),
                ("items", json!({"type": "string", "enum": words})),
            ],
        }
    }

    /// Checks a text value against a `Text`, `OneOf` or `Currency` rule.
    pub fn check_text(self, field: &str, value: &str) -> Result<(), ApiError> {
        match self {
            Rule::Text { max, code } => {
                if value.is_empty()
                    || value.len() > max
                    || !value.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(ApiError::new(
                        code,
                        format!(
                            "{field} must be 1 to {max} printable ASCII characters without spaces"
                        ),
                    ));
                }
                Ok(())
            }
            Rule::OneOf { words, code } => {
                if !words.contains(&value) {
                    return Err(ApiError::new(
                        code,
                        format!("{field} must be one of {}", words.join(", ")),
                    ));
                }
                Ok(())
            }
            Rule::Url { max, code } => {
                let rest = value
                    .strip_prefix("http://")
                    .or_else(|| value.strip_prefix("https://"));
                let fits = rest.is_some_and(|r| {
                    !r.is_empty()
                        && r.bytes()
                            .all(|b| b.is_ascii_graphic() && b != b'[' && b != b']')
                });
                if !fits || value.len() > max {
                    return Err(ApiError::new(
                        code,
                        format!(
                            "{field} must be an http:// or https:// URL of at most {max} printable ASCII characters, without spaces or brackets"
                        ),
                    ));
                }
                Ok(())
            }
            Rule::Currency => {
                if !orderflow_provider::is_known_currency(value) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidCurrency,
                        format!("{value:?} is not an ISO 4217 currency code"),
                    ));
                }
                Ok(())
            }
            other => unreachable!("{field}: {other:?} is not a rule for text"),
        }
    }

    /// Checks a number against a `Range` rule.
    pub fn check_number(self, field: &str, value: i64) -> Result<(), ApiError> {
        let Rule::Range { min, max, code } = self else {
            unreachable!("{field}: {self:?} is not a rule for numbers")
        };
        if !(min..=max).contains(&value) {
            return Err(ApiError::new(
                code,
                format!("{field} must be between {min} and {max}"),
            ));
        }
        Ok(())
    }

    /// Checks a list against a `Words` rule: 1 or more of its words, each at most once.
    pub fn check_words(self, field: &str, values: &[String]) -> Result<(), ApiError> {
        let Rule::Words { words, code } = self else {
            unreachable!("{field}: {self:?} is not a rule for word lists")
        };
        let fits = !values.is_empty()
            && values
                .iter()
                .enumerate()
                .all(|(i, v)| words.contains(&v.as_str()) && !values[..i].contains(v));
        if !fits {
            return Err(ApiError::new(
                code,
                format!(
                    "{field} must name 1 or more of {}, each at most once",
                    words.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Checks a list's length against a `List` rule.
    pub fn check_len(self, field: &str, len: usize) -> Result<(), ApiError> {
        let Rule::List { max, code } = self else {
            unreachable!("{field}: {self:?} is not a rule for lists")
        };
        if len == 0 || len > max {
            return Err(ApiError::new(
                code,
                format!("{field} must have 1 to {max} entries"),
            ));
        }
        Ok(())
    }
}

/// A page cursor from its parts, as `next_cursor` hands it out.
pub fn cursor(created_at: i64, order_id: &str) -> String {
    format!("{created_at}:{order_id}")
}

/// A cursor's parts. Any text the document's pattern allows is a position in the list (newest
/// first, then by order id), whether or not this API handed it out.
pub fn parse_cursor(cursor: &str) -> Result<(i64, String), ApiError> {
    let refused = || {
        ApiError::new(
            ErrorCode::InvalidCursor,
            "cursor must be a next_cursor this API returned",
        )
    };
    let (at, id) = cursor.split_once(':').ok_or_else(refused)?;
    if at.is_empty() || at.len() > MAX_CURSOR_TIME_DIGITS || !at.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(refused());
    }
    ORDER_ID.check_text("cursor", id).map_err(|_| refused())?;
    Ok((at.parse().map_err(|_| refused())?, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_what_its_pattern_refuses_is_refused() {
        let c = cursor(1_795_000_000_000, "ord_abc");
        assert_eq!(
            parse_cursor(&c).unwrap(),
            (1_795_000_000_000, "ord_abc".into())
        );
        for bad in [
            "",
            ":",
            "12:",
            ":ord",
            "1x:ord",
            "1:has space",
            "1234567890123456789:o",
        ] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn admin_payment_methods_and_cancel_reasons_are_words_the_model_reads() {
        use orderflow_workflows::model::{CancelReason, PaymentMethod};
        let Rule::OneOf { words, .. } = ADMIN_PAYMENT_METHOD else {
            unreachable!()
        };
        for word in words {
            let method = PaymentMethod::parse(word);
            assert!(
                matches!(method, Some(PaymentMethod::Wallet | PaymentMethod::Offline)),
                "{word}"
            );
        }
        let Rule::OneOf { words, .. } = CANCEL_REASON else {
            unreachable!()
        };
        for word in words {
            assert!(
                CancelReason::ALL.iter().any(|r| r.as_str() == *word),
                "{word}"
            );
        }
    }

    #[test]
    fn order_status_words_are_the_stored_statuses() {
        let stored: Vec<&str> = OrderStatus::STORED.iter().map(|s| s.as_str()).collect();
        assert_eq!(ORDER_STATUS_WORDS.to_vec(), stored);
    }

    #[test]
    fn text_rules_state_what_they_check() {
        assert!(USER_ID.check_text("user_id", "alice").is_ok());
        assert!(
            USER_ID
                .check_text("user_id", &"a".repeat(MAX_ID_LEN))
                .is_ok()
        );
        for bad in ["", "a b", "é", &"a".repeat(MAX_ID_LEN + 1)] {
            assert!(USER_ID.check_text("user_id", bad).is_err(), "{bad:?}");
        }
        assert!(SKU_KIND.check_text("kind", "digital").is_ok());
        assert!(SKU_KIND.check_text("kind", "Digital").is_err());
        assert!(QUANTITY.check_number("quantity", 0).is_err());
        assert!(QUANTITY.check_number("quantity", MAX_QUANTITY).is_ok());
    }
}
