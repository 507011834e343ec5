//! Support for huitong's end-to-end tests: where the real services are, and
//! throw-away databases on them.
//!
//! Tests that need PostgreSQL or RabbitMQ read `HUITONG_TEST_PG_URL` /
//! `HUITONG_TEST_AMQP_URL`; those that need Tryton or the OAuth2 server start
//! their own through [`erp`] (`HUITONG_TEST_TRYTON_*`, `HUITONG_TEST_NODE`,
//! `HUITONG_TEST_OAUTH2_SERVER`). When a variable is unset the test prints
//! `SKIPPED: …` and passes — unless `HUITONG_TEST_REQUIRE_SERVICES=1` (set by
//! `scripts/test` and CI), in which case a missing service fails the test.

pub mod erp;
pub mod org;

use anyhow::Context;
use sqlx::Connection;

/// True when `scripts/test` or CI demands that no service-backed test is skipped.
pub fn services_required() -> bool {
    std::env::var("HUITONG_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The value of `var`, or `None` after printing why the test is skipped.
/// Panics when services are required and the variable is missing.
pub fn service_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                !services_required(),
                "{test}: {var} is not set but HUITONG_TEST_REQUIRE_SERVICES=1"
            );
            println!("SKIPPED: {test}: {var} not set");
            None
        }
    }
}

/// A fresh PostgreSQL database, dropped when this value is dropped.
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    /// Create `huitong_test_<random>` on the server named by `admin_url`.
    pub async fn create(admin_url: &str) -> anyhow::Result<PgDatabase> {
        let name = format!("huitong_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {admin_url}"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        let url = replace_database(admin_url, &name);
        Ok(PgDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        drop_database(self.admin_url.clone(), self.name.clone());
    }
}

/// `DROP DATABASE name` on the server of `admin_url`, from a separate thread with its own
/// runtime (Drop may run inside a runtime that cannot block); waits for it.
pub fn drop_database(admin_url: String, name: String) {
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await;
            }
        });
    })
    .join();
}

/// `postgres://u@h:5432/test?x` with the database path replaced by `name`.
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// The `huitong` binary of this build (`target/<profile>/huitong`, next to `deps/`), built by
/// `cargo test --workspace` for the hub's own CLI tests; `None` (after saying so) when it is
/// missing and the run does not require every test (`HUITONG_TEST_REQUIRE_SERVICES`).
pub fn huitong_bin(test: &str) -> Option<std::path::PathBuf> {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("huitong")))
        .filter(|p| p.is_file());
    if bin.is_none() {
        assert!(
            !services_required(),
            "{test}: the huitong binary is not built (cargo build -p huitong)"
        );
        println!("SKIPPED: {test}: the huitong binary is not built (cargo build -p huitong)");
    }
    bin
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            super::replace_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            super::replace_database("postgres://h/test?sslmode=disable", "x"),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(
            super::replace_database("postgres://h", "x"),
            "postgres://h/x"
        );
    }
}
