//! Trust against real parts: images signed by the test kit's keys as cosign stores them,
//! attestations and SBOMs as referrers, in both discovery paths (cosign's tags on a plain
//! `docker-registry`, the OCI 1.1 referrers API of the test kit's proxy), and the events
//! the scanner emits about them.

use std::time::Duration;

use chrono::Utc;
use imagelib_events::model::{
    CveAllowance, PolicyMode, PolicyReason, PolicyVerdict, RuleKind, SeverityLimit, TrustPolicy,
    TrustedKey,
};
use imagelib_events::{Envelope, EventPayload, RegistryId};
use imagelib_testkit::referrers::ReferrersProxy;
use imagelib_testkit::registry::{ImageSpec, OCI_INDEX, OCI_MANIFEST, TestRegistry};
use imagelib_testkit::signing::TestKey;

use crate::common::Env;
use crate::proxy::{Action, FaultProxy};
use crate::signed::{self, Layout, subject};

fn policy(mode: PolicyMode, keys: &[&TestKey]) -> TrustPolicy {
    TrustPolicy {
        mode,
        keys: keys
            .iter()
            .map(|k| TrustedKey {
                name: "release".into(),
                pem: k.public_pem(),
            })
            .collect(),
        identities: vec![],
        max_severity: None,
        allow_cves: vec![],
        require_sbom: false,
    }
}

/// The last `policy_evaluated` of each digest among `events`.
fn verdicts(
    events: &[Envelope],
) -> std::collections::HashMap<String, (PolicyVerdict, Vec<PolicyReason>)> {
    let mut out = std::collections::HashMap::new();
    for e in events {
        if let EventPayload::PolicyEvaluated(p) = &e.payload {
            out.insert(p.digest.to_string(), (p.verdict, p.reasons.clone()));
        }
    }
    out
}

fn count(events: &[Envelope], type_name: &str) -> usize {
    events
        .iter()
        .filter(|e| e.event_type() == type_name)
        .count()
}

/// Waits until `policy_evaluated` events after `seq` give `want` for each digest.
async fn await_verdicts(
    env: &Env,
    seq: u64,
    want: &[(&str, PolicyVerdict, Vec<PolicyReason>)],
) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events: Vec<Envelope> = env
            .events_after(seq)
            .await
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        let got = verdicts(&events);
        if want
            .iter()
            .all(|(d, v, r)| got.get(*d) == Some(&(*v, r.clone())))
        {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "verdicts {got:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn set_trust(env: &Env, id: RegistryId, trust: TrustPolicy) -> u64 {
    let seq = env
        .events_after(0)
        .await
        .last()
        .map(|(s, _)| *s)
        .unwrap_or(0);
    env.rule_with(id, "app", &["app"], RuleKind::Auto, |r| {
        // As the HTTP API defaults it: cosign's tags are not images.
        r.tags.exclude_artifact_tags = true;
        r.trust = Some(trust);
    })
    .await;
    seq
}

/// cosign's tag layout on a registry without the referrers API: a key-signed image
/// passes, an unsigned one fails `unsigned`, another key's signature is
/// `signer_not_trusted`, a signature of another digest is `signature_invalid`; then the
/// policy changes (audit, off) re-evaluate from the store with no registry request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_signatures_in_cosign_tags_decide_the_verdict() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let key = TestKey::generate();
    let other = TestKey::generate();
    let mut pushed = Vec::new();
    for (tag, layer) in [("1.0", "a"), ("2.0", "b"), ("3.0", "c"), ("4.0", "d")] {
        pushed.push(
            registry
                .push_image(
                    "app",
                    tag,
                    &ImageSpec::linux_amd64().layer(layer.as_bytes()),
                )
                .await?,
        );
    }
    let s = |i: usize| subject(&pushed[i].digest, OCI_MANIFEST, &pushed[i].raw);
    let signed = signed::cosign_sign(
        &registry,
        "app",
        s(0),
        &pushed[0].digest,
        &key,
        Layout::Tags,
    )
    .await?;
    signed::cosign_sign(
        &registry,
        "app",
        s(2),
        &pushed[2].digest,
        &other,
        Layout::Tags,
    )
    .await?;
    // A valid signature by the trusted key, but of image 1.0, hung on 4.0.
    signed::cosign_sign(
        &registry,
        "app",
        s(3),
        &pushed[0].digest,
        &key,
        Layout::Tags,
    )
    .await?;
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), |_, _| Action::Forward).await;

    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&proxy.host(), None).await;
    set_trust(&env, id, policy(PolicyMode::Enforce, &[&key])).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{done:?}");
    let d = |i: usize| pushed[i].digest.clone();
    let v = verdicts(&events);
    assert_eq!(v[&d(0)], (PolicyVerdict::Pass, vec![]));
    assert_eq!(
        v[&d(1)],
        (PolicyVerdict::Fail, vec![PolicyReason::Unsigned])
    );
    assert_eq!(
        v[&d(2)],
        (PolicyVerdict::Fail, vec![PolicyReason::SignerNotTrusted])
    );
    assert_eq!(
        v[&d(3)],
        (PolicyVerdict::Fail, vec![PolicyReason::SignatureInvalid])
    );
    let verified: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::SignatureVerified(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(verified.len(), 1, "{verified:?}");
    assert_eq!(verified[0].digest.as_str(), d(0));
    assert_eq!(verified[0].signer, key.key_id());
    assert_eq!(verified[0].source.as_str(), signed.digest);
    assert_eq!(verified[0].policy.as_ref().map(|p| p.as_str()), Some("app"));
    assert_eq!(count(&events, "io.imagelib.image.signature_failed.v1"), 2);
    let failed_for_digest = events.iter().any(|e| matches!(&e.payload,
        EventPayload::SignatureFailed(f) if f.digest.as_str() == d(3) && f.reason.contains("not for image")));
    assert!(failed_for_digest, "the wrong digest is named");

    // Nothing new: a rescan emits no trust event and lists no referrer again (no API,
    // and only the digests with cosign tags are looked at, one HEAD per tag).
    let (_, events) = env.scan_ok(id, None).await;
    assert!(
        events.is_empty(),
        "{:?}",
        events.iter().map(|e| e.event_type()).collect::<Vec<_>>()
    );

    // Audit: re-evaluated from the store, no request reaches the registry. While a scan
    // holds the registry's lease (here, the test), the re-evaluation waits for it: a scan
    // stores tags before their referrers, and a verdict on half the evidence is wrong.
    let mark = proxy.seen().len();
    let jobs =
        sync_scanner::jobs::Jobs::open(&env.bus, "test".into(), Duration::from_secs(6)).await?;
    let lease = jobs.acquire(id).await?.expect("no scan holds the lease");
    let seq = set_trust(&env, id, policy(PolicyMode::Audit, &[&key])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        count(
            &env.events_after(seq)
                .await
                .into_iter()
                .map(|(_, e)| e)
                .collect::<Vec<_>>(),
            "io.imagelib.image.policy_evaluated.v1"
        ),
        0,
        "re-evaluated while the registry was leased"
    );
    let found = lease.mark;
    jobs.release(lease, found).await;
    let events = await_verdicts(
        &env,
        seq,
        &[
            (&d(1), PolicyVerdict::Audit, vec![PolicyReason::Unsigned]),
            (
                &d(2),
                PolicyVerdict::Audit,
                vec![PolicyReason::SignerNotTrusted],
            ),
            (
                &d(3),
                PolicyVerdict::Audit,
                vec![PolicyReason::SignatureInvalid],
            ),
        ],
    )
    .await;
    assert!(
        !verdicts(&events).contains_key(&d(0)),
        "a pass stays a pass: not re-emitted"
    );
    // Off: the gates lift (one pass each for the digests that were not passing).
    let seq = set_trust(&env, id, policy(PolicyMode::Off, &[&key])).await;
    let events = await_verdicts(
        &env,
        seq,
        &[
            (&d(1), PolicyVerdict::Pass, vec![]),
            (&d(2), PolicyVerdict::Pass, vec![]),
            (&d(3), PolicyVerdict::Pass, vec![]),
        ],
    )
    .await;
    assert_eq!(count(&events, "io.imagelib.image.policy_evaluated.v1"), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        proxy.seen().len(),
        mark,
        "re-evaluation made no registry request"
    );
    Ok(())
}

/// The OCI 1.1 referrers API: an index signed as itself, a Trivy vulnerability
/// attestation on one of its platform manifests and an SPDX SBOM on the index; severity
/// limit, allow list (live, then expired) and `require_sbom` decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn referrers_api_reports_sboms_and_the_allow_list() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let referrers = ReferrersProxy::start(crate::upstream(&registry), 2).await;
    let key = TestKey::generate();
    let index = registry
        .push_index(
            "app",
            "1.0",
            &[ImageSpec::linux_amd64(), ImageSpec::new("linux", "arm64")],
            &[],
        )
        .await?;
    let host = referrers.host();
    let via = Layout::Subject(&host);
    let of_index = subject(&index.digest, OCI_INDEX, &index.raw);
    let platform = &index.manifests[1];
    let of_platform = subject(&platform.digest, OCI_MANIFEST, &platform.raw);
    signed::cosign_sign(&registry, "app", of_index, &index.digest, &key, via).await?;
    let report = signed::trivy_report(&[
        ("CVE-2024-0001", "CRITICAL", Some("3.0.2")),
        ("CVE-2024-0002", "LOW", None),
    ]);
    let attestation = signed::vuln_attestation(
        &registry,
        "app",
        of_platform,
        report,
        "2026-11-30T10:00:00Z",
        &key,
        via,
    )
    .await?;
    let sbom = signed::spdx_sbom(&registry, "app", of_index, &host).await?;

    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&referrers.host(), None).await;
    let mut trust = policy(PolicyMode::Enforce, &[&key]);
    trust.max_severity = Some(SeverityLimit::High);
    trust.require_sbom = true;
    set_trust(&env, id, trust.clone()).await;
    let (_, events) = env.scan_ok(id, None).await;
    assert_eq!(
        verdicts(&events)[&index.digest],
        (PolicyVerdict::Fail, vec![PolicyReason::SeverityAboveLimit])
    );
    let reported: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::VulnerabilitiesReported(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(reported.len(), 1);
    assert_eq!(
        reported[0].digest.as_str(),
        platform.digest,
        "the platform's report"
    );
    assert_eq!(reported[0].source.as_str(), attestation.digest);
    assert_eq!(reported[0].scanner.name, "trivy");
    assert_eq!(
        (reported[0].counts.critical, reported[0].counts.low),
        (1, 1)
    );
    assert_eq!(reported[0].fixable, 1);
    let sboms: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::SbomFound(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(sboms.len(), 1);
    assert_eq!(sboms[0].source.as_str(), sbom.digest);
    assert_eq!(count(&events, "io.imagelib.image.signature_verified.v1"), 1);
    let seen: Vec<String> = referrers
        .seen()
        .iter()
        .map(|r| r.target.clone())
        .filter(|t| t.contains("/referrers/"))
        .collect();
    assert!(
        seen.iter().any(|t| t.contains(&platform.digest)),
        "the platform manifests' referrers are listed: {seen:?}"
    );

    // The critical CVE allowed until tomorrow: pass, without rescanning.
    let today = Utc::now().date_naive();
    let mark = referrers.seen().len();
    trust.allow_cves = vec![CveAllowance {
        id: "CVE-2024-0001".into(),
        expires: today + chrono::Days::new(1),
        reason: "not reachable".into(),
    }];
    let seq = set_trust(&env, id, trust.clone()).await;
    await_verdicts(&env, seq, &[(&index.digest, PolicyVerdict::Pass, vec![])]).await;
    // Expired yesterday: not allowed any more.
    trust.allow_cves[0].expires = today - chrono::Days::new(1);
    let seq = set_trust(&env, id, trust.clone()).await;
    await_verdicts(
        &env,
        seq,
        &[(
            &index.digest,
            PolicyVerdict::Fail,
            vec![PolicyReason::CveNotAllowed],
        )],
    )
    .await;
    assert_eq!(referrers.seen().len(), mark, "no registry request");

    // A manual rescan through the API lists every digest again (one request each: the
    // index and its two platforms), reads nothing new and emits nothing.
    let mark = referrers.seen().len();
    let (_, events) = env.scan_ok(id, None).await;
    assert!(
        events.is_empty(),
        "{:?}",
        events.iter().map(|e| e.event_type()).collect::<Vec<_>>()
    );
    let listed = |from: usize| {
        referrers.seen()[from..]
            .iter()
            .filter(|r| r.target.contains("/referrers/"))
            .count()
    };
    assert_eq!(listed(mark), 3, "one listing per digest");
    // A scheduled scan within the recheck interval lists none of them again.
    let mark = referrers.seen().len();
    let seq = env
        .publish(imagelib_events::event::SyncRequested {
            registry_id: id,
            repository: None,
            reason: imagelib_events::model::SyncReason::Schedule,
        })
        .await;
    let (outcome, events) = env.outcome_after(id, seq).await;
    assert!(matches!(outcome, sync_scanner::scan::Outcome::Completed(_)));
    assert!(events.is_empty());
    assert_eq!(
        listed(mark),
        0,
        "recently listed digests wait for the recheck interval"
    );
    Ok(())
}

/// A signature pushed after the first scan is found by the next one; each referrer's
/// content is read once, however many scans and tags see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_later_signature_is_found_and_read_once() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let key = TestKey::generate();
    let image = registry
        .push_image("app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let proxy = FaultProxy::start(Some(crate::upstream(&registry)), |_, _| Action::Forward).await;
    let env = Env::new().await;
    let _scanner = env.start().await;
    let id = env.register(&proxy.host(), None).await;
    // An SBOM is required too, and none is ever attached.
    let mut trust = policy(PolicyMode::Enforce, &[&key]);
    trust.require_sbom = true;
    set_trust(&env, id, trust).await;
    let (_, events) = env.scan_ok(id, None).await;
    assert_eq!(
        verdicts(&events)[&image.digest],
        (
            PolicyVerdict::Fail,
            vec![PolicyReason::Unsigned, PolicyReason::NoSbom]
        )
    );

    let sig = signed::cosign_sign(
        &registry,
        "app",
        subject(&image.digest, OCI_MANIFEST, &image.raw),
        &image.digest,
        &key,
        Layout::Tags,
    )
    .await?;
    // The push webhook's repository scan (or the schedule) finds it.
    let (_, events) = env.scan_ok(id, Some("app")).await;
    let changed: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::ReferrersChanged(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].digest.as_str(), image.digest);
    assert_eq!(changed[0].referrers[0].digest.as_str(), sig.digest);
    assert_eq!(
        verdicts(&events)[&image.digest],
        (PolicyVerdict::Fail, vec![PolicyReason::NoSbom]),
    );

    // Another tag on the same digest, and more scans: the signature is not read again.
    registry.tag("app", "1.0", "1.0-copy").await?;
    env.scan_ok(id, None).await;
    let (_, events) = env.scan_ok(id, None).await;
    assert!(events.is_empty());
    let reads = proxy
        .seen()
        .iter()
        .filter(|r| r.method == "GET" && r.target.contains(&sig.digest))
        .count();
    assert_eq!(reads, 1, "the signature manifest is fetched once");
    Ok(())
}

/// An oversized signature blob is skipped with a finding, garbage referrers say nothing,
/// and the scan goes on to the other images.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_and_garbage_referrers_never_fail_the_scan() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let referrers = ReferrersProxy::start(crate::upstream(&registry), 10).await;
    let key = TestKey::generate();
    let big = registry
        .push_image("app", "big", &ImageSpec::linux_amd64().layer(b"big"))
        .await?;
    let junk = registry
        .push_image("app", "junk", &ImageSpec::linux_amd64().layer(b"junk"))
        .await?;
    let good = registry
        .push_image("app", "good", &ImageSpec::linux_amd64().layer(b"good"))
        .await?;
    signed::oversized_signature(
        &registry,
        "app",
        subject(&big.digest, OCI_MANIFEST, &big.raw),
        &key,
        64 * 1024,
    )
    .await?;
    let host = referrers.host();
    let of_junk = subject(&junk.digest, OCI_MANIFEST, &junk.raw);
    signed::garbage(&registry, "app", of_junk, Layout::Subject(&host), "att").await?;
    signed::garbage(&registry, "app", of_junk, Layout::Tags, "att").await?;
    signed::cosign_sign(
        &registry,
        "app",
        subject(&good.digest, OCI_MANIFEST, &good.raw),
        &good.digest,
        &key,
        Layout::Tags,
    )
    .await?;

    let env = Env::new().await;
    let mut config = env.config();
    config.scanner.max_referrer_bytes = 16 * 1024;
    let _scanner = env.start_with(config).await;
    let id = env.register(&referrers.host(), None).await;
    set_trust(&env, id, policy(PolicyMode::Enforce, &[&key])).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{done:?}");
    assert_eq!(done.added, 3);
    let v = verdicts(&events);
    assert_eq!(v[&good.digest], (PolicyVerdict::Pass, vec![]));
    assert_eq!(
        v[&big.digest],
        (PolicyVerdict::Fail, vec![PolicyReason::SignatureInvalid])
    );
    let oversized = events.iter().any(|e| matches!(&e.payload,
        EventPayload::SignatureFailed(f) if f.digest.as_str() == big.digest && f.reason.contains("limit")));
    assert!(oversized, "the finding names the limit");
    // The garbage "signature" layer is unreadable: an invalid signature, not none.
    assert_eq!(
        v[&junk.digest],
        (PolicyVerdict::Fail, vec![PolicyReason::SignatureInvalid])
    );
    assert_eq!(
        count(&events, "io.imagelib.image.vulnerabilities_reported.v1"),
        0
    );
    Ok(())
}

/// A trust root that is not a Sigstore trusted root stops the start with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_trust_root_stops_the_start() -> anyhow::Result<()> {
    let env = Env::new().await;
    let path = env.dir.path().join("trusted_root.json");
    std::fs::write(&path, r#"{"mediaType":"application/json"}"#)?;
    let mut config = env.config();
    config.scanner.trust_root = Some(path);
    let err = sync_scanner::startup::Application::build(config)
        .await
        .expect_err("a bad trust root is refused");
    let text = err.to_string();
    assert!(text.contains("IMAGELIB_SCANNER__TRUST_ROOT"), "{text}");
    assert!(text.contains("trustedroot"), "{text}");
    Ok(())
}

/// Keyless: Fulcio-like certificates and a Rekor-like log from the test kit, trusted
/// through a `trusted_root.json` given to the scanner. A trusted identity passes; another
/// identity is `signer_not_trusted`; a certificate that had expired when the log
/// integrated the signature is `signature_invalid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyless_signatures_are_checked_against_the_trust_root() -> anyhow::Result<()> {
    use imagelib_events::model::TrustedIdentity;
    use imagelib_testkit::signing::{San, TestFulcio, TestRekor, trusted_root_json};
    const ISSUER: &str = "https://accounts.example.com";
    let registry = TestRegistry::start().await?;
    let fulcio = TestFulcio::new();
    let rekor = TestRekor::new();
    let now = Utc::now();
    let minutes = |m: i64| chrono::Duration::minutes(m);
    let mut pushed = Vec::new();
    for (tag, layer) in [("1.0", "a"), ("2.0", "b"), ("3.0", "c")] {
        pushed.push(
            registry
                .push_image(
                    "app",
                    tag,
                    &ImageSpec::linux_amd64().layer(layer.as_bytes()),
                )
                .await?,
        );
    }
    let s = |i: usize| subject(&pushed[i].digest, OCI_MANIFEST, &pushed[i].raw);
    let dev = fulcio.issue(
        San::Email("dev@example.com".into()),
        ISSUER,
        now - minutes(5),
        now + minutes(5),
    );
    let eve = fulcio.issue(
        San::Email("eve@evil.example".into()),
        ISSUER,
        now - minutes(5),
        now + minutes(5),
    );
    let old = fulcio.issue(
        San::Email("dev@example.com".into()),
        ISSUER,
        now - minutes(60),
        now - minutes(50),
    );
    signed::cosign_sign_keyless(&registry, "app", s(0), &dev, &rekor, now.timestamp()).await?;
    signed::cosign_sign_keyless(&registry, "app", s(1), &eve, &rekor, now.timestamp()).await?;
    signed::cosign_sign_keyless(&registry, "app", s(2), &old, &rekor, now.timestamp()).await?;

    let env = Env::new().await;
    let root = env.dir.path().join("trusted_root.json");
    std::fs::write(&root, trusted_root_json(&fulcio, &rekor))?;
    let mut config = env.config();
    config.scanner.trust_root = Some(root);
    let _scanner = env.start_with(config).await;
    let id = env.register(&registry.host(), None).await;
    let mut trust = policy(PolicyMode::Enforce, &[]);
    trust.identities = vec![TrustedIdentity::Keyless {
        issuer: ISSUER.into(),
        subject: r"^dev@example\.com$".into(),
    }];
    set_trust(&env, id, trust).await;
    let (_, events) = env.scan_ok(id, None).await;
    let v = verdicts(&events);
    let d = |i: usize| pushed[i].digest.clone();
    assert_eq!(v[&d(0)], (PolicyVerdict::Pass, vec![]));
    assert_eq!(
        v[&d(1)],
        (PolicyVerdict::Fail, vec![PolicyReason::SignerNotTrusted])
    );
    assert_eq!(
        v[&d(2)],
        (PolicyVerdict::Fail, vec![PolicyReason::SignatureInvalid])
    );
    let verified = events
        .iter()
        .find_map(|e| match &e.payload {
            EventPayload::SignatureVerified(s) => Some(s),
            _ => None,
        })
        .expect("one signature verified");
    assert_eq!(verified.signer, "dev@example.com");
    assert_eq!(verified.issuer.as_deref(), Some(ISSUER));
    assert_eq!(verified.digest.as_str(), d(0));
    Ok(())
}
