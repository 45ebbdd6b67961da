//! The advisory lock a standby replica waits for, against a real PostgreSQL.

use imagelib_platform::db::AdvisoryLock;
use imagelib_testkit::TestDb;
use sqlx::Connection;

/// Sessions of the test's database other than `conn`'s own. One connection, not a pool: a
/// pool may open a second connection while the first is still being returned to it.
async fn sessions(conn: &mut sqlx::PgConnection, db: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db)
    .fetch_one(conn)
    .await?)
}

#[tokio::test]
async fn one_holder_at_a_time_and_a_standby_keeps_one_connection() -> anyhow::Result<()> {
    let db = TestDb::new();
    // The pool (left idle: its connection is counted, and stays one) and a connection of
    // its own to count with.
    let pool = db.create().await?;
    let mut counter = sqlx::PgConnection::connect(&db.url).await?;
    let options: sqlx::postgres::PgConnectOptions = db.url.parse()?;
    let key = 0x7465_7374_6c6f_636b;
    let mut a = AdvisoryLock::new(options.clone(), key);
    let mut b = AdvisoryLock::new(options, key);
    let held = a.try_take().await?.expect("a free lock is taken");
    let before = sessions(&mut counter, &db.name).await?;
    for _ in 0..5 {
        assert!(b.try_take().await?.is_none(), "the lock is held by a");
    }
    // One connection for a's lock, one kept by b however often it tries.
    assert_eq!(sessions(&mut counter, &db.name).await?, before + 1);
    assert!(before >= 1);

    drop(held);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let taken = loop {
        if let Some(conn) = b.try_take().await? {
            break conn;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lock was not released with a's connection"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(a.try_take().await?.is_none(), "now b holds it");
    drop(taken);
    counter.close().await?;
    pool.close().await;
    Ok(())
}
