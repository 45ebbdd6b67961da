//! JSON Schemas of every event's data and the AsyncAPI 3 document of the channels,
//! generated from the Rust types so that the published contract cannot drift from the
//! code: `events/tests/schemas.rs` fails when the committed files differ, and
//! `UPDATE_SCHEMAS=1 cargo test -p imagelib-events --test schemas` rewrites them.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::envelope::schema_uri;
use crate::event::{EventPayload, EventType};

/// The file name of an event type's data schema.
pub fn schema_file_name(t: &EventType) -> String {
    format!("{}.json", t.type_name)
}

/// The data schema of one event type, with its `$id`.
pub fn data_schema(t: &EventType) -> Value {
    let mut schema = (t.schema)().to_value();
    if let Value::Object(map) = &mut schema {
        map.insert("$id".into(), Value::String(schema_uri(t.type_name)));
        map.insert(
            "title".into(),
            Value::String(format!("{} ({})", t.type_name, t.rust_name)),
        );
    }
    schema
}

/// Every generated file, by path relative to `events/`.
pub fn generate() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for t in EventPayload::TYPES {
        let body = serde_json::to_string_pretty(&data_schema(t)).unwrap_or_default() + "\n";
        files.insert(format!("schemas/{}", schema_file_name(t)), body);
    }
    files.insert("asyncapi.yaml".into(), asyncapi_yaml());
    files
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = true;
    for c in s.chars() {
        if c == '_' || c == '.' || c == '-' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The AsyncAPI 3.0 document: one channel per event type on the NATS server.
pub fn asyncapi() -> Value {
    let mut channels = serde_json::Map::new();
    let mut operations = serde_json::Map::new();
    let mut messages = serde_json::Map::new();
    for t in EventPayload::TYPES {
        let agg = t.aggregate.as_str();
        let id_param = format!("{}Id", camel(agg).to_lowercase());
        let channel_id = format!("{}{}", camel(agg), camel(t.name));
        let message_id = channel_id.clone();
        messages.insert(
            message_id.clone(),
            json!({
                "name": t.type_name,
                "title": t.rust_name,
                "contentType": "application/cloudevents+json",
                "headers": {
                    "type": "object",
                    "properties": {
                        "Content-Type": {"const": "application/cloudevents+json"},
                        "Nats-Msg-Id": {"type": "string", "description": "The CloudEvent id (UUIDv7): JetStream deduplicates retried publishes."},
                        "traceparent": {"type": "string", "description": "W3C Trace Context."}
                    }
                },
                "payload": {
                    "type": "object",
                    "description": "A CloudEvent 1.0 in the JSON event format.",
                    "required": ["specversion", "id", "source", "type", "data"],
                    "properties": {
                        "specversion": {"const": "1.0"},
                        "id": {"type": "string", "format": "uuid"},
                        "source": {"type": "string", "pattern": "^/imagelib/"},
                        "type": {"const": t.type_name},
                        "subject": {"type": "string"},
                        "time": {"type": "string", "format": "date-time"},
                        "datacontenttype": {"const": "application/json"},
                        "dataschema": {"const": schema_uri(t.type_name)},
                        "traceparent": {"type": "string"},
                        "actor": {"type": "string"},
                        "data": {"$ref": format!("./schemas/{}", schema_file_name(t))}
                    }
                },
                "bindings": {"nats": {"bindingVersion": "0.1.0"}}
            }),
        );
        channels.insert(
            channel_id.clone(),
            json!({
                "address": format!("{{prefix}}.{agg}.{{{id_param}}}.{}", t.name),
                "description": format!("`{}` events (stream IMAGELIB).", t.type_name),
                "messages": {message_id.clone(): {"$ref": format!("#/components/messages/{message_id}")}},
                "parameters": {
                    "prefix": {"default": "imagelib", "description": "IMAGELIB_SUBJECT_PREFIX"},
                    id_param.clone(): {"description": format!("The {agg} aggregate id (a UUID).")}
                }
            }),
        );
        operations.insert(
            format!("on{channel_id}"),
            json!({
                "action": "receive",
                "channel": {"$ref": format!("#/channels/{channel_id}")},
                "messages": [{"$ref": format!("#/channels/{channel_id}/messages/{message_id}")}]
            }),
        );
    }
    channels.insert(
        "deadLetters".into(),
        json!({
            "address": "{prefix}.dlq.{consumer}",
            "description": "Messages a consumer could not parse, unchanged, with `Imagelib-Dlq-Consumer`, `Imagelib-Dlq-Subject`, `Imagelib-Dlq-Sequence` and `Imagelib-Dlq-Error` headers.",
            "parameters": {
                "prefix": {"default": "imagelib"},
                "consumer": {"description": "The durable consumer's name."}
            }
        }),
    );
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "imagelib events",
            "version": "1.0.0",
            "description": "The imagelib event contract: CloudEvents 1.0 on NATS JetStream, stream IMAGELIB, subjects `<prefix>.<aggregate>.<aggregate-id>.<event>`. Generated from the Rust types in `events/`; do not edit."
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "local": {"host": "127.0.0.1:4222", "protocol": "nats", "description": "IMAGELIB_NATS_URL"}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages}
    })
}

fn asyncapi_yaml() -> String {
    let header = "# Generated by `UPDATE_SCHEMAS=1 cargo test -p imagelib-events --test schemas`; do not edit.\n";
    format!(
        "{header}{}",
        serde_norway::to_string(&asyncapi()).unwrap_or_default()
    )
}
