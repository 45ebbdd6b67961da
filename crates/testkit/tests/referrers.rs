//! The referrers API proxy against a real `docker-registry`: referrer manifests pushed
//! through it are listed, filtered and paged as the distribution spec says.

use imagelib_testkit::referrers::ReferrersProxy;
use imagelib_testkit::registry::{
    ArtifactSpec, ImageSpec, OCI_INDEX, OCI_MANIFEST, PushedManifest, TestRegistry,
};
use serde_json::Value;

const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const SBOM: &str = "application/spdx+json";

/// Pushes `spec` to the registry, then PUTs the same manifest bytes through the proxy.
async fn push_through(
    registry: &TestRegistry,
    proxy: &ReferrersProxy,
    repository: &str,
    spec: &ArtifactSpec,
) -> PushedManifest {
    let pushed = registry
        .push_artifact(repository, None, spec)
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .put(format!(
            "http://{}/v2/{repository}/manifests/{}",
            proxy.host(),
            pushed.digest
        ))
        .header("content-type", OCI_MANIFEST)
        .body(pushed.raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let subject = spec.subject.as_ref().map(|s| s.digest.as_str());
    assert_eq!(
        response
            .headers()
            .get("oci-subject")
            .and_then(|v| v.to_str().ok()),
        subject,
        "OCI-Subject names the subject of a referrer, and only then"
    );
    pushed
}

async fn get(proxy: &ReferrersProxy, path: &str) -> (reqwest::header::HeaderMap, Value) {
    let response = reqwest::get(format!("http://{}{path}", proxy.host()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let headers = response.headers().clone();
    (headers, response.json().await.unwrap())
}

fn digests(index: &Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn lists_filters_and_pages_the_referrers_of_a_digest() {
    let registry = TestRegistry::start().await.unwrap();
    let proxy = ReferrersProxy::start(registry.host().parse().unwrap(), 2).await;
    let image = registry
        .push_image("team/app", "1.0", &ImageSpec::linux_amd64())
        .await
        .unwrap();
    let sig = push_through(
        &registry,
        &proxy,
        "team/app",
        &ArtifactSpec::referrer(SIG, &image, b"signature").annotation("signer", "ci"),
    )
    .await;
    let sbom = push_through(
        &registry,
        &proxy,
        "team/app",
        &ArtifactSpec::referrer(SBOM, &image, b"{\"spdxVersion\":\"SPDX-2.3\"}"),
    )
    .await;
    let sig2 = push_through(
        &registry,
        &proxy,
        "team/app",
        &ArtifactSpec::referrer(SIG, &image, b"second signature"),
    )
    .await;
    // Not a referrer: it has no subject.
    push_through(&registry, &proxy, "team/app", &ArtifactSpec::modelpack("m")).await;

    let base = format!("/v2/team/app/referrers/{}", image.digest);
    let (headers, first) = get(&proxy, &base).await;
    assert_eq!(headers["content-type"], OCI_INDEX);
    assert_eq!(first["schemaVersion"], 2);
    assert_eq!(first["mediaType"], OCI_INDEX);
    assert_eq!(digests(&first), [sig.digest.clone(), sbom.digest.clone()]);
    let d = &first["manifests"][0];
    assert_eq!(d["mediaType"], OCI_MANIFEST);
    assert_eq!(d["artifactType"], SIG);
    assert_eq!(d["size"], sig.raw.len());
    assert_eq!(d["annotations"]["signer"], "ci");
    assert!(headers.get("oci-filters-applied").is_none());
    let link = headers["link"].to_str().unwrap();
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap();
    let (headers, second) = get(&proxy, next).await;
    assert_eq!(digests(&second), vec![sig2.digest.clone()]);
    assert!(headers.get("link").is_none(), "the last page has no next");

    let (headers, sigs) = get(
        &proxy,
        &format!("{base}?artifactType=application%2Fvnd.dev.cosign.artifact.sig.v1%2Bjson"),
    )
    .await;
    assert_eq!(headers["oci-filters-applied"], "artifactType");
    assert_eq!(digests(&sigs), [sig.digest.clone(), sig2.digest.clone()]);
    assert!(headers.get("link").is_none());

    // An unknown digest, or another repository: an empty index, 200.
    let unknown = format!("sha256:{}", "0".repeat(64));
    let (_, empty) = get(&proxy, &format!("/v2/team/app/referrers/{unknown}")).await;
    assert_eq!(digests(&empty), Vec::<String>::new());
    let (_, other) = get(&proxy, &format!("/v2/other/referrers/{}", image.digest)).await;
    assert_eq!(digests(&other), Vec::<String>::new());

    // A malformed digest is a bad request, not an empty list.
    let bad = reqwest::get(format!(
        "http://{}/v2/team/app/referrers/not-a-digest",
        proxy.host()
    ))
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);

    // Everything else reaches the registry unchanged.
    let (_, tags) = get(&proxy, "/v2/team/app/tags/list").await;
    assert_eq!(tags["tags"], serde_json::json!(["1.0"]));
}
