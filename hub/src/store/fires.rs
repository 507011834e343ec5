//! The schedules' fire records (`huitong_schedules::FireStore`) on both backends.

use async_trait::async_trait;
use huitong_schedules::{FireOutcome, FireRecord, FireStatus, FireStore, StoreError as FireError};
use sqlx::Row;

use super::sql::{HasDb, PgStore, SqliteStore};

macro_rules! fire_columns {
    () => {
        "schedule, fire_time_ms, holder, claimed_at_ms, status, finished_at_ms, error, detail, missed_count"
    };
}

macro_rules! impl_fire_store {
    ($store:ty) => {
        impl $store {
            fn fire(row: &<<$store as HasDb>::Db as sqlx::Database>::Row) -> Result<FireRecord, FireError> {
                let status: String = row.try_get("status").map_err(FireError::new)?;
                let missed: i64 = row.try_get("missed_count").map_err(FireError::new)?;
                Ok(FireRecord {
                    schedule: row.try_get("schedule").map_err(FireError::new)?,
                    fire_time_ms: row.try_get("fire_time_ms").map_err(FireError::new)?,
                    holder: row.try_get("holder").map_err(FireError::new)?,
                    claimed_at_ms: row.try_get("claimed_at_ms").map_err(FireError::new)?,
                    status: status.parse::<FireStatus>().map_err(FireError::new)?,
                    finished_at_ms: row.try_get("finished_at_ms").map_err(FireError::new)?,
                    error: row.try_get("error").map_err(FireError::new)?,
                    detail: row.try_get("detail").map_err(FireError::new)?,
                    missed_count: u32::try_from(missed).unwrap_or(0),
                })
            }
        }

        #[async_trait]
        impl FireStore for $store {
            async fn claim_fire(
                &self,
                schedule: &str,
                fire_time_ms: i64,
                holder: &str,
                claimed_at_ms: i64,
            ) -> Result<bool, FireError> {
                let n = sqlx::query(
                    "INSERT INTO schedule_fires (schedule, fire_time_ms, holder, claimed_at_ms, status) \
                     VALUES ($1, $2, $3, $4, 'fired') ON CONFLICT DO NOTHING",
                )
                .bind(schedule)
                .bind(fire_time_ms)
                .bind(holder)
                .bind(claimed_at_ms)
                .execute(&self.pool)
                .await
                .map_err(FireError::new)?
                .rows_affected();
                Ok(n == 1)
            }

            async fn record_outcome(
                &self,
                schedule: &str,
                fire_time_ms: i64,
                outcome: &FireOutcome,
            ) -> Result<(), FireError> {
                sqlx::query(
                    "UPDATE schedule_fires SET status = $1, finished_at_ms = $2, error = $3, detail = $4, \
                       missed_count = $5 WHERE schedule = $6 AND fire_time_ms = $7",
                )
                .bind(outcome.status.as_str())
                .bind(outcome.finished_at_ms)
                .bind(&outcome.error)
                .bind(&outcome.detail)
                .bind(i64::from(outcome.missed_count))
                .bind(schedule)
                .bind(fire_time_ms)
                .execute(&self.pool)
                .await
                .map_err(FireError::new)?;
                Ok(())
            }

            async fn last_fire(&self, schedule: &str) -> Result<Option<FireRecord>, FireError> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    fire_columns!(),
                    " FROM schedule_fires WHERE schedule = $1 ORDER BY fire_time_ms DESC LIMIT 1"
                ))
                .bind(schedule)
                .fetch_optional(&self.pool)
                .await
                .map_err(FireError::new)?;
                row.as_ref().map(Self::fire).transpose()
            }

            async fn recent_fires(&self, schedule: &str, limit: usize) -> Result<Vec<FireRecord>, FireError> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    fire_columns!(),
                    " FROM schedule_fires WHERE schedule = $1 ORDER BY fire_time_ms DESC LIMIT $2"
                ))
                .bind(schedule)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(FireError::new)?;
                rows.iter().map(Self::fire).collect()
            }
        }
    };
}

impl_fire_store!(SqliteStore);
impl_fire_store!(PgStore);
