//! Where rendered manifests go (DESIGN section 7): a gitops repository that Argo CD or
//! Flux applies, or a Kubernetes API server by server-side apply.

pub mod gitops;
pub mod kubernetes;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("gitops: {0}")]
    Git(String),
    #[error("kubernetes: {0}")]
    Kubernetes(String),
    #[error("the {0} target is not configured")]
    NotConfigured(&'static str),
}

/// What a target is told about the change, for its record (commit message, field manager).
#[derive(Debug, Clone)]
pub struct Change<'a> {
    pub deployment_id: String,
    pub namespace: &'a str,
    pub name: &'a str,
    pub actor: &'a str,
}

/// The outcome of an apply: the git commit or the resource version, and whether anything
/// changed at all (a redeploy of the same manifests changes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub revision: String,
    pub changed: bool,
}

pub fn plural(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "InferenceService" => "inferenceservices",
        "ClusterServingRuntime" => "clusterservingruntimes",
        "Cluster" => "clusters",
        "ClusterImageCatalog" => "clusterimagecatalogs",
        _ => return None,
    })
}
