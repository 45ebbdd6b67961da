//! Every event round-trips through both CloudEvents content modes of the NATS binding.

mod common;

use imagelib_events::binding::{
    decode_cloudevent, decode_envelope, encode_binary, encode_structured,
};
use imagelib_events::{Envelope, EventPayload};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn structured_mode_round_trips(env in common::envelope()) {
        let m = encode_structured(&env);
        let back = decode_envelope(Some(&m.headers), &m.payload).unwrap();
        prop_assert_eq!(back, env);
    }

    #[test]
    fn binary_mode_round_trips(env in common::envelope()) {
        let m = encode_binary(&env);
        let back = decode_envelope(Some(&m.headers), &m.payload).unwrap();
        prop_assert_eq!(back, env);
    }

    /// A binary-mode body is decoded straight into its event type; the CloudEvents SDK's
    /// event (the body read into a `serde_json::Value` first) must give the same envelope,
    /// and the same refusal for a damaged body.
    #[test]
    fn binary_mode_decodes_as_through_the_sdk_event(
        env in common::envelope(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let m = encode_binary(&env);
        for body in damaged(&m.payload, cut, flip, byte) {
            let direct = decode_envelope(Some(&m.headers), &body);
            let sdk = decode_cloudevent(Some(&m.headers), &body)
                .and_then(|ce| Envelope::from_cloudevent(&ce));
            match (direct, sdk) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "direct {a:?}, through the SDK {b:?}"),
            }
        }
    }

    /// A structured-mode event (every imagelib producer's) is read as its attributes and
    /// the text of its data, decoded straight into its type; the SDK's event must give the
    /// same envelope, and the same refusal for a damaged event, attributes included.
    #[test]
    fn structured_mode_decodes_as_through_the_sdk_event(
        env in common::envelope(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        extension in prop_oneof![
            Just(None),
            Just(Some(r#""actor":true"#)),
            Just(Some(r#""actor":7"#)),
            Just(Some(r#""Bad-Name":"x""#)),
            Just(Some(r#""specversion":"0.3""#)),
            Just(Some(r#""data_base64":"e30=""#)),
            Just(Some(r#""datacontenttype":"text/plain""#)),
            Just(Some(r#""time":"not a time""#)),
            Just(Some(r#""type":"io.imagelib.nothing.v1""#)),
        ],
    ) {
        let m = encode_structured(&env);
        let mut bodies = damaged(&m.payload, cut, flip, byte);
        if let Some(member) = extension {
            let mut added = m.payload.to_vec();
            added.pop();
            added.extend_from_slice(format!(",{member}}}").as_bytes());
            bodies.push(added);
        }
        for body in bodies {
            let direct = decode_envelope(Some(&m.headers), &body);
            let sdk = decode_cloudevent(Some(&m.headers), &body)
                .and_then(|ce| Envelope::from_cloudevent(&ce));
            match (direct, sdk) {
                (Ok(mut a), Ok(b)) => {
                    // An event without a time is given the time it is read at (the SDK's
                    // builder does so on both paths): read twice, a few µs apart.
                    let untimed = !String::from_utf8_lossy(&body).contains("\"time\":");
                    if untimed && (a.time - b.time).num_seconds().abs() < 5 {
                        a.time = b.time;
                    }
                    prop_assert_eq!(a, b)
                }
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "direct {a:?}, through the SDK {b:?}"),
            }
        }
    }

    #[test]
    fn header_values_are_printable_ascii(env in common::envelope()) {
        let m = encode_binary(&env);
        for (_, values) in m.headers.iter() {
            for v in values {
                prop_assert!(v.as_str().bytes().all(|b| (0x21..=0x7e).contains(&b)), "{}", v.as_str());
            }
        }
    }
}

/// A body as sent, cut short, and with one byte replaced.
fn damaged(
    body: &[u8],
    cut: prop::sample::Index,
    flip: prop::sample::Index,
    byte: u8,
) -> Vec<Vec<u8>> {
    let mut short = body.to_vec();
    short.truncate(cut.index(body.len().max(1)));
    let mut flipped = body.to_vec();
    if !flipped.is_empty() {
        let i = flip.index(flipped.len());
        flipped[i] = byte;
    }
    vec![body.to_vec(), short, flipped]
}

#[test]
fn every_type_is_generated() {
    // The strategy must cover the whole contract: sample until every type was seen.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = common::payload();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20_000 {
        let v = strategy.new_tree(&mut runner).unwrap().current();
        seen.insert(v.event_type());
        if seen.len() == EventPayload::TYPES.len() {
            break;
        }
    }
    let all: std::collections::BTreeSet<_> =
        EventPayload::TYPES.iter().map(|t| t.type_name).collect();
    assert_eq!(seen, all);
}

/// Content types the SDK's case-sensitive prefix rule and the envelope's rule judge
/// differently: the direct structured-mode decoding must agree with the SDK on each.
#[test]
fn structured_content_types_are_judged_as_by_the_sdk() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let env = common::envelope().new_tree(&mut runner).unwrap().current();
    let m = encode_structured(&env);
    let text = std::str::from_utf8(&m.payload).unwrap();
    assert!(
        text.contains(r#""datacontenttype":"application/json""#),
        "{text}"
    );
    for ct in [
        "application/json",
        "applicAtion/json",
        "Application/JSON",
        "application/jsonx",
        "application/json; charset=utf-8",
        "text/json",
        "TEXT/JSON",
        "application/cloudevents+json",
        "application/x+JSON",
        "text/plain",
    ] {
        let body = text.replace(
            r#""datacontenttype":"application/json""#,
            &format!(r#""datacontenttype":"{ct}""#),
        );
        let direct = decode_envelope(Some(&m.headers), body.as_bytes());
        let sdk = decode_cloudevent(Some(&m.headers), body.as_bytes())
            .and_then(|ce| Envelope::from_cloudevent(&ce));
        match (direct, sdk) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{ct}"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("{ct}: direct {a:?}, through the SDK {b:?}"),
        }
    }
}
