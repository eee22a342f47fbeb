//! How an order's workflow refuses an update, and how the API reads the refusal back: a typed
//! code that travels as the `ApplicationFailure` type, never as text to be parsed.
//!
//! An update validator (or handler) answers `Err(Refused::new(code, message).into())`. The SDK
//! wraps every handler error in an untyped failure of its own, so the typed failure goes one
//! level down, as its cause; [`Refused::from_failure`] reads the code from there. Nothing here
//! is stored in a history (a rejected update leaves no event), so codes may be added freely.

use serde::{Deserialize, Serialize};
use std::fmt;
use temporalio_common::protos::temporal::api::failure::v1::{Failure, failure::FailureInfo};
use temporalio_sdk::ApplicationFailure;

/// Why an order's workflow refused an update. The string form is the API's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// A cancel after the shipment left.
    OrderAlreadyShipped,
    /// A cancel of an order that is neither pending nor paid.
    OrderNotCancellable,
    /// A checkout for an order that is not waiting for its payment.
    OrderNotPayable,
    /// A ship of an order that is cancelled, shipped, or has nothing to ship.
    OrderNotShippable,
    /// The provider did not open a checkout session (worth retrying).
    ProviderUnavailable,
}

impl RefusalCode {
    pub const ALL: [RefusalCode; 5] = [
        RefusalCode::OrderAlreadyShipped,
        RefusalCode::OrderNotCancellable,
        RefusalCode::OrderNotPayable,
        RefusalCode::OrderNotShippable,
        RefusalCode::ProviderUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::OrderAlreadyShipped => "order_already_shipped",
            RefusalCode::OrderNotCancellable => "order_not_cancellable",
            RefusalCode::OrderNotPayable => "order_not_payable",
            RefusalCode::OrderNotShippable => "order_not_shippable",
            RefusalCode::ProviderUnavailable => "provider_unavailable",
        }
    }

    /// The code a failure type names, if it is one of ours.
    pub fn of_type(type_name: &str) -> Option<RefusalCode> {
        RefusalCode::ALL
            .into_iter()
            .find(|c| c.as_str() == type_name)
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused update: the code, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: RefusalCode,
    pub message: String,
}

impl Refused {
    pub fn new(code: RefusalCode, message: impl Into<String>) -> Self {
        Refused {
            code,
            message: message.into(),
        }
    }

    /// Reads a refusal back from the failure an update answered with: the typed failure is
    /// its cause (see the module doc). `None` for any other failure.
    pub fn from_failure(failure: &Failure) -> Option<Refused> {
        let mut chain = std::iter::successors(Some(failure), |f| f.cause.as_deref());
        chain.find_map(|f| match &f.failure_info {
            Some(FailureInfo::ApplicationFailureInfo(info)) => {
                RefusalCode::of_type(&info.r#type).map(|code| Refused::new(code, &f.message))
            }
            _ => None,
        })
    }
}

/// The error an update handler returns: its message is the refusal's, and its source is the
/// typed failure the SDK encodes as the cause.
#[derive(Debug)]
struct RefusalError {
    message: String,
    typed: ApplicationFailure,
}

impl fmt::Display for RefusalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RefusalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.typed)
    }
}

impl From<Refused> for Box<dyn std::error::Error + Send + Sync> {
    fn from(r: Refused) -> Self {
        let typed = ApplicationFailure::builder(r.message.clone())
            .type_name(r.code.as_str().to_owned())
            .non_retryable(true)
            .build();
        Box::new(RefusalError {
            message: r.message,
            typed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use temporalio_common::data_converters::{
        DataConverter, SerializationContextData, WorkflowSerializationContext,
    };
    use temporalio_common::error::{OutgoingError, OutgoingWorkflowError};

    /// Encodes a handler error the way the SDK does for a rejected update.
    fn as_the_sdk_sends(err: Box<dyn std::error::Error + Send + Sync>) -> Failure {
        DataConverter::default().to_failure(
            &SerializationContextData::Workflow(WorkflowSerializationContext::new()),
            OutgoingError::Workflow(OutgoingWorkflowError::Application(Box::new(
                ApplicationFailure::new(err),
            ))),
        )
    }

    #[test]
    fn a_refusal_keeps_its_code_through_the_sdks_encoding() {
        for code in RefusalCode::ALL {
            let failure = as_the_sdk_sends(Refused::new(code, "the order is cancelled").into());
            assert_eq!(failure.message, "the order is cancelled");
            assert_eq!(
                Refused::from_failure(&failure),
                Some(Refused::new(code, "the order is cancelled"))
            );
        }
    }

    #[test]
    fn an_untyped_failure_is_no_refusal() {
        let failure = as_the_sdk_sends("order_not_payable: looks like one".into());
        assert_eq!(Refused::from_failure(&failure), None);
    }
}
