//! The Kubernetes manifests parse, name every service with its probes, run several
//! scanner replicas, and give every container the shared configuration.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

fn docs(file: &str) -> Vec<serde_json::Value> {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes")).join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_norway::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

#[test]
fn manifests_describe_the_scale_out_layout() {
    let kustomization = &docs("kustomization.yaml")[0];
    let mut deployments = BTreeMap::new();
    for file in kustomization["resources"].as_array().unwrap() {
        for d in docs(file.as_str().unwrap()) {
            assert!(d["apiVersion"].is_string() && d["kind"].is_string(), "{d}");
            if d["kind"] == "Deployment" {
                deployments.insert(d["metadata"]["name"].as_str().unwrap().to_owned(), d);
            }
        }
    }
    for name in [
        "registry-registry",
        "sync-scanner",
        "catalog-projector",
        "serving-deployer",
    ] {
        let d = &deployments[name];
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        assert_eq!(
            c["envFrom"][0]["configMapRef"]["name"], "imagelib",
            "{name}"
        );
        assert_eq!(c["command"][0], format!("/usr/local/bin/{name}"));
    }
    assert!(
        deployments["sync-scanner"]["spec"]["replicas"]
            .as_u64()
            .unwrap()
            >= 2
    );
    let config = &docs("config.yaml")[0];
    assert_eq!(config["data"]["IMAGELIB_STREAM_REPLICAS"], "3");
}
