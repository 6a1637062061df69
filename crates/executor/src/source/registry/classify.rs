//! What a failure means for the pull: oci-client's and reqwest's errors and a
//! registry's answers turned into [`SourceError`]s (unreachable, not found,
//! unauthorized, worth another try or not), and the headers that qualify them:
//! `Retry-After` and a resumed download's `Content-Range`.

use crate::error::error_chain;
use crate::source::SourceError;
use oci_client::Reference;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_spec::image::Digest;
use std::str::FromStr;
use std::time::Duration;

/// A `Retry-After` value: delay seconds, or an HTTP date (IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`) turned into the time left until then.
pub(super) fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate is RFC 2822's form with `GMT`; chrono reads both.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let left = at.signed_duration_since(chrono::DateTime::<chrono::Utc>::from(now));
    // A date in the past means: now.
    Some(left.to_std().unwrap_or(Duration::ZERO))
}

/// The first byte position of a `Content-Range: bytes START-END/TOTAL` header.
pub(super) fn content_range_start(value: &str) -> Option<u64> {
    value
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

pub(super) fn classify_reqwest(registry: &str, what: &str, e: reqwest::Error) -> SourceError {
    let detail = error_chain(&e);
    if e.is_connect() {
        SourceError::Unreachable {
            registry: registry.to_owned(),
            detail,
        }
    } else {
        // Timeouts, resets, truncated bodies: worth another try.
        SourceError::Transient {
            what: what.to_owned(),
            detail,
            retry_after: None,
        }
    }
}

pub(super) fn parse_digest(text: &str, what: &str) -> Result<Digest, SourceError> {
    Digest::from_str(text).map_err(|e| SourceError::Registry {
        what: what.to_owned(),
        detail: format!("bad digest {text}: {e}"),
    })
}

pub(super) fn classify(
    reference: &Reference,
    what: &str,
    err: OciDistributionError,
) -> SourceError {
    let registry = reference.registry().to_owned();
    let what = what.to_owned();
    match err {
        OciDistributionError::RequestError(e) => {
            let detail = error_chain(&e);
            if e.is_connect() {
                SourceError::Unreachable { registry, detail }
            } else if e.is_timeout() || e.is_body() || e.is_request() || e.is_decode() {
                SourceError::Transient {
                    what,
                    detail,
                    retry_after: None,
                }
            } else {
                SourceError::Registry { what, detail }
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => SourceError::Unauthorized {
            reference: reference.to_string(),
        },
        OciDistributionError::ImageManifestNotFoundError(detail) => SourceError::NotFound {
            reference: reference.to_string(),
            detail,
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let detail = envelope.to_string();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                SourceError::NotFound {
                    reference: reference.to_string(),
                    detail,
                }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                SourceError::Unauthorized {
                    reference: reference.to_string(),
                }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                SourceError::Transient {
                    what,
                    detail,
                    retry_after: None,
                }
            } else {
                SourceError::Registry { what, detail }
            }
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let detail = format!("HTTP {code}: {}", message.trim());
            match code {
                404 => SourceError::NotFound {
                    reference: reference.to_string(),
                    detail,
                },
                429 | 500..=599 => SourceError::Transient {
                    what,
                    detail,
                    retry_after: None,
                },
                _ => SourceError::Registry { what, detail },
            }
        }
        // oci-client checks a manifest against `Docker-Content-Digest` (or the pinned
        // digest). A mismatch is most often a body cut short or mangled on the way, so
        // it is retried; a registry that keeps lying still fails, naming both digests.
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => SourceError::Transient {
            what,
            detail: format!(
                "manifest digest mismatch: expected {expected}, content hashes to {actual}"
            ),
            retry_after: None,
        },
        OciDistributionError::IoError(e) => SourceError::Transient {
            what,
            detail: error_chain(&e),
            retry_after: None,
        },
        other => SourceError::Registry {
            what,
            detail: error_chain(&other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference {
        "127.0.0.1:5000/app:v1".parse().unwrap()
    }

    #[test]
    fn server_errors_classify_for_retry() {
        let err = |code| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        assert!(classify(&reference(), "x", err(503)).is_transient());
        assert!(classify(&reference(), "x", err(429)).is_transient());
        assert!(matches!(
            classify(&reference(), "x", err(404)),
            SourceError::NotFound { .. }
        ));
        assert!(!classify(&reference(), "x", err(400)).is_transient());
    }

    #[test]
    fn missing_tag_says_which_reference() {
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        )
        .unwrap();
        let err = classify(
            &reference(),
            "x",
            OciDistributionError::RegistryError {
                envelope,
                url: "u".into(),
            },
        );
        assert!(matches!(err, SourceError::NotFound { .. }));
        assert!(err.to_string().contains("127.0.0.1:5000/app:v1"), "{err}");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_767); // 08:49:27
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(10))
        );
        // A date in the past means: now.
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn content_range_start_is_parsed() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/1"), Some(0));
        assert_eq!(content_range_start("bytes */200"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }
}
