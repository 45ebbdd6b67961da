//! The service's configuration (README, "Deployments").

use std::net::SocketAddr;
use std::path::PathBuf;

use imagelib_events::model::DeploymentTarget;
use imagelib_platform::config::CommonConfig;
use serde::{Deserialize, Serialize};

/// Listens here unless `IMAGELIB_HTTP_ADDR` says otherwise.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8082);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// `IMAGELIB_DEPLOYER__…`
    pub deployer: DeployerSettings,
}

/// How deployments are checked and rendered, and where they go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DeployerSettings {
    /// `IMAGELIB_DEPLOYER__GOVERNANCE`: only approved images may be deployed.
    pub governance: bool,
    /// `IMAGELIB_DEPLOYER__DEFAULT_TARGET`: `gitops` or `kubernetes`.
    pub default_target: DeploymentTarget,
    /// `IMAGELIB_DEPLOYER__PULL_SECRET`: an existing image pull secret to reference.
    pub pull_secret: Option<String>,
    /// `IMAGELIB_DEPLOYER__NGC_SECRET`: the existing secret with `NGC_API_KEY` for NIM.
    pub ngc_secret: String,
    /// `IMAGELIB_DEPLOYER__NIM_CACHE_SIZE`: the NIM model cache volume size.
    pub nim_cache_size: String,
    /// `IMAGELIB_DEPLOYER__MODEL_PORT`: the port model servers listen on.
    pub model_port: u16,
    /// `IMAGELIB_DEPLOYER__KUBERNETES_API`: the API server for the kubernetes target.
    pub kubernetes_api: Option<String>,
    /// `IMAGELIB_DEPLOYER__KUBERNETES_TOKEN_FILE`: a bearer token file (a service account's).
    pub kubernetes_token_file: Option<PathBuf>,
    /// `IMAGELIB_DEPLOYER__KUBERNETES_CA_FILE`: the API server's CA bundle.
    pub kubernetes_ca_file: Option<PathBuf>,
}

impl Default for DeployerSettings {
    fn default() -> Self {
        DeployerSettings {
            governance: false,
            default_target: DeploymentTarget::Gitops,
            pull_secret: None,
            ngc_secret: "ngc-api-secret".into(),
            nim_cache_size: "100Gi".into(),
            model_port: 8000,
            kubernetes_api: None,
            kubernetes_token_file: None,
            kubernetes_ca_file: None,
        }
    }
}

impl Config {
    /// From defaults, `IMAGELIB_CONFIG`/`imagelib.toml` and `IMAGELIB_*` variables.
    pub fn load() -> Result<Self, imagelib_platform::ConfigError> {
        imagelib_platform::config::load()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.common.http_addr.unwrap_or(DEFAULT_HTTP_ADDR)
    }
}
