//! PostgreSQL for tests: each test gets its own schema in the `test` database, so tests run
//! in parallel. Schema names are generated here (`t_` + hex), never taken from input. An
//! unreachable server fails the test unless the run opts out (`REFEX_TEST_SKIP=postgres`,
//! never under `CI=true`; see `prereq`).

use sqlx::Connection as _;

/// The server tests use: `REFEX_TEST_POSTGRES_URL`, default the local trust-auth server.
pub fn base_url() -> String {
    std::env::var("REFEX_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh schema; returns a store URL that selects it, or `None` when PostgreSQL is
/// unreachable and the run opted out of it (otherwise the test fails).
pub async fn fresh_schema() -> Option<String> {
    let base = base_url();
    let mut conn = match sqlx::PgConnection::connect(&base).await {
        Ok(c) => c,
        Err(e) => {
            super::prereq::available("postgres", Err(format!("{base} unreachable: {e}")));
            return None;
        }
    };
    let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// Drops the schema a [`fresh_schema`] URL selects.
pub async fn drop_schema(url: &str) {
    let schema = url.rsplit("search_path%3D").next().expect("schema in url");
    let mut conn = sqlx::PgConnection::connect(&base_url())
        .await
        .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut conn)
        .await
        .expect("drop schema");
}
