//! The audit trail (`GET /v1/audit`) over a stream of thousands of events from several
//! actors, published straight to the test's stream: filters, keyset pages that stay stable
//! while events arrive, visibility by role and team, no secret in any entry, bad filters as
//! `422` problems, and a replay that gives the same rows.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use catalog_projector::config::CatalogSettings;
use catalog_projector::projection::Projection;
use catalog_projector::rebuild::{RebuildReport, replay_into};
use chrono::{DateTime, Utc};
use common::*;
use futures::StreamExt;
use imagelib_events::event::*;
use imagelib_events::model::*;
use imagelib_events::{
    DeploymentId, Envelope, EventPayload, RegistryId, SubscriptionId, TraceParent,
};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

/// The ciphertext of every sealed field published: it must never come back.
const SEALED: &str = "c2VjcmV0LXBhc3N3b3Jk";

/// What the test knows about each event it published.
#[derive(Debug, Clone)]
struct Known {
    sequence: u64,
    actor: Option<String>,
    event_type: &'static str,
    registry: Option<Uuid>,
    repository: Option<String>,
    time: DateTime<Utc>,
}

/// Publish in order with many acknowledgements in flight (a raw JetStream publish: the
/// envelopes' own traceparents are kept); returns the stream sequences.
async fn publish_fast(env: &Env, events: &[Envelope]) -> Vec<u64> {
    let js = env.bus.jetstream().clone();
    let mut inflight = futures::stream::FuturesOrdered::new();
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let msg = imagelib_events::binding::encode_structured(e);
        let ack = js
            .publish_with_headers(env.bus.subject_of(e), msg.headers, msg.payload)
            .await
            .unwrap();
        inflight.push_back(ack.into_future());
        if inflight.len() >= 512 {
            out.push(inflight.next().await.unwrap().unwrap().sequence);
        }
    }
    while let Some(a) = inflight.next().await {
        out.push(a.unwrap().sequence);
    }
    out
}

fn sealed() -> SealedCredential {
    SealedCredential {
        key_id: "k1".into(),
        algorithm: "AES-256-GCM".into(),
        nonce: "bm9uY2U=".into(),
        ciphertext: SEALED.into(),
    }
}

struct Dataset {
    events: Vec<Envelope>,
    ml: RegistryId,
    db: RegistryId,
    public: RegistryId,
    base: DateTime<Utc>,
}

/// About 3,000 events: three registries (teams `ml`, `db`, and every team), tags found by
/// the scanner, curation by two curators, deployments, syncs requested by people,
/// subscriptions; every event one second after the previous one.
fn dataset() -> Dataset {
    let (ml, db, public) = (RegistryId::new(), RegistryId::new(), RegistryId::new());
    let base = at("2025-03-01T00:00:00Z");
    let mut events: Vec<Envelope> = Vec::new();
    let push = |events: &mut Vec<Envelope>, e: Envelope| {
        let n = events.len() as i64;
        let mut e = e;
        e.time = base + chrono::Duration::seconds(n);
        events.push(e);
    };
    for (id, label, vis) in [
        (ml, "ML", &["ml"][..]),
        (db, "DB", &["db"][..]),
        (public, "Public", &[][..]),
    ] {
        let mut e = registered(id, label, vis);
        if let EventPayload::RegistryRegistered(r) = &mut e.payload {
            r.webhook_secret = Some(sealed());
        }
        push(&mut events, e.with_actor("admin"));
        push(
            &mut events,
            rule(id, "all", "*", "everything", &[]).with_actor("admin"),
        );
    }
    let regs = [ml, db, public];
    let mut deployments = Vec::new();
    for i in 0..2500u64 {
        let g = regs[(i % 3) as usize];
        let repo = format!("team{}/app-{}", i % 3, i % 20);
        let mut e = discovered(
            g,
            &repo,
            &format!("v{i}"),
            i + 1,
            details(ImageKind::Other, None, &["amd64"], 1000),
        );
        if i % 10 == 0 {
            e = e.with_traceparent(Some(TraceParent::new_root()));
        }
        push(&mut events, e);
        if i % 12 == 5 {
            let curator = if i % 24 == 5 { "carol" } else { "frank" };
            let target = CatalogTarget {
                registry_id: g,
                repository: repo.parse().unwrap(),
                tag: Some(format!("v{i}").parse().unwrap()),
            };
            push(
                &mut events,
                envelope(
                    "catalog-projector",
                    CatalogApproved {
                        target: target.clone(),
                        digest: Some(digest(i + 1)),
                        reason: "reviewed".into(),
                    },
                )
                .with_actor(curator),
            );
            push(
                &mut events,
                envelope(
                    "catalog-projector",
                    CatalogLabeled {
                        target,
                        hm_tag: "approved-production".parse().unwrap(),
                    },
                )
                .with_actor(curator),
            );
        }
        if i % 40 == 7 && g != public {
            let d = DeploymentId::new();
            deployments.push(d);
            push(
                &mut events,
                deployment_requested(d, g, &repo, &format!("v{i}"), i + 1),
            );
            push(
                &mut events,
                envelope(
                    "serving-deployer",
                    DeploymentRendered {
                        deployment_id: d,
                        manifests: vec![],
                    },
                )
                .with_actor("dave"),
            );
            push(
                &mut events,
                envelope(
                    "serving-deployer",
                    DeploymentApplied {
                        deployment_id: d,
                        target: DeploymentTarget::Gitops,
                        revision: format!("{i:040x}"),
                    },
                )
                .with_actor("dave"),
            );
        }
        if i % 100 == 50 {
            push(
                &mut events,
                envelope(
                    "registry-registry",
                    SyncRequested {
                        registry_id: g,
                        repository: None,
                        reason: SyncReason::Manual,
                    },
                )
                .with_actor(if g == db { "bob" } else { "alice" }),
            );
        }
        if i % 400 == 399 {
            let s = SubscriptionId::new();
            push(
                &mut events,
                envelope(
                    "registry-registry",
                    SubscriptionCreated {
                        subscription_id: s,
                        url: "https://hooks.example.com/services/T0/B0/pathsecret".into(),
                        types: vec!["io.imagelib.image.*".into()],
                        secret: sealed(),
                        description: "chat".into(),
                    },
                )
                .with_actor("admin"),
            );
            push(
                &mut events,
                envelope(
                    "registry-registry",
                    SubscriptionRemoved { subscription_id: s },
                )
                .with_actor("admin"),
            );
        }
    }
    // An actor PostgreSQL could not store as it is, and an event without one.
    push(
        &mut events,
        envelope(
            "registry-registry",
            SyncRequested {
                registry_id: ml,
                repository: Some("team0/app-0".parse().unwrap()),
                reason: SyncReason::Webhook,
            },
        )
        .with_actor("hook\0er"),
    );
    let mut anonymous = envelope(
        "sync-scanner",
        RegistryValidated {
            registry_id: public,
            auth_scheme: None,
            catalog_access: true,
        },
    );
    anonymous.actor = None;
    push(&mut events, anonymous);
    Dataset {
        events,
        ml,
        db,
        public,
        base,
    }
}

/// What the test expects of each event.
fn known(events: &[Envelope], sequences: &[u64]) -> Vec<Known> {
    let mut deployment_registry: HashMap<Uuid, (Uuid, String)> = HashMap::new();
    let mut out = Vec::new();
    for (e, seq) in events.iter().zip(sequences) {
        let (registry, repository) = match &e.payload {
            EventPayload::RegistryRegistered(x) => (Some(x.registry_id.0), None),
            EventPayload::RegistryValidated(x) => (Some(x.registry_id.0), None),
            EventPayload::RuleSet(x) => (Some(x.registry_id.0), None),
            EventPayload::SyncRequested(x) => (
                Some(x.registry_id.0),
                x.repository.as_ref().map(|r| r.to_string()),
            ),
            EventPayload::TagDiscovered(x) => {
                (Some(x.registry_id.0), Some(x.repository.to_string()))
            }
            EventPayload::CatalogApproved(x) => (
                Some(x.target.registry_id.0),
                Some(x.target.repository.to_string()),
            ),
            EventPayload::CatalogLabeled(x) => (
                Some(x.target.registry_id.0),
                Some(x.target.repository.to_string()),
            ),
            EventPayload::DeploymentRequested(x) => {
                let v = (x.image.registry_id.0, x.image.repository.to_string());
                deployment_registry.insert(x.deployment_id.0, v.clone());
                (Some(v.0), Some(v.1))
            }
            EventPayload::DeploymentRendered(x) => {
                let v = deployment_registry[&x.deployment_id.0].clone();
                (Some(v.0), Some(v.1))
            }
            EventPayload::DeploymentApplied(x) => {
                let v = deployment_registry[&x.deployment_id.0].clone();
                (Some(v.0), Some(v.1))
            }
            EventPayload::SubscriptionCreated(_) | EventPayload::SubscriptionRemoved(_) => {
                (None, None)
            }
            other => panic!("not in the dataset: {other:?}"),
        };
        out.push(Known {
            sequence: *seq,
            actor: e.actor.clone(),
            event_type: e.event_type(),
            registry,
            repository,
            time: e.time,
        });
    }
    out
}

/// The sequences of every entry at `path` (all pages), newest first.
async fn sequences(svc: &Service, token: &str, path: &str) -> Vec<u64> {
    svc.all_pages(Some(token), path)
        .await
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect()
}

/// Which known events a query should return.
type Keep = Box<dyn Fn(&Known) -> bool>;

fn expect(known: &[Known], keep: impl Fn(&Known) -> bool) -> Vec<u64> {
    let mut v: Vec<u64> = known
        .iter()
        .filter(|k| keep(k))
        .map(|k| k.sequence)
        .collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_is_filtered_paged_limited_to_what_the_caller_sees_and_replayable() {
    let env = Env::new().await;
    let data = dataset();
    let seqs = publish_fast(&env, &data.events).await;
    assert!(data.events.len() > 3000, "{}", data.events.len());
    let known = known(&data.events, &seqs);
    let svc = env.start().await;
    env.caught_up().await;

    // Everything, newest first, in pages of 500.
    let all = sequences(&svc, ADMIN, "/v1/audit?limit=500").await;
    assert_eq!(all, expect(&known, |_| true));

    // Filters, alone and together.
    let (ml, db, public) = (data.ml.0, data.db.0, data.public.0);
    let cases: Vec<(String, Keep)> = vec![
        (
            "actor=carol".into(),
            Box::new(|k: &Known| k.actor.as_deref() == Some("carol")),
        ),
        (
            "actor=system:*".into(),
            Box::new(|k: &Known| k.actor.as_deref().is_some_and(|a| a.starts_with("system:"))),
        ),
        (
            "type=catalog.approved".into(),
            Box::new(|k: &Known| k.event_type == CatalogApproved::TYPE),
        ),
        (
            "type=io.imagelib.deployment.rendered.v1".into(),
            Box::new(|k: &Known| k.event_type == DeploymentRendered::TYPE),
        ),
        (
            "type=deployment.*,subscription.*".into(),
            Box::new(|k: &Known| {
                k.event_type.starts_with("io.imagelib.deployment.")
                    || k.event_type.starts_with("io.imagelib.subscription.")
            }),
        ),
        (
            format!("registry={db}"),
            Box::new(move |k: &Known| k.registry == Some(db)),
        ),
        (
            "repository=team0/app-3".into(),
            Box::new(|k: &Known| k.repository.as_deref() == Some("team0/app-3")),
        ),
        (
            format!(
                "from={}&to={}",
                (data.base + chrono::Duration::seconds(1000)).to_rfc3339(),
                (data.base + chrono::Duration::seconds(1500)).to_rfc3339()
            )
            .replace('+', "%2B"),
            Box::new({
                let (f, t) = (
                    data.base + chrono::Duration::seconds(1000),
                    data.base + chrono::Duration::seconds(1500),
                );
                move |k: &Known| k.time >= f && k.time < t
            }),
        ),
        (
            format!("registry={ml}&type=image.*&actor=system:sync-scanner&repository=team0/app-0"),
            Box::new(move |k: &Known| {
                k.registry == Some(ml)
                    && k.actor.as_deref() == Some("system:sync-scanner")
                    && k.event_type.starts_with("io.imagelib.image.")
                    && k.repository.as_deref() == Some("team0/app-0")
            }),
        ),
    ];
    for (query, keep) in &cases {
        let want = expect(&known, keep);
        assert!(!want.is_empty(), "{query} selects nothing");
        let got = sequences(&svc, ADMIN, &format!("/v1/audit?{query}&limit=97")).await;
        assert_eq!(got, want, "{query}");
    }

    // Entries: who, what, when, the trace id, the object and its link; never a secret.
    let page = svc.get("/v1/audit?limit=500").await;
    let text = page.to_string();
    assert!(!text.contains(SEALED), "a sealed credential leaked");
    assert!(
        !text.contains("pathsecret"),
        "a subscription URL path leaked"
    );
    let registered = svc
        .get(&format!("/v1/audit?type=registry.registered&registry={ml}"))
        .await["items"][0]
        .clone();
    assert_eq!(registered["actor"], "admin", "{registered}");
    assert_eq!(registered["type"], "io.imagelib.registry.registered.v1");
    assert_eq!(registered["subject"], format!("registry/{ml}"));
    assert_eq!(registered["link"], format!("/v1/registries/{ml}"));
    assert_eq!(registered["registry"], "ML");
    assert_eq!(registered["time"], "2025-03-01T00:00:00Z");
    assert_eq!(
        registered["summary"],
        "registered \"ML\" (harbor, ml.registry.example:5000), auth basic, visible to ml"
    );
    let traced = data
        .events
        .iter()
        .zip(&seqs)
        .rfind(|(e, _)| e.traceparent.is_some())
        .unwrap();
    let entry = svc
        .all_pages(Some(ADMIN), "/v1/audit?type=image.tag_discovered&limit=500")
        .await
        .into_iter()
        .find(|e| e["sequence"] == *traced.1)
        .unwrap();
    assert_eq!(
        entry["trace_id"],
        traced.0.traceparent.unwrap().trace_id_hex(),
        "{entry}"
    );
    assert_eq!(entry["actor"], "system:sync-scanner");
    assert!(
        entry["link"].as_str().unwrap().starts_with(&format!(
            "/v1/repositories/{}/team",
            entry["registry_id"].as_str().unwrap()
        )),
        "{entry}"
    );
    assert!(entry["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(entry["tag"].as_str().unwrap().starts_with('v'));
    // A deployment event that does not name its image is placed under it.
    let applied = svc.get("/v1/audit?type=deployment.applied&limit=1").await["items"][0].clone();
    assert!(applied["registry_id"].is_string(), "{applied}");
    assert!(applied["repository"].is_string(), "{applied}");
    assert!(
        applied["link"]
            .as_str()
            .unwrap()
            .starts_with("/v1/deployments/"),
        "{applied}"
    );
    assert!(
        applied["summary"]
            .as_str()
            .unwrap()
            .starts_with("applied to gitops at")
    );
    let sub = svc.get("/v1/audit?type=subscription.created&limit=1").await["items"][0].clone();
    assert_eq!(
        sub["summary"],
        "subscription created: https://hooks.example.com for io.imagelib.image.* (chat)"
    );
    assert!(
        sub["link"]
            .as_str()
            .unwrap()
            .starts_with("/v1/subscriptions/")
    );
    assert_eq!(sub["registry_id"], Value::Null);
    // NUL cannot be stored: replaced, and the projector went on.
    let hooked = svc.get("/v1/audit?type=sync.requested&limit=1").await["items"][0].clone();
    assert_eq!(hooked["actor"], "hook\u{fffd}er", "{hooked}");
    let newest = svc.get("/v1/audit?limit=1").await["items"][0].clone();
    assert_eq!(newest["actor"], Value::Null, "{newest}");
    assert_eq!(newest["source"], "/imagelib/sync-scanner");

    // Visibility: curators and admins everything; viewers and deployers their teams'
    // registries and those of every team; nothing about no registry.
    assert_eq!(
        sequences(&svc, CURATOR_ML, "/v1/audit?limit=500").await,
        all
    );
    let ml_view = expect(&known, |k| {
        k.registry == Some(ml) || k.registry == Some(public)
    });
    assert_eq!(
        sequences(&svc, VIEWER_ML, "/v1/audit?limit=500").await,
        ml_view
    );
    assert_eq!(
        sequences(&svc, DEPLOYER, "/v1/audit?limit=500").await,
        ml_view
    );
    assert_eq!(
        sequences(&svc, VIEWER_DB, "/v1/audit?limit=500").await,
        expect(&known, |k| k.registry == Some(db)
            || k.registry == Some(public))
    );
    assert_eq!(
        sequences(&svc, VIEWER_ML, &format!("/v1/audit?registry={db}")).await,
        Vec::<u64>::new()
    );
    let (s, p) = svc.call(Method::GET, "/v1/audit", None, None).await;
    assert_eq!(s, 401, "{p}");

    // Bad filters: 422 problems naming the parameter (an unknown parameter: 400).
    for (query, pointer) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("type=nothing.such", "type"),
        ("type=catalog", "type"),
        ("type=,", "type"),
        ("registry=not-a-uuid", "registry"),
        ("repository=Bad..Name", "repository"),
        ("from=yesterday", "from"),
        ("to=2025-13-01T00:00:00Z", "to"),
        ("from=2025-03-02T00:00:00Z&to=2025-03-01T00:00:00Z", "to"),
        ("actor=", "actor"),
        ("actor=a*b", "actor"),
        ("cursor=garbage", "cursor"),
    ] {
        let res = svc
            .http
            .get(svc.url(&format!("/v1/audit?{query}")))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 422, "{query}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{query}"
        );
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["errors"][0]["pointer"], pointer, "{query}: {p}");
    }
    let other_list = catalog_projector::query::Cursor::Repo {
        n: "x".into(),
        g: Uuid::nil(),
    }
    .encode();
    let (s, p) = svc
        .call(
            Method::GET,
            &format!("/v1/audit?cursor={other_list}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(
        (s, p["errors"][0]["pointer"].as_str()),
        (422, Some("cursor")),
        "{p}"
    );
    let (s, p) = svc
        .call(Method::GET, "/v1/audit?actr=alice", Some(ADMIN), None)
        .await;
    assert_eq!(s, 400, "{p}");

    // Documented.
    let api = svc.get("/openapi.json").await;
    let op = &api["paths"]["/v1/audit"]["get"];
    let params: BTreeSet<&str> = op["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        params,
        BTreeSet::from([
            "actor",
            "type",
            "registry",
            "repository",
            "from",
            "to",
            "limit",
            "cursor"
        ])
    );

    // A replay of the stream writes the same trail, in other batch sizes.
    let clean = imagelib_platform::db::connect(&env.db.url, "audit_replay", 4)
        .await
        .unwrap();
    catalog_projector::startup::migrate(&clean).await.unwrap();
    let mut report = RebuildReport {
        position: 0,
        events: 0,
        skipped: 0,
        old_schema: None,
        elapsed: Duration::ZERO,
        indexes_built_after: Vec::new(),
    };
    let last = env.bus.last_sequence().await.unwrap();
    let settings = CatalogSettings {
        batch_size: 333,
        ..Default::default()
    };
    replay_into(
        &env.bus,
        &Projection::new(clean.clone()),
        &settings,
        last,
        &mut report,
    )
    .await
    .unwrap();
    let trail = |schema: &'static str| {
        let url = env.db.url.clone();
        async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let rows: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT to_jsonb(a)::text FROM {schema}.audit a ORDER BY sequence"
            ))
            .fetch_all(&pool)
            .await
            .unwrap();
            pool.close().await;
            rows
        }
    };
    let live = trail("catalog").await;
    assert_eq!(live.len(), known.len());
    assert_eq!(live, trail("audit_replay").await);
    // A position set back by hand re-applies events whose rows are there: no duplicate
    // key stops the projector, and the trail is unchanged.
    let back = last - 700;
    sqlx::query("UPDATE stream_position SET sequence = $1")
        .bind(back as i64)
        .execute(&clean)
        .await
        .unwrap();
    report.position = back;
    replay_into(
        &env.bus,
        &Projection::new(clean.clone()),
        &settings,
        last,
        &mut report,
    )
    .await
    .unwrap();
    assert_eq!(live, trail("audit_replay").await);
    clean.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_neither_repeat_nor_miss_an_entry_while_events_arrive() {
    let env = Env::new().await;
    let data = dataset();
    let (first, rest) = data.events.split_at(1500);
    let seqs = publish_fast(&env, first).await;
    let svc = env.start().await;
    env.caught_up().await;

    // Appends go on while a reader pages through, 37 entries at a time.
    let writer = {
        let bus = env.bus.clone();
        let rest = rest.to_vec();
        tokio::spawn(async move {
            for e in rest {
                bus.publish(&e).await.unwrap();
            }
        })
    };
    let mut got: Vec<u64> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/audit?limit=37&cursor={c}"),
            None => "/v1/audit?limit=37".to_owned(),
        };
        let page = svc.get(&path).await;
        got.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["sequence"].as_u64().unwrap()),
        );
        pages += 1;
        // Slow enough for the writer to append between pages.
        tokio::time::sleep(Duration::from_millis(20)).await;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    writer.await.unwrap();
    assert!(pages > 30, "{pages}");
    // The first page starts at or after everything published before it; every page after
    // it continues exactly below the previous one.
    let top = got[0];
    assert!(top >= *seqs.last().unwrap());
    let want: Vec<u64> = (1..=top).rev().collect();
    assert_eq!(got, want, "pages repeated or missed entries");
    env.caught_up().await;
    let all = sequences(&svc, ADMIN, "/v1/audit?limit=500").await;
    assert_eq!(all.len(), data.events.len());
    assert!(all[0] > top, "events arrived while paging");
    svc.stop().await;
}
