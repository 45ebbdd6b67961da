//! Vulnerability reports reduced to one [`VulnSummary`], whatever produced them.
//!
//! Policy (later: "no critical fixable CVE older than N days") needs counts, not the
//! report, and reports arrive in several shapes: a plain Trivy JSON report, the cosign
//! vuln predicate wrapping one, and the in-toto `vulns` predicate. Counts are per finding
//! (a CVE in two packages counts twice); `cves` lists each id once.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;

use crate::attestation::{self, AttestationError, MAX_ATTESTATION_BYTES, Statement};

/// Predicate type of `cosign attest --type vuln` (older cosign wrote it without scheme).
pub const COSIGN_VULN_PREDICATE: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
const COSIGN_VULN_PREDICATE_OLD: &str = "cosign.sigstore.dev/attestation/vuln/v1";
/// Predicate type of the in-toto vulnerability predicate (v0.1).
pub const IN_TOTO_VULNS_PREDICATE: &str = "https://in-toto.io/attestation/vulns";
/// At most this many distinct ids are kept in [`VulnSummary::cves`].
pub const MAX_IDS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannerInfo {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeverityCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Maps a qualitative label (any case) or a CVSS base score to a severity.
    pub fn parse(label: &str) -> Self {
        let label = label.trim();
        if let Ok(score) = label.parse::<f64>() {
            return match score {
                s if s >= 9.0 => Self::Critical,
                s if s >= 7.0 => Self::High,
                s if s >= 4.0 => Self::Medium,
                s if s > 0.0 => Self::Low,
                _ => Self::Unknown,
            };
        }
        match label.to_ascii_lowercase().as_str() {
            "critical" => Self::Critical,
            "high" | "important" => Self::High,
            "medium" | "moderate" => Self::Medium,
            "low" | "negligible" => Self::Low,
            _ => Self::Unknown,
        }
    }
}

impl SeverityCounts {
    fn add(&mut self, s: Severity) {
        let slot = match s {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Unknown => &mut self.unknown,
        };
        *slot += 1;
    }

    pub fn total(&self) -> u64 {
        self.critical + self.high + self.medium + self.low + self.unknown
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VulnSummary {
    pub scanner: ScannerInfo,
    /// Vulnerability database version, or its last-update time when that is all there is.
    pub db: Option<String>,
    /// When the scan ran (RFC 3339, as written by the scanner).
    pub scanned_at: Option<String>,
    pub counts: SeverityCounts,
    /// Findings with a fixed version available; `None` when the format does not say.
    pub fixable: Option<u64>,
    /// Distinct vulnerability ids, sorted, at most [`MAX_IDS`].
    pub cves: Vec<String>,
    /// True when more than [`MAX_IDS`] distinct ids were seen.
    pub cves_truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VulnError {
    #[error("report is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("not a Trivy JSON report: {0}")]
    Trivy(String),
    #[error("malformed {predicate} predicate: {detail}")]
    Predicate {
        predicate: &'static str,
        detail: String,
    },
    #[error("predicate type `{0}` is not a vulnerability scan")]
    NotVulnPredicate(String),
    #[error(transparent)]
    Attestation(#[from] AttestationError),
}

#[derive(Default)]
struct Ids {
    set: BTreeSet<String>,
    truncated: bool,
}

impl Ids {
    fn add(&mut self, id: &str) {
        if id.is_empty() || self.set.contains(id) {
            return;
        }
        if self.set.len() >= MAX_IDS {
            self.truncated = true;
        } else {
            self.set.insert(id.to_owned());
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TrivyReport {
    created_at: Option<String>,
    trivy: Option<TrivyMeta>,
    results: Option<Vec<TrivyResult>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TrivyMeta {
    version: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TrivyResult {
    vulnerabilities: Option<Vec<TrivyVuln>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TrivyVuln {
    #[serde(rename = "VulnerabilityID")]
    id: String,
    #[serde(rename = "Severity")]
    severity: String,
    #[serde(rename = "FixedVersion")]
    fixed_version: Option<String>,
}

fn summarise_trivy(report: TrivyReport) -> VulnSummary {
    let mut counts = SeverityCounts::default();
    let mut fixable = 0;
    let mut ids = Ids::default();
    for v in report
        .results
        .unwrap_or_default()
        .into_iter()
        .flat_map(|r| r.vulnerabilities.unwrap_or_default())
    {
        counts.add(Severity::parse(&v.severity));
        if v.fixed_version.is_some_and(|f| !f.trim().is_empty()) {
            fixable += 1;
        }
        ids.add(&v.id);
    }
    VulnSummary {
        scanner: ScannerInfo {
            name: "trivy".into(),
            version: report.trivy.and_then(|t| t.version),
        },
        db: None,
        scanned_at: report.created_at,
        counts,
        fixable: Some(fixable),
        cves: ids.set.into_iter().collect(),
        cves_truncated: ids.truncated,
    }
}

/// Parses a Trivy JSON report (`trivy image -f json`).
pub fn parse_trivy(bytes: &[u8]) -> Result<VulnSummary, VulnError> {
    if bytes.len() > MAX_ATTESTATION_BYTES {
        return Err(VulnError::TooLarge {
            len: bytes.len(),
            max: MAX_ATTESTATION_BYTES,
        });
    }
    let report: TrivyReport =
        serde_json::from_slice(bytes).map_err(|e| VulnError::Trivy(e.to_string()))?;
    if report.results.is_none() && report.created_at.is_none() && report.trivy.is_none() {
        return Err(VulnError::Trivy("no `Results`".into()));
    }
    Ok(summarise_trivy(report))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Db {
    uri: Option<String>,
    version: Option<String>,
    #[serde(rename = "lastUpdate")]
    last_update: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata {
    #[serde(rename = "scanStartedOn")]
    scan_started_on: Option<String>,
}

#[derive(Deserialize)]
struct CosignVuln {
    scanner: CosignScanner,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize)]
struct CosignScanner {
    #[serde(default)]
    uri: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    db: Db,
    #[serde(default)]
    result: Value,
}

#[derive(Deserialize)]
struct InTotoVulns {
    scanner: InTotoScanner,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize)]
struct InTotoScanner {
    #[serde(default)]
    uri: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    db: Db,
    #[serde(default)]
    result: Vec<InTotoFinding>,
}

#[derive(Deserialize)]
struct InTotoFinding {
    #[serde(default)]
    id: String,
    #[serde(default)]
    severity: Vec<InTotoSeverity>,
}

#[derive(Deserialize)]
struct InTotoSeverity {
    #[serde(default)]
    score: Value,
}

/// `pkg:github/aquasecurity/trivy@v0.57.0` → `trivy`; any other URI → its last segment.
fn scanner_name(uri: &str) -> String {
    let no_version = uri.split('@').next().unwrap_or(uri);
    let name = no_version
        .rsplit(['/', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or("unknown");
    name.to_owned()
}

fn db_label(db: Db) -> Option<String> {
    db.version
        .filter(|v| !v.is_empty())
        .or(db.last_update.filter(|v| !v.is_empty()))
        .or(db.uri.filter(|v| !v.is_empty()))
}

/// Summarises a vulnerability predicate of type `predicate_type`.
pub fn parse_predicate(predicate_type: &str, predicate: &Value) -> Result<VulnSummary, VulnError> {
    if predicate_type == COSIGN_VULN_PREDICATE || predicate_type == COSIGN_VULN_PREDICATE_OLD {
        let p = CosignVuln::deserialize(predicate).map_err(|e| VulnError::Predicate {
            predicate: "cosign vuln",
            detail: e.to_string(),
        })?;
        let report = TrivyReport::deserialize(&p.scanner.result).unwrap_or_default();
        let mut summary = summarise_trivy(report);
        summary.scanner = ScannerInfo {
            name: scanner_name(&p.scanner.uri),
            version: p.scanner.version.or(summary.scanner.version),
        };
        summary.db = db_label(p.scanner.db);
        summary.scanned_at = p.metadata.scan_started_on.or(summary.scanned_at);
        Ok(summary)
    } else if predicate_type.starts_with(IN_TOTO_VULNS_PREDICATE) {
        let p = InTotoVulns::deserialize(predicate).map_err(|e| VulnError::Predicate {
            predicate: "in-toto vulns",
            detail: e.to_string(),
        })?;
        let mut counts = SeverityCounts::default();
        let mut ids = Ids::default();
        for f in &p.scanner.result {
            let worst = f
                .severity
                .iter()
                .map(|s| match &s.score {
                    Value::String(s) => Severity::parse(s),
                    Value::Number(n) => Severity::parse(&n.to_string()),
                    _ => Severity::Unknown,
                })
                .max()
                .unwrap_or(Severity::Unknown);
            counts.add(worst);
            ids.add(&f.id);
        }
        Ok(VulnSummary {
            scanner: ScannerInfo {
                name: scanner_name(&p.scanner.uri),
                version: p.scanner.version,
            },
            db: db_label(p.scanner.db),
            scanned_at: p.metadata.scan_started_on,
            counts,
            fixable: None,
            cves: ids.set.into_iter().collect(),
            cves_truncated: ids.truncated,
        })
    } else {
        Err(VulnError::NotVulnPredicate(predicate_type.to_owned()))
    }
}

/// Summarises the vulnerability predicate of an in-toto Statement.
pub fn parse_statement(statement: &Statement) -> Result<VulnSummary, VulnError> {
    parse_predicate(&statement.predicate_type, &statement.predicate)
}

/// Unwraps a DSSE envelope and summarises its vulnerability predicate.
pub fn parse_envelope(bytes: &[u8]) -> Result<(Statement, VulnSummary), VulnError> {
    let statement = attestation::parse_envelope(bytes)?;
    let summary = parse_statement(&statement)?;
    Ok((statement, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const TRIVY: &str = r#"{
      "SchemaVersion": 2,
      "CreatedAt": "2026-11-30T10:00:00.123Z",
      "Trivy": {"Version": "0.57.1"},
      "ArtifactName": "registry.example/team/app:1.0",
      "ArtifactType": "container_image",
      "Results": [
        {"Target": "app (debian 12.8)", "Class": "os-pkgs", "Type": "debian",
         "Vulnerabilities": [
           {"VulnerabilityID": "CVE-2024-0001", "PkgName": "openssl", "InstalledVersion": "3.0.1", "FixedVersion": "3.0.2", "Severity": "CRITICAL"},
           {"VulnerabilityID": "CVE-2024-0002", "PkgName": "zlib", "InstalledVersion": "1.2", "FixedVersion": "", "Severity": "HIGH"},
           {"VulnerabilityID": "CVE-2024-0003", "PkgName": "bash", "InstalledVersion": "5.2", "Severity": "LOW"}
         ]},
        {"Target": "usr/lib/python3/requirements.txt", "Class": "lang-pkgs", "Type": "pip", "Vulnerabilities": null},
        {"Target": "app/go.sum", "Class": "lang-pkgs", "Type": "gomod",
         "Vulnerabilities": [
           {"VulnerabilityID": "CVE-2024-0001", "PkgName": "x/crypto", "InstalledVersion": "0.1", "FixedVersion": "0.2", "Severity": "CRITICAL"},
           {"VulnerabilityID": "GHSA-aaaa-bbbb-cccc", "PkgName": "x/net", "InstalledVersion": "0.1", "FixedVersion": "0.3", "Severity": "MEDIUM"},
           {"VulnerabilityID": "CVE-2024-0009", "PkgName": "x/text", "InstalledVersion": "0.1", "Severity": "UNKNOWN"}
         ]}
      ]
    }"#;

    fn expected_trivy_counts() -> SeverityCounts {
        SeverityCounts {
            critical: 2,
            high: 1,
            medium: 1,
            low: 1,
            unknown: 1,
        }
    }

    #[test]
    fn trivy_report_is_counted_by_severity() {
        let s = parse_trivy(TRIVY.as_bytes()).unwrap();
        assert_eq!(
            s.scanner,
            ScannerInfo {
                name: "trivy".into(),
                version: Some("0.57.1".into())
            }
        );
        assert_eq!(s.scanned_at.as_deref(), Some("2026-11-30T10:00:00.123Z"));
        assert_eq!(s.counts, expected_trivy_counts());
        assert_eq!(s.counts.total(), 6);
        assert_eq!(s.fixable, Some(3));
        assert_eq!(
            s.cves,
            [
                "CVE-2024-0001",
                "CVE-2024-0002",
                "CVE-2024-0003",
                "CVE-2024-0009",
                "GHSA-aaaa-bbbb-cccc"
            ]
        );
        assert!(!s.cves_truncated);
        assert_eq!(s.db, None);
    }

    #[test]
    fn non_reports_are_refused() {
        assert!(matches!(parse_trivy(b"{}"), Err(VulnError::Trivy(_))));
        assert!(matches!(parse_trivy(b"[1,2]"), Err(VulnError::Trivy(_))));
        assert!(matches!(
            parse_trivy(br#"{"Results":[{"Vulnerabilities":[{"Severity":7}]}]}"#),
            Err(VulnError::Trivy(_))
        ));
    }

    fn envelope(predicate_type: &str, predicate: &str) -> Vec<u8> {
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"{predicate_type}","subject":[{{"name":"registry.example/team/app","digest":{{"sha256":"abcd"}}}}],"predicate":{predicate}}}"#
        );
        format!(
            r#"{{"payloadType":"application/vnd.in-toto+json","payload":"{}","signatures":[{{"keyid":"","sig":"MEUCIQ=="}}]}}"#,
            base64::engine::general_purpose::STANDARD.encode(statement)
        )
        .into_bytes()
    }

    #[test]
    fn cosign_vuln_attestation_wraps_a_trivy_report() {
        let predicate = format!(
            r#"{{"invocation":{{"parameters":null,"uri":"","event_id":"","builder.id":""}},
                "scanner":{{"uri":"pkg:github/aquasecurity/trivy@v0.57.1","version":"0.57.1",
                            "db":{{"uri":"","version":"2026-11-30T06:00:00Z"}},"result":{TRIVY}}},
                "metadata":{{"scanStartedOn":"2026-11-30T09:59:58Z","scanFinishedOn":"2026-11-30T10:00:01Z"}}}}"#
        );
        let (st, s) = parse_envelope(&envelope(COSIGN_VULN_PREDICATE, &predicate)).unwrap();
        assert!(st.is_about("sha256:abcd"));
        assert_eq!(s.scanner.name, "trivy");
        assert_eq!(s.scanner.version.as_deref(), Some("0.57.1"));
        assert_eq!(s.db.as_deref(), Some("2026-11-30T06:00:00Z"));
        assert_eq!(s.scanned_at.as_deref(), Some("2026-11-30T09:59:58Z"));
        assert_eq!(s.counts, expected_trivy_counts());
        assert_eq!(s.fixable, Some(3));
    }

    #[test]
    fn in_toto_vulns_predicate_takes_the_worst_severity_per_finding() {
        let predicate = r#"{"invocation":{"uri":"https://ci.example/run/1"},
          "scanner":{"uri":"pkg:github/anchore/grype@0.84.0","version":"0.84.0",
            "db":{"uri":"pkg:github/anchore/grype-db","version":"v5","lastUpdate":"2026-11-29T00:00:00Z"},
            "result":[
              {"id":"CVE-2024-1000","severity":[{"method":"nvd","score":"medium"},{"method":"cvss_score","score":"9.8"}]},
              {"id":"CVE-2024-1001","severity":[{"method":"nvd","score":"LOW"}]},
              {"id":"CVE-2024-1002","severity":[]},
              {"id":"CVE-2024-1003","severity":[{"method":"cvss_score","score":7.5}]}
            ]},
          "metadata":{"scanStartedOn":"2026-11-30T08:00:00Z","scanFinishedOn":"2026-11-30T08:01:00Z"}}"#;
        let (_, s) = parse_envelope(&envelope(
            "https://in-toto.io/attestation/vulns/v0.1",
            predicate,
        ))
        .unwrap();
        assert_eq!(
            s.scanner,
            ScannerInfo {
                name: "grype".into(),
                version: Some("0.84.0".into())
            }
        );
        assert_eq!(s.db.as_deref(), Some("v5"));
        assert_eq!(s.scanned_at.as_deref(), Some("2026-11-30T08:00:00Z"));
        assert_eq!(
            s.counts,
            SeverityCounts {
                critical: 1,
                high: 1,
                medium: 0,
                low: 1,
                unknown: 1
            }
        );
        assert_eq!(s.fixable, None);
        assert_eq!(s.cves.len(), 4);
    }

    #[test]
    fn other_predicates_are_not_vulnerability_scans() {
        let err = parse_envelope(&envelope("https://spdx.dev/Document", "{}")).unwrap_err();
        assert_eq!(
            err,
            VulnError::NotVulnPredicate("https://spdx.dev/Document".into())
        );
        let err = parse_envelope(&envelope(COSIGN_VULN_PREDICATE, r#"{"scanner":3}"#)).unwrap_err();
        assert!(matches!(err, VulnError::Predicate { .. }));
    }

    #[test]
    fn severity_labels_and_scores_map() {
        assert_eq!(Severity::parse("Critical"), Severity::Critical);
        assert_eq!(Severity::parse("moderate"), Severity::Medium);
        assert_eq!(Severity::parse("6.9"), Severity::Medium);
        assert_eq!(Severity::parse("0"), Severity::Unknown);
        assert_eq!(Severity::parse("bogus"), Severity::Unknown);
    }
}
