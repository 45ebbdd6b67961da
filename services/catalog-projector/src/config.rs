//! The service's configuration (README, "Configuration").

use std::net::SocketAddr;
use std::time::Duration;

use imagelib_platform::config::CommonConfig;
use serde::{Deserialize, Serialize};

/// Listens here unless `IMAGELIB_HTTP_ADDR` says otherwise.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// `IMAGELIB_CATALOG__*`: the catalog's own settings.
    pub catalog: CatalogSettings,
}

/// `IMAGELIB_CATALOG__<FIELD>` (figment's `__` nesting), or `[catalog]` in the TOML file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CatalogSettings {
    /// `IMAGELIB_CATALOG__SERVE_REGISTRIES`: serve `GET /v1/registries[/{id}]` (the catalog
    /// view of registries). Default: true when the service runs alone, false inside
    /// `imagelib serve`, where registry-registry owns those routes.
    pub serve_registries: Option<bool>,
    /// `IMAGELIB_CATALOG__BATCH_SIZE`: events applied per PostgreSQL transaction (1–10000).
    pub batch_size: usize,
    /// `IMAGELIB_CATALOG__FETCH_WAIT_MS`: how long one fetch waits for events when idle.
    pub fetch_wait_ms: u64,
    /// `IMAGELIB_CATALOG__BATCH_LINGER_MS`: how long a batch that is not full waits for
    /// more events before it is applied (0–1000; 0 applies what each fetch brought).
    pub batch_linger_ms: u64,
    /// `IMAGELIB_CATALOG__APPLY_ATTEMPTS`: attempts for an event PostgreSQL refuses before
    /// the projector stops (and `/readyz` turns false).
    pub apply_attempts: u32,
    /// `IMAGELIB_CATALOG__RETRY_BACKOFF_MS`: the first retry delay; doubled per attempt,
    /// at most 30 s.
    pub retry_backoff_ms: u64,
    /// `IMAGELIB_CATALOG__KEEP_OLD_SCHEMA`: keep the replaced schema (`catalog_old_<ts>`)
    /// after `catalog-projector rebuild` instead of dropping it.
    pub keep_old_schema: bool,
    /// `IMAGELIB_CATALOG__PAGE_CACHE_MB`: memory for Image and Model Library pages kept
    /// until the catalog changes (README, "Kept pages"); 0 reads every page afresh.
    pub page_cache_mb: usize,
    /// `IMAGELIB_CATALOG__ROW_CACHE_MB`: memory for image rows kept rendered while they
    /// are unchanged (README, "Kept rows"); 0 reads every page as one full statement.
    pub row_cache_mb: usize,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        CatalogSettings {
            serve_registries: None,
            batch_size: 1000,
            fetch_wait_ms: 1000,
            batch_linger_ms: 20,
            apply_attempts: 5,
            retry_backoff_ms: 200,
            keep_old_schema: false,
            page_cache_mb: 64,
            row_cache_mb: 64,
        }
    }
}

impl CatalogSettings {
    pub fn validate(&self) -> Result<(), imagelib_platform::ConfigError> {
        let invalid = |m: &str| Err(imagelib_platform::ConfigError::Invalid(m.to_owned()));
        if !(1..=10_000).contains(&self.batch_size) {
            return invalid("IMAGELIB_CATALOG__BATCH_SIZE must be between 1 and 10000");
        }
        if self.apply_attempts == 0 {
            return invalid("IMAGELIB_CATALOG__APPLY_ATTEMPTS must be at least 1");
        }
        if !(10..=60_000).contains(&self.fetch_wait_ms) {
            return invalid("IMAGELIB_CATALOG__FETCH_WAIT_MS must be between 10 and 60000");
        }
        if self.batch_linger_ms > 1000 {
            return invalid("IMAGELIB_CATALOG__BATCH_LINGER_MS must be at most 1000");
        }
        if self.page_cache_mb > 4096 {
            return invalid("IMAGELIB_CATALOG__PAGE_CACHE_MB must be at most 4096");
        }
        if self.row_cache_mb > 4096 {
            return invalid("IMAGELIB_CATALOG__ROW_CACHE_MB must be at most 4096");
        }
        Ok(())
    }

    pub fn fetch_wait(&self) -> Duration {
        Duration::from_millis(self.fetch_wait_ms)
    }

    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// The delay before retry number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.retry_backoff_ms.max(1);
        let factor = 1u64 << attempt.saturating_sub(1).min(16);
        Duration::from_millis(base.saturating_mul(factor).min(30_000))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_variables_reach_the_catalog_settings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("IMAGELIB_CATALOG__BATCH_SIZE", "250");
            jail.set_env("IMAGELIB_CATALOG__BATCH_LINGER_MS", "5");
            jail.set_env("IMAGELIB_CATALOG__SERVE_REGISTRIES", "false");
            jail.set_env("IMAGELIB_STREAM", "OTHER");
            let c = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(c.catalog.batch_size, 250);
            assert_eq!(c.catalog.batch_linger(), Duration::from_millis(5));
            assert_eq!(c.catalog.serve_registries, Some(false));
            assert_eq!(c.common.stream, "OTHER");
            assert_eq!(c.catalog.apply_attempts, 5);
            Ok(())
        });
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = CatalogSettings::default();
        assert_eq!(s.backoff(1), Duration::from_millis(200));
        assert_eq!(s.backoff(3), Duration::from_millis(800));
        assert_eq!(s.backoff(40), Duration::from_secs(30));
        assert!(
            CatalogSettings {
                batch_size: 0,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            CatalogSettings {
                batch_linger_ms: 1001,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
