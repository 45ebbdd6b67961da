//! Deployments end to end: events in, manifests in a real git repository (or a fake API
//! server speaking server-side apply), events out; manifests validated against the CRDs.

mod common;

use std::sync::{Arc, Mutex};

use common::{
    ADMIN, Accepted, DEPLOYER, Env, VIEWER, assert_valid, crd_validator, documents,
    fake_api_server, fake_api_server_accepting,
};
use imagelib_events::model::ImageKind;
use reqwest::Method;
use serde_json::json;

fn body(
    registry: imagelib_events::RegistryId,
    repo: &str,
    tag: &str,
    name: &str,
) -> serde_json::Value {
    json!({
        "image": format!("{registry}/{repo}:{tag}"), "name": name, "namespace": "models", "replicas": 2,
        "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"nvidia.com/gpu": 1, "memory": "32Gi"}},
        "env": {"LOG_LEVEL": "info"}
    })
}

#[tokio::test]
async fn a_model_is_deployed_to_gitops_pinned_by_digest() {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    let digest = env
        .tag(reg, "acme/llm-server", "1.2.0", ImageKind::Model, &[])
        .await;
    let (s, d) = svc
        .wait_for(body(reg, "acme/llm-server", "1.2.0", "llama"), |s, _| {
            s != 404
        })
        .await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["state"], "applied", "{d}");
    assert_eq!(d["digest"], digest.as_str());
    let history: Vec<&str> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["requested", "rendered", "applied"]);

    // The manifest is in the repository, committed, pinned by digest, and valid.
    let file = env.gitops().join("models/llama.yaml");
    let docs = documents(&file);
    assert_eq!(docs.len(), 1);
    let isvc = &docs[0];
    assert_eq!(isvc["kind"], "InferenceService");
    let container = &isvc["spec"]["predictor"]["containers"][0];
    assert_eq!(container["name"], "kserve-container");
    assert_eq!(
        container["image"],
        format!("registry.acme.internal:5000/acme/llm-server@{digest}")
    );
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], 1);
    assert_eq!(isvc["spec"]["predictor"]["minReplicas"], 2);
    assert_valid(
        &crd_validator("kserve-inferenceservices.crd.yaml", "v1beta1"),
        isvc,
    );
    let log = env.git(&["log", "-1", "--format=%s%n%b"]);
    assert!(
        log.contains("models/llama")
            && log.contains(d["id"].as_str().unwrap())
            && log.contains("dana"),
        "{log}"
    );
    assert_eq!(
        d["revision"].as_str().unwrap(),
        env.git(&["rev-parse", "HEAD"]).trim()
    );

    // The same spec again: nothing new, no commit.
    let commits = env.commit_count();
    let events = env.event_types().await.len();
    let (s, again) = svc
        .deploy(body(reg, "acme/llm-server", "1.2.0", "llama"))
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(env.commit_count(), commits);
    assert_eq!(env.event_types().await.len(), events);

    // A changed spec updates the file in a new commit.
    let mut changed = body(reg, "acme/llm-server", "1.2.0", "llama");
    changed["replicas"] = json!(3);
    let (s, d2) = svc.deploy(changed).await;
    assert_eq!(s, 201, "{d2}");
    assert_eq!(env.commit_count(), commits + 1);
    assert_eq!(documents(&file)[0]["spec"]["predictor"]["maxReplicas"], 3);

    // Delete removes the file in a commit and records it.
    let id = d["id"].as_str().unwrap();
    let (s, _) = svc
        .call(
            Method::DELETE,
            &format!("/v1/deployments/{id}"),
            Some(DEPLOYER),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert!(!file.exists());
    assert!(
        env.git(&["log", "-1", "--format=%s"])
            .starts_with("delete models/llama")
    );
    let (_, d3) = svc
        .call(
            Method::GET,
            &format!("/v1/deployments/{id}"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(d3["state"], "deleted");
    assert_eq!(
        env.event_types().await.last().unwrap(),
        "io.imagelib.deployment.deleted.v1"
    );
    let (s, _) = svc
        .call(
            Method::DELETE,
            &format!("/v1/deployments/{id}"),
            Some(DEPLOYER),
            None,
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn nim_images_get_a_serving_runtime_and_the_ngc_key_by_reference() {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    env.tag(
        reg,
        "nvidia/nim/llama-3.1-8b-instruct",
        "1.0.3",
        ImageKind::Model,
        &[("com.nvidia.nim.model", "meta/llama-3.1-8b-instruct")],
    )
    .await;
    let (s, d) = svc
        .wait_for(
            body(
                reg,
                "nvidia/nim/llama-3.1-8b-instruct",
                "1.0.3",
                "llama-nim",
            ),
            |s, _| s != 404,
        )
        .await;
    assert_eq!(s, 201, "{d}");
    let docs = documents(&env.gitops().join("models/llama-nim.yaml"));
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ClusterServingRuntime", "InferenceService"]);
    let runtime = &docs[0];
    let c = &runtime["spec"]["containers"][0];
    assert_eq!(
        c["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "ngc-api-secret"
    );
    assert!(
        !runtime.to_string().contains("nvapi-"),
        "no key in the clear"
    );
    let isvc = &docs[1];
    assert_eq!(
        isvc["spec"]["predictor"]["model"]["runtime"],
        "nim-llama-nim"
    );
    assert_valid(
        &crd_validator("kserve-inferenceservices.crd.yaml", "v1beta1"),
        isvc,
    );
}

#[tokio::test]
async fn refusals_say_why() {
    let env = Env::new();
    let svc = env.start().await;
    let hidden = env.registry(&["ml"]).await;
    env.tag(hidden, "acme/llm", "1.0", ImageKind::Model, &[])
        .await;
    let reg = env.registry(&[]).await;
    env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    // Published last: once the catalog has it, it has the model tag too (stream order).
    env.tag(reg, "pg/postgres", "16.4", ImageKind::Database, &[])
        .await;
    let (s, p) = svc
        .wait_for(body(reg, "pg/postgres", "16.4", "x"), |s, _| s != 404)
        .await;
    assert_eq!(s, 422, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("not a model"), "{p}");
    let (s, _) = svc.deploy(body(reg, "acme/nope", "1.0", "x")).await;
    assert_eq!(s, 404);
    // Another team's registry does not exist for this caller.
    let (s, _) = svc.deploy(body(hidden, "acme/llm", "1.0", "x")).await;
    assert_eq!(s, 404);
    let (s, p) = svc.deploy(body(reg, "acme/llm", "1.0", "Not_A_Name")).await;
    assert_eq!(s, 422);
    assert_eq!(p["errors"][0]["pointer"], "/name");
    let (s, _) = svc
        .call(
            Method::POST,
            "/v1/deployments",
            None,
            Some(body(reg, "acme/llm", "1.0", "x")),
        )
        .await;
    assert_eq!(s, 401);
    let (s, _) = svc
        .call(
            Method::POST,
            "/v1/deployments",
            Some("viewer"),
            Some(body(reg, "acme/llm", "1.0", "x")),
        )
        .await;
    assert_eq!(s, 403);
    let (s, p) = svc
        .deploy(json!({"image": "nonsense", "name": "x", "namespace": "y"}))
        .await;
    assert_eq!(s, 422, "{p}");
    let (s, _) = svc.deploy(json!({"image": 1})).await;
    assert_eq!(s, 422);
    let res = svc
        .http
        .post(svc.url("/v1/deployments"))
        .bearer_auth(DEPLOYER)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // A deployment of a registry that is then removed is flagged; new ones are refused.
    let (s, d) = svc.deploy(body(reg, "acme/llm", "1.0", "before")).await;
    assert_eq!(s, 201, "{d}");
    env.remove_registry(reg).await;
    let (s, p) = svc
        .wait_for(body(reg, "acme/llm", "1.0", "after"), |s, _| s == 422)
        .await;
    assert_eq!(s, 422, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("removed"), "{p}");
    let (_, d) = svc
        .call(
            Method::GET,
            &format!("/v1/deployments/{}", d["id"].as_str().unwrap()),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(d["registry_removed"], true, "{d}");
}

#[tokio::test]
async fn governance_requires_an_approval_of_the_digest() {
    let env = Env::new();
    let mut config = env.config();
    config.deployer.governance = true;
    let svc = env.start_with(config).await;
    let reg = env.registry(&[]).await;
    let digest = env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    let (s, p) = svc
        .wait_for(body(reg, "acme/llm", "1.0", "gov"), |s, _| s != 404)
        .await;
    assert_eq!(s, 403, "{p}");
    assert_eq!(p["code"], "not-approved");
    env.approve(reg, "acme/llm", "1.0", &digest).await;
    let (s, d) = svc
        .wait_for(body(reg, "acme/llm", "1.0", "gov"), |s, _| s == 201)
        .await;
    assert_eq!(s, 201, "{d}");
    // The tag moves: the approval was for the old digest.
    let _moved = env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    let (s, _) = svc
        .wait_for(body(reg, "acme/llm", "1.0", "gov2"), |s, _| s == 403)
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn concurrent_requests_for_one_name_give_one_winner() {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    let (s, _) = svc
        .wait_for(body(reg, "acme/llm", "1.0", "warmup"), |s, _| s == 201)
        .await;
    assert_eq!(s, 201);
    let mut a = body(reg, "acme/llm", "1.0", "race");
    let mut b = a.clone();
    a["replicas"] = json!(1);
    b["replicas"] = json!(4);
    let (ra, rb) = tokio::join!(svc.deploy(a), svc.deploy(b));
    let mut statuses = [ra.0, rb.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{ra:?} {rb:?}");
}

#[tokio::test]
async fn postgres_is_provisioned_and_the_image_catalog_lists_majors() {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    let _old15 = env
        .tag(reg, "pg/postgresql", "15.7", ImageKind::Database, &[])
        .await;
    let new15 = env
        .tag(reg, "pg/postgresql", "15.8", ImageKind::Database, &[])
        .await;
    let _old16 = env
        .tag(reg, "pg/postgresql", "16.3", ImageKind::Database, &[])
        .await;
    let new16 = env
        .tag(reg, "pg/postgresql", "16.10", ImageKind::Database, &[])
        .await;
    env.tag(reg, "pg/postgresql", "latest", ImageKind::Database, &[])
        .await;
    let req = json!({"image": format!("{reg}/pg/postgresql:16.10"), "name": "orders-db", "namespace": "data", "replicas": 3,
                     "options": {"storage": "50Gi", "parameters": {"max_connections": 200}}});
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..100 {
        last = svc
            .call(
                Method::POST,
                "/v1/provisioning/postgres",
                Some(DEPLOYER),
                Some(req.clone()),
            )
            .await;
        if last.0 != 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, 201, "{}", last.1);
    let docs = documents(&env.gitops().join("data/orders-db.yaml"));
    let cluster = &docs[0];
    assert_eq!(cluster["kind"], "Cluster");
    assert_eq!(
        cluster["spec"]["imageName"],
        format!("registry.acme.internal:5000/pg/postgresql@{new16}")
    );
    assert_eq!(cluster["spec"]["instances"], 3);
    assert_eq!(
        cluster["spec"]["postgresql"]["parameters"]["max_connections"],
        "200"
    );
    assert_valid(&crd_validator("cnpg-clusters.crd.yaml", "v1"), cluster);

    let (s, cat) = svc
        .call(
            Method::GET,
            &format!("/v1/provisioning/cnpg/image-catalog?repository={reg}/pg/postgresql"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, 200, "{cat}");
    assert_eq!(cat["kind"], "ClusterImageCatalog");
    assert_eq!(
        cat["spec"]["images"],
        json!([
            {"major": 15, "image": format!("registry.acme.internal:5000/pg/postgresql@{new15}")},
            {"major": 16, "image": format!("registry.acme.internal:5000/pg/postgresql@{new16}")}
        ])
    );
    assert_valid(
        &crd_validator("cnpg-clusterimagecatalogs.crd.yaml", "v1"),
        &cat,
    );
    let yaml = svc
        .http
        .get(svc.url(&format!(
            "/v1/provisioning/cnpg/image-catalog?repository={reg}/pg/postgresql"
        )))
        .header("accept", "application/yaml")
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(yaml.contains("kind: ClusterImageCatalog"), "{yaml}");
    let (s, _) = svc
        .call(
            Method::GET,
            "/v1/provisioning/cnpg/image-catalog?repository=nope",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = svc
        .call(
            Method::GET,
            "/v1/provisioning/cnpg/image-catalog",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn a_rebuild_from_the_stream_reapplies_nothing() {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    let (s, d) = svc
        .wait_for(body(reg, "acme/llm", "1.0", "keep"), |s, _| s == 201)
        .await;
    assert_eq!(s, 201);
    drop(svc);
    let commits = env.commit_count();
    let events = env.event_types().await.len();
    let fresh = imagelib_testkit::TestDb::new();
    let mut config = env.config();
    config.common.database_url = fresh.url.clone();
    let rebuilt = env.start_with(config).await;
    let (s, got) = rebuilt
        .call(
            Method::GET,
            &format!("/v1/deployments/{}", d["id"].as_str().unwrap()),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["state"], "applied");
    assert_eq!(got["history"], d["history"]);
    assert_eq!(env.commit_count(), commits);
    assert_eq!(env.event_types().await.len(), events);
}

#[tokio::test]
async fn the_kubernetes_target_uses_server_side_apply() {
    let env = Env::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let api = fake_api_server(seen.clone()).await;
    let token = env.dir.path().join("token");
    std::fs::write(&token, "k8s-token\n").unwrap();
    let mut config = env.config();
    config.deployer.kubernetes_api = Some(format!("http://{api}"));
    config.deployer.kubernetes_token_file = Some(token);
    let svc = env.start_with(config).await;
    let reg = env.registry(&[]).await;
    env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    let mut b = body(reg, "acme/llm", "1.0", "k8s");
    b["target"] = json!("kubernetes");
    let (s, d) = svc.wait_for(b, |s, _| s != 404).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["state"], "applied");
    assert_eq!(d["revision"], "4242");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let (method, path, query, ct) = &seen[0];
        assert_eq!(method, "PATCH");
        assert_eq!(
            path,
            "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/k8s"
        );
        assert!(
            query.contains("fieldManager=imagelib") && query.contains("force=true"),
            "{query}"
        );
        assert_eq!(ct, "application/apply-patch+yaml");
    }
    let (s, _) = svc
        .call(
            Method::DELETE,
            &format!("/v1/deployments/{}", d["id"].as_str().unwrap()),
            Some(DEPLOYER),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(seen.lock().unwrap().last().unwrap().0, "DELETE");
    // Nothing went to the gitops repository.
    assert!(!env.gitops().join("models/k8s.yaml").exists());
}

/// The kubelet rotates a projected service-account token by swapping the file; deployments
/// after the rotation use the new token without a restart.
#[tokio::test]
async fn the_kubernetes_target_rereads_a_rotated_token() {
    let env = Env::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let accepted: Accepted = Arc::new(Mutex::new("k8s-token-1".into()));
    let api = fake_api_server_accepting(seen.clone(), accepted.clone()).await;
    let token = env.dir.path().join("token");
    std::fs::write(&token, "k8s-token-1\n").unwrap();
    let mut config = env.config();
    config.deployer.kubernetes_api = Some(format!("http://{api}"));
    config.deployer.kubernetes_token_file = Some(token.clone());
    let svc = env.start_with(config).await;
    let reg = env.registry(&[]).await;
    env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;

    let mut b = body(reg, "acme/llm", "1.0", "before");
    b["target"] = json!("kubernetes");
    let (s, d) = svc.wait_for(b, |s, _| s != 404).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["state"], "applied", "{d}");

    // Rotate: the API server now accepts only the new token; the file is replaced the
    // way the kubelet does it (a new file renamed over the old one).
    *accepted.lock().unwrap() = "k8s-token-2".into();
    let next = env.dir.path().join("token.new");
    std::fs::write(&next, "k8s-token-2\n").unwrap();
    std::fs::rename(&next, &token).unwrap();

    let mut b = body(reg, "acme/llm", "1.0", "after");
    b["target"] = json!("kubernetes");
    let (s, d) = svc.deploy(b).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["state"], "applied", "{d}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].1.ends_with("/inferenceservices/after"), "{seen:?}");
}
