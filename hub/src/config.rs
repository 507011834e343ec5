//! Configuration: the embedded `huitong.toml` as base layer, then an optional
//! file, then `HUITONG_<SECTION>_<KEY>` environment variables, then command-line
//! short forms. Loading never stops at the first mistake: every problem is
//! collected with the layer it came from, the key and what was expected.
//!
//! Secrets are only read from environment variables or files (`<key>_env`,
//! `<key>_file`), held in [`SecretString`] and never printed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use toml::{Table, Value};

/// The default configuration, embedded in the binary.
pub const DEFAULT_TOML: &str = include_str!("../huitong.toml");

const BUILT_IN: &str = "built-in huitong.toml";

/// Sections that `HUITONG_<SECTION>_<KEY>` environment variables may set.
const ENV_SECTIONS: &[&str] = &["server", "database", "queue", "log", "schedules"];

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub queue: QueueConfig,
    pub log: LogConfig,
    pub connectors: BTreeMap<String, ConnectorConfig>,
    pub routes: BTreeMap<String, RouteConfig>,
    pub schedules: SchedulesConfig,
}

#[derive(Debug, Clone)]
pub struct SchedulesConfig {
    /// Folder of schedule files (`*.yaml`); a missing folder means no schedules.
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub body_limit_bytes: usize,
    pub shutdown_grace: Duration,
    pub limits: ConnectionLimits,
}

/// What one client may hold of the HTTP listener (`[server]` `*_timeout_ms`, `max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From the first byte of a request until its headers are complete.
    pub header_timeout: Duration,
    /// From the end of a request's headers until its whole body has arrived.
    pub body_timeout: Duration,
    /// From the end of a request's headers until its response is ready.
    pub request_timeout: Duration,
    /// A connection with no request in progress and no byte of a new one is closed after this.
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap a new connection displaces the longest-idle one.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

#[derive(Clone)]
pub struct DatabaseConfig {
    /// Full connection URL, password included: exposed only to the driver.
    pub url: SecretString,
    pub max_connections: u32,
}

impl DatabaseConfig {
    /// The URL with any password replaced by `***`, safe to print.
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Clone)]
pub enum QueueUrl {
    Embedded,
    Amqp(SecretString),
}

impl QueueUrl {
    pub fn redacted(&self) -> String {
        match self {
            QueueUrl::Embedded => "embedded".to_owned(),
            QueueUrl::Amqp(url) => redact_url(url.expose_secret()),
        }
    }
}

impl fmt::Debug for QueueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Quorum,
    Classic,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub url: QueueUrl,
    pub prefetch: u16,
    pub queue_type: QueueType,
    pub retry_tiers: Vec<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// The vendors a connector may speak: the connectors crate's registry.
pub use huitong_connectors::registry::Kind as ConnectorKind;

/// How a connector's vendor events reach huitong (`events = "callback" | "push"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventSource {
    /// The vendor calls `/callbacks/{vendor}/{connector}` (needs a public address).
    #[default]
    Callback,
    /// huitong dials out and keeps a connection open: Feishu's long connection, DingTalk's
    /// Stream mode (no public address needed). Callbacks are still received if configured.
    Push,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Callback => "callback",
            EventSource::Push => "push",
        }
    }
}

/// One connected system. Plain settings are strings; secrets were read from
/// the environment or a file and stay wrapped.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    pub name: String,
    pub kind: ConnectorKind,
    /// How its events arrive (`events`, default `callback`).
    pub events: EventSource,
    pub settings: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretString>,
    /// The admin's own mappings (`[connectors.NAME.mappings]`), by entity; the others are
    /// the vendor's shipped ones.
    pub mappings: BTreeMap<crate::model::Entity, crate::sync::connect::MappingSource>,
    /// The connector's one live instance in this process, built on first use and shared by
    /// every clone of the loaded configuration (one limiter, one token cache per vendor app).
    pub instance: crate::sync::connect::Instance,
}

impl ConnectorConfig {
    /// A connector table of this kind (no live instance yet).
    pub fn new(
        name: impl Into<String>,
        kind: ConnectorKind,
        settings: BTreeMap<String, String>,
        secrets: BTreeMap<String, SecretString>,
    ) -> Self {
        ConnectorConfig {
            name: name.into(),
            kind,
            events: EventSource::Callback,
            settings,
            secrets,
            mappings: BTreeMap::new(),
            instance: Default::default(),
        }
    }

    /// Where its mapping of `entity` comes from: the admin's, else the shipped one.
    pub fn mapping_source(
        &self,
        entity: crate::model::Entity,
    ) -> crate::sync::connect::MappingSource {
        use crate::sync::connect::MappingSource;
        if let Some(m) = self.mappings.get(&entity) {
            return m.clone();
        }
        match self.kind.mapping_system(&self.vendor_settings()) {
            Some(system) => MappingSource::shipped(&system, entity),
            // An admin's own http definition ships no mappings: they must be named.
            None => MappingSource::Unset(format!(
                "connector {:?} uses its own definition, which ships no mappings: name its {entity} mapping in [connectors.{}.mappings] ({entity} = \"path/to/file.yaml\")",
                self.name, self.name
            )),
        }
    }

    /// Its settings as the vendor registry takes them.
    pub fn vendor_settings(&self) -> huitong_connectors::registry::Settings {
        huitong_connectors::registry::Settings {
            name: self.name.clone(),
            plain: self.settings.clone(),
            secrets: self.secrets.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub source: String,
    pub targets: Vec<String>,
    pub entities: Vec<String>,
    /// How people are first linked across systems, tried in order: employee_no, email, mobile.
    pub match_rules: Vec<MatchRule>,
    /// What happens in the targets to people who left the source.
    pub deletion: Deletion,
    /// A plan that disables or deletes more than this share of a target's people is refused
    /// unless forced.
    pub safety_threshold_percent: f64,
    /// Only this source department (external id) and below.
    pub scope_root: Option<String>,
    /// Departments (and their subtrees) whose name matches one of these `*` patterns are left out.
    pub scope_deny: Vec<String>,
    /// Which connector owns an entity (`person`) or one field of it (`person.title`); the most
    /// specific entry wins. A route only creates/removes records of an entity its source owns
    /// (or nobody owns), and only writes fields its source owns (or nobody owns).
    pub system_of_record: BTreeMap<String, String>,
}

impl RouteConfig {
    /// The connector that owns `entity`, or `entity.field` when a field is given.
    pub fn owner(&self, entity: &str, field: Option<&str>) -> Option<&str> {
        field
            .and_then(|f| self.system_of_record.get(&format!("{entity}.{f}")))
            .or_else(|| self.system_of_record.get(entity))
            .map(String::as_str)
    }

    /// Whether this route's source may write `entity` (or its `field`) into the targets.
    pub fn source_owns(&self, entity: &str, field: Option<&str>) -> bool {
        self.owner(entity, field).is_none_or(|o| o == self.source)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchRule {
    EmployeeNo,
    Email,
    Mobile,
}

impl MatchRule {
    pub fn field(self) -> &'static str {
        match self {
            MatchRule::EmployeeNo => "employee_no",
            MatchRule::Email => "email",
            MatchRule::Mobile => "mobile",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deletion {
    Disable,
    Delete,
}

/// Where configuration comes from, lowest priority first.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `--config FILE`.
    pub file: Option<PathBuf>,
    /// The environment (pass `std::env::vars()` in the binary; tests pass their own).
    pub env: Vec<(String, String)>,
    /// Command-line short forms such as `serve --listen`: (dotted key, value, flag name).
    pub overrides: Vec<(String, String, String)>,
}

impl Sources {
    pub fn from_process(file: Option<PathBuf>) -> Self {
        Sources {
            file,
            env: std::env::vars().collect(),
            overrides: Vec::new(),
        }
    }
}

/// One mistake in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The layer the value came from: the file path, `env HUITONG_…` or the built-in default.
    pub origin: String,
    /// Dotted key, e.g. `server.listen`.
    pub key: String,
    /// What was expected (never the value of a secret).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: `{}`: {}", self.origin, self.key, self.message)
    }
}

/// All problems found while loading.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "configuration has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Load and validate the configuration from its layers.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let mut layers = Layers::default();
    let mut problems = Vec::new();

    match DEFAULT_TOML.parse::<Table>() {
        Ok(t) => layers.merge(t, BUILT_IN),
        Err(e) => problems.push(Problem {
            origin: BUILT_IN.into(),
            key: "(file)".into(),
            message: format!("the embedded default does not parse: {e}"),
        }),
    }

    if let Some(path) = &sources.file {
        let origin = path.display().to_string();
        match crate::files::read_capped(path, crate::files::CONFIG_MAX_BYTES) {
            Ok(text) => match text.parse::<Table>() {
                Ok(t) => layers.merge(t, &origin),
                Err(e) => problems.push(Problem {
                    origin,
                    key: "(file)".into(),
                    message: format!("not valid TOML: {}", e.to_string().trim()),
                }),
            },
            Err(e) => problems.push(Problem {
                origin,
                key: "(file)".into(),
                message: format!("cannot use the configuration file: {e}"),
            }),
        }
    }

    for (name, value) in &sources.env {
        let Some(rest) = name.strip_prefix("HUITONG_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            continue;
        };
        if !ENV_SECTIONS.contains(&section) || key.is_empty() {
            continue;
        }
        layers.set(
            &[section, key],
            Value::String(value.clone()),
            &format!("env {name}"),
        );
    }

    for (key, value, flag) in &sources.overrides {
        let parts: Vec<&str> = key.split('.').collect();
        layers.set(&parts, Value::String(value.clone()), flag);
    }

    let env: HashMap<&str, &str> = sources
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut r = Reader {
        origins: &layers.origins,
        env: &env,
        problems,
    };
    let config = r.config(&layers.root);
    if r.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            problems: r.problems,
        })
    }
}

#[derive(Default)]
struct Layers {
    root: Table,
    origins: HashMap<String, String>,
}

impl Layers {
    fn merge(&mut self, table: Table, origin: &str) {
        fn walk(
            dst: &mut Table,
            src: Table,
            prefix: &str,
            origin: &str,
            origins: &mut HashMap<String, String>,
        ) {
            for (k, v) in src {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (dst.get_mut(&k), v) {
                    (Some(Value::Table(d)), Value::Table(s)) => walk(d, s, &path, origin, origins),
                    (_, Value::Table(s)) => {
                        let mut fresh = Table::new();
                        walk(&mut fresh, s, &path, origin, origins);
                        origins.insert(path, origin.to_owned());
                        dst.insert(k, Value::Table(fresh));
                    }
                    (_, v) => {
                        origins.insert(path, origin.to_owned());
                        dst.insert(k, v);
                    }
                }
            }
        }
        walk(&mut self.root, table, "", origin, &mut self.origins);
    }

    fn set(&mut self, parts: &[&str], value: Value, origin: &str) {
        let mut t = Table::new();
        let Some((last, parents)) = parts.split_last() else {
            return;
        };
        t.insert((*last).to_owned(), value);
        for p in parents.iter().rev() {
            let mut outer = Table::new();
            outer.insert((*p).to_owned(), Value::Table(t));
            t = outer;
        }
        self.merge(t, origin);
    }
}

struct Reader<'a> {
    origins: &'a HashMap<String, String>,
    env: &'a HashMap<&'a str, &'a str>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    /// The layer that set `key` or, for a list item (`routes.org.targets[0]`) or a missing
    /// key, the nearest enclosing key that a layer set.
    fn origin(&self, key: &str) -> String {
        let mut at = key;
        loop {
            if let Some(o) = self.origins.get(at) {
                return o.clone();
            }
            let parent = match at.strip_suffix(']').and_then(|k| k.rfind('[')) {
                Some(i) => &at[..i],
                None => match at.rfind('.') {
                    Some(i) => &at[..i],
                    None => return BUILT_IN.to_owned(),
                },
            };
            at = parent;
        }
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let origin = self.origin(key);
        self.problems.push(Problem {
            origin,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn set_in_a_file(&self, key: &str) -> bool {
        self.origins
            .get(key)
            .is_some_and(|o| o != BUILT_IN && !o.starts_with("env ") && !o.starts_with("--"))
    }

    fn section<'t>(&mut self, root: &'t Table, name: &str) -> Option<&'t Table> {
        match root.get(name) {
            Some(Value::Table(t)) => Some(t),
            Some(other) => {
                self.problem(
                    name,
                    format!("expected a table [{name}], got {}", other.type_str()),
                );
                None
            }
            None => None,
        }
    }

    fn unknown_keys(&mut self, table: &Table, prefix: &str, allowed: &[&str]) {
        for k in table.keys() {
            if !allowed.contains(&k.as_str()) {
                let mut msg = format!(
                    "unknown setting; known settings here: {}",
                    allowed.join(", ")
                );
                if is_secret_name(k) {
                    msg = format!(
                        "unknown setting (secrets go in `<key>_env` or `<key>_file`); known settings here: {}",
                        allowed.join(", ")
                    );
                }
                self.problem(&format!("{prefix}.{k}"), msg);
            }
        }
    }

    fn string(&mut self, t: &Table, prefix: &str, key: &str) -> Option<String> {
        let path = format!("{prefix}.{key}");
        match t.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Integer(i)) => Some(i.to_string()),
            Some(other) => {
                self.problem(
                    &path,
                    format!("expected a string, got {}", other.type_str()),
                );
                None
            }
            None => None,
        }
    }

    fn required_string(
        &mut self,
        t: &Table,
        prefix: &str,
        key: &str,
        what: &str,
    ) -> Option<String> {
        let v = self.string(t, prefix, key);
        if v.is_none() && !t.contains_key(key) {
            self.problem(
                &format!("{prefix}.{key}"),
                format!("missing; expected {what}"),
            );
        }
        v
    }

    fn integer(&mut self, t: &Table, prefix: &str, key: &str, min: i64, max: i64) -> Option<i64> {
        let path = format!("{prefix}.{key}");
        let n = match t.get(key)? {
            Value::Integer(i) => *i,
            Value::String(s) => match s.trim().parse::<i64>() {
                Ok(i) => i,
                Err(_) => {
                    self.problem(
                        &path,
                        format!("expected an integer between {min} and {max}, got {s:?}"),
                    );
                    return None;
                }
            },
            other => {
                self.problem(
                    &path,
                    format!(
                        "expected an integer between {min} and {max}, got {}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        if n < min || n > max {
            self.problem(
                &path,
                format!("expected an integer between {min} and {max}, got {n}"),
            );
            return None;
        }
        Some(n)
    }

    fn string_list(&mut self, t: &Table, prefix: &str, key: &str) -> Option<Vec<String>> {
        let path = format!("{prefix}.{key}");
        match t.get(key)? {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => {
                            self.problem(
                                &format!("{path}[{i}]"),
                                format!("expected a string, got {}", other.type_str()),
                            );
                            return None;
                        }
                    }
                }
                Some(out)
            }
            // From the environment: comma-separated.
            Value::String(s) => Some(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            other => {
                self.problem(
                    &path,
                    format!("expected a list of strings, got {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A secret named `key`: read from `<key>_env` or `<key>_file`; a literal
    /// `key = "…"` is an error that never repeats the value.
    fn secret(
        &mut self,
        t: &Table,
        prefix: &str,
        key: &str,
        required: bool,
    ) -> Option<SecretString> {
        let path = format!("{prefix}.{key}");
        if t.contains_key(key) {
            self.problem(
                &path,
                format!(
                    "secrets are not accepted in configuration files; set `{key}_env = \"VARIABLE\"` or `{key}_file = \"/path\"` instead"
                ),
            );
            return None;
        }
        let env_key = format!("{key}_env");
        let file_key = format!("{key}_file");
        let var = self.string(t, prefix, &env_key);
        let file = self.string(t, prefix, &file_key);
        match (var, file) {
            (Some(_), Some(_)) => {
                self.problem(
                    &path,
                    format!("give either `{env_key}` or `{file_key}`, not both"),
                );
                None
            }
            (Some(var), None) => match self.env.get(var.as_str()) {
                Some(v) if !v.is_empty() => Some(SecretString::from((*v).to_owned())),
                _ => {
                    self.problem(
                        &format!("{prefix}.{env_key}"),
                        format!("environment variable {var} is not set or empty"),
                    );
                    None
                }
            },
            (None, Some(file)) => match read_secret_file(Path::new(&file)) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.problem(&format!("{prefix}.{file_key}"), e);
                    None
                }
            },
            (None, None) => {
                if required {
                    self.problem(
                        &path,
                        format!(
                            "missing; set `{env_key} = \"VARIABLE\"` or `{file_key} = \"/path\"`"
                        ),
                    );
                }
                None
            }
        }
    }

    fn config(&mut self, root: &Table) -> Config {
        let allowed = [
            "server",
            "database",
            "queue",
            "log",
            "connectors",
            "routes",
            "schedules",
        ];
        for k in root.keys() {
            if !allowed.contains(&k.as_str()) {
                self.problem(
                    k,
                    format!("unknown section; known sections: {}", allowed.join(", ")),
                );
            }
        }
        let empty = Table::new();
        let server_t = self.section(root, "server").unwrap_or(&empty);
        let server = self.server(server_t);
        let db_t = self.section(root, "database").unwrap_or(&empty);
        let database = self.database(db_t);
        let queue_t = self.section(root, "queue").unwrap_or(&empty);
        let queue = self.queue(queue_t);
        let log_t = self.section(root, "log").unwrap_or(&empty);
        let log = self.log(log_t);
        let conn_t = self.section(root, "connectors").unwrap_or(&empty);
        let connectors = self.connectors(conn_t);
        let routes_t = self.section(root, "routes").unwrap_or(&empty);
        let routes = self.routes(routes_t, &connectors);
        let sched_t = self.section(root, "schedules").unwrap_or(&empty);
        self.unknown_keys(sched_t, "schedules", &["dir"]);
        let schedules = SchedulesConfig {
            dir: PathBuf::from(
                self.string(sched_t, "schedules", "dir")
                    .unwrap_or_else(|| "schedules/files".to_owned()),
            ),
        };
        Config {
            server,
            database,
            queue,
            log,
            connectors,
            routes,
            schedules,
        }
    }

    fn server(&mut self, t: &Table) -> ServerConfig {
        self.unknown_keys(
            t,
            "server",
            &[
                "listen",
                "body_limit_bytes",
                "shutdown_grace_secs",
                "header_timeout_ms",
                "body_timeout_ms",
                "request_timeout_ms",
                "idle_timeout_ms",
                "max_connections",
            ],
        );
        let default_listen = SocketAddr::from(([127, 0, 0, 1], 8080));
        let listen = match self.string(t, "server", "listen") {
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    self.problem(
                        "server.listen",
                        format!("expected a socket address such as 127.0.0.1:8080, got {s:?}"),
                    );
                    default_listen
                }
            },
            None => default_listen,
        };
        let body_limit_bytes = self
            .integer(t, "server", "body_limit_bytes", 1024, 64 * 1024 * 1024)
            .unwrap_or(1024 * 1024) as usize;
        let grace = self
            .integer(t, "server", "shutdown_grace_secs", 0, 3600)
            .unwrap_or(10);
        let d = ConnectionLimits::default();
        let mut ms = |key: &str, default: Duration| {
            self.integer(t, "server", key, 100, 3_600_000)
                .map_or(default, |n| Duration::from_millis(n as u64))
        };
        let limits = ConnectionLimits {
            header_timeout: ms("header_timeout_ms", d.header_timeout),
            body_timeout: ms("body_timeout_ms", d.body_timeout),
            request_timeout: ms("request_timeout_ms", d.request_timeout),
            idle_timeout: ms("idle_timeout_ms", d.idle_timeout),
            max_connections: self
                .integer(t, "server", "max_connections", 1, 1_000_000)
                .map_or(d.max_connections, |n| n as usize),
        };
        ServerConfig {
            listen,
            body_limit_bytes,
            shutdown_grace: Duration::from_secs(grace as u64),
            limits,
        }
    }

    fn database(&mut self, t: &Table) -> DatabaseConfig {
        self.unknown_keys(t, "database", &["url", "max_connections", "password_file"]);
        let mut url = self
            .required_string(
                t,
                "database",
                "url",
                "sqlite://PATH or postgres://USER@HOST/DB",
            )
            .unwrap_or_default();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            self.problem(
                "database.url",
                format!(
                    "expected sqlite://PATH or postgres://USER@HOST/DB, got a URL with scheme {:?}",
                    url.split(':').next().unwrap_or("")
                ),
            );
        } else if url_has_password(&url) && self.set_in_a_file("database.url") {
            self.problem(
                "database.url",
                "contains a password; put the URL in HUITONG_DATABASE_URL or the password in `database.password_file`",
            );
        }
        if let Some(file) = self.string(t, "database", "password_file") {
            match read_secret_file(Path::new(&file)) {
                Ok(pw) => match insert_password(&url, pw.expose_secret()) {
                    Some(u) => url = u,
                    None => self.problem(
                        "database.password_file",
                        "a password can only be added to a postgres:// URL with a user name",
                    ),
                },
                Err(e) => self.problem("database.password_file", e),
            }
        }
        let max_connections = self
            .integer(t, "database", "max_connections", 1, 1000)
            .unwrap_or(8) as u32;
        DatabaseConfig {
            url: SecretString::from(url),
            max_connections,
        }
    }

    fn queue(&mut self, t: &Table) -> QueueConfig {
        self.unknown_keys(
            t,
            "queue",
            &["url", "prefetch", "queue_type", "retry_tiers"],
        );
        let url = match self.string(t, "queue", "url").as_deref() {
            None | Some("embedded") => QueueUrl::Embedded,
            Some(u) if u.starts_with("amqp://") || u.starts_with("amqps://") => {
                if url_has_password(u) && self.set_in_a_file("queue.url") {
                    self.problem(
                        "queue.url",
                        "contains a password; put the URL in HUITONG_QUEUE_URL instead",
                    );
                }
                QueueUrl::Amqp(SecretString::from(u.to_owned()))
            }
            Some(u) => {
                self.problem(
                    "queue.url",
                    format!(
                        "expected \"embedded\" or amqp://USER@HOST:PORT/VHOST, got a value with scheme {:?}",
                        u.split(':').next().unwrap_or("")
                    ),
                );
                QueueUrl::Embedded
            }
        };
        let prefetch = self.integer(t, "queue", "prefetch", 1, 65535).unwrap_or(64) as u16;
        let queue_type = match self.string(t, "queue", "queue_type").as_deref() {
            None | Some("quorum") => QueueType::Quorum,
            Some("classic") => QueueType::Classic,
            Some(other) => {
                self.problem(
                    "queue.queue_type",
                    format!("expected \"quorum\" or \"classic\", got {other:?}"),
                );
                QueueType::Quorum
            }
        };
        let mut retry_tiers = Vec::new();
        if let Some(list) = self.string_list(t, "queue", "retry_tiers") {
            for (i, s) in list.iter().enumerate() {
                match parse_duration(s) {
                    Some(d) => retry_tiers.push(d),
                    None => self.problem(
                        &format!("queue.retry_tiers[{i}]"),
                        format!("expected a duration such as 500ms, 5s, 5m or 1h, got {s:?}"),
                    ),
                }
            }
        }
        QueueConfig {
            url,
            prefetch,
            queue_type,
            retry_tiers,
        }
    }

    fn log(&mut self, t: &Table) -> LogConfig {
        self.unknown_keys(t, "log", &["level", "format"]);
        let level = self
            .string(t, "log", "level")
            .unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            self.problem(
                "log.level",
                format!(
                    "expected trace, debug, info, warn, error or a tracing filter, got {level:?}"
                ),
            );
        }
        let format = match self.string(t, "log", "format").as_deref() {
            None | Some("human") => LogFormat::Human,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.problem(
                    "log.format",
                    format!("expected \"human\" or \"json\", got {other:?}"),
                );
                LogFormat::Human
            }
        };
        LogConfig { level, format }
    }

    fn connectors(&mut self, t: &Table) -> BTreeMap<String, ConnectorConfig> {
        let mut out = BTreeMap::new();
        for (name, v) in t {
            let prefix = format!("connectors.{name}");
            let Value::Table(ct) = v else {
                self.problem(
                    &prefix,
                    format!("expected a table [{prefix}], got {}", v.type_str()),
                );
                continue;
            };
            let names = ConnectorKind::names();
            let Some(kind_s) =
                self.required_string(ct, &prefix, "kind", &format!("one of {names}"))
            else {
                continue;
            };
            let Some(kind) = ConnectorKind::parse(&kind_s) else {
                self.problem(
                    &format!("{prefix}.kind"),
                    format!("expected one of {names}, got {kind_s:?}"),
                );
                continue;
            };
            let keys = kind.keys();
            let plain: Vec<(&str, bool)> = keys
                .iter()
                .filter(|k| !k.secret)
                .map(|k| (k.name, k.required))
                .collect();
            let secret: Vec<(&str, bool)> = keys
                .iter()
                .filter(|k| k.secret)
                .map(|k| (k.name, k.required))
                .collect();
            let mut allowed: Vec<String> = vec!["kind".into(), "events".into(), "mappings".into()];
            allowed.extend(plain.iter().map(|(k, _)| (*k).to_owned()));
            allowed.extend(kind.table_keys().iter().map(|k| (*k).to_owned()));
            for (k, _) in &secret {
                allowed.push(format!("{k}_env"));
                allowed.push(format!("{k}_file"));
            }
            let secret_names: Vec<&str> = secret.iter().map(|(k, _)| *k).collect();
            let allowed_ref: Vec<&str> = allowed.iter().map(String::as_str).collect();
            let unknown: Table = ct
                .iter()
                .filter(|(k, _)| !secret_names.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            self.unknown_keys(&unknown, &prefix, &allowed_ref);
            let mut settings = BTreeMap::new();
            for (k, required) in &plain {
                let v = if *required {
                    self.required_string(ct, &prefix, k, "a string")
                } else {
                    self.string(ct, &prefix, k)
                };
                if let Some(v) = v {
                    settings.insert((*k).to_owned(), v);
                }
            }
            // Tables and arrays (an http connector's `params`, `allow_hosts`), as JSON text.
            for k in kind.table_keys() {
                if let Some(v) = ct.get(*k) {
                    settings.insert((*k).to_owned(), toml_to_json(v).to_string());
                }
            }
            let mut secrets = BTreeMap::new();
            for (k, required) in &secret {
                if let Some(s) = self.secret(ct, &prefix, k, *required) {
                    secrets.insert((*k).to_owned(), s);
                }
            }
            let events_key = format!("{prefix}.events");
            let events = match self.string(ct, &prefix, "events").as_deref() {
                None | Some("callback") => EventSource::Callback,
                Some("push") if kind.has_push_channel() => EventSource::Push,
                Some("push") => {
                    self.problem(
                        &events_key,
                        format!(
                            "connector {name:?} is a {} connector, which has no push channel: `events` must be \"callback\" (push is offered by feishu, over its long connection, and dingtalk, in Stream mode)",
                            kind.as_str()
                        ),
                    );
                    EventSource::Callback
                }
                Some(other) => {
                    self.problem(
                        &events_key,
                        format!("expected \"callback\" (the default) or \"push\", got {other:?}"),
                    );
                    EventSource::Callback
                }
            };
            let mut c = ConnectorConfig::new(name.clone(), kind, settings, secrets);
            c.events = events;
            c.mappings = self.connector_mappings(ct, &prefix);
            // Values the vendor checks itself (numbers, enums); absent required keys were
            // reported above.
            for p in kind.check(&c.vendor_settings()) {
                self.problem(&format!("{prefix}.{}", p.key), p.message);
            }
            out.insert(name.clone(), c);
        }
        out
    }

    /// `[connectors.NAME.mappings]`: entity = a shipped mapping's name or a file, each loaded
    /// and compiled here so that its problems (with file and line) stop `config check`.
    fn connector_mappings(
        &mut self,
        ct: &Table,
        prefix: &str,
    ) -> BTreeMap<crate::model::Entity, crate::sync::connect::MappingSource> {
        use crate::model::Entity;
        use crate::sync::connect::MappingSource;
        let mut out = BTreeMap::new();
        let key = format!("{prefix}.mappings");
        let Some(v) = ct.get("mappings") else {
            return out;
        };
        let Value::Table(mt) = v else {
            self.problem(
                &key,
                format!(
                    "expected a table such as `[{key}]` with `person = \"mappings/my-person.yaml\"`, got {}",
                    v.type_str()
                ),
            );
            return out;
        };
        for (entity_name, v) in mt {
            let entry = format!("{key}.{entity_name}");
            let Some(entity) = Entity::parse(entity_name) else {
                let known: Vec<&str> = Entity::ORG.iter().map(|e| e.as_str()).collect();
                self.problem(
                    &entry,
                    format!(
                        "unknown entity; mappings can be set for {}",
                        known.join(", ")
                    ),
                );
                continue;
            };
            let Value::String(text) = v else {
                self.problem(
                    &entry,
                    format!(
                        "expected a mapping file's path or a shipped mapping's name, got {}",
                        v.type_str()
                    ),
                );
                continue;
            };
            let source = MappingSource::parse(text);
            match source.load(entity) {
                Ok(_) => {
                    out.insert(entity, source);
                }
                Err(e) => self.problem(&entry, e),
            }
        }
        out
    }

    fn routes(
        &mut self,
        t: &Table,
        connectors: &BTreeMap<String, ConnectorConfig>,
    ) -> BTreeMap<String, RouteConfig> {
        let mut out = BTreeMap::new();
        for (name, v) in t {
            let prefix = format!("routes.{name}");
            let Value::Table(rt) = v else {
                self.problem(
                    &prefix,
                    format!("expected a table [{prefix}], got {}", v.type_str()),
                );
                continue;
            };
            self.unknown_keys(
                rt,
                &prefix,
                &[
                    "source",
                    "targets",
                    "entities",
                    "match",
                    "deletion",
                    "safety_threshold_percent",
                    "scope_root",
                    "scope_deny",
                    "system_of_record",
                ],
            );
            let source = self
                .required_string(rt, &prefix, "source", "the name of a connector")
                .unwrap_or_default();
            if !source.is_empty() && !connectors.contains_key(&source) {
                self.problem(
                    &format!("{prefix}.source"),
                    format!("no connector named {source:?} is configured under [connectors]"),
                );
            }
            let targets = self.string_list(rt, &prefix, "targets").unwrap_or_default();
            if targets.is_empty() {
                self.problem(
                    &format!("{prefix}.targets"),
                    "expected at least one target connector",
                );
            }
            for (i, target) in targets.iter().enumerate() {
                if !connectors.contains_key(target) {
                    self.problem(
                        &format!("{prefix}.targets[{i}]"),
                        format!("no connector named {target:?} is configured under [connectors]"),
                    );
                } else if *target == source {
                    self.problem(
                        &format!("{prefix}.targets[{i}]"),
                        "a route cannot target its own source",
                    );
                }
            }
            let entities = self
                .string_list(rt, &prefix, "entities")
                .unwrap_or_else(|| vec!["department".into(), "person".into()]);
            for (i, e) in entities.iter().enumerate() {
                if !["department", "person", "message", "task", "ticket", "order"]
                    .contains(&e.as_str())
                {
                    self.problem(
                        &format!("{prefix}.entities[{i}]"),
                        format!("expected one of department, person, message, task, ticket, order, got {e:?}"),
                    );
                }
            }
            let mut match_rules = Vec::new();
            let rules = self
                .string_list(rt, &prefix, "match")
                .unwrap_or_else(|| vec!["employee_no".into(), "email".into(), "mobile".into()]);
            for (i, r) in rules.iter().enumerate() {
                match r.as_str() {
                    "employee_no" => match_rules.push(MatchRule::EmployeeNo),
                    "email" => match_rules.push(MatchRule::Email),
                    "mobile" => match_rules.push(MatchRule::Mobile),
                    other => self.problem(
                        &format!("{prefix}.match[{i}]"),
                        format!("expected employee_no, email or mobile, got {other:?}"),
                    ),
                }
            }
            let deletion = match self.string(rt, &prefix, "deletion").as_deref() {
                None | Some("disable") => Deletion::Disable,
                Some("delete") => Deletion::Delete,
                Some(other) => {
                    self.problem(
                        &format!("{prefix}.deletion"),
                        format!("expected \"disable\" (the default) or \"delete\", got {other:?}"),
                    );
                    Deletion::Disable
                }
            };
            let mut system_of_record = BTreeMap::new();
            match rt.get("system_of_record") {
                None => {}
                Some(Value::Table(t)) => {
                    for (key, owner) in t {
                        let at = format!("{prefix}.system_of_record.{key}");
                        let (entity, field) = match key.split_once('.') {
                            Some((e, f)) => (e, Some(f)),
                            None => (key.as_str(), None),
                        };
                        if !["department", "person"].contains(&entity)
                            || field.is_some_and(|f| f.is_empty() || f.contains('.'))
                        {
                            self.problem(
                                &at,
                                "expected `department`, `person` or `<entity>.<field>` (e.g. person.title)",
                            );
                            continue;
                        }
                        match owner.as_str() {
                            Some(o) if o == source || targets.iter().any(|t| t == o) => {
                                system_of_record.insert(key.clone(), o.to_owned());
                            }
                            Some(o) => self.problem(
                                &at,
                                format!("{o:?} is neither this route's source nor one of its targets"),
                            ),
                            None => self.problem(&at, "expected the name of a connector"),
                        }
                    }
                }
                Some(other) => self.problem(
                    &format!("{prefix}.system_of_record"),
                    format!(
                        "expected a table such as {{ person = \"hq\", \"person.title\" = \"sub\" }}, got {}",
                        other.type_str()
                    ),
                ),
            }
            // A member without mappings (an http connector with its own definition) is named
            // here rather than failing the first plan.
            for member in std::iter::once(&source).chain(targets.iter()) {
                let Some(c) = connectors.get(member) else {
                    continue;
                };
                for entity in crate::model::Entity::ORG {
                    if let crate::sync::connect::MappingSource::Unset(why) =
                        c.mapping_source(entity)
                    {
                        let key = format!("connectors.{member}.mappings.{entity}");
                        if !self.problems.iter().any(|p| p.key == key) {
                            self.problem(&key, why);
                        }
                    }
                }
            }
            let threshold_key = format!("{prefix}.safety_threshold_percent");
            let safety_threshold_percent = match rt.get("safety_threshold_percent") {
                None => 5.0,
                Some(Value::Integer(i)) if (0..=100).contains(i) => *i as f64,
                Some(Value::Float(f)) if (0.0..=100.0).contains(f) => *f,
                Some(other) => {
                    self.problem(
                        &threshold_key,
                        format!("expected a percentage between 0 and 100, got {other:?}"),
                    );
                    5.0
                }
            };
            out.insert(
                name.clone(),
                RouteConfig {
                    name: name.clone(),
                    source,
                    targets,
                    entities,
                    match_rules,
                    deletion,
                    safety_threshold_percent,
                    scope_root: self.string(rt, &prefix, "scope_root"),
                    scope_deny: self
                        .string_list(rt, &prefix, "scope_deny")
                        .unwrap_or_default(),
                    system_of_record,
                },
            );
        }
        out
    }
}

fn is_secret_name(key: &str) -> bool {
    const MARKERS: &[&str] = &[
        "secret",
        "token",
        "password",
        "aes_key",
        "encrypt_key",
        "api_key",
        "private_key",
    ];
    !key.ends_with("_env") && !key.ends_with("_file") && MARKERS.iter().any(|m| key.contains(m))
}

fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    match crate::files::read_capped(path, crate::files::SECRET_MAX_BYTES) {
        Ok(s) => {
            let s = s.trim_end_matches(['\n', '\r']).to_owned();
            if s.is_empty() {
                Err(format!("secret file {} is empty", path.display()))
            } else {
                Ok(SecretString::from(s))
            }
        }
        Err(e) => Err(format!("cannot use secret file: {e}")),
    }
}

/// Byte range of the password inside `scheme://user:password@host…`, if any.
fn password_range(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end_authority = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end_authority];
    let at = authority.rfind('@')?;
    let userinfo = &authority[..at];
    let colon = userinfo.find(':')?;
    Some((start + colon + 1, start + at))
}

fn url_has_password(url: &str) -> bool {
    password_range(url).is_some_and(|(a, b)| b > a)
}

/// `url` with its password (if any) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match password_range(url) {
        Some((a, b)) => format!("{}***{}", &url[..a], &url[b..]),
        None => url.to_owned(),
    }
}

fn insert_password(url: &str, password: &str) -> Option<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let at = rest[..rest.find('/').unwrap_or(rest.len())].rfind('@')?;
    let user = rest[..at].split(':').next()?;
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Some(format!(
        "{}{}:{}{}",
        &url[..start],
        user,
        encoded,
        &rest[at..]
    ))
}

/// Parse `500ms`, `5s`, `5m`, `1h`, `2d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86400)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

/// A TOML value as JSON (dates as their text).
fn toml_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Integer(i) => serde_json::Value::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_text(
        text: &str,
        env: &[(&str, &str)],
    ) -> (Result<Config, ConfigError>, tempfile::NamedTempFile) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let sources = Sources {
            file: Some(f.path().to_owned()),
            env: env
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            overrides: vec![],
        };
        (load(&sources), f)
    }

    #[test]
    fn embedded_default_is_valid_and_embedded() {
        let c = load(&Sources::default()).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database.url.expose_secret(), "sqlite://./data/huitong.db");
        assert!(matches!(c.queue.url, QueueUrl::Embedded));
        assert_eq!(c.queue.queue_type, QueueType::Quorum);
        assert_eq!(
            c.queue.retry_tiers,
            vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(300),
                Duration::from_secs(1800)
            ]
        );
    }

    #[test]
    fn layers_apply_in_order_file_then_env_then_flags() {
        let (c, _f) = load_text(
            "[server]\nlisten = \"127.0.0.1:9000\"\n[queue]\nprefetch = 10\n",
            &[
                ("HUITONG_QUEUE_PREFETCH", "20"),
                ("HUITONG_DATABASE_URL", "postgres://u:pw@db/x"),
            ],
        );
        let c = c.unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.queue.prefetch, 20);
        assert_eq!(c.database.url.expose_secret(), "postgres://u:pw@db/x");
        assert_eq!(c.database.redacted_url(), "postgres://u:***@db/x");

        let sources = Sources {
            file: None,
            env: vec![("HUITONG_SERVER_LISTEN".into(), "127.0.0.1:7000".into())],
            overrides: vec![(
                "server.listen".into(),
                "127.0.0.1:7001".into(),
                "--listen".into(),
            )],
        };
        assert_eq!(load(&sources).unwrap().server.listen.port(), 7001);
    }

    #[test]
    fn every_problem_is_reported_with_origin_and_key() {
        let (r, f) = load_text(
            "[server]\nlisten = \"nowhere\"\n[queue]\nprefetch = -3\n[connectors.hq]\nkind = \"slack\"\n",
            &[("HUITONG_LOG_FORMAT", "xml")],
        );
        let err = r.unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "server.listen",
                "queue.prefetch",
                "log.format",
                "connectors.hq.kind"
            ]
        );
        let path = f.path().display().to_string();
        assert_eq!(err.problems[0].origin, path);
        assert_eq!(err.problems[2].origin, "env HUITONG_LOG_FORMAT");
        assert!(err.to_string().contains("4 problems"));
    }

    #[test]
    fn system_of_record_names_route_members_and_known_entities() {
        let base = "[connectors.hq]\nkind = \"feishu\"\napp_id = \"a\"\napp_secret_env = \"S\"\n\
                    [connectors.sub]\nkind = \"dingtalk\"\napp_key = \"k\"\napp_secret_env = \"S\"\n\
                    [connectors.other]\nkind = \"wecom\"\ncorp_id = \"c\"\nagent_id = 1\ncorp_secret_env = \"S\"\n\
                    [routes.org]\nsource = \"hq\"\ntargets = [\"sub\"]\n";
        let (c, _f) = load_text(
            &format!(
                "{base}system_of_record = {{ person = \"hq\", \"person.title\" = \"sub\" }}\n"
            ),
            &[("S", "x")],
        );
        let c = c.unwrap();
        let r = &c.routes["org"];
        assert_eq!(r.owner("person", Some("title")), Some("sub"));
        assert_eq!(r.owner("person", Some("name")), Some("hq"));
        assert_eq!(r.owner("department", None), None);
        assert!(r.source_owns("person", Some("name")));
        assert!(!r.source_owns("person", Some("title")));
        assert!(r.source_owns("department", Some("name")));

        let (r, _f) = load_text(
            &format!(
                "{base}system_of_record = {{ person = \"other\", \"ticket\" = \"hq\", \"person.\" = \"hq\" }}\n"
            ),
            &[("S", "x")],
        );
        let err = r.unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "routes.org.system_of_record.person",
                "routes.org.system_of_record.person.",
                "routes.org.system_of_record.ticket"
            ],
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("neither this route's source nor one of its targets")
        );
    }

    #[test]
    fn literal_secret_is_refused_without_echoing_it() {
        let (r, _f) = load_text(
            "[connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_1\"\napp_secret = \"s3cr3t-literal-value\"\n",
            &[],
        );
        let err = r.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("connectors.hq.app_secret"), "{text}");
        assert!(!text.contains("s3cr3t-literal-value"), "{text}");
    }

    #[test]
    fn secrets_come_from_env_or_file_and_are_redacted_in_debug() {
        let mut secret_file = tempfile::NamedTempFile::new().unwrap();
        writeln!(secret_file, "wecom-secret-from-file").unwrap();
        let text = format!(
            "[connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_1\"\napp_secret_env = \"HQ_SECRET\"\n\
             [connectors.f]\nkind = \"wecom\"\ncorp_id = \"ww1\"\nagent_id = 1000002\ncorp_secret_file = \"{}\"\n\
             [routes.org]\nsource = \"hq\"\ntargets = [\"f\"]\n",
            secret_file.path().display()
        );
        let (c, _f) = load_text(&text, &[("HQ_SECRET", "feishu-secret-from-env")]);
        let c = c.unwrap();
        assert_eq!(
            c.connectors["hq"].secrets["app_secret"].expose_secret(),
            "feishu-secret-from-env"
        );
        assert_eq!(
            c.connectors["f"].secrets["corp_secret"].expose_secret(),
            "wecom-secret-from-file"
        );
        assert_eq!(c.connectors["f"].settings["agent_id"], "1000002");
        let debug = format!("{c:?}");
        assert!(!debug.contains("feishu-secret-from-env"));
        assert!(!debug.contains("wecom-secret-from-file"));
        assert_eq!(c.routes["org"].targets, vec!["f".to_owned()]);
    }

    #[test]
    fn events_default_to_callback_and_push_is_for_feishu_and_dingtalk_only() {
        let (c, _f) = load_text(
            "[connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_1\"\napp_secret_env = \"S\"\nevents = \"push\"\n\
             [connectors.sub]\nkind = \"dingtalk\"\napp_key = \"ding1\"\napp_secret_env = \"S\"\nevents = \"push\"\n\
             [connectors.f]\nkind = \"wecom\"\ncorp_id = \"ww1\"\nagent_id = 1\ncorp_secret_env = \"S\"\n",
            &[("S", "x")],
        );
        let c = c.unwrap();
        assert_eq!(c.connectors["hq"].events, EventSource::Push);
        assert_eq!(c.connectors["sub"].events, EventSource::Push);
        assert_eq!(c.connectors["f"].events, EventSource::Callback);

        let (r, f) = load_text(
            "[connectors.factory]\nkind = \"wecom\"\ncorp_id = \"ww1\"\nagent_id = 1\ncorp_secret_env = \"S\"\nevents = \"push\"\n\
             [connectors.hq]\nkind = \"feishu\"\napp_id = \"cli_1\"\napp_secret_env = \"S\"\nevents = \"stream\"\n",
            &[("S", "x")],
        );
        let err = r.unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["connectors.factory.events", "connectors.hq.events"]
        );
        assert_eq!(err.problems[0].origin, f.path().display().to_string());
        assert!(err.problems[0].message.contains("\"factory\""), "{err}");
        assert!(err.problems[0].message.contains("wecom"), "{err}");
        assert!(err.problems[1].message.contains("\"stream\""), "{err}");
    }

    #[test]
    fn routes_must_name_configured_connectors() {
        let (r, _f) = load_text("[routes.org]\nsource = \"hq\"\ntargets = [\"hq\"]\n", &[]);
        let err = r.unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["routes.org.source", "routes.org.targets[0]"]);
    }

    #[test]
    fn problems_in_list_items_and_missing_keys_blame_the_users_file() {
        let (r, f) = load_text(
            "[routes.org]\ntargets = [\"nowhere\"]\nmatch = [\"phone\"]\n\
             [queue]\nretry_tiers = [\"5s\", \"soon\"]\n",
            &[],
        );
        let err = r.unwrap_err();
        let path = f.path().display().to_string();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "queue.retry_tiers[1]",
                "routes.org.source",
                "routes.org.targets[0]",
                "routes.org.match[0]"
            ],
            "{err}"
        );
        for p in &err.problems {
            assert_eq!(p.origin, path, "{p}");
        }
        assert!(!err.to_string().contains(BUILT_IN), "{err}");
    }

    #[test]
    fn password_in_file_url_is_refused_but_password_file_is_inserted() {
        let (r, _f) = load_text("[database]\nurl = \"postgres://u:hunter2@db/x\"\n", &[]);
        let text = r.unwrap_err().to_string();
        assert!(
            text.contains("database.url") && !text.contains("hunter2"),
            "{text}"
        );

        let mut pw = tempfile::NamedTempFile::new().unwrap();
        writeln!(pw, "p@ss word").unwrap();
        let (c, _f) = load_text(
            &format!(
                "[database]\nurl = \"postgres://u@db/x\"\npassword_file = \"{}\"\n",
                pw.path().display()
            ),
            &[],
        );
        let c = c.unwrap();
        assert_eq!(
            c.database.url.expose_secret(),
            "postgres://u:p%40ss%20word@db/x"
        );
        assert_eq!(c.database.redacted_url(), "postgres://u:***@db/x");
    }

    #[test]
    fn connection_limits_have_defaults_and_bounds() {
        let c = load(&Sources::default()).unwrap();
        assert_eq!(c.server.limits, ConnectionLimits::default());
        let (c, _f) = load_text(
            "[server]\nheader_timeout_ms = 1500\nmax_connections = 7\n",
            &[("HUITONG_SERVER_IDLE_TIMEOUT_MS", "2000")],
        );
        let l = c.unwrap().server.limits;
        assert_eq!(l.header_timeout, Duration::from_millis(1500));
        assert_eq!(l.idle_timeout, Duration::from_secs(2));
        assert_eq!(l.max_connections, 7);
        let (r, _f) = load_text("[server]\nbody_timeout_ms = 0\nmax_connections = 0\n", &[]);
        let err = r.unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["server.body_timeout_ms", "server.max_connections"]
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("m"), None);
    }
}
