//! Authentication and authorisation: `Authorization: Bearer <JWT>`, HS256 with the configured
//! secret. `sub` is the user; `role` is `user` or `admin`; `exp` is required.
//!
//! - [`Caller`] extracts and verifies the token (401 `unauthorized` when missing, malformed,
//!   forged or expired). A user acts for themself only; an admin acts for anyone.
//! - [`Admin`] additionally requires `role = admin` (403 `forbidden`).
//! - Another user's object answers 404, exactly like a missing one, so that ids do not leak:
//!   handlers call [`Caller::owns`] and map `false` to their own not-found error.
//!
//! The webhook takes no token (its signature authenticates it). Never log a token.

use crate::AppState;
use crate::error::{ApiError, ErrorCode};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller may see and act on what belongs to `user_id`.
    pub fn owns(&self, user_id: &str) -> bool {
        self.is_admin() || self.user_id == user_id
    }

    /// The user a request body is for: taken from the token if absent; if present, it must be
    /// the caller's own (admins may name anyone).
    pub fn user_for(&self, named: Option<&str>) -> Result<String, ApiError> {
        match named {
            None => Ok(self.user_id.clone()),
            Some(u) if self.owns(u) => Ok(u.to_owned()),
            Some(_) => Err(ApiError::new(
                ErrorCode::UserMismatch,
                "user_id must be the token's subject",
            )),
        }
    }
}

/// A caller with `role = admin`.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

/// Mints a token (for `orderflow token`, `orderflow dev` and tests).
pub fn mint(secret: &str, sub: &str, role: Role, ttl_secs: u64) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + ttl_secs;
    let claims = Claims {
        sub: sub.to_owned(),
        role,
        exp,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 encoding cannot fail")
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// Verifies a bearer token: HS256 only (no `none`, no other algorithm), signature, `exp`.
pub fn verify(secret: &str, header: Option<&str>) -> Result<Caller, ApiError> {
    let header = header
        .ok_or_else(|| unauthorized("an Authorization: Bearer <token> header is required"))?;
    let token = header
        .strip_prefix("Bearer ")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("the Authorization header must be Bearer <token>"))?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| unauthorized(&format!("the token is not valid: {e}")))?;
    if data.claims.sub.is_empty() {
        return Err(unauthorized("the token has no subject"));
    }
    Ok(Caller {
        user_id: data.claims.sub,
        role: data.claims.role,
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        let caller = verify(&state.config.jwt_secret, header)?;
        tracing::Span::current().record("user_id", caller.user_id.as_str());
        Ok(caller)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.is_admin() {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "this route needs an admin token",
            ));
        }
        Ok(Admin(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_and_a_forged_or_expired_one_does_not() {
        let t = mint("s3cret", "alice", Role::User, 60);
        let c = verify("s3cret", Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!((c.user_id.as_str(), c.role), ("alice", Role::User));
        assert!(verify("other", Some(&format!("Bearer {t}"))).is_err());
        assert!(verify("s3cret", None).is_err());
        assert!(verify("s3cret", Some(&t)).is_err(), "no Bearer prefix");
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "alice".into(),
                role: Role::Admin,
                exp: 1,
            },
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(verify("s3cret", Some(&format!("Bearer {expired}"))).is_err());
        // alg=none is refused.
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
            "eyJzdWIiOiJhbGljZSIsInJvbGUiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OX0"
        );
        assert!(verify("s3cret", Some(&format!("Bearer {none}"))).is_err());
    }

    #[test]
    fn users_act_for_themselves_and_admins_for_anyone() {
        let alice = Caller {
            user_id: "alice".into(),
            role: Role::User,
        };
        assert!(alice.owns("alice") && !alice.owns("bob"));
        assert_eq!(alice.user_for(None).unwrap(), "alice");
        assert!(alice.user_for(Some("bob")).is_err());
        let admin = Caller {
            user_id: "ops".into(),
            role: Role::Admin,
        };
        assert_eq!(admin.user_for(Some("bob")).unwrap(), "bob");
    }
}
