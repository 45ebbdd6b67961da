//! CloudNativePG: a `Cluster` from a database image (`imageName` pinned by digest) and a
//! `ClusterImageCatalog` mapping each PostgreSQL major to its newest (approved) digest.

use imagelib_events::event::DeploymentRequested;
use serde_json::{Value, json};

use super::{Manifest, common_labels};

/// The `Cluster` for a Postgres provisioning request. Options: `storage` (size, default
/// `10Gi`), `storage_class`, `parameters` (postgresql.conf), `extensions` (names to add to
/// `shared_preload_libraries` where they need it).
pub fn cluster(req: &DeploymentRequested, image: &str, pull_secret: Option<&str>) -> Manifest {
    let opt = &req.options;
    let size = opt.get("storage").and_then(Value::as_str).unwrap_or("10Gi");
    let mut storage = json!({"size": size});
    if let Some(class) = opt.get("storage_class").and_then(Value::as_str) {
        storage["storageClass"] = json!(class);
    }
    let mut spec = json!({
        "instances": req.replicas.max(1),
        "imageName": image,
        "storage": storage,
    });
    if let Some(s) = pull_secret {
        spec["imagePullSecrets"] = json!([{"name": s}]);
    }
    let mut r = serde_json::Map::new();
    if !req.resources.requests.is_empty() {
        r.insert("requests".into(), json!(req.resources.requests));
    }
    if !req.resources.limits.is_empty() {
        r.insert("limits".into(), json!(req.resources.limits));
    }
    if !r.is_empty() {
        spec["resources"] = Value::Object(r);
    }
    let mut postgresql = serde_json::Map::new();
    if let Some(params) = opt.get("parameters").and_then(Value::as_object) {
        let params: serde_json::Map<String, Value> = params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!(
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    ),
                )
            })
            .collect();
        postgresql.insert("parameters".into(), Value::Object(params));
    }
    if let Some(libs) = opt
        .get("shared_preload_libraries")
        .and_then(Value::as_array)
    {
        postgresql.insert("shared_preload_libraries".into(), json!(libs));
    }
    if !postgresql.is_empty() {
        spec["postgresql"] = Value::Object(postgresql);
    }
    if !req.env.is_empty() {
        spec["env"] = json!(
            req.env
                .iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect::<Vec<_>>()
        );
    }
    Manifest {
        object: json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {
                "name": req.name.as_str(),
                "namespace": req.namespace.as_str(),
                "labels": common_labels(&req.deployment_id.to_string()),
                "annotations": {"imagelib.io/image": req.image.to_string(), "imagelib.io/digest": req.digest.as_str()}
            },
            "spec": spec
        }),
    }
}

/// One PostgreSQL major and the image that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub major: u32,
    pub image: String,
}

/// The `ClusterImageCatalog` (cluster-wide) named `name`.
pub fn image_catalog(name: &str, entries: &[CatalogEntry]) -> Manifest {
    Manifest {
        object: json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "ClusterImageCatalog",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "imagelib"}},
            "spec": {
                "images": entries.iter().map(|e| json!({"major": e.major, "image": e.image})).collect::<Vec<_>>()
            }
        }),
    }
}

/// The PostgreSQL major version a tag names (`16`, `16.4`, `16.4-bookworm`, `v17.0`), if any.
pub fn major_of(tag: &str) -> Option<u32> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major: u32 = digits.parse().ok()?;
    let rest = &t[digits.len()..];
    // `16`, `16.4…`, `16-bookworm`; not `16rc1`, not a date-like `20240101`.
    let shaped = rest.is_empty() || rest.starts_with('.') || rest.starts_with('-');
    (shaped && (9..=99).contains(&major)).then_some(major)
}

/// The minor/patch part, for choosing the newest tag of a major.
pub fn version_key(tag: &str) -> Vec<u64> {
    let t = tag.strip_prefix('v').unwrap_or(tag);
    t.split(['-', '+'])
        .next()
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        assert_eq!(major_of("16"), Some(16));
        assert_eq!(major_of("16.4-bookworm"), Some(16));
        assert_eq!(major_of("v17.0"), Some(17));
        assert_eq!(major_of("latest"), None);
        assert_eq!(major_of("16rc1"), None);
        assert_eq!(major_of("20240101"), None);
        assert!(version_key("16.10") > version_key("16.9"));
    }
}
