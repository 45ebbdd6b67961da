//! `docker-compose.yml` validates against the Compose specification's JSON schema
//! (`shared/schemas/compose-spec.json`), and names the services the design promises.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn compose_file_validates_against_the_compose_spec() {
    let schema_path = root().join("../shared/schemas/compose-spec.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
    let compose_text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut yaml: serde_norway::Value = serde_norway::from_str(&compose_text).unwrap();
    yaml.apply_merge().unwrap();
    let compose: serde_json::Value = serde_json::to_value(&yaml).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&compose)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let services = compose["services"].as_object().unwrap();
    for name in [
        "registry-registry",
        "sync-scanner",
        "catalog-projector",
        "serving-deployer",
        "postgres",
    ] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    let nats = services.keys().filter(|k| k.starts_with("nats")).count();
    assert_eq!(nats, 3, "a three-node NATS cluster");
}

#[test]
fn the_validator_catches_a_broken_compose_file() {
    let schema_path = root().join("../shared/schemas/compose-spec.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let broken = serde_json::json!({"services": {"x": {"image": "a", "ports": [{"bogus": 1}]}}});
    assert!(!validator.is_valid(&broken));
}

/// The imagelib services report their health with the `imagelib` binary their image holds
/// (no curl in distroless), and only the services that open sealed credentials get the
/// master key.
#[test]
fn services_have_healthchecks_and_the_master_key_only_where_used() {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let mut yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    yaml.apply_merge().unwrap();
    let compose: serde_json::Value = serde_json::to_value(&yaml).unwrap();
    let services = compose["services"].as_object().unwrap();
    let mut built = 0;
    for (name, s) in services {
        if s["build"]["dockerfile"] != "deploy/Dockerfile" {
            // Every other container (NATS, PostgreSQL, observability) is not ours, but
            // NATS and PostgreSQL, which the services wait for, have healthchecks.
            if name.starts_with("nats") || name == "postgres" {
                assert!(s["healthcheck"]["test"].is_array(), "{name}");
            }
            continue;
        }
        built += 1;
        assert_eq!(
            s["healthcheck"]["test"],
            serde_json::json!(["CMD", "/usr/local/bin/imagelib", "healthcheck"]),
            "{name}"
        );
        assert!(
            s["environment"]["IMAGELIB_HTTP_ADDR"].is_string(),
            "{name}: the healthcheck probes the port of IMAGELIB_HTTP_ADDR"
        );
        let secrets = s["secrets"].to_string();
        let uses_key = matches!(name.as_str(), "registry-registry" | "sync-scanner");
        assert_eq!(
            secrets.contains("imagelib_master_key"),
            uses_key,
            "{name}: {secrets}"
        );
        assert_eq!(
            s["environment"]["IMAGELIB_MASTER_KEY_FILE"].is_string(),
            uses_key,
            "{name}"
        );
    }
    assert_eq!(
        built, 4,
        "four imagelib services built from deploy/Dockerfile"
    );
}

/// `deploy/Dockerfile`: one final stage per service, distroless where git is not needed,
/// and a HEALTHCHECK that runs `imagelib healthcheck` in every runtime image.
#[test]
fn the_dockerfile_builds_small_images_with_a_healthcheck() {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    // Join continuation lines, drop comments.
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let from = |stage: &str| {
        lines
            .iter()
            .find(|l| l.starts_with("FROM ") && l.ends_with(&format!(" AS {stage}")))
            .unwrap_or_else(|| panic!("no stage {stage}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert!(from("distroless").starts_with("gcr.io/distroless/cc-debian12"));
    for (service, base) in [
        ("registry-registry", "distroless"),
        ("sync-scanner", "distroless"),
        ("catalog-projector", "distroless"),
        ("serving-deployer", "with-git"),
        ("imagelib", "with-git"),
    ] {
        assert_eq!(from(&format!("service-{service}")), base, "{service}");
    }
    assert_eq!(lines.last().unwrap(), &"FROM service-${SERVICE}");
    // Both runtime bases carry the healthcheck, and the git one installs git.
    let healthchecks = lines
        .iter()
        .filter(|l| {
            l.starts_with("HEALTHCHECK ")
                && l.contains(r#"["/usr/local/bin/imagelib", "healthcheck"]"#)
        })
        .count();
    assert_eq!(healthchecks, 2, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("apt-get install") && l.contains(" git"))
    );
    // No shell entry point: distroless has no shell.
    assert!(!text.contains("docker-entrypoint.sh"));
}
