//! The store: canonical records, identity (xrefs), event de-duplication, sync
//! runs, the audit log and schedule leases.
//!
//! One [`Store`] trait with two implementations, SQLite (the embedded default)
//! and PostgreSQL (production). The backend is chosen by the URL scheme at start
//! ([`open`]); both run the same SQL text (see `sql.rs`) against their own
//! migrations folder. Times are epoch milliseconds; JSON is `Json<Value>`.

mod fires;
mod queue;
mod sql;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::model::Entity;
use sha2::{Digest, Sha256};

pub use queue::{NewMessage, QueueDepth, QueueStore, StoredMessage};
pub use sql::{PgStore, SqliteStore};

use crate::config::DatabaseConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the {backend} database at {url}: {source}")]
    Connect {
        backend: &'static str,
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported database URL {0}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error during {op}: {source}")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("invalid value in the store: {0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A record of the canonical model (person, department, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalRecord {
    pub entity: Entity,
    pub id: String,
    pub data: Value,
    pub content_hash: String,
    pub version: i64,
    pub source_system: Option<String>,
    pub source_time_ms: Option<i64>,
    pub deleted: bool,
    pub updated_at_ms: i64,
}

/// A write of a canonical record. The store computes the content hash.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    pub entity: Entity,
    pub id: String,
    pub data: Value,
    pub source_system: Option<String>,
    /// When the source changed it; an older change than the stored one is refused as stale.
    pub source_time_ms: Option<i64>,
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created {
        version: i64,
    },
    Updated {
        version: i64,
    },
    /// Same content hash: nothing written.
    Unchanged {
        version: i64,
    },
    /// The stored record has a newer source time: nothing written.
    Stale {
        version: i64,
    },
}

/// A link between a canonical id and one external id in one system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xref {
    pub entity: Entity,
    pub canonical_id: String,
    /// The connector name (e.g. `hq`).
    pub system: String,
    pub external_id: String,
    /// Hash of what huitong last wrote to the system (echo suppression).
    pub last_written_hash: Option<String>,
    /// Hash of what huitong last read from the system (change detection).
    pub last_seen_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    Linked,
    AlreadyLinked,
    /// The external id is already linked to another canonical id.
    ExternalTaken {
        canonical_id: String,
    },
    /// The canonical id is already linked to another external id in this system.
    CanonicalTaken {
        external_id: String,
    },
}

/// Where one step of a queued sync run stands (`run_steps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Claimed by a handler; the vendor write may or may not have happened.
    Started,
    /// Failed transiently and waiting in a retry tier; known not written.
    Retrying,
    /// Written.
    Done,
    /// Written, but a reference (leader, manager, parent) had no id yet: written again at the end.
    Unresolved,
    /// Not written; `error` says why.
    Failed,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Started => "started",
            StepStatus::Retrying => "retrying",
            StepStatus::Done => "done",
            StepStatus::Unresolved => "unresolved",
            StepStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "started" => StepStatus::Started,
            "retrying" => StepStatus::Retrying,
            "done" => StepStatus::Done,
            "unresolved" => StepStatus::Unresolved,
            "failed" => StepStatus::Failed,
            other => {
                return Err(StoreError::Invalid(format!(
                    "unknown step status {other:?}"
                )));
            }
        })
    }
}

/// One step of a sync run delivered through the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStep {
    pub seq: i64,
    pub target: String,
    pub action: String,
    pub status: StepStatus,
    /// How many times a handler claimed it (1 = first delivery).
    pub attempts: i64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            other => return Err(StoreError::Invalid(format!("unknown run status {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRun {
    pub id: String,
    pub route: String,
    pub kind: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub status: RunStatus,
    pub counts: BTreeMap<String, i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct NewAudit {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[async_trait]
pub trait Store: QueueStore + huitong_schedules::FireStore + Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    async fn migrate(&self) -> Result<()>;
    async fn ping(&self) -> Result<()>;

    // Canonical records.
    async fn get_record(&self, entity: Entity, id: &str) -> Result<Option<CanonicalRecord>>;
    /// Insert or update, gated by content hash and source time.
    async fn upsert_record(&self, write: &RecordWrite, now_ms: i64) -> Result<UpsertOutcome>;
    /// Records of one entity ordered by id, after `after_id`, at most `limit`.
    async fn list_records(
        &self,
        entity: Entity,
        after_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CanonicalRecord>>;

    // Identity.
    async fn link(&self, xref: &Xref, now_ms: i64) -> Result<LinkOutcome>;
    async fn find_by_external(
        &self,
        entity: Entity,
        system: &str,
        external_id: &str,
    ) -> Result<Option<Xref>>;
    async fn find_by_canonical(
        &self,
        entity: Entity,
        system: &str,
        canonical_id: &str,
    ) -> Result<Option<Xref>>;
    async fn xrefs_of(&self, entity: Entity, canonical_id: &str) -> Result<Vec<Xref>>;
    /// Every link of one entity in one system (to load a sync's identity map at once).
    async fn xrefs_in_system(&self, entity: Entity, system: &str) -> Result<Vec<Xref>>;
    /// The same links as (external id, canonical id) only: what a sync's identity map needs,
    /// read row by row (a large org's full rows are not held twice).
    async fn xref_ids_in_system(
        &self,
        entity: Entity,
        system: &str,
    ) -> Result<Vec<(String, String)>>;
    /// How many records of one entity one system has linked.
    async fn count_xrefs(&self, entity: Entity, system: &str) -> Result<i64>;
    async fn set_written_hash(
        &self,
        entity: Entity,
        system: &str,
        external_id: &str,
        hash: &str,
        now_ms: i64,
    ) -> Result<bool>;
    async fn set_seen_hash(
        &self,
        entity: Entity,
        system: &str,
        external_id: &str,
        hash: &str,
        now_ms: i64,
    ) -> Result<bool>;
    async fn unlink(&self, entity: Entity, system: &str, external_id: &str) -> Result<bool>;

    // Event de-duplication.
    /// True when the event is new (or its earlier record expired); false for a duplicate.
    async fn mark_event(
        &self,
        source: &str,
        event_id: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool>;
    async fn purge_events(&self, now_ms: i64) -> Result<u64>;

    // Sync runs.
    async fn start_run(&self, route: &str, kind: &str, now_ms: i64) -> Result<SyncRun>;
    async fn finish_run(
        &self,
        id: &str,
        status: RunStatus,
        counts: &BTreeMap<String, i64>,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool>;
    async fn get_run(&self, id: &str) -> Result<Option<SyncRun>>;
    async fn list_runs(&self, route: Option<&str>, limit: i64) -> Result<Vec<SyncRun>>;

    // Steps of a run delivered through the queue.
    /// Claim a step before carrying it out: inserted as `started` (attempts 1), or, when a
    /// handler claimed it before, returned as it stands with its attempts counted up.
    async fn begin_step(
        &self,
        run_id: &str,
        seq: i64,
        target: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<RunStep>;
    async fn finish_step(
        &self,
        run_id: &str,
        seq: i64,
        status: StepStatus,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool>;
    /// How many steps with `from <= seq < to` are finished (neither `started` nor `retrying`).
    async fn count_finished_steps(&self, run_id: &str, from: i64, to: i64) -> Result<i64>;
    /// The step rows of a run (only those with `status`, if given), by seq.
    async fn run_steps(&self, run_id: &str, status: Option<StepStatus>) -> Result<Vec<RunStep>>;

    // Audit log.
    async fn audit(&self, entry: &NewAudit, now_ms: i64) -> Result<i64>;
    async fn list_audit(&self, limit: i64) -> Result<Vec<AuditEntry>>;

    // Schedule leases.
    /// Take or renew the lease `name` for `holder` until `until_ms`; false when another holder has it.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool>;
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool>;
}

/// Open the store named by the configured URL and run its migrations.
pub async fn open(config: &DatabaseConfig) -> Result<Arc<dyn Store>> {
    let url = config.url.expose_secret();
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::connect(url, config.max_connections).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(PgStore::connect(url, config.max_connections).await?)
    } else {
        return Err(StoreError::UnsupportedUrl(config.redacted_url()));
    };
    store.migrate().await?;
    Ok(store)
}

/// SHA-256 of the JSON value with object keys sorted, hex encoded. Identical
/// content gives an identical hash whatever the key order it arrived in.
pub fn content_hash(value: &Value) -> String {
    fn feed(h: &mut Sha256, v: &Value) {
        match v {
            Value::Null => h.update(b"n"),
            Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
            Value::Number(n) => {
                h.update(b"#");
                h.update(n.to_string().as_bytes());
                h.update(b";");
            }
            Value::String(s) => {
                h.update(b"\"");
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            Value::Array(items) => {
                h.update(b"[");
                for i in items {
                    feed(h, i);
                }
                h.update(b"]");
            }
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                h.update(b"{");
                for k in keys {
                    h.update((k.len() as u64).to_le_bytes());
                    h.update(k.as_bytes());
                    feed(h, &map[k]);
                }
                h.update(b"}");
            }
        }
    }
    let mut h = Sha256::new();
    feed(&mut h, value);
    hex::encode(h.finalize())
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_hash_ignores_key_order_but_not_content() {
        let a = json!({"name": "张三", "dept": [1, 2], "x": {"b": 1, "a": null}});
        let b: Value =
            serde_json::from_str(r#"{"x":{"a":null,"b":1},"dept":[1,2],"name":"张三"}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&b));
        assert_ne!(
            content_hash(&a),
            content_hash(&json!({"name": "张三", "dept": [2, 1], "x": {"b": 1, "a": null}}))
        );
        assert_ne!(content_hash(&json!("1")), content_hash(&json!(1)));
    }
}
