//! The read model shaped by its queries (issue 17), against a real NATS JetStream and
//! PostgreSQL: every list the API and the console serve is one ordered index range scan of
//! the current tag versions that stops after the page (no sort, no per-row lookup of pulls
//! or mutations), and what the projection keeps on the current version for that equals what
//! the lookups of an `as_of` page find.

mod common;

use catalog_projector::query::{self, Cursor, ImageFilter, Sort};
use catalog_projector::synth::{Generator, Mix};
use chrono::SecondsFormat;
use common::*;
use imagelib_events::RegistryId;
use serde_json::Value;
use sqlx::Row;

fn mix() -> Mix {
    Mix {
        registries: 2,
        repositories: 40,
        events: 3000,
        trust_pct: 15,
        integrity_pct: 15,
        ..Default::default()
    }
}

#[tokio::test]
async fn pulls_and_mutations_kept_on_the_row_equal_their_lookups() {
    let env = Env::new().await;
    env.publish(Generator::new(mix())).await;
    let svc = env.start().await;
    env.caught_up().await;

    let key = |i: &Value| {
        format!(
            "{}/{}:{}",
            i["registry_id"].as_str().unwrap(),
            i["repository"].as_str().unwrap(),
            i["tag"].as_str().unwrap()
        )
    };
    let fields = |i: &Value| {
        (
            i["pulls"].clone(),
            i["last_pulled_at"].clone(),
            i["digest_pulls"].clone(),
            i["digest_last_pulled_at"].clone(),
            i["mutated"].clone(),
        )
    };
    let mut current = svc.all_pages(Some(ADMIN), "/v1/images?limit=500").await;
    let now = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut looked_up = svc
        .all_pages(Some(ADMIN), &format!("/v1/images?limit=500&as_of={now}"))
        .await;
    current.sort_by_key(key);
    looked_up.sort_by_key(key);
    assert_eq!(current.len(), looked_up.len());
    assert!(current.len() > 500, "{} tags", current.len());
    let pulled = current
        .iter()
        .filter(|i| i["pulls"].as_i64().unwrap() > 0)
        .count();
    let by_digest = current
        .iter()
        .filter(|i| i["digest_pulls"].as_i64().unwrap() > 0)
        .count();
    let marked = current.iter().filter(|i| !i["mutated"].is_null()).count();
    assert!(
        pulled > 10 && by_digest > 10 && marked > 10,
        "pulled {pulled}, by digest {by_digest}, mutated {marked}"
    );
    for (c, l) in current.iter().zip(&looked_up) {
        assert_eq!(key(c), key(l));
        assert_eq!(fields(c), fields(l), "{}", key(c));
    }
    svc.stop().await;
}

/// Every node of a JSON plan.
fn nodes<'a>(plan: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(plan);
    if let Some(children) = plan["Plans"].as_array() {
        for c in children {
            nodes(c, out);
        }
    }
}

/// The plan of `sql` when the planner may not fall back on reading a table whole (which it
/// prefers for tables this small): whether an index gives the page in its order.
async fn explain_without_scans_of_everything(pool: &sqlx::PgPool, sql: &query::Sql) -> Value {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SET LOCAL enable_bitmapscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Value = sqlx::query_scalar::<_, sqlx::types::Json<Value>>(&format!(
        "EXPLAIN (FORMAT JSON) {}",
        sql.literal()
    ))
    .fetch_one(&mut *tx)
    .await
    .unwrap()
    .0;
    tx.rollback().await.unwrap();
    plan
}

#[tokio::test]
async fn every_list_is_one_ordered_index_range_scan_that_stops_after_the_page() {
    let env = Env::new().await;
    let generator = Generator::new(mix());
    let registry = generator.registry_ids[0].0;
    env.publish(generator).await;
    let svc = env.start().await;
    env.caught_up().await;
    svc.stop().await;
    let pool = env.catalog_pool().await;
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    let repo_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM repositories WHERE tag_count > 0 LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();

    let anon = ImageFilter {
        teams: Some(vec![]),
        fetch: 51,
        ..Default::default()
    };
    let after = Some(Cursor::Name {
        r: "postgres/cnpg".into(),
        t: String::new(),
        g: uuid::Uuid::nil(),
    });
    // A search page is two statements: the next matching names (planned with its words,
    // checked below), then the page from their ranges.
    let words = query::tsquery("cnpg").unwrap();
    let names: Vec<String> = query::search_names(&words, None, 51)
        .query()
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(names.len() > 1, "cnpg matches several repositories");
    let search = ImageFilter {
        q: Some(words.clone()),
        ..anon.clone()
    };
    let search_next = ImageFilter {
        after: Some(Cursor::Name {
            r: names[1].clone(),
            t: "1".into(),
            g: uuid::Uuid::nil(),
        }),
        ..search.clone()
    };
    let lists: Vec<(&str, query::Sql, &[&str])> = vec![
        ("default", query::images(&anon), &["tag_versions_name"]),
        (
            "default, next page",
            query::images(&ImageFilter {
                after: after.clone(),
                ..anon.clone()
            }),
            &["tag_versions_name"],
        ),
        (
            "repository",
            query::images(&ImageFilter {
                repository: Some("postgres/cnpg-00003".into()),
                ..anon.clone()
            }),
            &["tag_versions_name", "tag_versions_current"],
        ),
        (
            "repository and kind",
            query::images(&ImageFilter {
                repository: Some("postgres/cnpg-00003".into()),
                kind: Some("database".into()),
                ..anon.clone()
            }),
            &["tag_versions_name", "tag_versions_kind"],
        ),
        (
            "kind (the Model Library)",
            query::images(&ImageFilter {
                kind: Some("model".into()),
                after: after.clone(),
                ..anon.clone()
            }),
            &["tag_versions_kind"],
        ),
        (
            "registry",
            query::images(&ImageFilter {
                registry: Some(registry),
                after: after.clone(),
                ..anon.clone()
            }),
            &["tag_versions_name"],
        ),
        (
            "signed",
            query::images(&ImageFilter {
                signed: Some(true),
                ..anon.clone()
            }),
            &["tag_versions_signed"],
        ),
        (
            "max_severity=high",
            query::images(&ImageFilter {
                max_severity: Some(3),
                ..anon.clone()
            }),
            &["tag_versions_severity_le3"],
        ),
        (
            "max_severity=none",
            query::images(&ImageFilter {
                max_severity: Some(0),
                ..anon.clone()
            }),
            &["tag_versions_severity_le0"],
        ),
        (
            "max_severity=critical",
            query::images(&ImageFilter {
                max_severity: Some(4),
                ..anon.clone()
            }),
            &["tag_versions_severity"],
        ),
        (
            "has_sbom",
            query::images(&ImageFilter {
                has_sbom: Some(true),
                ..anon.clone()
            }),
            &["tag_versions_sbom"],
        ),
        (
            "policy",
            query::images(&ImageFilter {
                policy: Some("pass".into()),
                ..anon.clone()
            }),
            &["tag_versions_policy"],
        ),
        (
            "mutated",
            query::images(&ImageFilter {
                mutated: Some(true),
                ..anon.clone()
            }),
            &["tag_versions_mutated"],
        ),
        (
            "search",
            query::images_named(&search, &names),
            &["tag_versions_name"],
        ),
        (
            "search by word",
            query::images_by_word(&search, "cnpg", query::Shape::Full),
            &["tag_versions_name"],
        ),
        (
            "search by word, next page",
            query::images_by_word(&search_next, "cnpg", query::Shape::Full),
            &["tag_versions_name"],
        ),
        (
            "search, next page",
            query::images_named(&search_next, &names[1..]),
            &["tag_versions_name"],
        ),
        (
            "most recently changed",
            query::images(&ImageFilter {
                sort: Sort::Updated,
                ..anon.clone()
            }),
            &["tag_versions_updated"],
        ),
        (
            "a repository's tags",
            query::repository_tags(repo_id),
            &["tag_versions_current"],
        ),
    ];
    // The names of a search are read in order from the name index, at most a budget of
    // them (a rarer word then goes to the search index and sorts its few matches).
    let plan = explain_without_scans_of_everything(
        &pool,
        &query::search_scan(&words, Some(("postgres/cnpg", true)), 408),
    )
    .await;
    let root = &plan[0]["Plan"];
    let mut all = Vec::new();
    nodes(root, &mut all);
    assert_eq!(root["Node Type"], "Limit", "search names: {plan:#}");
    assert!(
        !all.iter().any(|n| n["Node Type"]
            .as_str()
            .is_some_and(|t| t.contains("Sort") || t.contains("Aggregate"))),
        "search names sort or aggregate: {plan:#}"
    );
    assert!(
        all.iter().any(|n| n["Index Name"] == "repositories_name"),
        "search names: {plan:#}"
    );
    // By word: the term's words by one probe each, then each word's names from the
    // cursor on, a range of `search_words`' key; nothing else is read.
    let plan = explain_without_scans_of_everything(
        &pool,
        &catalog_projector::search::search_words(
            &words,
            "cnpg",
            false,
            Some(("postgres/cnpg", true)),
            51,
        ),
    )
    .await;
    let mut all = Vec::new();
    nodes(&plan[0]["Plan"], &mut all);
    let scans: Vec<_> = all
        .iter()
        .filter(|n| n["Relation Name"].is_string())
        .map(|n| {
            (
                n["Node Type"].as_str().unwrap(),
                n["Index Name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(!scans.is_empty(), "{plan:#}");
    assert!(
        scans
            .iter()
            .all(|s| s.0.starts_with("Index") && s.1 == "search_words_pkey"),
        "by word: {scans:?} {plan:#}"
    );
    // A page not kept reads its rows' stamps by the same plan first (`api::rows`).
    let stamped = |f: &ImageFilter, names: Option<query::Names<'_>>| {
        query::images_shaped(f, names, query::Shape::Stamps)
    };
    let mut stamps: Vec<(String, query::Sql, &[&str])> = lists
        .iter()
        .filter(|(what, sql, _)| {
            *what != "a repository's tags" && sql.text.contains(query::IMAGE_COLUMNS)
        })
        .map(|(what, sql, indexes)| {
            let text = sql.text.replace(query::IMAGE_COLUMNS, query::STAMP_COLUMNS);
            (
                format!("{what} (stamps)"),
                query::Sql {
                    text,
                    binds: sql.binds.clone(),
                },
                *indexes,
            )
        })
        .collect();
    // A search's, as `api::images` asks for them.
    stamps.extend(
        [
            (
                "search",
                stamped(&search, Some(query::Names::Given(&names))),
            ),
            (
                "search by word",
                query::images_by_word(&search, "cnpg", query::Shape::Stamps),
            ),
            (
                "search by word, next page",
                query::images_by_word(&search_next, "cnpg", query::Shape::Stamps),
            ),
            (
                "search, next page",
                stamped(&search_next, Some(query::Names::Given(&names[1..]))),
            ),
        ]
        .into_iter()
        .map(|(what, sql)| {
            assert!(sql.text.contains(query::NAMED_STAMP_COLUMNS), "{what}");
            (
                format!("{what} (stamps)"),
                sql,
                ["tag_versions_name"].as_slice(),
            )
        }),
    );
    assert_eq!(stamps.len(), lists.len() - 1);
    let lists = lists
        .into_iter()
        .map(|(what, sql, indexes)| (what.to_owned(), sql, indexes))
        .chain(stamps);
    for (what, sql, indexes) in lists {
        let what = what.as_str();
        let plan = explain_without_scans_of_everything(&pool, &sql).await;
        let root = &plan[0]["Plan"];
        let mut all = Vec::new();
        nodes(root, &mut all);
        if what != "a repository's tags" {
            assert_eq!(root["Node Type"], "Limit", "{what}: {plan:#}");
        }
        // A search reads each matching name's range in order, one name after the other:
        // nothing sorts or aggregates a tag, only the names.
        let merged = |n: &Value| {
            let mut below = Vec::new();
            nodes(n, &mut below);
            what.starts_with("search")
                && (
                    // The page's names, given, put in order.
                    n["Node Type"] == "Sort"
                        && n["Plans"][0]["Node Type"] == "Function Scan"
                        && n["Plans"][0]["Function Name"] == "unnest"
                    // The names found by word in the same statement, merged and put in
                    // order, and each name's matching repositories: never a tag.
                    || !below.iter().any(|b| b["Relation Name"] == "tag_versions")
                )
        };
        assert!(
            !all.iter().any(|n| !merged(n)
                && n["Node Type"]
                    .as_str()
                    .is_some_and(|t| { t.contains("Sort") || t.contains("Aggregate") })),
            "{what} sorts or aggregates: {plan:#}"
        );
        let scans: Vec<&&Value> = all
            .iter()
            .filter(|n| n["Relation Name"] == "tag_versions")
            .collect();
        assert_eq!(scans.len(), 1, "{what}: {plan:#}");
        assert!(
            scans[0]["Node Type"]
                .as_str()
                .is_some_and(|t| t.starts_with("Index")),
            "{what}: {plan:#}"
        );
        let index = scans[0]["Index Name"].as_str().unwrap_or_default();
        assert!(
            indexes.contains(&index),
            "{what} reads {index}, not one of {indexes:?}: {plan:#}"
        );
        assert!(
            !all.iter()
                .any(|n| n["Relation Name"] == "pulls" || n["Relation Name"] == "tag_mutations"),
            "{what} looks up pulls or mutations per row: {plan:#}"
        );
        if what.starts_with("search") {
            // The page is the names' rows one name after the other, cut at the page: no
            // sort between the rows and the limit.
            let below = root["Plans"]
                .as_array()
                .and_then(|p| p.iter().find(|n| n["Parent Relationship"] == "Outer"));
            assert!(
                below.is_some_and(|n| n["Node Type"] == "Nested Loop"),
                "{what}: {plan:#}"
            );
            // A name's repositories are checked against the search once each (not probed
            // again for each tag), and its rows read from its own range of the name index,
            // after the cursor, those of its matching repositories only.
            let repositories: Vec<&&Value> = all
                .iter()
                .filter(|n| n["Relation Name"] == "repositories")
                .collect();
            assert_eq!(repositories.len(), 1, "{what}: {plan:#}");
            assert!(
                repositories[0]["Filter"]
                    .as_str()
                    .is_some_and(|c| c.contains("@@")),
                "{what}: {plan:#}"
            );
            let cond = scans[0]["Index Cond"].as_str().unwrap_or_default();
            assert!(cond.contains("repository = u.name"), "{what}: {plan:#}");
            assert!(
                cond.contains("ROW(tag, registry_id) > ROW("),
                "{what}: {plan:#}"
            );
            assert!(
                scans[0]["Filter"]
                    .as_str()
                    .is_some_and(|f| f.contains("repo_id = ANY")),
                "{what}: {plan:#}"
            );
        }
    }
    // Then the rows it does not keep, by tuple id.
    let sql = query::image_rows_at(&["(0,1)".to_owned(), "(7,3)".to_owned()]);
    let plan = explain_without_scans_of_everything(&pool, &sql).await;
    let mut all = Vec::new();
    nodes(&plan[0]["Plan"], &mut all);
    let scans: Vec<&&Value> = all
        .iter()
        .filter(|n| n["Relation Name"] == "tag_versions")
        .collect();
    assert_eq!(scans.len(), 1, "{plan:#}");
    assert_eq!(scans[0]["Node Type"], "Tid Scan", "{plan:#}");
}

#[tokio::test]
async fn search_pages_read_name_by_name_and_hold_every_match_once_in_order() {
    let env = Env::new().await;
    // More repositories than a search scan reads (`query::search_budget`), so that a rare
    // word's names come from the search index after it.
    env.publish(Generator::new(Mix {
        repositories: 600,
        events: 6000,
        ..mix()
    }))
    .await;
    // One name in three registries, their tags interleaved (a page of a name merges its
    // registries' rows by tag, then registry), the second seen by the `ml` team only, and
    // the name's first repository alone described as `kestrel` (a name matching in one
    // registry only).
    let shared: Vec<RegistryId> = (1..=3)
        .map(|i| RegistryId(uuid::Uuid::from_u128(0x5eed_0000 + i)))
        .collect();
    let mut events = vec![
        registered(shared[0], "Shared A", &[]),
        registered(shared[1], "Shared B", &["ml"]),
        registered(shared[2], "Shared C", &[]),
    ];
    for (k, registry) in shared.iter().enumerate() {
        for tag in 1..=9u64 {
            if k == 2 && tag % 2 == 0 {
                continue;
            }
            let mut d = database();
            if k == 0 {
                d.annotations.insert(
                    "org.opencontainers.image.description".into(),
                    "kestrel".into(),
                );
            }
            let name = "team/shared-db";
            events.push(discovered(
                *registry,
                name,
                &format!("v{tag}"),
                900 + tag,
                d,
            ));
        }
    }
    env.publish(events).await;
    let svc = env.start().await;
    env.caught_up().await;

    let key = |i: &Value| {
        (
            i["repository"].as_str().unwrap().to_owned(),
            i["tag"].as_str().unwrap().to_owned(),
            i["registry_id"].as_str().unwrap().to_owned(),
        )
    };
    // With another filter, the first names a page reads may hold none of its rows: the
    // page reads the names after them, in larger rounds, until it is full or none is left.
    // Read by word (`cnpg`, `model`, `mod`: one word each; several terms checked against
    // the whole search), by name (`0` stands for hundreds of words) and by the search index
    // (a term with other characters), each with other filters.
    let searches = [
        "cnpg",
        "model",
        "mod",
        "nim",
        "postgres",
        "00003",
        "0",
        "cnpg%2000",
        "postgres%20cnpg%20001",
        "nvidia%20nim%200002",
        "%C3%BCber",
        "model&kind=database",
        "cnpg&signed=true",
        "00003&kind=model",
        "postgres%2000&kind=database",
        "shared",
        "kestrel",
        "shared&kind=database",
    ]
    .map(String::from);
    for q in searches {
        // Small pages, so that pages start and end inside a name's range and across names.
        let paged: Vec<_> = svc
            .all_pages(Some(ADMIN), &format!("/v1/images?q={q}&limit=7"))
            .await
            .iter()
            .map(key)
            .collect();
        // The same matches by another plan (`sort=updated` keeps the list of names).
        let mut other: Vec<_> = svc
            .all_pages(
                Some(ADMIN),
                &format!("/v1/images?q={q}&sort=updated&limit=500"),
            )
            .await
            .iter()
            .map(key)
            .collect();
        other.sort();
        if !q.contains('&') && !q.starts_with("%C3") {
            assert!(!other.is_empty(), "{q} matches something");
        }
        assert_eq!(paged, other, "q={q}: every match once, in name order");
    }
    // The shared name: each registry's rows that match and that the caller sees, merged by
    // tag then registry, pages of two cutting across registries.
    let ids: Vec<String> = shared.iter().map(|g| g.0.to_string()).collect();
    let rows = |registries: &[usize], tags: &[u64]| {
        let mut want = Vec::new();
        for tag in tags {
            for &k in registries {
                if !(k == 2 && tag % 2 == 0) {
                    want.push((
                        "team/shared-db".to_owned(),
                        format!("v{tag}"),
                        ids[k].clone(),
                    ));
                }
            }
        }
        want.sort();
        want
    };
    let all: Vec<u64> = (1..=9).collect();
    for (token, q, want) in [
        (ADMIN, "shared", rows(&[0, 1, 2], &all)),
        (VIEWER_DB, "shared", rows(&[0, 2], &all)),
        (ADMIN, "kestrel", rows(&[0], &all)),
        (VIEWER_DB, "shared%20db", rows(&[0, 2], &all)),
    ] {
        let paged: Vec<_> = svc
            .all_pages(Some(token), &format!("/v1/images?q={q}&limit=2"))
            .await
            .iter()
            .map(key)
            .collect();
        assert_eq!(paged, want, "q={q} as {token}");
    }
    // Which way each found its names: a word's range, the names in order, the search index.
    let pool = env.catalog_pool().await;
    let mut ways = Vec::new();
    for q in ["cnpg", "cnpg 00", "postgres 00003", "0", "über"] {
        let mut ran = Vec::new();
        let names = catalog_projector::search::next_names(
            &pool,
            &query::tsquery(q).unwrap(),
            None,
            51,
            Some(&mut ran),
        )
        .await
        .unwrap();
        match q {
            "über" => assert!(names.is_empty()),
            // Each name read for the longest term is checked against the others.
            "postgres 00003" => assert_eq!(names, ["postgres/cnpg-00003"]),
            _ => assert_eq!(names.len(), 51, "{q}"),
        }
        let way: Vec<&str> = ran
            .iter()
            .map(|s| {
                if s.text.contains("search_words") {
                    "word"
                } else if s.text.contains("ORDER BY s.name LIMIT")
                    && s.text.contains(", s.search @@")
                {
                    "name"
                } else {
                    "index"
                }
            })
            .collect();
        ways.push((q, way));
    }
    assert_eq!(
        ways,
        vec![
            ("cnpg", vec!["word"]),
            ("cnpg 00", vec!["word"]),
            ("postgres 00003", vec!["word"]),
            // `0` begins hundreds of words: the names in order find it at once.
            ("0", vec!["word", "name"]),
            ("über", vec!["name", "index"]),
        ]
    );
    // A page of one term finds its names in the statement that reads it, and holds what
    // the names found beforehand give (from the start, and from inside a name's range).
    let words = query::tsquery("cnpg").unwrap();
    for after in [
        None,
        Some(Cursor::Name {
            r: "postgres/cnpg-00003".into(),
            t: "1".into(),
            g: uuid::Uuid::nil(),
        }),
    ] {
        let f = ImageFilter {
            q: Some(words.clone()),
            after: after.clone(),
            fetch: 8,
            ..Default::default()
        };
        let keys = |rows: Vec<sqlx::postgres::PgRow>| -> Vec<(String, String, uuid::Uuid)> {
            rows.iter()
                .map(|r| (r.get("c2"), r.get("c3"), r.get("c0")))
                .collect()
        };
        let one = keys(
            query::images_by_word(&f, "cnpg", query::Shape::Full)
                .query()
                .fetch_all(&pool)
                .await
                .unwrap(),
        );
        let from = match &after {
            Some(Cursor::Name { r, .. }) => Some((r.as_str(), true)),
            _ => None,
        };
        let names = catalog_projector::search::next_names(&pool, &words, from, 8, None)
            .await
            .unwrap();
        let two = keys(
            query::images_named(&f, &names)
                .query()
                .fetch_all(&pool)
                .await
                .unwrap(),
        );
        assert_eq!(one.len(), 8, "{after:?}");
        assert_eq!(one, two, "{after:?}");
    }
    // A word that matches no repository: an empty page, not an error.
    let none: Vec<Value> = svc
        .all_pages(Some(ADMIN), "/v1/images?q=no-such-word&limit=7")
        .await;
    assert!(none.is_empty());
    svc.stop().await;
}

/// The words of every repository's search vector, as migration `0012` defines them.
async fn words_from_search_vectors(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT DISTINCT substring(l FROM '^[a-z0-9]+'), r.name
         FROM repositories r, unnest(tsvector_to_array(r.search)) AS l
         WHERE l ~ '^[a-z0-9]' ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn search_words(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as("SELECT word, name FROM search_words ORDER BY 1, 2")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn search_words_follow_every_change_of_a_repositorys_search_vector() {
    use imagelib_events::RegistryId;
    let env = Env::new().await;
    let (a, b) = (RegistryId::new(), RegistryId::new());
    let described = |text: &str| {
        let mut d = database();
        d.annotations.insert(
            catalog_projector::projection::images::DESCRIPTION_KEY.into(),
            text.into(),
        );
        d
    };
    env.publish([
        registered(a, "A", &[]),
        registered(b, "B", &[]),
        discovered(a, "team/ledger-db", "1", 1, described("Quantum ledger")),
        // The same name in another registry, with words of its own.
        discovered(b, "team/ledger-db", "1", 2, described("Nebula archive")),
    ])
    .await;
    let svc = env.start().await;
    env.caught_up().await;
    let pool = env.catalog_pool().await;
    let repos = |path: &'static str| {
        let svc = &svc;
        async move {
            let mut by_name: Vec<(String, String)> = svc
                .all_pages(Some(ADMIN), path)
                .await
                .iter()
                .map(|i| {
                    (
                        i["repository"].as_str().unwrap().to_owned(),
                        i["registry"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            by_name.dedup();
            by_name
        }
    };
    let ledger = |label: &str| vec![("team/ledger-db".to_owned(), label.to_owned())];
    assert_eq!(
        search_words(&pool).await,
        words_from_search_vectors(&pool).await
    );
    assert_eq!(repos("/v1/images?q=quantum").await, ledger("A"));
    assert_eq!(repos("/v1/images?q=nebula%20ledger").await, ledger("B"));

    // A new OCI description replaces the words of registry A's repository only.
    env.publish([moved(
        a,
        "team/ledger-db",
        "1",
        1,
        3,
        described("Photon store"),
    )])
    .await;
    env.caught_up().await;
    assert_eq!(
        search_words(&pool).await,
        words_from_search_vectors(&pool).await
    );
    assert_eq!(repos("/v1/images?q=photon").await, ledger("A"));
    assert!(repos("/v1/images?q=quantum").await.is_empty());
    assert_eq!(repos("/v1/images?q=nebula").await, ledger("B"));

    // A rule's description wins over the OCI description.
    env.publish([rule(a, "ledgers", "team/*", "Zephyr inference", &[])])
        .await;
    env.caught_up().await;
    assert_eq!(
        search_words(&pool).await,
        words_from_search_vectors(&pool).await
    );
    assert_eq!(repos("/v1/images?q=zephyr").await, ledger("A"));
    assert_eq!(repos("/v1/images?q=zeph%20infer").await, ledger("A"));
    assert!(repos("/v1/images?q=photon").await.is_empty());
    assert!(
        search_words(&pool)
            .await
            .contains(&("zephyr".to_owned(), "team/ledger-db".to_owned()))
    );
    svc.stop().await;
}
