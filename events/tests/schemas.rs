//! The committed JSON Schemas and AsyncAPI document match the Rust types, and every event
//! we emit validates against the CloudEvents 1.0 JSON schema and its own data schema.

mod common;

use std::path::Path;

use imagelib_events::binding::encode_structured;
use imagelib_events::schema;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

fn events_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_files_match_the_types() {
    let files = schema::generate();
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let mut drift = Vec::new();
    for (rel, body) in &files {
        let path = events_dir().join(rel);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, body).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(body.as_str()) {
            drift.push(rel.clone());
        }
    }
    // No stale schema for a type that no longer exists.
    for entry in std::fs::read_dir(events_dir().join("schemas")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let rel = format!("schemas/{name}");
        if !files.contains_key(&rel) {
            if update {
                std::fs::remove_file(events_dir().join(&rel)).unwrap();
            } else {
                drift.push(format!("{rel} (stale)"));
            }
        }
    }
    assert!(
        drift.is_empty(),
        "generated files differ from the types: {drift:?}; run `UPDATE_SCHEMAS=1 cargo test -p imagelib-events --test schemas`"
    );
}

fn cloudevents_validator() -> jsonschema::Validator {
    let path = events_dir().join("../../shared/schemas/cloudevents-1.0.schema.json");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn emitted_events_validate_against_cloudevents_and_data_schemas() {
    let ce = cloudevents_validator();
    let data_validators: std::collections::HashMap<&str, jsonschema::Validator> =
        imagelib_events::EventPayload::TYPES
            .iter()
            .map(|t| {
                let s = schema::data_schema(t);
                (t.type_name, jsonschema::validator_for(&s).unwrap())
            })
            .collect();
    let mut runner = TestRunner::deterministic();
    let strategy = common::envelope();
    for _ in 0..2000 {
        let env = strategy.new_tree(&mut runner).unwrap().current();
        let msg = encode_structured(&env);
        let json: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        if let Err(e) = ce.validate(&json) {
            panic!("not a valid CloudEvent: {e}\n{json:#}");
        }
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["datacontenttype"], "application/json");
        let t = json["type"].as_str().unwrap();
        assert_eq!(
            json["dataschema"].as_str().unwrap(),
            imagelib_events::envelope::schema_uri(t)
        );
        if let Err(e) = data_validators[t].validate(&json["data"]) {
            panic!(
                "data of {t} does not match its schema: {e}\n{:#}",
                json["data"]
            );
        }
    }
}

#[test]
fn data_schemas_refuse_invalid_data() {
    let t = imagelib_events::EventPayload::TYPES
        .iter()
        .find(|t| t.type_name == "io.imagelib.image.tag_removed.v1")
        .unwrap();
    let v = jsonschema::validator_for(&schema::data_schema(t)).unwrap();
    let good = serde_json::json!({
        "registry_id": "0190f1d2-3c4b-7a5e-8f90-123456789abc",
        "repository": "nvidia/nim/llm",
        "tag": "1.0",
        "digest": format!("sha256:{}", "a".repeat(64)),
    });
    assert!(v.is_valid(&good));
    let mut bad = good.clone();
    bad["repository"] = "Not/Valid".into();
    assert!(!v.is_valid(&bad));
    let mut missing = good;
    missing.as_object_mut().unwrap().remove("digest");
    assert!(!v.is_valid(&missing));
}

#[test]
fn asyncapi_lists_every_event_type() {
    let doc = schema::asyncapi();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let messages = doc["components"]["messages"].as_object().unwrap();
    assert_eq!(messages.len(), imagelib_events::EventPayload::TYPES.len());
    for t in imagelib_events::EventPayload::TYPES {
        assert!(
            messages.values().any(|m| m["name"] == t.type_name),
            "{} missing",
            t.type_name
        );
        // The message's data $ref points at a committed schema file.
        let file = events_dir()
            .join("schemas")
            .join(schema::schema_file_name(t));
        assert!(file.exists(), "{} missing", file.display());
    }
    let _ = common::uuid().boxed();
}
