//! KServe `InferenceService` (`serving.kserve.io/v1beta1`) for model images, and for
//! NVIDIA NIM images the `ClusterServingRuntime` NIM expects (NGC API key from a secret, a
//! model cache volume, shared memory).

use imagelib_events::event::DeploymentRequested;
use serde_json::{Map, Value, json};

use super::{Manifest, common_labels};

/// What the renderer needs besides the request.
#[derive(Debug, Clone)]
pub struct ModelContext<'a> {
    /// `host[:port]/repository@sha256:…`
    pub image: &'a str,
    pub pull_secret: Option<&'a str>,
    pub nim: Option<NimSettings<'a>>,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct NimSettings<'a> {
    /// The secret holding `NGC_API_KEY` (never written by imagelib).
    pub ngc_secret: &'a str,
    /// A model name for the runtime's `supportedModelFormats`.
    pub model_format: String,
    /// Model cache size for the emptyDir volume.
    pub cache_size: &'a str,
}

/// NIM images are recognised by their labels or their repository.
pub fn is_nim(
    repository: &str,
    labels: &Map<String, Value>,
    annotations: &Map<String, Value>,
) -> bool {
    repository.starts_with("nvidia/nim/")
        || repository.contains("/nim/")
        || labels
            .keys()
            .chain(annotations.keys())
            .any(|k| k.starts_with("com.nvidia.nim"))
}

fn env_list(req: &DeploymentRequested) -> Vec<Value> {
    req.env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect()
}

fn resources(req: &DeploymentRequested) -> Value {
    let mut r = Map::new();
    if !req.resources.requests.is_empty() {
        r.insert("requests".into(), json!(req.resources.requests));
    }
    if !req.resources.limits.is_empty() {
        r.insert("limits".into(), json!(req.resources.limits));
    }
    Value::Object(r)
}

fn metadata(req: &DeploymentRequested, name: &str, namespaced: bool) -> Value {
    let mut m = json!({
        "name": name,
        "labels": common_labels(&req.deployment_id.to_string()),
        "annotations": {
            "imagelib.io/image": req.image.to_string(),
            "imagelib.io/digest": req.digest.as_str(),
        }
    });
    if namespaced {
        m["namespace"] = json!(req.namespace.as_str());
    }
    m
}

/// The manifests for a model deployment.
pub fn render(req: &DeploymentRequested, ctx: &ModelContext<'_>) -> Vec<Manifest> {
    let mut out = Vec::new();
    let pull_secrets = ctx
        .pull_secret
        .map(|s| json!([{"name": s}]))
        .unwrap_or(json!([]));
    let probes = |path: &str| json!({"httpGet": {"path": path, "port": ctx.port}, "initialDelaySeconds": 15, "periodSeconds": 10, "failureThreshold": 30});
    let mut predictor = json!({
        "minReplicas": req.replicas,
        "maxReplicas": req.replicas.max(1),
    });
    if ctx.pull_secret.is_some() {
        predictor["imagePullSecrets"] = pull_secrets.clone();
    }
    match &ctx.nim {
        Some(nim) => {
            let runtime_name = format!("nim-{}", req.name);
            let mut env = vec![
                json!({"name": "NGC_API_KEY", "valueFrom": {"secretKeyRef": {"name": nim.ngc_secret, "key": "NGC_API_KEY"}}}),
                json!({"name": "NIM_CACHE_PATH", "value": "/opt/nim/.cache"}),
            ];
            env.extend(env_list(req));
            let runtime = json!({
                "apiVersion": "serving.kserve.io/v1alpha1",
                "kind": "ClusterServingRuntime",
                "metadata": metadata(req, &runtime_name, false),
                "spec": {
                    "annotations": {"prometheus.kserve.io/path": "/v1/metrics", "prometheus.kserve.io/port": ctx.port.to_string()},
                    "supportedModelFormats": [{"name": nim.model_format, "version": "1", "autoSelect": true}],
                    "protocolVersions": ["v2", "grpc-v2"],
                    "imagePullSecrets": pull_secrets,
                    "containers": [{
                        "name": "kserve-container",
                        "image": ctx.image,
                        "env": env,
                        "ports": [{"containerPort": ctx.port, "name": "http", "protocol": "TCP"}],
                        "volumeMounts": [
                            {"name": "dshm", "mountPath": "/dev/shm"},
                            {"name": "nim-cache", "mountPath": "/opt/nim/.cache"}
                        ],
                        "readinessProbe": probes("/v1/health/ready"),
                        "livenessProbe": probes("/v1/health/live"),
                    }],
                    "volumes": [
                        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
                        {"name": "nim-cache", "emptyDir": {"sizeLimit": nim.cache_size}}
                    ]
                }
            });
            out.push(Manifest { object: runtime });
            predictor["model"] = json!({
                "modelFormat": {"name": nim.model_format},
                "runtime": runtime_name,
                "resources": resources(req),
            });
        }
        None => {
            predictor["containers"] = json!([{
                "name": "kserve-container",
                "image": ctx.image,
                "env": env_list(req),
                "resources": resources(req),
                "ports": [{"containerPort": ctx.port, "name": "http1", "protocol": "TCP"}],
                "readinessProbe": {"tcpSocket": {"port": ctx.port}, "periodSeconds": 10},
            }]);
        }
    }
    let isvc = json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(req, req.name.as_str(), true),
        "spec": {"predictor": predictor}
    });
    out.push(Manifest { object: isvc });
    out
}
