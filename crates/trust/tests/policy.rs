//! The agreed policy semantics, reason by reason, over evidence read from referrers.

mod evidence_kit;

use chrono::{NaiveDate, TimeZone as _, Utc};
use evidence_kit::*;
use imagelib_trust::evidence::{Evidence, Outcome, Scheme, SignatureEvidence, SignatureMaterial};
use imagelib_trust::policy::{
    CveAllowance, Evaluation, IdentitySpec, KeySpec, MAX_DETAIL_CHARS, Mode, Policy, PolicyError,
    PolicySpec, Reason, SeverityLimit, Verdict, evaluate,
};
use imagelib_trust::sbom::SbomFormat;
use imagelib_trust::vuln::{ScannerInfo, Severity, SeverityCounts, VulnFinding, VulnSummary};
use proptest::prelude::*;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
}

fn spec() -> PolicySpec {
    PolicySpec {
        mode: Mode::Enforce,
        keys: Vec::new(),
        identities: Vec::new(),
        max_severity: None,
        allow_cves: Vec::new(),
        require_sbom: false,
    }
}

fn signed_by(key: &Key, digest: &str, source: &str) -> Evidence {
    let payload = cosign_payload(digest);
    Evidence::Signature(SignatureEvidence {
        source: source.into(),
        material: SignatureMaterial::Cosign {
            signature: key.sign(&payload),
            payload,
            certificate: None,
            chain: None,
            bundle: None,
        },
    })
}

fn report(scanner: &str, at: &str, source: &str, findings: &[(&str, Severity)]) -> Evidence {
    let mut counts = SeverityCounts::default();
    for (_, s) in findings {
        counts.add(*s);
    }
    Evidence::Vulnerabilities {
        source: source.into(),
        summary: VulnSummary {
            scanner: ScannerInfo {
                name: scanner.into(),
                version: Some("1".into()),
            },
            db: None,
            scanned_at: Some(at.into()),
            counts,
            fixable: Some(0),
            findings: findings
                .iter()
                .map(|(id, severity)| VulnFinding {
                    id: (*id).into(),
                    severity: *severity,
                    fixed: Some(false),
                })
                .collect(),
            truncated: false,
        },
    }
}

fn sbom(source: &str) -> Evidence {
    Evidence::Sbom {
        source: source.into(),
        format: SbomFormat::Spdx,
    }
}

fn run(spec: &PolicySpec, own: &[Evidence], children: &[Vec<Evidence>]) -> Evaluation {
    let policy = Policy::compile(spec).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap();
    let verifier = policy.verifier(now);
    evaluate(&policy, &verifier, SUBJECT, own, children, today())
}

fn keyed(key: &Key) -> PolicySpec {
    PolicySpec {
        keys: vec![KeySpec {
            name: "release".into(),
            pem: key.pem(),
        }],
        ..spec()
    }
}

fn allow(id: &str, expires: NaiveDate) -> CveAllowance {
    CveAllowance {
        id: id.into(),
        expires,
        reason: "no fix upstream".into(),
    }
}

#[test]
fn a_signed_scanned_image_with_an_sbom_passes() {
    let key = Key::generate();
    let spec = PolicySpec {
        max_severity: Some(SeverityLimit::High),
        require_sbom: true,
        ..keyed(&key)
    };
    let own = [
        signed_by(&key, SUBJECT, "sha256:sig"),
        report(
            "trivy",
            "2026-12-01T00:00:00Z",
            "sha256:rep",
            &[("CVE-2024-1", Severity::High)],
        ),
        sbom("sha256:sbom"),
    ];
    let e = run(&spec, &own, &[]);
    assert_eq!(e.findings, []);
    assert_eq!(e.signatures.len(), 1);
    assert_eq!(e.signatures[0].outcome, Outcome::Trusted);
    assert_eq!(e.signatures[0].scheme, Scheme::Cosign);
    assert!(e.sbom);
    let v = e.vulnerabilities.as_ref().unwrap();
    assert_eq!(v.counts.high, 1);
    assert_eq!(v.max_severity, Some(Severity::High));
    assert_eq!(v.sources, ["sha256:rep"]);
    assert_eq!(e.verdict(Mode::Enforce), Some(Verdict::Pass));
    assert_eq!(e.verdict(Mode::Audit), Some(Verdict::Pass));
    assert_eq!(e.verdict(Mode::Off), None);
}

#[test]
fn no_signature_referrer_is_unsigned_and_children_signatures_do_not_count() {
    let key = Key::generate();
    let child = vec![signed_by(&key, OTHER, "sha256:childsig")];
    let e = run(&keyed(&key), &[], &[child]);
    assert_eq!(e.reasons(), [Reason::Unsigned]);
    assert!(e.findings[0].detail.contains(SUBJECT));
    assert_eq!(e.verdict(Mode::Enforce), Some(Verdict::Fail));
    assert_eq!(e.verdict(Mode::Audit), Some(Verdict::Audit));
    assert_eq!(e.verdict(Mode::Off), None);
}

#[test]
fn a_signature_by_another_key_is_signer_not_trusted() {
    let trusted = Key::generate();
    let other = Key::generate();
    let e = run(
        &keyed(&trusted),
        &[signed_by(&other, SUBJECT, "sha256:sig")],
        &[],
    );
    assert_eq!(e.reasons(), [Reason::SignerNotTrusted]);
    assert!(matches!(e.signatures[0].outcome, Outcome::Untrusted(_)));
}

#[test]
fn only_invalid_signatures_are_signature_invalid() {
    let key = Key::generate();
    // A valid signature by the trusted key, but for another image (copied over).
    let copied = signed_by(&key, OTHER, "sha256:copied");
    let unreadable = Evidence::UnreadableSignature {
        source: "sha256:big".into(),
        scheme: Scheme::Cosign,
        reason: "layer is 70000 bytes, over the 65536-byte limit".into(),
    };
    let e = run(&keyed(&key), &[copied, unreadable], &[]);
    assert_eq!(e.reasons(), [Reason::SignatureInvalid]);
    assert!(
        e.findings[0].detail.contains("over the 65536-byte limit"),
        "{}",
        e.findings[0].detail
    );
    assert!(
        e.signatures
            .iter()
            .all(|c| matches!(c.outcome, Outcome::Invalid(_)))
    );
}

#[test]
fn one_trusted_signature_among_bad_ones_is_enough_and_untrusted_beats_invalid() {
    let key = Key::generate();
    let other = Key::generate();
    let bad = signed_by(&key, OTHER, "sha256:copied");
    let good = signed_by(&key, SUBJECT, "sha256:good");
    let foreign = signed_by(&other, SUBJECT, "sha256:foreign");
    assert_eq!(
        run(&keyed(&key), &[bad.clone(), foreign.clone(), good], &[]).findings,
        []
    );
    assert_eq!(
        run(&keyed(&key), &[bad, foreign], &[]).reasons(),
        [Reason::SignerNotTrusted]
    );
}

#[test]
fn without_keys_or_identities_no_signature_is_required() {
    let e = run(&spec(), &[], &[]);
    assert_eq!(e.findings, []);
    // Signatures are still checked and reported.
    let key = Key::generate();
    let e = run(&spec(), &[signed_by(&key, SUBJECT, "sha256:sig")], &[]);
    assert_eq!(e.findings, []);
    assert!(matches!(e.signatures[0].outcome, Outcome::Untrusted(_)));
}

#[test]
fn findings_above_the_limit_fail_unless_allow_listed_and_unexpired() {
    let limited = PolicySpec {
        max_severity: Some(SeverityLimit::High),
        ..spec()
    };
    let own = [report(
        "trivy",
        "2026-12-01T00:00:00Z",
        "sha256:rep",
        &[
            ("CVE-2024-1", Severity::Critical),
            ("CVE-2024-2", Severity::High),
        ],
    )];
    let e = run(&limited, &own, &[]);
    assert_eq!(e.reasons(), [Reason::SeverityAboveLimit]);
    assert_eq!(
        e.findings[0].detail,
        "above the limit `high`: CVE-2024-1 (critical)"
    );

    // Allow-listed until a later date, or until today (inclusive): pass.
    for expires in [today(), today().succ_opt().unwrap()] {
        let spec = PolicySpec {
            allow_cves: vec![allow("cve-2024-1", expires)],
            ..limited.clone()
        };
        assert_eq!(run(&spec, &own, &[]).findings, [], "{expires}");
    }

    // Expired yesterday: cve_not_allowed, naming the date.
    let spec = PolicySpec {
        allow_cves: vec![allow(
            "CVE-2024-1",
            NaiveDate::from_ymd_opt(2026, 12, 2).unwrap(),
        )],
        ..limited.clone()
    };
    let e = run(&spec, &own, &[]);
    assert_eq!(e.reasons(), [Reason::CveNotAllowed]);
    assert_eq!(
        e.findings[0].detail,
        "CVE-2024-1 (critical) allow-list entry expired 2026-12-02"
    );

    // An expired entry for one and none for another: both reasons, each once.
    let own = [report(
        "trivy",
        "2026-12-01T00:00:00Z",
        "sha256:rep",
        &[
            ("CVE-2024-1", Severity::Critical),
            ("CVE-2024-3", Severity::Critical),
            ("CVE-2024-4", Severity::Critical),
        ],
    )];
    let e = run(&spec, &own, &[]);
    assert_eq!(
        e.reasons(),
        [Reason::SeverityAboveLimit, Reason::CveNotAllowed]
    );
    assert_eq!(
        e.findings[0].detail,
        "above the limit `high`: CVE-2024-3 (critical); CVE-2024-4 (critical)"
    );
}

#[test]
fn unknown_severity_never_counts_against_the_limit() {
    let none = PolicySpec {
        max_severity: Some(SeverityLimit::Nothing),
        ..spec()
    };
    let unknown = [report(
        "trivy",
        "2026-12-01T00:00:00Z",
        "sha256:rep",
        &[("CVE-2024-9", Severity::Unknown)],
    )];
    let e = run(&none, &unknown, &[]);
    assert_eq!(e.findings, []);
    assert_eq!(e.vulnerabilities.unwrap().counts.unknown, 1);
    let low = [report(
        "trivy",
        "2026-12-01T00:00:00Z",
        "sha256:rep",
        &[("CVE-2024-8", Severity::Low)],
    )];
    assert_eq!(
        run(&none, &low, &[]).reasons(),
        [Reason::SeverityAboveLimit]
    );
    let critical_ok = PolicySpec {
        max_severity: Some(SeverityLimit::Critical),
        ..spec()
    };
    let crit = [report(
        "trivy",
        "2026-12-01T00:00:00Z",
        "sha256:rep",
        &[("CVE-2024-7", Severity::Critical)],
    )];
    assert_eq!(run(&critical_ok, &crit, &[]).findings, []);
}

#[test]
fn a_limit_without_any_report_is_no_vulnerability_report_and_a_child_report_counts() {
    let limited = PolicySpec {
        max_severity: Some(SeverityLimit::Medium),
        ..spec()
    };
    let e = run(&limited, &[sbom("sha256:sbom")], &[]);
    assert_eq!(e.reasons(), [Reason::NoVulnerabilityReport]);
    assert!(e.vulnerabilities.is_none());

    let clean = vec![report("trivy", "2026-12-01T00:00:00Z", "sha256:amd64", &[])];
    assert_eq!(run(&limited, &[], &[clean]).findings, []);

    let vulnerable = vec![report(
        "trivy",
        "2026-12-01T00:00:00Z",
        "sha256:arm64",
        &[("CVE-2024-5", Severity::High)],
    )];
    let clean = vec![report(
        "trivy",
        "2026-12-02T00:00:00Z",
        "sha256:amd64",
        &[("CVE-2024-6", Severity::Low)],
    )];
    let e = run(&limited, &[], &[clean, vulnerable]);
    assert_eq!(e.reasons(), [Reason::SeverityAboveLimit]);
    let v = e.vulnerabilities.unwrap();
    assert_eq!((v.counts.high, v.counts.low), (1, 1));
    assert_eq!(v.sources, ["sha256:amd64", "sha256:arm64"]);
}

#[test]
fn the_newest_report_of_each_scanner_counts_and_scanners_combine() {
    let limited = PolicySpec {
        max_severity: Some(SeverityLimit::High),
        ..spec()
    };
    let old_bad = report(
        "trivy",
        "2026-11-01T00:00:00Z",
        "sha256:old",
        &[("CVE-2024-1", Severity::Critical)],
    );
    let new_clean = report("trivy", "2026-12-01T00:00:00+01:00", "sha256:new", &[]);
    let e = run(&limited, &[old_bad.clone(), new_clean.clone()], &[]);
    assert_eq!(e.findings, []);
    assert_eq!(e.vulnerabilities.unwrap().sources, ["sha256:new"]);

    // Reversed: the newer report has the critical.
    let old_clean = report("trivy", "2026-11-01T00:00:00Z", "sha256:old", &[]);
    let new_bad = report(
        "Trivy",
        "2026-12-01T00:00:00Z",
        "sha256:new",
        &[("CVE-2024-1", Severity::Critical)],
    );
    assert_eq!(
        run(&limited, &[new_bad, old_clean], &[]).reasons(),
        [Reason::SeverityAboveLimit]
    );

    // Another scanner's report combines with trivy's newest.
    let grype = report(
        "grype",
        "2026-10-01T00:00:00Z",
        "sha256:grype",
        &[("CVE-2024-2", Severity::Critical)],
    );
    let e = run(&limited, &[old_bad, new_clean, grype], &[]);
    assert_eq!(e.reasons(), [Reason::SeverityAboveLimit]);
    assert!(e.findings[0].detail.contains("CVE-2024-2"));
    assert_eq!(e.vulnerabilities.unwrap().counts.critical, 1);

    // A report without a readable scan time is older than any dated one.
    let undated_bad = report(
        "trivy",
        "yesterday",
        "sha256:undated",
        &[("CVE-2024-1", Severity::Critical)],
    );
    let dated_clean = report("trivy", "2020-01-01T00:00:00Z", "sha256:dated", &[]);
    assert_eq!(run(&limited, &[undated_bad, dated_clean], &[]).findings, []);
}

#[test]
fn require_sbom_accepts_an_sbom_of_the_index_or_of_a_platform() {
    let spec = PolicySpec {
        require_sbom: true,
        ..spec()
    };
    let e = run(&spec, &[], &[vec![], vec![]]);
    assert_eq!(e.reasons(), [Reason::NoSbom]);
    assert!(!e.sbom);
    assert_eq!(run(&spec, &[sbom("sha256:s")], &[]).findings, []);
    assert_eq!(
        run(&spec, &[], &[vec![], vec![sbom("sha256:s")]]).findings,
        []
    );
}

#[test]
fn every_reason_at_once_in_order() {
    let key = Key::generate();
    let spec = PolicySpec {
        max_severity: Some(SeverityLimit::Low),
        require_sbom: true,
        ..keyed(&key)
    };
    let e = run(&spec, &[], &[]);
    assert_eq!(
        e.reasons(),
        [
            Reason::Unsigned,
            Reason::NoSbom,
            Reason::NoVulnerabilityReport
        ]
    );
    let names: Vec<&str> = e.reasons().iter().map(|r| r.as_str()).collect();
    assert_eq!(names, ["unsigned", "no_sbom", "no_vulnerability_report"]);
}

#[test]
fn details_are_bounded_and_say_how_many_more() {
    let ids: Vec<String> = (0..500).map(|i| format!("CVE-2024-{i:05}")).collect();
    let findings: Vec<(&str, Severity)> = ids
        .iter()
        .map(|i| (i.as_str(), Severity::Critical))
        .collect();
    let spec = PolicySpec {
        max_severity: Some(SeverityLimit::High),
        ..spec()
    };
    let e = run(
        &spec,
        &[report(
            "trivy",
            "2026-12-01T00:00:00Z",
            "sha256:r",
            &findings,
        )],
        &[],
    );
    let d = &e.findings[0].detail;
    assert!(d.chars().count() <= MAX_DETAIL_CHARS, "{}", d.len());
    assert!(d.starts_with("above the limit `high`: CVE-2024-00000 (critical); "));
    let more: usize = d
        .rsplit("… and ")
        .next()
        .and_then(|t| t.strip_suffix(" more"))
        .unwrap()
        .parse()
        .unwrap();
    let listed = d.matches("(critical)").count();
    assert_eq!(listed + more, 500);
}

#[test]
fn a_truncated_report_whose_kept_findings_are_all_above_the_limit_cannot_pass() {
    let Evidence::Vulnerabilities {
        source,
        mut summary,
    } = report(
        "trivy",
        "2026-12-01T00:00:00Z",
        "sha256:r",
        &[("CVE-2024-1", Severity::Critical)],
    )
    else {
        unreachable!()
    };
    summary.truncated = true;
    let spec = PolicySpec {
        max_severity: Some(SeverityLimit::High),
        allow_cves: vec![allow("CVE-2024-1", today())],
        ..spec()
    };
    let e = run(&spec, &[Evidence::Vulnerabilities { source, summary }], &[]);
    assert_eq!(e.reasons(), [Reason::SeverityAboveLimit]);
    assert!(e.findings[0].detail.contains("more than"));
}

#[test]
fn compile_refuses_bad_keys_and_regexes_and_anchors_identities() {
    let bad_key = PolicySpec {
        keys: vec![KeySpec {
            name: String::new(),
            pem: "not a key".into(),
        }],
        ..spec()
    };
    assert!(matches!(
        Policy::compile(&bad_key),
        Err(PolicyError::Key { index: 0, .. })
    ));
    let bad_regex = PolicySpec {
        identities: vec![
            IdentitySpec::X509 {
                x509_subject: "^CN=ok$".into(),
            },
            IdentitySpec::Keyless {
                issuer: "https://issuer.example".into(),
                subject: "(".into(),
            },
        ],
        ..spec()
    };
    assert!(matches!(
        Policy::compile(&bad_regex),
        Err(PolicyError::Identity { index: 1, .. })
    ));
    let ok = PolicySpec {
        identities: vec![IdentitySpec::Keyless {
            issuer: "https://issuer.example".into(),
            subject: r".*@example\.com".into(),
        }],
        ..spec()
    };
    let policy = Policy::compile(&ok).unwrap();
    assert!(policy.requires_signature());
    let imagelib_trust::evidence::Identity::Keyless { subject, .. } = &policy.identities()[0]
    else {
        panic!()
    };
    assert!(subject.is_match("ci@example.com"));
    assert!(!subject.is_match("ci@example.com.evil"));
}

#[test]
fn the_spec_reads_the_event_contracts_json() {
    let json = r#"{"mode":"audit","keys":[{"name":"release","pem":"PEM"}],
        "identities":[{"issuer":"https://token.actions.githubusercontent.com","subject":"^https://github.com/acme/.*$"},
                      {"x509_subject":"^CN=release,O=Acme$"}],
        "max_severity":"none","allow_cves":[{"id":"CVE-2024-1","expires":"2027-01-31","reason":"no fix"}],
        "require_sbom":true}"#;
    let full: PolicySpec = serde_json::from_str(json).unwrap();
    assert_eq!(full.mode, Mode::Audit);
    assert_eq!(full.keys[0].pem, "PEM");
    assert!(matches!(full.identities[1], IdentitySpec::X509 { .. }));
    assert_eq!(full.max_severity, Some(SeverityLimit::Nothing));
    assert_eq!(
        full.allow_cves[0].expires,
        NaiveDate::from_ymd_opt(2027, 1, 31).unwrap()
    );
    let minimal: PolicySpec = serde_json::from_str(r#"{"mode":"off"}"#).unwrap();
    assert_eq!(
        minimal,
        PolicySpec {
            mode: Mode::Off,
            ..spec()
        }
    );
}

fn severity() -> impl Strategy<Value = Severity> {
    prop_oneof![
        Just(Severity::Unknown),
        Just(Severity::Low),
        Just(Severity::Medium),
        Just(Severity::High),
        Just(Severity::Critical),
    ]
}

fn limit() -> impl Strategy<Value = SeverityLimit> {
    prop_oneof![
        Just(SeverityLimit::Nothing),
        Just(SeverityLimit::Low),
        Just(SeverityLimit::Medium),
        Just(SeverityLimit::High),
        Just(SeverityLimit::Critical),
    ]
}

fn rank(s: Severity) -> u8 {
    match s {
        Severity::Unknown => 0,
        Severity::Low => 1,
        Severity::Medium => 2,
        Severity::High => 3,
        Severity::Critical => 4,
    }
}

proptest! {
    /// The allow-list semantics against a direct statement of them.
    #[test]
    fn severity_reasons_follow_the_agreed_rule(
        findings in proptest::collection::vec((0u8..12, severity()), 0..12),
        allowances in proptest::collection::vec((0u8..12, -3i64..3), 0..8),
        limit in limit(),
    ) {
        let ids: Vec<(String, Severity)> =
            findings.iter().map(|(n, s)| (format!("CVE-2024-{n}"), *s)).collect();
        let refs: Vec<(&str, Severity)> = ids.iter().map(|(i, s)| (i.as_str(), *s)).collect();
        let allow_cves: Vec<CveAllowance> = allowances
            .iter()
            .map(|(n, days)| allow(&format!("CVE-2024-{n}"), today() + chrono::Duration::days(*days)))
            .collect();
        let spec = PolicySpec { max_severity: Some(limit), allow_cves: allow_cves.clone(), ..spec() };
        let e = run(&spec, &[report("trivy", "2026-12-01T00:00:00Z", "sha256:r", &refs)], &[]);

        let (mut above, mut expired) = (false, false);
        for (id, s) in &ids {
            let tolerated = match limit {
                SeverityLimit::Nothing => 0,
                SeverityLimit::Low => 1,
                SeverityLimit::Medium => 2,
                SeverityLimit::High => 3,
                SeverityLimit::Critical => 4,
            };
            if rank(*s) == 0 || rank(*s) <= tolerated {
                continue;
            }
            let entries: Vec<&CveAllowance> = allow_cves.iter().filter(|a| &a.id == id).collect();
            if entries.iter().any(|a| a.expires >= today()) {
                continue;
            }
            if entries.is_empty() { above = true } else { expired = true }
        }
        let mut want = Vec::new();
        if above { want.push(Reason::SeverityAboveLimit) }
        if expired { want.push(Reason::CveNotAllowed) }
        prop_assert_eq!(e.reasons(), want);
        for f in &e.findings {
            prop_assert!(f.detail.chars().count() <= MAX_DETAIL_CHARS);
        }
    }

    /// Any evidence mix: no panic, each reason at most once, and a signature-requiring
    /// policy never passes without a trusted signature.
    #[test]
    fn evaluation_is_total(
        kinds in proptest::collection::vec(0u8..5, 0..10),
        require_sbom in any::<bool>(),
        limit in proptest::option::of(limit()),
    ) {
        let key = Key::generate();
        let own: Vec<Evidence> = kinds.iter().enumerate().map(|(i, k)| {
            let source = format!("sha256:{i}");
            match k {
                0 => signed_by(&key, SUBJECT, &source),
                1 => signed_by(&key, OTHER, &source),
                2 => Evidence::UnreadableSignature { source, scheme: Scheme::Notation, reason: "\u{0}bad\n".into() },
                3 => report("x", "garbage", &source, &[("", Severity::Critical)]),
                _ => sbom(&source),
            }
        }).collect();
        let spec = PolicySpec { max_severity: limit, require_sbom, ..keyed(&key) };
        let e = run(&spec, &own, &[]);
        let mut reasons = e.reasons();
        let n = reasons.len();
        reasons.dedup();
        prop_assert_eq!(reasons.len(), n);
        let trusted = e.signatures.iter().any(|c| c.outcome == Outcome::Trusted);
        prop_assert_eq!(trusted, kinds.contains(&0));
        if !trusted {
            prop_assert!(e.verdict(Mode::Enforce) == Some(Verdict::Fail));
        }
        for f in &e.findings {
            prop_assert!(!f.detail.chars().any(char::is_control));
        }
    }
}
