//! The trust crate mirrors the event contract without depending on it: its policy input,
//! reasons, verdicts and counts must convert to and from the events' types through JSON.

use imagelib_events::model::{
    CveAllowance, PolicyMode, PolicyReason, PolicyVerdict, SbomFormat as EventSbomFormat,
    SeverityCounts as EventCounts, SeverityLimit, SignatureKind, TrustPolicy, TrustedIdentity,
    TrustedKey,
};
use imagelib_trust::evidence::Scheme;
use imagelib_trust::policy::{Mode, PolicySpec, Reason, Verdict};
use imagelib_trust::sbom::SbomFormat;
use imagelib_trust::vuln::SeverityCounts;
use proptest::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn convert<A: Serialize, B: DeserializeOwned>(a: &A) -> B {
    serde_json::from_value(serde_json::to_value(a).unwrap()).unwrap()
}

fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,12}"
}

fn trust_policy() -> impl Strategy<Value = TrustPolicy> {
    (
        prop_oneof![
            Just(PolicyMode::Enforce),
            Just(PolicyMode::Audit),
            Just(PolicyMode::Off)
        ],
        prop::collection::vec(
            (text(), text()).prop_map(|(name, pem)| TrustedKey { name, pem }),
            0..3,
        ),
        prop::collection::vec(
            prop_oneof![
                (text(), text())
                    .prop_map(|(issuer, subject)| TrustedIdentity::Keyless { issuer, subject }),
                text().prop_map(|x509_subject| TrustedIdentity::X509 { x509_subject }),
            ],
            0..3,
        ),
        prop::option::of(prop_oneof![
            Just(SeverityLimit::Nothing),
            Just(SeverityLimit::Low),
            Just(SeverityLimit::Medium),
            Just(SeverityLimit::High),
            Just(SeverityLimit::Critical)
        ]),
        prop::collection::vec(
            (text(), 0i32..3000, text()).prop_map(|(id, days, reason)| CveAllowance {
                id,
                expires: chrono::NaiveDate::from_num_days_from_ce_opt(730_000 + days).unwrap(),
                reason,
            }),
            0..3,
        ),
        any::<bool>(),
    )
        .prop_map(
            |(mode, keys, identities, max_severity, allow_cves, require_sbom)| TrustPolicy {
                mode,
                keys,
                identities,
                max_severity,
                allow_cves,
                require_sbom,
            },
        )
}

proptest! {
    #[test]
    fn any_event_trust_policy_is_a_policy_spec_and_back(policy in trust_policy()) {
        let spec: PolicySpec = convert(&policy);
        prop_assert_eq!(spec.keys.len(), policy.keys.len());
        for (k, e) in spec.keys.iter().zip(&policy.keys) {
            prop_assert_eq!(&k.pem, &e.pem);
            prop_assert_eq!(&k.name, &e.name);
        }
        prop_assert_eq!(spec.identities.len(), policy.identities.len());
        prop_assert_eq!(spec.allow_cves.len(), policy.allow_cves.len());
        prop_assert_eq!(spec.require_sbom, policy.require_sbom);
        let back: TrustPolicy = convert(&spec);
        prop_assert_eq!(back, policy);
    }
}

#[test]
fn reasons_verdicts_modes_and_kinds_name_the_same_things() {
    let all = [
        Reason::Unsigned,
        Reason::SignatureInvalid,
        Reason::SignerNotTrusted,
        Reason::SeverityAboveLimit,
        Reason::CveNotAllowed,
        Reason::NoSbom,
        Reason::NoVulnerabilityReport,
    ];
    let events: Vec<PolicyReason> = all.iter().map(convert).collect();
    assert_eq!(events, PolicyReason::ALL);
    for r in all {
        assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
    }
    for (v, e) in [
        (Verdict::Pass, PolicyVerdict::Pass),
        (Verdict::Fail, PolicyVerdict::Fail),
        (Verdict::Audit, PolicyVerdict::Audit),
    ] {
        assert_eq!(convert::<_, PolicyVerdict>(&v), e);
    }
    for (m, e) in [
        (Mode::Enforce, PolicyMode::Enforce),
        (Mode::Audit, PolicyMode::Audit),
        (Mode::Off, PolicyMode::Off),
    ] {
        assert_eq!(convert::<_, PolicyMode>(&m), e);
        assert_eq!(convert::<_, Mode>(&e), m);
    }
    assert_eq!(
        convert::<_, SignatureKind>(&Scheme::Cosign),
        SignatureKind::Cosign
    );
    assert_eq!(
        convert::<_, SignatureKind>(&Scheme::Notation),
        SignatureKind::Notation
    );
    assert_eq!(
        convert::<_, EventSbomFormat>(&SbomFormat::Spdx),
        EventSbomFormat::Spdx
    );
    assert_eq!(
        convert::<_, EventSbomFormat>(&SbomFormat::CycloneDx),
        EventSbomFormat::Cyclonedx
    );
    let counts = SeverityCounts {
        critical: 1,
        high: 2,
        medium: 3,
        low: 4,
        unknown: 5,
    };
    assert_eq!(
        convert::<_, EventCounts>(&counts),
        EventCounts {
            critical: 1,
            high: 2,
            medium: 3,
            low: 4,
            unknown: 5
        }
    );
}
