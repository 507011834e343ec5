//! The one error type every connector returns, classified so the queue's retry policy can act.

use std::time::Duration;

/// How a vendor call failed, from the vendor's own error codes and HTTP statuses.
///
/// - `Retryable`: transient (HTTP 5xx, timeouts, the vendor's "busy" codes); retry with back-off.
/// - `RateLimited`: the vendor's rate limit; retry after `retry_after` (from `Retry-After` or the
///   vendor's reset header) or the policy's back-off when the vendor gave none.
/// - `AuthExpired`: the token was rejected as expired/invalid; refetch the token once, then retry.
/// - `Permanent`: retrying cannot help (bad input, missing scope, not found, bad credentials).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectorError {
    #[error("{vendor}: retryable failure (code {code:?}, http {status:?}): {message}")]
    Retryable {
        vendor: &'static str,
        code: Option<i64>,
        status: Option<u16>,
        message: String,
    },
    #[error("{vendor}: rate limited (code {code:?}, retry after {retry_after:?}): {message}")]
    RateLimited {
        vendor: &'static str,
        code: Option<i64>,
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("{vendor}: access token expired or invalid (code {code:?}): {message}")]
    AuthExpired {
        vendor: &'static str,
        code: Option<i64>,
        message: String,
    },
    #[error("{vendor}: permanent failure (code {code:?}, http {status:?}): {message}")]
    Permanent {
        vendor: &'static str,
        code: Option<i64>,
        status: Option<u16>,
        message: String,
    },
}

/// The coarse class of a [`ConnectorError`], for metrics and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Retryable,
    RateLimited,
    AuthExpired,
    Permanent,
}

impl ConnectorError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Retryable { .. } => ErrorClass::Retryable,
            Self::RateLimited { .. } => ErrorClass::RateLimited,
            Self::AuthExpired { .. } => ErrorClass::AuthExpired,
            Self::Permanent { .. } => ErrorClass::Permanent,
        }
    }

    /// True when the same call may succeed later without any change (5xx, busy, rate limit).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Retryable { .. } | Self::RateLimited { .. })
    }

    /// The wait the vendor asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The vendor's own error code, if the failure carried one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Retryable { code, .. }
            | Self::RateLimited { code, .. }
            | Self::AuthExpired { code, .. }
            | Self::Permanent { code, .. } => *code,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Retryable { message, .. }
            | Self::RateLimited { message, .. }
            | Self::AuthExpired { message, .. }
            | Self::Permanent { message, .. } => message,
        }
    }

    /// A permanent error without a vendor code: bad configuration, bad input given to us, or a
    /// malformed vendor response.
    pub fn permanent(vendor: &'static str, message: impl Into<String>) -> Self {
        Self::Permanent {
            vendor,
            code: None,
            status: None,
            message: message.into(),
        }
    }

    /// Classifies a transport-level failure (no HTTP response or unreadable body).
    pub fn from_transport(vendor: &'static str, err: &reqwest::Error) -> Self {
        // Timeouts, refused/reset connections and truncated bodies are all worth retrying;
        // a request we could not even build is not.
        if err.is_builder() {
            Self::permanent(vendor, format!("cannot build request: {err}"))
        } else {
            Self::Retryable {
                vendor,
                code: None,
                status: err.status().map(|s| s.as_u16()),
                message: format!("transport: {err}"),
            }
        }
    }

    /// Classifies a bare HTTP status when the body carried no vendor code.
    pub fn from_status(
        vendor: &'static str,
        status: u16,
        retry_after: Option<Duration>,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        match status {
            429 => Self::RateLimited {
                vendor,
                code: None,
                retry_after,
                message,
            },
            401 => Self::AuthExpired {
                vendor,
                code: None,
                message,
            },
            408 | 500..=599 => Self::Retryable {
                vendor,
                code: None,
                status: Some(status),
                message,
            },
            _ => Self::Permanent {
                vendor,
                code: None,
                status: Some(status),
                message,
            },
        }
    }
}

/// A delete's outcome with "not found" (one of the vendor's `not_found` codes) counted as done:
/// the record is gone either way — a retry after a lost reply, or someone deleted it first.
pub fn gone_is_done<T>(
    r: Result<T, ConnectorError>,
    not_found: &[i64],
) -> Result<(), ConnectorError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code().is_some_and(|c| not_found.contains(&c)) => {
            tracing::info!(code = ?e.code(), "deleting a record already gone");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classification() {
        let e = ConnectorError::from_status("x", 429, Some(Duration::from_secs(3)), "slow down");
        assert_eq!(e.class(), ErrorClass::RateLimited);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert!(e.is_transient());
        assert_eq!(
            ConnectorError::from_status("x", 503, None, "").class(),
            ErrorClass::Retryable
        );
        assert_eq!(
            ConnectorError::from_status("x", 401, None, "").class(),
            ErrorClass::AuthExpired
        );
        let p = ConnectorError::from_status("x", 404, None, "missing");
        assert_eq!(p.class(), ErrorClass::Permanent);
        assert!(!p.is_transient());
        assert_eq!(p.message(), "missing");
    }
}
