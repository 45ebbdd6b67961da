//! Property tests for the parsers a registry feeds (issue 11, item 6): whatever bytes a
//! registry, its token server or a proxy sends, parsing ends in a value or an error, never
//! a panic; and what a well-behaved registry sends parses to what it meant.
//!
//! The same parsers have `cargo fuzz` targets in `fuzz/` (not run in CI); these run in the
//! normal suite.

use std::time::Duration;

use imagelib_events::{Digest, RepositoryName};
use proptest::prelude::*;
use registry_client::auth::{parse_challenges, token_response_lifetime};
use registry_client::manifest::{ImageConfig, Manifest, media_type, sha256_digest};
use registry_client::pagination::{next_link, parse_link_header};
use registry_client::{
    CachedContent, Credentials, Error, InspectOptions, ManifestCache, MemoryCache, RegistryClient,
    RegistryConfig,
};
use reqwest::header::{HeaderMap, HeaderValue, LINK};
use serde_json::{Value, json};
use url::Url;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings made of the characters these grammars care about, so the interesting paths are
/// hit far more often than by uniformly random text.
fn grammar_soup() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[<>;,="\\ \ta-zA-Z0-9:/?&.%é]{0,64}"#).unwrap()
}

/// Headers assembled from the grammar's own pieces: unterminated quotes, escapes at the
/// end, empty parameters, separators in a row — the shapes a hostile server would try.
fn grammar_pieces() -> impl Strategy<Value = String> {
    let pieces = [
        "Bearer",
        "Basic",
        " ",
        "\t",
        "realm",
        "service",
        "scope",
        "rel",
        "next",
        "=",
        "\"",
        "\\",
        ",",
        ";",
        "<",
        ">",
        "/v2/x?n=1",
        "https://a.example/t",
        "é",
        "abc",
    ];
    prop::collection::vec(prop::sample::select(pieces.to_vec()), 0..24).prop_map(|v| v.concat())
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("mediaType".to_owned()),
                    Just("schemaVersion".to_owned()),
                    Just("manifests".to_owned()),
                    Just("config".to_owned()),
                    Just("layers".to_owned()),
                    Just("size".to_owned()),
                    Just("digest".to_owned()),
                    Just("token".to_owned()),
                    Just("expires_in".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn media_types() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(media_type::OCI_INDEX.to_owned())),
        Just(Some(media_type::OCI_MANIFEST.to_owned())),
        Just(Some(media_type::DOCKER_MANIFEST_LIST.to_owned())),
        Just(Some(media_type::DOCKER_MANIFEST.to_owned())),
        Just(Some(media_type::DOCKER_MANIFEST_V1.to_owned())),
        ".{0,30}".prop_map(Some),
    ]
}

fn link_header_map(values: &[String]) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(LINK, HeaderValue::from_str(v).ok()?);
    }
    Some(h)
}

proptest! {
    #![proptest_config(config())]

    // ---- Link (RFC 8288), pagination.rs ----

    #[test]
    fn link_headers_never_panic(value in prop_oneof![grammar_soup(), grammar_pieces(), any::<String>()]) {
        let _ = parse_link_header(&value);
        let base: Url = "https://registry.example/v2/_catalog?n=100".parse().unwrap();
        if let Some(h) = link_header_map(&[value]) {
            let _ = next_link(&h, &base);
        }
    }

    #[test]
    fn link_header_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let base: Url = "http://127.0.0.1:5000/v2/a/tags/list".parse().unwrap();
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            let mut h = HeaderMap::new();
            h.insert(LINK, v);
            let _ = next_link(&h, &base);
        }
    }

    /// A registry's `rel="next"` link (relative or absolute, after other links, with quoted
    /// parameters holding `,` and `;`) is the URL that is followed.
    #[test]
    fn the_next_link_is_the_url_the_registry_sent(
        segments in prop::collection::vec("[a-z0-9][a-z0-9._-]{0,8}", 1..4),
        last in "[a-z0-9][a-z0-9._/-]{0,20}",
        n in 1u32..10_000,
        absolute in any::<bool>(),
        before in prop::option::of("[a-z]{1,8}"),
        title in r#"[a-z ,;=]{0,12}"#,
        rel_case in prop_oneof![Just("next"), Just("NEXT"), Just("Next")],
        extra_rel in any::<bool>(),
    ) {
        let base: Url = "https://registry.example:5000/v2/_catalog?n=100".parse().unwrap();
        let path = format!("/v2/{}/tags/list?n={n}&last={last}", segments.join("/"));
        let target = if absolute { format!("https://registry.example:5000{path}") } else { path.clone() };
        let rel = if extra_rel { format!("prefetch {rel_case}") } else { rel_case.to_owned() };
        let mut value = String::new();
        if let Some(prev) = &before {
            value.push_str(&format!("</v2/{prev}?n=1>; rel=\"prev\", "));
        }
        value.push_str(&format!("<{target}>; title=\"{title}\"; rel=\"{rel}\""));
        let h = link_header_map(std::slice::from_ref(&value)).unwrap();
        let next = next_link(&h, &base).unwrap();
        prop_assert_eq!(next, Some(base.join(&path).unwrap()), "{}", value);
        let parsed = parse_link_header(&value);
        prop_assert_eq!(parsed.len(), 1 + usize::from(before.is_some()));
        let params = &parsed.last().unwrap().params;
        prop_assert!(params.contains(&("title".to_owned(), title.clone())), "{:?}", params);
    }

    /// Without a `rel="next"` there is nothing to follow.
    #[test]
    fn no_next_relation_no_next_link(target in "/v2/[a-z]{1,8}\\?n=[0-9]{1,3}", rel in "prev|first|last|[a-z]{1,6}") {
        prop_assume!(!rel.eq_ignore_ascii_case("next"));
        let base: Url = "https://registry.example/v2/".parse().unwrap();
        let h = link_header_map(&[format!("<{target}>; rel=\"{rel}\"")]).unwrap();
        prop_assert_eq!(next_link(&h, &base).unwrap(), None);
    }

    // ---- WWW-Authenticate (RFC 9110 §11.6.1), auth.rs ----

    #[test]
    fn challenges_never_panic(value in prop_oneof![grammar_soup(), grammar_pieces(), any::<String>()]) {
        let _ = parse_challenges(&value);
    }

    /// Challenges written as a registry writes them parse back to their scheme (lower-cased)
    /// and parameters, whatever the quoted values hold (commas, `=`, quotes, backslashes).
    #[test]
    fn challenges_round_trip(
        challenges in prop::collection::vec(
            (
                "[A-Za-z][A-Za-z0-9_-]{0,9}",
                prop::collection::btree_map("[a-z][a-z0-9_]{0,7}", r#"[ -~é]{0,24}"#, 0..4),
            ),
            1..4,
        )
    ) {
        let header = challenges
            .iter()
            .map(|(scheme, params)| {
                let params: Vec<String> = params
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                    .collect();
                if params.is_empty() { scheme.clone() } else { format!("{scheme} {}", params.join(", ")) }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let parsed = parse_challenges(&header);
        prop_assert_eq!(parsed.len(), challenges.len(), "{}", header);
        for (got, (scheme, params)) in parsed.iter().zip(&challenges) {
            prop_assert_eq!(&got.scheme, &scheme.to_ascii_lowercase());
            prop_assert_eq!(&got.params, params, "{}", header);
        }
    }

    // ---- token responses, auth.rs ----

    #[test]
    fn token_responses_never_panic(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            any_json().prop_map(|v| v.to_string().into_bytes()),
        ]
    ) {
        if let Some(lifetime) = token_response_lifetime(&body) {
            prop_assert!(lifetime <= Duration::from_secs(24 * 3600), "{:?}", lifetime);
        }
    }

    /// Whatever `expires_in` and `issued_at` say (huge, negative, fractional, strings, dates
    /// far in the past or future), a token is used for at most a day, and a fresh one for
    /// at least 20 s.
    #[test]
    fn token_lifetimes_are_clamped(
        expires_in in prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            any::<f64>().prop_map(|f| json!(f.to_string())),
            Just(json!("1e400")),
            Just(json!(null)),
            ".{0,10}".prop_map(Value::String),
        ],
        issued_at in prop::option::of(prop_oneof![
            (-4_000_000_000i64..4_000_000_000i64).prop_map(|s| {
                chrono::DateTime::from_timestamp(s, 0).unwrap().to_rfc3339()
            }),
            ".{0,30}",
        ]),
        field in prop_oneof![Just("token"), Just("access_token")],
    ) {
        let mut body = json!({field: "t0ken", "expires_in": expires_in});
        let fresh = issued_at.is_none();
        if let Some(at) = issued_at {
            body["issued_at"] = json!(at);
        }
        let lifetime = token_response_lifetime(body.to_string().as_bytes());
        let lifetime = lifetime.expect("a token is there");
        prop_assert!(lifetime <= Duration::from_secs(24 * 3600), "{:?} for {}", lifetime, body);
        if fresh {
            prop_assert!(lifetime >= Duration::from_secs(20), "{:?} for {}", lifetime, body);
        }
    }

    #[test]
    fn an_answer_without_a_token_is_none(expires_in in any::<i64>(), token in prop_oneof![Just(json!("")), Just(json!(null)), Just(json!(5))]) {
        let body = json!({"token": token, "expires_in": expires_in});
        prop_assert_eq!(token_response_lifetime(body.to_string().as_bytes()), None);
    }

    // ---- manifests and indexes, manifest.rs ----

    #[test]
    fn manifests_never_panic(
        content_type in media_types(),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            any_json().prop_map(|v| v.to_string().into_bytes()),
        ]
    ) {
        if let Ok((manifest, media_type)) = Manifest::parse(content_type.as_deref(), &body) {
            prop_assert!(!media_type.is_empty());
            let _ = manifest.annotations();
            let _ = manifest.artifact_type();
            let _ = manifest.subject();
            if let Manifest::Image(m) = &manifest {
                let _ = m.content_size();
            }
        }
    }

    #[test]
    fn configs_never_panic(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            any_json().prop_map(|v| v.to_string().into_bytes()),
            any_json().prop_map(|v| json!({"created": v.clone(), "os": v.clone(), "config": {"Labels": {"a": v}}}).to_string().into_bytes()),
        ]
    ) {
        let _ = ImageConfig::parse(&body);
    }

    /// A valid image manifest parses to an image whose size is config plus layers, and
    /// sizes a registry inflates to `u64::MAX` saturate instead of overflowing.
    #[test]
    fn image_manifests_parse_and_sizes_saturate(
        config_size in any::<u64>(),
        layer_sizes in prop::collection::vec(prop_oneof![any::<u64>(), Just(u64::MAX), 0u64..1_000_000], 0..12),
        docker in any::<bool>(),
        declared in any::<bool>(),
    ) {
        let (mt, config_mt) = if docker {
            (media_type::DOCKER_MANIFEST, media_type::DOCKER_CONFIG)
        } else {
            (media_type::OCI_MANIFEST, media_type::OCI_CONFIG)
        };
        let mut body = json!({
            "schemaVersion": 2,
            "config": descriptor(config_mt, b"config", config_size),
            "layers": layer_sizes.iter().enumerate().map(|(i, s)| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &i.to_le_bytes(), *s)).collect::<Vec<_>>(),
        });
        if declared {
            body["mediaType"] = json!(mt);
        }
        let (manifest, media_type) = Manifest::parse(Some(mt), body.to_string().as_bytes()).unwrap();
        prop_assert_eq!(media_type, mt);
        let Manifest::Image(m) = manifest else { panic!("an image manifest parsed as an index") };
        let expected = layer_sizes.iter().fold(u128::from(config_size), |a, s| a + u128::from(*s));
        prop_assert_eq!(u128::from(m.content_size()), expected.min(u128::from(u64::MAX)));
    }

    /// A valid index parses to an index of the same children, whether the registry names
    /// its media type in the body, in `Content-Type`, or only by its shape.
    #[test]
    fn indexes_parse_with_every_child(
        children in prop::collection::vec(child(), 0..40),
        where_declared in 0u8..3,
    ) {
        let mut body = json!({
            "schemaVersion": 2,
            "manifests": children.iter().map(|c| c.descriptor.clone()).collect::<Vec<_>>(),
        });
        let content_type = match where_declared {
            0 => { body["mediaType"] = json!(media_type::OCI_INDEX); None }
            1 => Some(media_type::DOCKER_MANIFEST_LIST),
            _ => None,
        };
        let (manifest, _) = Manifest::parse(content_type, body.to_string().as_bytes()).unwrap();
        let Manifest::Index(index) = manifest else { panic!("an index parsed as an image") };
        prop_assert_eq!(index.manifests.len(), children.len());
    }
}

fn descriptor(media_type: &str, seed: &[u8], size: u64) -> Value {
    json!({"mediaType": media_type, "digest": sha256_digest(seed).as_str(), "size": size})
}

/// One child of a generated index: its descriptor, its manifest and its config.
#[derive(Debug, Clone)]
struct Child {
    descriptor: Value,
    manifest: Vec<u8>,
    digest: Digest,
    config: Vec<u8>,
    config_digest: Digest,
    content_size: u128,
    platform: bool,
    attestation: bool,
}

fn child() -> impl Strategy<Value = Child> {
    (
        any::<u64>(),
        prop::collection::vec(any::<u64>(), 0..4),
        prop::option::of(("linux|windows|[a-z]{1,6}", "amd64|arm64|[a-z0-9]{1,6}")),
        any::<bool>(),
        prop_oneof![
            any_json().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 3..64),
            Just(br#"{"os":"linux","architecture":"amd64","created":"2024-01-01T00:00:00Z","config":{"Labels":{"a":"b","n":1}}}"#.to_vec()),
        ],
        any::<u32>(),
    )
        .prop_map(
            |(config_size, layers, platform, attestation, config, salt)| {
                let config_digest = sha256_digest(&config);
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": media_type::OCI_MANIFEST,
                    "config": {"mediaType": media_type::OCI_CONFIG, "digest": config_digest.as_str(), "size": config_size.max(3)},
                    "layers": layers.iter().enumerate().map(|(i, s)| descriptor("application/vnd.oci.image.layer.v1.tar", &[i as u8, salt as u8], *s)).collect::<Vec<_>>(),
                    "annotations": {"salt": salt.to_string()},
                });
                let manifest = manifest.to_string().into_bytes();
                let digest = sha256_digest(&manifest);
                let mut descriptor = json!({
                    "mediaType": media_type::OCI_MANIFEST,
                    "digest": digest.as_str(),
                    "size": manifest.len(),
                });
                if let Some((os, architecture)) = &platform {
                    descriptor["platform"] = json!({"os": os, "architecture": architecture});
                }
                if attestation {
                    descriptor["annotations"] =
                        json!({"vnd.docker.reference.type": "attestation-manifest"});
                }
                let content_size = layers
                    .iter()
                    .fold(u128::from(config_size.max(3)), |a, s| a + u128::from(*s))
                    .min(u128::from(u64::MAX));
                Child {
                    descriptor,
                    manifest,
                    digest,
                    config,
                    config_digest,
                    content_size,
                    platform: platform.is_some(),
                    attestation,
                }
            },
        )
}

/// A client that can reach nothing: every test below must be answered from the cache.
fn offline_client() -> RegistryClient {
    RegistryClient::new(
        RegistryConfig::new("registry.invalid", false).unwrap(),
        Credentials::Anonymous,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..config() })]

    // ---- classification of what a tag points at, inspect.rs ----

    /// An index of arbitrary children (huge sizes, odd platforms, attestations, configs that
    /// are not JSON) is inspected without a panic: image children are platforms, attestations
    /// are referrers, and the size is their saturating sum.
    #[test]
    fn indexes_are_classified_without_panic(children in prop::collection::vec(child(), 0..24)) {
        let cache = MemoryCache::default();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": children.iter().map(|c| c.descriptor.clone()).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        let index_digest = sha256_digest(&index);
        cache.put(&index_digest, CachedContent { media_type: media_type::OCI_INDEX.into(), bytes: index.into() });
        for c in &children {
            cache.put(&c.digest, CachedContent { media_type: media_type::OCI_MANIFEST.into(), bytes: c.manifest.clone().into() });
            cache.put(&c.config_digest, CachedContent { media_type: media_type::OCI_CONFIG.into(), bytes: c.config.clone().into() });
        }
        let repo: RepositoryName = "acme/app".parse().unwrap();
        let options = InspectOptions { referrers: false, known_tags: None };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let inspection = rt
            .block_on(offline_client().inspect_digest(&repo, &index_digest, &cache, &options))
            .unwrap();
        let images: Vec<&Child> = children.iter().filter(|c| !c.attestation).collect();
        prop_assert_eq!(inspection.platforms.len(), images.iter().filter(|c| c.platform).count());
        prop_assert_eq!(inspection.referrers.len(), children.len() - images.len());
        let expected = images.iter().fold(0u128, |a, c| a + c.content_size).min(u128::from(u64::MAX));
        prop_assert_eq!(u128::from(inspection.size), expected);
    }

    /// An index with more children than the cap is refused as capped, before any child is
    /// fetched.
    #[test]
    fn an_index_beyond_the_cap_is_refused(extra in 1usize..64) {
        let n = 256 + extra;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_INDEX,
            "manifests": (0..n).map(|i| descriptor(media_type::OCI_MANIFEST, &i.to_le_bytes(), 1)).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        let digest = sha256_digest(&index);
        let cache = MemoryCache::default();
        cache.put(&digest, CachedContent { media_type: media_type::OCI_INDEX.into(), bytes: index.into() });
        let repo: RepositoryName = "acme/app".parse().unwrap();
        let options = InspectOptions { referrers: false, known_tags: None };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let err = rt
            .block_on(offline_client().inspect_digest(&repo, &digest, &cache, &options))
            .unwrap_err();
        prop_assert!(matches!(err, Error::Capped { .. }), "{:?}", err);
    }

    /// Whatever bytes sit under a digest, inspecting it is a value or an error.
    #[test]
    fn any_cached_manifest_is_inspected_without_panic(
        content_type in media_types(),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            any_json().prop_map(|v| v.to_string().into_bytes()),
        ]
    ) {
        let digest = sha256_digest(&body);
        let cache = MemoryCache::default();
        cache.put(&digest, CachedContent { media_type: content_type.unwrap_or_default(), bytes: body.into() });
        // Only bodies that need nothing more than the cache: anything that parses as a
        // manifest with children or a JSON config would go to the (unreachable) network.
        let needs_network = match Manifest::parse(None, &cache.get(&digest).unwrap().bytes) {
            Ok((Manifest::Index(i), _)) => !i.manifests.is_empty(),
            Ok((Manifest::Image(_), _)) => true,
            Err(_) => false,
        };
        prop_assume!(!needs_network);
        let repo: RepositoryName = "acme/app".parse().unwrap();
        let options = InspectOptions { referrers: false, known_tags: None };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _ = rt.block_on(offline_client().inspect_digest(&repo, &digest, &cache, &options));
    }
}

#[test]
fn the_quoted_value_of_an_unterminated_challenge_is_kept() {
    // Regression: an unterminated quoted value used to leave the cursor past the end.
    let c = parse_challenges(r#"Bearer realm="https://auth.example/token"#);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
    let c = parse_challenges(r#"Bearer realm="x", service="#);
    assert_eq!(c[0].param("realm"), Some("x"));
}
