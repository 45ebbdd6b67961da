//! Sync now's live progress: server-sent events following the event log from the
//! `sync.requested` sequence (an ordered, ephemeral consumer of the service's bus), one
//! line per sync and tag event of the registry, until the scan that answered the request
//! completes or fails.
//!
//! Bounded: at most [`MAX_LINES`] lines and [`MAX_FOLLOW`] per connection; the consumer is
//! dropped when the client leaves (the response stream is dropped with it). Each message
//! carries an `id` (`<sequence>` or `<sequence>.<sync id>`), so a browser that reconnects
//! (`Last-Event-ID`) resumes after the last line it got.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use imagelib_console::Viewer;
use imagelib_events::bus::Replay;
use imagelib_events::ids::SyncId;
use imagelib_events::{EventPayload, RegistryId};
use serde_json::json;

use super::visible;
use crate::app::Registries;

/// The most lines one connection sends.
pub(crate) const MAX_LINES: usize = 2_000;
/// How long one connection follows the log.
pub(crate) const MAX_FOLLOW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, PartialEq)]
enum Phase {
    Hello,
    Following,
    Done,
}

struct Follow {
    replay: Replay,
    registry: RegistryId,
    requested: u64,
    /// The scan that answers the request, once its `sync.started` is seen.
    sync: Option<SyncId>,
    deadline: tokio::time::Instant,
    lines: usize,
    max_lines: usize,
    phase: Phase,
}

/// One line of progress, as the console's script reads it (`{"line", "state", "href"}`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Msg {
    id: Option<String>,
    line: String,
    state: &'static str,
    href: Option<String>,
    /// How long a browser waits before reconnecting after this message.
    retry: Option<Duration>,
}

fn message(id: Option<String>, line: &str, state: &'static str, href: Option<String>) -> Msg {
    Msg {
        id,
        line: line.to_owned(),
        state,
        href,
        retry: None,
    }
}

impl Msg {
    fn event(self) -> Event {
        let mut data = json!({"line": self.line, "state": self.state});
        if let Some(h) = self.href {
            data["href"] = json!(h);
        }
        let mut event = Event::default().data(data.to_string());
        if let Some(id) = self.id {
            event = event.id(id);
        }
        if let Some(r) = self.retry {
            event = event.retry(r);
        }
        event
    }
}

fn short(digest: &impl std::fmt::Display) -> String {
    let d = digest.to_string();
    d.get(..19).unwrap_or(&d).to_owned()
}

impl Follow {
    fn id(&self, seq: u64) -> String {
        match self.sync {
            Some(s) => format!("{seq}.{s}"),
            None => seq.to_string(),
        }
    }

    /// The line an event of the log gives, if it is one of this registry's scan.
    fn describe(&mut self, seq: u64, event: &EventPayload) -> Option<Msg> {
        let reg = self.registry;
        let repo_href = |repo: &dyn std::fmt::Display| Some(format!("/repositories/{reg}/{repo}"));
        match event {
            EventPayload::SyncRequested(e) if e.registry_id == reg && seq == self.requested => {
                Some(message(
                    Some(self.id(seq)),
                    "Sync requested; waiting for the scanner",
                    "running",
                    None,
                ))
            }
            EventPayload::SyncStarted(e) if e.registry_id == reg && self.sync.is_none() => {
                self.sync = Some(e.sync_id);
                let scope = match &e.repository {
                    Some(r) => format!("Scan started ({r})"),
                    None => "Scan started".to_owned(),
                };
                Some(message(Some(self.id(seq)), &scope, "running", None))
            }
            EventPayload::TagDiscovered(e) if e.registry_id == reg && self.sync.is_some() => {
                Some(message(
                    Some(self.id(seq)),
                    &format!(
                        "Discovered {}:{} ({})",
                        e.repository,
                        e.tag,
                        short(&e.digest)
                    ),
                    "running",
                    repo_href(&e.repository),
                ))
            }
            EventPayload::TagMoved(e) if e.registry_id == reg && self.sync.is_some() => {
                Some(message(
                    Some(self.id(seq)),
                    &format!(
                        "Moved {}:{} from {} to {}",
                        e.repository,
                        e.tag,
                        short(&e.old_digest),
                        short(&e.new_digest)
                    ),
                    "running",
                    repo_href(&e.repository),
                ))
            }
            EventPayload::TagRemoved(e) if e.registry_id == reg && self.sync.is_some() => {
                Some(message(
                    Some(self.id(seq)),
                    &format!("Removed {}:{}", e.repository, e.tag),
                    "running",
                    repo_href(&e.repository),
                ))
            }
            EventPayload::SyncCompleted(e) if e.registry_id == reg => {
                if self.sync != Some(e.sync_id) {
                    return Some(message(
                        Some(self.id(seq)),
                        "An earlier scan finished; waiting for this one",
                        "running",
                        None,
                    ));
                }
                self.phase = Phase::Done;
                let mut line = format!(
                    "Scan completed: {} repositories, {} tags seen, {} added, {} moved, {} removed, {} requests in {}",
                    e.repositories,
                    e.tags_seen,
                    e.added,
                    e.moved,
                    e.removed,
                    e.requests,
                    super::duration_ms(e.duration_ms)
                );
                if e.partial {
                    line.push_str(&format!(
                        " (partial: {} repositories incomplete)",
                        e.incomplete.len() as u64 + e.incomplete_more
                    ));
                }
                if !e.rate_limited.is_empty() {
                    line.push_str(&format!(
                        "; {} deferred after a rate limit",
                        e.rate_limited.len()
                    ));
                }
                Some(message(Some(self.id(seq)), &line, "completed", None))
            }
            EventPayload::SyncFailed(e) if e.registry_id == reg => {
                if self.sync != Some(e.sync_id) {
                    return Some(message(
                        Some(self.id(seq)),
                        &format!(
                            "An earlier scan failed ({}); waiting for this one",
                            e.reason
                        ),
                        "running",
                        None,
                    ));
                }
                self.phase = Phase::Done;
                Some(message(
                    Some(self.id(seq)),
                    &format!("Scan failed: {}", e.reason),
                    "failed",
                    None,
                ))
            }
            EventPayload::RegistryRemoved(e) if e.registry_id == reg => {
                self.phase = Phase::Done;
                Some(message(
                    Some(self.id(seq)),
                    "The registry was removed",
                    "failed",
                    None,
                ))
            }
            _ => None,
        }
    }

    /// The end of a bounded connection: say so, and ask the browser not to come back soon.
    fn stop(&mut self, why: &str) -> Msg {
        self.phase = Phase::Done;
        Msg {
            retry: Some(Duration::from_secs(3600)),
            ..message(
                None,
                &format!("{why}; reload the page to follow again or to see the last scan's result"),
                "stopped",
                None,
            )
        }
    }

    async fn next_event(&mut self) -> Option<Msg> {
        match self.phase {
            Phase::Done => return None,
            Phase::Hello => {
                self.phase = Phase::Following;
                return Some(message(None, "", "running", None));
            }
            Phase::Following => {}
        }
        loop {
            if self.lines >= self.max_lines {
                let why = format!("Stopped following after {} lines", self.max_lines);
                return Some(self.stop(&why));
            }
            let item = match tokio::time::timeout_at(self.deadline, self.replay.next()).await {
                Err(_) => {
                    return Some(self.stop("Stopped following: the time allowed ran out"));
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "following the event log for sync progress failed");
                    // The browser reconnects with the last id it got and resumes.
                    self.phase = Phase::Done;
                    return None;
                }
                Ok(Some(Ok(item))) => item,
            };
            let Ok(env) = item.event else { continue };
            if let Some(event) = self.describe(item.sequence, &env.payload) {
                self.lines += 1;
                return Some(event);
            }
        }
    }
}

fn stream(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(follow, |mut f| async move {
        f.next_event().await.map(|m| (Ok(m.event()), f))
    })
}

/// `Last-Event-ID`: the sequence of the last line the browser got, and the scan it followed.
fn resume(headers: &HeaderMap) -> Option<(u64, Option<SyncId>)> {
    let v = headers.get("last-event-id")?.to_str().ok()?;
    let (seq, sync) = match v.split_once('.') {
        Some((seq, sync)) => (seq, Some(sync.parse().ok()?)),
        None => (v, None),
    };
    Some((seq.parse().ok()?, sync))
}

pub(super) async fn events(
    State(app): State<Arc<Registries>>,
    Path((id, sequence)): Path<(String, String)>,
    headers: HeaderMap,
    v: Viewer,
) -> Response {
    let r = match visible(&app, &v, &id).await {
        Ok(r) => r,
        Err(res) => return res,
    };
    let Ok(requested) = sequence.parse::<u64>() else {
        return super::not_found(&v);
    };
    let resumed = resume(&headers).filter(|(seq, _)| *seq >= requested);
    let start = resumed.map_or(requested, |(seq, _)| seq.saturating_add(1));
    let replay = match app.bus.replay(start, Some(u64::MAX), None).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow the event log for sync progress");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the event log is unavailable",
            )
                .into_response();
        }
    };
    let follow = Follow {
        replay,
        registry: r.id,
        requested,
        sync: resumed.and_then(|(_, s)| s),
        deadline: tokio::time::Instant::now() + MAX_FOLLOW,
        lines: 0,
        max_lines: MAX_LINES,
        phase: if resumed.is_some() {
            Phase::Following
        } else {
            Phase::Hello
        },
    };
    Sse::new(stream(follow))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagelib_events::Envelope;
    use imagelib_events::bus::{EventBus, StreamSettings};
    use imagelib_events::event::{SyncRequested, SyncStarted, TagRemoved};
    use imagelib_events::model::SyncReason;

    /// A stream of this test's own with a sync request, its start and `tags` removed tags
    /// of `registry`; returns the bus and the request's sequence.
    async fn log(
        registry: RegistryId,
        tags: usize,
    ) -> (imagelib_testkit::TestStream, EventBus, u64) {
        let stream = imagelib_testkit::TestStream::new();
        let bus = EventBus::from_client(
            stream.client().await.unwrap(),
            StreamSettings::new(&stream.name, &stream.prefix),
        );
        bus.ensure_stream().await.unwrap();
        let requested = bus
            .publish(&Envelope::new(
                "test",
                SyncRequested {
                    registry_id: registry,
                    repository: None,
                    reason: SyncReason::Manual,
                },
            ))
            .await
            .unwrap()
            .sequence;
        let started = SyncStarted {
            registry_id: registry,
            sync_id: SyncId::new(),
            repository: None,
            reason: SyncReason::Manual,
        };
        bus.publish(&Envelope::new("test", started)).await.unwrap();
        for i in 0..tags {
            let removed = TagRemoved {
                registry_id: registry,
                repository: "a/b".parse().unwrap(),
                tag: format!("t{i}").parse().unwrap(),
                digest: format!("sha256:{}", "0".repeat(64)).parse().unwrap(),
            };
            bus.publish(&Envelope::new("test", removed)).await.unwrap();
        }
        (stream, bus, requested)
    }

    async fn follow(
        bus: &EventBus,
        registry: RegistryId,
        from: u64,
        max_lines: usize,
        for_: Duration,
    ) -> Vec<Msg> {
        let mut f = Follow {
            replay: bus.replay(from, Some(u64::MAX), None).await.unwrap(),
            registry,
            requested: from,
            sync: None,
            deadline: tokio::time::Instant::now() + for_,
            lines: 0,
            max_lines,
            phase: Phase::Hello,
        };
        let mut out = Vec::new();
        while let Some(m) = tokio::time::timeout(Duration::from_secs(30), f.next_event())
            .await
            .expect("a bounded connection ends")
        {
            out.push(m);
        }
        out
    }

    #[tokio::test]
    async fn a_connection_stops_after_its_line_limit() {
        let registry = RegistryId::new();
        let (_stream, bus, requested) = log(registry, 10).await;
        let got = follow(&bus, registry, requested, 4, Duration::from_secs(60)).await;
        // The opening state, four lines, and the stop that asks for a reload.
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[1].line, "Sync requested; waiting for the scanner");
        assert_eq!(got[4].line, "Removed a/b:t1");
        let last = got.last().unwrap();
        assert_eq!(last.state, "stopped");
        assert!(
            last.line.starts_with("Stopped following after 4 lines"),
            "{last:?}"
        );
        assert_eq!(last.retry, Some(Duration::from_secs(3600)));
    }

    #[tokio::test]
    async fn a_connection_stops_when_its_time_runs_out() {
        let registry = RegistryId::new();
        let (_stream, bus, requested) = log(registry, 2).await;
        let got = follow(&bus, registry, requested, 100, Duration::from_millis(1500)).await;
        // Everything there is, then nothing more for the scan: stopped by the clock.
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[3].line, "Removed a/b:t0");
        assert_eq!(got.last().unwrap().state, "stopped");
        assert!(got.last().unwrap().line.contains("time allowed ran out"));
    }
}
