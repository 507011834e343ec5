//! The SQL behind [`Store`], written once and compiled for both backends by
//! `impl_store!`. The statements use only syntax both SQLite and PostgreSQL
//! accept (`$n` parameters in first-use order, `ON CONFLICT … DO UPDATE … WHERE`,
//! `RETURNING`); what differs (connection options, migrations) stays outside.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;

use super::{
    AuditEntry, CanonicalRecord, Entity, LinkOutcome, NewAudit, RecordWrite, Result, RunStatus,
    RunStep, StepStatus, Store, StoreError, SyncRun, UpsertOutcome, Xref, content_hash,
};
use crate::config::redact_url;

/// SQLite store: one file, WAL mode, created if missing.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
}

/// PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let connect_err = |source| StoreError::Connect {
            backend: "sqlite",
            url: redact_url(url),
            source,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(connect_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if !in_memory {
            let parent = options
                .get_filename()
                .parent()
                .filter(|p| !p.as_os_str().is_empty());
            if let Some(dir) = parent {
                create_dir(dir)?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { max_connections })
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(connect_err)?;
        Ok(SqliteStore { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|source| StoreError::Connect {
                backend: "postgres",
                url: redact_url(url),
                source,
            })?;
        Ok(PgStore { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        path: dir.display().to_string(),
        source,
    })
}

pub(super) fn q(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

// Column lists as macros so that statements stay `&'static str` literals (sqlx's SqlSafeStr).
macro_rules! record_columns {
    () => {
        "entity, id, data, content_hash, version, source_system, source_time_ms, deleted, updated_at_ms"
    };
}
macro_rules! xref_columns {
    () => {
        "entity, canonical_id, system, external_id, last_written_hash, last_seen_hash"
    };
}
macro_rules! run_columns {
    () => {
        "id, route, kind, started_at_ms, finished_at_ms, status, counts, error"
    };
}

macro_rules! step_columns {
    () => {
        "seq, target, action, status, attempts, error"
    };
}

/// A stored entity name as the entity it names; a name this huitong does not know is an error
/// (a newer version's rows), never read as another entity.
fn entity_of(name: String) -> Result<Entity> {
    Entity::parse(&name)
        .ok_or_else(|| StoreError::Invalid(format!("unknown entity {name:?} in the store")))
}

macro_rules! impl_store {
    ($store:ty, $backend:literal, $migrator:expr) => {
        impl $store {
            fn record(row: &<<$store as HasDb>::Db as sqlx::Database>::Row) -> Result<CanonicalRecord> {
                Ok(CanonicalRecord {
                    entity: entity_of(row.try_get("entity").map_err(q("decode record"))?)?,
                    id: row.try_get("id").map_err(q("decode record"))?,
                    data: row.try_get::<Json<Value>, _>("data").map_err(q("decode record"))?.0,
                    content_hash: row.try_get("content_hash").map_err(q("decode record"))?,
                    version: row.try_get("version").map_err(q("decode record"))?,
                    source_system: row.try_get("source_system").map_err(q("decode record"))?,
                    source_time_ms: row.try_get("source_time_ms").map_err(q("decode record"))?,
                    deleted: row.try_get("deleted").map_err(q("decode record"))?,
                    updated_at_ms: row.try_get("updated_at_ms").map_err(q("decode record"))?,
                })
            }

            fn xref(row: &<<$store as HasDb>::Db as sqlx::Database>::Row) -> Result<Xref> {
                Ok(Xref {
                    entity: entity_of(row.try_get("entity").map_err(q("decode xref"))?)?,
                    canonical_id: row.try_get("canonical_id").map_err(q("decode xref"))?,
                    system: row.try_get("system").map_err(q("decode xref"))?,
                    external_id: row.try_get("external_id").map_err(q("decode xref"))?,
                    last_written_hash: row.try_get("last_written_hash").map_err(q("decode xref"))?,
                    last_seen_hash: row.try_get("last_seen_hash").map_err(q("decode xref"))?,
                })
            }

            fn step(row: &<<$store as HasDb>::Db as sqlx::Database>::Row) -> Result<RunStep> {
                let status: String = row.try_get("status").map_err(q("decode step"))?;
                Ok(RunStep {
                    seq: row.try_get("seq").map_err(q("decode step"))?,
                    target: row.try_get("target").map_err(q("decode step"))?,
                    action: row.try_get("action").map_err(q("decode step"))?,
                    status: StepStatus::parse(&status)?,
                    attempts: row.try_get("attempts").map_err(q("decode step"))?,
                    error: row.try_get("error").map_err(q("decode step"))?,
                })
            }

            fn run(row: &<<$store as HasDb>::Db as sqlx::Database>::Row) -> Result<SyncRun> {
                let status: String = row.try_get("status").map_err(q("decode run"))?;
                Ok(SyncRun {
                    id: row.try_get("id").map_err(q("decode run"))?,
                    route: row.try_get("route").map_err(q("decode run"))?,
                    kind: row.try_get("kind").map_err(q("decode run"))?,
                    started_at_ms: row.try_get("started_at_ms").map_err(q("decode run"))?,
                    finished_at_ms: row.try_get("finished_at_ms").map_err(q("decode run"))?,
                    status: RunStatus::parse(&status)?,
                    counts: row
                        .try_get::<Json<BTreeMap<String, i64>>, _>("counts")
                        .map_err(q("decode run"))?
                        .0,
                    error: row.try_get("error").map_err(q("decode run"))?,
                })
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn migrate(&self) -> Result<()> {
                $migrator.run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map_err(q("ping"))?;
                Ok(())
            }

            async fn get_record(&self, entity: Entity, id: &str) -> Result<Option<CanonicalRecord>> {
                let row = sqlx::query(concat!("SELECT ", record_columns!(), " FROM canonical_records WHERE entity = $1 AND id = $2"))
                .bind(entity.as_str())
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(q("get record"))?;
                row.as_ref().map(Self::record).transpose()
            }

            async fn upsert_record(&self, w: &RecordWrite, now_ms: i64) -> Result<UpsertOutcome> {
                let hash = content_hash(&w.data);
                let written: Option<(i64,)> = sqlx::query_as(
                    "INSERT INTO canonical_records \
                       (entity, id, data, content_hash, version, source_system, source_time_ms, deleted, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8) \
                     ON CONFLICT (entity, id) DO UPDATE SET \
                       data = excluded.data, content_hash = excluded.content_hash, \
                       version = canonical_records.version + 1, source_system = excluded.source_system, \
                       source_time_ms = excluded.source_time_ms, deleted = excluded.deleted, \
                       updated_at_ms = excluded.updated_at_ms \
                     WHERE (canonical_records.content_hash <> excluded.content_hash \
                            OR canonical_records.deleted <> excluded.deleted) \
                       AND (canonical_records.source_time_ms IS NULL OR excluded.source_time_ms IS NULL \
                            OR excluded.source_time_ms >= canonical_records.source_time_ms) \
                     RETURNING version",
                )
                .bind(w.entity.as_str())
                .bind(&w.id)
                .bind(Json(&w.data))
                .bind(&hash)
                .bind(&w.source_system)
                .bind(w.source_time_ms)
                .bind(w.deleted)
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await
                .map_err(q("upsert record"))?;
                if let Some((version,)) = written {
                    return Ok(if version == 1 {
                        UpsertOutcome::Created { version }
                    } else {
                        UpsertOutcome::Updated { version }
                    });
                }
                let current = self
                    .get_record(w.entity, &w.id)
                    .await?
                    .ok_or_else(|| StoreError::Invalid(format!("record {}/{} vanished during upsert", w.entity, w.id)))?;
                Ok(if current.content_hash == hash && current.deleted == w.deleted {
                    UpsertOutcome::Unchanged { version: current.version }
                } else {
                    UpsertOutcome::Stale { version: current.version }
                })
            }

            async fn list_records(
                &self,
                entity: Entity,
                after_id: Option<&str>,
                limit: i64,
            ) -> Result<Vec<CanonicalRecord>> {
                let rows = sqlx::query(concat!("SELECT ", record_columns!(), " FROM canonical_records \
                     WHERE entity = $1 AND id > $2 ORDER BY id LIMIT $3"))
                .bind(entity.as_str())
                .bind(after_id.unwrap_or(""))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(q("list records"))?;
                rows.iter().map(Self::record).collect()
            }

            async fn link(&self, x: &Xref, now_ms: i64) -> Result<LinkOutcome> {
                let inserted = sqlx::query(
                    "INSERT INTO xrefs (entity, canonical_id, system, external_id, last_written_hash, \
                       last_seen_hash, created_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
                )
                .bind(x.entity.as_str())
                .bind(&x.canonical_id)
                .bind(&x.system)
                .bind(&x.external_id)
                .bind(&x.last_written_hash)
                .bind(&x.last_seen_hash)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(q("link"))?
                .rows_affected();
                if inserted == 1 {
                    return Ok(LinkOutcome::Linked);
                }
                if let Some(existing) = self.find_by_external(x.entity, &x.system, &x.external_id).await? {
                    return Ok(if existing.canonical_id == x.canonical_id {
                        LinkOutcome::AlreadyLinked
                    } else {
                        LinkOutcome::ExternalTaken { canonical_id: existing.canonical_id }
                    });
                }
                match self.find_by_canonical(x.entity, &x.system, &x.canonical_id).await? {
                    Some(existing) => Ok(LinkOutcome::CanonicalTaken { external_id: existing.external_id }),
                    None => Err(StoreError::Invalid(format!(
                        "xref {}/{}/{} was neither inserted nor found",
                        x.entity, x.system, x.external_id
                    ))),
                }
            }

            async fn find_by_external(&self, entity: Entity, system: &str, external_id: &str) -> Result<Option<Xref>> {
                let row = sqlx::query(concat!("SELECT ", xref_columns!(), " FROM xrefs WHERE entity = $1 AND system = $2 AND external_id = $3"))
                .bind(entity.as_str())
                .bind(system)
                .bind(external_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(q("find xref by external id"))?;
                row.as_ref().map(Self::xref).transpose()
            }

            async fn find_by_canonical(&self, entity: Entity, system: &str, canonical_id: &str) -> Result<Option<Xref>> {
                let row = sqlx::query(concat!("SELECT ", xref_columns!(), " FROM xrefs WHERE entity = $1 AND system = $2 AND canonical_id = $3"))
                .bind(entity.as_str())
                .bind(system)
                .bind(canonical_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(q("find xref by canonical id"))?;
                row.as_ref().map(Self::xref).transpose()
            }

            async fn xrefs_of(&self, entity: Entity, canonical_id: &str) -> Result<Vec<Xref>> {
                let rows = sqlx::query(concat!("SELECT ", xref_columns!(), " FROM xrefs WHERE entity = $1 AND canonical_id = $2 ORDER BY system"))
                .bind(entity.as_str())
                .bind(canonical_id)
                .fetch_all(&self.pool)
                .await
                .map_err(q("list xrefs"))?;
                rows.iter().map(Self::xref).collect()
            }

            async fn xrefs_in_system(&self, entity: Entity, system: &str) -> Result<Vec<Xref>> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    xref_columns!(),
                    " FROM xrefs WHERE entity = $1 AND system = $2 ORDER BY external_id"
                ))
                .bind(entity.as_str())
                .bind(system)
                .fetch_all(&self.pool)
                .await
                .map_err(q("list xrefs of a system"))?;
                rows.iter().map(Self::xref).collect()
            }

            async fn xref_ids_in_system(
                &self,
                entity: Entity,
                system: &str,
            ) -> Result<Vec<(String, String)>> {
                use futures_util::TryStreamExt;
                let mut rows = sqlx::query(
                    "SELECT external_id, canonical_id FROM xrefs WHERE entity = $1 AND system = $2",
                )
                .bind(entity.as_str())
                .bind(system)
                .fetch(&self.pool);
                let mut out = Vec::new();
                while let Some(row) = rows.try_next().await.map_err(q("list xrefs of a system"))? {
                    out.push((
                        row.try_get::<String, _>(0).map_err(q("read an xref"))?,
                        row.try_get::<String, _>(1).map_err(q("read an xref"))?,
                    ));
                }
                Ok(out)
            }

            async fn count_xrefs(&self, entity: Entity, system: &str) -> Result<i64> {
                let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM xrefs WHERE entity = $1 AND system = $2")
                    .bind(entity.as_str())
                    .bind(system)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(q("count xrefs"))?;
                Ok(n)
            }

            async fn set_written_hash(
                &self,
                entity: Entity,
                system: &str,
                external_id: &str,
                hash: &str,
                now_ms: i64,
            ) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE xrefs SET last_written_hash = $1, updated_at_ms = $2 \
                     WHERE entity = $3 AND system = $4 AND external_id = $5",
                )
                .bind(hash)
                .bind(now_ms)
                .bind(entity.as_str())
                .bind(system)
                .bind(external_id)
                .execute(&self.pool)
                .await
                .map_err(q("set written hash"))?
                .rows_affected();
                Ok(n == 1)
            }

            async fn set_seen_hash(
                &self,
                entity: Entity,
                system: &str,
                external_id: &str,
                hash: &str,
                now_ms: i64,
            ) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE xrefs SET last_seen_hash = $1, updated_at_ms = $2 \
                     WHERE entity = $3 AND system = $4 AND external_id = $5",
                )
                .bind(hash)
                .bind(now_ms)
                .bind(entity.as_str())
                .bind(system)
                .bind(external_id)
                .execute(&self.pool)
                .await
                .map_err(q("set seen hash"))?
                .rows_affected();
                Ok(n == 1)
            }

            async fn unlink(&self, entity: Entity, system: &str, external_id: &str) -> Result<bool> {
                let n = sqlx::query("DELETE FROM xrefs WHERE entity = $1 AND system = $2 AND external_id = $3")
                    .bind(entity.as_str())
                    .bind(system)
                    .bind(external_id)
                    .execute(&self.pool)
                    .await
                    .map_err(q("unlink"))?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn mark_event(&self, source: &str, event_id: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
                let n = sqlx::query(
                    "INSERT INTO processed_events (source, event_id, expires_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (source, event_id) DO UPDATE SET expires_at_ms = excluded.expires_at_ms \
                     WHERE processed_events.expires_at_ms <= $4",
                )
                .bind(source)
                .bind(event_id)
                .bind(now_ms.saturating_add(ttl_ms))
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .map_err(q("mark event"))?
                .rows_affected();
                Ok(n == 1)
            }

            async fn purge_events(&self, now_ms: i64) -> Result<u64> {
                Ok(sqlx::query("DELETE FROM processed_events WHERE expires_at_ms <= $1")
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await
                    .map_err(q("purge events"))?
                    .rows_affected())
            }

            async fn start_run(&self, route: &str, kind: &str, now_ms: i64) -> Result<SyncRun> {
                let run = SyncRun {
                    id: uuid::Uuid::now_v7().to_string(),
                    route: route.to_owned(),
                    kind: kind.to_owned(),
                    started_at_ms: now_ms,
                    finished_at_ms: None,
                    status: RunStatus::Running,
                    counts: BTreeMap::new(),
                    error: None,
                };
                sqlx::query(
                    "INSERT INTO sync_runs (id, route, kind, started_at_ms, status, counts) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&run.id)
                .bind(&run.route)
                .bind(&run.kind)
                .bind(run.started_at_ms)
                .bind(run.status.as_str())
                .bind(Json(&run.counts))
                .execute(&self.pool)
                .await
                .map_err(q("start run"))?;
                Ok(run)
            }

            async fn finish_run(
                &self,
                id: &str,
                status: RunStatus,
                counts: &BTreeMap<String, i64>,
                error: Option<&str>,
                now_ms: i64,
            ) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE sync_runs SET status = $1, counts = $2, error = $3, finished_at_ms = $4 WHERE id = $5",
                )
                .bind(status.as_str())
                .bind(Json(counts))
                .bind(error)
                .bind(now_ms)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(q("finish run"))?
                .rows_affected();
                Ok(n == 1)
            }

            async fn get_run(&self, id: &str) -> Result<Option<SyncRun>> {
                let row = sqlx::query(concat!("SELECT ", run_columns!(), " FROM sync_runs WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(q("get run"))?;
                row.as_ref().map(Self::run).transpose()
            }

            async fn list_runs(&self, route: Option<&str>, limit: i64) -> Result<Vec<SyncRun>> {
                let rows = sqlx::query(concat!("SELECT ", run_columns!(), " FROM sync_runs WHERE ($1 IS NULL OR route = $1) \
                     ORDER BY started_at_ms DESC, id DESC LIMIT $2"))
                .bind(route)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(q("list runs"))?;
                rows.iter().map(Self::run).collect()
            }

            async fn begin_step(
                &self,
                run_id: &str,
                seq: i64,
                target: &str,
                action: &str,
                now_ms: i64,
            ) -> Result<RunStep> {
                let row = sqlx::query(concat!(
                    "INSERT INTO run_steps (run_id, seq, target, action, status, attempts, updated_ms) \
                     VALUES ($1, $2, $3, $4, 'started', 1, $5) \
                     ON CONFLICT (run_id, seq) DO UPDATE SET attempts = run_steps.attempts + 1, updated_ms = $5 \
                     RETURNING ", step_columns!()))
                .bind(run_id)
                .bind(seq)
                .bind(target)
                .bind(action)
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await
                .map_err(q("begin step"))?;
                Self::step(&row)
            }

            async fn finish_step(
                &self,
                run_id: &str,
                seq: i64,
                status: StepStatus,
                error: Option<&str>,
                now_ms: i64,
            ) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE run_steps SET status = $1, error = $2, updated_ms = $3 WHERE run_id = $4 AND seq = $5",
                )
                .bind(status.as_str())
                .bind(error)
                .bind(now_ms)
                .bind(run_id)
                .bind(seq)
                .execute(&self.pool)
                .await
                .map_err(q("finish step"))?
                .rows_affected();
                Ok(n == 1)
            }

            async fn count_finished_steps(&self, run_id: &str, from: i64, to: i64) -> Result<i64> {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM run_steps WHERE run_id = $1 AND seq >= $2 AND seq < $3 AND status NOT IN ('started', 'retrying')",
                )
                .bind(run_id)
                .bind(from)
                .bind(to)
                .fetch_one(&self.pool)
                .await
                .map_err(q("count steps"))?;
                Ok(n)
            }

            async fn run_steps(&self, run_id: &str, status: Option<StepStatus>) -> Result<Vec<RunStep>> {
                let rows = sqlx::query(concat!("SELECT ", step_columns!(), " FROM run_steps WHERE run_id = $1 \
                     AND ($2 IS NULL OR status = $2) ORDER BY seq"))
                    .bind(run_id)
                    .bind(status.map(StepStatus::as_str))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(q("list steps"))?;
                rows.iter().map(Self::step).collect()
            }

            async fn audit(&self, e: &NewAudit, now_ms: i64) -> Result<i64> {
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO audit_log (at_ms, actor, action, target, before_data, after_data) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                )
                .bind(now_ms)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.target)
                .bind(e.before.as_ref().map(Json))
                .bind(e.after.as_ref().map(Json))
                .fetch_one(&self.pool)
                .await
                .map_err(q("write audit"))?;
                Ok(id)
            }

            async fn list_audit(&self, limit: i64) -> Result<Vec<AuditEntry>> {
                let rows = sqlx::query(
                    "SELECT id, at_ms, actor, action, target, before_data, after_data FROM audit_log \
                     ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(q("list audit"))?;
                rows.iter()
                    .map(|row| {
                        Ok(AuditEntry {
                            id: row.try_get("id").map_err(q("decode audit"))?,
                            at_ms: row.try_get("at_ms").map_err(q("decode audit"))?,
                            actor: row.try_get("actor").map_err(q("decode audit"))?,
                            action: row.try_get("action").map_err(q("decode audit"))?,
                            target: row.try_get("target").map_err(q("decode audit"))?,
                            before: row
                                .try_get::<Option<Json<Value>>, _>("before_data")
                                .map_err(q("decode audit"))?
                                .map(|j| j.0),
                            after: row
                                .try_get::<Option<Json<Value>>, _>("after_data")
                                .map_err(q("decode audit"))?
                                .map(|j| j.0),
                        })
                    })
                    .collect()
            }

            async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
                let row: Option<(String,)> = sqlx::query_as(
                    "INSERT INTO schedule_leases (name, holder, expires_at_ms) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms \
                     WHERE schedule_leases.holder = excluded.holder OR schedule_leases.expires_at_ms <= $4 \
                     RETURNING holder",
                )
                .bind(name)
                .bind(holder)
                .bind(until_ms)
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await
                .map_err(q("acquire lease"))?;
                Ok(row.is_some_and(|(h,)| h == holder))
            }

            async fn release_lease(&self, name: &str, holder: &str) -> Result<bool> {
                let n = sqlx::query("DELETE FROM schedule_leases WHERE name = $1 AND holder = $2")
                    .bind(name)
                    .bind(holder)
                    .execute(&self.pool)
                    .await
                    .map_err(q("release lease"))?
                    .rows_affected();
                Ok(n == 1)
            }
        }
    };
}

/// Names the sqlx database type of each store for the macro.
pub(crate) trait HasDb {
    type Db: sqlx::Database;
}
impl HasDb for SqliteStore {
    type Db = sqlx::Sqlite;
}
impl HasDb for PgStore {
    type Db = sqlx::Postgres;
}

impl_store!(SqliteStore, "sqlite", sqlx::migrate!("./migrations/sqlite"));
impl_store!(PgStore, "postgres", sqlx::migrate!("./migrations/postgres"));
