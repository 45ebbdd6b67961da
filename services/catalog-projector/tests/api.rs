//! The HTTP API: team visibility, curator commands, filters, sorting, pagination and bad
//! parameters.

mod common;

use common::*;
use imagelib_events::RegistryId;
use imagelib_events::model::{ImageKind, ModelType};
use reqwest::Method;
use serde_json::{Value, json};

/// Three registries: one for everyone, one for team `ml`, one for team `db`.
async fn three_teams(env: &Env) -> (RegistryId, RegistryId, RegistryId) {
    let (public, ml, db) = (RegistryId::new(), RegistryId::new(), RegistryId::new());
    env.publish([
        registered(public, "Docker Hub", &[]),
        registered(ml, "NGC", &["ml"]),
        registered(db, "DBA Harbor", &["db", "ops"]),
        discovered(
            public,
            "library/nginx",
            "1.27",
            1,
            details(ImageKind::Other, None, &["amd64", "arm64"], 70_000_000),
        ),
        discovered(
            ml,
            "nvidia/nim/llama",
            "1.0",
            2,
            model(ModelType::TextCompletion),
        ),
        discovered(
            ml,
            "nvidia/nim/embed",
            "1.0",
            3,
            model(ModelType::TextEmbedding),
        ),
        discovered(db, "postgresql", "16", 4, database()),
        discovered(db, "postgresql", "17", 5, database()),
    ])
    .await;
    (public, ml, db)
}

fn repos_of(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["repository"]
                .as_str()
                .or(i["name"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_viewer_sees_only_registries_of_its_teams_even_in_counters() {
    let env = Env::new().await;
    let (public, ml, db) = three_teams(&env).await;
    // `None` below is an anonymous reader, which exists only with anonymous reads on.
    let mut config = env.config();
    config.common.anonymous_read = true;
    let svc = env.start_with(config).await;
    env.caught_up().await;

    // Lists.
    let images = |t: Option<&'static str>| {
        let svc = &svc;
        async move { repos_of(&svc.get_as(t, "/v1/images").await) }
    };
    assert_eq!(images(None).await, ["library/nginx"]);
    assert_eq!(
        images(Some(VIEWER_ML)).await,
        ["library/nginx", "nvidia/nim/embed", "nvidia/nim/llama"]
    );
    assert_eq!(
        images(Some(VIEWER_DB)).await,
        ["library/nginx", "postgresql", "postgresql"]
    );
    assert_eq!(images(Some(ADMIN)).await.len(), 5);
    assert_eq!(
        repos_of(&svc.get_as(Some(VIEWER_DB), "/v1/models").await),
        Vec::<String>::new()
    );
    assert_eq!(
        repos_of(&svc.get_as(Some(VIEWER_ML), "/v1/models").await).len(),
        2
    );
    assert_eq!(
        repos_of(&svc.get_as(Some(VIEWER_DB), "/v1/repositories").await),
        ["library/nginx", "postgresql"]
    );
    // Filtering by an invisible registry finds nothing rather than leaking it.
    assert_eq!(
        svc.get_as(Some(VIEWER_DB), &format!("/v1/images?registry={ml}"))
            .await["items"],
        json!([])
    );
    let registries = svc.get_as(Some(VIEWER_ML), "/v1/registries").await;
    let labels: Vec<&str> = registries["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Docker Hub", "NGC"]);

    // Details: not visible is not found.
    for (token, status) in [
        (Some(VIEWER_ML), 404),
        (Some(VIEWER_DB), 200),
        (None, 404),
        (Some(ADMIN), 200),
    ] {
        let (s, _) = svc
            .call(
                Method::GET,
                &format!("/v1/repositories/{db}/postgresql"),
                token,
                None,
            )
            .await;
        assert_eq!(s, status, "{token:?}");
        let (s, _) = svc
            .call(Method::GET, &format!("/v1/registries/{db}"), token, None)
            .await;
        assert_eq!(s, status, "{token:?}");
    }
    let (s, _) = svc
        .call(
            Method::GET,
            &format!("/v1/repositories/{public}/library/nginx"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);

    // Counters.
    let stats = |t: Option<&'static str>| {
        let svc = &svc;
        async move { svc.get_as(t, "/v1/stats").await }
    };
    assert_eq!(
        stats(None).await,
        json!({"tags": 1, "database_images": 0, "model_images": 0, "other_images": 1,
               "repositories": 1, "database_repositories": 0, "model_repositories": 0, "registries": 1,
               "signed": 0, "unsigned": 1, "with_sbom": 0,
               "by_max_severity": {"critical": 0, "high": 0, "medium": 0, "low": 0, "none": 0},
               "policy": {"pass": 0, "fail": 0, "audit": 0}, "mutated_tags": 0})
    );
    let s = stats(Some(VIEWER_ML)).await;
    assert_eq!(
        (
            s["tags"].as_i64(),
            s["model_images"].as_i64(),
            s["database_images"].as_i64()
        ),
        (Some(3), Some(2), Some(0))
    );
    assert_eq!(s["registries"], 2);
    let s = stats(Some(VIEWER_DB)).await;
    assert_eq!(
        (
            s["tags"].as_i64(),
            s["model_images"].as_i64(),
            s["database_images"].as_i64()
        ),
        (Some(3), Some(0), Some(2))
    );
    let s = stats(Some(ADMIN)).await;
    assert_eq!(
        (s["tags"].as_i64(), s["registries"].as_i64()),
        (Some(5), Some(3))
    );

    // Search results too.
    assert_eq!(
        repos_of(&svc.get_as(Some(VIEWER_DB), "/v1/images?q=llama").await),
        Vec::<String>::new()
    );
    assert_eq!(
        repos_of(&svc.get_as(Some(VIEWER_ML), "/v1/images?q=llama").await),
        ["nvidia/nim/llama"]
    );

    // Visibility changes apply to what is already projected.
    let report_pulls = |registry: &Value| registry["report_pulls"].clone();
    assert_eq!(
        report_pulls(&svc.get(&format!("/v1/registries/{ml}")).await),
        false,
        "pulls are opt-in"
    );
    env.publish([envelope(
        "registry-registry",
        imagelib_events::event::RegistryUpdated {
            report_pulls: Some(true),
            registry_id: ml,
            label: None,
            url: None,
            insecure: None,
            visibility: Some(vec![]),
            ca_pem: None,
            scan_interval_secs: None,
            repositories: None,
            auth_hosts: None,
            registry_type: None,
            auth_kind: None,
            credential: None,
            proxy_url: None,
            no_proxy: None,
            artifact_registry: None,
        },
    )])
    .await;
    env.caught_up().await;
    assert_eq!(images(None).await.len(), 3);
    assert_eq!(
        report_pulls(&svc.get(&format!("/v1/registries/{ml}")).await),
        true,
        "the registry now reports pulls"
    );
    svc.stop().await;
}

#[tokio::test]
async fn curators_label_describe_approve_and_reject_and_everyone_reads_it_back() {
    let env = Env::new().await;
    let (_public, ml, db) = three_teams(&env).await;
    let svc = env.start().await;
    env.caught_up().await;
    let repo = format!("/v1/repositories/{ml}/nvidia/nim/llama");

    // Roles.
    let put_label = format!("{repo}/hm-tags/approved-production");
    assert_eq!(svc.call(Method::PUT, &put_label, None, None).await.0, 401);
    assert_eq!(
        svc.call(Method::PUT, &put_label, Some(VIEWER_ML), None)
            .await
            .0,
        403
    );
    assert_eq!(
        svc.call(Method::PUT, &put_label, Some(DEPLOYER), None)
            .await
            .0,
        403
    );
    let (s, body) = svc
        .call(Method::PUT, &put_label, Some(CURATOR_ML), None)
        .await;
    assert_eq!(s, 200, "{body}");
    // Read-your-writes: the answer already shows it.
    assert_eq!(body["curator_hm_tags"], json!(["approved-production"]));
    assert_eq!(body["hm_tags"], json!(["approved-production"]));
    let (s, _) = svc
        .call(
            Method::PUT,
            &format!("{repo}/hm-tags/gpu?tag=1.0"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200);

    // Validated against the projection and the contract.
    let (s, p) = svc
        .call(
            Method::PUT,
            &format!("{repo}/hm-tags/Not%20Valid"),
            Some(CURATOR_ML),
            None,
        )
        .await;
    assert_eq!((s, p["code"].as_str()), (422, Some("validation")), "{p}");
    let (s, _) = svc
        .call(
            Method::PUT,
            &format!("/v1/repositories/{ml}/nvidia/nim/nope/hm-tags/x"),
            Some(CURATOR_ML),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = svc
        .call(
            Method::PUT,
            &format!("{repo}/hm-tags/x?tag=9.9"),
            Some(CURATOR_ML),
            None,
        )
        .await;
    assert_eq!(s, 404, "unknown tag");
    // A curator of team ml cannot curate what team db owns (it does not see it).
    let (s, _) = svc
        .call(
            Method::PUT,
            &format!("/v1/repositories/{db}/postgresql/hm-tags/x"),
            Some(CURATOR_ML),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // README.
    let (s, body) = svc
        .call(
            Method::PUT,
            &format!("{repo}/readme"),
            Some(CURATOR_ML),
            Some(json!({"readme": "# Llama\nUse it."})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["readme"]["readme"], "# Llama\nUse it.");
    assert_eq!(body["readme"]["updated_by"], "carol");
    let (s, _) = svc
        .call(
            Method::PUT,
            &format!("{repo}/readme"),
            Some(CURATOR_ML),
            Some(json!({"text": "x"})),
        )
        .await;
    assert_eq!(s, 422);
    let res = svc
        .http
        .put(svc.url(&format!("{repo}/readme")))
        .bearer_auth(CURATOR_ML)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // Approve the tag: it pins the digest.
    let (s, body) = svc
        .call(
            Method::POST,
            &format!("{repo}/approve"),
            Some(CURATOR_ML),
            Some(json!({"tag": "1.0", "reason": "benchmarked"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["tags"][0]["approval"], "approved");
    assert_eq!(
        body["tags"][0]["tag_approval"]["digest"],
        digest(2).to_string()
    );
    let approved = svc
        .get_as(Some(VIEWER_ML), "/v1/images?approved=true")
        .await;
    assert_eq!(repos_of(&approved), ["nvidia/nim/llama"]);
    assert_eq!(
        approved["items"][0]["hm_tags"],
        json!(["approved-production", "gpu"])
    );
    assert_eq!(
        repos_of(
            &svc.get_as(Some(VIEWER_ML), "/v1/images?hm_tag=approved-production")
                .await
        ),
        ["nvidia/nim/llama"]
    );
    assert_eq!(
        repos_of(&svc.get_as(Some(VIEWER_ML), "/v1/images?hm_tag=gpu").await),
        ["nvidia/nim/llama"]
    );
    // A moved tag is no longer approved.
    env.publish([moved(
        ml,
        "nvidia/nim/llama",
        "1.0",
        2,
        9,
        model(ModelType::TextCompletion),
    )])
    .await;
    env.caught_up().await;
    assert_eq!(
        svc.get_as(Some(VIEWER_ML), "/v1/images?approved=true")
            .await["items"],
        json!([])
    );
    // A rejection needs a reason; a repository decision covers every tag.
    let (s, _) = svc
        .call(
            Method::POST,
            &format!("{repo}/reject"),
            Some(CURATOR_ML),
            None,
        )
        .await;
    assert_eq!(s, 422);
    let (s, body) = svc
        .call(
            Method::POST,
            &format!("{repo}/reject"),
            Some(CURATOR_ML),
            Some(json!({"reason": "license"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["approval"]["decision"], "rejected");
    assert_eq!(body["tags"][0]["approval"], "rejected");
    let (s, body) = svc
        .call(
            Method::POST,
            &format!("{repo}/approve"),
            Some(CURATOR_ML),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["tags"][0]["approval"], "approved");
    assert_eq!(body["tags"][0]["approved"], true);
    // Unlabel.
    let (s, body) = svc
        .call(Method::DELETE, &put_label, Some(CURATOR_ML), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["curator_hm_tags"], json!([]));

    // Everything went through the stream as catalog events, with the actor.
    env.caught_up().await;
    let types = env.event_types().await;
    let catalog: Vec<&str> = types
        .iter()
        .filter(|t| t.starts_with("io.imagelib.catalog."))
        .map(String::as_str)
        .collect();
    assert_eq!(
        catalog,
        [
            "io.imagelib.catalog.labeled.v1",
            "io.imagelib.catalog.labeled.v1",
            "io.imagelib.catalog.readme_set.v1",
            "io.imagelib.catalog.approved.v1",
            "io.imagelib.catalog.rejected.v1",
            "io.imagelib.catalog.approved.v1",
            "io.imagelib.catalog.unlabeled.v1",
        ]
    );
    // The consumer applying them again after the command did changes nothing.
    let before = env.dump("catalog").await;
    let repo_now = svc.get(&repo).await;
    assert_eq!(repo_now["readme"]["readme"], "# Llama\nUse it.");
    assert_eq!(repo_now["hm_tags"], json!([]));
    assert_eq!(repo_now["tags"][0]["hm_tags"], json!(["gpu"]));
    assert_eq!(env.dump("catalog").await, before);
    svc.stop().await;
}

#[tokio::test]
async fn filters_sorting_and_keyset_pages() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let mut events = vec![
        timed(registered(reg, "NGC", &[]), "2025-01-01T00:00:00Z"),
        timed(
            rule(
                reg,
                "nim",
                "nvidia/nim/**",
                "Optimized inference microservices",
                &["gpu"],
            ),
            "2025-01-01T00:00:00Z",
        ),
    ];
    for i in 0..12u64 {
        let (repo, d) = match i % 3 {
            0 => (
                "nvidia/nim/llama-3.1-8b-instruct",
                model(ModelType::TextCompletion),
            ),
            1 => ("nvidia/nim/nv-embedqa", model(ModelType::TextEmbedding)),
            _ => ("postgresql", database()),
        };
        events.push(timed(
            discovered(reg, repo, &format!("1.{i}"), 100 + i, d),
            &format!("2025-02-{:02}T00:00:00Z", i + 1),
        ));
    }
    env.publish(events).await;
    let svc = env.start().await;
    env.caught_up().await;

    // Keyset pages: every image once, in name order.
    let all = svc.image_refs("/v1/images?limit=5").await;
    assert_eq!(all.len(), 12);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    let page = svc.get("/v1/images?limit=5").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = svc
        .get(&format!("/v1/images?limit=5&cursor={cursor}"))
        .await;
    assert_ne!(next["items"][0], page["items"][4]);

    // sort=updated: newest first, across pages.
    let updated = svc
        .all_pages(Some(ADMIN), "/v1/images?sort=updated&limit=4")
        .await;
    let times: Vec<&str> = updated
        .iter()
        .map(|i| i["updated_at"].as_str().unwrap())
        .collect();
    assert_eq!(times.len(), 12);
    assert_eq!(times[0], "2025-02-12T00:00:00Z");
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // Filters.
    let count = |path: &'static str| {
        let svc = &svc;
        async move { svc.all_pages(Some(ADMIN), path).await.len() }
    };
    assert_eq!(count("/v1/images?kind=database").await, 4);
    assert_eq!(
        count("/v1/images?kind=model&model_type=text-embedding").await,
        4
    );
    assert_eq!(count("/v1/models?model_type=text-completion").await, 4);
    assert_eq!(
        count("/v1/images?arch=arm64").await,
        4,
        "the databases are multi-arch"
    );
    assert_eq!(count("/v1/images?hm_tag=gpu").await, 8, "the rule's HM tag");
    assert_eq!(count("/v1/images?repository=postgresql").await, 4);
    assert_eq!(
        count("/v1/images?repository=postgresql&kind=database").await,
        4
    );
    assert_eq!(
        count("/v1/images?repository=postgresql&kind=model").await,
        0
    );
    assert_eq!(
        count(Box::leak(
            format!("/v1/images?registry={reg}").into_boxed_str()
        ))
        .await,
        12
    );
    assert_eq!(count("/v1/images?approved=false").await, 12);
    assert_eq!(count("/v1/images?approved=true").await, 0);
    // Full text on names and descriptions, by word prefix.
    assert_eq!(count("/v1/images?q=llama").await, 4);
    assert_eq!(count("/v1/images?q=LLAMA%203.1").await, 4);
    assert_eq!(count("/v1/images?q=embed").await, 4);
    assert_eq!(
        count("/v1/images?q=inference%20micro").await,
        8,
        "the rule's description"
    );
    assert_eq!(count("/v1/images?q=nothing-like-this").await, 0);
    assert_eq!(count("/v1/repositories?q=postgres").await, 1);
    assert_eq!(count("/v1/repositories?kind=model").await, 2);
    assert_eq!(count("/v1/repositories?hm_tag=gpu&limit=1").await, 2);
    svc.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_problems() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    env.publish([registered(reg, "r", &[])]).await;
    let svc = env.start().await;
    let cases: &[(&str, u16, &str)] = &[
        ("/v1/images?limit=0", 422, "limit"),
        ("/v1/images?limit=501", 422, "limit"),
        ("/v1/images?limit=ten", 422, "limit"),
        ("/v1/images?registry=not-a-uuid", 422, "registry"),
        ("/v1/images?repository=Bad%20Name", 422, "repository"),
        ("/v1/images?kind=vm", 422, "kind"),
        ("/v1/images?model_type=chat", 422, "model_type"),
        ("/v1/images?hm_tag=UPPER", 422, "hm_tag"),
        ("/v1/images?arch=x86%2064", 422, "arch"),
        ("/v1/images?approved=yes", 422, "approved"),
        ("/v1/images?q=%20%2B%20", 422, "q"),
        ("/v1/images?as_of=yesterday", 422, "as_of"),
        ("/v1/images?as_of=2025-13-01T00:00:00Z", 422, "as_of"),
        ("/v1/images?sort=size", 422, "sort"),
        ("/v1/images?cursor=garbage", 422, "cursor"),
        ("/v1/models?kind=database", 422, "kind"),
        ("/v1/repositories?limit=-1", 422, "limit"),
        ("/v1/repositories?cursor=eyJzIjoibmFtZSJ9", 422, "cursor"),
        ("/v1/registries?limit=1000", 422, "limit"),
    ];
    // Without a token (anonymous reads are off by default) nothing is read.
    let res = svc.http.get(svc.url("/v1/images")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    for (path, status, pointer) in cases {
        let res = svc
            .http
            .get(svc.url(path))
            .bearer_auth(VIEWER_DB)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), *status, "{path}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["status"], *status, "{path}: {p}");
        assert_eq!(p["errors"][0]["pointer"], *pointer, "{path}: {p}");
    }
    // A cursor of one order is refused in the other.
    let page = svc.get("/v1/images?sort=updated&limit=1").await;
    assert_eq!(page["next_cursor"], Value::Null);
    let name_cursor = catalog_projector::query::Cursor::Name {
        r: "a".into(),
        t: "b".into(),
        g: reg.0,
    }
    .encode();
    let (s, p) = svc
        .call(
            Method::GET,
            &format!("/v1/images?sort=updated&cursor={name_cursor}"),
            Some(VIEWER_DB),
            None,
        )
        .await;
    assert_eq!(
        (s, p["errors"][0]["pointer"].as_str()),
        (422, Some("cursor")),
        "{p}"
    );
    // Unknown parameters, bad paths, unknown routes.
    for (path, status) in [
        ("/v1/images?reqistry=x", 400),
        ("/v1/repositories/not-a-uuid/x", 400),
        (&*format!("/v1/repositories/{reg}/Bad..Name"), 400),
        (&*format!("/v1/repositories/{reg}/unknown/repo"), 404),
        ("/v1/registries/not-a-uuid", 400),
        (&*format!("/v1/registries/{}", RegistryId::new()), 404),
    ] {
        let (s, p) = svc.call(Method::GET, path, Some(VIEWER_DB), None).await;
        assert_eq!(s, status, "{path}: {p}");
        assert!(p["type"].as_str().is_some(), "{path}: {p}");
    }
    let (s, _) = svc
        .call(
            Method::POST,
            &format!("/v1/repositories/{reg}/x/explode"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = svc
        .call(Method::DELETE, "/v1/images", Some(ADMIN), None)
        .await;
    assert_eq!(s, 405);
    svc.stop().await;
}

#[tokio::test]
async fn openapi_documents_the_routes_and_registries_can_be_left_to_registry_registry() {
    let env = Env::new().await;
    let svc = env.start().await;
    let api = svc.get("/openapi.json").await;
    for path in [
        "/v1/images",
        "/v1/models",
        "/v1/repositories",
        "/v1/repositories/{registry_id}/{name}",
        "/v1/repositories/{registry_id}/{name}/hm-tags/{hm_tag}",
        "/v1/repositories/{registry_id}/{name}/readme",
        "/v1/repositories/{registry_id}/{name}/approve",
        "/v1/repositories/{registry_id}/{name}/reject",
        "/v1/stats",
        "/v1/registries",
        "/v1/registries/{id}",
    ] {
        assert!(api["paths"][path].is_object(), "{path} missing");
    }
    svc.stop().await;

    let mut config = env.config();
    config.catalog.serve_registries = Some(false);
    let svc = env.start_with(config).await;
    let (s, _) = svc.call(Method::GET, "/v1/registries", None, None).await;
    assert_eq!(s, 404);
    let api = svc.get("/openapi.json").await;
    assert!(api["paths"]["/v1/registries"].is_null());
    assert!(api["paths"]["/v1/images"].is_object());
    svc.stop().await;
}

/// GET `path` as `token`, with `If-None-Match` when given: status, ETag, body text.
async fn conditional(
    svc: &Service,
    token: &str,
    path: &str,
    if_none_match: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut req = svc.http.get(svc.url(path)).bearer_auth(token);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let etag = res
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, etag, res.text().await.unwrap())
}

#[tokio::test]
async fn catalog_reads_carry_an_etag_and_answer_304_until_the_catalog_changes() {
    let env = Env::new().await;
    let (public, ml, _) = three_teams(&env).await;
    let svc = env.start().await;
    env.caught_up().await;
    let paths = [
        "/v1/images".to_owned(),
        "/v1/models".to_owned(),
        "/v1/repositories".to_owned(),
        format!("/v1/repositories/{public}/library/nginx"),
        "/v1/stats".to_owned(),
        "/v1/registries".to_owned(),
        format!("/v1/registries/{public}"),
        format!("/v1/images?registry={public}&limit=1"),
    ];
    let mut before = Vec::new();
    for path in &paths {
        let (s, etag, body) = conditional(&svc, VIEWER_ML, path, None).await;
        assert_eq!(s, 200, "{path}: {body}");
        let etag = etag.unwrap_or_else(|| panic!("{path}: no ETag"));
        assert!(
            etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
            "{path}: {etag}"
        );
        // The same read again: the same tag.
        let (_, again, _) = conditional(&svc, VIEWER_ML, path, None).await;
        assert_eq!(again.as_ref(), Some(&etag), "{path}");
        // Revalidation: 304, no body, the tag repeated; a weak or listed match counts too.
        for header in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"other\", {etag}"),
            "*".to_owned(),
        ] {
            let (s, tag, body) = conditional(&svc, VIEWER_ML, path, Some(&header)).await;
            assert_eq!((s, body.as_str()), (304, ""), "{path} with {header}");
            assert_eq!(tag.as_ref(), Some(&etag), "{path}");
        }
        let (s, _, body) = conditional(&svc, VIEWER_ML, path, Some("\"other\"")).await;
        assert_eq!(s, 200, "{path}");
        assert!(!body.is_empty());
        before.push(etag);
    }

    // Another team reading the same public registry gets the same body but never the
    // same tag: a tag says nothing about what another team sees.
    let path = &paths[7];
    let (s, db_tag, db_body) = conditional(&svc, VIEWER_DB, path, None).await;
    let (_, _, ml_body) = conditional(&svc, VIEWER_ML, path, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        db_body, ml_body,
        "the public registry looks the same to both"
    );
    assert_ne!(db_tag.as_ref(), Some(&before[7]));
    let (s, _, _) = conditional(&svc, VIEWER_DB, path, Some(&before[7])).await;
    assert_eq!(s, 200, "ml's tag does not revalidate db's view");

    // Errors carry no tag, and a refused token is refused once, by the handler.
    let (s, tag, _) = conditional(&svc, VIEWER_DB, &format!("/v1/registries/{ml}"), None).await;
    assert_eq!((s, tag), (404, None));
    let (s, tag, body) = conditional(&svc, "not-a-token", "/v1/images", Some(&before[0])).await;
    assert_eq!((s, tag), (401, None), "{body}");

    // A new tag in the public registry: every read that shows it changes; models do not.
    env.publish([discovered(
        public,
        "library/nginx",
        "1.28",
        6,
        details(ImageKind::Other, None, &["amd64"], 71_000_000),
    )])
    .await;
    env.caught_up().await;
    for (path, old) in paths.iter().zip(&before) {
        let (s, etag, body) = conditional(&svc, VIEWER_ML, path, Some(old)).await;
        if path == "/v1/models" {
            assert_eq!(s, 304, "{path}: the models did not change");
            continue;
        }
        assert_eq!(s, 200, "{path}: the catalog changed");
        let etag = etag.unwrap();
        assert_ne!(&etag, old, "{path}");
        assert!(!body.is_empty());
        let (s, _, _) = conditional(&svc, VIEWER_ML, path, Some(&etag)).await;
        assert_eq!(s, 304, "{path}: the new tag revalidates");
    }
    svc.stop().await;
}
