//! Vulnerability reports reduced to one [`VulnSummary`], whatever produced them.
//!
//! Policy needs counts and, for the allow list, which ids at which severity — not the
//! report — and reports arrive in several shapes: a plain Trivy JSON report, the cosign
//! vuln predicate wrapping one, and the in-toto `vulns` predicate. Counts are per finding
//! (a CVE in two packages counts twice); `findings` lists each id once, at the worst
//! severity it was reported with, most severe first, at most [`MAX_IDS`] of them — so when
//! a huge report is cut, what is dropped is never more severe than what is kept.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::attestation::{self, AttestationError, MAX_ATTESTATION_BYTES, Statement};

/// Predicate type of `cosign attest --type vuln` (older cosign wrote it without scheme).
pub const COSIGN_VULN_PREDICATE: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
const COSIGN_VULN_PREDICATE_OLD: &str = "cosign.sigstore.dev/attestation/vuln/v1";
/// Predicate type of the in-toto vulnerability predicate (v0.1).
pub const IN_TOTO_VULNS_PREDICATE: &str = "https://in-toto.io/attestation/vulns";
/// At most this many distinct ids are kept in [`VulnSummary::findings`].
pub const MAX_IDS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannerInfo {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SeverityCounts {
    pub fn add(&mut self, s: Severity) {
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
        self.critical
            .saturating_add(self.high)
            .saturating_add(self.medium)
            .saturating_add(self.low)
            .saturating_add(self.unknown)
    }

    /// Adds another report's counts (saturating).
    pub fn combine(&mut self, other: &SeverityCounts) {
        self.critical = self.critical.saturating_add(other.critical);
        self.high = self.high.saturating_add(other.high);
        self.medium = self.medium.saturating_add(other.medium);
        self.low = self.low.saturating_add(other.low);
        self.unknown = self.unknown.saturating_add(other.unknown);
    }

    /// The highest severity with a finding, ignoring `unknown`; `None` when there is none.
    pub fn max_known(&self) -> Option<Severity> {
        [
            (self.critical, Severity::Critical),
            (self.high, Severity::High),
            (self.medium, Severity::Medium),
            (self.low, Severity::Low),
        ]
        .into_iter()
        .find(|(n, _)| *n > 0)
        .map(|(_, s)| s)
    }
}

/// One vulnerability id of a report. An id reported for several packages appears once,
/// at the worst severity, `fixed` when any of its packages has a fixed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VulnFinding {
    /// `CVE-2024-1234`, `GHSA-…`, as reported; empty when the scanner gave none.
    pub id: String,
    pub severity: Severity,
    /// `None` when the format does not say.
    pub fixed: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VulnSummary {
    pub scanner: ScannerInfo,
    /// Vulnerability database version, or its last-update time when that is all there is.
    pub db: Option<String>,
    /// When the scan ran (RFC 3339, as written by the scanner).
    pub scanned_at: Option<String>,
    pub counts: SeverityCounts,
    /// Findings with a fixed version available; `None` when the format does not say.
    pub fixable: Option<u64>,
    /// Distinct ids, most severe first then by id, at most [`MAX_IDS`].
    pub findings: Vec<VulnFinding>,
    /// True when more than [`MAX_IDS`] distinct ids were seen; the dropped ones are no more
    /// severe than the last one kept.
    pub truncated: bool,
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

/// Collects findings by id. Memory is bounded by the report size limit; the output by
/// [`MAX_IDS`].
#[derive(Default)]
struct Ids {
    map: HashMap<String, (Severity, Option<bool>)>,
}

/// Longest id kept (real ones are short), and of the scanner name, version, database and
/// scan time: report text ends up in events and findings.
const MAX_ID_CHARS: usize = 128;
const MAX_LABEL_CHARS: usize = 256;

/// `text` without control characters, at most `max` characters.
fn clip(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn tidy(mut s: VulnSummary) -> VulnSummary {
    s.scanner.name = clip(&s.scanner.name, MAX_LABEL_CHARS);
    s.scanner.version = s.scanner.version.map(|v| clip(&v, MAX_LABEL_CHARS));
    s.db = s.db.map(|v| clip(&v, MAX_LABEL_CHARS));
    s.scanned_at = s.scanned_at.map(|v| clip(&v, MAX_LABEL_CHARS));
    s
}

impl Ids {
    fn add(&mut self, id: &str, severity: Severity, fixed: Option<bool>) {
        let id = clip(id.trim(), MAX_ID_CHARS);
        let id = id.as_str();
        match self.map.get_mut(id) {
            Some((s, f)) => {
                *s = (*s).max(severity);
                *f = match (*f, fixed) {
                    (Some(a), Some(b)) => Some(a || b),
                    (a, b) => a.or(b),
                };
            }
            None => {
                self.map.insert(id.to_owned(), (severity, fixed));
            }
        }
    }

    fn finish(self) -> (Vec<VulnFinding>, bool) {
        let mut findings: Vec<VulnFinding> = self
            .map
            .into_iter()
            .map(|(id, (severity, fixed))| VulnFinding {
                id,
                severity,
                fixed,
            })
            .collect();
        findings.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
        let truncated = findings.len() > MAX_IDS;
        findings.truncate(MAX_IDS);
        (findings, truncated)
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
        let severity = Severity::parse(&v.severity);
        counts.add(severity);
        let fixed = v.fixed_version.is_some_and(|f| !f.trim().is_empty());
        if fixed {
            fixable += 1;
        }
        ids.add(&v.id, severity, Some(fixed));
    }
    let (findings, truncated) = ids.finish();
    VulnSummary {
        scanner: ScannerInfo {
            name: "trivy".into(),
            version: report.trivy.and_then(|t| t.version),
        },
        db: None,
        scanned_at: report.created_at,
        counts,
        fixable: Some(fixable),
        findings,
        truncated,
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
    Ok(tidy(summarise_trivy(report)))
}

/// Recognises a vulnerability report stored as plain JSON (an artifact whose media type
/// says only `application/json`) by its content: a Trivy JSON report (`SchemaVersion` and
/// `ArtifactName`, Trivy's published schema v2), or a bare cosign vuln predicate (what
/// `trivy image -f cosign-vuln | trivy referrer put` attaches: `scanner.uri` and
/// `scanner.result`).
pub fn parse_json_report(bytes: &[u8]) -> Result<VulnSummary, VulnError> {
    if bytes.len() > MAX_ATTESTATION_BYTES {
        return Err(VulnError::TooLarge {
            len: bytes.len(),
            max: MAX_ATTESTATION_BYTES,
        });
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| VulnError::Trivy(e.to_string()))?;
    if value.get("SchemaVersion").is_some() && value.get("ArtifactName").is_some() {
        let report =
            TrivyReport::deserialize(&value).map_err(|e| VulnError::Trivy(e.to_string()))?;
        return Ok(tidy(summarise_trivy(report)));
    }
    let scanner = value.get("scanner");
    if scanner.is_some_and(|s| s.get("uri").is_some() && s.get("result").is_some()) {
        return parse_predicate(COSIGN_VULN_PREDICATE, &value);
    }
    Err(VulnError::Trivy(
        "neither a Trivy report (`SchemaVersion`, `ArtifactName`) nor a cosign vuln predicate"
            .into(),
    ))
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
    summarise_predicate(predicate_type, predicate).map(tidy)
}

fn summarise_predicate(predicate_type: &str, predicate: &Value) -> Result<VulnSummary, VulnError> {
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
            ids.add(&f.id, worst, None);
        }
        let (findings, truncated) = ids.finish();
        Ok(VulnSummary {
            scanner: ScannerInfo {
                name: scanner_name(&p.scanner.uri),
                version: p.scanner.version,
            },
            db: db_label(p.scanner.db),
            scanned_at: p.metadata.scan_started_on,
            counts,
            fixable: None,
            findings,
            truncated,
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
        let f = |id: &str, severity, fixed| VulnFinding {
            id: id.into(),
            severity,
            fixed: Some(fixed),
        };
        assert_eq!(
            s.findings,
            [
                f("CVE-2024-0001", Severity::Critical, true),
                f("CVE-2024-0002", Severity::High, false),
                f("GHSA-aaaa-bbbb-cccc", Severity::Medium, true),
                f("CVE-2024-0003", Severity::Low, false),
                f("CVE-2024-0009", Severity::Unknown, false),
            ]
        );
        assert!(!s.truncated);
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
        assert_eq!(s.findings.len(), 4);
        assert_eq!(s.findings[0].id, "CVE-2024-1000");
        assert_eq!(s.findings[0].severity, Severity::Critical);
        assert_eq!(s.findings[0].fixed, None);
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
    fn an_id_in_several_packages_keeps_its_worst_severity_and_any_fix() {
        let report = r#"{"SchemaVersion":2,"ArtifactName":"x","Results":[
          {"Vulnerabilities":[{"VulnerabilityID":"CVE-1","Severity":"LOW"},
                              {"VulnerabilityID":"CVE-1","Severity":"HIGH","FixedVersion":"2"},
                              {"VulnerabilityID":"","Severity":"CRITICAL"}]}]}"#;
        let s = parse_trivy(report.as_bytes()).unwrap();
        assert_eq!(s.counts.total(), 3);
        assert_eq!(
            s.findings,
            [
                VulnFinding {
                    id: String::new(),
                    severity: Severity::Critical,
                    fixed: Some(false)
                },
                VulnFinding {
                    id: "CVE-1".into(),
                    severity: Severity::High,
                    fixed: Some(true)
                },
            ]
        );
    }

    #[test]
    fn past_max_ids_the_most_severe_are_kept() {
        let mut vulns: Vec<String> = (0..MAX_IDS + 5)
            .map(|i| format!(r#"{{"VulnerabilityID":"CVE-L-{i}","Severity":"LOW"}}"#))
            .collect();
        vulns.push(r#"{"VulnerabilityID":"CVE-Z-CRIT","Severity":"CRITICAL"}"#.into());
        let report = format!(
            r#"{{"SchemaVersion":2,"ArtifactName":"x","Results":[{{"Vulnerabilities":[{}]}}]}}"#,
            vulns.join(",")
        );
        let s = parse_trivy(report.as_bytes()).unwrap();
        assert!(s.truncated);
        assert_eq!(s.findings.len(), MAX_IDS);
        assert_eq!(s.findings[0].id, "CVE-Z-CRIT");
        assert_eq!(s.counts.low, (MAX_IDS + 5) as u64);
        assert_eq!(s.counts.max_known(), Some(Severity::Critical));
    }

    #[test]
    fn summaries_round_trip_through_json() {
        let s = parse_trivy(TRIVY.as_bytes()).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""severity":"critical""#));
        assert_eq!(serde_json::from_str::<VulnSummary>(&json).unwrap(), s);
    }

    #[test]
    fn plain_json_is_recognised_by_content() {
        let s = parse_json_report(TRIVY.as_bytes()).unwrap();
        assert_eq!(s.counts, expected_trivy_counts());
        let predicate = format!(
            r#"{{"scanner":{{"uri":"pkg:github/aquasecurity/trivy@v0.57.1","version":"0.57.1","db":{{}},"result":{TRIVY}}},"metadata":{{"scanStartedOn":"2026-11-30T09:59:58Z"}}}}"#
        );
        let s = parse_json_report(predicate.as_bytes()).unwrap();
        assert_eq!(s.scanner.name, "trivy");
        assert_eq!(s.scanned_at.as_deref(), Some("2026-11-30T09:59:58Z"));
        assert_eq!(s.counts, expected_trivy_counts());
        assert!(parse_json_report(br#"{"Results":[]}"#).is_err());
        assert!(parse_json_report(br#"{"spdxVersion":"SPDX-2.3"}"#).is_err());
        assert!(parse_json_report(b"nope").is_err());
    }

    #[test]
    fn report_text_is_bounded_and_clean() {
        let long = "x".repeat(10_000);
        let report = format!(
            r#"{{"SchemaVersion":2,"ArtifactName":"a","CreatedAt":"{long}","Trivy":{{"Version":"1\u0000{long}"}},
                "Results":[{{"Vulnerabilities":[{{"VulnerabilityID":"CVE-1\n{long}","Severity":"HIGH"}}]}}]}}"#
        );
        let s = parse_trivy(report.as_bytes()).unwrap();
        assert_eq!(s.scanned_at.unwrap().len(), MAX_LABEL_CHARS);
        let version = s.scanner.version.unwrap();
        assert!(version.starts_with("1x") && version.len() == MAX_LABEL_CHARS);
        assert!(s.findings[0].id.starts_with("CVE-1x"));
        assert_eq!(s.findings[0].id.chars().count(), MAX_ID_CHARS);
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
