//! Who may read what (issue 11, item 5): no anonymous reads unless configured, `env`
//! values only for deployers and admins, and a failed authentication audited without the
//! token.

mod common;

use common::{ADMIN, CURATOR, DEPLOYER, Env, VIEWER};
use imagelib_events::model::ImageKind;
use reqwest::Method;
use serde_json::{Value, json};

const SECRET_VALUE: &str = "sk-live-env-canary-7f3a";

#[tokio::test]
async fn a_request_without_a_token_is_refused_unless_anonymous_reads_are_on() {
    let env = Env::new();
    let svc = env.start().await;

    for (method, path) in [
        (Method::GET, "/v1/deployments"),
        (
            Method::GET,
            "/v1/deployments/0190a1b2-0000-7000-8000-000000000000",
        ),
        (
            Method::GET,
            "/v1/provisioning/cnpg/image-catalog?repository=x",
        ),
        (
            Method::DELETE,
            "/v1/deployments/0190a1b2-0000-7000-8000-000000000000",
        ),
    ] {
        let res = svc
            .http
            .request(method.clone(), svc.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{method} {path}");
        let challenge = res.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{method} {path}"
        );
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["status"], 401);
        assert_eq!(p["code"], "unauthenticated", "{p}");
    }

    // A wrong token and a malformed header are refused too, with or without anonymous reads.
    for header in ["Bearer not-a-known-token", "Basic dXNlcjpwYXNz", "Bearer "] {
        let res = svc
            .http
            .get(svc.url("/v1/deployments"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{header}");
        assert!(res.headers().contains_key("www-authenticate"));
    }

    // The infrastructure routes stay open.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let res = svc.http.get(svc.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    // A token reads.
    let (s, page) = svc
        .call(Method::GET, "/v1/deployments", Some(VIEWER), None)
        .await;
    assert_eq!(s, 200, "{page}");

    // With anonymous reads on, a GET without a token reads; writes still need a token and
    // a wrong token is still a 401.
    let mut config = env.config();
    config.common.anonymous_read = true;
    let open = env.start_with(config).await;
    let (s, page) = open.call(Method::GET, "/v1/deployments", None, None).await;
    assert_eq!(s, 200, "{page}");
    assert!(page["items"].is_array());
    let (s, p) = open
        .call(
            Method::POST,
            "/v1/deployments",
            None,
            Some(json!({"image": "x/y:z", "name": "n", "namespace": "ns"})),
        )
        .await;
    assert_eq!(s, 401, "{p}");
    let (s, _) = open
        .call(Method::GET, "/v1/deployments", Some("wrong"), None)
        .await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn env_values_are_shown_only_to_deployers_and_admins() {
    let env = Env::new();
    let mut config = env.config();
    config.common.anonymous_read = true;
    let svc = env.start_with(config).await;
    let reg = env.registry(&[]).await;
    env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    let body = json!({
        "image": format!("{reg}/acme/llm:1.0"), "name": "redacted", "namespace": "models",
        "env": {"API_KEY": SECRET_VALUE, "LOG_LEVEL": "info"}
    });
    let (s, created) = svc.wait_for(body, |s, _| s != 404).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(
        created["env"]["API_KEY"], SECRET_VALUE,
        "the deployer sees it"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let one = format!("/v1/deployments/{id}");

    for (who, token, sees) in [
        ("deployer", Some(DEPLOYER), true),
        ("admin", Some(ADMIN), true),
        ("curator", Some(CURATOR), false),
        ("viewer", Some(VIEWER), false),
        ("anonymous", None, false),
    ] {
        for path in [one.as_str(), "/v1/deployments"] {
            let mut req = svc.http.get(svc.url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200, "{who} GET {path}");
            let text = res.text().await.unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            let d = if path == one {
                v
            } else {
                v["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|d| d["id"] == id.as_str())
                    .unwrap_or_else(|| panic!("{who} lists the deployment: {text}"))
                    .clone()
            };
            let keys: Vec<&String> = d["env"].as_object().unwrap().keys().collect();
            assert_eq!(keys, ["API_KEY", "LOG_LEVEL"], "{who} sees the names");
            if sees {
                assert_eq!(d["env"]["API_KEY"], SECRET_VALUE, "{who} GET {path}");
                assert_eq!(d["env"]["LOG_LEVEL"], "info", "{who} GET {path}");
            } else {
                assert_eq!(d["env"]["API_KEY"], "***", "{who} GET {path}");
                assert_eq!(d["env"]["LOG_LEVEL"], "***", "{who} GET {path}");
                assert!(
                    !text.contains(SECRET_VALUE),
                    "{who} GET {path} leaks the value: {text}"
                );
            }
        }
    }
}

/// The server runs on this test's thread, so the subscriber set here sees its logs.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_authentication_is_audited_without_the_token() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = Env::new();
    let svc = env.start().await;
    let token = format!("guessed-token-canary-{}", imagelib_testkit::unique_id());
    let path = "/v1/deployments/0190a1b2-0000-7000-8000-000000000000";
    let (s, p) = svc.call(Method::GET, path, Some(&token), None).await;
    assert_eq!(s, 401, "{p}");
    assert!(
        !p.to_string().contains(&token),
        "the problem echoes the token"
    );
    // A malformed header is audited too (its hash is of the whole value).
    let res = svc
        .http
        .get(svc.url("/v1/deployments"))
        .header("authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // No token at all is a 401 but not an audit event (nothing was presented).
    let (s, _) = svc.call(Method::GET, "/v1/deployments", None, None).await;
    assert_eq!(s, 401);

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains(&token), "the token is in the logs");
    let audit: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "imagelib::security")
        .collect();
    assert_eq!(audit.len(), 2, "one line per refused credential: {logs}");
    let expected_prefix = &common::sha(&token)[..8];
    let unknown = &audit[0]["fields"];
    assert_eq!(unknown["event"], "auth_failed", "{unknown}");
    assert_eq!(unknown["reason"], "unknown_token");
    assert_eq!(unknown["token.sha256_prefix"], expected_prefix, "{unknown}");
    assert_eq!(unknown["http.route"], "/v1/deployments/{id}");
    assert_eq!(unknown["http.request.method"], "GET");
    let source = unknown["source.address"].as_str().unwrap();
    assert!(source.starts_with("127.0.0.1:"), "{source}");
    let malformed = &audit[1]["fields"];
    assert_eq!(malformed["reason"], "malformed");
    assert_eq!(malformed["http.route"], "/v1/deployments");
    assert_eq!(
        malformed["token.sha256_prefix"],
        &common::sha(&format!("Token {token}"))[..8]
    );
}
