//! The database pool and migrations.
//!
//! One code path for SQLite (the embedded default) and PostgreSQL (production), through sqlx's
//! `Any` driver and portable SQL: `$n` placeholders, `BIGINT` money and Unix-millisecond times,
//! `ON CONFLICT` upserts. SQLite runs in WAL mode with `synchronous=FULL` (this is money) and a
//! busy timeout. Every write transaction starts with a write, so that SQLite takes its write lock
//! up front and waits on the busy timeout instead of failing a read-to-write upgrade.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Executor};
use std::str::FromStr;
use std::time::Duration;

/// The embedded migrations (`migrations/`), shared by SQLite and PostgreSQL.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// A connection pool to the orders database.
pub type Db = AnyPool;

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Result<Backend, sqlx::Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(sqlx::Error::Configuration(
                format!("unsupported DATABASE_URL scheme in {url:?}: use sqlite:// or postgres://")
                    .into(),
            ))
        }
    }
}

/// Opens a pool. A SQLite file is created if missing.
pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of(url)?;
    let url = match backend {
        Backend::Sqlite if !url.contains("mode=") => {
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        }
        _ => url.to_owned(),
    };
    let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
    let max = match backend {
        Backend::Sqlite => 8,
        Backend::Postgres => 16,
    };
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 15000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

/// Applies every pending migration.
pub async fn migrate_up(db: &Db) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(db).await
}

/// Reverts migrations down to `target` (0 reverts everything).
pub async fn migrate_down(db: &Db, target: i64) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.undo(db, target).await
}
