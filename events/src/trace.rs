//! W3C Trace Context `traceparent`, carried in NATS headers and the CloudEvent
//! distributed-tracing extension, so one trace spans an HTTP command and every consumer
//! of the events it causes.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// How the running process reads and sets trace context on `tracing` spans. The events
/// crate stays free of a telemetry stack: the platform installs this at start-up (with
/// OpenTelemetry); without it, events carry the context they were given.
#[derive(Debug, Clone, Copy)]
pub struct Propagator {
    /// The context of the current span, if it belongs to a trace.
    pub current: fn() -> Option<TraceParent>,
    /// Make `span` a child of a remote context.
    pub set_parent: fn(&tracing::Span, &TraceParent),
}

static PROPAGATOR: OnceLock<Propagator> = OnceLock::new();

/// Install the process's propagator (once; later calls are ignored).
pub fn install(p: Propagator) {
    let _ = PROPAGATOR.set(p);
}

/// The trace context of the current span.
pub fn current() -> Option<TraceParent> {
    PROPAGATOR.get().and_then(|p| (p.current)())
}

/// Continue the trace `tp` in `span`.
pub fn set_parent(span: &tracing::Span, tp: &TraceParent) {
    if let Some(p) = PROPAGATOR.get() {
        (p.set_parent)(span, tp);
    }
}

/// A parsed `traceparent` (version `00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent `{0}`: expected `00-<32 hex>-<16 hex>-<2 hex>` with non-zero ids")]
pub struct TraceParentError(pub String);

impl TraceParent {
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn parent_id_hex(&self) -> String {
        hex(&self.parent_id)
    }

    /// A new root context (used where no span is active, e.g. a scheduled scan).
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        rand::fill(&mut trace_id);
        rand::fill(&mut parent_id);
        trace_id[0] |= 1;
        parent_id[0] |= 1;
        TraceParent {
            trace_id,
            parent_id,
            flags: 1,
        }
    }
}

fn hex(b: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TraceParentError(s.chars().take(64).collect());
        let mut parts = s.trim().split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        // Version 00 has exactly four fields; later versions may append more.
        if version != "00" && (version.len() != 2 || version == "ff") {
            return Err(err());
        }
        if version == "00" && parts.next().is_some() {
            return Err(err());
        }
        let trace_id = unhex::<16>(trace).ok_or_else(err)?;
        let parent_id = unhex::<8>(parent).ok_or_else(err)?;
        let [flags] = unhex::<1>(flags).ok_or_else(err)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return Err(err());
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent_id),
            self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_w3c_example() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp: TraceParent = s.parse().unwrap();
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), s);
    }

    #[test]
    fn refuses_bad_values() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad}");
        }
        let root = TraceParent::new_root();
        assert_eq!(root.to_string().parse::<TraceParent>().unwrap(), root);
    }
}
