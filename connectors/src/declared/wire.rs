//! One call on the wire: the request built from its templates, sent, and the answer read and
//! classified by the definition's error table. Knows nothing of tokens (the caller hands it the
//! headers and query its auth adds) and never retries (the connector does).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::definition::{Call, Definition, PathPiece, Transport};
use crate::error::ConnectorError;

/// The variables of one call, by name; [`Vars::values`] orders them as templates expect.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub params: Value,
    pub id: Option<String>,
    pub record: Option<Value>,
    pub offset: Option<u64>,
    pub limit: Option<u32>,
    pub page: Option<u64>,
    pub cursor: Option<Value>,
    pub since: Option<Value>,
}

impl Vars {
    /// In the order of [`super::definition::VARS`].
    pub fn values(&self) -> Vec<Value> {
        vec![
            self.params.clone(),
            self.id.clone().map_or(Value::Null, Value::String),
            self.record.clone().unwrap_or(Value::Null),
            self.offset.map_or(Value::Null, Value::from),
            self.limit.map_or(Value::Null, Value::from),
            self.page.map_or(Value::Null, Value::from),
            self.cursor.clone().unwrap_or(Value::Null),
            self.since.clone().unwrap_or(Value::Null),
        ]
    }
}

/// A request ready to sign and send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    /// The JSON body's exact bytes (what an HMAC signs).
    pub body: Option<Vec<u8>>,
}

/// What came back: the REST body (or the RPC result) and the response headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub value: Value,
    pub headers: HeaderMap,
}

/// How a call ended when it did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The system says the record does not exist (its `not_found` codes).
    NotFound(String),
    Error(ConnectorError),
}

impl From<ConnectorError> for Failure {
    fn from(e: ConnectorError) -> Self {
        Self::Error(e)
    }
}

/// The parts every call of one connector shares.
pub struct Wire {
    /// The connector's name, in every error.
    pub name: &'static str,
    pub def: Arc<Definition>,
    pub base: Url,
    pub params: Value,
    pub http: reqwest::Client,
    /// Hosts allowed although not public (the SSRF guard's list).
    pub allow: Arc<super::guard::AllowList>,
    rpc_id: AtomicU64,
}

impl Wire {
    pub fn new(
        name: &'static str,
        def: Arc<Definition>,
        base: Url,
        params: Value,
        http: reqwest::Client,
        allow: Arc<super::guard::AllowList>,
    ) -> Self {
        Self {
            name,
            def,
            base,
            params,
            http,
            allow,
            rpc_id: AtomicU64::new(1),
        }
    }

    fn permanent(&self, message: impl Into<String>) -> ConnectorError {
        ConnectorError::permanent(self.name, message)
    }

    /// A URL under the base URL (never another origin or a parent path).
    pub fn url(&self, pieces: &[PathPiece], id: Option<&str>) -> Result<Url, ConnectorError> {
        let mut path = String::new();
        for p in pieces {
            match p {
                PathPiece::Text(t) => path.push_str(t),
                PathPiece::Id => {
                    let id = id.ok_or_else(|| self.permanent("this call needs a record id"))?;
                    path.push_str(&encode_segment(id));
                }
                PathPiece::Param(name) => {
                    let v = self.params.get(name).ok_or_else(|| {
                        self.permanent(format!(
                            "parameter {name:?} is not set in [connectors.{}.params]",
                            self.name
                        ))
                    })?;
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    path.push_str(&encode_segment(&text));
                }
            }
        }
        self.under_base(&path)
    }

    fn under_base(&self, path: &str) -> Result<Url, ConnectorError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| self.permanent(format!("bad path {path:?}: {e}")))?;
        if !self.within_base(&url) {
            return Err(self.permanent(format!("path {path:?} leaves the base URL")));
        }
        Ok(url)
    }

    /// Whether `url` lies under the base URL (same origin, path below the base's).
    pub fn within_base(&self, url: &Url) -> bool {
        url.origin() == self.base.origin() && url.path().starts_with(self.base.path())
    }

    fn eval(
        &self,
        what: &str,
        t: &huitong_mappings::Template,
        input: &Value,
        values: &[Value],
    ) -> Result<Option<Value>, ConnectorError> {
        t.eval(input, values)
            .map_err(|e| self.permanent(format!("{what} (`{}`): {e}", t.source())))
    }

    /// Builds a call's request. `input` is `.` of the body template (the record, or null).
    pub fn request(
        &self,
        call: &Call,
        vars: &Vars,
        input: &Value,
    ) -> Result<Request, ConnectorError> {
        self.request_with(call, &vars.values(), input, vars.id.as_deref())
    }

    /// [`Self::request`] with the variable values given in their template order.
    pub fn request_with(
        &self,
        call: &Call,
        values: &[Value],
        input: &Value,
        id: Option<&str>,
    ) -> Result<Request, ConnectorError> {
        let mut headers = Vec::new();
        let params_only = [self.params.clone()];
        for (name, t) in &self.def.headers {
            if let Some(v) = self.eval("header", t, &Value::Null, &params_only)? {
                headers.push((name.clone(), scalar_text(&v)));
            }
        }
        for (name, t) in &call.headers {
            if let Some(v) = self.eval("header", t, input, values)?
                && !v.is_null()
            {
                headers.push((name.clone(), scalar_text(&v)));
            }
        }
        let body_value = match &call.body {
            Some(t) => self.eval("body", t, input, values)?,
            None => None,
        };
        match &self.def.transport {
            Transport::Rest => {
                let mut url = self.url(&call.path, id)?;
                {
                    let mut q = url.query_pairs_mut();
                    for (name, t) in &call.query {
                        match self.eval("query", t, input, values)? {
                            None | Some(Value::Null) => {}
                            Some(Value::Array(items)) => {
                                for i in items.iter().filter(|i| !i.is_null()) {
                                    q.append_pair(name, &scalar_text(i));
                                }
                            }
                            Some(v) => {
                                q.append_pair(name, &scalar_text(&v));
                            }
                        }
                    }
                }
                if url.query() == Some("") {
                    url.set_query(None);
                }
                let method = Method::from_bytes(call.method.as_bytes())
                    .map_err(|_| self.permanent(format!("bad HTTP method {:?}", call.method)))?;
                let body = match body_value {
                    None => None,
                    Some(v) => {
                        Some(serde_json::to_vec(&v).map_err(|e| self.permanent(e.to_string()))?)
                    }
                };
                Ok(Request {
                    method,
                    url,
                    headers,
                    body,
                })
            }
            Transport::JsonRpc { path } | Transport::Tryton { path } => {
                let url = self.under_base(path)?;
                let n = self.rpc_id.fetch_add(1, Ordering::Relaxed);
                let params = body_value.unwrap_or_else(|| json!([]));
                let envelope = if matches!(self.def.transport, Transport::JsonRpc { .. }) {
                    json!({"jsonrpc": "2.0", "id": n, "method": call.method, "params": params})
                } else {
                    json!({"id": n, "method": call.method, "params": params})
                };
                Ok(Request {
                    method: Method::POST,
                    url,
                    headers,
                    body: Some(
                        serde_json::to_vec(&envelope).map_err(|e| self.permanent(e.to_string()))?,
                    ),
                })
            }
        }
    }

    /// Sends a request (with the auth's extra headers and query already in it) and reads the
    /// answer: the body (REST) or result (RPC), or the classified failure.
    pub async fn send(&self, req: Request) -> Result<Answer, Failure> {
        let mut b = self.http.request(req.method.clone(), req.url.clone());
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| self.permanent(format!("bad header name {k:?}")))?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                self.permanent(format!("header {k} has a value that cannot be sent"))
            })?;
            headers.append(name, value);
        }
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        if let Some(body) = req.body {
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            b = b.body(body);
        }
        let resp = b
            .headers(headers)
            .send()
            .await
            .map_err(|e| transport(self.name, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes =
            crate::http::read_limited(self.name, resp, self.def.limits.max_response_bytes).await?;
        let parsed: Option<Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
            Some(Value::Null)
        } else {
            serde_json::from_slice(&bytes).ok()
        };
        if !(200..300).contains(&status) {
            let message = self.message(parsed.as_ref(), &bytes);
            return Err(self.classify(Value::from(status), Some(status), &headers, message));
        }
        let Some(value) = parsed else {
            return Err(self
                .permanent(format!(
                    "http {status}: the answer is not JSON: {}",
                    cut(&String::from_utf8_lossy(&bytes))
                ))
                .into());
        };
        if !self.def.transport.is_rpc() {
            return Ok(Answer { value, headers });
        }
        // An RPC envelope: result, or an error to classify by its code.
        let Value::Object(mut env) = value else {
            return Err(self
                .permanent(format!(
                    "http {status}: not a JSON-RPC answer: {}",
                    cut(&value.to_string())
                ))
                .into());
        };
        match env.remove("error") {
            Some(err) if !err.is_null() => {
                let code = match &self.def.errors.code {
                    Some(t) => self
                        .eval("errors.code", t, &err, &[])?
                        .unwrap_or(Value::Null),
                    None => match self.def.transport {
                        Transport::Tryton { .. } => err.get(0).cloned().unwrap_or(Value::Null),
                        _ => err.get("code").cloned().unwrap_or(Value::Null),
                    },
                };
                let message = match &self.def.errors.message {
                    Some(t) => self
                        .eval("errors.message", t, &err, &[])?
                        .map(|v| scalar_text(&v))
                        .unwrap_or_default(),
                    None => match self.def.transport {
                        Transport::Tryton { .. } => err
                            .pointer("/1/0")
                            .map(scalar_text)
                            .unwrap_or_else(|| err.to_string()),
                        _ => err
                            .get("message")
                            .map(scalar_text)
                            .unwrap_or_else(|| err.to_string()),
                    },
                };
                Err(self.classify(code, None, &headers, cut(&message)))
            }
            _ => Ok(Answer {
                value: env.remove("result").unwrap_or(Value::Null),
                headers,
            }),
        }
    }

    fn message(&self, parsed: Option<&Value>, bytes: &[u8]) -> String {
        if let (Some(t), Some(v)) = (&self.def.errors.message, parsed)
            && let Ok(Some(m)) = t.eval(v, &[])
            && !m.is_null()
        {
            return cut(&scalar_text(&m));
        }
        match parsed {
            Some(v) if !v.is_null() => cut(&v.to_string()),
            _ => cut(&strip_tags(&String::from_utf8_lossy(bytes))),
        }
    }

    /// A failure by the definition's lists: `code` is the HTTP status (REST, and RPC transport
    /// failures) or the RPC error's code.
    fn classify(
        &self,
        code: Value,
        status: Option<u16>,
        headers: &HeaderMap,
        message: String,
    ) -> Failure {
        let e = &self.def.errors;
        let is = |list: &[Value]| list.iter().any(|c| same_code(c, &code));
        let name = self.name;
        let numeric = code.as_i64();
        let shown = match status {
            Some(s) => format!("http {s}: {message}"),
            None => format!("error {}: {message}", scalar_text(&code)),
        };
        if is(&e.not_found) {
            return Failure::NotFound(shown);
        }
        let err = if is(&e.rate_limited) {
            ConnectorError::RateLimited {
                vendor: name,
                code: numeric,
                retry_after: crate::http::retry_after_header(headers),
                message: shown,
            }
        } else if is(&e.token_invalid) {
            ConnectorError::AuthExpired {
                vendor: name,
                code: numeric,
                message: shown,
            }
        } else if is(&e.retryable) {
            ConnectorError::Retryable {
                vendor: name,
                code: numeric,
                status,
                message: shown,
            }
        } else {
            ConnectorError::Permanent {
                vendor: name,
                code: numeric,
                status,
                message: shown,
            }
        };
        Failure::Error(err)
    }
}

/// Codes compare as text, so `429` and `"429"` match.
fn same_code(a: &Value, b: &Value) -> bool {
    scalar_text(a) == scalar_text(b)
}

/// A JSON scalar as text (strings without quotes).
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A transport failure, without the URL (a query may carry an API key). A connection our SSRF
/// guard refused is permanent; other transport failures are worth retrying.
fn transport(name: &'static str, e: &reqwest::Error) -> ConnectorError {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    let text = redact_url(&text);
    if e.is_builder()
        || text.contains("refused to connect to")
        || text.contains("refused a redirect")
    {
        ConnectorError::permanent(name, text)
    } else {
        ConnectorError::Retryable {
            vendor: name,
            code: None,
            status: e.status().map(|s| s.as_u16()),
            message: format!("transport: {text}"),
        }
    }
}

/// Drops `for url (…)` from reqwest's message: the query may hold a key.
fn redact_url(s: &str) -> String {
    let mut s = s.to_owned();
    while let Some(at) = s.find(" for url (") {
        let rest = &s[at + 10..];
        let end = rest.find(')').map_or(rest.len(), |e| e + 1);
        s = format!("{}{}", &s[..at], &rest[end..]);
    }
    s
}

/// Text cut for messages.
pub fn cut(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}… ({} bytes)", &s[..at], s.len()),
    }
}

/// An HTML error page as its text.
fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}
