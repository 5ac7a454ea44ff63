//! Database connections for every store on a backend URI: the tracking store, the registry,
//! model-quality monitoring and basic auth's users all open their pools here, so one database
//! file gets one set of SQLite settings (docs/architecture.md, "Storage").

mod group_commit;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};

pub use group_commit::GroupCommit;

use sqlx::AnyPool;
use sqlx::Executor;
use sqlx::any::AnyPoolOptions;

/// The SQL dialect behind a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
    /// MySQL 8 or MariaDB 10.5+ (docs/architecture.md, "Storage": the session settings every
    /// connection gets, and what differs in the SQL).
    MySql,
}

impl Engine {
    /// The name `Store::engine` and the statistics report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgresql",
            Self::MySql => "mysql",
        }
    }
}

/// When a SQLite commit is acknowledged (`--sqlite-synchronous`, docs/architecture.md,
/// "Durability").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSync {
    /// After it is on disk: survives a power loss. Concurrent commits share one fsync
    /// ([`GroupCommit`]).
    #[default]
    Full,
    /// When SQLite has written it to the WAL file, before the disk has it: survives a killed
    /// process, may lose the last commits on a power loss (synced at checkpoints only).
    Normal,
}

impl SqliteSync {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Some(Self::Full),
            "normal" => Some(Self::Normal),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Normal => "normal",
        }
    }
}

/// A pool with its dialect and, for SQLite, the one in-process writer lock that every store on
/// the file shares (SQLite allows one writer: serialising writers in-process avoids SQLITE_BUSY on
/// lock upgrades) and its group commit. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    /// SQLite files: the one connection every write goes through (see [`connect_sqlite_writer`]).
    writer: Option<AnyPool>,
    /// SQLite files: native connections for reads of many rows (see [`connect_sqlite_bulk_reader`]).
    bulk_reader: Option<sqlx::SqlitePool>,
    engine: Engine,
    write_lock: Option<Arc<Mutex<()>>>,
    group_commit: Option<Arc<GroupCommit>>,
}

/// Held while writing to SQLite; its release counts a finished write transaction for the group
/// commit, so hold it until the transaction has committed.
#[derive(Debug)]
pub struct WriteGuard<'a> {
    _lock: MutexGuard<'a, ()>,
    group_commit: Option<&'a GroupCommit>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.group_commit {
            g.committed();
        }
    }
}

impl Database {
    /// A database without group commit (PostgreSQL; SQLite in memory or `--sqlite-synchronous
    /// normal`).
    pub fn new(pool: AnyPool, engine: Engine) -> Self {
        let write_lock = (engine == Engine::Sqlite).then(|| Arc::new(Mutex::new(())));
        Self {
            pool,
            writer: None,
            bulk_reader: None,
            engine,
            write_lock,
            group_commit: None,
        }
    }

    /// Send every write through `writer` (a SQLite file's single writer connection).
    pub fn with_writer(mut self, writer: AnyPool) -> Self {
        self.writer = Some(writer);
        self
    }

    /// A SQLite file whose write requests are answered only once their commits are on disk.
    pub fn with_group_commit(mut self, group_commit: GroupCommit) -> Self {
        self.group_commit = Some(Arc::new(group_commit));
        self
    }

    /// Wait until every write committed so far is on disk (a no-op without group commit:
    /// PostgreSQL syncs its own commits, `synchronous_commit` left as the server has it).
    pub async fn sync_commits(&self) -> std::io::Result<()> {
        match &self.group_commit {
            Some(g) => g.sync().await,
            None => Ok(()),
        }
    }

    pub fn group_commit(&self) -> Option<&GroupCommit> {
        self.group_commit.as_deref()
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Read many rows of a SQLite file through `reader` (see [`connect_sqlite_bulk_reader`]).
    pub fn with_bulk_reader(mut self, reader: sqlx::SqlitePool) -> Self {
        self.bulk_reader = Some(reader);
        self
    }

    /// A SQLite file's native connections for reads of many rows (`None` elsewhere).
    pub fn bulk_reader(&self) -> Option<&sqlx::SqlitePool> {
        self.bulk_reader.as_ref()
    }

    /// The pool writes use: a SQLite file's writer connection, else the shared pool.
    pub fn writer(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.pool)
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Held while writing, until the commit; `None` (no waiting) on PostgreSQL.
    pub async fn write_guard(&self) -> Option<WriteGuard<'_>> {
        match &self.write_lock {
            Some(lock) => Some(WriteGuard {
                _lock: lock.lock().await,
                group_commit: self.group_commit.as_deref(),
            }),
            None => None,
        }
    }
}

/// Connections per SQLite file (one writer at a time; readers run concurrently under WAL).
const SQLITE_CONNECTIONS: u32 = 8;
/// Connections per PostgreSQL pool.
const POSTGRES_CONNECTIONS: u32 = 16;
/// How long a request waits for a free connection (or for a new one to connect) before it is
/// answered 503: a database that is down must not hold requests for long.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite waits this long for the writer lock before a write fails (PRAGMA busy_timeout, in ms,
/// below), so SQLite pools wait for a connection as long.
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Settings of every SQLite connection: wait for the writer instead of failing, enforce foreign
/// keys, and make LIKE case-sensitive as MLflow's search expects. `synchronous` comes from
/// [`Pragma`].
/// Page caches are 1 MiB per connection (SQLite's default is 2 MiB): a reader's cache is dropped
/// whenever the writer commits, so a bigger one buys little and costs resident memory per
/// connection; the writer sets its own (`SQLITE_WRITER_CACHE_KIB`).
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
     PRAGMA case_sensitive_like = ON; PRAGMA cache_size = -1024;";

/// SQLite's own `PRAGMA synchronous` for a pool's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pragma {
    /// fsync at WAL checkpoints only: for the tracking store, whose write requests sync through
    /// [`GroupCommit`] (or accept the risk with `--sqlite-synchronous normal`).
    SynchronousNormal,
    /// fsync at every commit: for stores with rare writes (basic auth's users).
    SynchronousFull,
}

impl Pragma {
    fn statement(self) -> &'static str {
        match self {
            Self::SynchronousNormal => "PRAGMA synchronous = NORMAL;",
            Self::SynchronousFull => "PRAGMA synchronous = FULL;",
        }
    }
}

/// The file path of an MLflow-style SQLite URI: `sqlite:///rel.db` is relative, `sqlite:////abs.db`
/// absolute, `sqlite:///:memory:` (or `sqlite://`) in memory. `None` for other schemes.
pub fn sqlite_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("sqlite://")?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or("");
    Some(if path.is_empty() {
        ":memory:".to_owned()
    } else {
        path.to_owned()
    })
}

pub fn is_postgres_uri(uri: &str) -> bool {
    uri.starts_with("postgresql://") || uri.starts_with("postgres://") || uri.starts_with("postgresql+")
}

/// `mysql://`, `mariadb://` and SQLAlchemy's `mysql+pymysql://` (any `+driver`), as MLflow names
/// a MySQL backend store.
pub fn is_mysql_uri(uri: &str) -> bool {
    uri.starts_with("mysql://") || uri.starts_with("mysql+") || uri.starts_with("mariadb://")
}

/// The URI sqlx's MySQL driver reads: `mysql://`, the driver suffix and `mariadb` dropped.
pub fn normalise_mysql(uri: &str) -> String {
    let tail = uri
        .strip_prefix("mariadb://")
        .or_else(|| uri.strip_prefix("mysql://"))
        .or_else(|| {
            uri.strip_prefix("mysql+")
                .and_then(|rest| rest.split_once("://"))
                .map(|(_, tail)| tail)
        })
        .unwrap_or(uri);
    format!("mysql://{tail}")
}

/// SQLAlchemy-style driver suffixes (`postgresql+psycopg2://`) are accepted and dropped.
pub fn normalise_postgres(uri: &str) -> String {
    match uri
        .strip_prefix("postgresql+")
        .and_then(|rest| rest.split_once("://"))
    {
        Some((_, tail)) => format!("postgresql://{tail}"),
        None => uri.to_owned(),
    }
}

/// Open a pool on an MLflow-style backend URI for a store with rare writes (SQLite commits are
/// synced one by one); `None` when the scheme is none of SQLite, PostgreSQL and MySQL.
pub async fn connect(uri: &str) -> Option<Result<(AnyPool, Engine), sqlx::Error>> {
    if let Some(path) = sqlite_path(uri) {
        Some(
            connect_sqlite(&path, Pragma::SynchronousFull)
                .await
                .map(|pool| (pool, Engine::Sqlite)),
        )
    } else if is_postgres_uri(uri) {
        Some(connect_postgres(uri).await.map(|pool| (pool, Engine::Postgres)))
    } else if is_mysql_uri(uri) {
        Some(connect_mysql(uri).await.map(|pool| (pool, Engine::MySql)))
    } else {
        None
    }
}

/// A SQLite file (created with its directory when missing) in WAL mode, or an in-memory database.
pub async fn connect_sqlite(path: &str, synchronous: Pragma) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let memory = path == ":memory:";
    let url = if memory {
        "sqlite::memory:".to_owned()
    } else {
        if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(sqlx::Error::Io)?;
        }
        format!("sqlite://{path}?mode=rwc")
    };
    // An in-memory database lives in its one connection, which must never be closed.
    let options = if memory {
        AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        AnyPoolOptions::new().max_connections(SQLITE_CONNECTIONS)
    };
    let pool = options
        .acquire_timeout(SQLITE_ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(SQLITE_PRAGMAS).await?;
                conn.execute(synchronous.statement()).await?;
                Ok(())
            })
        })
        .connect(&url)
        .await?;
    if !memory {
        pool.execute("PRAGMA journal_mode = WAL;").await?;
    }
    Ok(pool)
}

/// Page cache of a SQLite file's writer connection, in KiB (`PRAGMA cache_size`; readers have 1 MiB
/// each, see `SQLITE_PRAGMAS`).
const SQLITE_WRITER_CACHE_KIB: u32 = 8192;
/// WAL pages after which the writer copies the WAL back into the database file (`PRAGMA
/// wal_autocheckpoint`; SQLite's default is 1000, about 4 MiB). A log-batch of 1000 metrics
/// dirties about 1000 pages, mostly the same tail pages as the batch before: with SQLite's
/// default every batch ran a checkpoint; with a longer WAL one checkpoint writes each page once
/// for several batches. The WAL stays under ~16 MiB.
const SQLITE_WAL_AUTOCHECKPOINT_PAGES: u32 = 4000;

/// The single connection a SQLite file's writes go through (docs/architecture.md, "Performance").
/// SQLite drops a connection's whole page cache when another connection has written since its
/// last transaction; writes spread over a pool therefore re-read from the file every page they
/// touch (a log-batch of 1000 metrics touches ~1000 B-tree pages), while one writer keeps them
/// cached. Writers are serialised by the store's write lock anyway, so nothing waits longer.
pub async fn connect_sqlite_writer(path: &str, synchronous: Pragma) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{path}?mode=rw");
    AnyPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(SQLITE_ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(SQLITE_PRAGMAS).await?;
                conn.execute(synchronous.statement()).await?;
                conn.execute(
                    format!(
                        "PRAGMA cache_size = -{SQLITE_WRITER_CACHE_KIB}; \
                         PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES};"
                    )
                    .as_str(),
                )
                .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
}

/// Native SQLite connections for reads that return many rows.
const SQLITE_BULK_READERS: u32 = 2;
/// Rows a SQLite connection's worker thread may run ahead of the reader. sqlx hands rows over a
/// bounded channel (50 by default, and the `Any` driver cannot change it); once it is full the
/// worker and the reader take turns row by row, two thread switches per row. A metric history
/// page of 25 000 points crosses in a few hand-overs with this.
const SQLITE_BULK_ROW_CHANNEL: usize = 8192;

/// Native (not `Any`) SQLite connections for the reads that return thousands of rows (metric
/// histories): a wide row channel, and rows decoded without the `Any` conversion
/// (docs/architecture.md, "Performance").
pub async fn connect_sqlite_bulk_reader(path: &str) -> Result<sqlx::SqlitePool, sqlx::Error> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(10))
        .pragma("case_sensitive_like", "ON")
        .pragma("cache_size", "-1024")
        .row_buffer_size(SQLITE_BULK_ROW_CHANNEL);
    SqlitePoolOptions::new()
        .max_connections(SQLITE_BULK_READERS)
        .acquire_timeout(SQLITE_ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
}

pub async fn connect_postgres(uri: &str) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(POSTGRES_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect(&normalise_postgres(uri))
        .await
}

/// Connections per MySQL pool.
const MYSQL_CONNECTIONS: u32 = 16;
/// Settings of every MySQL / MariaDB connection, whatever the server's defaults: double quotes
/// name identifiers and `||` concatenates (the SQL the engines share is written that way), a value
/// that does not fit is an error rather than silently cut, times are UTC, and strings compare by
/// their bytes (`utf8mb4_bin`) so names, keys and LIKE are case-sensitive as on SQLite and
/// PostgreSQL.
const MYSQL_SESSION: &str = "SET SESSION sql_mode = 'ANSI_QUOTES,PIPES_AS_CONCAT,STRICT_ALL_TABLES,\
     NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO', time_zone = '+00:00', \
     NAMES utf8mb4 COLLATE utf8mb4_bin";

pub async fn connect_mysql(uri: &str) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(MYSQL_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute(MYSQL_SESSION).await?;
                Ok(())
            })
        })
        .connect(&normalise_mysql(uri))
        .await
}

/// The database could not be reached or dropped the connection (PostgreSQL down, restarting, or
/// unreachable), as opposed to refusing a statement: the request may succeed when retried.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL: connection exceptions (08xxx), shutting down / cannot connect now (57P0x);
        // MySQL: server shutting down (1053), connection killed (1927, SQLSTATE 70100).
        sqlx::Error::Database(db) => {
            db.code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0") || c == "70100")
                || db.message().contains("Server shutdown in progress")
        }
        _ => false,
    }
}

/// `text`, written with PostgreSQL's numbered placeholders bound in order (`$1`, `$2`, …), as
/// `engine` reads it: unchanged on PostgreSQL and SQLite (which accepts `$N`), `?` on MySQL.
pub fn placeholders(engine: Engine, text: &str) -> std::borrow::Cow<'_, str> {
    if engine != Engine::MySql || !text.contains('$') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut in_literal = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_literal = !in_literal;
                out.push(c);
            }
            '$' if !in_literal && chars.peek().is_some_and(char::is_ascii_digit) => {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                out.push('?');
            }
            _ => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A string column that may be unbounded (MEDIUMTEXT on MySQL, where sqlx's `Any` driver hands
/// TEXT columns over as bytes): read as text, or as UTF-8 bytes.
pub fn text<I: TextIndex>(row: &sqlx::any::AnyRow, column: I) -> Result<String, sqlx::Error> {
    opt_text(row, column)?.ok_or_else(|| sqlx::Error::ColumnDecode {
        index: format!("{column:?}"),
        source: "unexpected NULL".into(),
    })
}

/// A column name or position for [`text`].
pub trait TextIndex: sqlx::ColumnIndex<sqlx::any::AnyRow> + std::fmt::Debug + Copy {}
impl<T: sqlx::ColumnIndex<sqlx::any::AnyRow> + std::fmt::Debug + Copy> TextIndex for T {}

/// [`text`] for a nullable column.
pub fn opt_text<I: TextIndex>(row: &sqlx::any::AnyRow, column: I) -> Result<Option<String>, sqlx::Error> {
    use sqlx::Row;
    match row.try_get::<Option<String>, _>(column) {
        Ok(value) => Ok(value),
        Err(sqlx::Error::ColumnDecode { .. }) => match row.try_get::<Option<Vec<u8>>, _>(column)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| sqlx::Error::ColumnDecode {
                    index: format!("{column:?}"),
                    source: Box::new(e),
                }),
        },
        Err(err) => Err(err),
    }
}

/// Whether the database answers a trivial query within `timeout`.
pub async fn ping(pool: &AnyPool, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// The database refused a value longer than its column (SQLSTATE 22001: MySQL's VARCHAR sizes,
/// PostgreSQL has none on our schema, SQLite none at all): the client sent it, so a 400.
pub fn is_value_too_long(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "22001"))
}

/// A unique or primary-key constraint refused the row (PostgreSQL 23505, SQLite 2067/1555, MySQL
/// 1062 through sqlx's error kind).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation)
                || db
                    .code()
                    .is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn uri_forms() {
        assert_eq!(sqlite_path("sqlite:///mlflow.db").as_deref(), Some("mlflow.db"));
        assert_eq!(sqlite_path("sqlite:////tmp/x.db").as_deref(), Some("/tmp/x.db"));
        assert_eq!(sqlite_path("sqlite:///:memory:").as_deref(), Some(":memory:"));
        assert_eq!(sqlite_path("sqlite://").as_deref(), Some(":memory:"));
        assert_eq!(sqlite_path("postgresql://h/db"), None);
        assert_eq!(
            normalise_postgres("postgresql+psycopg2://u@h/db"),
            "postgresql://u@h/db"
        );
        assert_eq!(normalise_postgres("postgresql://u@h/db"), "postgresql://u@h/db");
        assert!(is_postgres_uri("postgres://x") && !is_postgres_uri("sqlite:///x"));
        assert!(is_mysql_uri("mysql+pymysql://u:p@h/db") && is_mysql_uri("mariadb://h/db"));
        assert!(!is_mysql_uri("postgresql://h/db"));
        assert_eq!(
            normalise_mysql("mysql+pymysql://u:p@h:3306/db"),
            "mysql://u:p@h:3306/db"
        );
        assert_eq!(normalise_mysql("mariadb://h/db"), "mysql://h/db");
        assert_eq!(normalise_mysql("mysql://h/db"), "mysql://h/db");
    }

    #[test]
    fn mysql_placeholders() {
        let text = "UPDATE t SET a = $1, b = '$2' WHERE c = $10";
        assert_eq!(placeholders(Engine::Postgres, text), text);
        assert_eq!(
            placeholders(Engine::MySql, text),
            "UPDATE t SET a = ?, b = '$2' WHERE c = ?"
        );
    }

    #[tokio::test]
    async fn every_sqlite_pool_gets_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/one.db").display().to_string();
        let pool = connect_sqlite(&path, Pragma::SynchronousNormal).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let row: (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(row.0, "wal");
        for (pragma, want) in [
            ("foreign_keys", 1_i64),
            ("busy_timeout", 10000),
            ("synchronous", 1),
            ("cache_size", -1024),
        ] {
            let row: (i64,) = sqlx::query_as(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(row.0, want, "{pragma}");
        }
    }
}
