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
    let mut services = BTreeMap::new();
    for file in kustomization["resources"].as_array().unwrap() {
        for d in docs(file.as_str().unwrap()) {
            assert!(d["apiVersion"].is_string() && d["kind"].is_string(), "{d}");
            // The scanner is a StatefulSet (each replica its own instance name).
            if d["kind"] == "Deployment"
                || (d["kind"] == "StatefulSet" && d["metadata"]["name"] == "sync-scanner")
            {
                deployments.insert(d["metadata"]["name"].as_str().unwrap().to_owned(), d);
            } else if d["kind"] == "Service" {
                services.insert(d["metadata"]["name"].as_str().unwrap().to_owned(), d);
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
    // Each scanner replica's instance name is its pod name (sync-scanner-0, -1, …), from a
    // StatefulSet governed by a headless Service.
    let scanner = &deployments["sync-scanner"];
    assert_eq!(scanner["kind"], "StatefulSet");
    assert_eq!(scanner["spec"]["serviceName"], "sync-scanner");
    assert_eq!(services["sync-scanner"]["spec"]["clusterIP"], "None");
    let env = &scanner["spec"]["template"]["spec"]["containers"][0]["env"];
    let instance = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "IMAGELIB_SCANNER__INSTANCE")
        .expect("IMAGELIB_SCANNER__INSTANCE");
    assert_eq!(
        instance["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    // The master key only where sealed credentials are opened, read-only, mode 0400.
    for (name, d) in &deployments {
        let pod = &d["spec"]["template"]["spec"];
        let key_volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["secret"]["secretName"] == "imagelib-master-key");
        let c = &pod["containers"][0];
        let key_env = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "IMAGELIB_MASTER_KEY_FILE");
        let uses = matches!(name.as_str(), "registry-registry" | "sync-scanner");
        assert_eq!(key_volume.is_some(), uses, "{name}");
        assert_eq!(key_env, uses, "{name}");
        if let Some(v) = key_volume {
            assert_eq!(v["secret"]["defaultMode"], 0o400, "{name}");
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == v["name"])
                .unwrap();
            assert_eq!(mount["readOnly"], true, "{name}");
        }
    }
    let config = &docs("config.yaml")[0];
    assert_eq!(config["data"]["IMAGELIB_STREAM_REPLICAS"], "3");
    assert!(config["data"]["IMAGELIB_MASTER_KEY_FILE"].is_null());
}
