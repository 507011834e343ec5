//! Access-token manager: fetch, cache, refresh ahead of expiry, refetch once when the vendor says
//! the token is invalid, and at most one fetch in flight at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::HeaderMap;
use secrecy::SecretString;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::client::ErrorTable;
use crate::error::ConnectorError;

/// A freshly fetched token and how long the vendor says it lives.
pub struct FetchedToken {
    pub token: SecretString,
    pub expires_in: Duration,
}

/// How a vendor mints tokens.
#[async_trait]
pub trait TokenSource: Send + Sync {
    async fn fetch(&self) -> Result<FetchedToken, ConnectorError>;
}

/// A token handed out by the manager. `generation` identifies it so that an invalidation only
/// drops the token the caller actually used (not one another task already refreshed).
#[derive(Clone)]
pub struct Token {
    pub secret: SecretString,
    pub generation: u64,
}

struct Cached {
    token: Token,
    refresh_at: Instant,
    expires_at: Instant,
}

/// Caches a vendor token. Cheap to share behind an `Arc`.
pub struct TokenManager<S> {
    source: S,
    refresh_ahead: Duration,
    cached: Mutex<Option<Cached>>,
    generation: AtomicU64,
    fetches: AtomicU64,
}

impl<S: TokenSource> TokenManager<S> {
    /// `refresh_ahead`: refetch when less than this remains (capped at half the token's life so
    /// very short-lived tokens are still used).
    pub fn new(source: S, refresh_ahead: Duration) -> Self {
        Self {
            source,
            refresh_ahead,
            cached: Mutex::new(None),
            generation: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many times the source was asked for a token.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A valid token, from the cache or freshly fetched. Concurrent callers wait for one fetch.
    pub async fn get(&self) -> Result<Token, ConnectorError> {
        // Holding the async mutex across the fetch is what keeps one fetch in flight.
        let mut guard = self.cached.lock().await;
        let now = Instant::now();
        if let Some(c) = guard.as_ref()
            && now < c.refresh_at
            && now < c.expires_at
        {
            return Ok(c.token.clone());
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let fetched = match self.source.fetch().await {
            Ok(f) => f,
            Err(e) => {
                // A refresh ahead of expiry that fails may still fall back to the cached token.
                if let Some(c) = guard.as_ref()
                    && now < c.expires_at
                {
                    tracing::warn!(error = %e, "token refresh failed; using the cached token until it expires");
                    return Ok(c.token.clone());
                }
                return Err(e);
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let ahead = self.refresh_ahead.min(fetched.expires_in / 2);
        let expires_at = now + fetched.expires_in;
        let token = Token {
            secret: fetched.token,
            generation,
        };
        tracing::debug!(
            generation,
            expires_in_s = fetched.expires_in.as_secs(),
            "fetched access token"
        );
        *guard = Some(Cached {
            token: token.clone(),
            refresh_at: expires_at - ahead,
            expires_at,
        });
        Ok(token)
    }

    /// Drops `used` from the cache (the vendor rejected it), unless it was already replaced.
    pub async fn invalidate(&self, used: &Token) {
        let mut guard = self.cached.lock().await;
        if guard
            .as_ref()
            .is_some_and(|c| c.token.generation == used.generation)
        {
            tracing::info!(
                generation = used.generation,
                "access token rejected by vendor; dropping it"
            );
            *guard = None;
        }
    }
}

/// How long a token lives when the vendor's reply does not say (or says 0): the vendors'
/// documented lifetime. A missing field must not mean "expires now", which would refetch on
/// every call.
pub const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(7200);

/// What differs between vendors' token endpoints: the request and how its reply reads.
pub trait TokenWire: Send + Sync + 'static {
    fn vendor(&self) -> &'static str;
    /// For logs: e.g. `feishu.tenant_access_token`.
    fn what(&self) -> &'static str;
    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder;
    /// The token of a reply, or the classified failure (a token-invalid answer here means bad
    /// credentials and is made permanent by the caller).
    fn reply(
        &self,
        status: u16,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<FetchedToken, ConnectorError>;
}

/// A token fetched over HTTP, with retries; counted in the connector telemetry.
pub struct HttpTokenSource<T> {
    pub(crate) http: reqwest::Client,
    pub(crate) retry: crate::http::RetryPolicy,
    pub(crate) wire: T,
}

impl<T: TokenWire> HttpTokenSource<T> {
    pub fn new(http: reqwest::Client, retry: crate::http::RetryPolicy, wire: T) -> Self {
        Self { http, retry, wire }
    }

    async fn fetch_once(&self) -> Result<FetchedToken, ConnectorError> {
        let vendor = self.wire.vendor();
        // Without the URL: WeCom puts the secret in the query.
        let resp = self
            .wire
            .request(&self.http)
            .send()
            .await
            .map_err(|e| ConnectorError::from_transport(vendor, &e.without_url()))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = crate::http::read_limited(vendor, resp, 64 * 1024).await?;
        self.wire
            .reply(status, &headers, &body)
            .map_err(|e| crate::client::credentials_refused(e, status))
    }
}

#[async_trait]
impl<T: TokenWire> TokenSource for HttpTokenSource<T> {
    async fn fetch(&self) -> Result<FetchedToken, ConnectorError> {
        crate::telemetry::token_fetch(self.wire.vendor());
        crate::http::with_retry(&self.retry, self.wire.what(), || self.fetch_once()).await
    }
}

/// The token and its lifetime under these keys of a reply object.
pub fn token_from(
    vendor: &'static str,
    v: &serde_json::Value,
    token_key: &str,
    life_key: &str,
) -> Result<FetchedToken, ConnectorError> {
    let token = v
        .get(token_key)
        .and_then(serde_json::Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ConnectorError::permanent(vendor, format!("token reply without {token_key}"))
        })?;
    let life = v
        .get(life_key)
        .and_then(serde_json::Value::as_u64)
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TOKEN_LIFE, Duration::from_secs);
    Ok(FetchedToken {
        token: SecretString::from(token.to_string()),
        expires_in: life,
    })
}

/// How a token endpoint's reply reads: the reply object, or the vendor's classified error.
#[derive(Clone, Copy)]
pub enum ReadToken {
    /// A `{code, msg, …}` object ([`coded_object`]), with the vendor's table and the keys of
    /// its code and message.
    Coded(&'static ErrorTable, (&'static str, &'static str)),
    /// A reader of the vendor's own.
    With(fn(u16, &HeaderMap, &[u8]) -> Result<serde_json::Value, ConnectorError>),
}

/// How an app's credentials travel: the names of its id and secret, as a JSON `POST` body or
/// in the query string of a `GET` (WeCom).
#[derive(Clone, Copy)]
pub enum Credentials {
    Json(&'static str, &'static str),
    Query(&'static str, &'static str),
}

/// A vendor's token endpoint, as data; [`TokenEndpoint::call`] adds an app's origin and
/// credentials.
#[derive(Clone, Copy)]
pub struct TokenEndpoint {
    /// Under the origin; also what logs call the token call.
    pub path: &'static str,
    pub credentials: Credentials,
    pub read: ReadToken,
    /// The keys of the token and of its lifetime in the reply.
    pub keys: (&'static str, &'static str),
}

impl TokenEndpoint {
    /// The token call of the app `id` / `secret` at `origin`.
    pub fn call(
        self,
        vendor: &'static str,
        origin: &str,
        id: &str,
        secret: &SecretString,
    ) -> TokenCall {
        TokenCall {
            vendor,
            url: format!("{origin}{}", self.path),
            id: id.to_owned(),
            secret: secret.clone(),
            endpoint: self,
        }
    }
}

/// One app's token call, as data: where it goes, the app's credentials and how the reply
/// reads. Every vendor's tokens come from one.
pub struct TokenCall {
    pub vendor: &'static str,
    pub url: String,
    pub id: String,
    pub secret: SecretString,
    pub endpoint: TokenEndpoint,
}

impl TokenWire for TokenCall {
    fn vendor(&self) -> &'static str {
        self.vendor
    }
    fn what(&self) -> &'static str {
        self.endpoint.path
    }
    fn request(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        use secrecy::ExposeSecret;
        let (id, secret) = (self.id.as_str(), self.secret.expose_secret());
        match self.endpoint.credentials {
            Credentials::Query(id_key, secret_key) => http
                .get(&self.url)
                .query(&[(id_key, id), (secret_key, secret)]),
            Credentials::Json(id_key, secret_key) => http
                .post(&self.url)
                .json(&serde_json::json!({id_key: id, secret_key: secret})),
        }
    }
    fn reply(
        &self,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<FetchedToken, ConnectorError> {
        let v = match self.endpoint.read {
            ReadToken::Coded(table, keys) => coded_object(table, status, headers, body, keys)?,
            ReadToken::With(read) => read(status, headers, body)?,
        };
        let (token_key, life_key) = self.endpoint.keys;
        token_from(self.vendor, &v, token_key, life_key)
    }
}

/// The object of a reply in a `{code, msg, …}` envelope whose success is code 0 (Feishu,
/// WeCom, DingTalk's old generation); a non-JSON reply is classified by its status.
pub fn coded_object(
    table: &crate::client::ErrorTable,
    status: u16,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    (code_key, msg_key): (&str, &str),
) -> Result<serde_json::Value, ConnectorError> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err(table.from_status(status, headers, "token reply is not JSON".into()));
    };
    let code = v
        .get(code_key)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    if code != 0 {
        let msg = v
            .get(msg_key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        return Err(table.classify(code, status, headers, msg));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    struct Counting {
        n: AtomicUsize,
        life: Duration,
        fail_after: Option<usize>,
    }

    #[async_trait]
    impl TokenSource for Counting {
        async fn fetch(&self) -> Result<FetchedToken, ConnectorError> {
            let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
            // Yield so concurrent callers really overlap with the fetch.
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.fail_after.is_some_and(|k| n > k) {
                return Err(ConnectorError::Retryable {
                    vendor: "t",
                    code: None,
                    status: Some(503),
                    message: "down".into(),
                });
            }
            Ok(FetchedToken {
                token: SecretString::from(format!("tok-{n}")),
                expires_in: self.life,
            })
        }
    }

    fn source(life: u64, fail_after: Option<usize>) -> Counting {
        Counting {
            n: AtomicUsize::new(0),
            life: Duration::from_secs(life),
            fail_after,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_fetch_in_flight_for_concurrent_callers() {
        let m = Arc::new(TokenManager::new(
            source(7200, None),
            Duration::from_secs(300),
        ));
        let mut handles = Vec::new();
        for _ in 0..20 {
            let m = m.clone();
            handles.push(tokio::spawn(async move {
                m.get().await.map(|t| t.secret.expose_secret().to_string())
            }));
        }
        for h in handles {
            assert_eq!(h.await.unwrap().unwrap(), "tok-1");
        }
        assert_eq!(m.fetch_count(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_ahead_of_expiry() {
        let m = TokenManager::new(source(7200, None), Duration::from_secs(300));
        assert_eq!(m.get().await.unwrap().secret.expose_secret(), "tok-1");
        tokio::time::advance(Duration::from_secs(7200 - 301)).await;
        assert_eq!(m.get().await.unwrap().secret.expose_secret(), "tok-1");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(m.get().await.unwrap().secret.expose_secret(), "tok-2");
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_only_drops_the_used_generation() {
        let m = TokenManager::new(source(7200, None), Duration::from_secs(300));
        let t1 = m.get().await.unwrap();
        m.invalidate(&t1).await;
        let t2 = m.get().await.unwrap();
        assert_eq!(t2.secret.expose_secret(), "tok-2");
        // A late invalidation with the old token must not drop the new one.
        m.invalidate(&t1).await;
        assert_eq!(m.get().await.unwrap().secret.expose_secret(), "tok-2");
        assert_eq!(m.fetch_count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_early_refresh_keeps_valid_token_but_expired_fails() {
        let m = TokenManager::new(source(600, Some(1)), Duration::from_secs(300));
        assert_eq!(m.get().await.unwrap().secret.expose_secret(), "tok-1");
        // Inside the refresh window (ahead = min(300, 300)), refresh fails, old token still valid.
        tokio::time::advance(Duration::from_secs(400)).await;
        assert_eq!(m.get().await.unwrap().secret.expose_secret(), "tok-1");
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(m.get().await.is_err());
    }
}
