//! The HTTP API: `GET /v1/scanner/status`.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use imagelib_platform::Problem;
use imagelib_platform::auth::{Caller, Tokens};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ScannerConfig;
use crate::runner::{interval_of, next_due};
use crate::store::Store;

#[derive(Debug)]
pub struct ApiState {
    pub store: Store,
    pub config: ScannerConfig,
}

pub fn router(state: Arc<ApiState>, tokens: Tokens) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(status))
        .with_state(state)
        .layer(axum::Extension(tokens))
}

/// The scanner's view of every registry it scans.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScannerStatus {
    pub registries: Vec<RegistryStatus>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryStatus {
    #[schema(format = Uuid)]
    pub registry_id: String,
    pub url: String,
    /// A scan is running now (started and not finished).
    pub running: bool,
    pub running_since: Option<DateTime<Utc>>,
    /// The repository of a running repository scan.
    pub running_repository: Option<String>,
    /// The scanner replica running it (`system:sync-scanner[/<instance>]`).
    pub running_by: Option<String>,
    pub last_scan: Option<LastScan>,
    /// When the next scheduled scan is due (in the past when it is due now).
    pub next_due_at: Option<DateTime<Utc>>,
    pub interval_secs: u64,
    /// Tags the scanner knows in this registry.
    pub known_tags: u64,
    /// The pull budget the registry announced to the last scan that was told one
    /// (Docker Hub's `ratelimit-limit` / `ratelimit-remaining`); absent when it never said.
    pub rate_limit: Option<RateLimitStatus>,
    /// The vendor API budget the last repository listing saw (GitHub's
    /// `x-ratelimit-*` for a `ghcr` registry's packages); absent when none was seen.
    pub api_rate_limit: Option<ApiRateLimitStatus>,
    /// The visibility of the packages the last GitHub packages listing found (`ghcr`).
    pub package_visibility: Option<PackageVisibility>,
}

/// A vendor API's budget as its last answer announced it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ApiRateLimitStatus {
    /// Requests per window (`x-ratelimit-limit`).
    pub limit: u64,
    /// Requests left (`x-ratelimit-remaining`).
    pub remaining: u64,
    /// When the budget is full again (`x-ratelimit-reset`).
    pub reset_at: Option<DateTime<Utc>>,
    /// Which budget (`x-ratelimit-resource`: `core`, …).
    pub resource: Option<String>,
    /// When the API said so.
    pub observed_at: DateTime<Utc>,
}

impl ApiRateLimitStatus {
    pub fn new(
        rl: &registry_client::vendor::ghcr::ApiRateLimit,
        observed_at: DateTime<Utc>,
    ) -> Self {
        ApiRateLimitStatus {
            limit: rl.limit,
            remaining: rl.remaining,
            reset_at: rl.reset.map(DateTime::<Utc>::from),
            resource: rl.resource.clone(),
            observed_at,
        }
    }
}

/// The visibility of a listing's packages (`public`, `private`, `internal`, as GitHub
/// says; `unknown` when it did not), as many as the listing itself was allowed.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, ToSchema)]
pub struct PackageVisibility {
    /// Packages per visibility.
    pub counts: std::collections::BTreeMap<String, u64>,
    /// Each listed repository's visibility.
    pub repositories: std::collections::BTreeMap<String, String>,
    /// Whether the listing was cut (a cap, a rate limit): then these are not all.
    pub complete: bool,
    pub observed_at: DateTime<Utc>,
}

impl PackageVisibility {
    pub fn of(
        packages: &registry_client::vendor::ghcr::Packages,
        observed_at: DateTime<Utc>,
    ) -> Self {
        let mut v = PackageVisibility {
            complete: packages.listing.complete,
            observed_at,
            ..Default::default()
        };
        // Only the listed repositories (the listing's caps bound them).
        for name in &packages.listing.items {
            let visibility = packages
                .visibility
                .get(name)
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| "unknown".to_owned());
            *v.counts.entry(visibility.clone()).or_default() += 1;
            v.repositories.insert(name.to_string(), visibility);
        }
        v
    }
}

/// A registry's announced pull budget, as a scan left it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct RateLimitStatus {
    /// Pulls (manifest GETs) allowed per window.
    pub limit: u64,
    /// Pulls left in the window when the scan ended (the registry's count, minus the
    /// GETs the scan sent after it was told).
    pub remaining: u64,
    /// The window in seconds (`;w=`), when the registry named it.
    pub window_secs: Option<u64>,
    /// When the registry said so.
    pub observed_at: DateTime<Utc>,
}

impl From<registry_client::RateLimit> for RateLimitStatus {
    fn from(rl: registry_client::RateLimit) -> Self {
        RateLimitStatus {
            limit: rl.limit,
            remaining: rl.remaining,
            window_secs: rl.window.map(|w| w.as_secs()),
            observed_at: rl.observed_at.into(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LastScan {
    #[schema(format = Uuid)]
    pub sync_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `completed`, `partial` or `failed`.
    pub state: Option<String>,
    /// The `sync.completed` counts (`repositories`, `tags_seen`, `added`, `moved`,
    /// `removed`, `requests`, `duration_ms`, `partial`, `rate_limited`) or the
    /// `sync.failed` `reason`.
    #[schema(value_type = Option<Object>)]
    pub summary: Option<serde_json::Value>,
}

/// Each registry's last scan, whether one runs, and when the next is due.
#[utoipa::path(
    get,
    path = "/v1/scanner/status",
    tag = "scanner",
    responses(
        (status = 200, description = "Scan status per registry visible to the caller", body = ScannerStatus),
    ),
)]
async fn status(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<axum::Json<ScannerStatus>, Problem> {
    let internal = |e: crate::store::StoreError| Problem::internal(&e);
    let registries = state.store.registries().await.map_err(internal)?;
    let scans = state.store.scans().await.map_err(internal)?;
    let counts = state.store.known_tag_counts().await.map_err(internal)?;
    let now = Utc::now();
    let stale = chrono::Duration::seconds(state.config.scan_timeout_secs as i64 + 60);
    let items = registries
        .iter()
        .filter(|r| caller.sees(&r.visibility))
        .map(|r| {
            let scan = scans.get(&r.id);
            let running = scan.is_some_and(|s| {
                s.running_sync_id.is_some() && s.running_since.is_some_and(|t| now - t < stale)
            });
            RegistryStatus {
                registry_id: r.id.to_string(),
                url: r.url.clone(),
                running,
                running_since: scan.and_then(|s| s.running_since).filter(|_| running),
                running_repository: scan
                    .and_then(|s| s.running_repository.clone())
                    .filter(|_| running),
                running_by: scan
                    .and_then(|s| s.running_actor.clone())
                    .filter(|_| running),
                last_scan: scan
                    .filter(|s| s.last_finished_at.is_some())
                    .map(|s| LastScan {
                        sync_id: s.last_sync_id.map(|i| i.to_string()),
                        started_at: s.last_started_at,
                        finished_at: s.last_finished_at,
                        state: s.last_state.clone(),
                        summary: s.last_summary.clone(),
                    }),
                next_due_at: state
                    .config
                    .schedule
                    .then(|| next_due(&state.config, r, scan, now)),
                interval_secs: interval_of(&state.config, r),
                known_tags: counts.get(&r.id).copied().unwrap_or(0),
                rate_limit: scan
                    .and_then(|s| s.rate_limit.clone())
                    .and_then(|v| serde_json::from_value(v).ok()),
                api_rate_limit: scan
                    .and_then(|s| s.api_rate_limit.clone())
                    .and_then(|v| serde_json::from_value(v).ok()),
                package_visibility: scan
                    .and_then(|s| s.package_visibility.clone())
                    .and_then(|v| serde_json::from_value(v).ok()),
            }
        })
        .collect();
    Ok(axum::Json(ScannerStatus { registries: items }))
}
