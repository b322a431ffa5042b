//! The PostgreSQL backend, shared by every gateway replica.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use std::sync::Arc;

use sqlx::{Row as _, TypeInfo as _, ValueRef as _};

use crate::common::SqlStore;
use crate::sql::{Arg, Dialect, Faults, Pool, Stmt, Value};

/// Connections per replica: enough for both cores' worth of concurrent transactions plus
/// long-polls waiting on notifications, small enough that N replicas fit PostgreSQL's
/// default `max_connections` of 100.
const MAX_CONNECTIONS: u32 = 16;

/// How long to wait for a pooled connection before answering `503`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared store.
pub type PostgresStore = SqlStore<Postgres>;

/// PostgreSQL's dialect: rows a decision reads are locked `FOR UPDATE`, housekeeping jobs
/// take advisory locks, commits that fill an inbox `NOTIFY` the other replicas.
#[derive(Debug)]
pub struct Postgres;

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    const BACKEND: crate::Backend = crate::Backend::Postgres;
    const BEGIN: &'static str = "BEGIN";
    const NOTIFY: &'static str = "SELECT pg_notify('refex_inbox', '')";
    const JOB_LOCK: &'static str =
        "SELECT true FROM (SELECT pg_advisory_xact_lock(hashtext('refex:' || $1))) AS held";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const DB_NOW: &'static str = "CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)";
    const RECLAIM: &'static str = "";
    // Its connections' sockets belong to the runtime's I/O driver.
    const BATCHES: crate::group_commit::Placement = crate::group_commit::Placement::Runtime;

    async fn execute(conn: &mut sqlx::PgConnection, stmt: &Stmt<'_>) -> Result<u64, sqlx::Error> {
        bind(stmt).execute(conn).await.map(|r| r.rows_affected())
    }

    async fn fetch(
        conn: &mut sqlx::PgConnection,
        stmt: &Stmt<'_>,
    ) -> Result<Vec<Vec<Value>>, sqlx::Error> {
        let rows = bind(stmt).fetch_all(conn).await?;
        rows.iter().map(values).collect()
    }

    /// Listens for `refex_inbox` notifications on a dedicated connection and calls
    /// `on_change` for each; `PgListener` reconnects after a lost connection.
    fn watch_inbox(pool: &sqlx::PgPool, on_change: Arc<dyn Fn() + Send + Sync>) {
        let pool = pool.clone();
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
                tokio::time::sleep(Duration::from_secs(1)).await;
            };
            loop {
                match listener.recv().await {
                    Ok(_) => on_change(),
                    Err(_) if pool.is_closed() => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "inbox listener lost its connection; reconnecting");
                        // Wake waiters: a notification may have been missed meanwhile.
                        on_change();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The statement with its arguments bound: a multi-row `INSERT` column by column
/// ([`by_columns`]), anything else as written.
fn bind<'q>(stmt: &'q Stmt<'_>) -> PgQuery<'q> {
    if let Some((sql, columns)) = by_columns(stmt) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for column in columns {
            q = match column {
                Column::Int(v) => q.bind(v),
                Column::Int32(v) => q.bind(v),
                Column::Text(v) => q.bind(v),
                Column::Blob(v) => q.bind(v),
            };
        }
        return q;
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(stmt.sql_text()));
    for arg in stmt.args() {
        q = match arg {
            Arg::Int(v) => q.bind(*v),
            Arg::Int32(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.as_deref()),
            Arg::Blob(v) => q.bind(v.as_deref()),
        };
    }
    q
}

/// One column of a multi-row `INSERT`, as the array bound for it.
#[derive(Debug, PartialEq)]
enum Column<'q> {
    Int(Vec<Option<i64>>),
    Int32(Vec<i32>),
    Text(Vec<Option<&'q str>>),
    Blob(Vec<Option<&'q [u8]>>),
}

impl<'q> Column<'q> {
    /// Column `c` of `rows`, if every row binds it as the same type.
    fn of(rows: &[&'q [Arg<'_>]], c: usize) -> Option<Self> {
        Some(match rows.first()?.get(c)? {
            Arg::Int(_) => Column::Int(each(rows, c, |a| match a {
                Arg::Int(v) => Some(*v),
                _ => None,
            })?),
            Arg::Int32(_) => Column::Int32(each(rows, c, |a| match a {
                Arg::Int32(v) => Some(*v),
                _ => None,
            })?),
            Arg::Text(_) => Column::Text(each(rows, c, |a| match a {
                Arg::Text(v) => Some(v.as_deref()),
                _ => None,
            })?),
            Arg::Blob(_) => Column::Blob(each(rows, c, |a| match a {
                Arg::Blob(v) => Some(v.as_deref()),
                _ => None,
            })?),
        })
    }

    /// The array type the column is bound as.
    fn sql_type(&self) -> &'static str {
        match self {
            Column::Int(_) => "int8[]",
            Column::Int32(_) => "int4[]",
            Column::Text(_) => "text[]",
            Column::Blob(_) => "bytea[]",
        }
    }
}

/// Column `c` of every row through `read`, or `None` if a row has none of its type.
fn each<'q, T>(
    rows: &[&'q [Arg<'_>]],
    c: usize,
    read: impl Fn(&'q Arg<'_>) -> Option<T>,
) -> Option<Vec<T>> {
    rows.iter().map(|r| r.get(c).and_then(&read)).collect()
}

/// A multi-row `INSERT` as one array per column read back by `UNNEST`
/// (`INSERT INTO t (a, b) SELECT * FROM UNNEST($1::int8[], $2::text[]) …`): its text, and so
/// its prepared statement and plan, is the same whatever the number of rows. Written as one
/// `VALUES` tuple per row, every batch size was a statement of its own, parsed, planned and
/// cached (evicting another) on each connection: two more round trips per statement in a
/// group commit. `None` for any other statement, or one whose rows do not bind alike.
fn by_columns<'q>(stmt: &'q Stmt<'_>) -> Option<(String, Vec<Column<'q>>)> {
    let shape = stmt.rows()?;
    let rows: Vec<&'q [Arg<'_>]> = stmt.args().chunks(shape.width).collect();
    if rows.last()?.len() != shape.width {
        return None;
    }
    let columns = (0..shape.width)
        .map(|c| Column::of(&rows, c))
        .collect::<Option<Vec<_>>>()?;
    let arrays = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 1, c.sql_type()))
        .collect::<Vec<_>>()
        .join(", ");
    Some((
        format!("{}SELECT * FROM UNNEST({arrays}){}", shape.head, shape.tail),
        columns,
    ))
}

/// A row's values by their column types.
fn values(row: &sqlx::postgres::PgRow) -> Result<Vec<Value>, sqlx::Error> {
    (0..row.len())
        .map(|i| {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let kind = raw.type_info().name().to_owned();
            Ok(match kind.as_str() {
                "INT8" => Value::Int(row.try_get_unchecked(i)?),
                "INT4" => Value::Int(row.try_get_unchecked::<i32, _>(i)?.into()),
                "INT2" => Value::Int(row.try_get_unchecked::<i16, _>(i)?.into()),
                "BOOL" => Value::Bool(row.try_get_unchecked(i)?),
                "BYTEA" => Value::Blob(row.try_get_unchecked(i)?),
                _ => Value::Text(row.try_get_unchecked(i)?),
            })
        })
        .collect()
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names and migrates it. A
    /// `?options=-c search_path=…` parameter selects a schema (tests give each its own).
    pub async fn open(
        url: &str,
        batching: super::group_commit::Options,
    ) -> Result<Self, crate::StoreError> {
        Self::open_with_faults(url, batching, Faults::default()).await
    }

    /// [`PostgresStore::open`] consulting `faults` before each statement.
    pub async fn open_with_faults(
        url: &str,
        batching: super::group_commit::Options,
        faults: Faults,
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
        let pool = Pool::new(pool, faults);
        Ok(SqlStore::new(pool.clone(), pool, batching))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert<'a>(rows: &'a [(i64, Option<&'static str>)]) -> Stmt<'a> {
        Stmt::values(
            "insert",
            "INSERT INTO t (n, s) ",
            rows,
            " ON CONFLICT DO NOTHING",
            |(n, s), args| {
                args.push((*n).into());
                args.push((*s).into());
            },
        )
    }

    #[test]
    fn a_multi_row_insert_is_one_statement_whatever_its_rows() {
        let one = insert(&[(1, Some("a"))]);
        let three = insert(&[(1, Some("a")), (2, None), (3, Some("c"))]);
        let (sql_one, _) = by_columns(&one).expect("columns");
        let (sql_three, columns) = by_columns(&three).expect("columns");
        assert_eq!(sql_one, sql_three);
        assert_eq!(
            sql_three,
            "INSERT INTO t (n, s) SELECT * FROM UNNEST($1::int8[], $2::text[]) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            columns,
            vec![
                Column::Int(vec![Some(1), Some(2), Some(3)]),
                Column::Text(vec![Some("a"), None, Some("c")]),
            ]
        );
    }

    #[test]
    fn rows_that_bind_unlike_types_stay_as_written() {
        let mixed: Stmt<'static> = Stmt::values(
            "insert",
            "INSERT INTO t (v) ",
            &[0, 1][..],
            "",
            |i, args| {
                args.push(if *i == 0 {
                    Arg::from(1i64)
                } else {
                    Arg::from("one")
                })
            },
        );
        assert!(by_columns(&mixed).is_none());
        let plain = Stmt::new("select", "SELECT 1").bind(1i64);
        assert!(by_columns(&plain).is_none());
        let more = insert(&[(1, Some("a"))]).bind(2i64).bind("b");
        assert!(by_columns(&more).is_none());
    }
}
