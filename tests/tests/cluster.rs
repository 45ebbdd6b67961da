//! imagelib on a three-node NATS cluster (the stream at R3) with two `imagelib serve`
//! processes sharing one PostgreSQL database, under scans of several real registries:
//! a NATS node, the active catalog writer and a scanner are killed with SIGKILL and
//! restarted. Afterwards the catalog equals a clean replay of the stream into a fresh
//! database, every tag was discovered exactly once, and `/readyz` named each degradation
//! while it lasted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use imagelib_e2e::cluster::{Node, Shared, tail};
use imagelib_testkit::nats_cluster::NatsCluster;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use imagelib_testkit::{TestDb, unique_id};
use reqwest::Method;
use serde_json::{Value, json};

const REGISTRIES: usize = 3;
const REPOSITORIES: usize = 6;
const TAGS: usize = 12;

/// Poll `f` until it gives `Some`, at most `within`; `what` names the wait in the panic.
async fn until<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`until`] without the panic: `None` when the time ran out.
async fn try_until<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node (`n0`…) a process's stream check says it is connected to.
fn connected_node(readyz: &Value) -> Option<String> {
    let detail = readyz["checks"]["catalog-projector.stream"]["detail"].as_str()?;
    let node = detail.rsplit("connected to ").next()?;
    Some(node.trim().to_owned())
}

/// The projection check's detail of a process (`standby: …` on the standby).
fn projection(readyz: &Value) -> String {
    readyz["checks"]["catalog-projector.projection"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Every registry's fixture pushed: `REPOSITORIES` repositories of `TAGS` tags each (one
/// image per repository, tagged `TAGS` times).
async fn fixture(registry: &TestRegistry, index: usize) -> BTreeSet<(String, String)> {
    let mut tags = BTreeSet::new();
    for r in 0..REPOSITORIES {
        let repo = format!("team{index}/app{r}");
        let image = ImageSpec::linux_amd64()
            .label("org.opencontainers.image.title", &repo)
            .layer(format!("{repo} layer").as_bytes());
        registry
            .push_image(&repo, "t0", &image)
            .await
            .expect("push an image");
        tags.insert((repo.clone(), "t0".to_owned()));
        for t in 1..TAGS {
            let tag = format!("t{t}");
            registry.tag(&repo, "t0", &tag).await.expect("tag it");
            tags.insert((repo.clone(), tag));
        }
    }
    tags
}

async fn register(node: &Node, registry: &TestRegistry, label: &str) -> String {
    let (s, r) = node
        .call(
            Method::POST,
            "/v1/registries",
            Some(
                json!({"label": label, "url": registry.host(), "registry_type": "generic",
                        "insecure": true}),
            ),
        )
        .await
        .expect("register");
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().expect("an id").to_owned();
    let (s, r) = node
        .call(
            Method::PUT,
            &format!("/v1/registries/{id}/rules/all"),
            Some(json!({"repositories": "**", "kind": "auto", "enabled": true})),
        )
        .await
        .expect("a rule");
    assert!((200..300).contains(&s), "{r}");
    id
}

/// Request a scan of `id` through `node`: the request's sequence.
async fn request_sync(node: &Node, id: &str) -> u64 {
    let (s, r) = node
        .call(Method::POST, &format!("/v1/registries/{id}/sync"), None)
        .await
        .expect("sync");
    assert_eq!(s, 202, "{r}");
    r["sequence"].as_u64().expect("a sequence")
}

/// The instance running a scan right now, if any (`running_by` is
/// `system:sync-scanner/<instance>`).
async fn running_scanner(node: &Node) -> Option<String> {
    let (_, v) = node
        .call(Method::GET, "/v1/scanner/status", None)
        .await
        .ok()?;
    v["registries"].as_array()?.iter().find_map(|r| {
        r["running_by"]
            .as_str()
            .and_then(|by| by.rsplit('/').next())
            .map(str::to_owned)
    })
}

/// Every table of the catalog schema (but its position), each as its rows in JSON,
/// sorted.
async fn catalog_rows(url: &str) -> BTreeMap<String, Vec<String>> {
    let pool = sqlx::PgPool::connect(url).await.expect("connect");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'catalog' AND table_type = 'BASE TABLE' \
           AND table_name NOT IN ('stream_position', '_sqlx_migrations') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    let mut out = BTreeMap::new();
    for t in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(x)::text FROM catalog.\"{t}\" x ORDER BY 1"
        ))
        .fetch_all(&pool)
        .await
        .expect("rows");
        out.insert(t, rows);
    }
    pool.close().await;
    out
}

/// `tag_discovered` events of the stream, counted by (registry, repository, tag).
async fn discovered(
    cluster: &NatsCluster,
    stream: &str,
    prefix: &str,
) -> BTreeMap<(String, String, String), usize> {
    let client = async_nats::connect(cluster.server_addrs())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    let s = js.get_stream(stream).await.expect("the stream");
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("{prefix}.image.*.tag_discovered"),
            ..Default::default()
        })
        .await
        .expect("an ordered consumer");
    let mut pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = BTreeMap::new();
    while pending > 0 {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream answers")
            .expect("a message")
            .expect("not an error");
        let env = imagelib_events::binding::decode_envelope(m.headers.as_ref(), &m.payload)
            .expect("an event of the contract");
        if let imagelib_events::EventPayload::TagDiscovered(t) = env.payload {
            *out.entry((
                t.registry_id.to_string(),
                t.repository.to_string(),
                t.tag.to_string(),
            ))
            .or_insert(0) += 1;
        }
        pending = m.info().map(|i| i.pending).unwrap_or(0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_a_three_node_cluster_survive_killed_nodes_writers_and_scanners() {
    imagelib_testkit::init_tracing();
    let t0 = Instant::now();
    let mut cluster = NatsCluster::start().await.expect("a NATS cluster");
    let db = TestDb::new();
    db.create()
        .await
        .expect("the shared database")
        .close()
        .await;
    let dir = tempfile::tempdir().expect("a directory");
    let id = unique_id();
    let shared = Shared {
        database_url: db.url.clone(),
        stream: format!("CL_{id}"),
        subject_prefix: format!("cl{id}"),
        replicas: 3,
        master_key_file: dir.path().join("master.key"),
        extra: vec![
            // No scheduled scans: every scan is one the test asked for.
            ("IMAGELIB_SCANNER__SCHEDULE".into(), "false".into()),
            // A killed scanner's leases expire soon; few requests at once, so scans last.
            ("IMAGELIB_SCANNER__LEASE_TTL_SECS".into(), "3".into()),
            ("IMAGELIB_SCANNER__MAX_CONCURRENCY".into(), "2".into()),
            (
                "IMAGELIB_SCANNER__REPOSITORY_CONCURRENCY".into(),
                "1".into(),
            ),
        ],
    };
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_imagelib-node"));
    let mut nodes = [
        Node::new(&bin, "a", &cluster.urls_from(0), &shared, dir.path()).expect("node a"),
        Node::new(&bin, "b", &cluster.urls_from(1), &shared, dir.path()).expect("node b"),
    ];
    // One after the other: the first creates the stream (R3), the master key and schemas.
    for node in nodes.iter_mut() {
        node.start().expect("start");
        node.wait_ready(Duration::from_secs(60))
            .await
            .expect("ready");
    }
    let r = nodes[0].readyz().await.expect("a answers").1;
    let stream_detail = r["checks"]["catalog-projector.stream"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        stream_detail.contains("3 of 3 replicas current"),
        "{stream_detail}"
    );

    // Registries with images, registered through a, scanned at once.
    let mut registries = Vec::new();
    let mut expected = BTreeSet::new();
    for i in 0..REGISTRIES {
        let registry = TestRegistry::start().await.expect("a registry");
        let tags = fixture(&registry, i).await;
        let rid = register(&nodes[0], &registry, &format!("cluster-{i}")).await;
        for (repo, tag) in tags {
            expected.insert((rid.clone(), repo, tag));
        }
        registries.push((registry, rid));
    }
    for (i, (_, rid)) in registries.iter().enumerate() {
        request_sync(&nodes[i % 2], rid).await;
    }

    // 1. A NATS node dies: the one process a is connected to. Both processes keep
    //    working; /readyz names the replica that is gone.
    let victim = connected_node(&r).expect("a names its node");
    let victim_index = cluster
        .nodes()
        .iter()
        .position(|n| n.name == victim)
        .expect("a known node");
    cluster.kill(victim_index).expect("kill a NATS node");
    eprintln!("{:?} killed NATS node {victim}", t0.elapsed());
    let seen = std::sync::Mutex::new(Vec::new());
    let degraded = try_until(Duration::from_secs(30), || {
        let nodes = &nodes;
        let victim = victim.clone();
        let seen = &seen;
        async move {
            for node in nodes.iter() {
                let answer = node.readyz().await;
                if let Ok(mut seen) = seen.lock() {
                    seen.push(format!("{answer:?}"));
                    if seen.len() > 4 {
                        seen.remove(0);
                    }
                }
                if let Some((200, body)) = answer
                    && let Some(d) = body["degraded"].as_object()
                    && let Some(text) = d.values().filter_map(Value::as_str).find(|t| {
                        t.contains(&format!("replica {victim} unreachable"))
                            || t.contains(&format!("replica {victim} offline"))
                    })
                {
                    return Some(text.to_owned());
                }
            }
            None
        }
    })
    .await
    .unwrap_or_else(|| panic!("/readyz never named the lost node {victim}: {seen:?}"));
    eprintln!("/readyz: {degraded}");
    assert!(degraded.starts_with("degraded: "), "{degraded}");
    assert!(
        !degraded.contains(&format!("connected to {victim}")),
        "{degraded}"
    );

    // 2. The active catalog writer dies (the process whose projection is not standby);
    //    the standby takes the writer lock.
    let mut writer = None;
    for (i, node) in nodes.iter().enumerate() {
        if let Some((_, body)) = node.readyz().await
            && !projection(&body).starts_with("standby")
        {
            writer = Some(i);
        }
    }
    let writer = writer.expect("one process writes the catalog");
    let standby = 1 - writer;
    assert!(
        projection(&nodes[standby].readyz().await.expect("answers").1).starts_with("standby"),
        "the other process is the standby"
    );
    nodes[writer].kill().expect("kill the writer");
    eprintln!(
        "{:?} killed the catalog writer {}",
        t0.elapsed(),
        nodes[writer].instance
    );
    until(Duration::from_secs(30), "the standby to take over", || {
        let node = &nodes[standby];
        async move {
            let (_, body) = node.readyz().await?;
            (!projection(&body).starts_with("standby")).then_some(())
        }
    })
    .await;

    // Both come back: the NATS node catches up, the old writer is now the standby.
    cluster
        .restart(victim_index)
        .await
        .expect("restart the node");
    nodes[writer].start().expect("restart the writer");
    let body = nodes[writer]
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("the old writer is ready again");
    assert!(projection(&body).starts_with("standby"), "{body}");

    // 3. A scanner dies: one running a scan if one is, else b. Scans are asked again so
    //    that one runs while it dies.
    for (_, rid) in &registries {
        request_sync(&nodes[standby], rid).await;
    }
    let scanner = try_until(Duration::from_secs(10), || {
        let node = &nodes[standby];
        async move { running_scanner(node).await }
    })
    .await;
    let running = scanner.is_some();
    let scanner = nodes
        .iter()
        .position(|n| Some(&n.instance) == scanner.as_ref())
        .unwrap_or(1);
    nodes[scanner].kill().expect("kill a scanner");
    eprintln!(
        "{:?} killed scanner {} (running a scan: {running})",
        t0.elapsed(),
        nodes[scanner].instance
    );
    let other = 1 - scanner;
    nodes[scanner].start().expect("restart the scanner");
    nodes[scanner]
        .wait_ready(Duration::from_secs(60))
        .await
        .expect("the scanner is ready again");

    eprintln!("{:?} the scanner is back", t0.elapsed());
    // Every registry scanned to the end after all that.
    for (_, rid) in &registries {
        let requested = request_sync(&nodes[other], rid).await;
        let node = &nodes[other];
        until(Duration::from_secs(60), "a complete scan", || async move {
            let (_, v) = node
                .call(Method::GET, &format!("/v1/registries/{rid}"), None)
                .await
                .ok()?;
            let last = &v["last_sync"];
            (last["started_sequence"]
                .as_u64()
                .is_some_and(|s| s > requested)
                && last["state"] != "running")
                .then_some(())
        })
        .await;
    }

    eprintln!("{:?} every registry scanned again", t0.elapsed());
    // Both processes ready, nothing degraded, the writer caught up with the stream.
    let stream_last = {
        let client = async_nats::connect(cluster.server_addrs())
            .await
            .expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(&shared.stream).await.expect("the stream");
        let info = s.info().await.expect("info");
        let c = info.cluster.as_ref().expect("a clustered stream");
        assert_eq!(c.replicas.len() + 1, 3, "the stream is at R3");
        info.state.last_sequence
    };
    until(
        Duration::from_secs(60),
        "a healthy, caught-up cluster",
        || {
            let nodes = &nodes;
            async move {
                let mut caught_up = false;
                for node in nodes.iter() {
                    let (status, body) = node.readyz().await?;
                    if status != 200 || body.get("degraded").is_some() {
                        return None;
                    }
                    let p = projection(&body);
                    caught_up |= p.starts_with("caught up")
                        && p.contains(&format!("applied {stream_last} of"));
                }
                caught_up.then_some(())
            }
        },
    )
    .await;

    eprintln!("{:?} healthy and caught up", t0.elapsed());
    // No change lost or emitted twice: every tag of the fixture discovered exactly once.
    let counts = discovered(&cluster, &shared.stream, &shared.subject_prefix).await;
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "discovered more than once: {twice:?}");
    let found: BTreeSet<_> = counts.into_keys().collect();
    assert_eq!(found, expected, "every tag of the fixture, and no other");

    // The catalog equals a clean replay of the stream into a fresh database, by a
    // projector with a durable consumer of its own (the live writer's is left alone).
    let replay_db = TestDb::new();
    let mut common = imagelib_platform::CommonConfig {
        nats_url: cluster.urls(),
        stream: shared.stream.clone(),
        subject_prefix: shared.subject_prefix.clone(),
        stream_replicas: 3,
        stream_max_bytes: imagelib_events::bus::DEFAULT_TEST_MAX_BYTES,
        ..Default::default()
    };
    common.database_url = replay_db.url.clone();
    let bus = imagelib_events::bus::EventBus::connect(
        &common.nats_connect(),
        "cluster-replay",
        common.stream_settings(),
    )
    .await
    .expect("connect the replay");
    let pool = imagelib_platform::db::connect(&replay_db.url, catalog_projector::SCHEMA, 4)
        .await
        .expect("the replay database");
    catalog_projector::startup::migrate(&pool)
        .await
        .expect("migrate the replay");
    let projection = catalog_projector::projection::Projection::with_consumer(
        pool.clone(),
        &format!("catalog-replay-{id}"),
    );
    let projector = catalog_projector::worker::Projector::new(
        bus,
        projection,
        catalog_projector::config::CatalogSettings::default(),
    );
    let status = projector.status.clone();
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let cancel = cancel.clone();
        async move { projector.run(cancel).await }
    });
    until(Duration::from_secs(60), "the replay to catch up", || {
        let status = status.clone();
        async move { (status.applied() >= stream_last).then_some(()) }
    })
    .await;
    cancel.cancel();
    task.await
        .expect("the replay ends")
        .expect("the replay applied every event");
    pool.close().await;

    let live = catalog_rows(&db.url).await;
    let replayed = catalog_rows(&replay_db.url).await;
    assert!(
        live.get("tag_versions")
            .is_some_and(|rows| rows.len() >= expected.len()),
        "the catalog holds the fixture's tags: {:?}",
        live.get("tag_versions").map(Vec::len)
    );
    for (table, rows) in &replayed {
        let mine = live.get(table).cloned().unwrap_or_default();
        assert!(
            &mine == rows,
            "catalog.{table} differs from a clean replay ({} rows live, {} replayed); first live rows: {:?}",
            mine.len(),
            rows.len(),
            mine.iter()
                .take(2)
                .map(|r| tail(r, 400))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        replayed.keys().collect::<Vec<_>>()
    );

    // serving-deployer's view, applied by whichever process held its consumers' locks
    // through the kills, holds the same current tags as the catalog: none skipped.
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let tags = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (uuid::Uuid, String, String, String)>(sql)
                .fetch_all(&pool)
                .await
                .expect("tags")
        }
    };
    let current = tags(
        "SELECT registry_id, repository, tag, digest FROM catalog.tag_versions \
         WHERE valid_to IS NULL ORDER BY 1, 2, 3",
    )
    .await;
    let deployer = "SELECT registry_id, repository, tag, digest FROM serving_deployer.tags \
                    ORDER BY 1, 2, 3";
    let seen = try_until(Duration::from_secs(30), || async {
        let rows = tags(deployer).await;
        (rows == current).then_some(rows)
    })
    .await;
    if seen.is_none() {
        assert_eq!(
            tags(deployer).await,
            current,
            "serving-deployer's tags differ from the catalog's current ones"
        );
    }
    pool.close().await;
}

/// A process whose HTTP port another one took while it was down (the kernel hands a freed
/// port to any outgoing connection as its source port) comes up on a fresh port instead of
/// failing its start three times over.
#[tokio::test]
async fn a_process_whose_port_was_taken_starts_on_another() {
    imagelib_testkit::init_tracing();
    let stream = imagelib_testkit::TestStream::new();
    let db = TestDb::new();
    db.create()
        .await
        .expect("the shared database")
        .close()
        .await;
    let dir = tempfile::tempdir().expect("a directory");
    let shared = Shared {
        database_url: db.url.clone(),
        stream: stream.name.clone(),
        subject_prefix: stream.prefix.clone(),
        replicas: 1,
        master_key_file: dir.path().join("master.key"),
        extra: vec![("IMAGELIB_SCANNER__SCHEDULE".into(), "false".into())],
    };
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_imagelib-node"));
    let mut node = Node::new(&bin, "solo", &stream.nats_url, &shared, dir.path()).expect("a node");
    let taken = node.port;
    let squatter = std::net::TcpListener::bind(("127.0.0.1", taken)).expect("take its port");
    node.start().expect("start");
    let ready = node.wait_ready(Duration::from_secs(60)).await;
    let log = node.log();
    node.kill().expect("kill");
    drop(squatter);
    ready.unwrap_or_else(|e| panic!("not ready on another port: {e:#}\n{}", tail(&log, 2000)));
    assert_ne!(node.port, taken, "it still claims the taken port");
}
