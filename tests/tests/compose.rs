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
