//! The payment provider: its wire protocol and the HTTP client the activities call it with.
//!
//! The protocol (a card provider's, as `orderflow provider-sandbox` speaks it):
//! - every request carries `Authorization: Bearer <api key>`; writes carry `Idempotency-Key`,
//!   and the same key always gets the same answer back, never a second operation;
//! - `POST /v1/checkout_sessions` `{order_id, amount, currency}` opens a session;
//! - `POST /v1/refunds` `{payment_id, amount, reason}` refunds a captured payment;
//! - a session opened with `capture_method: manual` only *authorizes* its payment
//!   (`payment.authorized`, with `capture_before`); `POST /v1/payments/{id}/capture`
//!   `{amount?}` captures it (all, or part: the rest is released), and
//!   `POST /v1/payments/{id}/void` releases it whole. A void of a captured payment is refused
//!   with `already_captured` (then it is refunded instead); a capture after `capture_before` or
//!   after a void is refused with `authorization_expired` or `payment_voided`;
//! - `GET /v1/payments` and `GET /v1/refunds` list every captured payment and every refund,
//!   a page at a time (`?limit=&starting_after=<id>`, answered `{data, has_more}`), and
//!   `GET /v1/payments/{id}` reads one payment: the provider's side of the two-way audit
//!   (`?created[gte]=` and `?disputed[gte]=` narrow the payments listing to a window);
//! - errors are `{"error": {"code", "message"}}`;
//! - payments (`payment.succeeded`, `charge.disputed`) are reported by signed webhooks
//!   ([`WebhookEvent`], [`signature`]), and checkout sessions that ended unpaid
//!   (`checkout.session.expired`) by the same webhook with a [`SessionEvent`] body.
//!
//! The client classifies every failure: [`ProviderError::Unavailable`] (network, timeout, 5xx,
//! 429, our own credentials refused) is retried by the caller; [`ProviderError::Refused`] is
//! the provider's final word. It never reports success it did not receive.

pub mod signature;
pub mod whole_number;

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The header that makes a provider write idempotent.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateCheckoutSession {
    pub order_id: String,
    pub amount: i64,
    pub currency: String,
    /// When the session stops taking payments (Unix seconds): the order's deadline. Absent:
    /// the provider's own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// `manual`: the payment is only authorized, and captured later ([`CAPTURE_MANUAL`]).
    /// Absent: captured at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_method: Option<String>,
}

/// The `capture_method` of a session whose payment is authorized now and captured later.
pub const CAPTURE_MANUAL: &str = "manual";

/// `POST /v1/payments/{id}/capture`: capture an authorized payment, all of it when `amount`
/// is absent; what is not captured is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturePayment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutSessionObject {
    pub id: String,
    pub order_id: String,
    pub amount: i64,
    pub currency: String,
    /// `open`, then `paid` once captured, or `expired` (by its `expires_at`, or expired on
    /// request) and never payable again.
    pub status: String,
    /// Where the payer pays.
    pub url: String,
    /// When it stops taking payments (Unix seconds), if it was given a time.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// What asking the provider to expire a checkout session came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionExpiry {
    /// It takes no payment any more (it had expired already, or does now).
    Expired,
    /// It was paid before it could expire: that payment arrives as a webhook like any other.
    AlreadyPaid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRefund {
    pub payment_id: String,
    pub amount: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundObject {
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    pub status: String,
}

/// A payment as the provider holds it (`GET /v1/payments`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentObject {
    pub id: String,
    /// The order the payer paid for (the checkout session's order).
    pub order_id: String,
    #[serde(default)]
    pub session_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    /// `captured`; for a payment authorized on a manual-capture session, `authorized` until it
    /// is captured or `voided` (`expired` once `capture_before` passed uncaptured).
    pub status: String,
    /// How much of it has been refunded so far.
    pub amount_refunded: i64,
    /// How much of it was captured, when that is not all of `amount` (an authorization not
    /// captured yet, voided, or captured in part). Absent: all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_captured: Option<i64>,
    /// Until when an authorized payment can be captured (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_before: Option<i64>,
    /// When it was captured (Unix seconds).
    #[serde(default)]
    pub created: i64,
    /// How much of it the payer's bank disputes (a chargeback), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disputed_amount: Option<i64>,
    /// When the dispute was opened (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disputed_at: Option<i64>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// The `starting_after` of the next page (the id of this page's last item, by `id`), or
    /// `None` when this page is the last.
    pub fn next_cursor(&self, id: impl Fn(&T) -> &String) -> Option<String> {
        match self.data.last() {
            Some(last) if self.has_more => Some(id(last).clone()),
            _ => None,
        }
    }
}

/// Everything the provider holds for this account: every payment and every refund.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderLedger {
    pub payments: Vec<PaymentObject>,
    pub refunds: Vec<RefundObject>,
}

/// The page size the client asks for when it lists.
const PAGE_SIZE: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// The body of a webhook, `POST`ed to orderflow's `/v1/payments/webhook` with a
/// `Payment-Signature` header. The API parses and documents this very type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: String,
    pub payment_id: String,
    #[serde(deserialize_with = "whole_number::required")]
    pub amount: i64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// `payment.authorized` only: until when the payment can be captured (Unix seconds).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number::optional"
    )]
    pub capture_before: Option<i64>,
}

impl PaymentObject {
    /// Until when it can be captured (Unix ms), while it is an authorization not captured.
    pub fn authorized_until_ms(&self) -> Option<i64> {
        match self.status.as_str() {
            "authorized" | "expired" => self.capture_before.map(|s| s.saturating_mul(1000)),
            _ => None,
        }
    }

    /// What the provider holds of it now: its captured amount (all of it unless said
    /// otherwise), nothing while it is only authorized, voided or lapsed.
    pub fn captured(&self) -> i64 {
        match self.status.as_str() {
            "authorized" | "voided" | "expired" => 0,
            _ => self.amount_captured.unwrap_or(self.amount),
        }
    }
}

/// The body of a `checkout.session.expired` webhook: a checkout session ended unpaid (the
/// provider's own deadline, or an expiry asked for). It names the session and no payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionEvent {
    pub event_id: String,
    /// Always `checkout.session.expired`.
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: String,
    pub session_id: String,
    /// The session's amount.
    #[serde(deserialize_with = "whole_number::required")]
    pub amount: i64,
    pub currency: String,
}

/// What the webhook takes: a payment event, or a session event (told apart by `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum WebhookBody {
    Payment(WebhookEvent),
    Session(SessionEvent),
}

/// The active ISO 4217 currency codes. A webhook naming anything else is refused at the edge.
pub const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// Whether `code` is an active ISO 4217 currency code.
pub fn is_known_currency(code: &str) -> bool {
    ISO_4217.binary_search(&code).is_ok()
}

/// The event type of a captured payment.
pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";

/// The event type of a payment only authorized (a manual-capture session): it carries
/// `capture_before`, and is captured or voided later.
pub const PAYMENT_AUTHORIZED: &str = "payment.authorized";

/// The event type of a checkout session that ended unpaid ([`SessionEvent`]).
pub const CHECKOUT_SESSION_EXPIRED: &str = "checkout.session.expired";

/// The event type of a payment the payer's bank disputes: `amount` is the disputed amount.
pub const CHARGE_DISPUTED: &str = "charge.disputed";

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The call may have failed or may not have happened: retry with the same idempotency key.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider answered with a refusal that retrying cannot change.
    #[error("payment provider refused ({status}): {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
}

/// Where the provider is and how to authenticate.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Base URL, for example `http://127.0.0.1:8081`.
    pub base_url: String,
    pub api_key: String,
    /// The whole-request timeout of one call.
    pub timeout: Duration,
}

/// The HTTP client of the payment provider. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PaymentProvider {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl PaymentProvider {
    pub fn new(config: &ProviderConfig) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| {
                ProviderError::Unavailable(format!("cannot build the HTTP client: {e}"))
            })?;
        Ok(PaymentProvider {
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            api_key: config.api_key.clone(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Opens a checkout session. The same key returns the same session.
    pub async fn create_checkout_session(
        &self,
        request: &CreateCheckoutSession,
        idempotency_key: &str,
    ) -> Result<CheckoutSessionObject, ProviderError> {
        self.post("/v1/checkout_sessions", request, idempotency_key)
            .await
    }

    /// Ends a checkout session: no payment can be made on it from now on. Doing it again
    /// answers the same; a session already paid answers [`SessionExpiry::AlreadyPaid`] (the
    /// provider answers it with `status: paid`; a 409 would mean a concurrent request with the
    /// same key, and is retried).
    pub async fn expire_checkout_session(
        &self,
        session_id: &str,
    ) -> Result<SessionExpiry, ProviderError> {
        let path = format!("/v1/checkout_sessions/{session_id}/expire");
        let key = format!("expire-{session_id}");
        match self
            .post::<_, CheckoutSessionObject>(&path, &serde_json::json!({}), &key)
            .await
        {
            Ok(s) if s.status == "paid" => Ok(SessionExpiry::AlreadyPaid),
            Ok(_) => Ok(SessionExpiry::Expired),
            Err(e) => Err(e),
        }
    }

    /// Refunds a payment. The same key returns the same refund: a retry after a timeout that
    /// followed a success gets that success, not a second refund.
    pub async fn refund(
        &self,
        request: &CreateRefund,
        idempotency_key: &str,
    ) -> Result<RefundObject, ProviderError> {
        self.post("/v1/refunds", request, idempotency_key).await
    }

    /// Captures an authorized payment (all of it when `amount` is `None`), with the key
    /// `capture-{payment_id}`: a retry gets the same capture back. A payment voided or past
    /// `capture_before` is refused (`payment_voided`, `authorization_expired`).
    pub async fn capture(
        &self,
        payment_id: &str,
        amount: Option<i64>,
    ) -> Result<PaymentObject, ProviderError> {
        let path = format!("/v1/payments/{payment_id}/capture");
        let key = format!("capture-{payment_id}");
        self.post(&path, &CapturePayment { amount }, &key).await
    }

    /// Voids an authorized payment, with the key `void-{payment_id}`: nothing is charged and
    /// the payer's hold goes at once. A captured payment is refused with `already_captured`:
    /// it must be refunded instead.
    pub async fn void(&self, payment_id: &str) -> Result<PaymentObject, ProviderError> {
        let path = format!("/v1/payments/{payment_id}/void");
        let key = format!("void-{payment_id}");
        self.post(&path, &serde_json::json!({}), &key).await
    }

    /// Reads one payment; `None` if the provider has no such payment.
    pub async fn payment(&self, payment_id: &str) -> Result<Option<PaymentObject>, ProviderError> {
        match self.get(&format!("/v1/payments/{payment_id}")).await {
            Ok(p) => Ok(Some(p)),
            Err(ProviderError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every payment captured for `order_id`.
    pub async fn payments_for_order(
        &self,
        order_id: &str,
    ) -> Result<Vec<PaymentObject>, ProviderError> {
        let path = format!("/v1/payments?order_id={order_id}&");
        self.list(&path, |p: &PaymentObject| &p.id).await
    }

    /// One page of the payments captured at or after `created_gte` (Unix seconds), after the
    /// payment `starting_after`: what reconciliation's sweep reads, a page at a time, so that
    /// its cost is the window it sweeps, never the whole history.
    pub async fn payments_created_since(
        &self,
        created_gte: i64,
        starting_after: Option<&str>,
    ) -> Result<Page<PaymentObject>, ProviderError> {
        let path = format!("/v1/payments?created[gte]={created_gte}&");
        self.page(&path, starting_after).await
    }

    /// One page of the payments disputed at or after `disputed_gte` (Unix seconds), in id
    /// order.
    pub async fn payments_disputed_since(
        &self,
        disputed_gte: i64,
        starting_after: Option<&str>,
    ) -> Result<Page<PaymentObject>, ProviderError> {
        let path = format!("/v1/payments?disputed[gte]={disputed_gte}&");
        self.page(&path, starting_after).await
    }

    /// Lists every payment and every refund, page by page.
    pub async fn ledger(&self) -> Result<ProviderLedger, ProviderError> {
        Ok(ProviderLedger {
            payments: self.list("/v1/payments", |p: &PaymentObject| &p.id).await?,
            refunds: self.list("/v1/refunds", |r: &RefundObject| &r.id).await?,
        })
    }

    async fn list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        id: impl Fn(&T) -> &String,
    ) -> Result<Vec<T>, ProviderError> {
        let mut all: Vec<T> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page: Page<T> = self.page(path, after.as_deref()).await?;
            after = page.next_cursor(&id);
            all.extend(page.data);
            if after.is_none() {
                return Ok(all);
            }
        }
    }

    /// One page of `path` (which may end in `&` after its own filters) after `starting_after`.
    async fn page<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        starting_after: Option<&str>,
    ) -> Result<Page<T>, ProviderError> {
        let sep = if path.ends_with('&') { "" } else { "?" };
        let mut query = format!("{path}{sep}limit={PAGE_SIZE}");
        if let Some(after) = starting_after {
            query.push_str(&format!("&starting_after={after}"));
        }
        self.get(&query).await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ProviderError> {
        let url = format!("{}{path}", self.base_url);
        let request = self.http.get(&url).bearer_auth(&self.api_key);
        Self::answer(&url, "GET", request).await
    }

    async fn post<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        idempotency_key: &str,
    ) -> Result<T, ProviderError> {
        let url = format!("{}{path}", self.base_url);
        let request = self
            .http
            .post(&url)
            .bearer_auth(&self.api_key)
            .header(IDEMPOTENCY_HEADER, idempotency_key)
            .json(body);
        Self::answer(&url, "POST", request).await
    }

    /// Sends a request and classifies its answer (see [`ProviderError`]).
    async fn answer<T: serde::de::DeserializeOwned>(
        url: &str,
        method: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ProviderError> {
        let response = request
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("{method} {url}: {e}")))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            ProviderError::Unavailable(format!("{method} {url}: reading the answer: {e}"))
        })?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|e| {
                // A 2xx we cannot read: the operation may have happened. Retrying with the same
                // key is safe and is the only way to learn its result.
                ProviderError::Unavailable(format!(
                    "{method} {url}: unreadable success answer: {e}"
                ))
            });
        }
        let detail = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| ErrorDetail {
                code: format!("http_{}", status.as_u16()),
                message: text.chars().take(200).collect(),
            });
        let code = status.as_u16();
        if status.is_server_error() || matches!(code, 401 | 403 | 408 | 409 | 429) {
            // 401/403: our credentials are wrong; an operator must fix the configuration, and
            // the refund must then still happen. 409: a concurrent request with the same key.
            return Err(ProviderError::Unavailable(format!(
                "{method} {url}: {code} {}: {}",
                detail.code, detail.message
            )));
        }
        Err(ProviderError::Refused {
            status: code,
            code: detail.code,
            message: detail.message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_sorted_and_checked_exactly() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert!(is_known_currency("USD") && is_known_currency("EUR"));
        assert!(!is_known_currency("usd") && !is_known_currency("XXX") && !is_known_currency(""));
    }
}
