//! The tag events that carry their image details among their own members are read by hand
//! (`src/flatten.rs`); here they must read exactly as `#[serde(flatten)]` reads them, on
//! every generated event and on damaged ones (a member missing, repeated, `null`, of the
//! wrong type, unknown, or the text cut short).

mod common;

use imagelib_events::event::{TagDiscovered, TagMoved};
use imagelib_events::model::ImageDetails;
use imagelib_events::{Digest, EventPayload, RegistryId, RepositoryName, Tag};
use proptest::prelude::*;
use serde::Deserialize;

/// What the derive reads, the oracle.
#[derive(Debug, Deserialize)]
struct DiscoveredByDerive {
    registry_id: RegistryId,
    repository: RepositoryName,
    tag: Tag,
    digest: Digest,
    #[serde(flatten)]
    details: ImageDetails,
}

#[derive(Debug, Deserialize)]
struct MovedByDerive {
    registry_id: RegistryId,
    repository: RepositoryName,
    tag: Tag,
    old_digest: Digest,
    new_digest: Digest,
    #[serde(flatten)]
    details: ImageDetails,
}

fn discovered(d: DiscoveredByDerive) -> TagDiscovered {
    TagDiscovered {
        registry_id: d.registry_id,
        repository: d.repository,
        tag: d.tag,
        digest: d.digest,
        details: d.details,
    }
}

fn moved(d: MovedByDerive) -> TagMoved {
    TagMoved {
        registry_id: d.registry_id,
        repository: d.repository,
        tag: d.tag,
        old_digest: d.old_digest,
        new_digest: d.new_digest,
        details: d.details,
    }
}

/// Both ways of reading `text`, from the text and from a `serde_json::Value`: the same
/// event, or both refusing.
fn same_reading(text: &[u8]) -> Result<(), TestCaseError> {
    let value: Option<serde_json::Value> = serde_json::from_slice(text).ok();
    let pairs = [
        (
            serde_json::from_slice::<TagDiscovered>(text).map(EventPayload::TagDiscovered),
            serde_json::from_slice::<DiscoveredByDerive>(text)
                .map(|d| EventPayload::TagDiscovered(discovered(d))),
        ),
        (
            serde_json::from_slice::<TagMoved>(text).map(EventPayload::TagMoved),
            serde_json::from_slice::<MovedByDerive>(text).map(|d| EventPayload::TagMoved(moved(d))),
        ),
    ];
    for (by_hand, by_derive) in pairs {
        match (by_hand, by_derive) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "by hand {a:?}, by the derive {b:?}"),
        }
    }
    if let Some(value) = value {
        let by_hand = serde_json::from_value::<TagDiscovered>(value.clone()).ok();
        let by_derive = serde_json::from_value::<DiscoveredByDerive>(value.clone())
            .ok()
            .map(discovered);
        prop_assert_eq!(by_hand, by_derive);
        let by_hand = serde_json::from_value::<TagMoved>(value.clone()).ok();
        let by_derive = serde_json::from_value::<MovedByDerive>(value)
            .ok()
            .map(moved);
        prop_assert_eq!(by_hand, by_derive);
    }
    Ok(())
}

/// The object's members, one of them changed as `how` says.
fn damaged(object: &serde_json::Map<String, serde_json::Value>, at: usize, how: u8) -> Vec<u8> {
    let members: Vec<(&String, &serde_json::Value)> = object.iter().collect();
    let mut text = String::from("{");
    let mut first = true;
    let mut put = |text: &mut String, k: &str, v: &str| {
        if !std::mem::take(&mut first) {
            text.push(',');
        }
        text.push_str(&serde_json::to_string(k).unwrap_or_default());
        text.push(':');
        text.push_str(v);
    };
    for (i, (k, v)) in members.iter().enumerate() {
        let v = serde_json::to_string(v).unwrap_or_default();
        if i != at % members.len().max(1) {
            put(&mut text, k, &v);
            continue;
        }
        match how % 6 {
            0 => {}
            1 => {
                put(&mut text, k, &v);
                put(&mut text, k, &v);
            }
            2 => put(&mut text, k, "null"),
            3 => put(&mut text, k, "[1,{\"a\":2}]"),
            4 => {
                put(&mut text, k, &v);
                put(&mut text, "not_a_member", "{\"x\":[1,2,\"y\"]}");
            }
            _ => put(&mut text, k, "\"a string\""),
        }
    }
    text.push('}');
    text.into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn tag_events_read_as_the_derive_reads_them(
        env in common::envelope(),
        at in any::<usize>(),
        how in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let data = env.payload.to_json();
        let serde_json::Value::Object(object) = &data else {
            return Ok(());
        };
        let text = serde_json::to_vec(&data).unwrap_or_default();
        same_reading(&text)?;
        same_reading(&damaged(object, at, how))?;
        same_reading(&text[..cut.index(text.len().max(1))])?;
    }
}

#[test]
fn the_tag_events_are_generated_intact_and_read_back() {
    // The strategy must give the two events read by hand, and they must read back.
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut discovered, mut moved) = (0, 0);
    for _ in 0..2000 {
        let payload = common::payload().new_tree(&mut runner).unwrap().current();
        let text = serde_json::to_vec(&payload.to_json()).unwrap_or_default();
        match payload {
            EventPayload::TagDiscovered(e) => {
                discovered += 1;
                assert_eq!(serde_json::from_slice::<TagDiscovered>(&text).unwrap(), e);
            }
            EventPayload::TagMoved(e) => {
                moved += 1;
                assert_eq!(serde_json::from_slice::<TagMoved>(&text).unwrap(), e);
            }
            _ => {}
        }
    }
    assert!(
        discovered > 0 && moved > 0,
        "{discovered} discovered, {moved} moved"
    );
}
