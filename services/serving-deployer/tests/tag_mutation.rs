//! The tag-mutated gate (issue 14), through the stream: the new digest of a tag that was
//! re-pushed although policy calls it immutable waits for a curator's approval of that
//! digest; the old content stays deployable by digest; running deployments pinned to the
//! old digest keep running and are flagged; a view rebuilt from the stream says the same.

mod common;

use common::{ADMIN, DEPLOYER, Env, Service, VIEWER};
use imagelib_events::event::{CatalogApproved, TagMoved, TagMutated};
use imagelib_events::model::{CatalogTarget, ImageDetails, ImageKind, ModelType, MutationFoundBy};
use imagelib_events::{Digest, RegistryId};
use reqwest::Method;
use serde_json::{Value, json};

const REPO: &str = "acme/llm";

fn body(image: &str, name: &str) -> Value {
    json!({"image": image, "name": name, "namespace": "models"})
}

fn model() -> ImageDetails {
    ImageDetails {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: None,
        platforms: vec![],
        size: 1000,
        created: None,
        labels: Default::default(),
        annotations: Default::default(),
        kind: ImageKind::Model,
        model_type: Some(ModelType::TextCompletion),
        extensions: vec![],
        referrers: vec![],
    }
}

fn digest(n: u64) -> Digest {
    format!("sha256:{n:064x}").parse().unwrap()
}

/// The scanner's view of a re-push: the usual move and the mutation.
async fn repush(env: &Env, reg: RegistryId, old: &Digest, new: &Digest, by: MutationFoundBy) {
    env.publish(TagMoved {
        registry_id: reg,
        repository: REPO.parse().unwrap(),
        tag: "1.0".parse().unwrap(),
        old_digest: old.clone(),
        new_digest: new.clone(),
        details: model(),
    })
    .await;
    env.publish(TagMutated {
        registry_id: reg,
        repository: REPO.parse().unwrap(),
        tag: "1.0".parse().unwrap(),
        old_digest: old.clone(),
        new_digest: new.clone(),
        found_by: by,
        seen_at: Some("2025-03-01T12:00:00Z".parse().unwrap()),
    })
    .await;
}

async fn deploy(env: &Env, svc: &Service, image: &str, name: &str) -> (u16, Value) {
    env.settled().await;
    svc.deploy(body(image, name)).await
}

async fn shown(svc: &Service, id: &Value) -> Value {
    let (s, d) = svc
        .call(
            Method::GET,
            &format!("/v1/deployments/{}", id.as_str().unwrap()),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, 200, "{d}");
    d
}

#[tokio::test]
async fn the_new_digest_waits_for_its_approval_the_old_stays_deployable_and_running_ones_are_flagged()
 {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    let image = format!("{reg}/{REPO}:1.0");
    let old = env.tag(reg, REPO, "1.0", ImageKind::Model, &[]).await;
    let (s, running) = deploy(&env, &svc, &image, "llm").await;
    assert_eq!(s, 201, "{running}");
    assert_eq!(running["digest"], old.as_str());
    assert_eq!(running["flags"], json!([]));
    let commits = env.commit_count();

    let new = digest(2);
    repush(&env, reg, &old, &new, MutationFoundBy::Webhook).await;
    env.settled().await;

    // The running deployment is left alone, and flagged.
    let d = shown(&svc, &running["id"]).await;
    assert_eq!(d["state"], "applied");
    assert_eq!(d["history"], running["history"], "nothing happened to it");
    assert_eq!(
        d["flags"],
        json!([{"kind": "tag_mutated", "tag": "1.0", "old_digest": old.as_str(),
                "new_digest": new.as_str(), "current_digest": new.as_str(), "found_by": "webhook",
                "seen_at": "2025-03-01T12:00:00Z", "at": d["flags"][0]["at"]}]),
        "{d}"
    );
    assert!(d["flags"][0]["at"].is_string());
    let (_, page) = svc
        .call(Method::GET, "/v1/deployments", Some(DEPLOYER), None)
        .await;
    assert_eq!(page["items"][0]["flags"][0]["kind"], "tag_mutated");

    // The tag now resolves to the new digest: refused with both digests and the way out.
    let (s, p) = deploy(&env, &svc, &image, "llm-new").await;
    assert_eq!(s, 409, "{p}");
    assert_eq!(p["code"], "tag-mutated");
    assert_eq!(p["type"], "https://imagelib.dev/problems/tag-mutated");
    assert_eq!(p["image"], image);
    assert_eq!(p["tag"], "1.0");
    assert_eq!(p["old_digest"], old.as_str());
    assert_eq!(p["new_digest"], new.as_str());
    assert_eq!(p["found_by"], "webhook");
    assert_eq!(p["seen_at"], "2025-03-01T12:00:00Z");
    assert_eq!(
        p["approve_command"],
        format!(
            "imagelib images approve {image} --digest {new} --reason '<why the new content is right>'"
        )
    );
    let curl = p["approve_curl"].as_str().unwrap();
    assert!(
        curl.contains(&format!("/v1/repositories/{reg}/{REPO}/approve")),
        "{curl}"
    );
    assert!(curl.contains(&format!("\"digest\": \"{new}\"")), "{curl}");
    assert_eq!(p["pin_old"], format!("{image}@{old}"));
    let detail = p["detail"].as_str().unwrap();
    for words in [
        old.as_str(),
        new.as_str(),
        "imagelib images approve",
        "curl -X POST",
        "re-pushed",
    ] {
        assert!(detail.contains(words), "{words:?} not in {detail}");
    }
    let res = svc
        .http
        .post(svc.url("/v1/deployments"))
        .bearer_auth(DEPLOYER)
        .json(&body(&image, "llm-new"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(!env.gitops().join("models/llm-new.yaml").exists());
    assert_eq!(env.commit_count(), commits, "nothing committed");

    // The old content, pinned by digest, deploys without an approval (and is flagged).
    let (s, pinned) = deploy(&env, &svc, &format!("{image}@{old}"), "llm-pinned").await;
    assert_eq!(s, 201, "{pinned}");
    assert_eq!(pinned["digest"], old.as_str());
    assert_eq!(pinned["image"], image);
    assert_eq!(pinned["flags"][0]["old_digest"], old.as_str());
    let manifest = std::fs::read_to_string(env.gitops().join("models/llm-pinned.yaml")).unwrap();
    assert!(manifest.contains(&format!("@{old}")), "{manifest}");
    // A digest the tag never had before a mutation is not deployable through the tag.
    let (s, p) = deploy(&env, &svc, &format!("{image}@{}", digest(77)), "llm-x").await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["errors"][0]["pointer"], "/image");
    let (s, p) = deploy(&env, &svc, &format!("{image}@sha256:nope"), "llm-x").await;
    assert_eq!(s, 422, "{p}");
    // Pinning the new digest is the same as the tag.
    let (s, p) = deploy(&env, &svc, &format!("{image}@{new}"), "llm-x").await;
    assert_eq!(s, 409, "{p}");

    // Neither a repository approval nor one of the old digest vouches for the new content.
    env.publish(CatalogApproved {
        target: CatalogTarget {
            registry_id: reg,
            repository: REPO.parse().unwrap(),
            tag: None,
        },
        digest: None,
        reason: "the repository is fine".into(),
    })
    .await;
    env.approve(reg, REPO, "1.0", &old).await;
    let (s, p) = deploy(&env, &svc, &image, "llm-new").await;
    assert_eq!(s, 409, "{p}");

    // A curator approves the new digest: the gate lifts.
    env.approve(reg, REPO, "1.0", &new).await;
    let (s, d) = deploy(&env, &svc, &image, "llm-new").await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["digest"], new.as_str());
    assert_eq!(d["state"], "applied");
    assert_eq!(d["flags"], json!([]), "it runs what the tag points at");
    assert_eq!(shown(&svc, &running["id"]).await["state"], "applied");

    // Re-pushed back (found by the sweep): the old content came back by a mutation too,
    // so it needs its own approval; the deployment of the old digest is no longer flagged,
    // the one of the approved digest is.
    repush(&env, reg, &new, &old, MutationFoundBy::Sweep).await;
    env.settled().await;
    assert_eq!(shown(&svc, &running["id"]).await["flags"], json!([]));
    let flagged = shown(&svc, &d["id"]).await;
    assert_eq!(flagged["flags"][0]["found_by"], "sweep", "{flagged}");
    assert_eq!(flagged["flags"][0]["current_digest"], old.as_str());
    let (s, p) = deploy(&env, &svc, &image, "llm-back").await;
    assert_eq!(s, 409, "{p}");
    assert_eq!(p["new_digest"], old.as_str());
    assert_eq!(p["old_digest"], new.as_str());

    // The OpenAPI document describes the refusal and the flags.
    let (_, api) = svc.call(Method::GET, "/openapi.json", None, None).await;
    let schema = api["components"]["schemas"]["MutationProblem"].to_string();
    for field in [
        "old_digest",
        "new_digest",
        "approve_command",
        "approve_curl",
        "pin_old",
    ] {
        assert!(schema.contains(field), "{field} missing from {schema}");
    }
    let post = &api["paths"]["/v1/deployments"]["post"]["responses"]["409"];
    assert!(post.to_string().contains("tag-mutated"), "{post}");
    let view = api["components"]["schemas"]["DeploymentView"]["properties"]["flags"].to_string();
    assert!(view.contains("DeploymentFlag"), "{view}");
}

#[tokio::test]
async fn governance_and_the_gate_agree_and_a_rebuilt_view_flags_the_same() {
    let env = Env::new();
    let mut config = env.config();
    config.deployer.governance = true;
    let svc = env.start_with(config.clone()).await;
    let reg = env.registry(&[]).await;
    let image = format!("{reg}/{REPO}:1.0");
    let old = env.tag(reg, REPO, "1.0", ImageKind::Model, &[]).await;
    env.approve(reg, REPO, "1.0", &old).await;
    let (s, running) = deploy(&env, &svc, &image, "llm").await;
    assert_eq!(s, 201, "{running}");
    let new = digest(3);
    repush(&env, reg, &old, &new, MutationFoundBy::Scan).await;

    // Under governance the mutation is the answer (its approval also satisfies governance).
    let (s, p) = deploy(&env, &svc, &image, "llm-new").await;
    assert_eq!(s, 409, "{p}");
    assert_eq!(p["code"], "tag-mutated");
    // The old digest is still approved: deployable.
    let (s, d) = deploy(&env, &svc, &format!("{image}@{old}"), "llm-old").await;
    assert_eq!(s, 201, "{d}");
    env.approve(reg, REPO, "1.0", &new).await;
    let (s, d) = deploy(&env, &svc, &image, "llm-new").await;
    assert_eq!(s, 201, "{d}");
    // Now the old digest is no longer the tag's approved one: governance refuses it.
    let (s, p) = deploy(&env, &svc, &format!("{image}@{old}"), "llm-old-2").await;
    assert_eq!(s, 403, "{p}");
    assert_eq!(p["code"], "not-approved");
    let d = shown(&svc, &running["id"]).await;
    let flags = d["flags"].clone();
    assert_eq!(flags[0]["new_digest"], new.as_str(), "{d}");

    // A second deployer on an empty database of its own rebuilds the same view.
    let db = imagelib_testkit::TestDb::new();
    config.common.database_url = db.url.clone();
    config.common.gitops_dir = env.dir.path().join("gitops-2");
    let rebuilt = env.start_with(config).await;
    env.settled_in(&db.url).await;
    assert_eq!(shown(&rebuilt, &running["id"]).await["flags"], flags);
    let (s, p) = rebuilt
        .call(
            Method::POST,
            "/v1/deployments",
            Some(ADMIN),
            Some(body(&format!("{image}@{new}"), "llm-new")),
        )
        .await;
    assert_eq!(s, 200, "the same spec again is a no-op: {p}");
}

#[tokio::test]
async fn postgres_goes_through_the_gate_and_the_image_catalog_holds_the_new_digest_back() {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    let repo = "pg/postgresql";
    let older = env.tag(reg, repo, "16.3", ImageKind::Database, &[]).await;
    let old = env.tag(reg, repo, "16.4", ImageKind::Database, &[]).await;
    let new = digest(16);
    env.publish(TagMoved {
        registry_id: reg,
        repository: repo.parse().unwrap(),
        tag: "16.4".parse().unwrap(),
        old_digest: old.clone(),
        new_digest: new.clone(),
        details: ImageDetails {
            kind: ImageKind::Database,
            model_type: None,
            ..model()
        },
    })
    .await;
    env.publish(TagMutated {
        registry_id: reg,
        repository: repo.parse().unwrap(),
        tag: "16.4".parse().unwrap(),
        old_digest: old.clone(),
        new_digest: new.clone(),
        found_by: MutationFoundBy::Sweep,
        seen_at: None,
    })
    .await;
    env.settled().await;

    let provision = |image: String| {
        let svc = &svc;
        async move {
            svc.call(
                Method::POST,
                "/v1/provisioning/postgres",
                Some(DEPLOYER),
                Some(json!({"image": image, "name": "orders-db", "namespace": "data"})),
            )
            .await
        }
    };
    let (s, p) = provision(format!("{reg}/{repo}:16.4")).await;
    assert_eq!(s, 409, "{p}");
    assert_eq!(p["code"], "tag-mutated");

    // Major 16 falls back to the newest tag whose digest is not held back.
    let catalog = || async {
        let (s, cat) = svc
            .call(
                Method::GET,
                &format!("/v1/provisioning/cnpg/image-catalog?repository={reg}/{repo}"),
                Some(VIEWER),
                None,
            )
            .await;
        assert_eq!(s, 200, "{cat}");
        cat["spec"]["images"][0]["image"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(catalog().await.ends_with(&format!("@{older}")));

    env.approve(reg, repo, "16.4", &new).await;
    env.settled().await;
    assert!(catalog().await.ends_with(&format!("@{new}")));
    let (s, d) = provision(format!("{reg}/{repo}:16.4")).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["digest"], new.as_str());
}
