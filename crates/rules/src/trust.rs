//! A rule's trust policy (issue 13) as people write it, and its validation.
//!
//! The policy decides whether an image may be deployed, so a mistake in it is a security
//! hole or an outage, not a cosmetic error; everything is checked when the rule is written,
//! with the JSON pointer of the field:
//! - every key parses as a PEM `PUBLIC KEY` (ECDSA P-256 or P-384, Ed25519, RSA ≥ 2048 bits), at
//!   most [`MAX_KEY_PEM_BYTES`]; a `key_id` sent along (as `GET` shows it) must be the
//!   key's own, so a pasted key cannot silently be another one;
//! - a keyless issuer is an `https` URL; subject regexes compile within the rule regex size
//!   limit and must match whole subjects only (every branch anchored by `^…$`, checked on
//!   the parsed regex), since an unanchored `ci@acme\.com` also matches
//!   `ci@acme.com.evil.example` and `^a|b$` matches `b` at the end of anything;
//! - vulnerability ids look like ids (`CVE-2024-1234`, `GHSA-…`); `cve-` is upper-cased;
//!   an id is allowed once; expiry dates are `YYYY-MM-DD` (a past date is accepted: the
//!   entry then no longer covers anything, which the verdict says);
//! - lists are bounded ([`MAX_KEYS`], [`MAX_IDENTITIES`], [`MAX_ALLOW_CVES`]);
//! - an `enforce` or `audit` policy that asks for nothing is refused as meaningless, and an
//!   allow list without `max_severity` too (nothing would be allowed over anything).
//!
//! [`TrustInput`] is the friendly shape (a key may be a bare PEM string, an allowance a
//! `"CVE-2024-1234 until 2027-01-31"` string); it also accepts the event's
//! [`TrustPolicy`] JSON and what `GET` shows, so `GET` then `PUT` round-trips.
//! [`check_policy`] is the part that applies to a `rule.set` event's policy as well.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;
use imagelib_events::event::RuleSet;
use imagelib_events::model::{
    CveAllowance, PolicyMode, SeverityLimit, TrustPolicy, TrustedIdentity, TrustedKey,
};
use imagelib_trust::cosign::PublicKey;
use regex::Regex;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{RuleError, RuleErrorReason};
use crate::pattern::{build_regex, check_source};

/// The most trusted keys one policy lists.
pub const MAX_KEYS: usize = 32;
/// The most trusted identities one policy lists.
pub const MAX_IDENTITIES: usize = 32;
/// The most allow-list entries one policy holds.
pub const MAX_ALLOW_CVES: usize = 1000;
/// The largest PEM key accepted.
pub const MAX_KEY_PEM_BYTES: usize = imagelib_trust::cosign::MAX_KEY_PEM_BYTES;
/// The longest key name, issuer URL, vulnerability id and allowance reason.
pub const MAX_KEY_NAME_LEN: usize = 128;
pub const MAX_ISSUER_LEN: usize = 512;
pub const MAX_VULNERABILITY_ID_LEN: usize = 64;
pub const MAX_REASON_LEN: usize = 1024;
/// The most bytes of text one policy holds (PEMs, patterns, ids, reasons), so that a
/// `rule.set` carrying it stays well inside a NATS message; real policies use a few KiB.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// The `trust` object of a rule, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustInput {
    #[serde(default)]
    pub mode: PolicyMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyInput>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<IdentityInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_severity: Option<SeverityLimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_cves: Vec<CveInput>,
    #[serde(default)]
    pub require_sbom: bool,
}

/// A trusted key: a PEM string, or `{name?, pem}`. `key_id` and `algorithm` are what `GET`
/// shows; sent back, they must match the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInput {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub pem: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
}

/// A trusted signer: keyless `{issuer, subject}` or Notation `{x509_subject}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum IdentityInput {
    Keyless { issuer: String, subject: String },
    X509 { x509_subject: String },
}

/// An allow-list entry: `{id, expires: "YYYY-MM-DD", reason?}` or `"<id> until <date>"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CveInput {
    pub id: String,
    pub expires: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl TrustInput {
    /// Converts to the event's policy and validates it; `base` is this object's pointer.
    pub fn to_policy(&self, base: &str) -> Result<TrustPolicy, RuleError> {
        check_counts(
            base,
            self.keys.len(),
            self.identities.len(),
            self.allow_cves.len(),
        )?;
        let mut keys = Vec::with_capacity(self.keys.len());
        for (i, k) in self.keys.iter().enumerate() {
            let pointer = format!("{base}/keys/{i}");
            check_pem_size(&k.pem, &pointer)?;
            let pem = normalise_pem(&k.pem);
            let parsed = parse_key(&pem, &pointer)?;
            if let Some(given) = &k.key_id
                && given != parsed.id().as_str()
            {
                return Err(RuleError::new(
                    format!("{pointer}/key_id"),
                    RuleErrorReason::KeyIdMismatch {
                        given: given.clone(),
                        derived: parsed.id().to_string(),
                    },
                ));
            }
            if let Some(given) = &k.algorithm
                && given != parsed.algorithm()
            {
                return Err(RuleError::new(
                    format!("{pointer}/algorithm"),
                    RuleErrorReason::Invalid(format!(
                        "`{given}` is not this key's algorithm (`{}`); drop it or fix the PEM",
                        parsed.algorithm()
                    )),
                ));
            }
            keys.push(TrustedKey {
                name: k.name.trim().to_owned(),
                pem,
            });
        }
        let identities = self
            .identities
            .iter()
            .map(|i| match i {
                IdentityInput::Keyless { issuer, subject } => TrustedIdentity::Keyless {
                    issuer: issuer.trim().to_owned(),
                    subject: subject.clone(),
                },
                IdentityInput::X509 { x509_subject } => TrustedIdentity::X509 {
                    x509_subject: x509_subject.clone(),
                },
            })
            .collect();
        let mut allow_cves = Vec::with_capacity(self.allow_cves.len());
        for (i, c) in self.allow_cves.iter().enumerate() {
            let pointer = format!("{base}/allow_cves/{i}");
            let expires = parse_date(&c.expires)
                .map_err(|r| RuleError::new(format!("{pointer}/expires"), r))?;
            allow_cves.push(CveAllowance {
                id: normalise_vulnerability_id(&c.id),
                expires,
                reason: c.reason.trim().to_owned(),
            });
        }
        let policy = TrustPolicy {
            mode: self.mode,
            keys,
            identities,
            max_severity: self.max_severity,
            allow_cves,
            require_sbom: self.require_sbom,
        };
        check_policy(&policy, base)?;
        Ok(policy)
    }
}

impl From<&TrustPolicy> for TrustInput {
    /// What `GET` shows: the policy as stored, each key with its derived id and algorithm.
    fn from(p: &TrustPolicy) -> Self {
        TrustInput {
            mode: p.mode,
            keys: p
                .keys
                .iter()
                .map(|k| {
                    let parsed = PublicKey::from_pem(&k.pem).ok();
                    KeyInput {
                        name: k.name.clone(),
                        pem: k.pem.clone(),
                        key_id: parsed.as_ref().map(|p| p.id().to_string()),
                        algorithm: parsed.as_ref().map(|p| p.algorithm().to_owned()),
                    }
                })
                .collect(),
            identities: p
                .identities
                .iter()
                .map(|i| match i {
                    TrustedIdentity::Keyless { issuer, subject } => IdentityInput::Keyless {
                        issuer: issuer.clone(),
                        subject: subject.clone(),
                    },
                    TrustedIdentity::X509 { x509_subject } => IdentityInput::X509 {
                        x509_subject: x509_subject.clone(),
                    },
                })
                .collect(),
            max_severity: p.max_severity,
            allow_cves: p
                .allow_cves
                .iter()
                .map(|c| CveInput {
                    id: c.id.clone(),
                    expires: c.expires.format("%Y-%m-%d").to_string(),
                    reason: c.reason.clone(),
                })
                .collect(),
            require_sbom: p.require_sbom,
        }
    }
}

/// A rule as the HTTP API shows it: the `rule.set` data, with each trusted key's `key_id`
/// and `algorithm` next to its PEM. Accepted back by `PUT` as it is.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    #[serde(flatten)]
    rule: RuleSet,
    #[serde(skip_serializing_if = "Option::is_none")]
    trust: Option<TrustInput>,
}

impl From<&RuleSet> for RuleView {
    fn from(rule: &RuleSet) -> Self {
        let trust = rule.trust.as_ref().map(TrustInput::from);
        let mut rule = rule.clone();
        rule.trust = None;
        RuleView { rule, trust }
    }
}

/// The keys of a validated policy, parsed.
#[derive(Debug, Clone, Default)]
pub struct CheckedPolicy {
    pub keys: Vec<PublicKey>,
    pub identity_subjects: Vec<Regex>,
}

/// Validates an event-shaped policy (see the module docs); `base` is its pointer
/// (`/trust`). Returns the parsed keys and compiled subject regexes, in list order.
pub fn check_policy(policy: &TrustPolicy, base: &str) -> Result<CheckedPolicy, RuleError> {
    check_counts(
        base,
        policy.keys.len(),
        policy.identities.len(),
        policy.allow_cves.len(),
    )?;
    let size = policy_bytes(policy);
    if size > MAX_POLICY_BYTES {
        return Err(RuleError::new(
            base,
            RuleErrorReason::PolicyTooLarge {
                len: size,
                max: MAX_POLICY_BYTES,
            },
        ));
    }
    let mut checked = CheckedPolicy::default();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (i, key) in policy.keys.iter().enumerate() {
        let pointer = format!("{base}/keys/{i}");
        check_text(&key.name, MAX_KEY_NAME_LEN, &format!("{pointer}/name"))?;
        let parsed = parse_key(&key.pem, &pointer)?;
        duplicate(&mut seen, parsed.id().to_string(), &pointer)?;
        checked.keys.push(parsed);
    }
    seen.clear();
    for (i, identity) in policy.identities.iter().enumerate() {
        let pointer = format!("{base}/identities/{i}");
        let (regex, regex_pointer, signature) = match identity {
            TrustedIdentity::Keyless { issuer, subject } => {
                check_issuer(issuer, &format!("{pointer}/issuer"))?;
                (
                    subject,
                    format!("{pointer}/subject"),
                    format!("{issuer} {subject}"),
                )
            }
            TrustedIdentity::X509 { x509_subject } => (
                x509_subject,
                format!("{pointer}/x509_subject"),
                format!("x509 {x509_subject}"),
            ),
        };
        checked
            .identity_subjects
            .push(compile_anchored(regex, &regex_pointer)?);
        duplicate(&mut seen, signature, &pointer)?;
    }
    seen.clear();
    for (i, allowance) in policy.allow_cves.iter().enumerate() {
        let pointer = format!("{base}/allow_cves/{i}");
        check_vulnerability_id(&allowance.id, &format!("{pointer}/id"))?;
        check_text(
            &allowance.reason,
            MAX_REASON_LEN,
            &format!("{pointer}/reason"),
        )?;
        duplicate(
            &mut seen,
            allowance.id.to_ascii_uppercase(),
            &format!("{pointer}/id"),
        )?;
    }
    if !policy.allow_cves.is_empty() && policy.max_severity.is_none() {
        return Err(RuleError::new(
            format!("{base}/allow_cves"),
            RuleErrorReason::AllowListWithoutLimit,
        ));
    }
    let asks_for_something = !policy.keys.is_empty()
        || !policy.identities.is_empty()
        || policy.max_severity.is_some()
        || policy.require_sbom;
    if policy.mode != PolicyMode::Off && !asks_for_something {
        return Err(RuleError::new(base, RuleErrorReason::MeaninglessPolicy));
    }
    Ok(checked)
}

fn policy_bytes(policy: &TrustPolicy) -> usize {
    let keys: usize = policy.keys.iter().map(|k| k.name.len() + k.pem.len()).sum();
    let identities: usize = policy
        .identities
        .iter()
        .map(|i| match i {
            TrustedIdentity::Keyless { issuer, subject } => issuer.len() + subject.len(),
            TrustedIdentity::X509 { x509_subject } => x509_subject.len(),
        })
        .sum();
    let allowances: usize = policy
        .allow_cves
        .iter()
        .map(|c| c.id.len() + c.reason.len() + 10)
        .sum();
    keys + identities + allowances
}

fn check_counts(
    base: &str,
    keys: usize,
    identities: usize,
    allow_cves: usize,
) -> Result<(), RuleError> {
    for (field, len, max) in [
        ("keys", keys, MAX_KEYS),
        ("identities", identities, MAX_IDENTITIES),
        ("allow_cves", allow_cves, MAX_ALLOW_CVES),
    ] {
        if len > max {
            return Err(RuleError::new(
                format!("{base}/{field}"),
                RuleErrorReason::TooManyPatterns { len, max },
            ));
        }
    }
    Ok(())
}

fn duplicate(
    seen: &mut BTreeMap<String, String>,
    name: String,
    pointer: &str,
) -> Result<(), RuleError> {
    if let Some(first) = seen.get(&name) {
        return Err(RuleError::new(
            pointer,
            RuleErrorReason::Duplicate {
                name,
                first: first.clone(),
            },
        ));
    }
    seen.insert(name, pointer.to_owned());
    Ok(())
}

fn normalise_pem(pem: &str) -> String {
    let mut out = pem.trim().to_owned();
    out.push('\n');
    out
}

fn check_pem_size(pem: &str, pointer: &str) -> Result<(), RuleError> {
    if pem.len() > MAX_KEY_PEM_BYTES {
        return Err(RuleError::new(
            pointer,
            RuleErrorReason::TooLong {
                len: pem.len(),
                max: MAX_KEY_PEM_BYTES,
            },
        ));
    }
    Ok(())
}

fn parse_key(pem: &str, pointer: &str) -> Result<PublicKey, RuleError> {
    check_pem_size(pem, pointer)?;
    PublicKey::from_pem(pem)
        .map_err(|e| RuleError::new(pointer, RuleErrorReason::Key(e.to_string())))
}

fn check_text(text: &str, max: usize, pointer: &str) -> Result<(), RuleError> {
    let len = text.chars().count();
    if len > max {
        return Err(RuleError::new(
            pointer,
            RuleErrorReason::TooLong { len, max },
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(RuleError::new(
            pointer,
            RuleErrorReason::Invalid("control characters are not allowed".into()),
        ));
    }
    Ok(())
}

fn check_issuer(issuer: &str, pointer: &str) -> Result<(), RuleError> {
    let bad = |why: String| RuleError::new(pointer, RuleErrorReason::Issuer(why));
    if issuer.len() > MAX_ISSUER_LEN {
        return Err(bad(format!(
            "{} bytes long; at most {MAX_ISSUER_LEN} are allowed",
            issuer.len()
        )));
    }
    let url = url::Url::parse(issuer).map_err(|e| bad(format!("`{issuer}` is not a URL: {e}")))?;
    if url.scheme() != "https" || url.host_str().is_none_or(str::is_empty) {
        return Err(bad(format!(
            "`{issuer}` is not an https URL (e.g. https://token.actions.githubusercontent.com)"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("an issuer URL carries no credentials".into()));
    }
    // Compared exactly with the certificate's issuer extension, so no rewriting: refuse
    // what the URL parser would have changed (case, default port, `..`).
    if url.as_str() != issuer && url.as_str() != format!("{issuer}/") {
        return Err(bad(format!(
            "`{issuer}` is not written in normal form (`{}`); the issuer is compared exactly",
            url.as_str().trim_end_matches('/')
        )));
    }
    Ok(())
}

/// Compiles a subject regex that must match the whole subject: every match must start at
/// the start of the text and end at its end (`^a$|^b$` and `^(a|b)$` are, `^a|b$` is not).
fn compile_anchored(source: &str, pointer: &str) -> Result<Regex, RuleError> {
    use regex_syntax::hir::Look;
    check_source(source, pointer)?;
    let regex = build_regex(source, pointer)?;
    let anchored = regex_syntax::Parser::new().parse(source).is_ok_and(|hir| {
        let p = hir.properties();
        p.look_set_prefix().contains(Look::Start) && p.look_set_suffix().contains(Look::End)
    });
    if !anchored {
        return Err(RuleError::new(pointer, RuleErrorReason::Unanchored));
    }
    Ok(regex)
}

fn normalise_vulnerability_id(id: &str) -> String {
    let id = id.trim();
    match id.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case("cve-") => id.to_ascii_uppercase(),
        _ => id.to_owned(),
    }
}

fn check_vulnerability_id(id: &str, pointer: &str) -> Result<(), RuleError> {
    static CVE: std::sync::LazyLock<Option<Regex>> =
        std::sync::LazyLock::new(|| Regex::new(r"^CVE-[0-9]{4}-[0-9]{4,19}$").ok());
    static OTHER: std::sync::LazyLock<Option<Regex>> = std::sync::LazyLock::new(|| {
        Regex::new(r"^[A-Za-z][A-Za-z0-9]{0,15}(-[A-Za-z0-9][A-Za-z0-9._:]*)+$").ok()
    });
    let bad = |why: &str| {
        RuleError::new(
            pointer,
            RuleErrorReason::VulnerabilityId(format!("`{id}` {why}")),
        )
    };
    if id.len() > MAX_VULNERABILITY_ID_LEN {
        return Err(bad(&format!(
            "is longer than {MAX_VULNERABILITY_ID_LEN} characters"
        )));
    }
    let is_cve = id.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("cve-"));
    let matches =
        |re: &std::sync::LazyLock<Option<Regex>>| re.as_ref().is_some_and(|re| re.is_match(id));
    if is_cve && !matches(&CVE) {
        return Err(bad("is not a CVE id (`CVE-YYYY-NNNN`)"));
    }
    if !matches(&OTHER) {
        return Err(bad(
            "is not a vulnerability id (e.g. `CVE-2024-1234`, `GHSA-xxxx-xxxx-xxxx`)",
        ));
    }
    Ok(())
}

fn parse_date(s: &str) -> Result<NaiveDate, RuleErrorReason> {
    let s = s.trim();
    let ok = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let date = ok
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten();
    date.ok_or_else(|| RuleErrorReason::Date(format!("`{s}` is not a date (YYYY-MM-DD)")))
}

impl CveInput {
    /// Reads `"<id> until <YYYY-MM-DD>"` or `"<id>:<YYYY-MM-DD>"` (the CLI form).
    pub fn parse_short(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .split_once(" until ")
            .or_else(|| s.rsplit_once(':').filter(|(_, d)| parse_date(d).is_ok()));
        match split {
            Some((id, expires)) if !id.trim().is_empty() => Ok(CveInput {
                id: id.trim().to_owned(),
                expires: expires.trim().to_owned(),
                reason: String::new(),
            }),
            _ => Err(format!(
                "`{s}`: write an allowance as `<id> until <YYYY-MM-DD>` or `<id>:<YYYY-MM-DD>`"
            )),
        }
    }
}

// ------------------------------------------------------------------- serde

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyObject {
    #[serde(default)]
    name: String,
    pem: String,
    #[serde(default)]
    key_id: Option<String>,
    #[serde(default)]
    algorithm: Option<String>,
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = KeyInput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a PEM public key, or an object {\"name\": …, \"pem\": …}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(KeyInput {
            name: String::new(),
            pem: v.to_owned(),
            key_id: None,
            algorithm: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let o = KeyObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(KeyInput {
            name: o.name,
            pem: o.pem,
            key_id: o.key_id,
            algorithm: o.algorithm,
        })
    }
}

impl<'de> Deserialize<'de> for KeyInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityObject {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    x509_subject: Option<String>,
}

impl<'de> Deserialize<'de> for IdentityInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let o = IdentityObject::deserialize(d)?;
        match (o.issuer, o.subject, o.x509_subject) {
            (Some(issuer), Some(subject), None) => Ok(IdentityInput::Keyless { issuer, subject }),
            (None, None, Some(x509_subject)) => Ok(IdentityInput::X509 { x509_subject }),
            (Some(_), None, None) => Err(de::Error::missing_field("subject")),
            (None, Some(_), None) => Err(de::Error::missing_field("issuer")),
            _ => Err(de::Error::custom(
                "an identity is either keyless {\"issuer\", \"subject\"} or Notation \
                 {\"x509_subject\"}",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CveObject {
    id: String,
    expires: String,
    #[serde(default)]
    reason: String,
}

struct CveVisitor;

impl<'de> Visitor<'de> for CveVisitor {
    type Value = CveInput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "an allowance {\"id\": …, \"expires\": \"YYYY-MM-DD\", \"reason\": …} or a string \
             \"<id> until <YYYY-MM-DD>\"",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        CveInput::parse_short(v).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let o = CveObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(CveInput {
            id: o.id,
            expires: o.expires,
            reason: o.reason,
        })
    }
}

impl<'de> Deserialize<'de> for CveInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CveVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::RuleInput;
    use imagelib_events::{RegistryId, RuleId};
    use serde_json::{Value, json};

    const P256: &str = include_str!("../testdata/p256.pub");
    const ED25519: &str = include_str!("../testdata/ed25519.pub");
    const RSA2048: &str = include_str!("../testdata/rsa2048.pub");
    const RSA1024: &str = include_str!("../testdata/rsa1024.pub");
    const P384: &str = include_str!("../testdata/p384.pub");
    const ED448: &str = include_str!("../testdata/ed448.pub");

    fn registry() -> RegistryId {
        "0190f1d2-3c4b-7a5e-8f90-123456789abc".parse().unwrap()
    }

    fn rule_id() -> RuleId {
        "signed".parse().unwrap()
    }

    fn rule(trust: Value) -> Result<RuleSet, RuleError> {
        RuleInput::from_json_value(json!({"repositories": "a/*", "trust": trust}))?
            .into_rule_set(registry(), rule_id())
    }

    fn policy(trust: Value) -> TrustPolicy {
        rule(trust).expect("accepted").trust.expect("a policy")
    }

    fn key_id(pem: &str) -> String {
        PublicKey::from_pem(pem).unwrap().id().to_string()
    }

    fn identity(issuer: &str, subject: &str) -> Value {
        json!({"issuer": issuer, "subject": subject})
    }

    #[test]
    fn a_full_policy_converts_to_the_event() {
        let p = policy(json!({
            "mode": "enforce",
            "keys": [P256, {"name": " release-2026 ", "pem": ED25519}, {"pem": RSA2048}],
            "identities": [
                identity("https://token.actions.githubusercontent.com",
                         "^https://github\\.com/acme/.*$"),
                {"x509_subject": "^CN=release,O=Acme$"},
            ],
            "max_severity": "high",
            "allow_cves": [
                "cve-2024-1234 until 2027-01-31",
                "GHSA-abcd-efgh-ijkl:2026-12-01",
                {"id": "RUSTSEC-2024-0001", "expires": "2027-06-30", "reason": "not reachable"},
            ],
            "require_sbom": true,
        }));
        assert_eq!(p.mode, PolicyMode::Enforce);
        assert_eq!(p.keys.len(), 3);
        assert_eq!(p.keys[0].name, "");
        assert_eq!(p.keys[0].pem, P256);
        assert_eq!(p.keys[1].name, "release-2026");
        let p384 = policy(json!({"keys": [P384]}));
        let shown = TrustInput::from(&p384);
        assert_eq!(
            shown.keys[0].algorithm.as_deref(),
            Some("ecdsa-p384-sha384")
        );
        assert_eq!(
            p.identities,
            vec![
                TrustedIdentity::Keyless {
                    issuer: "https://token.actions.githubusercontent.com".into(),
                    subject: "^https://github\\.com/acme/.*$".into(),
                },
                TrustedIdentity::X509 {
                    x509_subject: "^CN=release,O=Acme$".into()
                },
            ]
        );
        assert_eq!(p.max_severity, Some(SeverityLimit::High));
        let date = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            p.allow_cves,
            vec![
                CveAllowance {
                    id: "CVE-2024-1234".into(),
                    expires: date("2027-01-31"),
                    reason: String::new()
                },
                CveAllowance {
                    id: "GHSA-abcd-efgh-ijkl".into(),
                    expires: date("2026-12-01"),
                    reason: String::new()
                },
                CveAllowance {
                    id: "RUSTSEC-2024-0001".into(),
                    expires: date("2027-06-30"),
                    reason: "not reachable".into()
                },
            ]
        );
        assert!(p.require_sbom);
    }

    #[test]
    fn defaults_and_off() {
        let p = policy(json!({"require_sbom": true}));
        assert_eq!(p.mode, PolicyMode::Audit);
        assert!(p.keys.is_empty() && p.identities.is_empty() && p.allow_cves.is_empty());
        assert_eq!(p.max_severity, None);
        // Off keeps a policy written but switched off, even an empty one.
        assert_eq!(policy(json!({"mode": "off"})).mode, PolicyMode::Off);
        assert_eq!(
            policy(json!({"max_severity": "none"})).max_severity,
            Some(SeverityLimit::Nothing)
        );
        assert_eq!(rule(Value::Null).unwrap().trust, None);
    }

    #[test]
    fn pem_is_normalised_and_key_ids_are_checked() {
        let padded = format!("\n  {}  \n\n", P256.trim());
        let p = policy(json!({"keys": [padded]}));
        assert_eq!(p.keys[0].pem, P256);
        let id = key_id(P256);
        // The id GET shows is accepted back, a wrong one is not.
        policy(json!({"keys": [{"pem": P256, "key_id": id, "algorithm": "ecdsa-p256-sha256"}]}));
        let e = rule(json!({"keys": [{"pem": P256, "key_id": key_id(ED25519)}]})).unwrap_err();
        assert_eq!(e.pointer, "/trust/keys/0/key_id");
        assert!(e.to_string().contains("is not the id of this key"), "{e}");
        let e = rule(json!({"keys": [{"pem": P256, "algorithm": "ed25519"}]})).unwrap_err();
        assert_eq!(e.pointer, "/trust/keys/0/algorithm");
        assert!(e.to_string().contains("`ecdsa-p256-sha256`"), "{e}");
    }

    fn refused(trust: Value, pointer: &str, needle: &str) {
        let e = rule(trust.clone()).expect_err("refused");
        assert_eq!(e.pointer, pointer, "{trust}: {e}");
        assert!(e.to_string().contains(needle), "{trust}: {e}");
    }

    #[test]
    fn key_errors() {
        refused(
            json!({"keys": ["not a key"]}),
            "/trust/keys/0",
            "invalid public key",
        );
        refused(
            json!({"keys": [P256, RSA1024]}),
            "/trust/keys/1",
            "below the 2048-bit minimum",
        );
        refused(
            json!({"keys": [ED448]}),
            "/trust/keys/0",
            "unsupported key algorithm",
        );
        let private = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";
        refused(
            json!({"keys": [private]}),
            "/trust/keys/0",
            "invalid public key",
        );
        let huge = format!("{}{}", P256, " ".repeat(MAX_KEY_PEM_BYTES));
        refused(
            json!({"keys": [{"pem": huge}]}),
            "/trust/keys/0",
            "at most 16384",
        );
        refused(
            json!({"keys": [P256, {"name": "again", "pem": P256}]}),
            "/trust/keys/1",
            "listed twice (first at /trust/keys/0)",
        );
        refused(
            json!({"keys": [{"name": "x".repeat(MAX_KEY_NAME_LEN + 1), "pem": P256}]}),
            "/trust/keys/0/name",
            "at most 128",
        );
        refused(
            json!({"keys": [{"name": "a\u{7}b", "pem": P256}]}),
            "/trust/keys/0/name",
            "control characters",
        );
        refused(
            json!({"keys": [{"name": "n"}]}),
            "/trust/keys/0/pem",
            "missing field `pem`",
        );
        refused(
            json!({"keys": [{"pem": P256, "fingerprint": "x"}]}),
            "/trust/keys/0/fingerprint",
            "unknown field `fingerprint`",
        );
        refused(json!({"keys": [5]}), "/trust/keys/0", "a PEM public key");
        refused(
            json!({"keys": vec![P256; MAX_KEYS + 1]}),
            "/trust/keys",
            "33 entries; at most 32",
        );
    }

    #[test]
    fn identity_errors() {
        let gh = "https://token.actions.githubusercontent.com";
        refused(
            json!({"identities": [identity("http://issuer.example", "^a$")]}),
            "/trust/identities/0/issuer",
            "not an https URL",
        );
        refused(
            json!({"identities": [identity("accounts.google.com", "^a$")]}),
            "/trust/identities/0/issuer",
            "is not a URL",
        );
        refused(
            json!({"identities": [identity("https://Issuer.Example", "^a$")]}),
            "/trust/identities/0/issuer",
            "normal form (`https://issuer.example`)",
        );
        refused(
            json!({"identities": [identity("https://u:p@issuer.example", "^a$")]}),
            "/trust/identities/0/issuer",
            "no credentials",
        );
        refused(
            json!({"identities": [identity(&format!("https://{}.example", "a".repeat(MAX_ISSUER_LEN)), "^a$")]}),
            "/trust/identities/0/issuer",
            "at most 512",
        );
        refused(
            json!({"identities": [identity(gh, "^(unclosed$")]}),
            "/trust/identities/0/subject",
            "invalid regular expression",
        );
        refused(
            json!({"identities": [identity(gh, "ci@acme\\.com")]}),
            "/trust/identities/0/subject",
            "anchor the regex",
        );
        for unanchored in ["^ci@acme\\.com\\$", "^a|b$", "(?m)^a$", "^a$|b", "^a$\n?"] {
            refused(
                json!({"identities": [identity(gh, unanchored)]}),
                "/trust/identities/0/subject",
                "anchor the regex",
            );
        }
        for anchored in ["^a$|^b$", "^(a|b)$", "^(?:ci|cd)@acme\\.com$", "\\Aa\\z"] {
            let p = policy(json!({"identities": [identity(gh, anchored)]}));
            assert_eq!(p.identities.len(), 1, "{anchored}");
        }
        refused(
            json!({"identities": [identity(gh, "^\\w{1000}\\w{1000}$")]}),
            "/trust/identities/0/subject",
            "too large once compiled",
        );
        refused(
            json!({"identities": [identity(gh, "")]}),
            "/trust/identities/0/subject",
            "empty pattern",
        );
        refused(
            json!({"identities": [{"x509_subject": "CN=release"}]}),
            "/trust/identities/0/x509_subject",
            "anchor the regex",
        );
        refused(
            json!({"identities": [{"issuer": gh}]}),
            "/trust/identities/0/subject",
            "missing field `subject`",
        );
        refused(
            json!({"identities": [{"subject": "^a$"}]}),
            "/trust/identities/0/issuer",
            "missing field `issuer`",
        );
        refused(
            json!({"identities": [{"issuer": gh, "subject": "^a$", "x509_subject": "^b$"}]}),
            "/trust/identities/0",
            "either keyless",
        );
        refused(
            json!({"identities": [{"issuer": gh, "subjekt": "^a$"}]}),
            "/trust/identities/0/subjekt",
            "unknown field `subjekt`",
        );
        refused(
            json!({"identities": [identity(gh, "^a$"), identity(gh, "^a$")]}),
            "/trust/identities/1",
            "listed twice",
        );
        let many: Vec<Value> = (0..=MAX_IDENTITIES)
            .map(|i| identity(gh, &format!("^{i}$")))
            .collect();
        refused(
            json!({"identities": many}),
            "/trust/identities",
            "33 entries; at most 32",
        );
    }

    #[test]
    fn allow_list_errors() {
        let limit = |cves: Value| json!({"max_severity": "high", "allow_cves": cves});
        refused(
            limit(json!([{"id": "not an id", "expires": "2027-01-01"}])),
            "/trust/allow_cves/0/id",
            "is not a vulnerability id",
        );
        refused(
            limit(json!([{"id": "CVE-24-1", "expires": "2027-01-01"}])),
            "/trust/allow_cves/0/id",
            "is not a CVE id",
        );
        refused(
            limit(json!([{"id": format!("GHSA-{}", "a".repeat(64)), "expires": "2027-01-01"}])),
            "/trust/allow_cves/0/id",
            "longer than 64",
        );
        refused(
            limit(json!([
                "CVE-2024-1234 until 2027-01-31",
                "cve-2024-1234 until 2028-01-01"
            ])),
            "/trust/allow_cves/1/id",
            "`CVE-2024-1234` is listed twice (first at /trust/allow_cves/0/id)",
        );
        refused(
            limit(json!([{"id": "CVE-2024-1234", "expires": "2027-13-01"}])),
            "/trust/allow_cves/0/expires",
            "is not a date (YYYY-MM-DD)",
        );
        refused(
            limit(json!([{"id": "CVE-2024-1234", "expires": "31/01/2027"}])),
            "/trust/allow_cves/0/expires",
            "is not a date",
        );
        refused(
            limit(json!([{"id": "CVE-2024-1234", "expires": "2027-1-31"}])),
            "/trust/allow_cves/0/expires",
            "is not a date",
        );
        refused(
            limit(json!(["CVE-2024-1234"])),
            "/trust/allow_cves/0",
            "write an allowance",
        );
        refused(
            limit(json!([{"id": "CVE-2024-1234"}])),
            "/trust/allow_cves/0/expires",
            "missing field `expires`",
        );
        refused(
            limit(json!([{"id": "CVE-2024-1234", "expires": "2027-01-01", "why": "x"}])),
            "/trust/allow_cves/0/why",
            "unknown field `why`",
        );
        refused(
            limit(
                json!([{"id": "CVE-2024-1234", "expires": "2027-01-01", "reason": "r".repeat(MAX_REASON_LEN + 1)}]),
            ),
            "/trust/allow_cves/0/reason",
            "at most 1024",
        );
        let many: Vec<Value> = (0..=MAX_ALLOW_CVES)
            .map(|i| json!(format!("CVE-2024-{:05} until 2027-01-01", i)))
            .collect();
        refused(
            limit(json!(many)),
            "/trust/allow_cves",
            "1001 entries; at most 1000",
        );
        refused(
            json!({"require_sbom": true, "allow_cves": ["CVE-2024-1234 until 2027-01-31"]}),
            "/trust/allow_cves",
            "only matters with `max_severity`",
        );
        // An expired entry is kept: the verdict then says the CVE is not allowed.
        let p = policy(limit(json!(["CVE-2020-0001 until 2021-01-01"])));
        assert_eq!(p.allow_cves[0].expires.to_string(), "2021-01-01");
    }

    #[test]
    fn the_whole_policy_is_bounded() {
        let reason = "r".repeat(MAX_REASON_LEN);
        let many: Vec<Value> = (0..300)
            .map(|i| json!({"id": format!("CVE-2024-{:05}", i), "expires": "2027-01-01", "reason": reason}))
            .collect();
        refused(
            json!({"max_severity": "high", "allow_cves": many}),
            "/trust",
            "at most 262144",
        );
        let fewer: Vec<Value> = many.into_iter().take(200).collect();
        assert_eq!(
            policy(json!({"max_severity": "high", "allow_cves": fewer}))
                .allow_cves
                .len(),
            200
        );
    }

    #[test]
    fn policy_errors() {
        refused(
            json!({"mode": "enforce"}),
            "/trust",
            "must ask for something",
        );
        refused(json!({}), "/trust", "must ask for something");
        refused(
            json!({"mode": "enforce", "require_sbom": false}),
            "/trust",
            "must ask for something",
        );
        refused(
            json!({"mode": "strict"}),
            "/trust/mode",
            "unknown variant `strict`",
        );
        refused(
            json!({"max_severity": "severe"}),
            "/trust/max_severity",
            "unknown variant `severe`",
        );
        refused(
            json!({"require_sbomb": true}),
            "/trust/require_sbomb",
            "unknown field `require_sbomb`",
        );
        refused(json!("enforce"), "/trust", "invalid type");
    }

    #[test]
    fn get_shows_key_ids_and_put_takes_it_back() {
        let set = rule(json!({
            "mode": "audit",
            "keys": [{"name": "ci", "pem": P256}, RSA2048],
            "identities": [identity("https://accounts.google.com", "^a@b\\.c$")],
            "max_severity": "medium",
            "allow_cves": ["CVE-2024-1 until 2027-01-31"],
        }))
        .unwrap_err();
        // `CVE-2024-1` is too short for a CVE id; with a real one it is accepted.
        assert_eq!(set.pointer, "/trust/allow_cves/0/id");
        let set = rule(json!({
            "mode": "audit",
            "keys": [{"name": "ci", "pem": P256}, RSA2048],
            "identities": [identity("https://accounts.google.com", "^a@b\\.c$")],
            "max_severity": "medium",
            "allow_cves": ["CVE-2024-12345 until 2027-01-31"],
        }))
        .unwrap();
        let view = serde_json::to_value(RuleView::from(&set)).unwrap();
        assert_eq!(
            view["trust"],
            json!({
                "mode": "audit",
                "keys": [
                    {"name": "ci", "pem": P256, "key_id": key_id(P256), "algorithm": "ecdsa-p256-sha256"},
                    {"pem": RSA2048, "key_id": key_id(RSA2048), "algorithm": "rsa-sha256"},
                ],
                "identities": [{"issuer": "https://accounts.google.com", "subject": "^a@b\\.c$"}],
                "max_severity": "medium",
                "allow_cves": [{"id": "CVE-2024-12345", "expires": "2027-01-31"}],
                "require_sbom": false,
            })
        );
        assert_eq!(view["rule_id"], "signed");
        assert_eq!(view["repositories"], json!([{"glob": "a/*"}]));
        // The view, as GET returns it, is a valid PUT body for the same rule.
        let mut body = view.clone();
        let obj = body.as_object_mut().unwrap();
        obj.remove("registry_id");
        obj.remove("rule_id");
        let again = RuleInput::from_json_value(body)
            .unwrap()
            .into_rule_set(registry(), rule_id())
            .unwrap();
        assert_eq!(again, set);
        // And so is the input that `From<&RuleSet>` rebuilds.
        let input = RuleInput::from(&set);
        let again = RuleInput::from_json_slice(&serde_json::to_vec(&input).unwrap())
            .unwrap()
            .into_rule_set(registry(), rule_id())
            .unwrap();
        assert_eq!(again, set);
        // Without a policy the view has no `trust` at all.
        let plain = RuleInput::from_json_value(json!({"repositories": "a"}))
            .unwrap()
            .into_rule_set(registry(), rule_id())
            .unwrap();
        let view = serde_json::to_value(RuleView::from(&plain)).unwrap();
        assert!(view.get("trust").is_none(), "{view}");
        assert_eq!(view, serde_json::to_value(&plain).unwrap());
    }

    #[test]
    fn event_policies_are_checked_too() {
        let mut set = rule(json!({"keys": [P256]})).unwrap();
        let compiled = crate::CompiledRule::compile(&set).unwrap();
        assert_eq!(compiled.trusted_keys().len(), 1);
        assert_eq!(compiled.trusted_keys()[0].id().to_string(), key_id(P256));
        if let Some(t) = set.trust.as_mut() {
            t.keys.push(TrustedKey {
                name: String::new(),
                pem: "garbage".into(),
            });
        }
        let e = crate::CompiledRule::compile(&set).unwrap_err();
        assert_eq!(e.pointer, "/trust/keys/1");
        if let Some(t) = set.trust.as_mut() {
            t.keys.clear();
        }
        let e = crate::CompiledRule::compile(&set).unwrap_err();
        assert_eq!(e.pointer, "/trust");
    }

    #[test]
    fn short_allowance_forms() {
        let c = CveInput::parse_short(" CVE-2024-1234 until 2027-01-31 ").unwrap();
        assert_eq!(
            (c.id.as_str(), c.expires.as_str()),
            ("CVE-2024-1234", "2027-01-31")
        );
        let c = CveInput::parse_short("openSUSE-SU-2023:1234-1:2027-01-31").unwrap();
        assert_eq!(c.id, "openSUSE-SU-2023:1234-1");
        assert!(CveInput::parse_short("CVE-2024-1234:soon").is_err());
        assert!(CveInput::parse_short(" until 2027-01-31").is_err());
        check_vulnerability_id("openSUSE-SU-2023:1234-1", "/p").unwrap();
        for id in [
            "GO-2024-1234",
            "PYSEC-2021-1",
            "DLA-3000-1",
            "GHSA-abcd-efgh-ijkl",
        ] {
            check_vulnerability_id(id, "/p").unwrap();
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn garbage() -> impl Strategy<Value = String> {
            prop_oneof!["\\PC{0,40}", "[ -~]{0,40}"]
        }

        fn or_garbage(valid: &'static str) -> impl Strategy<Value = String> {
            prop_oneof![4 => proptest::string::string_regex(valid).unwrap(), 1 => garbage()]
        }

        fn any_policy() -> impl Strategy<Value = Value> {
            let keys = prop_oneof![
                4 => prop::sample::subsequence(vec![P256, ED25519, RSA2048, P384], 0..3),
                1 => prop::collection::vec(prop::sample::select(vec![P256, "x", ED448]), 0..3),
            ];
            let keyless = (
                or_garbage("https://[a-z]{1,10}\\.example(/[a-z]{1,5})?"),
                or_garbage("\\^[a-z@.|()]{1,10}\\$"),
            );
            let cve = (
                prop_oneof![
                    3 => or_garbage("(CVE|cve)-20[0-9]{2}-[0-9]{4,6}"),
                    1 => or_garbage("GHSA-[a-z0-9]{4}-[a-z0-9]{4}-[a-z0-9]{4}"),
                ],
                or_garbage("20[2-3][0-9]-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"),
                "[ -~]{0,20}",
            );
            (
                prop::sample::select(vec!["enforce", "audit", "off"]),
                keys,
                prop::collection::vec(keyless, 0..3),
                prop::collection::vec(or_garbage("\\^CN=[a-z]{1,8}(,O=[A-Z][a-z]{1,5})?\\$"), 0..2),
                prop::option::of(prop::sample::select(vec![
                    "critical", "high", "medium", "low", "none",
                ])),
                prop::collection::vec(cve, 0..4),
                any::<bool>(),
            )
                .prop_map(|(mode, keys, keyless, x509, limit, cves, sbom)| {
                    let mut identities: Vec<Value> = keyless
                        .into_iter()
                        .map(|(issuer, subject)| json!({"issuer": issuer, "subject": subject}))
                        .collect();
                    identities.extend(x509.into_iter().map(|x| json!({"x509_subject": x})));
                    let cves: Vec<Value> = cves
                        .into_iter()
                        .enumerate()
                        .map(|(i, (id, expires, reason))| {
                            if i % 2 == 0 {
                                json!({"id": id, "expires": expires, "reason": reason})
                            } else {
                                json!(format!("{id} until {expires}"))
                            }
                        })
                        .collect();
                    json!({"mode": mode, "keys": keys, "identities": identities,
                           "max_severity": limit, "allow_cves": cves, "require_sbom": sbom})
                })
        }

        proptest! {
            /// Any policy is accepted or refused with a pointer into it, never a panic; an
            /// accepted one shows and reads back as itself, and compiles as an event.
            #[test]
            fn policies_are_refused_or_round_trip(trust in any_policy()) {
                match rule(trust) {
                    Err(e) => prop_assert!(e.pointer.starts_with("/trust"), "{e}"),
                    Ok(set) => {
                        let view = serde_json::to_value(RuleView::from(&set)).unwrap();
                        let mut body = view;
                        let fields = body.as_object_mut().unwrap();
                        fields.remove("registry_id");
                        fields.remove("rule_id");
                        let again = RuleInput::from_json_value(body)
                            .unwrap()
                            .into_rule_set(registry(), rule_id())
                            .unwrap();
                        prop_assert_eq!(&again, &set);
                        prop_assert!(crate::CompiledRule::compile(&set).is_ok());
                    }
                }
            }
        }
    }
}
