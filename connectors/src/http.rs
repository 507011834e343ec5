//! The shared HTTP client and the retry loop every connector uses.

use std::future::Future;
use std::time::Duration;

use axum::http::HeaderMap;
use backon::{ExponentialBuilder, Retryable};

use crate::error::ConnectorError;

/// Back-off for transient failures. A vendor-given wait (`Retry-After`, reset headers) replaces
/// the computed delay, capped at `max_delay`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(60),
            max_retries: 6,
        }
    }
}

/// One reqwest client per connector instance (rustls with aws-lc-rs).
pub fn build_client(timeout: Duration) -> Result<reqwest::Client, ConnectorError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("huitong/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConnectorError::permanent("http", format!("cannot build HTTP client: {e}")))
}

/// Runs `op`, retrying transient failures (`Retryable`, `RateLimited`) with exponential back-off
/// and jitter, honouring the wait the vendor asked for. `AuthExpired` and `Permanent` return at
/// once: token refresh is the caller's business.
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    op: F,
) -> Result<T, ConnectorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConnectorError>>,
{
    let max = policy.max_delay;
    let backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .with_jitter();
    op.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &ConnectorError| e.is_transient())
        .adjust(move |e: &ConnectorError, dur| {
            dur.map(|d| e.retry_after().map_or(d, |ra| ra.min(max)))
        })
        .notify(|e: &ConnectorError, wait| {
            tracing::warn!(call = what, class = ?e.class(), code = ?e.code(), wait_ms = wait.as_millis() as u64, error = %e, "retrying vendor call");
        })
        .await
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these vendors).
pub fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    header_secs(headers, "retry-after")
}

/// A header holding a number of seconds.
pub fn header_secs(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    let secs: f64 = v.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// Reads a response body, refusing more than `limit` bytes.
pub async fn read_limited(
    vendor: &'static str,
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ConnectorError> {
    if resp.content_length().is_some_and(|n| n as usize > limit) {
        return Err(ConnectorError::permanent(
            vendor,
            format!("response larger than {limit} bytes"),
        ));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        // Without the URL: some vendors put the access token in the query.
        .map_err(|e| ConnectorError::from_transport(vendor, &e.without_url()))?
    {
        if out.len() + chunk.len() > limit {
            return Err(ConnectorError::permanent(
                vendor,
                format!("response larger than {limit} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_retries: 3,
        }
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds() {
        let n = AtomicUsize::new(0);
        let r = with_retry(&fast(), "t", || async {
            if n.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(ConnectorError::from_status("x", 503, None, "busy"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r, Ok(7));
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_is_not_retried() {
        let n = AtomicUsize::new(0);
        let r: Result<(), _> = with_retry(&fast(), "t", || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(ConnectorError::from_status("x", 400, None, "bad"))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let n = AtomicUsize::new(0);
        let r: Result<(), _> = with_retry(&fast(), "t", || async {
            n.fetch_add(1, Ordering::SeqCst);
            Err(ConnectorError::from_status(
                "x",
                429,
                Some(Duration::from_secs(3600)),
                "slow",
            ))
        })
        .await;
        assert!(matches!(r, Err(ConnectorError::RateLimited { .. })));
        assert_eq!(n.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn header_parsing() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        h.insert("x-reset", "garbage".parse().unwrap());
        assert_eq!(retry_after_header(&h), Some(Duration::from_secs(3)));
        assert_eq!(header_secs(&h, "x-reset"), None);
        assert_eq!(header_secs(&h, "missing"), None);
    }
}
