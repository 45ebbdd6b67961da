//! Rendering a deployment into Kubernetes manifests, pinned by digest.
//!
//! Every manifest is plain data (`serde_json::Value`) so the same object is written to the
//! gitops repository as YAML, sent to the API server as an apply patch, and validated
//! against the CRD schemas in the tests.

pub mod cnpg;
pub mod kserve;

use imagelib_events::model::ManifestRef;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// A rendered Kubernetes object.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub object: Value,
}

impl Manifest {
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }

    pub fn yaml(&self) -> String {
        serde_norway::to_string(&self.object).unwrap_or_default()
    }

    pub fn reference(&self) -> ManifestRef {
        ManifestRef {
            api_version: self.api_version().to_owned(),
            kind: self.kind().to_owned(),
            name: self.name().to_owned(),
            namespace: self.namespace().map(str::to_owned),
            sha256: hex(&Sha256::digest(self.yaml().as_bytes())),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Several manifests as one multi-document YAML file.
pub fn yaml_documents(manifests: &[Manifest]) -> String {
    let mut out =
        String::from("# Rendered by imagelib serving-deployer; changes here are overwritten.\n");
    for (i, m) in manifests.iter().enumerate() {
        if i > 0 || !out.ends_with("---\n") {
            out.push_str("---\n");
        }
        out.push_str(&m.yaml());
    }
    out
}

/// Labels every rendered object carries.
pub fn common_labels(deployment_id: &str) -> Value {
    serde_json::json!({
        "app.kubernetes.io/managed-by": "imagelib",
        "imagelib.io/deployment-id": deployment_id,
    })
}
