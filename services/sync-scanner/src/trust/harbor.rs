//! Harbor's own scans as a vulnerability report source: a completed `scan_overview` of a
//! current tag digest becomes `image.vulnerabilities_reported` with
//! `origin: harbor_scan_overview`, so the catalog sees it like a report referrer, and it is
//! evidence for the trust policy.
//!
//! The event's `source` is the sha256 of the canonical overview JSON, and it goes through
//! the same fact check as a referrer's report (`vuln/{source}` of the digest): the same
//! overview read on every scan is said once; a re-scan in Harbor (a new overview) is said
//! again, and the digest is evaluated again.
//!
//! An overview has counts by severity but no vulnerability ids, so an allow-list cannot
//! excuse any of them: for the policy, each severity it counts stands as one finding
//! without an id.

use std::collections::{HashMap, HashSet};

use imagelib_events::event::{ReportOrigin, VulnerabilitiesReported};
use imagelib_events::model::{ScannerInfo, SeverityCounts};
use imagelib_events::{Digest, EventId, EventPayload, RegistryId, RepositoryName, TraceParent};
use imagelib_trust::evidence::Evidence;
use imagelib_trust::vuln::{self, Severity, VulnFinding, VulnSummary};
use registry_client::vendor::harbor::{ArtifactScan, ScanReport};

use super::state::fact_value;
use super::{Current, Facts, Outbox, Trust, TrustError};

/// Harbor's reports of one pass, by digest.
pub(super) type HarborReports = HashMap<Digest, VulnerabilitiesReported>;

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

/// The completed scans of `scans` that are of current digests (tag digests and platform
/// manifests); artifacts the scan does not track are left out.
pub(super) fn reports_of(
    registry: RegistryId,
    repository: &RepositoryName,
    current: &[Current],
    scans: &[ArtifactScan],
) -> HarborReports {
    let tracked: HashSet<&Digest> = current
        .iter()
        .flat_map(|c| std::iter::once(&c.digest).chain(&c.platforms))
        .collect();
    scans
        .iter()
        .filter(|s| tracked.contains(&s.digest))
        .filter_map(|s| {
            let report = s.report.as_ref()?;
            Some((
                s.digest.clone(),
                report_event(registry, repository, &s.digest, report),
            ))
        })
        .collect()
}

/// The policy evidence of a Harbor report.
pub(super) fn evidence(e: &VulnerabilitiesReported) -> Evidence {
    let c = &e.counts;
    let findings = [
        (c.critical, Severity::Critical),
        (c.high, Severity::High),
        (c.medium, Severity::Medium),
        (c.low, Severity::Low),
        (c.unknown, Severity::Unknown),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(_, severity)| VulnFinding {
        id: String::new(),
        severity,
        fixed: None,
    })
    .collect();
    Evidence::Vulnerabilities {
        source: e.source.to_string(),
        summary: VulnSummary {
            scanner: vuln::ScannerInfo {
                name: e.scanner.name.clone(),
                version: Some(e.scanner.version.clone()).filter(|v| !v.is_empty()),
            },
            db: None,
            scanned_at: Some(e.scanned_at.to_rfc3339()),
            counts: vuln::SeverityCounts {
                critical: c.critical,
                high: c.high,
                medium: c.medium,
                low: c.low,
                unknown: c.unknown,
            },
            fixable: Some(e.fixable),
            findings,
            truncated: false,
        },
    }
}

/// Harbor's reports of `digest`: the one of this pass, and those said before (the facts),
/// each source once. Harbor keeps one overview per scanner and artifact, so the overview
/// read now replaces the earlier ones of its scanner whatever their scan times say (a
/// re-scan within the same second, or a clock that went back, must not bring back a
/// report Harbor no longer has).
pub(super) fn said_of(facts: &Facts, pass: &HarborReports, digest: &Digest) -> Vec<Evidence> {
    let mut out = Vec::new();
    let mut sources = HashSet::new();
    let current = pass.get(digest);
    if let Some(e) = current {
        sources.insert(e.source.to_string());
        out.push(evidence(e));
    }
    let replaced = |e: &VulnerabilitiesReported| {
        current.is_some_and(|c| c.scanner.name.eq_ignore_ascii_case(&e.scanner.name))
    };
    for ((d, key), (value, _)) in facts {
        if d != digest.as_str() || !key.starts_with("vuln/") {
            continue;
        }
        let Ok(e) = serde_json::from_value::<VulnerabilitiesReported>(value["event"].clone())
        else {
            continue;
        };
        if e.origin == Some(ReportOrigin::HarborScanOverview)
            && !replaced(&e)
            && sources.insert(e.source.to_string())
        {
            out.push(evidence(&e));
        }
    }
    out
}

impl Trust {
    /// Emits the reports of `reports` not said yet (one fact query for the repository);
    /// the digests that got a new one.
    pub(super) async fn harbor_pass(
        &self,
        registry: RegistryId,
        repository: &RepositoryName,
        reports: &HarborReports,
        traceparent: Option<TraceParent>,
    ) -> Result<HashSet<Digest>, TrustError> {
        if reports.is_empty() {
            return Ok(HashSet::new());
        }
        let keys: Vec<String> = reports.keys().map(|d| d.to_string()).collect();
        let facts = self
            .inner
            .store
            .trust_facts(registry, repository, &keys)
            .await?;
        let mut out = Outbox::default();
        let mut new = HashSet::new();
        for (digest, event) in reports {
            let key = format!("vuln/{}", event.source);
            let payload = EventPayload::from(event.clone());
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
            new.insert(digest.clone());
        }
        if !new.is_empty() {
            tracing::info!(%registry, %repository, reports = new.len(), "Harbor scan overviews reported");
        }
        self.publish(out).await?;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_severity_counted_is_one_finding_without_id() {
        let e = VulnerabilitiesReported {
            registry_id: RegistryId::new(),
            repository: "ai/app".parse().unwrap(),
            digest: format!("sha256:{}", "a".repeat(64)).parse().unwrap(),
            scanner: ScannerInfo {
                name: "Trivy".into(),
                version: "v0.58.1".into(),
            },
            db: String::new(),
            scanned_at: "2026-12-01T10:00:03Z".parse().unwrap(),
            counts: SeverityCounts {
                critical: 2,
                high: 0,
                medium: 5,
                low: 0,
                unknown: 1,
            },
            fixable: 3,
            source: format!("sha256:{}", "b".repeat(64)).parse().unwrap(),
            origin: Some(ReportOrigin::HarborScanOverview),
        };
        let Evidence::Vulnerabilities { source, summary } = evidence(&e) else {
            panic!("a report");
        };
        assert_eq!(source, e.source.to_string());
        let severities: Vec<Severity> = summary.findings.iter().map(|f| f.severity).collect();
        assert_eq!(
            severities,
            [Severity::Critical, Severity::Medium, Severity::Unknown]
        );
        assert!(summary.findings.iter().all(|f| f.id.is_empty()));
        assert_eq!(summary.counts.critical, 2);
        assert_eq!(summary.fixable, Some(3));

        let mut facts = Facts::new();
        let digest = e.digest.clone();
        let payload = EventPayload::from(e.clone());
        facts.insert(
            (digest.to_string(), format!("vuln/{}", e.source)),
            (fact_value(&payload), 7),
        );
        let mut referrer = e.clone();
        referrer.origin = None;
        referrer.source = format!("sha256:{}", "c".repeat(64)).parse().unwrap();
        facts.insert(
            (digest.to_string(), format!("vuln/{}", referrer.source)),
            (fact_value(&EventPayload::from(referrer)), 8),
        );
        assert_eq!(said_of(&facts, &HarborReports::new(), &digest).len(), 1);
        let pass: HarborReports = [(digest.clone(), e.clone())].into_iter().collect();
        assert_eq!(said_of(&facts, &pass, &digest).len(), 1, "each source once");

        // Harbor scanned again with the same scan time: the overview read now is the one
        // that counts, the earlier one of that scanner is gone.
        let mut rescan = e.clone();
        rescan.counts.critical = 0;
        rescan.source = format!("sha256:{}", "d".repeat(64)).parse().unwrap();
        let pass: HarborReports = [(digest.clone(), rescan.clone())].into_iter().collect();
        let said = said_of(&facts, &pass, &digest);
        assert_eq!(said.len(), 1);
        let Evidence::Vulnerabilities { source, .. } = &said[0] else {
            panic!("{said:?}")
        };
        assert_eq!(*source, rescan.source.to_string());
        // Another scanner's earlier overview still counts.
        let mut other = rescan;
        other.scanner.name = "Grype".into();
        let pass: HarborReports = [(digest.clone(), other)].into_iter().collect();
        assert_eq!(said_of(&facts, &pass, &digest).len(), 2);
    }
}
