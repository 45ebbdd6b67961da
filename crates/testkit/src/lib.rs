//! Test harness shared by every crate's tests: isolated streams, databases and real
//! registries, each cleaned up when the test ends.
//!
//! Tests run in parallel against one NATS and one PostgreSQL, so every test gets a stream
//! name, a subject prefix and a database of its own, all derived from one random id.

pub mod artifact_registry;
pub mod browser;
pub mod cloud;
pub mod dockerhub;
pub mod forward_proxy;
pub mod github;
pub mod harbor;
pub mod hostile;
pub mod latency;
pub mod nats;
pub mod nats_cluster;
pub mod proxy;
pub mod publish;
pub mod referrers;
pub mod registry;
pub mod signing;
pub mod standin;

/// Where the registries and servers the tests start listen. The network guard denies
/// loopback by default, so every test that talks to one allows it explicitly, the way the
/// quickstart does with `IMAGELIB_ALLOW_NETWORKS`.
pub const LOOPBACK_NETWORKS: &str = "127.0.0.0/8,::1/128";

use std::sync::Once;

/// `IMAGELIB_TEST_NATS_URL`, default the local dev server.
pub fn nats_url() -> String {
    let url =
        std::env::var("IMAGELIB_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    ensure_anchor_stream(&url);
    url
}

/// `IMAGELIB_TEST_DATABASE_URL`: a server URL whose database is used only to create and
/// drop per-test databases.
pub fn admin_database_url() -> String {
    std::env::var("IMAGELIB_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A short random id for names.
pub fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Logs for tests (`RUST_LOG`, off by default), installed once.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// A stream name and subject prefix of this test's own; the stream is deleted on drop.
#[derive(Debug)]
pub struct TestStream {
    pub name: String,
    pub prefix: String,
    pub nats_url: String,
}

/// A file stream that is never deleted, created once per test process. nats-server 2.9
/// removes an account's store directory when its last file stream is deleted, and a
/// stream created at that moment fails (`could not create storage directory`, 10077/10049):
/// with parallel tests creating and deleting streams, that happened. The anchor keeps the
/// directory.
fn ensure_anchor_stream(url: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let url = url.to_owned();
        run_cleanup(async move {
            let client = async_nats::connect(&url).await?;
            let js = async_nats::jetstream::new(client);
            let _ = js
                .get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: "IMAGELIB_TEST_ANCHOR".into(),
                    subjects: vec!["imagelib-test-anchor".into()],
                    max_bytes: 4096,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await;
            Ok(())
        });
    });
}

impl TestStream {
    pub fn new() -> Self {
        let id = unique_id();
        TestStream {
            name: format!("T_{id}"),
            prefix: format!("t{id}"),
            nats_url: nats_url(),
        }
    }

    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        Ok(async_nats::connect(&self.nats_url).await?)
    }
}

impl Default for TestStream {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let (url, name) = (self.nats_url.clone(), self.name.clone());
        run_cleanup(async move {
            let client = async_nats::connect(&url).await?;
            let js = async_nats::jetstream::new(client);
            // The stream and what services keep beside it: the scanner's job queue,
            // leases and integrity sweep positions, and the bucket of wrapped data keys.
            for s in [
                name.clone(),
                format!("{name}_JOBS"),
                format!("KV_{name}_LEASES"),
                format!("KV_{name}_SCANNED"),
                format!("KV_{name}_INTEGRITY"),
                format!("KV_{name}_KEYS"),
            ] {
                let _ = js.delete_stream(&s).await;
            }
            Ok(())
        });
    }
}

/// A database of this test's own (`imagelib_t_<id>`), dropped on drop.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    /// The URL of the test's database.
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// Only names the database: services create it themselves (as in production).
    pub fn new() -> Self {
        let admin_url = admin_database_url();
        let name = format!("imagelib_t_{}", unique_id());
        let url = with_database(&admin_url, &name);
        TestDb {
            name,
            url,
            admin_url,
        }
    }

    /// Create it now and connect.
    pub async fn create(&self) -> anyhow::Result<sqlx::PgPool> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE \"{}\"", self.name))
            .execute(&mut conn)
            .await?;
        Ok(sqlx::PgPool::connect(&self.url).await?)
    }
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        run_cleanup(async move {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await?;
            Ok(())
        });
    }
}

/// Replace the database (path) of a postgres URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Async cleanup from `Drop`, on a thread of its own so it works inside or outside a
/// runtime; bounded so a dead server cannot hang the test run.
fn run_cleanup<F>(fut: F)
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let handle = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let _ = rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), fut).await
        });
    });
    let _ = handle.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "y"),
            "postgres://u@h/y?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "z"), "postgres://h:1/z");
    }
}
