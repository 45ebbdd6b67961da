//! Every metric a shipped dashboard or alert rule queries is one `imagelib serve` exports.
//!
//! The metric names are parsed out of the files themselves (every panel target of
//! `deploy/grafana/dashboards/*.json`, every rule of `deploy/prometheus/*.yml`), so a
//! panel or rule added later is checked too. The test then does an operator's work against
//! `imagelib serve` exporting OTLP to a receiver inside the test — register registries
//! (one of them answering `429` with `Retry-After`), scan, move and remove tags by
//! changing the registry, scan a cosign-signed image under a rule with a trust policy,
//! deliver a webhook, subscribe an endpoint that refuses connections, read the catalog,
//! be refused a bad token, put an unreadable message on the stream — and asserts that each
//! queried name is the Prometheus name of a metric received with data points and a unit.
//! It fails when a panel or rule queries a metric nothing emits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use imagelib_e2e::TestServer;
use imagelib_e2e::otlp::{OtlpReceiver, ReceivedMetric, prometheus_names};
use imagelib_testkit::hostile::{Behaviour, HostileRegistry};
use imagelib_testkit::publish::Publisher;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use imagelib_testkit::signing::TestKey;
use serde_json::{Value, json};

fn deploy(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// PromQL aggregation operators, which may take `by (…)`/`without (…)` before their
/// parentheses.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// The metric names a PromQL expression selects: identifiers that are not functions or
/// aggregations (followed by `(`), keywords, label names (inside `{…}`, or the label
/// list after `by`/`without`/`on`/`ignoring`/`group_*`), strings, numbers, durations,
/// or Grafana variables (`$__rate_interval`). A selector written `{__name__="x"}` is
/// refused: the test cannot tell what it selects.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let closing = |open: usize, o: char, c: char| -> Result<usize, String> {
        let mut depth = 0;
        let mut j = open;
        let mut quote: Option<char> = None;
        while j < chars.len() {
            let ch = chars[j];
            if let Some(q) = quote {
                if ch == '\\' {
                    j += 1;
                } else if ch == q {
                    quote = None;
                }
            } else if ch == '"' || ch == '\'' || ch == '`' {
                quote = Some(ch);
            } else if ch == o {
                depth += 1;
            } else if ch == c {
                depth -= 1;
                if depth == 0 {
                    return Ok(j);
                }
            }
            j += 1;
        }
        Err(format!("unbalanced `{o}` in {expr:?}"))
    };
    let followed_by_modifier = |j: usize| {
        let word: String = chars[j.min(chars.len())..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        matches!(word.to_ascii_lowercase().as_str(), "by" | "without")
    };
    while i < chars.len() {
        let ch = chars[i];
        if ch == '"' || ch == '\'' || ch == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != ch {
                if chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            i = j + 1;
        } else if ch == '{' {
            let end = closing(i, '{', '}')?;
            let inside: String = chars[i + 1..end].iter().collect();
            if inside.contains("__name__") {
                return Err(format!("a `__name__` matcher in {expr:?}"));
            }
            i = end + 1;
        } else if ch == '[' {
            i = closing(i, '[', ']')? + 1;
        } else if ch == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if ch.is_ascii_digit()
            || (ch == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                if chars.get(next) == Some(&'(') {
                    i = closing(next, '(', ')')? + 1;
                }
            } else if KEYWORDS.contains(&lower.as_str())
                || chars.get(next) == Some(&'(')
                || (AGGREGATIONS.contains(&lower.as_str()) && followed_by_modifier(next))
            {
                // A keyword, a function or aggregation call, or `sum by (…) (…)`.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    Ok(names)
}

#[test]
fn the_promql_parser_finds_metric_selectors_only() {
    let got = |e: &str| metric_names(e).unwrap().into_iter().collect::<Vec<_>>();
    assert_eq!(
        got(
            "histogram_quantile(0.99, sum by (le, imagelib_registry_id) (rate(imagelib_scan_duration_seconds_bucket{outcome!=\"failed\"}[$__rate_interval])))"
        ),
        ["imagelib_scan_duration_seconds_bucket"]
    );
    assert_eq!(
        got(
            "max by (messaging_destination_name) (imagelib_stream_bytes)\n / max by (messaging_destination_name) (imagelib_stream_max_bytes > 0) > 0.8"
        ),
        ["imagelib_stream_bytes", "imagelib_stream_max_bytes"]
    );
    assert_eq!(
        got(
            "min_over_time(imagelib_projector_lag[15m]) > 0 and deriv(imagelib_projector_lag[15m]) >= 0"
        ),
        ["imagelib_projector_lag"]
    );
    assert_eq!(
        got("sum(rate(a_total[5m])) / on (job) group_left (x) b offset 1h > 1e3"),
        ["a_total", "b"]
    );
    assert!(metric_names("{__name__=~\"imagelib_.*\"}").is_err());
    assert_eq!(
        got("topk without (instance) (3, count(up)) + count_values(\"v\", version_info)"),
        ["up", "version_info"]
    );
}

/// Every PromQL expression of the shipped dashboards and rule files, with where it is.
fn shipped_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dashboards = deploy("grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dashboards)
        .expect("deploy/grafana/dashboards")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no dashboard in {}",
        dashboards.display()
    );
    fn panels(v: &Value, file: &str, out: &mut Vec<(String, String)>) {
        for p in v["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| {
                    panic!("{file}: panel {} has a target without expr", p["title"])
                });
                out.push((format!("{file}: panel {}", p["title"]), expr.to_owned()));
            }
            panels(p, file, out);
        }
    }
    for f in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let before = out.len();
        panels(&v, &name, &mut out);
        assert!(out.len() > before, "{name} queries nothing");
    }
    let rules_dir = deploy("prometheus");
    let mut rule_files = 0;
    for e in std::fs::read_dir(&rules_dir).expect("deploy/prometheus") {
        let path = e.unwrap().path();
        if !path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            continue;
        }
        let v: Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // A rule file has `groups`; the Prometheus configuration and promtool tests do not.
        let Some(groups) = v["groups"].as_array() else {
            continue;
        };
        rule_files += 1;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for g in groups {
            for r in g["rules"].as_array().into_iter().flatten() {
                let what = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
                let expr = r["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {what} has no expr"));
                out.push((format!("{name}: rule {what}"), expr.to_owned()));
            }
        }
    }
    assert!(rule_files > 0, "no rule file in {}", rules_dir.display());
    out
}

/// Queried Prometheus name → where it is queried.
fn queried_names() -> BTreeMap<String, Vec<String>> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (place, expr) in shipped_queries() {
        let found = metric_names(&expr).unwrap_or_else(|e| panic!("{place}: {e}"));
        assert!(!found.is_empty(), "{place} selects no metric: {expr}");
        for n in found {
            names.entry(n).or_default().push(place.clone());
        }
    }
    names
}

/// Which received metric each queried Prometheus name is (its OTel name), or why none is.
fn resolve(
    queried: &BTreeMap<String, Vec<String>>,
    received: &BTreeMap<String, ReceivedMetric>,
) -> BTreeMap<String, Result<String, String>> {
    let mut by_prometheus: BTreeMap<String, (&String, &ReceivedMetric)> = BTreeMap::new();
    for (name, m) in received {
        for p in prometheus_names(name, &m.unit, m.kind) {
            by_prometheus.insert(p, (name, m));
        }
    }
    queried
        .iter()
        .map(|(q, places)| {
            let r = match by_prometheus.get(q) {
                None => Err(format!("{q} (queried by {places:?}) was never received")),
                Some((otel, m)) if m.points == 0 => {
                    Err(format!("{q} = {otel} was received without data points"))
                }
                Some((otel, m)) if m.unit.is_empty() => {
                    Err(format!("{q} = {otel} was received without a unit"))
                }
                Some((otel, _)) => Ok((*otel).clone()),
            };
            (q.clone(), r)
        })
        .collect()
}

struct Api<'a> {
    server: &'a TestServer,
}

impl Api<'_> {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.server.call(method, path, body).await
    }

    async fn register(&self, label: &str, host: &str) -> String {
        let (s, r) = self
            .call(
                reqwest::Method::POST,
                "/v1/registries",
                Some(
                    json!({"label": label, "url": host, "registry_type": "generic",
                            "insecure": true, "validate": false}),
                ),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        let id = r["id"].as_str().unwrap().to_owned();
        let (s, r) = self
            .call(
                reqwest::Method::PUT,
                &format!("/v1/registries/{id}/rules/all"),
                Some(json!({"repositories": "**", "kind": "auto", "enabled": true})),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        id
    }

    async fn sync(&self, id: &str) -> Value {
        self.server.sync(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_queried_metric_is_exported_with_data_and_a_unit() {
    let queried = queried_names();
    let receiver = OtlpReceiver::start().await.unwrap();
    // Before anything creates an instrument: instruments bind to the provider they meet.
    let telemetry = imagelib_platform::telemetry::init_with(
        imagelib_platform::telemetry::OtelSettings {
            service_name: "imagelib".into(),
            endpoint: Some(receiver.endpoint.clone()),
            metric_interval: Some(Duration::from_millis(500)),
            ..Default::default()
        },
        imagelib_platform::config::LogFormat::Json,
    )
    .unwrap();

    let registry = TestRegistry::start().await.unwrap();
    registry
        .push_image("team/app", "latest", &ImageSpec::linux_amd64())
        .await
        .unwrap();
    registry
        .push_image(
            "team/app",
            "1.0",
            &ImageSpec::linux_amd64().label("version", "1.0"),
        )
        .await
        .unwrap();
    // Answers the first request of every path `429` with `Retry-After: 1`.
    let throttling = HostileRegistry::start().await;
    throttling.add_tags("slow/app", ["1.0"]);
    throttling.set(Behaviour::RetryAfterOnce(1));

    let server = TestServer::start().await.unwrap();
    server.wait_ready().await.unwrap();
    let api = Api { server: &server };

    // A subscription whose endpoint refuses connections: every event from here on is a
    // failed delivery attempt, queued for its retry.
    let (s, sub) = api
        .call(
            reqwest::Method::POST,
            "/v1/subscriptions",
            Some(json!({"url": "https://127.0.0.1:9/hook", "types": ["*"]})),
        )
        .await;
    assert_eq!(s, 201, "{sub}");

    // A cosign-signed image (as cosign stores it on a registry without the referrers API)
    // under a rule whose trust policy names the key.
    let key = TestKey::generate();
    let signed = registry
        .push_image("trusted/app", "1.0", &ImageSpec::linux_amd64())
        .await
        .unwrap();
    Publisher::tag_schema(&registry, "trusted/app")
        .cosign_sign(&signed, &[&key])
        .await
        .unwrap();

    // Register and scan.
    let id = api.register("dashboard", &registry.host()).await;
    let (s, r) = api
        .call(
            reqwest::Method::PUT,
            &format!("/v1/registries/{id}/rules/trusted"),
            Some(json!({"repositories": "trusted/*", "trust": {"mode": "enforce", "keys": [key.public_pem()]}})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let first = api.sync(&id).await;
    assert_eq!(first["state"], "completed", "{first}");
    // The registry's first scheduled scan may have found the three tags before this one
    // (a busy machine): the catalog holds them either way.
    let mut listed = Value::Null;
    for _ in 0..120 {
        let (s, page) = api
            .call(
                reqwest::Method::GET,
                &format!("/v1/images?registry={id}"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{page}");
        listed = page;
        if listed["items"].as_array().map_or(0, Vec::len) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        listed["items"].as_array().map_or(0, Vec::len),
        3,
        "{first} {listed}"
    );

    // Move `latest` (a mutable tag) by pushing another image under it; remove `1.0`.
    registry
        .push_image(
            "team/app",
            "latest",
            &ImageSpec::linux_amd64().label("build", "2"),
        )
        .await
        .unwrap();
    registry.delete_tag("team/app", "1.0").await.unwrap();
    let second = api.sync(&id).await;
    assert_eq!(second["state"], "completed", "{second}");
    assert_eq!(
        (&second["summary"]["moved"], &second["summary"]["removed"]),
        (&json!(1), &json!(1)),
        "{second}"
    );

    // A registry that throttles: the scan waits out Retry-After and completes.
    let slow = api.register("throttling", &throttling.host()).await;
    let throttled = api.sync(&slow).await;
    assert_eq!(throttled["state"], "completed", "{throttled}");
    assert!(
        throttling
            .seen()
            .iter()
            .filter(|r| r.path().starts_with("/v2/"))
            .count()
            > 1
    );

    // A registry notification through the webhook route.
    let (s, hook) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/registries/{id}/webhook"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{hook}");
    let res = server
        .http
        .post(server.url(hook["url"].as_str().unwrap()))
        .bearer_auth(hook["secret"].as_str().unwrap())
        .json(&json!({"events": [{"action": "push", "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "repository": "team/app", "tag": "latest",
            "url": format!("http://{}/v2/team/app/manifests/latest", registry.host())}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);

    // Read the catalog, and be refused with a wrong token.
    let (s, images) = api.call(reqwest::Method::GET, "/v1/images", None).await;
    assert_eq!(s, 200, "{images}");
    let refused = server
        .http
        .get(server.url("/v1/images"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // A message no consumer can read: each dead-letters it.
    let nats = async_nats::connect(&server.config.nats_url).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    js.publish(
        format!(
            "{}.registry.{}.garbage",
            server.stream.prefix,
            uuid::Uuid::new_v4()
        ),
        "not a CloudEvent".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    // Wait (generously: suites share two cores) until every queried metric has arrived.
    let mut resolved = resolve(&queried, &receiver.metrics());
    for _ in 0..600 {
        if resolved.values().all(Result::is_ok) {
            break;
        }
        telemetry.flush();
        tokio::time::sleep(Duration::from_millis(100)).await;
        resolved = resolve(&queried, &receiver.metrics());
    }
    let missing: Vec<&String> = resolved.values().filter_map(|r| r.as_ref().err()).collect();
    let (exports, undecodable) = receiver.metric_exports();
    assert_eq!(
        undecodable, 0,
        "{undecodable} of {exports} metric exports were not OTLP"
    );
    assert!(
        missing.is_empty(),
        "queried but not exported ({exports} exports):\n{}\nreceived: {:?}",
        missing
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        receiver.metrics().keys().collect::<Vec<_>>()
    );

    // The attributes the shipped queries group by are on the data points.
    let received = receiver.metrics();
    for (metric, attribute) in [
        ("imagelib.scan.duration", "imagelib.registry.id"),
        ("imagelib.scan.duration", "outcome"),
        ("imagelib.registry.requests", "http.response.status_code"),
        ("imagelib.registry.requests", "imagelib.registry.id"),
        ("imagelib.registry.rate_limited", "imagelib.registry.id"),
        ("imagelib.tags.changes", "change"),
        ("imagelib.projector.lag", "messaging.consumer.group.name"),
        (
            "imagelib.events.dead_lettered",
            "messaging.consumer.group.name",
        ),
        ("imagelib.webhook.deliveries", "outcome"),
        ("imagelib.subscriptions.deliveries", "outcome"),
        (
            "imagelib.subscriptions.dead_letters",
            "imagelib.subscription.id",
        ),
    ] {
        let m = received
            .get(metric)
            .unwrap_or_else(|| panic!("{metric} not received"));
        assert!(
            m.attributes.contains(attribute),
            "{metric} has no {attribute}: {:?}",
            m.attributes
        );
    }
    drop(server);
    drop(telemetry);
}
