//! The error answers operations share, as response sets for `#[utoipa::path]`: one table of
//! what each error status means, and one set per thing an operation does (takes a token, is
//! for admins, reads a JSON body, names a record). An operation lists the sets that apply and
//! adds only the answers that are its own (a 409 and why).
//!
//! Every error answer here has the one error shape, `ErrorBody`. This module must never
//! describe a status an operation in its set cannot answer.

use std::collections::BTreeMap;
use utoipa::IntoResponses;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

/// What an error status means in every operation that answers it.
fn meaning(status: u16) -> &'static str {
    match status {
        400 => "the body is not JSON, or a required header is missing or invalid",
        401 => "missing, malformed, forged or expired token",
        403 => "not an admin token, or a user_id that is not the token's subject",
        404 => "not found (or another user's)",
        413 => "body too large",
        415 => "the body is not application/json",
        422 => "invalid input or a business refusal, with a stable code",
        503 => "the database, Temporal or the provider is unavailable; retry",
        _ => unreachable!("no shared meaning for status {status}"),
    }
}

/// An error answer in the one error shape.
fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

fn set(statuses: &[u16]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|&s| (s.to_string(), error(meaning(s))))
        .collect()
}

macro_rules! response_sets {
    ($($(#[doc = $doc:literal])* $name:ident = [$($status:literal),*];)*) => {
        $(
            $(#[doc = $doc])*
            pub struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    set(&[$($status),*])
                }
            }
        )*
    };
}

response_sets! {
    /// An operation that needs a token (user or admin), and so a working store.
    WithToken = [401, 503];
    /// An operation under `/v1/admin`.
    ForAdmins = [401, 403, 503];
    /// An operation that reads a JSON body.
    WithBody = [400, 413, 415, 422];
    /// An operation on a record named in its path.
    OnRecord = [404];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_answer_in_the_error_shape() {
        let admin = ForAdmins::responses();
        assert_eq!(
            admin.keys().map(String::as_str).collect::<Vec<_>>(),
            ["401", "403", "503"]
        );
        let RefOr::T(forbidden) = &admin["403"] else {
            panic!("inline response")
        };
        assert!(forbidden.content.contains_key("application/json"));
    }
}
