//! Harbor's own scans as a vulnerability report source: a completed `scan_overview` of a
//! current tag digest becomes `image.vulnerabilities_reported` with
//! `origin: harbor_scan_overview`, so the catalog sees it like a report referrer.
//!
//! The event's `source` is the sha256 of the canonical overview JSON, and it goes through
//! the same fact check as a referrer's report (`vuln/{source}` of the digest): the same
//! overview read on every scan is said once; a re-scan in Harbor (a new overview) is said
//! again.

use std::collections::HashMap;

use imagelib_events::event::{ReportOrigin, VulnerabilitiesReported};
use imagelib_events::model::{ScannerInfo, SeverityCounts};
use imagelib_events::{Digest, EventId, EventPayload, RegistryId, RepositoryName, TraceParent};
use registry_client::vendor::harbor::{ArtifactScan, ScanReport};

use super::state::fact_value;
use super::{Current, Outbox, Trust, TrustError};

/// The event a completed Harbor scan of `digest` stands for.
pub fn report_event(
    registry: RegistryId,
    repository: &RepositoryName,
    digest: &Digest,
    report: &ScanReport,
) -> VulnerabilitiesReported {
    let c = &report.counts;
    VulnerabilitiesReported {
        registry_id: registry,
        repository: repository.clone(),
        digest: digest.clone(),
        scanner: ScannerInfo {
            name: report.scanner_name.chars().take(128).collect(),
            version: report.scanner_version.chars().take(128).collect(),
        },
        // Harbor's overview does not say which database the scanner used.
        db: String::new(),
        scanned_at: report.end_time.unwrap_or(chrono::DateTime::UNIX_EPOCH),
        counts: SeverityCounts {
            critical: c.critical,
            high: c.high,
            medium: c.medium,
            low: c.low,
            unknown: c.unknown,
        },
        fixable: report.fixable,
        source: report.source.clone(),
        origin: Some(ReportOrigin::HarborScanOverview),
    }
}

impl Trust {
    /// Emits Harbor's completed scans of the current digests of `repository` (tag digests
    /// and platform manifests) that were not said yet; how many were emitted. Artifacts of
    /// digests the scan does not track are left out.
    pub async fn harbor_reports(
        &self,
        registry: RegistryId,
        repository: &RepositoryName,
        current: &[Current],
        scans: &[ArtifactScan],
        traceparent: Option<TraceParent>,
    ) -> Result<usize, TrustError> {
        let tracked: std::collections::HashSet<&Digest> = current
            .iter()
            .flat_map(|c| std::iter::once(&c.digest).chain(&c.platforms))
            .collect();
        let reports: HashMap<&Digest, &ScanReport> = scans
            .iter()
            .filter(|s| tracked.contains(&s.digest))
            .filter_map(|s| Some((&s.digest, s.report.as_ref()?)))
            .collect();
        if reports.is_empty() {
            return Ok(0);
        }
        let keys: Vec<String> = reports.keys().map(|d| d.to_string()).collect();
        let facts = self
            .inner
            .store
            .trust_facts(registry, repository, &keys)
            .await?;
        let mut out = Outbox::default();
        for (digest, report) in reports {
            let payload = EventPayload::from(report_event(registry, repository, digest, report));
            let key = format!("vuln/{}", report.source);
            let previous = facts.get(&(digest.to_string(), key.clone()));
            let value = fact_value(&payload);
            if previous.is_some_and(|(v, _)| *v == value) {
                continue;
            }
            let after = previous.map(|(_, seq)| *seq).unwrap_or(0);
            let id = EventId::for_fact(&format!(
                "image/{registry}/{repository}@{digest}/{key}/{value}/after/{after}"
            ));
            self.emit(&mut out, payload, id, traceparent);
        }
        let emitted = out.envelopes.len();
        self.publish(out).await?;
        Ok(emitted)
    }
}
