//! The CloudEvents 1.0 envelope around an [`EventPayload`].
//!
//! `cloudevents-sdk` supplies the event model and its JSON event format; this module maps
//! it to and from our typed payloads and our attribute conventions (`source`,
//! `dataschema`, the `traceparent` and `actor` extensions).

use chrono::{DateTime, Utc};
use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesReader, Data};

use crate::event::{EventPayload, PayloadError};
use crate::ids::EventId;
use crate::trace::TraceParent;

/// The base of every `dataschema` URI; the file name is the event type.
pub const SCHEMA_BASE: &str = "https://imagelib.dev/schemas/events/";

/// The `dataschema` URI of an event type.
pub fn schema_uri(type_name: &str) -> String {
    format!("{SCHEMA_BASE}{type_name}.json")
}

/// One fact with its CloudEvent attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: EventId,
    /// `/imagelib/<service>`.
    pub source: String,
    pub time: DateTime<Utc>,
    /// Who caused it: a token's subject, `system:<service>`, or a webhook.
    pub actor: Option<String>,
    pub traceparent: Option<TraceParent>,
    pub payload: EventPayload,
}

/// Why a message is not an event of the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "not a CloudEvent: no `application/cloudevents` content type and no `ce-specversion` header"
    )]
    NotACloudEvent,
    #[error("structured CloudEvent is not valid JSON: {0}")]
    Json(String),
    #[error(
        "invalid CloudEvent attribute name `{0}`: names are 1 to 20 lower-case ASCII letters or digits"
    )]
    AttributeName(String),
    #[error("CloudEvent attribute `{name}`: {message}")]
    Attribute { name: String, message: String },
    #[error("unsupported CloudEvents specversion `{0}` (1.0 expected)")]
    SpecVersion(String),
    #[error("CloudEvent has no data")]
    NoData,
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

impl Envelope {
    /// A new fact from `source` (a service name such as `registry-registry`).
    pub fn new(service: &str, payload: impl Into<EventPayload>) -> Self {
        Envelope {
            id: EventId::new(),
            source: format!("/imagelib/{service}"),
            time: Utc::now(),
            actor: None,
            traceparent: None,
            payload: payload.into(),
        }
    }

    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn with_traceparent(mut self, tp: Option<TraceParent>) -> Self {
        self.traceparent = tp;
        self
    }

    pub fn event_type(&self) -> &'static str {
        self.payload.event_type()
    }

    /// The CloudEvent of this envelope.
    pub fn to_cloudevent(&self) -> cloudevents::Event {
        let type_name = self.payload.event_type();
        let mut ev = cloudevents::Event::default();
        // Set through the writer API: the builder would re-parse URIs we build ourselves.
        {
            use cloudevents::AttributesWriter;
            ev.set_id(self.id.to_string());
            ev.set_type(type_name);
            ev.set_subject(Some(self.payload.subject()));
            ev.set_time(Some(self.time));
            ev.set_source(self.source.clone());
            ev.set_data("application/json", self.payload.to_json());
            ev.set_dataschema(url::Url::parse(&schema_uri(type_name)).ok());
        }
        if let Some(tp) = &self.traceparent {
            ev.set_extension("traceparent", tp.to_string());
        }
        if let Some(actor) = &self.actor {
            ev.set_extension("actor", actor.as_str());
        }
        ev
    }

    /// The envelope of a CloudEvent of the contract.
    pub fn from_cloudevent(ev: &cloudevents::Event) -> Result<Self, DecodeError> {
        let id = event_id(ev)?;
        let data = match ev.data() {
            Some(Data::Json(v)) => v.clone(),
            Some(Data::String(s)) => {
                serde_json::from_str(s).map_err(|e| DecodeError::Json(e.to_string()))?
            }
            Some(Data::Binary(b)) => {
                serde_json::from_slice(b).map_err(|e| DecodeError::Json(e.to_string()))?
            }
            None => return Err(DecodeError::NoData),
        };
        if let Some(ct) = ev.datacontenttype()
            && !is_json_content_type(ct)
        {
            return Err(DecodeError::Attribute {
                name: "datacontenttype".into(),
                message: format!("`{ct}` is not JSON"),
            });
        }
        let payload = EventPayload::decode(ev.ty(), data)?;
        Self::with_payload(ev, id, payload)
    }

    /// The envelope of a CloudEvent whose data is the JSON text `json` (binary mode, the
    /// bus's own): decoded once, straight into its event type.
    pub(crate) fn from_cloudevent_json(
        ev: &cloudevents::Event,
        json: &[u8],
    ) -> Result<Self, DecodeError> {
        let id = event_id(ev)?;
        let payload = EventPayload::decode_slice(ev.ty(), json).map_err(|e| match e {
            Ok(syntax) => DecodeError::Json(syntax.to_string()),
            Err(payload) => DecodeError::Payload(payload),
        })?;
        Self::with_payload(ev, id, payload)
    }

    fn with_payload(
        ev: &cloudevents::Event,
        id: EventId,
        payload: EventPayload,
    ) -> Result<Self, DecodeError> {
        let traceparent =
            match ev.extension("traceparent") {
                Some(v) => Some(v.to_string().parse::<TraceParent>().map_err(|e| {
                    DecodeError::Attribute {
                        name: "traceparent".into(),
                        message: e.to_string(),
                    }
                })?),
                None => None,
            };
        let actor = ev.extension("actor").map(extension_string);
        Ok(Envelope {
            id,
            source: ev.source().to_string(),
            time: ev.time().copied().unwrap_or_else(Utc::now),
            actor,
            traceparent,
            payload,
        })
    }
}

fn event_id(ev: &cloudevents::Event) -> Result<EventId, DecodeError> {
    ev.id()
        .parse::<EventId>()
        .map_err(|e| DecodeError::Attribute {
            name: "id".into(),
            message: format!("not a UUID: {e}"),
        })
}

fn extension_string(v: &ExtensionValue) -> String {
    match v {
        ExtensionValue::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn is_json_content_type(ct: &str) -> bool {
    let base = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    base == "application/json" || base.ends_with("+json") || base == "text/json"
}
