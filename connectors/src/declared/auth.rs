//! The auth styles of a declared connector: how a request is authenticated, which tokens are
//! minted (OAuth2 client credentials with the `oauth2` crate, a session login), cached and
//! refreshed through the kit's [`TokenManager`] like the vendors' tokens. Secrets stay in
//! [`SecretString`] and never reach a message.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::definition::{Auth, ClientAuth, Encoding, HmacAlgorithm, KeyPlace};
use super::wire::{Failure, Request, Wire, scalar_text};
use crate::error::ConnectorError;
use crate::token::{FetchedToken, Token, TokenManager, TokenSource};

/// The connector table's credentials.
#[derive(Clone, Default)]
pub struct Credentials {
    pub api_key: Option<SecretString>,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub hmac_secret: Option<SecretString>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// The OAuth2 token endpoint, when the table gives it (else the definition's).
    pub token_url: Option<String>,
}

/// Refresh a minted token when less than this is left of its life.
const REFRESH_AHEAD: Duration = Duration::from_secs(60);
/// An OAuth2 token whose answer gives no lifetime.
const DEFAULT_LIFE: Duration = Duration::from_secs(3600);

/// A connector's auth, ready to apply.
pub enum AuthState {
    None,
    Static {
        place: KeyPlace,
        value: SecretString,
    },
    Hmac {
        secret: SecretString,
        spec: Auth,
    },
    Minted {
        tokens: TokenManager<Minter>,
        header: String,
    },
}

impl AuthState {
    /// Builds the auth of `wire`'s definition from the credentials; a missing one is named.
    pub fn new(wire: &Arc<Wire>, creds: Credentials) -> Result<Self, ConnectorError> {
        let need = |what: &str| {
            ConnectorError::permanent(
                wire.name,
                format!(
                    "definition {:?} authenticates with {} and needs `{what}` (set `{what}_env` or `{what}_file` in [connectors.{}])",
                    wire.def.name,
                    wire.def.auth.kind(),
                    wire.name
                ),
            )
        };
        let need_plain = |what: &str| {
            ConnectorError::permanent(
                wire.name,
                format!(
                    "definition {:?} authenticates with {} and needs `{what}` in [connectors.{}]",
                    wire.def.name,
                    wire.def.auth.kind(),
                    wire.name
                ),
            )
        };
        Ok(match &wire.def.auth {
            Auth::None => Self::None,
            Auth::Bearer => {
                let key = creds.api_key.ok_or_else(|| need("api_key"))?;
                Self::Static {
                    place: KeyPlace::Header("Authorization".into()),
                    value: SecretString::from(format!("Bearer {}", key.expose_secret())),
                }
            }
            Auth::ApiKey { place, prefix } => {
                let key = creds.api_key.ok_or_else(|| need("api_key"))?;
                Self::Static {
                    place: place.clone(),
                    value: SecretString::from(format!("{prefix}{}", key.expose_secret())),
                }
            }
            spec @ Auth::Hmac { .. } => Self::Hmac {
                secret: creds.hmac_secret.ok_or_else(|| need("hmac_secret"))?,
                spec: spec.clone(),
            },
            Auth::OAuth2 {
                token_url,
                scopes,
                client_auth,
            } => {
                let token_url = creds
                    .token_url
                    .as_deref()
                    .or(token_url.as_deref())
                    .ok_or_else(|| need_plain("token_url"))?;
                let token_url = absolute(wire, token_url)?;
                super::guard::check_literal(&token_url, &wire.allow)
                    .map_err(|m| ConnectorError::permanent(wire.name, format!("token_url: {m}")))?;
                let source = Minter::OAuth2 {
                    name: wire.name,
                    http: wire.http.clone(),
                    token_url,
                    scopes: scopes.clone(),
                    client_auth: *client_auth,
                    client_id: creds.client_id.ok_or_else(|| need_plain("client_id"))?,
                    client_secret: creds.client_secret.ok_or_else(|| need("client_secret"))?,
                };
                Self::Minted {
                    tokens: TokenManager::new(source, REFRESH_AHEAD),
                    header: "Authorization".into(),
                }
            }
            Auth::Session { header, .. } => {
                let source = Minter::Session {
                    wire: wire.clone(),
                    username: creds.username.ok_or_else(|| need_plain("username"))?,
                    password: creds.password.ok_or_else(|| need("password"))?,
                };
                Self::Minted {
                    tokens: TokenManager::new(source, REFRESH_AHEAD),
                    header: header.clone(),
                }
            }
        })
    }

    /// Authenticates `req`; returns the minted token used, if any (to drop it when refused).
    pub async fn apply(&self, req: &mut Request) -> Result<Option<Token>, ConnectorError> {
        match self {
            Self::None => Ok(None),
            Self::Static { place, value } => {
                match place {
                    KeyPlace::Header(h) => req
                        .headers
                        .push((h.clone(), value.expose_secret().to_owned())),
                    KeyPlace::Query(q) => {
                        req.url
                            .query_pairs_mut()
                            .append_pair(q, value.expose_secret());
                    }
                }
                Ok(None)
            }
            Self::Hmac { secret, spec } => {
                sign(req, secret, spec)?;
                Ok(None)
            }
            Self::Minted { tokens, header } => {
                let t = tokens.get().await?;
                req.headers
                    .push((header.clone(), t.secret.expose_secret().to_owned()));
                Ok(Some(t))
            }
        }
    }

    /// Drops a minted token the system refused.
    pub async fn invalidate(&self, used: &Token) {
        if let Self::Minted { tokens, .. } = self {
            tokens.invalidate(used).await;
        }
    }

    /// How many tokens were minted (OAuth2 token requests, session logins).
    pub fn fetches(&self) -> u64 {
        match self {
            Self::Minted { tokens, .. } => tokens.fetch_count(),
            _ => 0,
        }
    }
}

fn absolute(wire: &Wire, url: &str) -> Result<reqwest::Url, ConnectorError> {
    reqwest::Url::parse(url)
        .or_else(|_| wire.base.join(url))
        .map_err(|e| ConnectorError::permanent(wire.name, format!("bad token_url {url:?}: {e}")))
}

/// Signs a request: `string` over {method, path, query, body, timestamp}.
fn sign(req: &mut Request, secret: &SecretString, spec: &Auth) -> Result<(), ConnectorError> {
    let Auth::Hmac {
        header,
        algorithm,
        encoding,
        prefix,
        string,
        timestamp_header,
    } = spec
    else {
        return Ok(());
    };
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let body = req
        .body
        .as_deref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let path = match req.url.query() {
        Some(q) => format!("{}?{q}", req.url.path()),
        None => req.url.path().to_owned(),
    };
    let input = json!({
        "method": req.method.as_str(),
        "path": path,
        "query": req.url.query().unwrap_or_default(),
        "body": body,
        "timestamp": ts,
    });
    let text = match string.eval(&input, &[]) {
        Ok(Some(v)) => scalar_text(&v),
        Ok(None) => String::new(),
        Err(e) => {
            return Err(ConnectorError::permanent(
                "http",
                format!("auth.string (`{}`): {e}", string.source()),
            ));
        }
    };
    let key = secret.expose_secret().as_bytes();
    let mac: Vec<u8> = match algorithm {
        HmacAlgorithm::Sha256 => {
            let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
                .map_err(|_| ConnectorError::permanent("http", "bad hmac key"))?;
            m.update(text.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        HmacAlgorithm::Sha1 => {
            let mut m = hmac::Hmac::<sha1::Sha1>::new_from_slice(key)
                .map_err(|_| ConnectorError::permanent("http", "bad hmac key"))?;
            m.update(text.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
    };
    let encoded = match encoding {
        Encoding::Hex => hex::encode(mac),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(mac),
    };
    req.headers
        .push((header.clone(), format!("{prefix}{encoded}")));
    if let Some(h) = timestamp_header {
        req.headers.push((h.clone(), ts));
    }
    Ok(())
}

/// What mints a connector's tokens.
pub enum Minter {
    OAuth2 {
        name: &'static str,
        http: reqwest::Client,
        token_url: reqwest::Url,
        scopes: Vec<String>,
        client_auth: ClientAuth,
        client_id: String,
        client_secret: SecretString,
    },
    Session {
        wire: Arc<Wire>,
        username: String,
        password: SecretString,
    },
}

#[async_trait]
impl TokenSource for Minter {
    async fn fetch(&self) -> Result<FetchedToken, ConnectorError> {
        match self {
            Self::OAuth2 {
                name,
                http,
                token_url,
                scopes,
                client_auth,
                client_id,
                client_secret,
            } => {
                crate::telemetry::token_fetch("http");
                oauth2_fetch(
                    name,
                    http,
                    token_url,
                    scopes,
                    *client_auth,
                    client_id,
                    client_secret,
                )
                .await
            }
            Self::Session {
                wire,
                username,
                password,
            } => {
                crate::telemetry::token_fetch("http");
                session_login(wire, username, password).await
            }
        }
    }
}

async fn oauth2_fetch(
    name: &'static str,
    http: &reqwest::Client,
    token_url: &reqwest::Url,
    scopes: &[String],
    client_auth: ClientAuth,
    client_id: &str,
    client_secret: &SecretString,
) -> Result<FetchedToken, ConnectorError> {
    use oauth2::basic::BasicClient;
    use oauth2::{AuthType, ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
    let client = BasicClient::new(ClientId::new(client_id.to_owned()))
        .set_client_secret(ClientSecret::new(client_secret.expose_secret().to_owned()))
        .set_token_uri(TokenUrl::from_url(token_url.clone()))
        .set_auth_type(match client_auth {
            ClientAuth::Basic => AuthType::BasicAuth,
            ClientAuth::Body => AuthType::RequestBody,
        });
    let send = |req: oauth2::HttpRequest| {
        let http = http.clone();
        async move {
            let (parts, body) = req.into_parts();
            let resp = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| e.without_url())?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.map_err(|e| e.without_url())?;
            let mut out = oauth2::http::Response::new(body.to_vec());
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, reqwest::Error>(out)
        }
    };
    let mut request = client.exchange_client_credentials();
    for s in scopes {
        request = request.add_scope(Scope::new(s.clone()));
    }
    let at = token_url.as_str();
    match request.request_async(&send).await {
        Ok(t) => Ok(FetchedToken {
            token: SecretString::from(format!("Bearer {}", t.access_token().secret())),
            expires_in: t
                .expires_in()
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_LIFE),
        }),
        Err(oauth2::RequestTokenError::ServerResponse(r)) => Err(ConnectorError::permanent(
            name,
            format!(
                "the OAuth2 server at {at} refused the client credentials: {}{}",
                r.error(),
                r.error_description()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        )),
        Err(oauth2::RequestTokenError::Request(e)) => Err(ConnectorError::Retryable {
            vendor: name,
            code: None,
            status: e.status().map(|s| s.as_u16()),
            message: format!("the OAuth2 token request to {at} failed: {e}"),
        }),
        Err(oauth2::RequestTokenError::Parse(e, body)) => Err(ConnectorError::permanent(
            name,
            format!(
                "the OAuth2 server at {at} gave an answer that is not a token ({e}): {}",
                super::wire::cut(&String::from_utf8_lossy(&body))
            ),
        )),
        Err(oauth2::RequestTokenError::Other(e)) => Err(ConnectorError::permanent(
            name,
            format!("the OAuth2 token request to {at} failed: {e}"),
        )),
    }
}

/// Signs in with the login call; the token template turns its result into the token and
/// `value` into the header's value.
async fn session_login(
    wire: &Arc<Wire>,
    username: &str,
    password: &SecretString,
) -> Result<FetchedToken, ConnectorError> {
    let Auth::Session {
        login,
        token,
        value,
        lifetime,
        ..
    } = &wire.def.auth
    else {
        return Err(ConnectorError::permanent(wire.name, "not a session auth"));
    };
    let values = [
        wire.params.clone(),
        Value::String(username.to_owned()),
        Value::String(password.expose_secret().to_owned()),
    ];
    // Messages never quote the values: one of them is the password.
    let req = wire
        .request_with(login, &values, &Value::Null, None)
        .map_err(|_| {
            ConnectorError::permanent(
                wire.name,
                "auth.login: the login call could not be built from its templates",
            )
        })?;
    let answer = match wire.send(req).await {
        Ok(a) => a,
        Err(Failure::NotFound(m)) => {
            return Err(ConnectorError::permanent(
                wire.name,
                format!("the login was refused: {m}"),
            ));
        }
        Err(Failure::Error(e)) if e.is_transient() => return Err(e),
        Err(Failure::Error(e)) => {
            return Err(ConnectorError::permanent(
                wire.name,
                format!("the login was refused: {}", e.message()),
            ));
        }
    };
    let tok = token
        .eval(&answer.value, &values)
        .ok()
        .flatten()
        .filter(|v| !v.is_null())
        .ok_or_else(|| {
            ConnectorError::permanent(
                wire.name,
                format!(
                    "auth.token (`{}`) gave no token from the login's answer",
                    token.source()
                ),
            )
        })?;
    let header = value
        .eval(&Value::Null, &[Value::String(scalar_text(&tok))])
        .ok()
        .flatten()
        .map(|v| scalar_text(&v))
        .ok_or_else(|| ConnectorError::permanent(wire.name, "auth.value gave no header value"))?;
    Ok(FetchedToken {
        token: SecretString::from(header),
        expires_in: *lifetime,
    })
}
