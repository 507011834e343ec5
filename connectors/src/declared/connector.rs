//! A declared connector's one live instance: the definition, the base URL behind the SSRF
//! guard, one HTTP client, one limiter and concurrency cap, one token cache. Lists stream page
//! by page; every call retries what the error table calls transient and refreshes a refused
//! token once.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream;
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::auth::{AuthState, Credentials};
use super::definition::{Call, Definition, EntityDef, Paging};
use super::guard::{self, AllowList, GuardedResolver};
use super::wire::{Answer, Failure, Vars, Wire, scalar_text};
use crate::capability::RecordStream;
use crate::error::ConnectorError;
use crate::http::RetryPolicy;
use crate::limit::{Limiter, RateLimit};

/// What a connector table gives a definition.
#[derive(Clone, Default)]
pub struct Options {
    /// The connector's name (`[connectors.NAME]`), in every error.
    pub name: String,
    pub base_url: String,
    /// `[connectors.NAME.params]` as a JSON object.
    pub params: serde_json::Map<String, Value>,
    pub credentials: Credentials,
    /// Hosts allowed although private or loopback (added to the definition's).
    pub allow_hosts: Vec<String>,
    /// Retries of transient failures (the default: 6, from 200 ms to 60 s).
    pub retry: Option<RetryPolicy>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("params", &self.params)
            .field("allow_hosts", &self.allow_hosts)
            .finish_non_exhaustive()
    }
}

/// Listing options.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only records changed since this value of the entity's `cursor` field (`$since`).
    pub since: Option<Value>,
    /// Page size instead of the definition's (at most the definition's).
    pub page_size: Option<u32>,
}

/// A declared connector.
pub struct HttpConnector {
    wire: Arc<Wire>,
    auth: AuthState,
    limiter: Limiter,
    rate: RateLimit,
    slots: Semaphore,
    retry: RetryPolicy,
}

impl HttpConnector {
    /// Checks the table against the definition (parameters, credentials, base URL, SSRF guard)
    /// and builds the instance. No network call yet.
    pub fn new(def: Arc<Definition>, options: Options) -> Result<Self, ConnectorError> {
        let name: &'static str = Box::leak(options.name.clone().into_boxed_str());
        let fail = |m: String| ConnectorError::permanent(name, m);
        let mut base = reqwest::Url::parse(&options.base_url)
            .map_err(|e| fail(format!("base_url {:?} is not a URL: {e}", options.base_url)))?;
        if !["http", "https"].contains(&base.scheme()) {
            return Err(fail(format!(
                "base_url {:?} must be http or https",
                options.base_url
            )));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(fail(
                "base_url must not carry credentials; use the auth keys".to_owned(),
            ));
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        for (p, spec) in &def.params {
            if spec.required && !options.params.contains_key(p) {
                return Err(fail(format!(
                    "definition {:?} needs parameter {p:?} in [connectors.{name}.params]",
                    def.name
                )));
            }
        }
        for p in options.params.keys() {
            if !def.params.contains_key(p) {
                return Err(fail(format!(
                    "definition {:?} declares no parameter {p:?} (it declares: {})",
                    def.name,
                    def.params.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let allow = Arc::new(AllowList::new(
            def.allow_hosts
                .iter()
                .chain(options.allow_hosts.iter())
                .cloned(),
        ));
        guard::check_literal(&base, &allow).map_err(&fail)?;
        let http = reqwest::Client::builder()
            .timeout(def.limits.timeout)
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("huitong/", env!("CARGO_PKG_VERSION")))
            .redirect(guard::same_origin_redirects())
            .dns_resolver(Arc::new(GuardedResolver::new(allow.clone())))
            .build()
            .map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?;
        let rate = RateLimit::new(
            def.limits.per_second.unwrap_or(0),
            def.limits.per_minute.unwrap_or(0),
        );
        let slots = Semaphore::new(def.limits.concurrency);
        let wire = Arc::new(Wire::new(
            name,
            def,
            base,
            Value::Object(options.params),
            http,
            allow,
        ));
        let auth = AuthState::new(&wire, options.credentials)?;
        Ok(Self {
            wire,
            auth,
            limiter: Limiter::new(),
            rate,
            slots,
            retry: options.retry.unwrap_or_default(),
        })
    }

    pub fn definition(&self) -> &Definition {
        &self.wire.def
    }

    pub fn name(&self) -> &'static str {
        self.wire.name
    }

    /// Tokens minted so far (OAuth2 token requests, session logins).
    pub fn token_fetches(&self) -> u64 {
        self.auth.fetches()
    }

    fn entity(&self, entity: &str) -> Result<&EntityDef, ConnectorError> {
        self.wire
            .def
            .entity(entity)
            .map_err(|m| ConnectorError::permanent(self.wire.name, m))
    }

    fn op<'e>(
        &self,
        entity: &str,
        op: &str,
        call: Option<&'e Call>,
    ) -> Result<&'e Call, ConnectorError> {
        call.ok_or_else(|| {
            ConnectorError::permanent(
                self.wire.name,
                format!(
                    "definition {:?} declares no `{op}` for entity {entity:?}",
                    self.wire.def.name
                ),
            )
        })
    }

    fn vars(&self) -> Vars {
        Vars {
            params: self.wire.params.clone(),
            ..Vars::default()
        }
    }

    /// One call with retries: transient failures back off, a refused minted token is dropped
    /// and the call made once more with a fresh one. `Ok(None)`: the system says not found.
    async fn call(
        &self,
        api: &'static str,
        call: &Call,
        vars: &Vars,
        input: &Value,
    ) -> Result<Option<Answer>, ConnectorError> {
        crate::http::with_retry(&self.retry, api, || async {
            match self.call_once(api, call, vars, input).await {
                Err(e) if e.class() == crate::error::ErrorClass::AuthExpired => {
                    Err(self.refused(e))
                }
                r => r,
            }
        })
        .await
    }

    /// A token the system refused again after a fresh one: permanent, with the system's words.
    fn refused(&self, e: ConnectorError) -> ConnectorError {
        ConnectorError::permanent(
            self.wire.name,
            format!(
                "the system refused the credentials ({} auth): {}",
                self.wire.def.auth.kind(),
                e.message()
            ),
        )
    }

    async fn call_once(
        &self,
        api: &'static str,
        call: &Call,
        vars: &Vars,
        input: &Value,
    ) -> Result<Option<Answer>, ConnectorError> {
        let req = self.wire.request(call, vars, input)?;
        let first = self.send(api, req.clone()).await;
        match first {
            Err((e, Some(token))) if e.class() == crate::error::ErrorClass::AuthExpired => {
                // The token was refused (expired, revoked): mint a new one and try once more.
                self.auth.invalidate(&token).await;
                self.send(api, req).await.map_err(|(e, _)| e)
            }
            r => r.map_err(|(e, _)| e),
        }
    }

    async fn send(
        &self,
        api: &'static str,
        mut req: super::wire::Request,
    ) -> Result<Option<Answer>, (ConnectorError, Option<crate::token::Token>)> {
        let _slot = self.slots.acquire().await.map_err(|_| {
            (
                ConnectorError::permanent(self.wire.name, "connector closed"),
                None,
            )
        })?;
        if self
            .limiter
            .try_acquire(self.wire.name, "all", self.rate)
            .is_err()
        {
            crate::telemetry::rate_limit_wait("http", api);
            self.limiter.acquire(self.wire.name, "all", self.rate).await;
        }
        let token = self.auth.apply(&mut req).await.map_err(|e| (e, None))?;
        let r = self.wire.send(req).await;
        match r {
            Ok(a) => {
                crate::telemetry::call("http", api, None);
                Ok(Some(a))
            }
            Err(Failure::NotFound(m)) => {
                crate::telemetry::call("http", api, None);
                tracing::debug!(connector = self.wire.name, api, message = %m, "not found");
                Ok(None)
            }
            Err(Failure::Error(e)) => {
                crate::telemetry::call("http", api, Some(&e));
                Err((e, token))
            }
        }
    }

    fn pick(
        &self,
        what: &str,
        call: &Call,
        answer: &Value,
        vars: &Vars,
    ) -> Result<Value, ConnectorError> {
        match &call.result {
            None => Ok(answer.clone()),
            Some(t) => t
                .eval(answer, &vars.values())
                .map(|v| v.unwrap_or(Value::Null))
                .map_err(|e| {
                    ConnectorError::permanent(
                        self.wire.name,
                        format!("{what}.result (`{}`): {e}", t.source()),
                    )
                }),
        }
    }

    /// A call that must find its record: its answer after `result`, or a permanent error
    /// (`missing`) when the system says not found.
    async fn call_found(
        &self,
        api: &'static str,
        call: &Call,
        vars: &Vars,
        input: &Value,
        missing: impl FnOnce() -> String,
    ) -> Result<Value, ConnectorError> {
        match self.call(api, call, vars, input).await? {
            Some(a) => self.pick(api, call, &a.value, vars),
            None => Err(ConnectorError::permanent(self.wire.name, missing())),
        }
    }

    /// The external id of a record by the entity's `id` template.
    pub fn id_of(&self, entity: &str, record: &Value) -> Result<String, ConnectorError> {
        let e = self.entity(entity)?;
        match e.id.eval(record, &[]) {
            Ok(Some(v)) if !v.is_null() => Ok(scalar_text(&v)),
            Ok(_) => Err(ConnectorError::permanent(
                self.wire.name,
                format!(
                    "entity {entity:?}: its id (`{}`) gave nothing for {}",
                    e.id.source(),
                    super::wire::cut(&record.to_string())
                ),
            )),
            Err(err) => Err(ConnectorError::permanent(
                self.wire.name,
                format!("entity {entity:?}: id (`{}`): {err}", e.id.source()),
            )),
        }
    }

    /// Every record of `entity`, page by page.
    pub fn list<'a>(&'a self, entity: &str, options: ListOptions) -> RecordStream<'a> {
        let def = match self.entity(entity) {
            Ok(d) => d,
            Err(e) => return stream::once(async move { Err(e) }).boxed(),
        };
        let Some(list) = def.list.as_ref() else {
            let e = self.op(entity, "list", None).err();
            return stream::iter(e.map(Err)).boxed();
        };
        let size = match (list.paging.size(), options.page_size) {
            (Some(s), Some(p)) => Some(s.min(p.max(1))),
            (s, _) => s,
        };
        struct Page {
            offset: u64,
            page: u64,
            cursor: Option<Value>,
            next_url: Option<reqwest::Url>,
            first_id: Option<String>,
            done: bool,
        }
        let start = Page {
            offset: 0,
            page: match list.paging {
                Paging::Page { start, .. } => start,
                _ => 0,
            },
            cursor: None,
            next_url: None,
            first_id: None,
            done: false,
        };
        let entity = entity.to_owned();
        stream::unfold(start, move |mut st| {
            let entity = entity.clone();
            let options = options.clone();
            async move {
                if st.done {
                    return None;
                }
                let mut vars = self.vars();
                vars.offset = Some(st.offset);
                vars.limit = size;
                vars.page = Some(st.page);
                vars.cursor = st.cursor.clone();
                vars.since = options.since.clone();
                let answer = match &st.next_url {
                    Some(url) => self.follow(url.clone()).await,
                    None => self.call("list", &list.call, &vars, &Value::Null).await,
                };
                let answer = match answer {
                    Ok(Some(a)) => a,
                    // Past the end, as some systems say it (Tryton's 416 is declared so).
                    Ok(None) => {
                        st.done = true;
                        return Some((Ok(Vec::new()), st));
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                };
                let body = match self.pick("list", &list.call, &answer.value, &vars) {
                    Ok(b) => b,
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                };
                let records = match list.records.eval(&body, &vars.values()) {
                    Ok(Some(Value::Array(a))) => a,
                    Ok(None) | Ok(Some(Value::Null)) => Vec::new(),
                    Ok(Some(other)) => {
                        st.done = true;
                        let e = ConnectorError::permanent(
                            self.wire.name,
                            format!(
                                "entity {entity:?}: list.records (`{}`) gave {} instead of a list",
                                list.records.source(),
                                super::wire::cut(&other.to_string())
                            ),
                        );
                        return Some((Err(e), st));
                    }
                    Err(err) => {
                        st.done = true;
                        let e = ConnectorError::permanent(
                            self.wire.name,
                            format!("entity {entity:?}: list.records (`{}`): {err}", list.records.source()),
                        );
                        return Some((Err(e), st));
                    }
                };
                // A system that ignores the paging would send the same page forever.
                let first_id = records.first().and_then(|r| self.id_of(&entity, r).ok());
                if first_id.is_some() && first_id == st.first_id {
                    st.done = true;
                    let e = ConnectorError::permanent(
                        self.wire.name,
                        format!(
                            "entity {entity:?}: the system answered the same page twice; check the definition's paging"
                        ),
                    );
                    return Some((Err(e), st));
                }
                st.first_id = first_id;
                let n = records.len() as u64;
                let short = size.is_some_and(|s| n < u64::from(s));
                let more = match &list.has_more {
                    Some(t) => matches!(t.eval(&body, &vars.values()), Ok(Some(Value::Bool(true)))),
                    None => true,
                };
                match &list.paging {
                    Paging::None => st.done = true,
                    Paging::Offset { .. } | Paging::Page { .. } => {
                        st.offset += n;
                        st.page += 1;
                        st.done = short || n == 0 || !more;
                    }
                    Paging::Cursor { next, .. } => {
                        let c = next.eval(&body, &vars.values()).ok().flatten();
                        st.done = !more
                            || n == 0
                            || matches!(&c, None | Some(Value::Null) | Some(Value::Bool(false)))
                            || c.as_ref().is_some_and(|c| c.as_str() == Some(""));
                        st.cursor = c;
                    }
                    Paging::Link { .. } => {
                        st.next_url = next_link(&answer.headers)
                            .and_then(|u| st.next_url.as_ref().unwrap_or(&self.wire.base).join(&u).ok())
                            .filter(|u| self.wire.within_base(u));
                        st.done = st.next_url.is_none() || n == 0 || !more;
                    }
                }
                Some((Ok(records), st))
            }
        })
        .flat_map(|page: Result<Vec<Value>, ConnectorError>| match page {
            Ok(records) => stream::iter(records.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => stream::iter(vec![Err(e)]),
        })
        .boxed()
    }

    /// A `Link` header's next page: a GET with the connector's headers and auth.
    async fn follow(&self, url: reqwest::Url) -> Result<Option<Answer>, ConnectorError> {
        let call = Call {
            method: "GET".into(),
            path: Vec::new(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            result: None,
        };
        crate::http::with_retry(&self.retry, "list", || async {
            let mut req = self.wire.request(&call, &self.vars(), &Value::Null)?;
            req.url = url.clone();
            self.send("list", req).await.map_err(|(e, _)| e)
        })
        .await
    }

    /// One record by id; `None` when the system says it does not exist.
    pub async fn get(&self, entity: &str, id: &str) -> Result<Option<Value>, ConnectorError> {
        let def = self.entity(entity)?;
        let call = self.op(entity, "get", def.get.as_ref())?;
        let mut vars = self.vars();
        vars.id = Some(id.to_owned());
        let Some(a) = self.call("get", call, &vars, &Value::Null).await? else {
            return Ok(None);
        };
        let v = self.pick("get", call, &a.value, &vars)?;
        Ok((!v.is_null()).then_some(v))
    }

    /// Creates a record (`record` is `.` of the create body); returns its external id: the
    /// create's `result` when it gives a scalar, else the entity's `id` over what came back.
    pub async fn create(&self, entity: &str, record: Value) -> Result<String, ConnectorError> {
        let def = self.entity(entity)?;
        let call = self.op(entity, "create", def.create.as_ref())?;
        let mut vars = self.vars();
        vars.record = Some(record.clone());
        // Made before (a create retried after a lost reply, or repeated after a crash)?
        if let Some(find) = &def.find
            && let Some(found) = self.call("find", find, &vars, &record).await?
        {
            let v = self.pick("find", find, &found.value, &vars)?;
            let existing = match v {
                Value::Array(items) => items.into_iter().next(),
                Value::Null => None,
                other => Some(other),
            };
            if let Some(existing) = existing {
                let id = self.id_of(entity, &existing)?;
                tracing::info!(
                    connector = self.wire.name,
                    entity,
                    id,
                    "found before creating; not created again"
                );
                return Ok(id);
            }
        }
        let v = self
            .call_found("create", call, &vars, &record, || {
                format!("create {entity}: the system answered not found")
            })
            .await?;
        match v {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Array(ref items) if items.len() == 1 && !items[0].is_object() => {
                Ok(scalar_text(&items[0]))
            }
            other => self.id_of(entity, &other),
        }
    }

    /// Updates a record; returns what the system answered (after `result`).
    pub async fn update(
        &self,
        entity: &str,
        id: &str,
        record: Value,
    ) -> Result<Value, ConnectorError> {
        let def = self.entity(entity)?;
        let call = self.op(entity, "update", def.update.as_ref())?;
        let mut vars = self.vars();
        vars.id = Some(id.to_owned());
        vars.record = Some(record.clone());
        self.call_found("update", call, &vars, &record, || {
            format!("update {entity} {id}: the system says it does not exist")
        })
        .await
    }

    /// Deletes a record; one already gone counts as deleted.
    pub async fn delete(&self, entity: &str, id: &str) -> Result<(), ConnectorError> {
        let def = self.entity(entity)?;
        let call = self.op(entity, "delete", def.delete.as_ref())?;
        let mut vars = self.vars();
        vars.id = Some(id.to_owned());
        if self
            .call("delete", call, &vars, &Value::Null)
            .await?
            .is_none()
        {
            tracing::info!(
                connector = self.wire.name,
                entity,
                id,
                "deleting a record already gone"
            );
        }
        Ok(())
    }

    /// Runs a declared action (`quote`, `confirm`, …) on a record.
    pub async fn action(
        &self,
        entity: &str,
        action: &str,
        id: Option<&str>,
        record: Value,
    ) -> Result<Value, ConnectorError> {
        let def = self.entity(entity)?;
        let call = def.actions.get(action).ok_or_else(|| {
            ConnectorError::permanent(
                self.wire.name,
                format!(
                    "definition {:?} declares no action {action:?} for entity {entity:?} (it declares: {})",
                    self.wire.def.name,
                    def.actions.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let mut vars = self.vars();
        vars.id = id.map(str::to_owned);
        vars.record = Some(record.clone());
        self.call_found("action", call, &vars, &record, || {
            format!("{entity} {action}: the system says the record does not exist")
        })
        .await
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    for v in headers.get_all(reqwest::header::LINK) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let mut pieces = part.split(';');
            let target = pieces.next()?.trim();
            let is_next = pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if is_next && target.starts_with('<') && target.ends_with('>') {
                return Some(target[1..target.len() - 1].to_owned());
            }
        }
    }
    None
}

/// The credentials of a connector table's secrets and plain keys.
pub fn credentials(
    plain: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, SecretString>,
) -> Credentials {
    Credentials {
        api_key: secrets.get("api_key").cloned(),
        client_id: plain.get("client_id").cloned().filter(|s| !s.is_empty()),
        client_secret: secrets.get("client_secret").cloned(),
        hmac_secret: secrets.get("hmac_secret").cloned(),
        username: plain.get("username").cloned().filter(|s| !s.is_empty()),
        password: secrets.get("password").cloned(),
        token_url: plain.get("token_url").cloned().filter(|s| !s.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            r#"<https://x.test/a?page=1>; rel="prev", <https://x.test/a?page=3>; rel="next""#
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&h).as_deref(), Some("https://x.test/a?page=3"));
        h.clear();
        assert_eq!(next_link(&h), None);
    }
}
