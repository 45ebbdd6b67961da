//! Reading the tag events that carry [`ImageDetails`] among their own members.
//!
//! Why by hand: `#[serde(flatten)]` reads such an event by first buffering every member it
//! does not know into serde's private `Content` (each string copied, each map and list
//! rebuilt) and then reading the details from that buffer. The tag events are nearly every
//! event of the stream, and that buffering was about a fifth of what a consumer spent
//! decoding one. Here each member is read once, straight into its field, with what the
//! derived code does otherwise: a missing required member or a repeated member is an
//! error, a member nobody knows is skipped, `null` is `None` for an optional member. The
//! events' `Serialize` and schema stay derived (`tests/flatten.rs` holds the two ways of
//! reading to the same answer on every generated event, intact or damaged).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, de::Error as _};

use crate::event::{TagDiscovered, TagMoved};
use crate::model::ImageDetails;

/// A member's name, borrowed from the input when it can be.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_identifier(Visit)
    }
}

/// The next value into `slot`, which must still be empty.
fn member<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    slot: &mut Option<T>,
    name: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(A::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

fn required<T, E: de::Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
    slot.ok_or_else(|| E::missing_field(name))
}

/// [`ImageDetails`]' members as they come.
#[derive(Default)]
struct DetailsMembers {
    media_type: Option<String>,
    artifact_type: Option<Option<String>>,
    platforms: Option<Vec<crate::model::Platform>>,
    size: Option<u64>,
    created: Option<Option<chrono::DateTime<chrono::Utc>>>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    annotations: Option<std::collections::BTreeMap<String, String>>,
    kind: Option<crate::model::ImageKind>,
    model_type: Option<Option<crate::model::ModelType>>,
    extensions: Option<Vec<crate::model::PostgresExtension>>,
    referrers: Option<Vec<crate::model::Referrer>>,
}

impl DetailsMembers {
    /// Take the value of `key` when it is one of the details' members (`false` if not).
    fn take<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        match key {
            "media_type" => member(&mut self.media_type, "media_type", map)?,
            "artifact_type" => member(&mut self.artifact_type, "artifact_type", map)?,
            "platforms" => member(&mut self.platforms, "platforms", map)?,
            "size" => member(&mut self.size, "size", map)?,
            "created" => member(&mut self.created, "created", map)?,
            "labels" => member(&mut self.labels, "labels", map)?,
            "annotations" => member(&mut self.annotations, "annotations", map)?,
            "kind" => member(&mut self.kind, "kind", map)?,
            "model_type" => member(&mut self.model_type, "model_type", map)?,
            "extensions" => member(&mut self.extensions, "extensions", map)?,
            "referrers" => member(&mut self.referrers, "referrers", map)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn finish<E: de::Error>(self) -> Result<ImageDetails, E> {
        Ok(ImageDetails {
            media_type: required(self.media_type, "media_type")?,
            artifact_type: self.artifact_type.flatten(),
            platforms: self.platforms.unwrap_or_default(),
            size: required(self.size, "size")?,
            created: self.created.flatten(),
            labels: self.labels.unwrap_or_default(),
            annotations: self.annotations.unwrap_or_default(),
            kind: required(self.kind, "kind")?,
            model_type: self.model_type.flatten(),
            extensions: self.extensions.unwrap_or_default(),
            referrers: self.referrers.unwrap_or_default(),
        })
    }
}

/// Read a map whose members are the event's own (`own` takes those, `false` for the
/// others) and the details'; members of neither are skipped.
fn read_with_details<'de, A: MapAccess<'de>>(
    mut map: A,
    mut own: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<ImageDetails, A::Error> {
    let mut details = DetailsMembers::default();
    while let Some(Key(key)) = map.next_key()? {
        if !own(&key, &mut map)? && !details.take(&key, &mut map)? {
            map.next_value::<IgnoredAny>()?;
        }
    }
    details.finish()
}

/// `Deserialize` for an event made of its own members (named here) and the details.
macro_rules! with_details {
    ($event:ident { $($member:ident),+ }) => {
        impl<'de> Deserialize<'de> for $event {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl<'de> Visitor<'de> for Visit {
                    type Value = $event;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("struct ", stringify!($event)))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$event, A::Error> {
                        $( let mut $member = None; )+
                        let details = read_with_details(map, |key, map| {
                            match key {
                                $( stringify!($member) => member(&mut $member, stringify!($member), map)?, )+
                                _ => return Ok(false),
                            }
                            Ok(true)
                        })?;
                        Ok($event {
                            $( $member: required($member, stringify!($member))?, )+
                            details,
                        })
                    }
                }
                d.deserialize_map(Visit)
            }
        }
    };
}

with_details!(TagDiscovered {
    registry_id,
    repository,
    tag,
    digest
});
with_details!(TagMoved {
    registry_id,
    repository,
    tag,
    old_digest,
    new_digest
});
