//! A rule's trust policy compiled (keys parsed, regexes built) and applied to what the
//! referrers of a digest say, with the team's semantics (README, "Trust policies").

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use imagelib_events::RuleId;
use imagelib_events::model::{
    PolicyFinding, PolicyMode, PolicyReason, SeverityLimit, TrustPolicy, TrustedIdentity,
};
use imagelib_trust::cosign::PublicKey;
use imagelib_trust::evidence::{
    Evidence, Identity, Outcome, SignatureCheck, Verifier, check_signature,
};
use imagelib_trust::vuln::{Severity, VulnSummary};

/// The largest compiled regex of a policy identity.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// A trust policy ready to apply.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub rule: RuleId,
    pub policy: TrustPolicy,
    pub keys: Vec<PublicKey>,
    pub identities: Vec<Identity>,
    /// Keys and identities that did not compile (registry-registry refuses them; an agent
    /// file may still hold one): the policy then trusts fewer signers, never more.
    pub problems: Vec<String>,
}

impl CompiledPolicy {
    pub fn compile(rule: RuleId, policy: &TrustPolicy) -> Self {
        let mut problems = Vec::new();
        let keys = policy
            .keys
            .iter()
            .filter_map(|k| match PublicKey::from_pem(&k.pem) {
                Ok(key) => Some(key),
                Err(e) => {
                    problems.push(format!("key {:?}: {e}", k.name));
                    None
                }
            })
            .collect();
        let regex = |pattern: &str| {
            regex::RegexBuilder::new(pattern)
                .size_limit(MAX_REGEX_BYTES)
                .build()
        };
        let identities = policy
            .identities
            .iter()
            .filter_map(|i| match i {
                TrustedIdentity::Keyless { issuer, subject } => match regex(subject) {
                    Ok(subject) => Some(Identity::Keyless {
                        issuer: issuer.clone(),
                        subject,
                    }),
                    Err(e) => {
                        problems.push(format!("identity subject {subject:?}: {e}"));
                        None
                    }
                },
                TrustedIdentity::X509 { x509_subject } => match regex(x509_subject) {
                    Ok(subject) => Some(Identity::X509 { subject }),
                    Err(e) => {
                        problems.push(format!("identity subject {x509_subject:?}: {e}"));
                        None
                    }
                },
            })
            .collect();
        CompiledPolicy {
            rule,
            policy: policy.clone(),
            keys,
            identities,
            problems,
        }
    }

    pub fn mode(&self) -> PolicyMode {
        self.policy.mode
    }

    /// Whether the policy asks for a signature at all.
    pub fn requires_signature(&self) -> bool {
        !self.policy.keys.is_empty() || !self.policy.identities.is_empty()
    }

    pub fn verifier(&self, now: DateTime<Utc>) -> Verifier<'_> {
        Verifier::new(now)
            .keys(&self.keys)
            .identities(&self.identities)
    }
}

/// Checks every signature among `evidence` of `subject`.
pub fn check_all(
    policy: &CompiledPolicy,
    subject: &str,
    evidence: &[&Evidence],
    now: DateTime<Utc>,
) -> Vec<SignatureCheck> {
    let verifier = policy.verifier(now);
    evidence
        .iter()
        .filter_map(|e| match e {
            Evidence::Signature(sig) => {
                let started = std::time::Instant::now();
                let check = check_signature(sig, subject, &verifier);
                crate::metrics::signature_verified(&check.outcome, started.elapsed());
                Some(check)
            }
            Evidence::UnreadableSignature {
                source,
                scheme,
                reason,
            } => {
                let outcome = Outcome::Invalid(reason.clone());
                crate::metrics::signature_verified(&outcome, std::time::Duration::ZERO);
                Some(SignatureCheck {
                    source: source.clone(),
                    scheme: *scheme,
                    signer: String::new(),
                    issuer: None,
                    outcome,
                })
            }
            _ => None,
        })
        .collect()
}

fn finding(reason: PolicyReason, detail: String) -> PolicyFinding {
    let detail = if detail.len() > PolicyFinding::MAX_DETAIL {
        let mut end = PolicyFinding::MAX_DETAIL - 1;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &detail[..end.saturating_sub(2)])
    } else {
        detail
    };
    PolicyFinding { reason, detail }
}

/// The newest report per scanner name (by scan time), as the team agreed.
pub fn newest_per_scanner(reports: &[&VulnSummary]) -> Vec<VulnSummary> {
    let mut newest: BTreeMap<String, &VulnSummary> = BTreeMap::new();
    for r in reports {
        let key = r.scanner.name.to_ascii_lowercase();
        match newest.get(&key) {
            Some(old) if scanned_at(old) >= scanned_at(r) => {}
            _ => {
                newest.insert(key, r);
            }
        }
    }
    newest.into_values().cloned().collect()
}

fn scanned_at(r: &VulnSummary) -> Option<DateTime<Utc>> {
    r.scanned_at
        .as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.to_utc())
}

/// Whether a finding of `severity` is over `limit`; `unknown` never is.
fn above(limit: SeverityLimit, severity: Severity) -> bool {
    let allowed = match limit {
        SeverityLimit::Nothing => Severity::Unknown,
        SeverityLimit::Low => Severity::Low,
        SeverityLimit::Medium => Severity::Medium,
        SeverityLimit::High => Severity::High,
        SeverityLimit::Critical => Severity::Critical,
    };
    severity != Severity::Unknown && severity > allowed
}

/// What the policy finds, in [`PolicyReason`] order, each reason once.
pub fn evaluate(
    policy: &CompiledPolicy,
    subject: &str,
    signatures: &[SignatureCheck],
    reports: &[&VulnSummary],
    has_sbom: bool,
    today: NaiveDate,
) -> Vec<PolicyFinding> {
    let p = &policy.policy;
    let mut out = Vec::new();
    if policy.requires_signature() {
        if signatures.is_empty() {
            out.push(finding(
                PolicyReason::Unsigned,
                format!("no signature is attached to {subject}"),
            ));
        } else if !signatures.iter().any(|s| s.outcome == Outcome::Trusted) {
            let untrusted: Vec<String> = signatures
                .iter()
                .filter_map(|s| match &s.outcome {
                    Outcome::Untrusted(why) => Some(if s.signer.is_empty() {
                        why.clone()
                    } else {
                        format!("{}: {why}", s.signer)
                    }),
                    _ => None,
                })
                .collect();
            if untrusted.is_empty() {
                let why: Vec<String> = signatures
                    .iter()
                    .filter_map(|s| match &s.outcome {
                        Outcome::Invalid(why) => Some(format!("{}: {why}", s.source)),
                        _ => None,
                    })
                    .collect();
                out.push(finding(PolicyReason::SignatureInvalid, why.join("; ")));
            } else {
                out.push(finding(
                    PolicyReason::SignerNotTrusted,
                    format!("no trusted signer: {}", untrusted.join("; ")),
                ));
            }
        }
    }
    if let Some(limit) = p.max_severity {
        let newest = newest_per_scanner(reports);
        if newest.is_empty() {
            out.push(finding(
                PolicyReason::NoVulnerabilityReport,
                format!("no vulnerability report is attached to {subject}"),
            ));
        } else {
            let live = |id: &str| {
                p.allow_cves
                    .iter()
                    .any(|a| a.id.eq_ignore_ascii_case(id) && a.expires >= today)
            };
            let expired_entry = |id: &str| {
                p.allow_cves
                    .iter()
                    .any(|a| a.id.eq_ignore_ascii_case(id) && a.expires < today)
            };
            let mut expired: Vec<String> = Vec::new();
            let mut open: Vec<String> = Vec::new();
            for r in &newest {
                for f in r.findings.iter().filter(|f| above(limit, f.severity)) {
                    let shown = if f.id.is_empty() {
                        format!("an unnamed finding ({})", f.severity)
                    } else {
                        format!("{} ({})", f.id, f.severity)
                    };
                    if !f.id.is_empty() && live(&f.id) {
                        continue;
                    }
                    if !f.id.is_empty() && expired_entry(&f.id) {
                        expired.push(shown);
                    } else {
                        open.push(shown);
                    }
                }
                // Past the id cap the dropped findings are no more severe than the last
                // kept: still over the limit means some may be uncovered.
                if r.truncated && r.findings.last().is_some_and(|f| above(limit, f.severity)) {
                    open.push(format!(
                        "findings of {} past the {} kept",
                        r.scanner.name,
                        r.findings.len()
                    ));
                }
            }
            let limit_name = serde_json::to_value(limit)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let list = |v: &[String]| {
                let shown: Vec<&str> = v.iter().take(20).map(String::as_str).collect();
                format!(
                    "{}{}",
                    shown.join(", "),
                    if v.len() > shown.len() { ", …" } else { "" }
                )
            };
            if !open.is_empty() {
                out.push(finding(
                    PolicyReason::SeverityAboveLimit,
                    format!(
                        "{} above `{limit_name}` and not on the allow list: {}",
                        open.len(),
                        list(&open)
                    ),
                ));
            }
            if !expired.is_empty() {
                out.push(finding(
                    PolicyReason::CveNotAllowed,
                    format!(
                        "allow-list entry expired before {today}: {}",
                        list(&expired)
                    ),
                ));
            }
        }
    }
    if p.require_sbom && !has_sbom {
        out.push(finding(
            PolicyReason::NoSbom,
            format!("no SBOM is attached to {subject} or its platforms"),
        ));
    }
    out.sort_by_key(|f| f.reason);
    out
}
