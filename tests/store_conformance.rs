//! One conformance suite for every store backend: the same checks against SQLite and
//! PostgreSQL.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use refex::store::{self, Backend, Store};

async fn conformance(url: &str, backend: Backend) {
    let store: Arc<dyn Store> = store::open(url).await.expect("open");
    assert_eq!(store.backend(), backend);
    store.ping().await.expect("ping after migrate");
    store.close().await;
    // Migrations are idempotent: a second open of the same store succeeds unchanged.
    let again = store::open(url).await.expect("reopen");
    again.ping().await.expect("ping after reopen");
    again.close().await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/dir/refex.db").display()
    );
    conformance(&url, Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(url) = common::pg::fresh_schema().await else {
        return;
    };
    conformance(&url, Backend::Postgres).await;
    common::pg::drop_schema(&url).await;
}

#[tokio::test]
async fn unknown_store_schemes_are_refused() {
    let err = store::open("mysql://localhost/refex").await.unwrap_err();
    assert!(err.to_string().contains("mysql"), "{err}");
}
