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
            }
        })
        .collect();
    Ok(axum::Json(ScannerStatus { registries: items }))
}
