//! The service's configuration (README, "Configuration").
//!
//! Besides the common settings, everything of the scanner's own sits under `scanner`
//! (`IMAGELIB_SCANNER__<FIELD>` in the environment, `[scanner]` in the TOML file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use imagelib_events::RegistryId;
use imagelib_platform::config::CommonConfig;
use serde::{Deserialize, Serialize};

/// Listens here unless `IMAGELIB_HTTP_ADDR` says otherwise.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8083);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    #[serde(flatten)]
    pub common: CommonConfig,
    /// `IMAGELIB_KEYS_BUCKET`: the NATS KV bucket of wrapped data keys (default
    /// `<stream>_KEYS`); the same as registry-registry's.
    pub keys_bucket: Option<String>,
    /// `IMAGELIB_PROVIDERS__ECR`, `IMAGELIB_PROVIDERS__AAD`: provider token endpoints other
    /// than the public clouds' (as registry-registry's).
    pub providers: registry_client::ProviderEndpoints,
    /// `IMAGELIB_SCANNER__*`.
    pub scanner: ScannerConfig,
}

/// The scanner's own settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ScannerConfig {
    /// `IMAGELIB_SCANNER__INSTANCE`: this replica's stable name (a StatefulSet pod name).
    /// Names its durable stream consumers, so replicas sharing a stream each project
    /// everything; empty for a single scanner.
    pub instance: String,
    /// `IMAGELIB_SCANNER__SCHEDULE`: scan registries on their interval (false: only on
    /// requests).
    pub schedule: bool,
    /// `IMAGELIB_SCANNER__INTERVAL_SECS`: the scan interval of registries that set none.
    pub interval_secs: u64,
    /// `IMAGELIB_SCANNER__JITTER_SECS`: each registry's scans are offset by a stable
    /// amount in `[0, jitter)` (derived from its id), so registries spread out and every
    /// replica agrees on when a registry is due. Capped at the interval.
    pub jitter_secs: u64,
    /// `IMAGELIB_SCANNER__SCAN_TIMEOUT_SECS`: a scan of one registry is cut (and ends
    /// `partial`) after this long, so a slow registry never holds a worker forever.
    pub scan_timeout_secs: u64,
    /// `IMAGELIB_SCANNER__CONCURRENT_SCANS`: registries this process scans at once.
    pub concurrent_scans: usize,
    /// `IMAGELIB_SCANNER__REPOSITORY_CONCURRENCY`: repositories of one registry scanned
    /// at once. Twice the request cap by default: a repository spends part of its scan
    /// publishing and writing its cache, and others keep the request slots busy meanwhile.
    pub repository_concurrency: usize,
    /// `IMAGELIB_SCANNER__MAX_CONCURRENCY`: HTTP requests in flight to one registry.
    pub max_concurrency: usize,
    /// `IMAGELIB_SCANNER__REQUEST_BUDGET`: requests one scan may make (none: unlimited).
    pub request_budget: Option<u64>,
    /// `IMAGELIB_SCANNER__PAGE_SIZE`: `n` for `_catalog` and `tags/list`.
    pub page_size: u32,
    /// `IMAGELIB_SCANNER__REQUEST_TIMEOUT_SECS`: the timeout of one HTTP exchange.
    pub request_timeout_secs: u64,
    /// `IMAGELIB_SCANNER__MAX_RETRY_AFTER_SECS`: the longest `Retry-After` waited in
    /// place; a longer one defers the repository to the next scan (`rate_limited`).
    pub max_retry_after_secs: u64,
    /// `IMAGELIB_SCANNER__RATE_LIMIT_RESERVE_PERCENT`: once a registry's announced pull
    /// budget (`ratelimit-remaining`, Docker Hub) is at or below this share of its limit,
    /// manifest GETs are paced to the window's average rate, and none is sent at zero.
    pub rate_limit_reserve_percent: u8,
    /// `IMAGELIB_SCANNER__REFERRERS`: look up signatures, SBOMs and attestations of new
    /// digests.
    pub referrers: bool,
    /// `IMAGELIB_SCANNER__LEASE_TTL_SECS`: a registry's scan lease expires this long after
    /// its last renewal (a crashed scanner's registry is free again after it).
    pub lease_ttl_secs: u64,
    /// `IMAGELIB_SCANNER__REQUEST_MAX_AGE_SECS`: `sync.requested` events older than this
    /// are not turned into scans (a replay after a rebuild does not rescan history).
    pub request_max_age_secs: u64,
    /// `IMAGELIB_SCANNER__RULES_DEBOUNCE_MS`: a registry whose rules changed is rescanned
    /// this long after the last change.
    pub rules_debounce_ms: u64,
    /// `IMAGELIB_SCANNER__AGENT_CONFIG`: a beacon agent YAML file (DESIGN section 6) whose
    /// repositories become rules of `agent_registry`.
    pub agent_config: Option<PathBuf>,
    /// `IMAGELIB_SCANNER__AGENT_REGISTRY`: the registry id the agent YAML applies to.
    pub agent_registry: Option<RegistryId>,
    /// `IMAGELIB_SCANNER__MAX_MANIFEST_BYTES`: the largest manifest or index read (the
    /// OCI distribution spec suggests registries accept up to 4 MiB).
    pub max_manifest_bytes: u64,
    /// `IMAGELIB_SCANNER__MAX_CONFIG_BYTES`: the largest image config blob read.
    pub max_config_bytes: u64,
    /// `IMAGELIB_SCANNER__MAX_INDEX_CHILDREN`: the most platform manifests of one index
    /// looked at.
    pub max_index_children: usize,
    /// `IMAGELIB_SCANNER__MAX_TAGS`: the most tags of one repository (and repositories of
    /// one catalog) listed.
    pub max_tags: u64,
    /// `IMAGELIB_SCANNER__MAX_PAGES`: the most pages of one listing followed.
    pub max_pages: u32,
    /// `IMAGELIB_SCANNER__MAX_LISTING_BYTES`: the most bytes of one listing, all pages
    /// together.
    pub max_listing_bytes: u64,
    /// `IMAGELIB_SCANNER__MAX_PAGE_BYTES`: the most bytes of one listing page.
    pub max_page_bytes: u64,
    /// `IMAGELIB_SCANNER__JOB_MAX_FAILURES`: a scan job that failed (or panicked) this many
    /// times goes to the dead-letter subject `<prefix>.dlq.sync-scanner-jobs`.
    pub job_max_failures: u32,
    /// `IMAGELIB_SCANNER__JOB_MAX_DELIVER`: the jobs consumer's `max_deliver`, a hard
    /// bound on deliveries of one job (a job waiting for a busy registry's lease is
    /// delivered again every few seconds, so this is much larger than the failures).
    pub job_max_deliver: i64,
    /// `IMAGELIB_SCANNER__JOB_BACKOFF_SECS`: the first delay before a failed job runs
    /// again; doubled on each failure, at most 5 minutes.
    pub job_backoff_secs: u64,
    /// `IMAGELIB_SCANNER__MAX_REFERRER_BYTES`: the largest referrer blob read (a signature
    /// payload, an attestation, an SBOM, a report); a larger one is skipped with a finding.
    pub max_referrer_bytes: u64,
    /// `IMAGELIB_SCANNER__MAX_SCAN_REFERRER_BYTES`: the referrer bytes one scan reads at
    /// most; what is left is read by the next scan.
    pub max_scan_referrer_bytes: u64,
    /// `IMAGELIB_SCANNER__TRUST_ROOT`: a Sigstore `trusted_root.json` for keyless
    /// signatures (Fulcio CAs, Rekor keys); read at start, a bad file stops the start.
    pub trust_root: Option<PathBuf>,
    /// `IMAGELIB_SCANNER__NOTATION_TRUST_STORE`: a PEM bundle of the CA certificates
    /// Notation signatures chain to; read at start.
    pub notation_trust_store: Option<PathBuf>,
    /// `IMAGELIB_SCANNER__REFERRERS_RECHECK_SECS`: on scheduled scans, the referrers of a
    /// digest already known are listed again only when last listed longer ago than this
    /// (manual and webhook scans list them all; a new digest's are always listed).
    pub referrers_recheck_secs: u64,
    /// `IMAGELIB_SCANNER__REEVALUATE_INTERVAL`: seconds between re-evaluations of every
    /// stored digest's trust policy (allow-list expiry, certificate validity), with no
    /// registry request; 0 turns the timer off.
    pub reevaluate_interval: u64,
    /// `IMAGELIB_SCANNER__INTEGRITY_PERIOD_SECS`: every immutable tag of every registry is
    /// re-verified by `HEAD` within this many seconds by the integrity sweep
    /// ([`crate::integrity`]), spread evenly over the period; 0 turns the sweep off.
    pub integrity_period_secs: u64,
    /// `IMAGELIB_SCANNER__INTEGRITY_MAX_RPS`: the sweep's request budget per registry, in
    /// requests per second (fractions allowed: `0.5` is one every two seconds). A
    /// registry with more immutable tags than `period × budget` takes longer than the
    /// period, and `imagelib.integrity.sweep.lag` says by how much.
    pub integrity_max_rps: f64,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            instance: String::new(),
            schedule: true,
            interval_secs: 300,
            jitter_secs: 60,
            scan_timeout_secs: 900,
            concurrent_scans: 4,
            repository_concurrency: 16,
            max_concurrency: 8,
            request_budget: None,
            page_size: 100,
            request_timeout_secs: 30,
            max_retry_after_secs: 30,
            rate_limit_reserve_percent: 20,
            referrers: true,
            lease_ttl_secs: 30,
            request_max_age_secs: 900,
            rules_debounce_ms: 2000,
            agent_config: None,
            agent_registry: None,
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 4 << 20,
            max_index_children: 256,
            max_tags: 100_000,
            max_pages: 1_000,
            max_listing_bytes: 64 << 20,
            max_page_bytes: 8 << 20,
            job_max_failures: 5,
            job_max_deliver: 1_000,
            job_backoff_secs: 5,
            max_referrer_bytes: 16 << 20,
            max_scan_referrer_bytes: 256 << 20,
            trust_root: None,
            notation_trust_store: None,
            referrers_recheck_secs: 3600,
            reevaluate_interval: 3600,
            integrity_period_secs: 86_400,
            integrity_max_rps: 2.0,
        }
    }
}

impl ScannerConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs.max(1))
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs.max(3))
    }

    pub fn scan_timeout(&self) -> Duration {
        Duration::from_secs(self.scan_timeout_secs.max(1))
    }

    /// The integrity sweep's period, `None` when the sweep is off.
    pub fn integrity_period(&self) -> Option<Duration> {
        (self.integrity_period_secs > 0).then(|| Duration::from_secs(self.integrity_period_secs))
    }

    /// The integrity sweep's budget per registry (requests per second): the configured
    /// one when it is a positive number, else the default.
    pub fn integrity_max_rps(&self) -> f64 {
        if self.integrity_max_rps.is_finite() && self.integrity_max_rps > 0.0 {
            self.integrity_max_rps.max(0.001)
        } else {
            Self::default().integrity_max_rps
        }
    }

    /// The delay before a job that failed `failures` times runs again.
    pub fn job_backoff(&self, failures: u32) -> Duration {
        let base = Duration::from_secs(self.job_backoff_secs.max(1));
        base.saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(Duration::from_secs(300))
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

    /// The KV bucket of the registries' data keys.
    pub fn keys_bucket(&self) -> String {
        self.keys_bucket
            .clone()
            .unwrap_or_else(|| imagelib_secrets::bucket_for_stream(&self.common.stream))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn nested_variables_reach_the_scanner_settings() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("IMAGELIB_SCANNER__INTERVAL_SECS", "60");
            jail.set_env("IMAGELIB_SCANNER__AGENT_CONFIG", "/etc/agent.yaml");
            jail.set_env(
                "IMAGELIB_SCANNER__AGENT_REGISTRY",
                "0190f1d2-3c4b-7a5e-8f90-123456789abc",
            );
            jail.set_env("IMAGELIB_SCANNER__SCHEDULE", "false");
            jail.set_env("IMAGELIB_SCANNER__INTEGRITY_PERIOD_SECS", "3600");
            jail.set_env("IMAGELIB_SCANNER__INTEGRITY_MAX_RPS", "0.5");
            jail.set_env("IMAGELIB_STREAM", "OTHER");
            let c = Config::load().map_err(|e| e.to_string())?;
            assert_eq!(c.scanner.interval_secs, 60);
            assert!(!c.scanner.schedule);
            assert_eq!(
                c.scanner.integrity_period(),
                Some(std::time::Duration::from_secs(3600))
            );
            assert_eq!(c.scanner.integrity_max_rps(), 0.5);
            assert_eq!(
                c.scanner.agent_config.as_deref(),
                Some(std::path::Path::new("/etc/agent.yaml"))
            );
            assert!(c.scanner.agent_registry.is_some());
            assert_eq!(c.scanner.page_size, 100, "defaults stay");
            assert_eq!(c.common.stream, "OTHER");
            assert_eq!(c.keys_bucket(), "OTHER_KEYS");
            Ok(())
        });
    }
}
