//! Pull counting: the manifest pulls a registry's notifications report, aggregated in
//! memory and appended as `image.pulls_counted`, never one event per pull.
//!
//! Pulls are many (every `docker pull`, every node of a cluster starting a pod) and each
//! says little, so an event per pull would flood the log that every consumer reads. They
//! are counted per key (registry, repository, digest, and the tag when the pull named
//! one) over a window that opens at the key's first pull; when it closes, the key's count
//! becomes one event with the first and last pull time, and the next pull opens a new
//! window. Several replicas each count what they receive and emit their own events; the
//! catalog sums them.
//!
//! Memory is bounded, and nothing is dropped without a trace: at `max_keys` open keys
//! every window is closed early; an event the stream did not take is kept and retried
//! (with its id, so a retry of an append that did land is a duplicate JetStream drops);
//! and while the stream does not take them, once open keys and kept events reach twice
//! `max_keys`, a notification that would add a key is refused with a `503` for the
//! registry to deliver again later (increments of open keys are still taken). On shutdown
//! (after the HTTP server has drained) everything open is flushed; what the stream then
//! refuses is logged with its count.
//!
//! Senders are not trusted: a pull's time comes from the notification but is clamped to
//! the day before it arrived (a time in the future is the arrival time), and a count
//! saturates rather than wraps.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use imagelib_events::bus::EventBus;
use imagelib_events::event::PullsCounted;
use imagelib_events::{Digest, Envelope, RegistryId, RepositoryName, Tag};
use tokio::time::Instant;

use crate::domain::webhook::Pull;

/// How far back a sender's pull time is believed.
const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// Events appended at once when a flush publishes.
const PUBLISH_CONCURRENCY: usize = 16;

/// The counter's settings (`IMAGELIB_PULLS_WINDOW_SECS`, `IMAGELIB_PULLS_MAX_KEYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullSettings {
    /// How long a key counts pulls before they become one event.
    pub window: Duration,
    /// Open keys at which every window is closed early.
    pub max_keys: usize,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            window: Duration::from_secs(60),
            max_keys: 10_000,
        }
    }
}

/// The notification would open keys beyond the bound while the stream is not taking
/// events: the sender should deliver it again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{open} pull counts are waiting for the event stream; deliver this notification again later"
)]
pub struct Backlog {
    pub open: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    registry_id: RegistryId,
    repository: RepositoryName,
    digest: Digest,
    tag: Option<Tag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    pulls: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    /// When the key's window opened (this process's clock, not the sender's).
    opened: Instant,
}

/// The open windows: pure bookkeeping, no I/O.
#[derive(Debug)]
struct Tallies {
    settings: PullSettings,
    open: HashMap<Key, Tally>,
    /// Closed windows whose event the stream has not taken yet, oldest first.
    unsent: VecDeque<Envelope>,
    /// `max_keys` was reached: the next flush closes every window.
    overflow: bool,
}

/// A sender's time, believed within [`received` − 24 h, `received`].
fn clamp(at: Option<DateTime<Utc>>, received: DateTime<Utc>) -> DateTime<Utc> {
    match at {
        Some(t) => t.clamp(received - MAX_AGE, received),
        None => received,
    }
}

impl Tallies {
    fn new(settings: PullSettings) -> Self {
        Tallies {
            settings,
            open: HashMap::new(),
            unsent: VecDeque::new(),
            overflow: false,
        }
    }

    fn hard_limit(&self) -> usize {
        self.settings.max_keys.saturating_mul(2)
    }

    /// Counts `pulls`, all or none. Returns whether `max_keys` is reached (flush now).
    fn record(
        &mut self,
        registry_id: RegistryId,
        pulls: &[Pull],
        received: DateTime<Utc>,
        now: Instant,
    ) -> Result<bool, Backlog> {
        let keys: Vec<Key> = pulls
            .iter()
            .map(|p| Key {
                registry_id,
                repository: p.repository.clone(),
                digest: p.digest.clone(),
                tag: p.tag.clone(),
            })
            .collect();
        let mut new: Vec<&Key> = keys.iter().filter(|k| !self.open.contains_key(k)).collect();
        new.sort_by_key(|k| (&k.repository, &k.digest, &k.tag));
        new.dedup();
        let held = self.open.len() + self.unsent.len();
        if !new.is_empty() && held + new.len() > self.hard_limit() {
            return Err(Backlog { open: held });
        }
        for (key, pull) in keys.into_iter().zip(pulls) {
            let at = clamp(pull.at, received);
            self.open
                .entry(key)
                .and_modify(|t| {
                    t.pulls = t.pulls.saturating_add(1);
                    t.first = t.first.min(at);
                    t.last = t.last.max(at);
                })
                .or_insert(Tally {
                    pulls: 1,
                    first: at,
                    last: at,
                    opened: now,
                });
        }
        if self.open.len() >= self.settings.max_keys {
            self.overflow = true;
        }
        Ok(self.overflow)
    }

    /// Closes the windows that are due (all of them with `all`, or after an overflow)
    /// into events waiting to be sent.
    fn close_due(&mut self, now: Instant, all: bool) {
        let all = all || std::mem::take(&mut self.overflow);
        let window = self.settings.window;
        let due: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, t)| all || now.duration_since(t.opened) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(t) = self.open.remove(&key) {
                self.unsent.push_back(event(key, t));
            }
        }
    }

    /// How long until the next window closes (a whole window when none is open).
    fn until_next(&self, now: Instant) -> Duration {
        let window = self.settings.window;
        self.open
            .values()
            .map(|t| (t.opened + window).saturating_duration_since(now))
            .min()
            .unwrap_or(window)
    }

    fn unsent_pulls(&self) -> u64 {
        self.unsent
            .iter()
            .map(|e| match &e.payload {
                imagelib_events::EventPayload::PullsCounted(p) => p.pulls,
                _ => 0,
            })
            .sum()
    }
}

fn event(key: Key, t: Tally) -> Envelope {
    let actor = format!("webhook:{}", key.registry_id);
    Envelope::new(
        crate::NAME,
        PullsCounted {
            registry_id: key.registry_id,
            repository: key.repository,
            tag: key.tag,
            digest: key.digest,
            pulls: t.pulls,
            first_pulled_at: t.first,
            last_pulled_at: t.last,
        },
    )
    .with_actor(actor)
}

/// Counts pulls and appends their events; one per process, shared by the webhook route
/// and the flushing worker.
#[derive(Debug)]
pub struct PullCounter {
    bus: EventBus,
    tallies: Mutex<Tallies>,
    wake: tokio::sync::Notify,
}

impl PullCounter {
    pub fn new(bus: EventBus, settings: PullSettings) -> Self {
        let settings = PullSettings {
            window: settings.window.max(Duration::from_millis(10)),
            max_keys: settings.max_keys.max(1),
        };
        received(0, "counted");
        received(0, "refused");
        emitted(0, "emitted");
        PullCounter {
            bus,
            tallies: Mutex::new(Tallies::new(settings)),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn tallies(&self) -> std::sync::MutexGuard<'_, Tallies> {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a notification's pulls of `registry_id` (all or none).
    pub fn record(&self, registry_id: RegistryId, pulls: &[Pull]) -> Result<(), Backlog> {
        if pulls.is_empty() {
            return Ok(());
        }
        let outcome = self
            .tallies()
            .record(registry_id, pulls, Utc::now(), Instant::now());
        match outcome {
            Ok(flush_now) => {
                received(pulls.len() as u64, "counted");
                if flush_now {
                    self.wake.notify_one();
                }
                Ok(())
            }
            Err(b) => {
                received(pulls.len() as u64, "refused");
                tracing::warn!(
                    registry = %registry_id,
                    open = b.open,
                    "pull counts are not reaching the event stream; a notification was refused for redelivery"
                );
                Err(b)
            }
        }
    }

    /// Closes the due windows (all with `all`) and appends every event waiting. Events
    /// the stream did not take stay for the next flush; the error says how many.
    #[tracing::instrument(skip(self), fields(events))]
    async fn flush(&self, all: bool) -> Result<(), usize> {
        let batch: Vec<Envelope> = {
            let mut t = self.tallies();
            t.close_due(Instant::now(), all);
            t.unsent.iter().cloned().collect()
        };
        tracing::Span::current().record("events", batch.len());
        if batch.is_empty() {
            return Ok(());
        }
        let mut sent = std::collections::HashSet::new();
        let mut failed = 0usize;
        for chunk in batch.chunks(PUBLISH_CONCURRENCY) {
            let mut set = tokio::task::JoinSet::new();
            for env in chunk {
                let bus = self.bus.clone();
                let env = env.clone();
                set.spawn(async move { (env.id, bus.publish(&env).await) });
            }
            while let Some(done) = set.join_next().await {
                match done {
                    Ok((id, Ok(_))) => {
                        sent.insert(id);
                    }
                    Ok((id, Err(e))) => {
                        failed += 1;
                        tracing::warn!(event = %id, error = %e, "appending a pull count failed; kept for the next flush");
                    }
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(error = %e, "appending a pull count failed; kept for the next flush");
                    }
                }
            }
            if failed > 0 {
                // The stream is not taking events: the rest waits for the next flush.
                break;
            }
        }
        self.tallies().unsent.retain(|e| !sent.contains(&e.id));
        emitted(sent.len() as u64, "emitted");
        if failed > 0 {
            emitted(failed as u64, "retried");
            return Err(failed);
        }
        Ok(())
    }

    /// The worker that closes windows as they fall due, at once on overflow, and all of
    /// them on shutdown.
    pub fn worker(self: &Arc<Self>) -> imagelib_platform::Worker {
        let counter = self.clone();
        imagelib_platform::Worker::new(format!("{}.pulls", crate::NAME), move |cancel| {
            async move {
                let mut failures = 0u32;
                loop {
                    let wait = if failures > 0 {
                        // 1 s doubling to 32 s while the stream does not take events.
                        Duration::from_secs(1 << (failures - 1).min(5))
                    } else {
                        counter.tallies().until_next(Instant::now())
                    }
                    .max(Duration::from_millis(10));
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = counter.wake.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                    match counter.flush(false).await {
                        Ok(()) => failures = 0,
                        Err(_) => failures = failures.saturating_add(1),
                    }
                }
                if counter.flush(true).await.is_err() {
                    let (events, pulls) = {
                        let t = counter.tallies();
                        (t.unsent.len(), t.unsent_pulls())
                    };
                    emitted(events as u64, "lost");
                    tracing::error!(
                        events,
                        pulls,
                        "shutting down with pull counts the event stream did not take: they are lost"
                    );
                }
                Ok(())
            }
        })
    }
}

/// `imagelib.pulls.received`: pull notifications, by what became of them (`counted`,
/// `refused`, `not_reported`, or why they are no pull: `blob`, `head`, `own`).
pub fn received(n: u64, outcome: &'static str) {
    static C: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>> =
        std::sync::OnceLock::new();
    C.get_or_init(|| {
        imagelib_platform::telemetry::meter()
            .u64_counter("imagelib.pulls.received")
            .with_unit("{pull}")
            .with_description(
                "Pull notifications received, by outcome: counted, refused (backlog), not_reported (the registry does not report pulls), blob, head or own (not pulls)",
            )
            .build()
    })
    .add(n, &[opentelemetry::KeyValue::new("outcome", outcome)]);
}

/// `imagelib.pulls.events`: `image.pulls_counted` events, by outcome (`emitted`,
/// `retried` when the stream did not take them, `lost` on shutdown).
fn emitted(n: u64, outcome: &'static str) {
    static C: std::sync::OnceLock<opentelemetry::metrics::Counter<u64>> =
        std::sync::OnceLock::new();
    C.get_or_init(|| {
        imagelib_platform::telemetry::meter()
            .u64_counter("imagelib.pulls.events")
            .with_unit("{event}")
            .with_description(
                "image.pulls_counted events: emitted, retried (the stream did not take them) or lost (at shutdown)",
            )
            .build()
    })
    .add(n, &[opentelemetry::KeyValue::new("outcome", outcome)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(repo: &str, digest_byte: char, tag: Option<&str>, at: Option<&str>) -> Pull {
        Pull {
            repository: repo.parse().unwrap(),
            digest: format!("sha256:{}", digest_byte.to_string().repeat(64))
                .parse()
                .unwrap(),
            tag: tag.map(|t| t.parse().unwrap()),
            at: at.map(|t| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)),
        }
    }

    fn counted(e: &Envelope) -> &PullsCounted {
        match &e.payload {
            imagelib_events::EventPayload::PullsCounted(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn settings(window_secs: u64, max_keys: usize) -> PullSettings {
        PullSettings {
            window: Duration::from_secs(window_secs),
            max_keys,
        }
    }

    #[test]
    fn pulls_of_a_key_in_a_window_are_one_event() {
        let mut t = Tallies::new(settings(60, 100));
        let id = RegistryId::new();
        let received: DateTime<Utc> = "2026-01-02T12:00:00Z".parse().unwrap();
        let start = Instant::now();
        let a = pull("team/app", 'a', Some("v1"), Some("2026-01-02T11:59:00Z"));
        let a_later = pull("team/app", 'a', Some("v1"), Some("2026-01-02T11:59:30Z"));
        let by_digest = pull("team/app", 'a', None, None);
        assert_eq!(
            t.record(id, &[a.clone(), a_later], received, start),
            Ok(false)
        );
        assert_eq!(t.record(id, &[a, by_digest], received, start), Ok(false));
        assert_eq!(t.open.len(), 2);

        // Not yet due.
        t.close_due(start + Duration::from_secs(59), false);
        assert!(t.unsent.is_empty());
        assert_eq!(
            t.until_next(start + Duration::from_secs(59)),
            Duration::from_secs(1)
        );
        t.close_due(start + Duration::from_secs(60), false);
        assert_eq!(t.unsent.len(), 2);
        let mut events: Vec<&PullsCounted> = t.unsent.iter().map(counted).collect();
        events.sort_by_key(|e| e.tag.clone());
        assert_eq!(events[0].tag, None);
        assert_eq!(events[0].pulls, 1);
        assert_eq!(events[0].first_pulled_at, received);
        assert_eq!(events[1].tag.as_ref().map(|t| t.as_str()), Some("v1"));
        assert_eq!(events[1].pulls, 3);
        assert_eq!(
            events[1].first_pulled_at,
            "2026-01-02T11:59:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            events[1].last_pulled_at,
            "2026-01-02T11:59:30Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(t.unsent_pulls(), 4);
        assert!(t.open.is_empty());
    }

    #[test]
    fn sender_times_are_clamped() {
        let received: DateTime<Utc> = "2026-01-02T12:00:00Z".parse().unwrap();
        let future: DateTime<Utc> = "2099-01-01T00:00:00Z".parse().unwrap();
        let ancient: DateTime<Utc> = "1970-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(clamp(Some(future), received), received);
        assert_eq!(clamp(Some(ancient), received), received - MAX_AGE);
        assert_eq!(clamp(None, received), received);
        let ok = received - chrono::TimeDelta::minutes(5);
        assert_eq!(clamp(Some(ok), received), ok);
    }

    #[test]
    fn max_keys_flushes_early_and_twice_that_refuses_new_keys() {
        let mut t = Tallies::new(settings(60, 2));
        let id = RegistryId::new();
        let now = Instant::now();
        let received = Utc::now();
        assert_eq!(
            t.record(id, &[pull("a/b", 'a', None, None)], received, now),
            Ok(false)
        );
        // The second key reaches max_keys: flush now, all of them, though none is due.
        assert_eq!(
            t.record(id, &[pull("a/b", 'b', None, None)], received, now),
            Ok(true)
        );
        t.close_due(now, false);
        assert_eq!(t.unsent.len(), 2);
        assert!(t.open.is_empty() && !t.overflow);

        // The stream takes nothing: two unsent, two open, then new keys are refused...
        t.record(
            id,
            &[pull("a/b", 'c', None, None), pull("a/b", 'd', None, None)],
            received,
            now,
        )
        .unwrap();
        assert_eq!(
            t.record(id, &[pull("a/b", 'e', None, None)], received, now),
            Err(Backlog { open: 4 })
        );
        // ...all or nothing...
        assert_eq!(
            t.record(
                id,
                &[pull("a/b", 'c', None, None), pull("a/b", 'f', None, None)],
                received,
                now
            ),
            Err(Backlog { open: 4 })
        );
        assert_eq!(t.open.values().map(|t| t.pulls).sum::<u64>(), 2);
        // ...while pulls of open keys are still counted.
        assert!(
            t.record(id, &[pull("a/b", 'c', None, None)], received, now)
                .is_ok()
        );
        assert_eq!(t.open.values().map(|t| t.pulls).sum::<u64>(), 3);
    }

    #[test]
    fn counts_saturate() {
        let mut t = Tallies::new(settings(60, 10));
        let id = RegistryId::new();
        let now = Instant::now();
        let p = pull("a/b", 'a', None, None);
        t.record(id, std::slice::from_ref(&p), Utc::now(), now)
            .unwrap();
        if let Some(tally) = t.open.values_mut().next() {
            tally.pulls = u64::MAX;
        }
        t.record(id, &[p], Utc::now(), now).unwrap();
        assert_eq!(t.open.values().next().map(|t| t.pulls), Some(u64::MAX));
    }
}
