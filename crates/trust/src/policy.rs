//! A repository rule's trust policy, compiled, and its evaluation over the evidence of one
//! digest.
//!
//! The semantics are the team's agreed ones (README "Policy semantics"), implemented here
//! once so the scanner (which emits verdicts) and anything re-evaluating later agree:
//!
//! - a policy requires a signature iff it has keys or identities. Only referrers of the
//!   digest itself count (an index is signed as itself): none → `unsigned`; one valid and
//!   trusted → fine; some valid but none trusted (a key-based signature no trusted key
//!   verifies lands here) → `signer_not_trusted`; all invalid → `signature_invalid`;
//! - `max_severity` is the highest tolerated severity (`none`: no finding at all; `unknown`
//!   findings never count against it). Reports of the digest and of each of its platform
//!   manifests count; per digest the newest report of each scanner (by scan time) is used
//!   and the chosen reports combine. A finding above the limit passes only when an
//!   unexpired allow-list entry (expiry inclusive, UTC) names it; one whose entries have all
//!   expired → `cve_not_allowed`; any other → `severity_above_limit`; a limit and no report
//!   → `no_vulnerability_report`;
//! - `require_sbom` and no SBOM (artifact or attestation) of the digest or a platform
//!   manifest → `no_sbom`;
//! - no reason → `pass`; otherwise `enforce` → `fail`, `audit` → `audit`; `off` → no
//!   verdict.
//!
//! The crate does not depend on the event contract: [`PolicySpec`] mirrors the event's
//! `TrustPolicy` field for field and the caller copies it over.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::cosign::{KeyError, PublicKey};
use crate::evidence::{Evidence, Identity, Outcome, SignatureCheck, Verifier, check_signature};
use crate::vuln::{Severity, SeverityCounts, VulnSummary};

/// At most this many trusted keys, identities and allow-list entries per policy.
pub const MAX_KEYS: usize = 64;
pub const MAX_IDENTITIES: usize = 64;
pub const MAX_ALLOWANCES: usize = 10_000;
/// Signatures of one digest checked; the rest are ignored.
pub const MAX_SIGNATURES: usize = 100;
/// Longest finding detail, in characters (the event contract's bound).
pub const MAX_DETAIL_CHARS: usize = 1024;
/// Compiled size bound of an identity regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Audit,
    Off,
}

/// The highest severity tolerated; `Nothing` (`none`) tolerates no finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeverityLimit {
    #[serde(rename = "none")]
    Nothing,
    Low,
    Medium,
    High,
    Critical,
}

impl SeverityLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nothing => "none",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// True when `severity` is above the limit; `unknown` never is.
    pub fn exceeded_by(self, severity: Severity) -> bool {
        let rank = match severity {
            Severity::Unknown => return false,
            Severity::Low => 1,
            Severity::Medium => 2,
            Severity::High => 3,
            Severity::Critical => 4,
        };
        rank > self as u8
    }
}

/// A trusted signer identity as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IdentitySpec {
    /// Keyless: the certificate's OIDC issuer (exact) and SAN (regex, matched in full).
    Keyless { issuer: String, subject: String },
    /// Notation: the leaf certificate's subject DN (regex, matched in full).
    X509 { x509_subject: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CveAllowance {
    pub id: String,
    /// Last day (UTC, inclusive) the entry counts.
    pub expires: NaiveDate,
    #[serde(default)]
    pub reason: String,
}

/// A trusted public key as configured (PEM `PUBLIC KEY`: ECDSA P-256, Ed25519, RSA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    #[serde(default)]
    pub name: String,
    pub pem: String,
}

/// A trust policy as configured; its JSON is the event's `TrustPolicy`, so one converts
/// to the other through `serde_json::Value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySpec {
    pub mode: Mode,
    #[serde(default)]
    pub keys: Vec<KeySpec>,
    #[serde(default)]
    pub identities: Vec<IdentitySpec>,
    #[serde(default)]
    pub max_severity: Option<SeverityLimit>,
    #[serde(default)]
    pub allow_cves: Vec<CveAllowance>,
    #[serde(default)]
    pub require_sbom: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("key {index}: {source}")]
    Key { index: usize, source: KeyError },
    #[error("identity {index}: {detail}")]
    Identity { index: usize, detail: String },
    #[error("{count} {what}, over the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

/// A compiled trust policy.
#[derive(Debug, Clone)]
pub struct Policy {
    mode: Mode,
    keys: Vec<PublicKey>,
    identities: Vec<Identity>,
    max_severity: Option<SeverityLimit>,
    allow: Vec<CveAllowance>,
    require_sbom: bool,
}

fn full_match(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

fn at_most(what: &'static str, count: usize, max: usize) -> Result<(), PolicyError> {
    if count > max {
        return Err(PolicyError::TooMany { what, count, max });
    }
    Ok(())
}

impl Policy {
    /// Parses the keys and compiles the identity regexes (anchored: a subject must match
    /// the whole SAN or DN, so `.*@example\.com` does not admit `x@example.com.evil`).
    pub fn compile(spec: &PolicySpec) -> Result<Self, PolicyError> {
        at_most("keys", spec.keys.len(), MAX_KEYS)?;
        at_most("identities", spec.identities.len(), MAX_IDENTITIES)?;
        at_most("allow-list entries", spec.allow_cves.len(), MAX_ALLOWANCES)?;
        let keys = spec
            .keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                PublicKey::from_pem(&key.pem).map_err(|source| PolicyError::Key { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let identities = spec
            .identities
            .iter()
            .enumerate()
            .map(|(index, id)| {
                let err = |detail| PolicyError::Identity { index, detail };
                match id {
                    IdentitySpec::Keyless { issuer, subject } => {
                        if issuer.trim().is_empty() {
                            return Err(err("empty issuer".into()));
                        }
                        Ok(Identity::Keyless {
                            issuer: issuer.clone(),
                            subject: full_match(subject).map_err(err)?,
                        })
                    }
                    IdentitySpec::X509 { x509_subject } => Ok(Identity::X509 {
                        subject: full_match(x509_subject).map_err(err)?,
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            mode: spec.mode,
            keys,
            identities,
            max_severity: spec.max_severity,
            allow: spec.allow_cves.clone(),
            require_sbom: spec.require_sbom,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    pub fn requires_signature(&self) -> bool {
        !self.keys.is_empty() || !self.identities.is_empty()
    }

    /// A verifier trusting this policy's keys and identities at `now`; add the trust root
    /// and Notation trust store to it before [`evaluate`].
    pub fn verifier(&self, now: DateTime<Utc>) -> Verifier<'_> {
        Verifier::new(now)
            .keys(&self.keys)
            .identities(&self.identities)
    }
}

/// Why a digest fails (or would fail) its policy; mirrors the event's `PolicyReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Unsigned,
    SignatureInvalid,
    SignerNotTrusted,
    SeverityAboveLimit,
    CveNotAllowed,
    NoSbom,
    NoVulnerabilityReport,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::SignatureInvalid => "signature_invalid",
            Self::SignerNotTrusted => "signer_not_trusted",
            Self::SeverityAboveLimit => "severity_above_limit",
            Self::CveNotAllowed => "cve_not_allowed",
            Self::NoSbom => "no_sbom",
            Self::NoVulnerabilityReport => "no_vulnerability_report",
        }
    }
}

/// One reason with what was seen, at most [`MAX_DETAIL_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub reason: Reason,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Audit,
}

/// The reports that counted, combined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VulnOverview {
    pub counts: SeverityCounts,
    /// Highest severity with a finding, `unknown` aside; `None` when nothing was found.
    pub max_severity: Option<Severity>,
    /// Sum over the reports that say; `None` when none does.
    pub fixable: Option<u64>,
    /// The referrer digests of the reports that counted.
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Every signature referrer of the digest, checked.
    pub signatures: Vec<SignatureCheck>,
    /// Each reason at most once, in [`Reason`] order.
    pub findings: Vec<Finding>,
    pub sbom: bool,
    pub vulnerabilities: Option<VulnOverview>,
}

impl Evaluation {
    pub fn reasons(&self) -> Vec<Reason> {
        self.findings.iter().map(|f| f.reason).collect()
    }

    /// The verdict under `mode`; `None` for `off` (not evaluated).
    pub fn verdict(&self, mode: Mode) -> Option<Verdict> {
        match mode {
            Mode::Off => None,
            _ if self.findings.is_empty() => Some(Verdict::Pass),
            Mode::Enforce => Some(Verdict::Fail),
            Mode::Audit => Some(Verdict::Audit),
        }
    }
}

/// Evaluates `policy` for `subject` (`sha256:<hex>`): `own` is the evidence of the subject's
/// referrers, `children` that of each platform manifest's referrers (one entry per
/// manifest). Signatures of children do not count; their reports and SBOMs do.
/// `verifier` should come from [`Policy::verifier`]; `today` is the UTC date allow-list
/// expiry is judged on.
pub fn evaluate(
    policy: &Policy,
    verifier: &Verifier<'_>,
    subject: &str,
    own: &[Evidence],
    children: &[Vec<Evidence>],
    today: NaiveDate,
) -> Evaluation {
    let mut findings = Vec::new();

    let signatures = check_signatures(verifier, subject, own);
    if policy.requires_signature()
        && !signatures
            .iter()
            .any(|c| matches!(c.outcome, Outcome::Trusted))
    {
        findings.push(signature_finding(subject, &signatures));
    }

    let all = std::iter::once(own).chain(children.iter().map(Vec::as_slice));
    let sbom = all
        .clone()
        .flatten()
        .any(|e| matches!(e, Evidence::Sbom { .. }));
    let reports: Vec<(&str, &VulnSummary)> = all.flat_map(newest_per_scanner).collect();
    let vulnerabilities = overview(&reports);

    if let Some(limit) = policy.max_severity {
        if reports.is_empty() {
            findings.push(Finding {
                reason: Reason::NoVulnerabilityReport,
                detail: bounded(format!(
                    "the policy limits severity to `{}` but no vulnerability report is attached to {subject} or its platform manifests",
                    limit.as_str()
                )),
            });
        } else {
            findings.extend(severity_findings(policy, limit, &reports, today));
        }
    }
    if policy.require_sbom && !sbom {
        findings.push(Finding {
            reason: Reason::NoSbom,
            detail: bounded(format!(
                "no SBOM (artifact or attestation) is attached to {subject} or its platform manifests"
            )),
        });
    }
    findings.sort_by_key(|f| f.reason);
    findings.dedup_by_key(|f| f.reason);
    Evaluation {
        signatures,
        findings,
        sbom,
        vulnerabilities,
    }
}

fn check_signatures(
    verifier: &Verifier<'_>,
    subject: &str,
    own: &[Evidence],
) -> Vec<SignatureCheck> {
    own.iter()
        .filter_map(|e| match e {
            Evidence::Signature(sig) => Some(check_signature(sig, subject, verifier)),
            Evidence::UnreadableSignature {
                source,
                scheme,
                reason,
            } => Some(SignatureCheck {
                source: source.clone(),
                scheme: *scheme,
                signer: String::new(),
                issuer: None,
                outcome: Outcome::Invalid(reason.clone()),
            }),
            _ => None,
        })
        .take(MAX_SIGNATURES)
        .collect()
}

fn signature_finding(subject: &str, checks: &[SignatureCheck]) -> Finding {
    if checks.is_empty() {
        return Finding {
            reason: Reason::Unsigned,
            detail: bounded(format!("no signature referrer of {subject}")),
        };
    }
    let untrusted: Vec<String> = checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Untrusted(_)))
        .map(|c| {
            let who = if c.signer.is_empty() {
                "an unidentified signer".to_owned()
            } else {
                clean(&c.signer)
            };
            let why = match &c.outcome {
                Outcome::Untrusted(why) if !why.is_empty() => format!(": {}", clean(why)),
                _ => String::new(),
            };
            match &c.issuer {
                Some(issuer) => format!("{who} (issuer {}){why}", clean(issuer)),
                None => format!("{who}{why}"),
            }
        })
        .collect();
    if !untrusted.is_empty() {
        return Finding {
            reason: Reason::SignerNotTrusted,
            detail: listed(
                &format!("{} signature(s), none by a trusted signer: ", checks.len()),
                &untrusted,
            ),
        };
    }
    let invalid: Vec<String> = checks
        .iter()
        .map(|c| match &c.outcome {
            Outcome::Invalid(why) => format!("{}: {}", short(&c.source), clean(why)),
            _ => short(&c.source),
        })
        .collect();
    Finding {
        reason: Reason::SignatureInvalid,
        detail: listed(
            &format!("{} signature(s), all invalid: ", checks.len()),
            &invalid,
        ),
    }
}

/// The reports of one digest that count: the newest of each scanner.
fn newest_per_scanner(evidence: &[Evidence]) -> Vec<(&str, &VulnSummary)> {
    let mut newest: BTreeMap<String, (Option<DateTime<Utc>>, &str, &VulnSummary)> = BTreeMap::new();
    for e in evidence {
        let Evidence::Vulnerabilities { source, summary } = e else {
            continue;
        };
        let at = summary
            .scanned_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
            .map(|t| t.with_timezone(&Utc));
        let scanner = summary.scanner.name.to_ascii_lowercase();
        let newer = match newest.get(&scanner) {
            None => true,
            Some((seen_at, seen_source, _)) => (at, source.as_str()) > (*seen_at, *seen_source),
        };
        if newer {
            newest.insert(scanner, (at, source, summary));
        }
    }
    newest
        .into_values()
        .map(|(_, source, summary)| (source, summary))
        .collect()
}

fn overview(reports: &[(&str, &VulnSummary)]) -> Option<VulnOverview> {
    if reports.is_empty() {
        return None;
    }
    let mut counts = SeverityCounts::default();
    let mut fixable: Option<u64> = None;
    let mut sources = Vec::new();
    for (source, r) in reports {
        counts.combine(&r.counts);
        if let Some(n) = r.fixable {
            fixable = Some(fixable.unwrap_or(0).saturating_add(n));
        }
        if !sources.iter().any(|s| s == source) {
            sources.push((*source).to_owned());
        }
    }
    Some(VulnOverview {
        max_severity: counts.max_known(),
        counts,
        fixable,
        sources,
    })
}

fn severity_findings(
    policy: &Policy,
    limit: SeverityLimit,
    reports: &[(&str, &VulnSummary)],
    today: NaiveDate,
) -> Vec<Finding> {
    // id → worst severity above the limit, over every report that counts.
    let mut above: BTreeMap<&str, Severity> = BTreeMap::new();
    let mut unlisted_above = false;
    for (_, r) in reports {
        for f in &r.findings {
            if limit.exceeded_by(f.severity) {
                let s = above.entry(f.id.as_str()).or_insert(f.severity);
                *s = (*s).max(f.severity);
            }
        }
        // Past MAX_IDS the dropped ids are no more severe than the last one kept.
        if r.truncated
            && r.findings
                .last()
                .is_some_and(|f| limit.exceeded_by(f.severity))
        {
            unlisted_above = true;
        }
    }
    let mut not_allowed = Vec::new();
    let mut expired = Vec::new();
    let mut by_severity: Vec<(&str, Severity)> = above.into_iter().collect();
    by_severity.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    for (id, severity) in by_severity {
        let entries: Vec<&CveAllowance> = if id.trim().is_empty() {
            Vec::new()
        } else {
            policy
                .allow
                .iter()
                .filter(|a| a.id.trim().eq_ignore_ascii_case(id))
                .collect()
        };
        if entries.iter().any(|a| a.expires >= today) {
            continue;
        }
        let shown = if id.trim().is_empty() {
            "a finding without id".to_owned()
        } else {
            clean(id)
        };
        match entries.iter().map(|a| a.expires).max() {
            Some(last) => expired.push(format!(
                "{shown} ({severity}) allow-list entry expired {last}"
            )),
            None => not_allowed.push(format!("{shown} ({severity})")),
        }
    }
    if unlisted_above {
        not_allowed.push(format!(
            "more than {} distinct findings; those not listed may be above the limit",
            crate::vuln::MAX_IDS
        ));
    }
    let mut out = Vec::new();
    if !not_allowed.is_empty() {
        out.push(Finding {
            reason: Reason::SeverityAboveLimit,
            detail: listed(
                &format!("above the limit `{}`: ", limit.as_str()),
                &not_allowed,
            ),
        });
    }
    if !expired.is_empty() {
        out.push(Finding {
            reason: Reason::CveNotAllowed,
            detail: listed("", &expired),
        });
    }
    out
}

/// Control characters out of untrusted text.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn short(digest: &str) -> String {
    let d = clean(digest);
    match d.char_indices().nth(19) {
        Some((at, _)) => format!("{}…", &d[..at]),
        None => d,
    }
}

/// Cuts `text` to [`MAX_DETAIL_CHARS`] characters.
fn bounded(text: String) -> String {
    match text.char_indices().nth(MAX_DETAIL_CHARS) {
        None => text,
        Some(_) => {
            let cut: String = text.chars().take(MAX_DETAIL_CHARS - 1).collect();
            format!("{cut}…")
        }
    }
}

/// `prefix` and the items joined by `; `, as many as fit, then `… and N more`.
fn listed(prefix: &str, items: &[String]) -> String {
    let mut out = prefix.to_owned();
    for (i, item) in items.iter().enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        let rest = items.len() - i - 1;
        let tail = if rest > 0 {
            format!(" … and {} more", rest)
        } else {
            String::new()
        };
        let fits = out.chars().count() + sep.len() + item.chars().count() + tail.chars().count()
            <= MAX_DETAIL_CHARS;
        // Keep room for the "… and N more" of everything from this item on.
        let more = format!(" … and {} more", items.len() - i);
        if !fits {
            out.truncate(out.trim_end().len());
            if out.chars().count() + more.chars().count() <= MAX_DETAIL_CHARS {
                out.push_str(&more);
                return out;
            }
            return bounded(out);
        }
        out.push_str(sep);
        out.push_str(item);
    }
    bounded(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_fit_the_bound_and_count_what_is_left_out() {
        let items: Vec<String> = vec!["a".repeat(600), "b".repeat(600), "c".into()];
        let d = listed("p: ", &items);
        assert!(d.chars().count() <= MAX_DETAIL_CHARS);
        assert_eq!(d, format!("p: {} … and 2 more", "a".repeat(600)));

        let huge = vec!["x".repeat(5000)];
        assert_eq!(listed("p: ", &huge), "p: … and 1 more");
        assert_eq!(listed("", &["one".into(), "two".into()]), "one; two");
        assert_eq!(listed("p: ", &[]), "p: ");

        let long = bounded("é".repeat(3000));
        assert_eq!(long.chars().count(), MAX_DETAIL_CHARS);
        assert!(long.ends_with('…'));
        assert_eq!(clean("a\nb\u{0}c"), "a b c");
        assert_eq!(short("sha256:0123456789abcdef0123"), "sha256:0123456789ab…");
    }

    #[test]
    fn limits_order_severities() {
        use Severity::*;
        assert!(!SeverityLimit::Nothing.exceeded_by(Unknown));
        assert!(SeverityLimit::Nothing.exceeded_by(Low));
        assert!(!SeverityLimit::Low.exceeded_by(Low));
        assert!(SeverityLimit::Low.exceeded_by(Medium));
        assert!(SeverityLimit::High.exceeded_by(Critical));
        assert!(!SeverityLimit::Critical.exceeded_by(Critical));
    }
}
