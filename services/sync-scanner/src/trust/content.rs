//! Reading a referrer once: its manifest, then only the blobs
//! [`imagelib_trust::referrer::plan`] asks for, each within its bound and the configured
//! `max_referrer_bytes`, kept raw (`referrer_content`).
//!
//! What a referrer says depends on the subject it is read for (a statement must name it),
//! so the raw content is what is kept, and [`interpret`] runs on it at each evaluation —
//! a pure function, no registry. Nothing here fails a scan: an unreadable manifest says
//! nothing, a blob over a bound is skipped and named, and a signature whose blob was
//! skipped is an invalid signature.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use imagelib_events::{Digest, RepositoryName};
use imagelib_trust::evidence::Evidence;
use imagelib_trust::referrer;
use registry_client::{Reference, RegistryClient};

use super::state::StoredReferrer;

/// Why a referrer was not read (the scan goes on; the referrer is retried later).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("referrer {digest}: {source}")]
    Registry {
        digest: Digest,
        #[source]
        source: registry_client::Error,
    },
    #[error("referrer {0}: the scan's referrer byte budget is spent")]
    Budget(Digest),
}

fn take(budget: &AtomicU64, n: u64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(n)
        })
        .is_ok()
}

/// Reads `digest` (a referrer of something in `repository`): its manifest and the blobs
/// its plan asks for, none over `max_blob_bytes`. `budget` is decremented by what is read;
/// when it cannot pay for a blob, nothing is stored (the next scan reads it).
pub async fn fetch(
    client: &RegistryClient,
    repository: &RepositoryName,
    digest: &Digest,
    max_blob_bytes: u64,
    budget: &AtomicU64,
) -> Result<StoredReferrer, FetchError> {
    let err = |source| FetchError::Registry {
        digest: digest.clone(),
        source,
    };
    if budget.load(Ordering::Relaxed) == 0 {
        return Err(FetchError::Budget(digest.clone()));
    }
    let fetched = client
        .get_manifest(repository, &Reference::Digest(digest.clone()))
        .await
        .map_err(err)?;
    let _ = take(budget, fetched.raw.len() as u64);
    let mut stored = StoredReferrer {
        digest: digest.clone(),
        media_type: fetched.media_type.clone(),
        manifest: fetched.raw.to_vec(),
        blobs: Default::default(),
        skipped: Vec::new(),
        stored_at: chrono::Utc::now(),
    };
    let plan = match referrer::plan(&fetched.raw) {
        Ok(plan) => plan,
        Err(e) => {
            stored.skipped.push(e.to_string());
            return Ok(stored);
        }
    };
    stored.skipped.extend(plan.skipped);
    for blob in plan.fetch {
        let limit = blob.limit.min(max_blob_bytes);
        if blob.size > limit {
            stored.skipped.push(format!(
                "blob {} ({}) is {} bytes, over the {limit}-byte limit",
                blob.digest, blob.media_type, blob.size
            ));
            continue;
        }
        let Ok(blob_digest) = blob.digest.parse::<Digest>() else {
            stored
                .skipped
                .push(format!("blob digest {:?} is not readable", blob.digest));
            continue;
        };
        if !take(budget, blob.size) {
            return Err(FetchError::Budget(digest.clone()));
        }
        match client
            .get_blob_bounded(repository, &blob_digest, limit)
            .await
        {
            Ok(body) => {
                stored.blobs.insert(blob.digest, body.to_vec());
            }
            Err(e) if e.cap().is_some() => stored.skipped.push(format!(
                "blob {} ({}) is over the {limit}-byte limit",
                blob.digest, blob.media_type
            )),
            Err(e) => return Err(err(e)),
        }
    }
    Ok(stored)
}

/// What a stored referrer says about `subject` (the digest it is attached to). A
/// signature that could not be read says why, including what the scanner skipped.
pub fn interpret(subject: &str, stored: &StoredReferrer) -> Vec<Evidence> {
    let blobs: BTreeMap<String, Vec<u8>> = stored
        .blobs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut evidence = referrer::interpret(subject, &stored.manifest, &blobs).evidence;
    if !stored.skipped.is_empty() {
        for e in &mut evidence {
            if let Evidence::UnreadableSignature { reason, .. } = e {
                let mut why = stored.skipped.join("; ");
                why.truncate(
                    (0..=why.len().min(900))
                        .rev()
                        .find(|i| why.is_char_boundary(*i))
                        .unwrap_or(0),
                );
                *reason = format!("{reason} ({why})");
            }
        }
    }
    evidence
}
