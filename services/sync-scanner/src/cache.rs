//! The content-addressed cache of manifests and config blobs.
//!
//! The registry client asks a [`ManifestCache`] (a synchronous trait) before every fetch
//! by digest. The scanner keeps the content in PostgreSQL (`blobs`) so it survives
//! restarts and is shared by replicas; [`ScanCache`] is the in-memory front one
//! repository's scan uses: [`ScanCache::prefetch`] loads a digest and everything it
//! refers to (an index's manifests, a manifest's config) from the table before the client
//! needs it, and [`ScanCache::flush`] writes what the client fetched. A digest already
//! known is never fetched from the registry again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use imagelib_events::Digest;
use registry_client::{CachedContent, Manifest, ManifestCache};

use crate::store::{Store, StoreError};

/// The cache of one repository's scan (dropped with it, so memory stays bounded).
#[derive(Debug, Default)]
pub struct ScanCache {
    entries: Mutex<HashMap<Digest, CachedContent>>,
    fresh: Mutex<Vec<Digest>>,
    /// One inspection per digest at a time: tags that share a digest wait for the first
    /// to fill the cache instead of all fetching it.
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl ManifestCache for ScanCache {
    fn get(&self, digest: &Digest) -> Option<CachedContent> {
        self.entries.lock().ok()?.get(digest).cloned()
    }

    fn put(&self, digest: &Digest, content: CachedContent) {
        if let Ok(mut e) = self.entries.lock()
            && e.insert(digest.clone(), content).is_none()
            && let Ok(mut f) = self.fresh.lock()
        {
            f.push(digest.clone());
        }
    }
}

impl ScanCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Held while `digest` is inspected.
    pub async fn lock(&self, digest: &Digest) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .inflight
            .lock()
            .map(|mut m| m.entry(digest.clone()).or_default().clone())
            .unwrap_or_default();
        m.lock_owned().await
    }

    fn has(&self, digest: &Digest) -> bool {
        self.entries
            .lock()
            .map(|e| e.contains_key(digest))
            .unwrap_or(false)
    }

    fn load(&self, rows: Vec<(String, String, Vec<u8>)>) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        for (digest, media_type, body) in rows {
            let Ok(digest) = digest.parse::<Digest>() else {
                continue;
            };
            let content = CachedContent {
                media_type,
                bytes: Bytes::from(body),
            };
            e.insert(digest, content);
        }
    }

    /// Loads `digests` and what they refer to from the table: at most three queries.
    pub async fn prefetch(&self, store: &Store, digests: &[Digest]) -> Result<(), StoreError> {
        let mut wanted = digests.to_vec();
        for _ in 0..3 {
            let missing: Vec<String> = wanted
                .iter()
                .filter(|d| !self.has(d))
                .map(|d| d.to_string())
                .collect();
            if !missing.is_empty() {
                self.load(store.blobs(&missing).await?);
            }
            // What the digests found (and those already here) refer to.
            let mut next = Vec::new();
            for d in &wanted {
                let Some(content) = self.get(d) else { continue };
                match Manifest::parse(Some(&content.media_type), &content.bytes) {
                    Ok((Manifest::Index(index), _)) => {
                        next.extend(index.manifests.iter().map(|m| m.digest.clone()));
                    }
                    Ok((Manifest::Image(image), _)) => next.push(image.config.digest.clone()),
                    Err(_) => {}
                }
            }
            next.retain(|d| !self.has(d));
            next.sort();
            next.dedup();
            if next.is_empty() {
                break;
            }
            wanted = next;
        }
        Ok(())
    }

    /// Writes what the registry client fetched since the last flush.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let fresh: Vec<Digest> = match self.fresh.lock() {
            Ok(mut f) => std::mem::take(&mut *f),
            Err(_) => return Ok(()),
        };
        let items: Vec<(String, String, Vec<u8>)> = fresh
            .iter()
            .filter_map(|d| {
                self.get(d)
                    .map(|c| (d.to_string(), c.media_type, c.bytes.to_vec()))
            })
            .collect();
        store.put_blobs(&items).await
    }
}
