//! "Sometimes" markers (issue 11): rare branches of the order workflow that the soak must see
//! reached at least once, or it fails, as Antithesis-style "sometimes" assertions do.
//!
//! Each is one `info` line on the target `orderflow::sometimes` naming the branch and the order.
//! A marker must never change what the workflow does: no command, no state, so adding one needs
//! no `patched` marker. A replay logs it again, which is harmless: the soak only asks whether a
//! branch was ever reached.

/// A payment signal for a payment the workflow already had (another event id of the same
/// payment): dropped by `payment_id`.
pub const DUPLICATE_PAYMENT_SIGNAL: &str = "sometimes:duplicate_payment_signal";
/// A payment and a passed deadline seen in the same workflow task: the payment wins.
pub const PAYMENT_AND_DEADLINE_TOGETHER: &str = "sometimes:payment_and_deadline_together";
/// A checkout opened near the deadline moved it later.
pub const CHECKOUT_EXTENDED_DEADLINE: &str = "sometimes:checkout_extended_deadline";

/// Every marker the workflows log.
pub const ALL: [&str; 3] = [
    DUPLICATE_PAYMENT_SIGNAL,
    PAYMENT_AND_DEADLINE_TOGETHER,
    CHECKOUT_EXTENDED_DEADLINE,
];

/// Logs that `branch` was reached for `order_id`.
pub fn reached(branch: &'static str, order_id: &str) {
    tracing::info!(target: "orderflow::sometimes", order_id, "{branch}");
}
