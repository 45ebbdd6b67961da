//! Pages kept between the commits that change them.
//!
//! A page of the Image Library reads 51 rows of 32 columns, builds their views and encodes
//! about 75 KB of JSON, and the same few pages (each library's first page, a filter a team
//! keeps open, a popular repository) are asked for again and again between two batches of
//! the projection. A kept page is served while the catalog has not changed since it was
//! read: the process counts the catalog's changes ([`changes`]), from its own commits and
//! from `NOTIFY` of every writer of the database, heard on a connection of its own.
//!
//! Rules that keep it correct:
//! - The key is everything the answer depends on (the filter, with the teams the caller
//!   sees and the page size); two callers who see different registries never share a page.
//! - A page is kept under the count read *before* its query ran, and served only while the
//!   count is still that: a commit between the two makes it stale at once.
//! - While the listener is not connected (starting, or PostgreSQL restarted), notifications
//!   can be missed, so nothing is served from or kept in the cache; reconnecting counts as a
//!   change.
//! - Bounded: a byte budget (`IMAGELIB_CATALOG__PAGE_CACHE_MB`, 0 turns it off); a page over
//!   a sixteenth of it is not kept, and when it is full, entries are dropped to make room.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use opentelemetry::KeyValue;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::projection::changes;

/// What a kept value weighs against the budget.
pub(crate) trait Weighed {
    fn bytes(&self) -> usize;
}

/// A page as the catalog keeps it: the value for the console, its JSON and entity tag for
/// the API.
#[derive(Debug)]
pub(crate) struct Kept<T> {
    pub(crate) value: T,
    json: bytes::Bytes,
    etag: Option<HeaderValue>,
    /// Fragments of HTML the console rendered from the value, by the variant it asked for
    /// (a fragment that depends only on the value and that variant).
    html: [OnceLock<String>; 4],
}

impl<T> Kept<T> {
    /// `value` with its JSON and entity tag made already.
    pub(crate) fn with_json(value: T, json: Vec<u8>, etag: Option<HeaderValue>) -> Self {
        Kept {
            value,
            json: bytes::Bytes::from(json),
            etag,
            html: Default::default(),
        }
    }

    /// The API's answer: the JSON, tagged.
    pub(crate) fn response(&self) -> Response {
        let mut res = Response::new(Body::from(self.json.clone()));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(etag) = &self.etag {
            res.headers_mut().insert(header::ETAG, etag.clone());
        }
        res
    }

    #[cfg(test)]
    pub(crate) fn json(&self) -> &[u8] {
        &self.json
    }

    #[cfg(test)]
    pub(crate) fn etag(&self) -> Option<&HeaderValue> {
        self.etag.as_ref()
    }

    /// The HTML fragment `variant` (0–3) of the value, rendered once.
    pub(crate) fn html(&self, variant: usize, render: impl FnOnce(&T) -> String) -> &str {
        match self.html.get(variant) {
            Some(slot) => slot.get_or_init(|| render(&self.value)),
            None => "",
        }
    }
}

impl<T> Weighed for Kept<T> {
    /// The JSON, about as much again for the value, and as much for the console's HTML.
    fn bytes(&self) -> usize {
        self.json.len().saturating_mul(3)
    }
}

/// Kept values by key, for one kind of page.
pub(crate) struct PageCache<K, V> {
    name: &'static str,
    budget: usize,
    listener: Arc<Listener>,
    inner: Mutex<Bounded<K, Arc<V>>>,
}

impl<K, V> std::fmt::Debug for PageCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("name", &self.name)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// The longest a page is kept, changes or not: what a listener whose connection died
/// without a word (no reset, no close) can cost in missed notifications of other writers.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(30);

impl<K: Hash + Eq + Clone, V: Weighed> PageCache<K, V> {
    pub(crate) fn new(name: &'static str, budget: usize, listener: Arc<Listener>) -> Self {
        PageCache {
            name,
            budget,
            listener,
            inner: Mutex::new(Bounded::new()),
        }
    }

    /// The change count to read a page under, or `None` when nothing may be kept now.
    pub(crate) fn open(&self) -> Option<u64> {
        if self.budget == 0 {
            return None;
        }
        self.listener.ensure_started();
        if !self.listener.live() {
            return None;
        }
        changes::generation()
    }

    /// The page kept for `key`, if read under `seen` (from [`PageCache::open`]).
    pub(crate) fn get(&self, seen: Option<u64>, key: &K) -> Option<Arc<V>> {
        let Some(seen) = seen else {
            count(self.name, "bypass");
            return None;
        };
        let hit = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.current(seen, MAX_AGE) {
                inner.get(key).cloned()
            } else {
                None
            }
        };
        count(self.name, if hit.is_some() { "hit" } else { "miss" });
        hit
    }

    /// Keep `value`, read under `seen`, unless the catalog changed since.
    pub(crate) fn put(&self, seen: Option<u64>, key: K, value: Arc<V>) {
        let Some(seen) = seen else { return };
        let weight = value.bytes().max(1);
        if weight > self.budget / 16 {
            return;
        }
        // Counted before the lock: a change after this is caught by the next reader.
        if !self.listener.live() || changes::generation() != Some(seen) {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.current(seen, MAX_AGE) {
            inner.insert(key, value, weight, self.budget);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.len()).unwrap_or(0)
    }
}

/// Values by key within a byte budget, kept under a version (a count that only grows):
/// all are dropped together when a newer version is seen or they were kept too long, and
/// none is served to a reader of another version. When full, entries are dropped to make
/// room. The bookkeeping of the kept pages and of the kept rows ([`super::rows`]).
pub(crate) struct Bounded<K, V> {
    version: u64,
    since: Instant,
    bytes: usize,
    map: HashMap<K, (V, usize)>,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    pub(crate) fn new() -> Self {
        Bounded {
            version: 0,
            since: Instant::now(),
            bytes: 0,
            map: HashMap::new(),
        }
    }

    /// Whether what is kept may serve a reader of `version`: first drops everything when
    /// `version` is newer or the entries are older than `max_age`.
    pub(crate) fn current(&mut self, version: u64, max_age: Duration) -> bool {
        if self.version < version || self.since.elapsed() > max_age {
            self.map.clear();
            self.bytes = 0;
            self.version = self.version.max(version);
            self.since = Instant::now();
        }
        self.version == version
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key).map(|(v, _)| v)
    }

    /// Keep `value`, weighing `weight` bytes, within `budget`.
    pub(crate) fn insert(&mut self, key: K, value: V, weight: usize, budget: usize) {
        while self.bytes + weight > budget {
            let Some(k) = self.map.keys().next().cloned() else {
                break;
            };
            if let Some((_, w)) = self.map.remove(&k) {
                self.bytes = self.bytes.saturating_sub(w);
            }
        }
        if let Some((_, w)) = self.map.insert(key, (value, weight)) {
            self.bytes = self.bytes.saturating_sub(w);
        }
        self.bytes += weight;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub(crate) fn age_by(&mut self, by: Duration) {
        if let Some(then) = self.since.checked_sub(by) {
            self.since = then;
        }
    }
}

fn count(cache: &'static str, result: &'static str) {
    static C: OnceLock<opentelemetry::metrics::Counter<u64>> = OnceLock::new();
    C.get_or_init(|| {
        opentelemetry::global::meter("imagelib")
            .u64_counter("imagelib.catalog.page_cache")
            .with_unit("{request}")
            .with_description(
                "Catalog reads by whether a kept page answered (hit), the query ran (miss), or \
                 the cache was not in use (bypass: off, or not listening for changes)",
            )
            .build()
    })
    .add(
        1,
        &[
            KeyValue::new("cache", cache),
            KeyValue::new("result", result),
        ],
    );
}

/// `LISTEN` on [`changes::CHANNEL`], on a connection of its own, started by the first
/// read that could use the cache and stopped when the catalog is dropped.
pub(crate) struct Listener {
    pool: PgPool,
    live: Arc<AtomicBool>,
    /// How many times listening started: what a reader saw before a reconnection may
    /// have been another database's.
    connects: Arc<AtomicU64>,
    task: OnceLock<tokio::task::JoinHandle<()>>,
}

impl Listener {
    pub(crate) fn new(pool: PgPool) -> Self {
        Listener {
            pool,
            live: Arc::new(AtomicBool::new(false)),
            connects: Arc::new(AtomicU64::new(0)),
            task: OnceLock::new(),
        }
    }

    fn live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// The connection listening now (counted from 1), or `None` while none is.
    pub(crate) fn epoch(&self) -> Option<u64> {
        // Live first: a reconnection between the two loads gives the newer count.
        self.live().then(|| self.connects.load(Ordering::Acquire))
    }

    /// As if (re)connected, with no task: for tests of what depends on the connection.
    #[cfg(test)]
    pub(crate) fn pretend_connected(&self) {
        self.connects.fetch_add(1, Ordering::AcqRel);
        self.live.store(true, Ordering::Release);
        let _ = self.task.set(tokio::spawn(async {}));
    }

    /// As if the connection were lost.
    #[cfg(test)]
    pub(crate) fn pretend_lost(&self) {
        self.live.store(false, Ordering::Release);
    }

    pub(crate) fn ensure_started(&self) {
        if self.task.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (pool, live, connects) = (self.pool.clone(), self.live.clone(), self.connects.clone());
        let _ = self
            .task
            .get_or_init(|| runtime.spawn(listen(pool, live, connects)));
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

/// Count every notification as a change; while not connected, say so (the cache stands
/// aside) and try again, backing off to 5 s.
#[tracing::instrument(name = "catalog_changes_listener", skip_all)]
async fn listen(pool: PgPool, live: Arc<AtomicBool>, connects: Arc<AtomicU64>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(changes::CHANNEL).await {
                Ok(()) => {
                    // What changed while nobody listened is unknown: all of it.
                    changes::committed();
                    connects.fetch_add(1, Ordering::AcqRel);
                    live.store(true, Ordering::Release);
                    backoff = Duration::from_millis(100);
                    // `try_recv` says `None` when the connection was lost, before it
                    // reconnects on its own: notifications in between are lost, so the
                    // listener starts over instead.
                    while let Ok(Some(_)) = listener.try_recv().await {
                        changes::committed();
                    }
                    tracing::warn!(
                        "lost the catalog's change notifications; pages not kept until back"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for catalog changes"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot connect to listen for catalog changes"),
        }
        live.store(false, Ordering::Release);
        changes::committed();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Page(usize);
    impl Weighed for Page {
        fn bytes(&self) -> usize {
            self.0
        }
    }

    fn cache(budget: usize) -> PageCache<u32, Page> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool");
        let c = PageCache::new("test", budget, Arc::new(Listener::new(pool)));
        // As if connected: these tests are about the bookkeeping, not the listener.
        c.listener.live.store(true, Ordering::Release);
        let _ = c.listener.task.set(tokio::spawn(async {}));
        c
    }

    #[tokio::test]
    async fn a_page_read_before_a_change_is_never_served_after_it() {
        let c = cache(1 << 20);
        let seen = c.open();
        assert!(seen.is_some());
        assert!(c.get(seen, &1).is_none());
        c.put(seen, 1, Arc::new(Page(100)));
        assert_eq!(c.get(c.open(), &1).map(|p| p.0), Some(100));
        changes::committed();
        assert!(c.get(c.open(), &1).is_none());
        assert_eq!(c.len(), 0);
        // Read under the old count, kept after the change: refused.
        c.put(seen, 1, Arc::new(Page(100)));
        assert!(c.get(c.open(), &1).is_none());
    }

    #[tokio::test]
    async fn not_listening_means_not_kept() {
        let c = cache(1 << 20);
        c.listener.live.store(false, Ordering::Release);
        let seen = c.open();
        assert_eq!(seen, None);
        c.put(seen, 1, Arc::new(Page(10)));
        assert!(c.get(seen, &1).is_none());
        let seen = changes::generation();
        c.put(seen, 2, Arc::new(Page(10)));
        assert_eq!(c.len(), 0);
    }

    #[tokio::test]
    async fn the_budget_bounds_what_is_kept() {
        let c = cache(1600);
        let seen = c.open();
        // Over a sixteenth of the budget: not kept.
        c.put(seen, 0, Arc::new(Page(101)));
        assert_eq!(c.len(), 0);
        for k in 1..=40 {
            c.put(seen, k, Arc::new(Page(100)));
        }
        if c.open() == seen {
            assert_eq!(c.len(), 16);
            assert!(c.get(seen, &40).is_some());
        }
    }

    #[tokio::test]
    async fn no_page_is_kept_longer_than_the_max_age() {
        let c = cache(1 << 20);
        let seen = c.open();
        c.put(seen, 1, Arc::new(Page(10)));
        if c.open() != seen {
            return; // another test of this process counted a change: nothing to check
        }
        assert!(c.get(seen, &1).is_some());
        if Instant::now().checked_sub(MAX_AGE * 2).is_some() {
            c.inner.lock().unwrap().age_by(MAX_AGE * 2);
            assert!(c.get(seen, &1).is_none());
            assert_eq!(c.len(), 0);
        }
    }

    #[tokio::test]
    async fn off_when_the_budget_is_zero() {
        let c = cache(0);
        assert_eq!(c.open(), None);
    }
}
