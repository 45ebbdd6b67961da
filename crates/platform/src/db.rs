//! PostgreSQL: one database for the installation, one schema per service.
//!
//! Services never read each other's tables (DESIGN section 2); a schema each keeps that
//! visible and lets a projection be rebuilt into a fresh schema and swapped in. The
//! database is created when missing so `imagelib serve` works on an empty server.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("IMAGELIB_DATABASE_URL is invalid: {0}")]
    Url(String),
    #[error("cannot reach PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot create database `{database}`: {source}")]
    Create {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Create the database named in `url` if it does not exist.
pub async fn ensure_database(url: &str) -> Result<(), DbError> {
    let opts = PgConnectOptions::from_str(url).map_err(|e| DbError::Url(e.to_string()))?;
    let database = opts.get_database().unwrap_or("postgres").to_owned();
    let admin = opts.clone().database("postgres");
    let mut conn = admin.connect().await.map_err(DbError::Connect)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let ident = quote_ident(&database);
        if let Err(source) = sqlx::query(&format!("CREATE DATABASE {ident}"))
            .execute(&mut conn)
            .await
        {
            // Another service created it at the same moment.
            let raced =
                matches!(&source, sqlx::Error::Database(e) if e.code().as_deref() == Some("42P04"));
            if !raced {
                return Err(DbError::Create { database, source });
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// A pool whose connections use `schema` (created if missing) as their search path.
pub async fn connect(url: &str, schema: &str, max_connections: u32) -> Result<PgPool, DbError> {
    ensure_database(url).await?;
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| DbError::Url(e.to_string()))?
        .options([("search_path", schema)]);
    {
        let mut conn = opts.connect().await.map_err(DbError::Connect)?;
        let ident = quote_ident(schema);
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {ident}"))
            .execute(&mut conn)
            .await
            .or_else(|e| match &e {
                // Concurrent CREATE SCHEMA IF NOT EXISTS can still race on the catalog.
                sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
                    Ok(Default::default())
                }
                _ => Err(e),
            })?;
        let _ = conn.close().await;
    }
    // No ping before each acquire: it doubles the round trips of a read, and a connection
    // the server closed fails its query with an error the caller already handles.
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .map_err(DbError::Connect)
}

/// Quote an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Tries a session-level advisory lock, for the replica that must be the only one doing
/// something (writing the catalog, projecting the scanner's image events) while the
/// others stand by. The lock lives on a connection of its own, outside any pool: closing
/// it, or the process dying, releases it. A standby tries again and again, on the same
/// connection: opening one per attempt would make PostgreSQL start a backend process
/// each time (several a second per standby replica).
#[derive(Debug)]
pub struct AdvisoryLock {
    options: PgConnectOptions,
    key: i64,
    conn: Option<sqlx::PgConnection>,
}

impl AdvisoryLock {
    pub fn new(options: PgConnectOptions, key: i64) -> Self {
        Self {
            options,
            key,
            conn: None,
        }
    }

    /// One attempt. `Some(connection)`: the lock is taken and held by that connection
    /// for as long as it lives. `None`: another session holds it; the connection is kept
    /// for the next attempt. An error drops the connection (the next attempt opens one).
    pub async fn try_take(&mut self) -> Result<Option<sqlx::PgConnection>, sqlx::Error> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => sqlx::PgConnection::connect_with(&self.options).await?,
        };
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(conn))
        } else {
            self.conn = Some(conn);
            Ok(None)
        }
    }
}
