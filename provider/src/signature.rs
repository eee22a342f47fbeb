//! The webhook signature: `Payment-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
//!
//! Verification runs on the raw bytes before anything is parsed, compares in constant time
//! (`Mac::verify_slice`), enforces the timestamp tolerance, and accepts any of the configured
//! secrets so that a rotation needs no downtime. It never logs a secret or a signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header name, as sent by providers.
pub const HEADER: &str = "payment-signature";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str, t: i64, body: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value a provider would send for `body` at Unix time `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!(
        "t={t},v1={}",
        hex::encode(mac(secret, t, body).finalize().into_bytes())
    )
}

/// Why a signature was refused. Each maps to a 401 with its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Payment-Signature header is missing")]
    Missing,
    #[error("the Payment-Signature header is malformed: expected t=<unix>,v1=<hex>")]
    Malformed,
    #[error("the signature timestamp is outside the allowed tolerance")]
    Expired,
    #[error("the signature does not match")]
    Mismatch,
}

impl SignatureError {
    pub fn code(self) -> &'static str {
        match self {
            SignatureError::Missing => "signature_missing",
            SignatureError::Malformed => "signature_malformed",
            SignatureError::Expired => "signature_expired",
            SignatureError::Mismatch => "signature_invalid",
        }
    }
}

/// Verifies a header against the raw body with any of `secrets`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => {
                t = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?)
            }
            Some(("t", _)) => return Err(SignatureError::Malformed),
            Some(("v1", v)) => {
                candidates.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?)
            }
            Some((_, _)) => {} // other schemes are ignored: only v1 can authenticate
            None => return Err(SignatureError::Malformed),
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now_secs.abs_diff(t) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Expired);
    }
    let matched = secrets.iter().filter(|s| !s.is_empty()).any(|secret| {
        candidates
            .iter()
            .any(|sig| mac(secret, t, body).verify_slice(sig).is_ok())
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn secrets() -> Vec<String> {
        vec!["whsec_new".into(), "whsec_old".into()]
    }

    #[test]
    fn a_signature_by_either_rotation_secret_verifies() {
        let body = br#"{"a":1}"#;
        for secret in secrets() {
            assert_eq!(
                verify(Some(&sign(&secret, NOW, body)), body, &secrets(), NOW, 300),
                Ok(())
            );
        }
    }

    #[test]
    fn a_tampered_body_or_a_wrong_secret_is_a_mismatch() {
        let header = sign("whsec_new", NOW, b"{\"amount\":100}");
        assert_eq!(
            verify(Some(&header), b"{\"amount\":1}", &secrets(), NOW, 300),
            Err(SignatureError::Mismatch)
        );
        let header = sign("whsec_other", NOW, b"x");
        assert_eq!(
            verify(Some(&header), b"x", &secrets(), NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn old_or_future_timestamps_are_refused() {
        let header = sign("whsec_new", NOW - 301, b"x");
        assert_eq!(
            verify(Some(&header), b"x", &secrets(), NOW, 300),
            Err(SignatureError::Expired)
        );
        let header = sign("whsec_new", NOW + 301, b"x");
        assert_eq!(
            verify(Some(&header), b"x", &secrets(), NOW, 300),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn malformed_and_missing_headers_are_refused() {
        assert_eq!(
            verify(None, b"x", &secrets(), NOW, 300),
            Err(SignatureError::Missing)
        );
        for h in [
            "",
            "t=abc,v1=00",
            "v1=00",
            "t=1",
            "t=1,v1=zz",
            "t=1,t=2,v1=00",
            "t=1,v0=00",
        ] {
            assert_eq!(
                verify(Some(h), b"x", &secrets(), NOW, 300),
                Err(SignatureError::Malformed),
                "{h}"
            );
        }
    }
}
