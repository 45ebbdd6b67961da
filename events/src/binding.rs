//! The CloudEvents NATS protocol binding, over `async-nats` headers.
//!
//! Producers publish in *structured* mode (`Content-Type: application/cloudevents+json`,
//! the whole event as JSON in the payload). Consumers also accept *binary* mode, where
//! attributes travel as `ce-<name>` headers (percent-encoded) and the payload is the data,
//! because outside producers are allowed to use either. `cloudevents-sdk`'s own NATS
//! binding is structured-only and built on the old synchronous client, hence this module.

use async_nats::HeaderMap;
use bytes::Bytes;
use cloudevents::{AttributesReader, Data, EventBuilder, EventBuilderV10};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::envelope::{DecodeError, Envelope, is_json_content_type};

pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// Header names used on every message we publish.
pub const HEADER_CONTENT_TYPE: &str = "Content-Type";
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
pub const HEADER_TRACEPARENT: &str = "traceparent";

/// What the CloudEvents HTTP binding percent-encodes in header values; the NATS binding
/// follows it: controls, space, `"`, `%` and everything outside printable ASCII.
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%').add(0x7f);

/// Attribute names: lower-case ASCII letters and digits (CloudEvents 1.0, "Attribute Naming
/// Convention"); the spec says SHOULD NOT exceed 20 characters, which we enforce.
pub fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A message body and headers, ready for `async-nats`.
#[derive(Debug, Clone)]
pub struct EncodedMessage {
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// Encode an envelope in structured mode: the mode every imagelib producer uses.
pub fn encode_structured(envelope: &Envelope) -> EncodedMessage {
    let ce = envelope.to_cloudevent();
    // `cloudevents::Event` serialises to the JSON event format; it has no fallible parts.
    let payload = serde_json::to_vec(&ce).unwrap_or_default();
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE);
    headers.insert(HEADER_MSG_ID, envelope.id.to_string().as_str());
    if let Some(tp) = &envelope.traceparent {
        headers.insert(HEADER_TRACEPARENT, tp.to_string().as_str());
    }
    EncodedMessage {
        headers,
        payload: Bytes::from(payload),
    }
}

/// Encode an envelope in binary mode (`ce-` headers, data as the payload). Used by
/// `imagelib events publish --binary` and by the interoperability tests.
pub fn encode_binary(envelope: &Envelope) -> EncodedMessage {
    let ce = envelope.to_cloudevent();
    let mut headers = HeaderMap::new();
    for (name, value) in ce.iter() {
        if name == "datacontenttype" {
            headers.insert(HEADER_CONTENT_TYPE, value.to_string().as_str());
            continue;
        }
        let encoded = utf8_percent_encode(&value.to_string(), HEADER_VALUE).to_string();
        headers.insert(format!("ce-{name}").as_str(), encoded.as_str());
    }
    headers.insert(HEADER_MSG_ID, envelope.id.to_string().as_str());
    if let Some(tp) = &envelope.traceparent {
        headers.insert(HEADER_TRACEPARENT, tp.to_string().as_str());
    }
    let payload = serde_json::to_vec(&envelope.payload.to_json()).unwrap_or_default();
    EncodedMessage {
        headers,
        payload: Bytes::from(payload),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| AsRef::<str>::as_ref(k).eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(|v| v.as_str())
}

/// Decode a NATS message (either mode) into a CloudEvent, checking attribute names.
pub fn decode_cloudevent(
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<cloudevents::Event, DecodeError> {
    if is_structured(headers) {
        return decode_structured(payload);
    }
    match headers {
        Some(h) if header(h, "ce-specversion").is_some() => decode_binary(h, payload),
        // No headers at all: accept a structured JSON body (a client that could not set
        // headers), recognised by its `specversion` member.
        _ if payload.first() == Some(&b'{') => decode_structured(payload),
        _ => Err(DecodeError::NotACloudEvent),
    }
}

/// Structured mode: the content type says the body is the whole CloudEvent.
fn is_structured(headers: Option<&HeaderMap>) -> bool {
    headers
        .and_then(|h| header(h, HEADER_CONTENT_TYPE))
        .map(|ct| {
            const PREFIX: &str = "application/cloudevents";
            ct.trim_start()
                .as_bytes()
                .get(..PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX.as_bytes()))
        })
        .unwrap_or(false)
}

fn decode_structured(payload: &[u8]) -> Result<cloudevents::Event, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))?;
    let serde_json::Value::Object(map) = &value else {
        return Err(DecodeError::Json("the event is not a JSON object".into()));
    };
    match map.get("specversion").and_then(|v| v.as_str()) {
        Some("1.0") => {}
        Some(other) => return Err(DecodeError::SpecVersion(other.to_owned())),
        None => {
            return Err(DecodeError::Attribute {
                name: "specversion".into(),
                message: "missing".into(),
            });
        }
    }
    for key in map.keys() {
        if key != "data" && key != "data_base64" && !valid_attribute_name(key) {
            return Err(DecodeError::AttributeName(key.clone()));
        }
    }
    serde_json::from_value(value).map_err(|e| DecodeError::Json(e.to_string()))
}

/// A structured-mode event read as its attributes and the text of its data.
struct StructuredParts<'a> {
    attributes: Vec<(String, serde_json::Value)>,
    data: Option<&'a serde_json::value::RawValue>,
    base64: bool,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for StructuredParts<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = StructuredParts<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a CloudEvent as a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut parts = StructuredParts {
                    attributes: Vec::with_capacity(8),
                    data: None,
                    base64: false,
                };
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "data" => parts.data = Some(map.next_value()?),
                        "data_base64" => {
                            parts.base64 = true;
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                        _ => parts.attributes.push((key.into_owned(), map.next_value()?)),
                    }
                }
                Ok(parts)
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// [`decode_envelope`] of a structured-mode body without the SDK's event: `None` when the
/// body is one the SDK must judge (anything but string attributes and JSON data given
/// once each).
fn decode_structured_direct(payload: &[u8]) -> Option<Result<Envelope, DecodeError>> {
    let parts: StructuredParts<'_> = serde_json::from_slice(payload).ok()?;
    let data = parts.data?;
    if parts.base64 {
        return None;
    }
    let mut seen = std::collections::HashSet::with_capacity(parts.attributes.len());
    let mut spec = None;
    let mut builder = EventBuilderV10::new();
    let (mut content_type, mut schema) = (None, None);
    for (name, value) in &parts.attributes {
        let serde_json::Value::String(value) = value else {
            return None;
        };
        if !seen.insert(name.as_str()) {
            return None;
        }
        if !valid_attribute_name(name) {
            return Some(Err(DecodeError::AttributeName(name.clone())));
        }
        builder = match name.as_str() {
            "specversion" => {
                spec = Some(value.as_str());
                builder
            }
            "id" => builder.id(value.as_str()),
            "source" => builder.source(value.as_str()),
            "type" => builder.ty(value.as_str()),
            "subject" => builder.subject(value.as_str()),
            "time" => builder.time(
                chrono::DateTime::parse_from_rfc3339(value)
                    .ok()?
                    .with_timezone(&chrono::Utc),
            ),
            "datacontenttype" => {
                content_type = Some(value.as_str());
                builder
            }
            "dataschema" => {
                schema = Some(value.as_str());
                builder
            }
            ext => builder.extension(ext, value.as_str()),
        };
    }
    match spec {
        Some("1.0") => {}
        Some(other) => return Some(Err(DecodeError::SpecVersion(other.to_owned()))),
        None => return None,
    }
    let content_type = content_type.unwrap_or("application/json");
    // The SDK reads `data` as JSON by its own, case-sensitive prefix rule; where it and
    // ours disagree ("Application/JSON", "application/jsonx") the SDK judges the event.
    if !is_json_content_type(content_type) || !sdk_reads_data_as_json(content_type) {
        return None;
    }
    let empty = Data::Binary(Vec::new());
    builder = match schema {
        Some(s) => match schema_url(s) {
            Some(url) => builder.data_with_schema(content_type, url, empty),
            None => builder.data_with_schema(content_type, s, empty),
        },
        None => builder.data(content_type, empty),
    };
    let ev = builder.build().ok()?;
    Some(Envelope::from_cloudevent_json(&ev, data.get().as_bytes()))
}

/// `dataschema` as a URL, kept per thread for the last text read: a stream's events name a
/// handful of schemas, and parsing the URL anew was a twentieth of decoding an event.
/// `None` when it is not a URL (the builder then reports it as the SDK does).
fn schema_url(text: &str) -> Option<url::Url> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<url::Url>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some(url) = last.as_ref().filter(|u| u.as_str() == text) {
            return Some(url.clone());
        }
        let url = url::Url::parse(text).ok()?;
        *last = Some(url.clone());
        Some(url)
    })
}

/// The rule by which `cloudevents-sdk` 0.9 decodes a structured event's `data` as JSON.
fn sdk_reads_data_as_json(ct: &str) -> bool {
    ct.starts_with("application/json") || ct.starts_with("text/json") || ct.ends_with("+json")
}

fn decode_binary(headers: &HeaderMap, payload: &[u8]) -> Result<cloudevents::Event, DecodeError> {
    decode_binary_with(headers, payload, true).map(|(ev, _)| ev)
}

/// A binary-mode event; with `parse_json` false a JSON body is left to the caller (the
/// event then carries empty data of its content type), which the `bool` says.
fn decode_binary_with(
    headers: &HeaderMap,
    payload: &[u8],
    parse_json: bool,
) -> Result<(cloudevents::Event, bool), DecodeError> {
    let mut builder = EventBuilderV10::new();
    let mut spec_ok = false;
    for (name, values) in headers.iter() {
        let lower = AsRef::<str>::as_ref(name).to_ascii_lowercase();
        let Some(attr) = lower.strip_prefix("ce-") else {
            continue;
        };
        if !valid_attribute_name(attr) {
            return Err(DecodeError::AttributeName(attr.to_owned()));
        }
        let raw = values.first().map(|v| v.as_str()).unwrap_or_default();
        let value = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| DecodeError::Attribute {
                name: attr.to_owned(),
                message: "percent-encoded value is not UTF-8".into(),
            })?
            .into_owned();
        builder = match attr {
            "specversion" => {
                if value != "1.0" {
                    return Err(DecodeError::SpecVersion(value));
                }
                spec_ok = true;
                builder
            }
            "id" => builder.id(value),
            "source" => builder.source(value),
            "type" => builder.ty(value),
            "subject" => builder.subject(value),
            "time" => {
                let t = chrono::DateTime::parse_from_rfc3339(&value).map_err(|e| {
                    DecodeError::Attribute {
                        name: "time".into(),
                        message: e.to_string(),
                    }
                })?;
                builder.time(t.with_timezone(&chrono::Utc))
            }
            // Carried on `Content-Type` in binary mode; accept it as a header too.
            "datacontenttype" | "dataschema" => builder,
            ext => builder.extension(ext, value),
        };
    }
    if !spec_ok {
        return Err(DecodeError::NotACloudEvent);
    }
    let content_type = header(headers, HEADER_CONTENT_TYPE)
        .or_else(|| header(headers, "ce-datacontenttype"))
        .unwrap_or("application/json")
        .to_owned();
    let schema = header(headers, "ce-dataschema")
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned());
    let json = is_json_content_type(&content_type);
    let data = if json && !parse_json {
        Data::Binary(Vec::new())
    } else if json {
        let v: serde_json::Value =
            serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))?;
        Data::Json(v)
    } else {
        Data::Binary(payload.to_vec())
    };
    builder = match schema {
        Some(s) => builder.data_with_schema(content_type, s.as_str(), data),
        None => builder.data(content_type, data),
    };
    let ev = builder.build().map_err(|e| DecodeError::Attribute {
        name: "(required)".into(),
        message: e.to_string(),
    })?;
    Ok((ev, json && !parse_json))
}

/// Decode a NATS message into an envelope of the contract.
pub fn decode_envelope(
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Envelope, DecodeError> {
    // Binary mode with a JSON body (what the bus publishes): the body is read once, into
    // the event type's own struct, not into a `serde_json::Value` first.
    let structured = is_structured(headers);
    if let Some(h) = headers
        && !structured
        && header(h, "ce-specversion").is_some()
    {
        let (ce, json_left) = decode_binary_with(h, payload, false)?;
        return if json_left {
            Envelope::from_cloudevent_json(&ce, payload)
        } else {
            Envelope::from_cloudevent(&ce)
        };
    }
    // Structured mode (what imagelib's producers publish): the attributes read as JSON
    // values, the data left as text and decoded once, straight into its type. Anything
    // unusual (non-string attributes, `data_base64`, a content type that is not JSON) is
    // left to the SDK's decoding below.
    if structured && let Some(decoded) = decode_structured_direct(payload) {
        return decoded;
    }
    let ce = decode_cloudevent(headers, payload)?;
    if ce.specversion().as_str() != "1.0" {
        return Err(DecodeError::SpecVersion(ce.specversion().to_string()));
    }
    Envelope::from_cloudevent(&ce)
}
