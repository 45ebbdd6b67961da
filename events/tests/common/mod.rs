//! Strategies for generating every event of the contract.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use imagelib_events::event::*;
use imagelib_events::model::*;
use imagelib_events::*;
use proptest::prelude::*;
use uuid::Uuid;

pub fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}
pub fn registry_id() -> impl Strategy<Value = RegistryId> {
    uuid().prop_map(RegistryId)
}
pub fn repo() -> impl Strategy<Value = RepositoryName> {
    "[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?(/[a-z0-9]{1,6}){0,2}".prop_map(|s| s.parse().unwrap())
}
pub fn tag() -> impl Strategy<Value = Tag> {
    "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}".prop_map(|s| s.parse().unwrap())
}
pub fn digest() -> impl Strategy<Value = Digest> {
    "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}").parse().unwrap())
}
/// Any text, including non-ASCII and characters that need percent-encoding in headers.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,30}",
        Just("100% \"quoted\" é ✓".to_owned())
    ]
}
pub fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_000_000_000, 0u32..1_000_000_000)
        .prop_map(|(s, n)| Utc.timestamp_opt(s, n).single().unwrap())
}
pub fn hm_tag() -> impl Strategy<Value = HmTag> {
    "[a-z0-9][a-z0-9._:-]{0,20}".prop_map(|s| s.parse().unwrap())
}
pub fn kube() -> impl Strategy<Value = KubeName> {
    "[a-z]([a-z0-9-]{0,10}[a-z0-9])?".prop_map(|s| s.parse().unwrap())
}
pub fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(text(), text(), 0..4)
}
pub fn sealed() -> impl Strategy<Value = SealedCredential> {
    (
        "[a-z0-9-]{1,20}",
        "[A-Za-z0-9+/=]{16}",
        "[A-Za-z0-9+/=]{8,60}",
    )
        .prop_map(|(k, n, c)| SealedCredential {
            key_id: k,
            algorithm: "AES-256-GCM".into(),
            nonce: n,
            ciphertext: c,
        })
}
pub fn registry_type() -> impl Strategy<Value = RegistryType> {
    prop_oneof![
        Just(RegistryType::Generic),
        Just(RegistryType::Harbor),
        Just(RegistryType::Dockerhub),
        Just(RegistryType::Ghcr),
        Just(RegistryType::Ecr),
        Just(RegistryType::Acr),
        Just(RegistryType::Gcr)
    ]
}
pub fn auth_kind() -> impl Strategy<Value = AuthKind> {
    prop_oneof![
        Just(AuthKind::None),
        Just(AuthKind::Basic),
        Just(AuthKind::Token),
        Just(AuthKind::AwsEcr),
        Just(AuthKind::AzureServicePrincipal)
    ]
}
pub fn model_type() -> impl Strategy<Value = ModelType> {
    prop::sample::select(ModelType::ALL.to_vec())
}
pub fn image_kind() -> impl Strategy<Value = ImageKind> {
    prop_oneof![
        Just(ImageKind::Database),
        Just(ImageKind::Model),
        Just(ImageKind::Other)
    ]
}
pub fn platform() -> impl Strategy<Value = Platform> {
    (
        "[a-z]{2,8}",
        "[a-z0-9]{2,8}",
        prop::option::of("v[0-9]"),
        prop::option::of(digest()),
        prop::option::of(any::<u32>().prop_map(u64::from)),
    )
        .prop_map(|(os, architecture, variant, digest, size)| Platform {
            os,
            architecture,
            variant,
            digest,
            size,
        })
}
pub fn details() -> BoxedStrategy<ImageDetails> {
    (
        "[a-z./+0-9-]{5,40}",
        prop::option::of("[a-z./+0-9-]{5,40}"),
        prop::collection::vec(platform(), 0..3),
        any::<u64>().prop_map(|n| n % (1 << 50)),
        prop::option::of(time()),
        map(),
        map(),
        image_kind(),
        prop::option::of(model_type()),
        prop::collection::vec(
            (text(), prop::option::of(text()), prop::option::of(text())).prop_map(
                |(name, version, description)| PostgresExtension {
                    name,
                    version,
                    description,
                },
            ),
            0..3,
        ),
        prop::collection::vec(referrer(), 0..2),
    )
        .prop_map(
            |(
                media_type,
                artifact_type,
                platforms,
                size,
                created,
                labels,
                annotations,
                kind,
                model_type,
                extensions,
                referrers,
            )| ImageDetails {
                media_type,
                artifact_type,
                platforms,
                size,
                created,
                labels,
                annotations,
                kind,
                model_type,
                extensions,
                referrers,
            },
        )
        .boxed()
}
pub fn referrer() -> impl Strategy<Value = Referrer> {
    (
        digest(),
        prop_oneof![
            Just(ReferrerKind::Signature),
            Just(ReferrerKind::Sbom),
            Just(ReferrerKind::Attestation),
            Just(ReferrerKind::Other)
        ],
        prop::option::of("[a-z./+-]{3,20}"),
    )
        .prop_map(|(digest, kind, artifact_type)| Referrer {
            digest,
            kind,
            artifact_type,
        })
}
pub fn policy_findings() -> impl Strategy<Value = Vec<PolicyFinding>> {
    (policy_reasons(), prop::collection::vec(text(), 7)).prop_map(|(reasons, details)| {
        reasons
            .into_iter()
            .zip(details)
            .map(|(reason, detail)| PolicyFinding { reason, detail })
            .collect()
    })
}
pub fn trust_policy() -> impl Strategy<Value = TrustPolicy> {
    (
        prop_oneof![
            Just(PolicyMode::Enforce),
            Just(PolicyMode::Audit),
            Just(PolicyMode::Off)
        ],
        prop::collection::vec(
            (text(), text()).prop_map(|(name, pem)| TrustedKey { name, pem }),
            0..2,
        ),
        prop::collection::vec(
            prop_oneof![
                (text(), text())
                    .prop_map(|(issuer, subject)| TrustedIdentity::Keyless { issuer, subject }),
                text().prop_map(|x509_subject| TrustedIdentity::X509 { x509_subject }),
            ],
            0..2,
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
            0..2,
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
pub fn repo_pattern() -> impl Strategy<Value = RepositoryPattern> {
    prop_oneof![
        repo().prop_map(RepositoryPattern::Exact),
        "[a-z*/?]{1,20}".prop_map(RepositoryPattern::Glob),
        text().prop_map(RepositoryPattern::Regex),
    ]
}
pub fn tag_pattern() -> impl Strategy<Value = TagPattern> {
    prop_oneof![
        tag().prop_map(TagPattern::Exact),
        text().prop_map(TagPattern::Prefix),
        text().prop_map(TagPattern::Regex),
        "[<>=0-9., ]{1,12}".prop_map(TagPattern::Semver),
    ]
}
pub fn tag_selector() -> impl Strategy<Value = TagSelector> {
    (
        prop::collection::vec(tag_pattern(), 0..3),
        prop::collection::vec(tag_pattern(), 0..3),
        prop::option::of(1u32..100),
        prop::option::of(prop::collection::vec(tag_pattern(), 0..2)),
        prop::option::of(prop::collection::vec(tag_pattern(), 0..2)),
        any::<bool>(),
    )
        .prop_map(
            |(include, exclude, newest, mutable, immutable, exclude_artifact_tags)| TagSelector {
                include,
                exclude,
                newest,
                mutable,
                immutable,
                exclude_artifact_tags,
            },
        )
}
pub fn retention_policy() -> impl Strategy<Value = RetentionPolicy> {
    let rule = (
        prop_oneof![
            Just(RetentionTemplate::LatestPushed),
            Just(RetentionTemplate::LatestPulled),
            Just(RetentionTemplate::PushedWithinDays),
            Just(RetentionTemplate::PulledWithinDays),
            Just(RetentionTemplate::Always),
        ],
        prop::option::of(1u32..100),
        prop::option::of(1u32..365),
        prop_oneof![
            Just(RetentionScope::Repository),
            Just(RetentionScope::Major)
        ],
        prop::collection::vec(tag_pattern(), 0..2),
        prop::collection::vec(tag_pattern(), 0..2),
    )
        .prop_map(
            |(template, count, days, per, include, exclude)| RetentionRule {
                template,
                count,
                days,
                per,
                tags: TagFilter { include, exclude },
            },
        );
    (
        prop::collection::vec(rule, 1..4),
        prop::collection::vec(hm_tag(), 0..2),
    )
        .prop_map(|(rules, protect_hm_tags)| RetentionPolicy {
            rules,
            protect_hm_tags,
        })
}
pub fn target() -> impl Strategy<Value = CatalogTarget> {
    (registry_id(), repo(), prop::option::of(tag())).prop_map(|(registry_id, repository, tag)| {
        CatalogTarget {
            registry_id,
            repository,
            tag,
        }
    })
}
pub fn sync_reason() -> impl Strategy<Value = SyncReason> {
    prop_oneof![
        Just(SyncReason::Schedule),
        Just(SyncReason::Manual),
        Just(SyncReason::Webhook)
    ]
}

pub fn rule_id() -> impl Strategy<Value = RuleId> {
    "[a-z0-9][a-z0-9_-]{0,20}".prop_map(|s| s.parse().unwrap())
}
pub fn signature_kind() -> impl Strategy<Value = SignatureKind> {
    prop_oneof![Just(SignatureKind::Cosign), Just(SignatureKind::Notation)]
}
/// Distinct reasons in any order, as the contract allows each at most once.
pub fn policy_reasons() -> impl Strategy<Value = Vec<PolicyReason>> {
    prop::sample::subsequence(PolicyReason::ALL.to_vec(), 0..=PolicyReason::ALL.len())
        .prop_shuffle()
}
pub fn severity_counts() -> impl Strategy<Value = SeverityCounts> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(critical, high, medium, low, unknown)| SeverityCounts {
            critical: critical.into(),
            high: high.into(),
            medium: medium.into(),
            low: low.into(),
            unknown: unknown.into(),
        })
}
pub fn payload() -> BoxedStrategy<EventPayload> {
    let registry: BoxedStrategy<EventPayload> = prop_oneof![
        (
            (
                registry_id(),
                text(),
                "[a-z0-9.-]{1,20}(:[0-9]{2,5})?(/[a-z]{1,8})?",
                registry_type(),
                any::<bool>(),
                auth_kind(),
                prop::option::of(sealed()),
                prop::collection::vec("[a-z-]{1,10}", 0..3),
                prop::option::of(text()),
                prop::option::of(1u64..100_000),
                prop::collection::vec(repo(), 0..3),
            ),
            prop::option::of(sealed()),
        )
            .prop_map(
                |((id, label, url, t, insecure, auth, cred, vis, ca, iv, repos), cred2)| {
                    RegistryRegistered {
                        registry_id: id,
                        label,
                        url,
                        registry_type: t,
                        insecure,
                        auth_kind: auth,
                        credential: cred,
                        visibility: vis,
                        ca_pem: ca,
                        scan_interval_secs: iv,
                        repositories: repos,
                        webhook_secret: cred2,
                        auth_hosts: vec![],
                        report_pulls: !insecure,
                        proxy_url: (!insecure).then(|| "http://proxy.internal:3128".to_owned()),
                        no_proxy: if insecure {
                            vec![]
                        } else {
                            vec![".internal".to_owned()]
                        },
                        artifact_registry: (!insecure).then(|| {
                            "projects/my-project/locations/us-central1/repositories/images"
                                .to_owned()
                        }),
                    }
                    .into()
                }
            ),
        (
            registry_id(),
            prop::option::of(text()),
            prop::option::of("[a-z.]{1,20}"),
            prop::option::of(any::<bool>()),
            prop::option::of(prop::collection::vec("[a-z]{1,5}", 0..2)),
            prop::option::of(prop::option::of(text())),
            prop::option::of(1u64..1000),
        )
            .prop_map(|(id, label, url, insecure, visibility, ca_pem, iv)| {
                let artifact_registry = ca_pem.as_ref().map(|c: &Option<String>| {
                    c.as_ref().map(|_| {
                        "projects/my-project/locations/europe/repositories/team".to_owned()
                    })
                });
                RegistryUpdated {
                    registry_id: id,
                    label,
                    url,
                    insecure,
                    visibility,
                    ca_pem,
                    scan_interval_secs: iv,
                    repositories: None,
                    auth_hosts: None,
                    registry_type: None,
                    report_pulls: insecure.map(|i| !i),
                    auth_kind: None,
                    credential: None,
                    proxy_url: insecure.map(|i| i.then(|| "https://proxy.internal".to_owned())),
                    no_proxy: insecure.map(|_| vec!["10.0.0.0/8".to_owned()]),
                    artifact_registry,
                }
                .into()
            }),
        (registry_id(), auth_kind(), prop::option::of(sealed())).prop_map(|(id, a, c)| {
            RegistryCredentialsRotated {
                registry_id: id,
                auth_kind: a,
                credential: c,
                webhook_secret: None,
            }
            .into()
        }),
        (registry_id(), prop::option::of("[a-z]{3,6}"), any::<bool>()).prop_map(|(id, s, c)| {
            RegistryValidated {
                registry_id: id,
                auth_scheme: s,
                catalog_access: c,
            }
            .into()
        }),
        (registry_id(), text()).prop_map(|(id, d)| RegistryValidationFailed {
            registry_id: id,
            reason: ValidationReason::Unauthorized,
            detail: d,
        }
        .into()),
        registry_id().prop_map(|id| RegistryRemoved { registry_id: id }.into()),
    ]
    .boxed();
    let rule: BoxedStrategy<EventPayload> = prop_oneof![
        (
            registry_id(),
            "[a-z0-9][a-z0-9_-]{0,20}",
            prop::collection::vec(repo_pattern(), 1..3),
            tag_selector(),
            prop_oneof![
                Just(RuleKind::Auto),
                Just(RuleKind::Model),
                Just(RuleKind::Database)
            ],
            text(),
            prop::collection::vec(hm_tag(), 0..3),
            (
                any::<bool>(),
                prop::option::of(trust_policy()),
                prop::option::of(retention_policy())
            ),
        )
            .prop_map(
                |(
                    id,
                    rid,
                    repositories,
                    tags,
                    kind,
                    description,
                    hm_tags,
                    (enabled, trust, retention),
                )| {
                    RuleSet {
                        registry_id: id,
                        rule_id: rid.parse().unwrap(),
                        repositories,
                        tags,
                        kind,
                        description,
                        hm_tags,
                        enabled,
                        trust,
                        retention,
                    }
                    .into()
                }
            ),
        (registry_id(), "[a-z0-9]{1,10}").prop_map(|(id, rid)| RuleRemoved {
            registry_id: id,
            rule_id: rid.parse().unwrap()
        }
        .into()),
    ]
    .boxed();
    let sync: BoxedStrategy<EventPayload> = prop_oneof![
        (registry_id(), prop::option::of(repo()), sync_reason()).prop_map(|(id, r, reason)| {
            SyncRequested {
                registry_id: id,
                repository: r,
                reason,
            }
            .into()
        }),
        (
            registry_id(),
            uuid(),
            prop::option::of(repo()),
            sync_reason()
        )
            .prop_map(|(id, s, r, reason)| SyncStarted {
                registry_id: id,
                sync_id: SyncId(s),
                repository: r,
                reason,
            }
            .into()),
        (
            registry_id(),
            uuid(),
            prop::array::uniform7(any::<u32>()),
            any::<bool>(),
            prop::collection::vec(repo(), 0..2),
            prop::collection::vec(
                (
                    prop::option::of(repo()),
                    prop::sample::select(vec![
                        IncompleteReason::TooManyTags,
                        IncompleteReason::ListingTooLarge,
                        IncompleteReason::Missing,
                        IncompleteReason::RateLimited,
                    ])
                ),
                0..2
            )
        )
            .prop_map(|(id, s, n, partial, rl, inc)| SyncCompleted {
                registry_id: id,
                sync_id: SyncId(s),
                repositories: n[0].into(),
                tags_seen: n[1].into(),
                added: n[2].into(),
                moved: n[3].into(),
                removed: n[4].into(),
                requests: n[5].into(),
                duration_ms: n[6].into(),
                partial,
                rate_limited: rl,
                incomplete: inc
                    .into_iter()
                    .map(|(repository, reason)| IncompleteScan { repository, reason })
                    .collect(),
                incomplete_more: 0,
            }
            .into()),
        (registry_id(), uuid(), text()).prop_map(|(id, s, reason)| SyncFailed {
            registry_id: id,
            sync_id: SyncId(s),
            reason
        }
        .into()),
    ]
    .boxed();
    let image: BoxedStrategy<EventPayload> = prop_oneof![
        (registry_id(), repo(), tag(), digest(), details()).prop_map(
            |(registry_id, repository, tag, digest, details)| TagDiscovered {
                registry_id,
                repository,
                tag,
                digest,
                details,
            }
            .into()
        ),
        (registry_id(), repo(), tag(), digest(), digest(), details()).prop_map(
            |(registry_id, repository, tag, old_digest, new_digest, details)| TagMoved {
                registry_id,
                repository,
                tag,
                old_digest,
                new_digest,
                details,
            }
            .into()
        ),
        (registry_id(), repo(), tag(), digest()).prop_map(
            |(registry_id, repository, tag, digest)| TagRemoved {
                registry_id,
                repository,
                tag,
                digest,
            }
            .into()
        ),
        (
            (registry_id(), repo(), digest()),
            (text(), prop::option::of(text())),
            signature_kind(),
            prop::option::of(rule_id()),
            digest()
        )
            .prop_map(
                |((registry_id, repository, digest), (signer, issuer), kind, policy, source)| {
                    SignatureVerified {
                        registry_id,
                        repository,
                        digest,
                        signer,
                        issuer,
                        kind,
                        policy,
                        source,
                    }
                    .into()
                }
            ),
        (
            (registry_id(), repo(), digest()),
            (text(), prop::option::of(text())),
            signature_kind(),
            prop::option::of(rule_id()),
            (text(), digest())
        )
            .prop_map(
                |(
                    (registry_id, repository, digest),
                    (signer, issuer),
                    kind,
                    policy,
                    (reason, source),
                )| {
                    SignatureFailed {
                        registry_id,
                        repository,
                        digest,
                        signer,
                        issuer,
                        kind,
                        policy,
                        reason,
                        source,
                    }
                    .into()
                }
            ),
        (
            (registry_id(), repo(), digest()),
            prop::collection::vec(referrer(), 0..3)
        )
            .prop_map(|((registry_id, repository, digest), referrers)| {
                ReferrersChanged {
                    registry_id,
                    repository,
                    digest,
                    referrers,
                }
                .into()
            }),
        (
            (registry_id(), repo(), digest()),
            (text(), text(), text()),
            time(),
            severity_counts(),
            any::<u32>(),
            digest()
        )
            .prop_map(
                |(
                    (registry_id, repository, digest),
                    (name, version, db),
                    scanned_at,
                    counts,
                    fixable,
                    source,
                )| {
                    VulnerabilitiesReported {
                        registry_id,
                        repository,
                        digest,
                        scanner: ScannerInfo { name, version },
                        db,
                        scanned_at,
                        counts,
                        fixable: fixable.into(),
                        source,
                        origin: None,
                    }
                    .into()
                }
            ),
        (
            (registry_id(), repo(), digest()),
            prop_oneof![Just(SbomFormat::Spdx), Just(SbomFormat::Cyclonedx)],
            digest()
        )
            .prop_map(
                |((registry_id, repository, digest), format, source)| SbomFound {
                    registry_id,
                    repository,
                    digest,
                    format,
                    source,
                }
                .into()
            ),
        (
            (registry_id(), repo(), digest()),
            prop_oneof![
                Just(PolicyVerdict::Pass),
                Just(PolicyVerdict::Fail),
                Just(PolicyVerdict::Audit)
            ],
            policy_findings(),
            prop::option::of(rule_id())
        )
            .prop_map(
                |((registry_id, repository, digest), verdict, findings, policy)| {
                    PolicyEvaluated {
                        registry_id,
                        repository,
                        digest,
                        verdict,
                        reasons: findings.iter().map(|f| f.reason).collect(),
                        policy,
                        findings,
                    }
                    .into()
                }
            ),
        (
            (registry_id(), repo(), tag()),
            digest(),
            digest(),
            prop_oneof![
                Just(MutationFoundBy::Scan),
                Just(MutationFoundBy::Webhook),
                Just(MutationFoundBy::Deploy),
                Just(MutationFoundBy::Sweep)
            ],
            prop::option::of(time()),
        )
            .prop_map(
                |((registry_id, repository, tag), old_digest, new_digest, found_by, seen_at)| {
                    TagMutated {
                        registry_id,
                        repository,
                        tag,
                        old_digest,
                        new_digest,
                        found_by,
                        seen_at,
                    }
                    .into()
                }
            ),
        (
            (registry_id(), repo(), prop::option::of(tag())),
            digest(),
            1u64..1_000_000,
            time(),
            time(),
        )
            .prop_map(|((registry_id, repository, tag), digest, pulls, a, b)| {
                PullsCounted {
                    registry_id,
                    repository,
                    tag,
                    digest,
                    pulls,
                    first_pulled_at: a.min(b),
                    last_pulled_at: a.max(b),
                }
                .into()
            }),
    ]
    .boxed();
    let catalog: BoxedStrategy<EventPayload> = prop_oneof![
        (target(), hm_tag()).prop_map(|(target, hm_tag)| CatalogLabeled { target, hm_tag }.into()),
        (target(), hm_tag())
            .prop_map(|(target, hm_tag)| CatalogUnlabeled { target, hm_tag }.into()),
        (target(), text()).prop_map(|(target, readme)| CatalogReadmeSet { target, readme }.into()),
        (target(), prop::option::of(digest()), text()).prop_map(|(target, digest, reason)| {
            CatalogApproved {
                target,
                digest,
                reason,
            }
            .into()
        }),
        (target(), prop::option::of(digest()), text()).prop_map(|(target, digest, reason)| {
            CatalogRejected {
                target,
                digest,
                reason,
            }
            .into()
        }),
    ]
    .boxed();
    let deployment: BoxedStrategy<EventPayload> = prop_oneof![
        (
            uuid(),
            registry_id(),
            repo(),
            tag(),
            digest(),
            kube(),
            kube(),
            0u32..10,
            map(),
            any::<bool>(),
        )
            .prop_map(
                |(id, reg, repository, tag, digest, name, namespace, replicas, env, k8s)| {
                    let mut resources = Resources::default();
                    resources
                        .limits
                        .insert("nvidia.com/gpu".into(), serde_json::json!(1));
                    resources
                        .requests
                        .insert("memory".into(), serde_json::json!("16Gi"));
                    DeploymentRequested {
                        deployment_id: DeploymentId(id),
                        image: ImageRef {
                            registry_id: reg,
                            repository,
                            tag,
                        },
                        digest,
                        workload: if k8s {
                            WorkloadKind::PostgresCluster
                        } else {
                            WorkloadKind::InferenceService
                        },
                        name,
                        namespace,
                        replicas,
                        resources,
                        env,
                        target: if k8s {
                            DeploymentTarget::Kubernetes
                        } else {
                            DeploymentTarget::Gitops
                        },
                        options: Default::default(),
                    }
                    .into()
                }
            ),
        (uuid(), "[A-Za-z]{1,10}", "[a-z-]{1,10}").prop_map(|(id, kind, name)| {
            DeploymentRendered {
                deployment_id: DeploymentId(id),
                manifests: vec![ManifestRef {
                    api_version: "serving.kserve.io/v1beta1".into(),
                    kind,
                    name,
                    namespace: Some("models".into()),
                    sha256: "ab".repeat(32),
                }],
            }
            .into()
        }),
        (uuid(), "[0-9a-f]{40}").prop_map(|(id, rev)| DeploymentApplied {
            deployment_id: DeploymentId(id),
            target: DeploymentTarget::Gitops,
            revision: rev
        }
        .into()),
        (uuid(), text()).prop_map(|(id, reason)| DeploymentFailed {
            deployment_id: DeploymentId(id),
            reason
        }
        .into()),
        (uuid(), prop::option::of("[0-9a-f]{40}")).prop_map(|(id, revision)| {
            DeploymentDeleted {
                deployment_id: DeploymentId(id),
                revision,
            }
            .into()
        }),
        (
            uuid(),
            digest(),
            policy_findings(),
            prop_oneof![Just(ViolationStage::Audited), Just(ViolationStage::Running)],
            prop::option::of(rule_id())
        )
            .prop_map(|(id, digest, findings, stage, policy)| {
                DeploymentPolicyViolated {
                    deployment_id: DeploymentId(id),
                    digest,
                    reasons: findings.iter().map(|f| f.reason).collect(),
                    stage,
                    policy,
                    findings,
                }
                .into()
            }),
    ]
    .boxed();
    let subscription: BoxedStrategy<EventPayload> = prop_oneof![
        (
            uuid(),
            "https://[a-z]{1,10}\\.example/[a-z]{0,8}",
            prop::collection::vec("io\\.imagelib\\.[a-z*]{1,8}(\\.[a-z_*]{1,12})?", 1..3),
            sealed(),
            text(),
        )
            .prop_map(|(id, url, types, secret, description)| {
                SubscriptionCreated {
                    subscription_id: SubscriptionId(id),
                    url,
                    types,
                    secret,
                    description,
                }
                .into()
            }),
        uuid().prop_map(|id| SubscriptionRemoved {
            subscription_id: SubscriptionId(id)
        }
        .into()),
        (uuid(), time(), time()).prop_map(|(id, a, b)| SubscriptionReplayRequested {
            subscription_id: SubscriptionId(id),
            from: a.min(b),
            to: a.max(b),
        }
        .into()),
    ]
    .boxed();
    prop_oneof![
        registry,
        rule,
        sync,
        image,
        catalog,
        deployment,
        subscription
    ]
    .boxed()
}

pub fn envelope() -> impl Strategy<Value = Envelope> {
    (
        payload(),
        uuid(),
        time(),
        prop::option::of(text()),
        any::<bool>(),
        "[a-z-]{1,20}",
    )
        .prop_map(|(payload, id, time, actor, traced, service)| {
            let mut e = Envelope::new(&service, payload).with_id(EventId(id));
            e.time = time;
            e.actor = actor;
            if traced {
                e.traceparent = Some(TraceParent::new_root());
            }
            e
        })
}
