//! The service's configuration (README, "Configuration").

use std::net::SocketAddr;

use imagelib_platform::config::CommonConfig;
use serde::{Deserialize, Serialize};

/// Listens here unless `IMAGELIB_HTTP_ADDR` says otherwise.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// `IMAGELIB_KEYS_BUCKET`: the NATS KV bucket of wrapped data keys (default
    /// `<stream>_KEYS`); sync-scanner must use the same.
    pub keys_bucket: Option<String>,
    /// `IMAGELIB_PROVIDERS__ECR`, `IMAGELIB_PROVIDERS__AAD`: provider token endpoints other
    /// than the public clouds' (sovereign clouds, private endpoints).
    pub providers: registry_client::ProviderEndpoints,
    /// `IMAGELIB_VALIDATION_TIMEOUT_SECS` (default 15): the timeout of each request a
    /// validation makes; a registry that does not answer in time fails with `timeout`.
    pub validation_timeout_secs: Option<u64>,
    /// `IMAGELIB_SUBSCRIPTIONS_*`: outbound subscription delivery (README, "Notifications
    /// out").
    #[serde(flatten)]
    pub delivery: crate::subscriptions::DeliveryConfig,
    /// `IMAGELIB_PULLS_WINDOW_SECS` (default 60): how long the pulls of one digest (and
    /// tag) are counted before they become one `image.pulls_counted`.
    pub pulls_window_secs: Option<u64>,
    /// `IMAGELIB_PULLS_MAX_KEYS` (default 10000): open pull counts at which every window
    /// is closed early, bounding the memory pull counting takes.
    pub pulls_max_keys: Option<usize>,
}

impl Config {
    /// From defaults, `IMAGELIB_CONFIG`/`imagelib.toml` and `IMAGELIB_*` variables.
    pub fn load() -> Result<Self, imagelib_platform::ConfigError> {
        imagelib_platform::config::load()
    }

    pub fn validation_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.validation_timeout_secs.unwrap_or(15).max(1))
    }

    pub fn pull_settings(&self) -> crate::pulls::PullSettings {
        let default = crate::pulls::PullSettings::default();
        crate::pulls::PullSettings {
            window: self
                .pulls_window_secs
                .map(|s| std::time::Duration::from_secs(s.max(1)))
                .unwrap_or(default.window),
            max_keys: self.pulls_max_keys.unwrap_or(default.max_keys).max(1),
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.common.http_addr.unwrap_or(DEFAULT_HTTP_ADDR)
    }
}
