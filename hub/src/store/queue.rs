//! SQL of the embedded queue (`queue.url = "embedded"`), for both backends.
//! The queue semantics (tiers, DLQ, consumers) live in `crate::queue::embedded`;
//! this file only moves rows.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::Row;
use sqlx::types::Json;

use super::Result;
use super::sql::{HasDb, PgStore, SqliteStore, q};

/// A message row of the embedded queue.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub seq: i64,
    pub queue: String,
    pub message_id: String,
    pub partition_key: String,
    pub attempt: i64,
    pub body: Value,
    /// `ready` or `dead`.
    pub state: String,
    pub last_error: Option<String>,
    pub enqueued_at_ms: i64,
    pub dead_at_ms: Option<i64>,
}

/// How many messages a queue holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Visible now and not claimed.
    pub ready: i64,
    /// Waiting for a retry tier to pass.
    pub delayed: i64,
    /// Claimed by a consumer and not yet acknowledged.
    pub in_flight: i64,
    pub dead: i64,
}

/// A message to enqueue.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub queue: &'a str,
    pub message_id: &'a str,
    pub partition_key: &'a str,
    pub attempt: i64,
    pub body: &'a Value,
    pub visible_at_ms: i64,
    pub now_ms: i64,
}

#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    async fn q_enqueue(&self, message: &NewMessage<'_>) -> Result<i64>;
    /// Claim up to `limit` visible messages for `consumer` until `locked_until_ms`, oldest first.
    async fn q_claim(
        &self,
        queue: &str,
        consumer: &str,
        now_ms: i64,
        locked_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<StoredMessage>>;
    /// Delete a handled message; false if the claim was lost (lock expired and taken).
    async fn q_ack(&self, seq: i64, consumer: &str) -> Result<bool>;
    /// Release for another try at `visible_at_ms` with the new attempt count.
    async fn q_retry(
        &self,
        seq: i64,
        consumer: &str,
        attempt: i64,
        visible_at_ms: i64,
        error: &str,
    ) -> Result<bool>;
    /// Move to the dead-letter state.
    async fn q_dead(
        &self,
        seq: i64,
        consumer: &str,
        attempt: i64,
        error: &str,
        now_ms: i64,
    ) -> Result<bool>;
    async fn q_list_dead(&self, queue: Option<&str>, limit: i64) -> Result<Vec<StoredMessage>>;
    /// Make dead messages ready again with attempt 0: one by message id, or all (of one queue).
    async fn q_replay(
        &self,
        queue: Option<&str>,
        message_id: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<StoredMessage>>;
    async fn q_depth(&self, queue: &str, now_ms: i64) -> Result<QueueDepth>;
}

macro_rules! message_columns {
    () => {
        "seq, queue, message_id, partition_key, attempt, body, state, last_error, enqueued_at_ms, dead_at_ms"
    };
}

macro_rules! impl_queue_store {
    ($store:ty) => {
        impl $store {
            fn message(row: &<<$store as HasDb>::Db as sqlx::Database>::Row) -> Result<StoredMessage> {
                Ok(StoredMessage {
                    seq: row.try_get("seq").map_err(q("decode queue message"))?,
                    queue: row.try_get("queue").map_err(q("decode queue message"))?,
                    message_id: row.try_get("message_id").map_err(q("decode queue message"))?,
                    partition_key: row.try_get("partition_key").map_err(q("decode queue message"))?,
                    attempt: row.try_get("attempt").map_err(q("decode queue message"))?,
                    body: row.try_get::<Json<Value>, _>("body").map_err(q("decode queue message"))?.0,
                    state: row.try_get("state").map_err(q("decode queue message"))?,
                    last_error: row.try_get("last_error").map_err(q("decode queue message"))?,
                    enqueued_at_ms: row.try_get("enqueued_at_ms").map_err(q("decode queue message"))?,
                    dead_at_ms: row.try_get("dead_at_ms").map_err(q("decode queue message"))?,
                })
            }
        }

        #[async_trait]
        impl QueueStore for $store {
            async fn q_enqueue(&self, m: &NewMessage<'_>) -> Result<i64> {
                let (seq,): (i64,) = sqlx::query_as(
                    "INSERT INTO queue_messages (queue, message_id, partition_key, attempt, body, state, \
                       visible_at_ms, enqueued_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, 'ready', $6, $7) RETURNING seq",
                )
                .bind(m.queue)
                .bind(m.message_id)
                .bind(m.partition_key)
                .bind(m.attempt)
                .bind(Json(m.body))
                .bind(m.visible_at_ms)
                .bind(m.now_ms)
                .fetch_one(&self.pool)
                .await
                .map_err(q("enqueue"))?;
                Ok(seq)
            }

            async fn q_claim(
                &self,
                queue: &str,
                consumer: &str,
                now_ms: i64,
                locked_until_ms: i64,
                limit: i64,
            ) -> Result<Vec<StoredMessage>> {
                // The lock condition is repeated outside the sub-select so that a
                // concurrent claimer (PostgreSQL re-checks it on a locked row)
                // never takes a message twice.
                let rows = sqlx::query(concat!(
                    "UPDATE queue_messages SET locked_by = $1, locked_until_ms = $2 \
                     WHERE seq IN (SELECT seq FROM queue_messages \
                                   WHERE queue = $3 AND state = 'ready' AND visible_at_ms <= $4 \
                                     AND (locked_until_ms IS NULL OR locked_until_ms <= $4) \
                                   ORDER BY seq LIMIT $5) \
                       AND state = 'ready' AND (locked_until_ms IS NULL OR locked_until_ms <= $4) \
                     RETURNING ",
                    message_columns!()
                ))
                .bind(consumer)
                .bind(locked_until_ms)
                .bind(queue)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(q("claim"))?;
                let mut out = rows.iter().map(Self::message).collect::<Result<Vec<_>>>()?;
                out.sort_by_key(|m| m.seq);
                Ok(out)
            }

            async fn q_ack(&self, seq: i64, consumer: &str) -> Result<bool> {
                let n = sqlx::query("DELETE FROM queue_messages WHERE seq = $1 AND locked_by = $2")
                    .bind(seq)
                    .bind(consumer)
                    .execute(&self.pool)
                    .await
                    .map_err(q("ack"))?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn q_retry(
                &self,
                seq: i64,
                consumer: &str,
                attempt: i64,
                visible_at_ms: i64,
                error: &str,
            ) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE queue_messages SET attempt = $1, visible_at_ms = $2, last_error = $3, \
                       locked_by = NULL, locked_until_ms = NULL \
                     WHERE seq = $4 AND locked_by = $5",
                )
                .bind(attempt)
                .bind(visible_at_ms)
                .bind(error)
                .bind(seq)
                .bind(consumer)
                .execute(&self.pool)
                .await
                .map_err(q("retry"))?
                .rows_affected();
                Ok(n == 1)
            }

            async fn q_dead(&self, seq: i64, consumer: &str, attempt: i64, error: &str, now_ms: i64) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE queue_messages SET state = 'dead', attempt = $1, last_error = $2, dead_at_ms = $3, \
                       locked_by = NULL, locked_until_ms = NULL \
                     WHERE seq = $4 AND locked_by = $5",
                )
                .bind(attempt)
                .bind(error)
                .bind(now_ms)
                .bind(seq)
                .bind(consumer)
                .execute(&self.pool)
                .await
                .map_err(q("dead-letter"))?
                .rows_affected();
                Ok(n == 1)
            }

            async fn q_list_dead(&self, queue: Option<&str>, limit: i64) -> Result<Vec<StoredMessage>> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM queue_messages WHERE state = 'dead' AND ($1 IS NULL OR queue = $1) ORDER BY seq LIMIT $2"
                ))
                .bind(queue)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(q("list dead letters"))?;
                rows.iter().map(Self::message).collect()
            }

            async fn q_replay(
                &self,
                queue: Option<&str>,
                message_id: Option<&str>,
                now_ms: i64,
            ) -> Result<Vec<StoredMessage>> {
                let rows = sqlx::query(concat!(
                    "UPDATE queue_messages SET state = 'ready', attempt = 0, visible_at_ms = $1, dead_at_ms = NULL, \
                       locked_by = NULL, locked_until_ms = NULL \
                     WHERE state = 'dead' AND ($2 IS NULL OR queue = $2) AND ($3 IS NULL OR message_id = $3) \
                     RETURNING ",
                    message_columns!()
                ))
                .bind(now_ms)
                .bind(queue)
                .bind(message_id)
                .fetch_all(&self.pool)
                .await
                .map_err(q("replay dead letters"))?;
                let mut out = rows.iter().map(Self::message).collect::<Result<Vec<_>>>()?;
                out.sort_by_key(|m| m.seq);
                Ok(out)
            }

            async fn q_depth(&self, queue: &str, now_ms: i64) -> Result<QueueDepth> {
                let row = sqlx::query(
                    "SELECT \
                       COALESCE(SUM(CASE WHEN state = 'ready' AND visible_at_ms <= $1 \
                         AND (locked_until_ms IS NULL OR locked_until_ms <= $1) THEN 1 ELSE 0 END), 0) AS ready, \
                       COALESCE(SUM(CASE WHEN state = 'ready' AND visible_at_ms > $1 THEN 1 ELSE 0 END), 0) AS delayed, \
                       COALESCE(SUM(CASE WHEN state = 'ready' AND locked_until_ms > $1 THEN 1 ELSE 0 END), 0) AS in_flight, \
                       COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0) AS dead \
                     FROM queue_messages WHERE queue = $2",
                )
                .bind(now_ms)
                .bind(queue)
                .fetch_one(&self.pool)
                .await
                .map_err(q("queue depth"))?;
                let get = |c: &str| -> Result<i64> { row.try_get::<i64, _>(c).map_err(q("decode queue depth")) };
                Ok(QueueDepth {
                    ready: get("ready")?,
                    delayed: get("delayed")?,
                    in_flight: get("in_flight")?,
                    dead: get("dead")?,
                })
            }
        }
    };
}

impl_queue_store!(SqliteStore);
impl_queue_store!(PgStore);
