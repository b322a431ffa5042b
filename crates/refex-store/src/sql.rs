//! The one seam between the store's generic code and a SQL driver: a statement is SQL text
//! with typed arguments ([`Stmt`]); a row comes back as typed values ([`Row`]) and is read
//! into a tuple or row struct through [`FromRow`]. A backend ([`Dialect`]) binds and runs
//! statements on its own connection type and says what its SQL differs in; everything else
//! (`intake`, `inbox`, `review`, `audit`, `housekeeping`) is ordinary generic code over
//! [`Tx`] and [`Pool`], which also consult the store's [`Faults`] before each statement.

use std::borrow::Cow;
use std::future::Future;
use std::sync::{Arc, Mutex};

use refex_core::envelope::sealed::Sealed;
use refex_core::timestamp::UnixTime;

use crate::durable::WalSync;
use crate::{Backend, StoreError, query_err};

/// One argument of a statement, typed as the column it is bound to.
#[derive(Clone, Debug)]
pub enum Arg<'a> {
    /// A 64-bit integer (`BIGINT`), or a typed `NULL`.
    Int(Option<i64>),
    /// A 32-bit integer (`INTEGER`).
    Int32(i32),
    /// Text, or a typed `NULL`.
    Text(Option<Cow<'a, str>>),
    /// Bytes (`BLOB`, `BYTEA`), or a typed `NULL`.
    Blob(Option<Cow<'a, [u8]>>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<UnixTime> for Arg<'_> {
    fn from(v: UnixTime) -> Self {
        Arg::Int(Some(v.secs()))
    }
}
impl From<Option<UnixTime>> for Arg<'_> {
    fn from(v: Option<UnixTime>) -> Self {
        Arg::Int(v.map(UnixTime::secs))
    }
}
impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::Int32(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(Cow::Borrowed(v)))
    }
}
impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Arg::Text(Some(Cow::Owned(v)))
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v.map(Cow::Borrowed))
    }
}
impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref().map(Cow::Borrowed))
    }
}
impl From<Option<String>> for Arg<'_> {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v.map(Cow::Owned))
    }
}
impl<'a> From<&'a Sealed> for Arg<'a> {
    fn from(v: &'a Sealed) -> Self {
        Arg::Text(Some(Cow::Borrowed(v.as_str())))
    }
}
impl<'a> From<&'a Option<Sealed>> for Arg<'a> {
    fn from(v: &'a Option<Sealed>) -> Self {
        Arg::Text(v.as_ref().map(|s| Cow::Borrowed(s.as_str())))
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Blob(Some(Cow::Borrowed(v)))
    }
}
impl From<Vec<u8>> for Arg<'_> {
    fn from(v: Vec<u8>) -> Self {
        Arg::Blob(Some(Cow::Owned(v)))
    }
}
impl From<Option<Vec<u8>>> for Arg<'_> {
    fn from(v: Option<Vec<u8>>) -> Self {
        Arg::Blob(v.map(Cow::Owned))
    }
}

/// A statement: its SQL (`$1`, `$2`, … placeholders, which both backends accept), its
/// arguments, and the operation it belongs to (named in errors; never a bound value).
#[derive(Clone, Debug)]
pub struct Stmt<'a> {
    op: &'static str,
    sql: Cow<'static, str>,
    args: Vec<Arg<'a>>,
    rows: Option<Shape>,
}

/// Where a multi-row `INSERT`'s `VALUES` list stands in its SQL, and how many arguments each
/// row binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    head: usize,
    tail: usize,
    width: usize,
}

/// A multi-row `INSERT`'s parts apart from its `VALUES` list, for a backend that binds such a
/// statement column by column (see [`Stmt::rows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows<'s> {
    /// `INSERT INTO t (a, b) `.
    pub head: &'s str,
    /// What follows the rows (`ON CONFLICT …`, `RETURNING …`), or nothing.
    pub tail: &'s str,
    /// Arguments per row.
    pub width: usize,
}

impl<'a> Stmt<'a> {
    /// A statement of operation `op`.
    pub fn new(op: &'static str, sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            op,
            sql: sql.into(),
            args: Vec::new(),
            rows: None,
        }
    }

    /// Binds the next placeholder (a multi-row `INSERT` given one more is no longer rows
    /// alone, so it is run as written: see [`Stmt::rows`]).
    pub fn bind(mut self, arg: impl Into<Arg<'a>>) -> Self {
        self.args.push(arg.into());
        self.rows = None;
        self
    }

    /// The SQL text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The SQL text to hand the driver (a borrowed statement is not copied).
    pub fn sql_text(&self) -> Cow<'static, str> {
        self.sql.clone()
    }

    /// The arguments, in placeholder order.
    pub fn args(&self) -> &[Arg<'a>] {
        &self.args
    }

    /// A multi-row `INSERT`'s parts (its arguments are its rows', one after the other, each
    /// row [`Rows::width`] long), if this is one whose rows all bind the same number.
    pub fn rows(&self) -> Option<Rows<'_>> {
        let shape = self.rows?;
        Some(Rows {
            head: self.sql.get(..shape.head)?,
            tail: self.sql.get(self.sql.len().checked_sub(shape.tail)?..)?,
            width: shape.width,
        })
    }

    /// The operation, as errors name it.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// A multi-row `INSERT`: `head` (`INSERT INTO t (a, b) `, and nothing else: a backend
    /// may put `SELECT … FROM UNNEST(…)` where the `VALUES` list stands, see [`Stmt::rows`])
    /// followed by one `VALUES` tuple per item, each of the arguments `row` binds for it,
    /// and then `tail`.
    pub fn values<T>(
        op: &'static str,
        head: &str,
        items: &'a [T],
        tail: &str,
        mut row: impl FnMut(&'a T, &mut Vec<Arg<'a>>),
    ) -> Self {
        let mut args = Vec::new();
        let mut sql = String::from(head);
        sql.push_str("VALUES ");
        let mut width = None;
        let mut even = true;
        for (i, item) in items.iter().enumerate() {
            let first = args.len();
            row(item, &mut args);
            let this = args.len() - first;
            even &= *width.get_or_insert(this) == this;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            sql.push_str(&placeholders(first + 1, this, ", "));
            sql.push(')');
        }
        sql.push_str(tail);
        let rows = width.filter(|&w| even && w > 0).map(|width| Shape {
            head: head.len(),
            tail: tail.len(),
            width,
        });
        Self {
            op,
            sql: sql.into(),
            args,
            rows,
        }
    }

    /// `head` followed by one placeholder per argument, joined by `sep`, then `tail`: an
    /// `IN (…)` list or a disjunction.
    pub fn list(op: &'static str, head: &str, args: Vec<Arg<'a>>, sep: &str, tail: &str) -> Self {
        let sql = format!("{head}{}{tail}", placeholders(1, args.len(), sep));
        Self {
            op,
            sql: sql.into(),
            args,
            rows: None,
        }
    }
}

/// `$first, $first+1, …` (`count` of them) joined by `sep`.
fn placeholders(first: usize, count: usize, sep: &str) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// One value of a row as the driver returned it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// An integer of any width.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
    /// A boolean (PostgreSQL; SQLite answers integers).
    Bool(bool),
}

/// A row: its values in select order.
#[derive(Debug)]
pub struct Row {
    op: &'static str,
    values: std::vec::IntoIter<Value>,
    next: usize,
}

impl Row {
    /// A row of operation `op`'s result.
    pub fn new(op: &'static str, values: Vec<Value>) -> Self {
        Self {
            op,
            values: values.into_iter(),
            next: 0,
        }
    }

    /// The next column, read as `T`.
    pub fn column<T: Column>(&mut self) -> Result<T, StoreError> {
        let at = self.next;
        self.next += 1;
        let value = self.values.next().ok_or_else(|| StoreError::Query {
            op: self.op,
            reason: format!("column {at} is missing"),
        })?;
        T::from_value(value).ok_or(StoreError::Unreadable {
            op: self.op,
            column: at,
            expected: T::NAME,
        })
    }
}

/// A Rust type one column reads into.
pub trait Column: Sized {
    /// What the column must hold, for errors.
    const NAME: &'static str;
    /// The value as this type, if it is one.
    fn from_value(value: Value) -> Option<Self>;
}

impl Column for i64 {
    const NAME: &'static str = "an integer";
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Int(v) => Some(v),
            _ => None,
        }
    }
}
impl Column for UnixTime {
    const NAME: &'static str = "a time (integer seconds)";
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Int(v) => Some(UnixTime::from_secs(v)),
            _ => None,
        }
    }
}
impl Column for String {
    const NAME: &'static str = "text";
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Text(v) => Some(v),
            _ => None,
        }
    }
}
impl Column for Vec<u8> {
    const NAME: &'static str = "bytes";
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Blob(v) => Some(v),
            _ => None,
        }
    }
}
impl Column for bool {
    const NAME: &'static str = "a boolean";
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Bool(v) => Some(v),
            Value::Int(v) => Some(v != 0),
            _ => None,
        }
    }
}
impl<T: Column> Column for Option<T> {
    const NAME: &'static str = T::NAME;
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A result row read into a type: a tuple of columns, or a row struct.
pub trait FromRow: Sized {
    /// Reads the row, column by column in select order.
    fn from_row(row: Row) -> Result<Self, StoreError>;
}

impl<A: Column> FromRow for (A,) {
    fn from_row(mut r: Row) -> Result<Self, StoreError> {
        Ok((r.column()?,))
    }
}
impl<A: Column, B: Column> FromRow for (A, B) {
    fn from_row(mut r: Row) -> Result<Self, StoreError> {
        Ok((r.column()?, r.column()?))
    }
}
impl<A: Column, B: Column, C: Column> FromRow for (A, B, C) {
    fn from_row(mut r: Row) -> Result<Self, StoreError> {
        Ok((r.column()?, r.column()?, r.column()?))
    }
}
impl<A: Column, B: Column, C: Column, D: Column> FromRow for (A, B, C, D) {
    fn from_row(mut r: Row) -> Result<Self, StoreError> {
        Ok((r.column()?, r.column()?, r.column()?, r.column()?))
    }
}
impl<A: Column, B: Column, C: Column, D: Column, E: Column, F: Column> FromRow
    for (A, B, C, D, E, F)
{
    fn from_row(mut r: Row) -> Result<Self, StoreError> {
        Ok((
            r.column()?,
            r.column()?,
            r.column()?,
            r.column()?,
            r.column()?,
            r.column()?,
        ))
    }
}
impl<A: Column, B: Column, C: Column, D: Column, E: Column, F: Column, G: Column> FromRow
    for (A, B, C, D, E, F, G)
{
    fn from_row(mut r: Row) -> Result<Self, StoreError> {
        Ok((
            r.column()?,
            r.column()?,
            r.column()?,
            r.column()?,
            r.column()?,
            r.column()?,
            r.column()?,
        ))
    }
}

/// One column read on its own (`SELECT COUNT(*)`, `SELECT status …`).
#[derive(Debug)]
pub struct Scalar<T>(pub T);

impl<T: Column> FromRow for Scalar<T> {
    fn from_row(mut r: Row) -> Result<Self, StoreError> {
        r.column().map(Scalar)
    }
}

/// A SQL backend: how it binds and runs a statement on its connection, and the few things
/// its SQL says differently. Implemented by [`crate::sqlite::Sqlite`] and
/// [`crate::postgres::Postgres`]; the store's code is generic over it.
pub trait Dialect: Send + Sync + std::fmt::Debug + 'static {
    /// The driver's database type.
    type Db: sqlx::Database;
    /// Which backend this is.
    const BACKEND: Backend;
    /// Begins a transaction that will write (SQLite: `BEGIN IMMEDIATE`).
    const BEGIN: &'static str;
    /// Tells other replicas at commit that an inbox changed (empty: none to tell).
    const NOTIFY: &'static str;
    /// Takes a housekeeping job's lock until commit, `$1` the job (empty: one process).
    const JOB_LOCK: &'static str;
    /// Appended to a read that decides a write, to lock its rows (empty: one writer).
    const FOR_UPDATE: &'static str;
    /// The database's clock, in Unix seconds.
    const DB_NOW: &'static str;
    /// Returns some freed pages to the file system (empty: the database does it itself).
    const RECLAIM: &'static str;
    /// Where its group commits' batches run (`group_commit::Placement`).
    const BATCHES: crate::group_commit::Placement;

    /// Runs a statement; how many rows it changed.
    fn execute<'c>(
        conn: &'c mut <Self::Db as sqlx::Database>::Connection,
        stmt: &'c Stmt<'_>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + 'c;

    /// Runs a query; its rows as values.
    fn fetch<'c>(
        conn: &'c mut <Self::Db as sqlx::Database>::Connection,
        stmt: &'c Stmt<'_>,
    ) -> impl Future<Output = Result<Vec<Vec<Value>>, sqlx::Error>> + Send + 'c;

    /// Calls `on_change` whenever another replica changes an inbox (by default never: one
    /// process, whose own commits wake its long-polls).
    fn watch_inbox(_pool: &sqlx::Pool<Self::Db>, _on_change: Arc<dyn Fn() + Send + Sync>) {}
}

/// Statement failures a test asks for: the next statements whose SQL contains a chosen
/// text fail with a chosen error, before reaching the database (`COMMIT` names the commit).
/// A store opened normally has none.
#[derive(Clone, Debug, Default)]
pub struct Faults(Option<Arc<Mutex<Vec<Fault>>>>);

#[derive(Debug)]
struct Fault {
    needle: String,
    skip: usize,
    times: usize,
    error: StoreError,
}

impl Faults {
    /// A plan tests can add failures to.
    pub fn armed() -> Self {
        Self(Some(Arc::default()))
    }

    /// The `times` statements whose SQL contains `needle`, after the first `skip` of them,
    /// fail with `error`.
    pub fn fail(&self, needle: &str, skip: usize, times: usize, error: StoreError) {
        if let Some(plan) = &self.0 {
            plan.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Fault {
                    needle: needle.to_owned(),
                    skip,
                    times,
                    error,
                });
        }
    }

    /// Forgets every planned failure.
    pub fn clear(&self) {
        if let Some(plan) = &self.0 {
            plan.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
        }
    }

    /// The planned failure for this SQL, if any (counting it).
    fn check(&self, sql: &str) -> Result<(), StoreError> {
        let Some(plan) = &self.0 else { return Ok(()) };
        let mut plan = plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for fault in plan.iter_mut() {
            if fault.times == 0 || !sql.contains(&fault.needle) {
                continue;
            }
            if fault.skip > 0 {
                fault.skip -= 1;
                continue;
            }
            fault.times -= 1;
            return Err(fault.error.clone());
        }
        Ok(())
    }
}

/// A transaction on a backend's connection.
pub struct Tx<D: Dialect> {
    tx: sqlx::Transaction<'static, D::Db>,
    faults: Faults,
    sync: Option<Arc<WalSync>>,
}

impl<D: Dialect> Tx<D> {
    /// Runs a statement; how many rows it changed.
    pub async fn execute(&mut self, stmt: Stmt<'_>) -> Result<u64, StoreError> {
        self.faults.check(stmt.sql())?;
        D::execute(&mut self.tx, &stmt)
            .await
            .map_err(query_err(stmt.op()))
    }

    /// Every row of a query.
    pub async fn fetch_all<T: FromRow>(&mut self, stmt: Stmt<'_>) -> Result<Vec<T>, StoreError> {
        self.faults.check(stmt.sql())?;
        let rows = D::fetch(&mut self.tx, &stmt)
            .await
            .map_err(query_err(stmt.op()))?;
        rows.into_iter()
            .map(|r| T::from_row(Row::new(stmt.op(), r)))
            .collect()
    }

    /// The first row of a query, if any.
    pub async fn fetch_optional<T: FromRow>(
        &mut self,
        stmt: Stmt<'_>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.fetch_all(stmt).await?.into_iter().next())
    }

    /// The first row of a query, which must exist.
    pub async fn fetch_one<T: FromRow>(&mut self, stmt: Stmt<'_>) -> Result<T, StoreError> {
        let op = stmt.op();
        self.fetch_optional(stmt).await?.ok_or(StoreError::Query {
            op,
            reason: "no row returned".into(),
        })
    }

    /// Commits the transaction, durably: it returns once the commit would survive a
    /// power cut.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.commit_then(|| ()).await
    }

    /// Commits the transaction, calls `committed` as soon as the connection is free for the
    /// next transaction, and returns once the commit is durable (on the embedded store, after
    /// the write-ahead log's sync: the next transaction runs meanwhile).
    pub async fn commit_then(self, committed: impl FnOnce()) -> Result<(), StoreError> {
        self.faults.check("COMMIT")?;
        let sync = self.sync;
        let ticket = sync.as_deref().map(WalSync::ticket);
        self.tx.commit().await.map_err(query_err("commit"))?;
        committed();
        match (sync.as_deref(), ticket) {
            (Some(sync), Some(ticket)) => sync.after(ticket).await,
            _ => Ok(()),
        }
    }
}

/// A backend's connection pool (readers, or the writer), with the store's fault plan.
#[derive(Debug)]
pub struct Pool<D: Dialect> {
    pool: sqlx::Pool<D::Db>,
    faults: Faults,
    /// The embedded store's writer: commits are made durable by syncing the write-ahead log
    /// after the connection is released ([`WalSync`]).
    sync: Option<Arc<WalSync>>,
}

impl<D: Dialect> Clone for Pool<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            faults: self.faults.clone(),
            sync: self.sync.clone(),
        }
    }
}

impl<D: Dialect> Pool<D> {
    /// The pool, consulting `faults` before each statement; its commits durable when they
    /// return (the connections sync them).
    pub fn new(pool: sqlx::Pool<D::Db>, faults: Faults) -> Self {
        Self {
            pool,
            faults,
            sync: None,
        }
    }

    /// The pool whose connections commit without syncing, each write made durable by `sync`
    /// before it returns.
    pub fn synced_by(pool: sqlx::Pool<D::Db>, faults: Faults, sync: Arc<WalSync>) -> Self {
        Self {
            pool,
            faults,
            sync: Some(sync),
        }
    }

    /// Whether this pool's writes can still be made durable (a failed write-ahead log sync
    /// stops every later write, and readiness with them).
    pub fn check_durable(&self) -> Result<(), StoreError> {
        self.sync.as_ref().map_or(Ok(()), |s| s.check())
    }

    /// Returns once everything committed on this pool so far is durable (at once where
    /// commits are durable when they return): before answering from what a reader saw.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        match &self.sync {
            Some(sync) => sync.barrier().await,
            None => Ok(()),
        }
    }

    /// The driver's pool.
    pub fn inner(&self) -> &sqlx::Pool<D::Db> {
        &self.pool
    }

    /// Begins a write transaction. A `COMMIT` that failed (a full disk, a lost server) can
    /// hand its connection back still inside the transaction, and every later `BEGIN` on it
    /// would fail: such a connection is closed here and the transaction begun on a fresh
    /// one. (Checking every released connection in a pool hook instead cost ~15 % of
    /// throughput: the hook delays each release.)
    pub async fn begin(&self) -> Result<Tx<D>, StoreError> {
        /// Connections left inside a failed transaction one `begin` closes before it gives up.
        const STALE_CONNECTIONS_CLOSED: u32 = 4;
        self.faults.check("BEGIN")?;
        self.check_durable()?;
        // A connection whose COMMIT failed (a full disk) can come back to the pool still
        // inside its transaction; it is closed and `BEGIN` tried again. Under load another
        // writer's failed COMMIT can leave the next one so too, so this is tried a few
        // times, then answered as contention (`503`, retry), never as a fault of ours.
        let mut stale_left = STALE_CONNECTIONS_CLOSED;
        let tx = loop {
            match self.pool.begin_with(D::BEGIN).await {
                Err(sqlx::Error::InvalidSavePointStatement | sqlx::Error::BeginFailed)
                    if stale_left > 0 =>
                {
                    stale_left -= 1;
                    let stale = self.pool.acquire().await.map_err(query_err("begin"))?;
                    if sqlx::Connection::is_in_transaction(&*stale) {
                        let _ = stale.close().await;
                    } else {
                        drop(stale);
                    }
                }
                Err(sqlx::Error::InvalidSavePointStatement | sqlx::Error::BeginFailed) => {
                    return Err(StoreError::Contended(
                        "connections kept coming back inside failed transactions".into(),
                    ));
                }
                other => break other.map_err(query_err("begin"))?,
            }
        };
        Ok(Tx {
            tx,
            faults: self.faults.clone(),
            sync: self.sync.clone(),
        })
    }

    /// Runs a statement on its own; how many rows it changed.
    pub async fn execute(&self, stmt: Stmt<'_>) -> Result<u64, StoreError> {
        self.faults.check(stmt.sql())?;
        self.check_durable()?;
        let mut conn = self.pool.acquire().await.map_err(query_err("acquire"))?;
        let ticket = self.sync.as_deref().map(WalSync::ticket);
        let changed = D::execute(&mut conn, &stmt)
            .await
            .map_err(query_err(stmt.op()))?;
        drop(conn);
        if let (Some(sync), Some(ticket)) = (self.sync.as_deref(), ticket) {
            sync.after(ticket).await?;
        }
        Ok(changed)
    }

    /// Every row of a query.
    pub async fn fetch_all<T: FromRow>(&self, stmt: Stmt<'_>) -> Result<Vec<T>, StoreError> {
        self.faults.check(stmt.sql())?;
        let mut conn = self.pool.acquire().await.map_err(query_err("acquire"))?;
        // A statement on the writer may write (`RETURNING`).
        let ticket = self.sync.as_deref().map(WalSync::ticket);
        let rows = D::fetch(&mut conn, &stmt)
            .await
            .map_err(query_err(stmt.op()))?;
        drop(conn);
        if let (Some(sync), Some(ticket)) = (self.sync.as_deref(), ticket) {
            sync.after(ticket).await?;
        }
        rows.into_iter()
            .map(|r| T::from_row(Row::new(stmt.op(), r)))
            .collect()
    }

    /// The first row of a query, if any.
    pub async fn fetch_optional<T: FromRow>(
        &self,
        stmt: Stmt<'_>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.fetch_all(stmt).await?.into_iter().next())
    }

    /// The first row of a query, which must exist.
    pub async fn fetch_one<T: FromRow>(&self, stmt: Stmt<'_>) -> Result<T, StoreError> {
        let op = stmt.op();
        self.fetch_optional(stmt).await?.ok_or(StoreError::Query {
            op,
            reason: "no row returned".into(),
        })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_values_number_their_placeholders_in_order() {
        let items = [(1_i64, "a"), (2, "b")];
        let s = Stmt::values(
            "t",
            "INSERT INTO t (n, s) ",
            &items,
            " ON CONFLICT DO NOTHING",
            |(n, t), a| {
                a.push((*n).into());
                a.push((*t).into());
            },
        );
        assert_eq!(
            s.sql(),
            "INSERT INTO t (n, s) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
        assert_eq!(s.args().len(), 4);
        let l = Stmt::list("t", "x IN (", vec![1_i64.into(), 2_i64.into()], ", ", ")");
        assert_eq!(l.sql(), "x IN ($1, $2)");
    }

    #[test]
    fn a_column_of_the_wrong_type_is_an_error_naming_it() {
        let r: Result<(i64, String), _> =
            FromRow::from_row(Row::new("op", vec![Value::Int(1), Value::Int(2)]));
        assert!(matches!(
            r,
            Err(StoreError::Unreadable {
                op: "op",
                column: 1,
                expected: "text"
            })
        ));
        let r: (Option<String>, bool) =
            FromRow::from_row(Row::new("op", vec![Value::Null, Value::Int(1)])).unwrap();
        assert_eq!(r, (None, true));
    }

    #[test]
    fn a_planned_fault_fails_only_the_chosen_statements() {
        let f = Faults::armed();
        f.fail(
            "INSERT INTO deliveries",
            1,
            1,
            StoreError::Full("planned".into()),
        );
        assert!(f.check("INSERT INTO deliveries (a)").is_ok());
        assert!(f.check("SELECT 1").is_ok());
        assert!(matches!(
            f.check("INSERT INTO deliveries (a)"),
            Err(StoreError::Full(_))
        ));
        assert!(f.check("INSERT INTO deliveries (a)").is_ok());
        assert!(Faults::default().check("anything").is_ok());
    }
}
