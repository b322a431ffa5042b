//! The PostgreSQL backend, shared by every gateway replica.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::common::store_impl;

/// Connections per replica: enough for both cores' worth of concurrent transactions plus
/// long-polls waiting on notifications, small enough that N replicas fit PostgreSQL's
/// default `max_connections` of 100.
const MAX_CONNECTIONS: u32 = 16;

/// How long to wait for a pooled connection before answering `503`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The same pool: PostgreSQL runs writers side by side.
    writer: PgPool,
    group: super::group_commit::Acceptances,
    /// Inbox fetches and acknowledgements, committed together the same way.
    inbox:
        super::group_commit::GroupCommit<crate::records::InboxWrite, crate::records::InboxWritten>,
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names and migrates it. A
    /// `?options=-c search_path=…` parameter selects a schema (tests give each its own).
    pub async fn open(
        url: &str,
        batching: super::group_commit::Options,
    ) -> Result<Self, crate::StoreError> {
        let options =
            PgConnectOptions::from_str(url).map_err(|e| crate::StoreError::Url(e.to_string()))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| crate::StoreError::Unavailable(e.to_string()))?;
        // A newer release's migrations already applied are not an error: migrations are
        // expand-only, so this release runs on a newer schema (a rolling update, a rollback).
        let mut migrator = sqlx::migrate!("../../migrations/postgres");
        migrator.set_ignore_missing(true);
        migrator
            .run(&pool)
            .await
            .map_err(|e| crate::StoreError::Migration(e.to_string()))?;
        let (group, inbox) = committers(&pool, batching);
        Ok(Self {
            writer: pool.clone(),
            pool,
            group,
            inbox,
        })
    }
}

impl PostgresStore {
    /// Listens for `refex_inbox` notifications on a dedicated connection and calls
    /// `on_change` for each; `PgListener` reconnects after a lost connection.
    fn watch_inbox(&self, on_change: std::sync::Arc<dyn Fn() + Send + Sync>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut listener = loop {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut l) => match l.listen("refex_inbox").await {
                        Ok(()) => break l,
                        Err(e) => tracing::warn!(error = %e, "LISTEN refex_inbox failed; retrying"),
                    },
                    Err(_) if pool.is_closed() => return,
                    Err(e) => tracing::warn!(error = %e, "inbox listener cannot connect; retrying"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            };
            loop {
                match listener.recv().await {
                    Ok(_) => on_change(),
                    Err(_) if pool.is_closed() => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "inbox listener lost its connection; reconnecting");
                        // Wake waiters: a notification may have been missed meanwhile.
                        on_change();
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}

store_impl!(
    PostgresStore,
    crate::Backend::Postgres,
    sqlx::PgConnection,
    "BEGIN",
    "SELECT pg_notify('refex_inbox', '')",
    "SELECT true FROM (SELECT pg_advisory_xact_lock(hashtext('refex:' || $1))) AS held",
    " FOR UPDATE",
    "CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)",
    ""
);
