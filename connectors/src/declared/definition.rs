//! A connector definition file: what a CRM/ERP system speaks, as data. Loaded once, checked as
//! a whole (every problem at once, each with the file, line and dotted key), compiled into
//! [`Definition`] with its jq templates ready to run.
//!
//! The format is documented in `connectors/http/README.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use huitong_mappings::Template;
use serde_json::{Map, Value};

/// Every variable a request template may use (`$params`, `$id`, …), in the order the engine
/// supplies their values.
pub const VARS: &[&str] = &[
    "params", "id", "record", "offset", "limit", "page", "cursor", "since",
];
/// The variables of a session login call.
pub const LOGIN_VARS: &[&str] = &["params", "username", "password"];

/// Largest definition file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Deepest YAML nesting of a definition file.
pub const MAX_YAML_DEPTH: usize = 16;

/// How calls travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// REST/JSON: an HTTP method and a path per call.
    Rest,
    /// JSON-RPC 2.0 (`{"jsonrpc":"2.0","method","params","id"}` → `result` | `error{code,message}`),
    /// posted to `path` under the base URL.
    JsonRpc { path: String },
    /// Tryton-style JSON-RPC (`{"method","params","id"}` → `result` | `error: [type, args]`).
    Tryton { path: String },
}

impl Transport {
    pub fn is_rpc(&self) -> bool {
        !matches!(self, Self::Rest)
    }
}

/// A parameter the connector table supplies in `[connectors.NAME.params]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    pub required: bool,
    pub description: Option<String>,
}

/// Where an API key goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPlace {
    Header(String),
    Query(String),
}

/// How the HMAC signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    Sha256,
    Sha1,
}

/// How an OAuth2 client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Body,
}

/// How requests are authenticated. The secrets come from the connector table (`api_key`,
/// `client_secret`, `hmac_secret`, `password`), never from the definition.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// `Authorization: Bearer <api_key>`.
    Bearer,
    /// The `api_key` in a header or a query parameter, after an optional prefix.
    ApiKey {
        place: KeyPlace,
        prefix: String,
    },
    /// OAuth2 client credentials (`client_id`, `client_secret`), the token cached and refreshed.
    OAuth2 {
        /// The token endpoint, unless the connector table gives one (`token_url`).
        token_url: Option<String>,
        scopes: Vec<String>,
        client_auth: ClientAuth,
    },
    /// A signature of each request with `hmac_secret`: `string` (a template over
    /// `{method, path, query, body, timestamp}`) signed, sent in `header`.
    Hmac {
        header: String,
        algorithm: HmacAlgorithm,
        encoding: Encoding,
        prefix: String,
        string: Template,
        timestamp_header: Option<String>,
    },
    /// A login call (with `$username`, `$password`) whose result gives a token (`token`, a
    /// template over the result), sent as `header: value` (`value` over `$token`).
    Session {
        login: Box<Call>,
        token: Template,
        header: String,
        value: Template,
        lifetime: Duration,
    },
}

impl Auth {
    /// The secret keys of the connector table this auth needs.
    pub fn required_secrets(&self) -> &'static [&'static str] {
        match self {
            Self::None => &[],
            Self::Bearer | Self::ApiKey { .. } => &["api_key"],
            Self::OAuth2 { .. } => &["client_secret"],
            Self::Hmac { .. } => &["hmac_secret"],
            Self::Session { .. } => &["password"],
        }
    }
    /// The plain keys of the connector table this auth needs.
    pub fn required_plain(&self) -> &'static [&'static str] {
        match self {
            Self::OAuth2 { .. } => &["client_id"],
            Self::Session { .. } => &["username"],
            _ => &[],
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bearer => "bearer",
            Self::ApiKey { .. } => "api_key",
            Self::OAuth2 { .. } => "oauth2",
            Self::Hmac { .. } => "hmac",
            Self::Session { .. } => "session",
        }
    }
}

/// A piece of a path template: text, or a placeholder (`{id}`, `{params.company}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPiece {
    Text(String),
    Id,
    Param(String),
}

/// One call: REST (method + path + query + headers + body) or RPC (method + params), and the
/// template that picks what the caller wants from the answer.
#[derive(Debug, Clone)]
pub struct Call {
    /// REST: the HTTP method; RPC: the remote method's name.
    pub method: String,
    pub path: Vec<PathPiece>,
    pub query: Vec<(String, Template)>,
    pub headers: Vec<(String, Template)>,
    /// REST: the JSON body; RPC: the params.
    pub body: Option<Template>,
    /// Over the answer (REST: the body, RPC: the result).
    pub result: Option<Template>,
}

/// How a listing pages.
#[derive(Debug, Clone)]
pub enum Paging {
    /// One call returns everything.
    None,
    /// `$offset` and `$limit` (the page size); stops on a short page.
    Offset { size: u32 },
    /// `$page` (from `start`) and `$limit`; stops on a short page.
    Page { size: u32, start: u64 },
    /// `$cursor` from the last answer (`next`, a template over it; null or "" ends).
    Cursor { size: u32, next: Template },
    /// The `Link: <…>; rel="next"` header (same host only).
    Link { size: u32 },
}

impl Paging {
    pub fn size(&self) -> Option<u32> {
        match self {
            Self::None => None,
            Self::Offset { size }
            | Self::Page { size, .. }
            | Self::Cursor { size, .. }
            | Self::Link { size } => Some(*size),
        }
    }
}

/// Listing an entity.
#[derive(Debug, Clone)]
pub struct List {
    pub call: Call,
    /// Over the answer: the array of records.
    pub records: Template,
    pub paging: Paging,
    /// Over the answer: false when there are no more pages (optional).
    pub has_more: Option<Template>,
}

/// One entity of the system.
#[derive(Debug, Clone)]
pub struct EntityDef {
    /// Over a record: its external id.
    pub id: Template,
    /// The field holding the last change time, for incremental polls (`$since`).
    pub cursor: Option<String>,
    /// The canonical entity it carries, where org sync may use it (`person`, `department`).
    pub canonical: Option<String>,
    pub list: Option<List>,
    pub get: Option<Call>,
    /// Looks up, before a create, the record the create would make (by what the system keeps
    /// unique: a code, a reference): its `result` over the answer is that record (or the first
    /// of a list), or null/empty when there is none. Makes creates idempotent.
    pub find: Option<Call>,
    pub create: Option<Call>,
    pub update: Option<Call>,
    pub delete: Option<Call>,
    pub actions: BTreeMap<String, Call>,
}

/// How failures are classified: REST by HTTP status, RPC by the error's code.
#[derive(Debug, Clone)]
pub struct Errors {
    /// RPC: over the error member, its code (compared with the lists below).
    pub code: Option<Template>,
    /// Over the error body (REST) or error member (RPC): the text for messages.
    pub message: Option<Template>,
    pub rate_limited: Vec<Value>,
    pub token_invalid: Vec<Value>,
    pub not_found: Vec<Value>,
    pub retryable: Vec<Value>,
}

/// What the engine may spend on the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub concurrency: usize,
    pub timeout: Duration,
    pub max_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_second: None,
            per_minute: None,
            concurrency: 4,
            timeout: Duration::from_secs(30),
            max_response_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A loaded, checked definition.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    /// Where it came from (`shipped:tryton` or the file's path), for messages.
    pub origin: String,
    pub description: Option<String>,
    pub transport: Transport,
    pub params: BTreeMap<String, ParamSpec>,
    pub auth: Auth,
    /// Sent on every call (templates over `$params`).
    pub headers: Vec<(String, Template)>,
    pub limits: Limits,
    pub errors: Errors,
    pub entities: BTreeMap<String, EntityDef>,
    /// Hosts (names or IP addresses) allowed although private, loopback or link-local.
    pub allow_hosts: Vec<String>,
}

/// One problem of a definition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// Dotted key (`entities.party.list.records`).
    pub key: String,
    pub message: String,
}

/// A definition that cannot be used: every problem, with the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DefinitionError {
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.key.is_empty() {
                write!(f, "{}:{}: {}", self.origin, p.line, p.message)?;
            } else {
                write!(f, "{}:{}: `{}`: {}", self.origin, p.line, p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl Definition {
    /// Reads and checks a definition file (a regular file under [`MAX_FILE_BYTES`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, DefinitionError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let one = |message: String| DefinitionError {
            origin: origin.clone(),
            problems: vec![Problem {
                line: 0,
                key: String::new(),
                message,
            }],
        };
        let bytes = huitong_mappings::mapping::read_capped(path, MAX_FILE_BYTES)
            .map_err(|e| one(format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| one("not UTF-8 text".into()))?;
        Self::from_str(&origin, &text)
    }

    /// Checks a definition's text; `origin` names it in messages.
    pub fn from_str(origin: &str, text: &str) -> Result<Self, DefinitionError> {
        let mut r = Reader {
            lines: text.lines().collect(),
            problems: Vec::new(),
        };
        let fail = |line: usize, message: String| DefinitionError {
            origin: origin.to_owned(),
            problems: vec![Problem {
                line,
                key: String::new(),
                message,
            }],
        };
        if let Err((line, _col, message)) =
            huitong_mappings::mapping::check_yaml_depth(text, MAX_YAML_DEPTH)
        {
            return Err(fail(line, message));
        }
        let doc: Value = yaml_serde::from_str(text).map_err(|e| {
            let line = e.location().map_or(0, |l| l.line());
            fail(line, format!("not valid YAML: {e}"))
        })?;
        let def = r.definition(origin, &doc);
        match def {
            Some(d) if r.problems.is_empty() => Ok(d),
            _ => {
                let mut problems = r.problems;
                problems.sort_by_key(|p| p.line);
                Err(DefinitionError {
                    origin: origin.to_owned(),
                    problems,
                })
            }
        }
    }

    /// The entity called `name`, or a message listing the declared ones.
    pub fn entity(&self, name: &str) -> Result<&EntityDef, String> {
        self.entities.get(name).ok_or_else(|| {
            format!(
                "definition {:?} declares no entity {name:?} (it declares: {})",
                self.name,
                self.entities.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// Walks the parsed YAML, collecting problems with their lines.
struct Reader<'t> {
    lines: Vec<&'t str>,
    problems: Vec<Problem>,
}

type Obj = Map<String, Value>;

impl Reader<'_> {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let line = self.line_of(key);
        self.problems.push(Problem {
            line,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// The line of a dotted key in block-style YAML (the closest enclosing key found).
    fn line_of(&self, key: &str) -> usize {
        let mut start = 0usize;
        let mut indent: Option<usize> = None;
        let mut found = 0usize;
        for seg in key.split('.') {
            let mut hit = None;
            for (i, l) in self.lines.iter().enumerate().skip(start) {
                let t = l.trim_start();
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                let ind = l.len() - t.len();
                if i > start && indent.is_some_and(|p| ind <= p) && found > 0 {
                    break;
                }
                let t = t.strip_prefix("- ").unwrap_or(t);
                let name = t.split(':').next().unwrap_or_default().trim();
                let name = name.trim_matches(|c| c == '"' || c == '\'');
                if name == seg && t.contains(':') && indent.is_none_or(|p| ind > p) {
                    hit = Some((i, ind));
                    break;
                }
            }
            match hit {
                Some((i, ind)) => {
                    found = i + 1;
                    start = i + 1;
                    indent = Some(ind);
                }
                None => break,
            }
        }
        found
    }

    /// `v` as a mapping whose keys are all in `allowed`.
    fn obj<'v>(&mut self, key: &str, v: &'v Value, allowed: &[&str]) -> Option<&'v Obj> {
        let Value::Object(o) = v else {
            self.problem(key, format!("expected a mapping, got {}", kind(v)));
            return None;
        };
        for k in o.keys() {
            if !allowed.contains(&k.as_str()) {
                self.problem(
                    &join(key, k),
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                );
            }
        }
        Some(o)
    }

    fn string(&mut self, o: &Obj, key: &str, name: &str) -> Option<String> {
        match o.get(name)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(
                    &join(key, name),
                    format!("expected a string, got {}", kind(other)),
                );
                None
            }
        }
    }

    fn required_string(&mut self, o: &Obj, key: &str, name: &str) -> Option<String> {
        if !o.contains_key(name) {
            self.problem(key, format!("`{name}` is missing"));
            return None;
        }
        self.string(o, key, name)
    }

    fn uint(&mut self, o: &Obj, key: &str, name: &str, min: u64, max: u64) -> Option<u64> {
        let v = o.get(name)?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(
                    &join(key, name),
                    format!("expected a whole number from {min} to {max}, got {v}"),
                );
                None
            }
        }
    }

    fn template(&mut self, key: &str, v: &Value, vars: &[&str]) -> Option<Template> {
        let src = match v {
            Value::String(s) => s.clone(),
            other => {
                self.problem(
                    key,
                    format!("expected a jq expression (a string), got {}", kind(other)),
                );
                return None;
            }
        };
        match Template::compile(&src, vars) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(key, format!("bad jq: {e}"));
                None
            }
        }
    }

    fn opt_template(&mut self, o: &Obj, key: &str, name: &str, vars: &[&str]) -> Option<Template> {
        let v = o.get(name)?;
        self.template(&join(key, name), v, vars)
    }

    fn templates(
        &mut self,
        o: &Obj,
        key: &str,
        name: &str,
        vars: &[&str],
    ) -> Vec<(String, Template)> {
        let Some(v) = o.get(name) else {
            return Vec::new();
        };
        let key = join(key, name);
        let Value::Object(m) = v else {
            self.problem(
                &key,
                format!("expected a mapping of name: jq, got {}", kind(v)),
            );
            return Vec::new();
        };
        m.iter()
            .filter_map(|(k, v)| {
                self.template(&join(&key, k), v, vars)
                    .map(|t| (k.clone(), t))
            })
            .collect()
    }

    fn values(&mut self, o: &Obj, key: &str, name: &str) -> Vec<Value> {
        match o.get(name) {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(other) => {
                self.problem(
                    &join(key, name),
                    format!("expected a list of codes, got {}", kind(other)),
                );
                Vec::new()
            }
        }
    }

    fn definition(&mut self, origin: &str, doc: &Value) -> Option<Definition> {
        let o = self.obj(
            "",
            doc,
            &[
                "name",
                "description",
                "transport",
                "params",
                "auth",
                "headers",
                "limits",
                "errors",
                "entities",
                "allow_hosts",
            ],
        )?;
        let name = self.required_string(o, "", "name");
        if let Some(n) = &name
            && (n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            self.problem("name", "expected letters, digits, `-` and `_`");
        }
        let description = self.string(o, "", "description");
        let transport = self.transport(o.get("transport"));
        let params = self.params(o.get("params"));
        let auth = match o.get("auth") {
            None => {
                self.problem(
                    "",
                    "`auth` is missing (say `auth: {type: none}` for a system without one)",
                );
                None
            }
            Some(v) => self.auth(v, transport.as_ref()),
        };
        let headers = self.templates(o, "", "headers", &["params"]);
        let limits = self.limits(o.get("limits"));
        let errors = self.errors(o.get("errors"), transport.as_ref());
        let entities = self.entities(o.get("entities"), transport.as_ref());
        let allow_hosts = match o.get("allow_hosts") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|h| match h {
                    Value::String(s) => Some(s.clone()),
                    other => {
                        self.problem(
                            "allow_hosts",
                            format!("expected host names or addresses, got {}", kind(other)),
                        );
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.problem(
                    "allow_hosts",
                    format!("expected a list of hosts, got {}", kind(other)),
                );
                Vec::new()
            }
        };
        Some(Definition {
            name: name?,
            origin: origin.to_owned(),
            description,
            transport: transport?,
            params,
            auth: auth?,
            headers,
            limits,
            errors: errors?,
            entities,
            allow_hosts,
        })
    }

    fn transport(&mut self, v: Option<&Value>) -> Option<Transport> {
        let (style, path) = match v {
            None => ("rest".to_owned(), None),
            Some(Value::String(s)) => (s.clone(), None),
            Some(v) => {
                let o = self.obj("transport", v, &["style", "path"])?;
                let style = self.required_string(o, "transport", "style")?;
                (style, self.string(o, "transport", "path"))
            }
        };
        match style.as_str() {
            "rest" => {
                if path.is_some() {
                    self.problem("transport.path", "a REST transport has no single path");
                }
                Some(Transport::Rest)
            }
            "jsonrpc" => Some(Transport::JsonRpc {
                path: path.unwrap_or_default(),
            }),
            "tryton" => Some(Transport::Tryton {
                path: path.unwrap_or_default(),
            }),
            other => {
                self.problem(
                    "transport",
                    format!("expected rest, jsonrpc or tryton, got {other:?}"),
                );
                None
            }
        }
    }

    fn params(&mut self, v: Option<&Value>) -> BTreeMap<String, ParamSpec> {
        let mut out = BTreeMap::new();
        let Some(v) = v else { return out };
        let Value::Object(o) = v else {
            self.problem(
                "params",
                format!("expected a mapping of parameter names, got {}", kind(v)),
            );
            return out;
        };
        for (name, spec) in o {
            let key = join("params", name);
            let Some(s) = self.obj(&key, spec, &["required", "description"]) else {
                continue;
            };
            let required = match s.get("required") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    self.problem(
                        &join(&key, "required"),
                        format!("expected true or false, got {other}"),
                    );
                    false
                }
            };
            let description = self.string(s, &key, "description");
            out.insert(
                name.clone(),
                ParamSpec {
                    required,
                    description,
                },
            );
        }
        out
    }

    fn auth(&mut self, v: &Value, transport: Option<&Transport>) -> Option<Auth> {
        let o = self.obj(
            "auth",
            v,
            &[
                "type",
                "header",
                "query",
                "prefix",
                "token_url",
                "scopes",
                "client_auth",
                "algorithm",
                "encoding",
                "string",
                "timestamp_header",
                "login",
                "token",
                "value",
                "lifetime_s",
            ],
        )?;
        let ty = self.required_string(o, "auth", "type")?;
        let only = |r: &mut Self, keys: &[&str]| {
            for k in o.keys() {
                if k != "type" && !keys.contains(&k.as_str()) {
                    r.problem(&join("auth", k), format!("not a key of `type: {ty}` auth"));
                }
            }
        };
        match ty.as_str() {
            "none" => {
                only(self, &[]);
                Some(Auth::None)
            }
            "bearer" => {
                only(self, &[]);
                Some(Auth::Bearer)
            }
            "api_key" => {
                only(self, &["header", "query", "prefix"]);
                let header = self.string(o, "auth", "header");
                let query = self.string(o, "auth", "query");
                let prefix = self.string(o, "auth", "prefix").unwrap_or_default();
                let place = match (header, query) {
                    (Some(h), None) => KeyPlace::Header(h),
                    (None, Some(q)) => KeyPlace::Query(q),
                    _ => {
                        self.problem(
                            "auth",
                            "an api_key auth needs exactly one of `header` or `query`",
                        );
                        return None;
                    }
                };
                Some(Auth::ApiKey { place, prefix })
            }
            "oauth2" => {
                only(self, &["token_url", "scopes", "client_auth"]);
                let token_url = self.string(o, "auth", "token_url");
                let scopes = match o.get("scopes") {
                    None => Vec::new(),
                    Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                        .iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect(),
                    Some(other) => {
                        self.problem(
                            "auth.scopes",
                            format!("expected a list of scope names, got {other}"),
                        );
                        Vec::new()
                    }
                };
                let client_auth = match self.string(o, "auth", "client_auth").as_deref() {
                    None | Some("basic") => ClientAuth::Basic,
                    Some("body") => ClientAuth::Body,
                    Some(other) => {
                        self.problem(
                            "auth.client_auth",
                            format!("expected basic or body, got {other:?}"),
                        );
                        ClientAuth::Basic
                    }
                };
                Some(Auth::OAuth2 {
                    token_url,
                    scopes,
                    client_auth,
                })
            }
            "hmac" => {
                only(
                    self,
                    &[
                        "header",
                        "algorithm",
                        "encoding",
                        "prefix",
                        "string",
                        "timestamp_header",
                    ],
                );
                let header = self.required_string(o, "auth", "header");
                let algorithm = match self.string(o, "auth", "algorithm").as_deref() {
                    None | Some("sha256") => HmacAlgorithm::Sha256,
                    Some("sha1") => HmacAlgorithm::Sha1,
                    Some(other) => {
                        self.problem(
                            "auth.algorithm",
                            format!("expected sha256 or sha1, got {other:?}"),
                        );
                        HmacAlgorithm::Sha256
                    }
                };
                let encoding = match self.string(o, "auth", "encoding").as_deref() {
                    None | Some("hex") => Encoding::Hex,
                    Some("base64") => Encoding::Base64,
                    Some(other) => {
                        self.problem(
                            "auth.encoding",
                            format!("expected hex or base64, got {other:?}"),
                        );
                        Encoding::Hex
                    }
                };
                let prefix = self.string(o, "auth", "prefix").unwrap_or_default();
                let string = match o.get("string") {
                    None => {
                        self.problem("auth", "`string` (what is signed, a jq expression over {method, path, query, body, timestamp}) is missing");
                        None
                    }
                    Some(v) => self.template("auth.string", v, &[]),
                };
                let timestamp_header = self.string(o, "auth", "timestamp_header");
                Some(Auth::Hmac {
                    header: header?,
                    algorithm,
                    encoding,
                    prefix,
                    string: string?,
                    timestamp_header,
                })
            }
            "session" => {
                only(self, &["login", "token", "header", "value", "lifetime_s"]);
                let login = match o.get("login") {
                    None => {
                        self.problem("auth", "`login` (the call that signs in) is missing");
                        None
                    }
                    Some(v) => {
                        transport.and_then(|t| self.call("auth.login", v, t, "POST", LOGIN_VARS))
                    }
                };
                let token = match o.get("token") {
                    None => {
                        self.problem(
                            "auth",
                            "`token` (a jq expression over the login's result) is missing",
                        );
                        None
                    }
                    Some(v) => self.template("auth.token", v, LOGIN_VARS),
                };
                let header = self
                    .string(o, "auth", "header")
                    .unwrap_or_else(|| "Authorization".into());
                let value = match o.get("value") {
                    None => Template::compile(r#""Bearer \($token)""#, &["token"]).ok(),
                    Some(v) => self.template("auth.value", v, &["token"]),
                };
                let lifetime = self
                    .uint(o, "auth", "lifetime_s", 1, 30 * 86_400)
                    .unwrap_or(3600);
                Some(Auth::Session {
                    login: Box::new(login?),
                    token: token?,
                    header,
                    value: value?,
                    lifetime: Duration::from_secs(lifetime),
                })
            }
            other => {
                self.problem(
                    "auth.type",
                    format!(
                        "expected none, bearer, api_key, oauth2, hmac or session, got {other:?}"
                    ),
                );
                None
            }
        }
    }

    fn limits(&mut self, v: Option<&Value>) -> Limits {
        let mut l = Limits::default();
        let Some(v) = v else { return l };
        let Some(o) = self.obj(
            "limits",
            v,
            &[
                "per_second",
                "per_minute",
                "concurrency",
                "timeout_ms",
                "max_response_bytes",
            ],
        ) else {
            return l;
        };
        l.per_second = self
            .uint(o, "limits", "per_second", 1, 100_000)
            .map(|n| n as u32);
        l.per_minute = self
            .uint(o, "limits", "per_minute", 1, 6_000_000)
            .map(|n| n as u32);
        if let Some(n) = self.uint(o, "limits", "concurrency", 1, 256) {
            l.concurrency = n as usize;
        }
        if let Some(n) = self.uint(o, "limits", "timeout_ms", 100, 600_000) {
            l.timeout = Duration::from_millis(n);
        }
        if let Some(n) = self.uint(o, "limits", "max_response_bytes", 1024, 1 << 30) {
            l.max_response_bytes = n as usize;
        }
        l
    }

    fn errors(&mut self, v: Option<&Value>, transport: Option<&Transport>) -> Option<Errors> {
        let rpc = transport.is_some_and(Transport::is_rpc);
        let mut e = Errors {
            code: None,
            message: None,
            rate_limited: vec![Value::from(429)],
            token_invalid: vec![Value::from(401)],
            not_found: vec![Value::from(404)],
            retryable: [408, 500, 502, 503, 504]
                .into_iter()
                .map(Value::from)
                .collect(),
        };
        let Some(v) = v else { return Some(e) };
        let o = self.obj(
            "errors",
            v,
            &[
                "code",
                "message",
                "rate_limited",
                "token_invalid",
                "not_found",
                "retryable",
            ],
        )?;
        e.code = self.opt_template(o, "errors", "code", &[]);
        if e.code.is_some() && !rpc {
            self.problem("errors.code", "a REST system's errors are classified by HTTP status; `code` is for jsonrpc and tryton transports");
        }
        e.message = self.opt_template(o, "errors", "message", &[]);
        for (name, list) in [
            ("rate_limited", &mut e.rate_limited),
            ("token_invalid", &mut e.token_invalid),
            ("not_found", &mut e.not_found),
            ("retryable", &mut e.retryable),
        ] {
            if o.contains_key(name) {
                *list = self.values(o, "errors", name);
            }
        }
        Some(e)
    }

    fn entities(
        &mut self,
        v: Option<&Value>,
        transport: Option<&Transport>,
    ) -> BTreeMap<String, EntityDef> {
        let mut out = BTreeMap::new();
        let Some(v) = v else {
            self.problem("", "`entities` is missing");
            return out;
        };
        let Value::Object(o) = v else {
            self.problem(
                "entities",
                format!("expected a mapping of entity names, got {}", kind(v)),
            );
            return out;
        };
        // With an unknown transport, the entities are still checked (as REST) so that every
        // problem is reported at once.
        let transport = transport.cloned().unwrap_or(Transport::Rest);
        let transport = &transport;
        for (name, e) in o {
            let key = join("entities", name);
            if let Some(d) = self.entity(&key, e, transport) {
                out.insert(name.clone(), d);
            }
        }
        out
    }

    fn entity(&mut self, key: &str, v: &Value, transport: &Transport) -> Option<EntityDef> {
        let o = self.obj(
            key,
            v,
            &[
                "id",
                "cursor",
                "canonical",
                "list",
                "get",
                "find",
                "create",
                "update",
                "delete",
                "actions",
            ],
        )?;
        let id = match o.get("id") {
            None => Template::compile(".id", &[]).ok(),
            Some(v) => self.template(&join(key, "id"), v, &[]),
        };
        let cursor = self.string(o, key, "cursor");
        let canonical = self.string(o, key, "canonical");
        if let Some(c) = &canonical
            && !["person", "department"].contains(&c.as_str())
        {
            self.problem(
                &join(key, "canonical"),
                format!("expected person or department, got {c:?}"),
            );
        }
        let list = o
            .get("list")
            .and_then(|v| self.list(&join(key, "list"), v, transport));
        let call = |r: &mut Self, op: &str, method: &str| {
            o.get(op)
                .and_then(|v| r.call(&join(key, op), v, transport, method, VARS))
        };
        let get = call(self, "get", "GET");
        let create = call(self, "create", "POST");
        let update = call(self, "update", "PUT");
        let delete = call(self, "delete", "DELETE");
        let find = call(self, "find", "GET");
        if find.is_some() && create.is_none() {
            self.problem(
                &join(key, "find"),
                "a find serves a create: declare `create` too",
            );
        }
        let mut actions = BTreeMap::new();
        if let Some(a) = o.get("actions") {
            let akey = join(key, "actions");
            if let Value::Object(m) = a {
                for (name, v) in m {
                    if let Some(c) = self.call(&join(&akey, name), v, transport, "POST", VARS) {
                        actions.insert(name.clone(), c);
                    }
                }
            } else {
                self.problem(
                    &akey,
                    format!("expected a mapping of action names, got {}", kind(a)),
                );
            }
        }
        if list.is_none() && get.is_none() && create.is_none() && !o.contains_key("list") {
            self.problem(
                key,
                "declares no call (list, get, create, update, delete or actions)",
            );
        }
        Some(EntityDef {
            id: id?,
            cursor,
            canonical,
            list,
            get,
            find,
            create,
            update,
            delete,
            actions,
        })
    }

    fn list(&mut self, key: &str, v: &Value, transport: &Transport) -> Option<List> {
        let o = self.obj(
            key,
            v,
            &[
                "method", "path", "query", "headers", "body", "params", "records", "paging",
                "has_more",
            ],
        )?;
        // The call's own keys, without the list's.
        let call_only: Obj = o
            .iter()
            .filter(|(k, _)| !["records", "paging", "has_more"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let call = self.call(key, &Value::Object(call_only), transport, "GET", VARS);
        let records = match o.get("records") {
            None => Template::compile(".", &[]).ok(),
            Some(v) => self.template(&join(key, "records"), v, VARS),
        };
        let paging = self.paging(&join(key, "paging"), o.get("paging"));
        let has_more = self.opt_template(o, key, "has_more", VARS);
        Some(List {
            call: call?,
            records: records?,
            paging: paging?,
            has_more,
        })
    }

    fn paging(&mut self, key: &str, v: Option<&Value>) -> Option<Paging> {
        let Some(v) = v else {
            return Some(Paging::None);
        };
        let o = self.obj(key, v, &["style", "size", "start", "next"])?;
        let style = self.required_string(o, key, "style")?;
        let size = self.uint(o, key, "size", 1, 10_000).unwrap_or(50) as u32;
        let need_no = |r: &mut Self, k: &str| {
            if o.contains_key(k) {
                r.problem(
                    &join(key, k),
                    format!("not a key of `style: {style}` paging"),
                );
            }
        };
        match style.as_str() {
            "none" => Some(Paging::None),
            "offset" => {
                need_no(self, "start");
                need_no(self, "next");
                Some(Paging::Offset { size })
            }
            "page" => {
                need_no(self, "next");
                let start = self.uint(o, key, "start", 0, 1).unwrap_or(1);
                Some(Paging::Page { size, start })
            }
            "cursor" => {
                need_no(self, "start");
                let next = match o.get("next") {
                    None => {
                        self.problem(key, "a cursor paging needs `next` (a jq expression over the answer giving the next cursor)");
                        None
                    }
                    Some(v) => self.template(&join(key, "next"), v, VARS),
                };
                Some(Paging::Cursor { size, next: next? })
            }
            "link" => {
                need_no(self, "start");
                need_no(self, "next");
                Some(Paging::Link { size })
            }
            other => {
                self.problem(
                    &join(key, "style"),
                    format!("expected none, offset, page, cursor or link, got {other:?}"),
                );
                None
            }
        }
    }

    /// A call: `method` defaults to `default_method` (REST) and is required for RPC.
    fn call(
        &mut self,
        key: &str,
        v: &Value,
        transport: &Transport,
        default_method: &str,
        vars: &[&str],
    ) -> Option<Call> {
        let o = if transport.is_rpc() {
            self.obj(key, v, &["method", "params", "result"])?
        } else {
            self.obj(
                key,
                v,
                &["method", "path", "query", "headers", "body", "result"],
            )?
        };
        let result = self.opt_template(o, key, "result", VARS);
        if transport.is_rpc() {
            let method = self.required_string(o, key, "method");
            let body = self.opt_template(o, key, "params", vars);
            return Some(Call {
                method: method?,
                path: Vec::new(),
                query: Vec::new(),
                headers: Vec::new(),
                body,
                result,
            });
        }
        let method = self
            .string(o, key, "method")
            .unwrap_or_else(|| default_method.to_owned())
            .to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            self.problem(
                &join(key, "method"),
                format!("expected GET, POST, PUT, PATCH or DELETE, got {method:?}"),
            );
        }
        let path = self.required_string(o, key, "path").and_then(|p| {
            parse_path(&p)
                .map_err(|m| self.problem(&join(key, "path"), m))
                .ok()
        });
        let query = self.templates(o, key, "query", vars);
        let headers = self.templates(o, key, "headers", vars);
        let body = self.opt_template(o, key, "body", vars);
        Some(Call {
            method,
            path: path?,
            query,
            headers,
            body,
            result,
        })
    }
}

/// `model/party.party/{id}` → pieces; a path is relative to the base URL.
pub fn parse_path(p: &str) -> Result<Vec<PathPiece>, String> {
    if p.starts_with('/') || p.contains("://") || p.starts_with("//") {
        return Err(format!(
            "a path is relative to the connector's base URL: {p:?} must not start with `/` or name a host"
        ));
    }
    if p.split('/').any(|s| s == "..") {
        return Err(format!("a path must not climb out of the base URL: {p:?}"));
    }
    let mut out = Vec::new();
    let mut rest = p;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            out.push(PathPiece::Text(rest[..open].to_owned()));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("unclosed `{{` in path {p:?}"));
        };
        let name = &rest[open + 1..open + close];
        out.push(match name {
            "id" => PathPiece::Id,
            n if n.starts_with("params.") && n.len() > 7 => PathPiece::Param(n[7..].to_owned()),
            other => {
                return Err(format!(
                    "unknown placeholder {{{other}}} in path {p:?} (known: {{id}}, {{params.NAME}})"
                ));
            }
        });
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("stray `}}` in path {p:?}"));
    }
    if !rest.is_empty() {
        out.push(PathPiece::Text(rest.to_owned()));
    }
    Ok(out)
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}.{b}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
