//! A real Tryton ERP and a real OAuth2 server, one of each per test (docs/services.md).
//!
//! `scripts/erp-services` installs them and builds Tryton's template database once; it prints the
//! variables `scripts/test` exports:
//!
//! - `HUITONG_TEST_TRYTON_BIN`: the `trytond` executable;
//! - `HUITONG_TEST_TRYTON_TEMPLATE`: the folder with the template database and `template.json`;
//! - `HUITONG_TEST_NODE`: the `node` executable;
//! - `HUITONG_TEST_OAUTH2_SERVER`: `tests/services/oauth2/server.mjs`.
//!
//! [`Tryton::start_postgres`] also needs `HUITONG_TEST_PG_URL` (the template database is there too).
//! When they are unset, [`Tryton::start`] and [`OAuth2Service::start`] print `SKIPPED: …` and give
//! `None`, unless `HUITONG_TEST_REQUIRE_SERVICES=1`, when they panic.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Mutex;

/// How long a starting service may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The party of the company the seeding creates (and finds again).
const COMPANY_NAME: &str = "Huitong Test Co";

/// A trytond process on a copy of the template database, in a folder of its own, with what
/// purchase orders need seeded (CNY, a company given to admin) and a REST API key for admin.
/// The process is killed and the folder removed on drop.
pub struct Tryton {
    /// The database's root for huitong: `http://127.0.0.1:PORT/DB/` (REST lives under
    /// `rest/model/…`, JSON-RPC at `rpc/`).
    pub base_url: String,
    pub port: u16,
    /// The database name (`DB` in the URLs).
    pub db: String,
    /// A validated `res.user.application` key (application `rest`) of admin:
    /// `Authorization: Bearer <api_key>`.
    pub api_key: String,
    pub admin_login: String,
    pub admin_password: String,
    /// admin's user id.
    pub uid: i64,
    /// The company given to admin (its current company: REST calls run in it).
    pub company_id: i64,
    /// The CNY `currency.currency`, the company's currency.
    pub currency_id: i64,
    /// The `stock.location` of type warehouse.
    pub warehouse_id: i64,
    /// The `product.uom` "u" (unit).
    pub unit_id: i64,
    bin: PathBuf,
    dir: PathBuf,
    /// On PostgreSQL: the admin URL and the database to drop.
    pg_db: Option<(String, String)>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    http: reqwest::Client,
    /// The `Authorization: Session …` value and the context appended to every call.
    session: Mutex<Option<(String, Value)>>,
}

impl Tryton {
    /// A fresh Tryton on SQLite, or `None` (test skipped) when `HUITONG_TEST_TRYTON_BIN` /
    /// `HUITONG_TEST_TRYTON_TEMPLATE` are unset. Panics when it cannot start.
    ///
    /// On SQLite, Tryton numbers records (party codes, order numbers) without a real sequence:
    /// two creates at the same time get the same number and one fails with 400 "The code on
    /// party must be unique.". Tests that write concurrently use [`Tryton::start_postgres`].
    pub async fn start() -> Option<Tryton> {
        let bin = crate::service_url("HUITONG_TEST_TRYTON_BIN", "Tryton")?;
        let template = crate::service_url("HUITONG_TEST_TRYTON_TEMPLATE", "Tryton")?;
        match Tryton::start_from(Path::new(&bin), Path::new(&template), None).await {
            Ok(t) => Some(t),
            Err(e) => panic!("Tryton did not start: {e}"),
        }
    }

    /// [`Tryton::start`] on a fresh PostgreSQL database (`HUITONG_TEST_PG_URL`'s server),
    /// created from the template database `scripts/erp-services` built there, dropped on drop.
    pub async fn start_postgres() -> Option<Tryton> {
        let bin = crate::service_url("HUITONG_TEST_TRYTON_BIN", "Tryton")?;
        let template = crate::service_url("HUITONG_TEST_TRYTON_TEMPLATE", "Tryton")?;
        let pg = crate::service_url("HUITONG_TEST_PG_URL", "Tryton")?;
        match Tryton::start_from(Path::new(&bin), Path::new(&template), Some(pg)).await {
            Ok(t) => Some(t),
            Err(e) => panic!("Tryton (PostgreSQL) did not start: {e}"),
        }
    }

    async fn start_from(bin: &Path, template: &Path, pg: Option<String>) -> Result<Tryton, String> {
        let read = |name: &str| -> Result<Value, String> {
            let path = template.join(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e} (run scripts/erp-services)", path.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        };
        let manifest = read("template.json")?;
        let field = |v: &Value, k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("the template has no {k}"))
        };
        let dir = crate::org::temp_dir("huitong-tryton");
        let (db, uri, pg_db) = match pg {
            None => {
                let (db, file) = (field(&manifest, "database")?, field(&manifest, "file")?);
                std::fs::copy(template.join(&file), dir.join(&file))
                    .map_err(|e| format!("copying the template database: {e}"))?;
                (db, "sqlite://".to_owned(), None)
            }
            Some(admin_url) => {
                let postgres = read("postgres.json")?;
                let (source, server) = (field(&postgres, "database")?, field(&postgres, "server")?);
                let db = format!("huitong_tryton_{}", uuid::Uuid::new_v4().simple());
                create_database_from(&admin_url, &db, &source).await?;
                let uri = format!(
                    "postgresql:{}",
                    server.strip_prefix("postgres:").unwrap_or(&server)
                );
                (db.clone(), uri, Some((admin_url, db)))
            }
        };
        let port = free_port()?;
        std::fs::write(
            dir.join("trytond.conf"),
            format!(
                "[database]\nuri = {uri}\npath = {}\n\n[web]\nlisten = 127.0.0.1:{port}\n",
                dir.display()
            ),
        )
        .map_err(|e| format!("writing trytond.conf: {e}"))?;
        let mut t = Tryton {
            base_url: format!("http://127.0.0.1:{port}/{db}/"),
            port,
            db,
            api_key: String::new(),
            admin_login: field(&manifest, "admin_login")?,
            admin_password: field(&manifest, "admin_password")?,
            uid: 0,
            company_id: 0,
            currency_id: 0,
            warehouse_id: 0,
            unit_id: 0,
            bin: bin.to_owned(),
            dir,
            pg_db,
            child: None,
            stdin: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .map_err(|e| e.to_string())?,
            session: Mutex::new(None),
        };
        t.spawn().await?;
        t.seed().await?;
        Ok(t)
    }

    /// Kill trytond (the database stays): the next calls fail until [`Tryton::start_again`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        self.stdin = None;
    }

    /// Start trytond again on the same database and port, after [`Tryton::stop`].
    pub async fn start_again(&mut self) {
        self.stop().await;
        if let Err(e) = self.spawn().await {
            panic!("Tryton did not start again: {e}");
        }
    }

    /// The process's log so far (trytond writes it to `trytond.log` in its folder).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("trytond.log")).unwrap_or_default()
    }

    /// huitong's connector `erp` on this Tryton: the shipped `tryton` definition (REST, the
    /// API key), 127.0.0.1 allow-listed, the company as its parameter.
    pub fn rest_connector(&self) -> huitong_connectors::declared::HttpConnector {
        use huitong_connectors::declared::{self, HttpConnector, Options, auth::Credentials};
        let def = declared::resolve("tryton").expect("the shipped tryton definition");
        HttpConnector::new(
            def,
            Options {
                name: "erp".into(),
                base_url: self.base_url.clone(),
                params: [("company".to_owned(), Value::from(self.company_id))]
                    .into_iter()
                    .collect(),
                credentials: Credentials {
                    api_key: Some(secrecy::SecretString::from(self.api_key.clone())),
                    ..Credentials::default()
                },
                allow_hosts: vec!["127.0.0.1".into()],
                retry: None,
            },
        )
        .expect("the tryton connector")
    }

    /// `base_url` + `rest/model/<model>`: the REST collection of a model.
    pub fn rest_url(&self, model: &str) -> String {
        format!("{}rest/model/{model}", self.base_url)
    }

    /// Tryton's JSON-RPC, logged in as admin: `method` (e.g. `model.party.party.search_read`)
    /// with `params` (a JSON array; admin's context is appended as the last parameter). The
    /// `result`, or the `error` (e.g. `["UserError", [message, description, null]]`); a failure
    /// to reach Tryton is an `Err` string.
    pub async fn rpc(&self, method: &str, params: Value) -> Result<Value, Value> {
        let Value::Array(params) = params else {
            return Err(Value::String(format!("{method}: params must be an array")));
        };
        let mut relogged = false;
        loop {
            let (auth, context) = self.session().await.map_err(Value::String)?;
            let mut all = params.clone();
            all.push(context);
            let res = self
                .http
                .post(format!("{}rpc/", self.base_url))
                .header("Authorization", format!("Session {auth}"))
                .json(&json!({"id": 1, "method": method, "params": all}))
                .send()
                .await
                .map_err(|e| Value::String(format!("{method}: {e}")))?;
            if res.status() == reqwest::StatusCode::UNAUTHORIZED && !relogged {
                // The session expired (or trytond restarted without it): log in again, once.
                *self.session.lock().await = None;
                relogged = true;
                continue;
            }
            let status = res.status();
            let body: Value = res.json().await.map_err(|e| {
                Value::String(format!("{method}: HTTP {status}, not JSON-RPC: {e}"))
            })?;
            return match body.get("error") {
                Some(err) if !err.is_null() => Err(err.clone()),
                _ => Ok(body.get("result").cloned().unwrap_or(Value::Null)),
            };
        }
    }

    /// [`Tryton::rpc`] that panics on an error.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        match self.rpc(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("Tryton {method}: {e}"),
        }
    }

    /// The session header value and admin's context, logging in when there is none yet.
    async fn session(&self) -> Result<(String, Value), String> {
        let mut session = self.session.lock().await;
        if let Some(s) = &*session {
            return Ok(s.clone());
        }
        let (uid, token) = self.login().await?;
        let auth = STANDARD.encode(format!("{}:{uid}:{token}", self.admin_login));
        // The context a Tryton client sends: the user's preferences (company, language…).
        let prefs: Value = self
            .http
            .post(format!("{}rpc/", self.base_url))
            .header("Authorization", format!("Session {auth}"))
            .json(
                &json!({"id": 1, "method": "model.res.user.get_preferences", "params": [true, {}]}),
            )
            .send()
            .await
            .map_err(|e| format!("get_preferences: {e}"))?
            .json()
            .await
            .map_err(|e| format!("get_preferences: {e}"))?;
        let mut context = prefs.get("result").cloned().unwrap_or_else(|| json!({}));
        if let Some(c) = context.as_object_mut() {
            c.remove("locale");
        }
        *session = Some((auth, context));
        Ok(session.clone().expect("just set"))
    }

    /// `common.db.login` as admin: (uid, session token).
    async fn login(&self) -> Result<(i64, String), String> {
        let res = self
            .http
            .post(format!("{}rpc/", self.base_url))
            .json(&json!({"id": 1, "method": "common.db.login",
                           "params": [self.admin_login, {"password": self.admin_password}]}))
            .send()
            .await
            .map_err(|e| format!("login: {e}"))?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|e| format!("login: HTTP {status}, not JSON: {e}"))?;
        match (body["result"][0].as_i64(), body["result"][1].as_str()) {
            (Some(uid), Some(token)) => Ok((uid, token.to_owned())),
            _ => Err(format!("login answered {body}")),
        }
    }

    /// Start trytond on the folder's config and wait until admin can log in.
    async fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("trytond.log"))
            .map_err(|e| format!("trytond.log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        // trytond runs under its own Python with a thread that ends it when its stdin pipe
        // closes: it does not outlive a test process that dies without dropping this value.
        let python = interpreter(&self.bin)?;
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(LIFELINE)
            .arg(&self.bin)
            .arg("-c")
            .arg(self.dir.join("trytond.conf"))
            .arg("-d")
            .arg(&self.db)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{} {}: {e}", python.display(), self.bin.display()))?;
        self.stdin = child.stdin.take();
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("trytond exited ({status}):\n{}", tail(&self.log())));
            }
            match self.login().await {
                Ok((uid, _)) => {
                    self.uid = uid;
                    return Ok(());
                }
                Err(e) if started.elapsed() > START_TIMEOUT => {
                    return Err(format!(
                        "trytond did not answer within {START_TIMEOUT:?} ({e}):\n{}",
                        tail(&self.log())
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// What purchase orders need, found or created (every call commits by itself, so each step
    /// searches first), and admin's REST key.
    async fn seed(&mut self) -> Result<(), String> {
        let this = &*self;
        let rpc = |m: &'static str, p: Value| async move {
            this.rpc(m, p).await.map_err(|e| format!("{m}: {e}"))
        };
        let first_id = |v: &Value| v[0]["id"].as_i64().or_else(|| v[0].as_i64());

        let found = rpc(
            "model.currency.currency.search_read",
            json!([[["code", "=", "CNY"]], 0, 1, null, ["id"]]),
        )
        .await?;
        let currency = match first_id(&found) {
            Some(id) => id,
            None => first_id(
                &rpc(
                    "model.currency.currency.create",
                    json!([[{"name": "Chinese Yuan Renminbi", "code": "CNY", "numeric_code": "156",
                             "symbol": "¥", "digits": 2,
                             "rounding": {"__class__": "Decimal", "decimal": "0.01"}}]]),
                )
                .await?,
            )
            .ok_or("currency.currency.create gave no id")?,
        };

        let found = rpc(
            "model.company.company.search_read",
            json!([[["party.name", "=", COMPANY_NAME]], 0, 1, null, ["id"]]),
        )
        .await?;
        let company = match first_id(&found) {
            Some(id) => id,
            None => {
                let party = first_id(
                    &rpc(
                        "model.party.party.create",
                        json!([[{"name": COMPANY_NAME}]]),
                    )
                    .await?,
                )
                .ok_or("party.party.create gave no id")?;
                first_id(
                    &rpc(
                        "model.company.company.create",
                        json!([[{"party": party, "currency": currency}]]),
                    )
                    .await?,
                )
                .ok_or("company.company.create gave no id")?
            }
        };
        rpc(
            "model.res.user.write",
            json!([[this.uid], {"companies": [["add", [company]]], "company": company}]),
        )
        .await?;
        // The context (company) changed: the next call logs in again to pick it up.
        *this.session.lock().await = None;

        let warehouse = first_id(
            &rpc(
                "model.stock.location.search_read",
                json!([[["type", "=", "warehouse"]], 0, 1, [["id", "ASC"]], ["id"]]),
            )
            .await?,
        )
        .ok_or("no stock.location of type warehouse")?;
        let unit = first_id(
            &rpc(
                "model.product.uom.search_read",
                json!([[["symbol", "=", "u"]], 0, 1, [["id", "ASC"]], ["id"]]),
            )
            .await?,
        )
        .ok_or("no product.uom with symbol u")?;

        let domain = json!([
            ["user", "=", this.uid],
            ["application", "=", "rest"],
            ["state", "!=", "cancelled"]
        ]);
        let mut apps = rpc(
            "model.res.user.application.search_read",
            json!([domain, 0, 1, [["id", "ASC"]], ["key", "state"]]),
        )
        .await?;
        if first_id(&apps).is_none() {
            rpc(
                "model.res.user.application.create",
                json!([[{"user": this.uid, "application": "rest"}]]),
            )
            .await?;
            apps = rpc(
                "model.res.user.application.search_read",
                json!([domain, 0, 1, [["id", "ASC"]], ["key", "state"]]),
            )
            .await?;
        }
        let app = first_id(&apps).ok_or("res.user.application.create made nothing")?;
        if apps[0]["state"] != "validated" {
            rpc("model.res.user.application.validate_", json!([[app]])).await?;
        }
        let key = apps[0]["key"]
            .as_str()
            .ok_or("res.user.application has no key")?
            .to_owned();

        self.currency_id = currency;
        self.company_id = company;
        self.warehouse_id = warehouse;
        self.unit_id = unit;
        self.api_key = key;
        Ok(())
    }

    /// `X-Tryton-Context` for a context (base64url of its JSON, padded as Tryton requires).
    pub fn context_header(context: &Value) -> String {
        URL_SAFE.encode(context.to_string())
    }

    /// The `d` query parameter for a domain (base64url of its JSON, padded as Tryton requires).
    pub fn domain_param(domain: &Value) -> String {
        URL_SAFE.encode(domain.to_string())
    }
}

impl Drop for Tryton {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((admin_url, db)) = self.pg_db.take() {
            crate::drop_database(admin_url, db);
        }
    }
}

/// `CREATE DATABASE db TEMPLATE source` on the server of `admin_url`.
async fn create_database_from(admin_url: &str, db: &str, source: &str) -> Result<(), String> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL at {admin_url}: {e}"))?;
    let sql = format!("CREATE DATABASE {db} TEMPLATE {source}");
    let mut tries = 0;
    loop {
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
        {
            Ok(_) => return Ok(()),
            // Another test copying the same template at this instant: wait a little.
            Err(e) if tries < 20 && e.to_string().contains("being accessed by other users") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(format!("{sql}: {e}")),
        }
    }
}

/// The options of [`OAuth2Service::start_with`].
#[derive(Clone, Debug)]
pub struct OAuth2Options {
    /// Lifetime of an access token (`expires_in`), in seconds.
    pub ttl_secs: u64,
    /// Orders the REST service holds at start (`Customer 1`…, amounts 10.50, 21.00…).
    pub orders: usize,
}

impl Default for OAuth2Options {
    fn default() -> Self {
        OAuth2Options {
            ttl_secs: 600,
            orders: 3,
        }
    }
}

/// `tests/services/oauth2/server.mjs` running: an oidc-provider authorization server with one
/// client (client credentials, HTTP Basic) and a REST service of orders that wants its tokens
/// (`GET /orders?page=&per_page=`, `GET|PUT|DELETE /orders/{id}`, `POST /orders`; 401 with
/// `WWW-Authenticate: Bearer …` for a missing, unknown or expired token). Killed on drop.
pub struct OAuth2Service {
    pub issuer: String,
    /// `POST` `grant_type=client_credentials` here with Basic `client_id:client_secret`.
    pub token_url: String,
    /// The REST service's root, e.g. `http://127.0.0.1:PORT` (no trailing slash).
    pub api_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub ttl_secs: u64,
    child: Child,
    _stdin: Option<ChildStdin>,
    log: PathBuf,
    http: reqwest::Client,
}

impl OAuth2Service {
    /// The server with tokens living `ttl_secs` and three orders, or `None` (test skipped) when
    /// `HUITONG_TEST_NODE` / `HUITONG_TEST_OAUTH2_SERVER` are unset. Panics when it cannot start.
    pub async fn start(ttl_secs: u64) -> Option<OAuth2Service> {
        OAuth2Service::start_with(OAuth2Options {
            ttl_secs,
            ..OAuth2Options::default()
        })
        .await
    }

    /// [`OAuth2Service::start`] with all the options.
    pub async fn start_with(opts: OAuth2Options) -> Option<OAuth2Service> {
        let node = crate::service_url("HUITONG_TEST_NODE", "OAuth2Service")?;
        let server = crate::service_url("HUITONG_TEST_OAUTH2_SERVER", "OAuth2Service")?;
        match OAuth2Service::spawn(&node, &server, &opts).await {
            Ok(s) => Some(s),
            Err(e) => panic!("the OAuth2 server did not start: {e}"),
        }
    }

    async fn spawn(node: &str, server: &str, opts: &OAuth2Options) -> Result<Self, String> {
        let client_id = "huitong-test".to_owned();
        let client_secret = uuid::Uuid::new_v4().simple().to_string();
        let log = std::env::temp_dir().join(format!(
            "huitong-oauth2-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let stderr = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(node)
            .arg(server)
            .args(["--client-id", &client_id, "--client-secret", &client_secret])
            .args(["--ttl", &opts.ttl_secs.to_string()])
            .args(["--orders", &opts.orders.to_string()])
            // The server exits when this pipe closes, even if this process is killed.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{node} {server}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line()).await;
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(_) => return Err(format!("it exited:\n{}", tail(&read_log()))),
            Err(_) => {
                return Err(format!(
                    "no ready line in {START_TIMEOUT:?}:\n{}",
                    tail(&read_log())
                ));
            }
        };
        let ready: Value =
            serde_json::from_str(&line).map_err(|e| format!("ready line {line:?}: {e}"))?;
        let get = |k: &str| {
            ready[k]
                .as_str()
                .map(str::to_owned)
                .ok_or(format!("ready line has no {k}"))
        };
        Ok(OAuth2Service {
            issuer: get("issuer")?,
            token_url: get("token_url")?,
            api_url: get("api_url")?,
            client_id,
            client_secret,
            ttl_secs: opts.ttl_secs,
            _stdin: child.stdin.take(),
            child,
            log,
            http: reqwest::Client::new(),
        })
    }

    /// An access token from the token endpoint (a client credentials grant).
    pub async fn token(&self) -> String {
        let res = self
            .http
            .post(&self.token_url)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap_or_else(|e| panic!("token request: {e}"));
        let body: Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("token response: {e}"));
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {body}"))
            .to_owned()
    }

    /// The counters at `/_stats`: `token_requests`, `tokens_issued`, `token_errors`,
    /// `api_calls`, `unauthorized`, `introspections`, `orders`.
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/_stats", self.api_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/_stats: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("/_stats: {e}"))
    }

    /// Revoke every token issued so far (they answer 401 from now on); how many there were.
    pub async fn revoke_all(&self) -> u64 {
        let body: Value = self
            .http
            .post(format!("{}/_expire", self.api_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("/_expire: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("/_expire: {e}"));
        body["revoked"].as_u64().unwrap_or(0)
    }

    /// The server's log so far (its stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OAuth2Service {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs the Python script `argv[1]` with the rest of argv, and exits when stdin closes.
const LIFELINE: &str = "\
import os, runpy, sys, threading
def _watch():
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
";

/// The interpreter named by a script's `#!` line.
fn interpreter(script: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(script).map_err(|e| format!("{}: {e}", script.display()))?;
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .and_then(|l| l.split_whitespace().next())
        .map(PathBuf::from)
        .ok_or_else(|| format!("{} has no #! line", script.display()))
}

/// A port of 127.0.0.1 free right now.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// The last lines of a log, for a failure message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
