//! When the catalog last changed: what lets a reader keep a page until it does.
//!
//! Every transaction that changes what a catalog page shows (a projected batch, a curator
//! command applied out of band, a rebuild's schema swap) sends `NOTIFY` on [`CHANNEL`]
//! before it commits; PostgreSQL delivers it, after the commit, to every session listening
//! in that database, in any process. A process also counts its own commits as they return
//! ([`committed`]), so what it wrote is never read back from a page kept from before.
//!
//! The count is one per process, not per database: a commit to any catalog the process
//! writes or hears of makes every kept page of every catalog stale. That costs a few extra
//! reads where one process serves several catalogs (tests), and means there is nothing to
//! match between a pool and a listener.

use std::sync::atomic::{AtomicU64, Ordering};

/// The channel the catalog's writers notify (per database).
pub const CHANNEL: &str = "imagelib_catalog_changed";

static GENERATION: AtomicU64 = AtomicU64::new(0);
static COMMITTING: AtomicU64 = AtomicU64::new(0);

/// The catalog changed (a notification arrived, or a change may have been missed).
pub fn committed() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// Changes counted so far in this process, or `None` while one of its own commits is in
/// flight: from the moment it is sent until it is counted, a reader could not tell a page
/// read before it from one read after, so none is kept or served.
pub fn generation() -> Option<u64> {
    let before = GENERATION.load(Ordering::Acquire);
    if COMMITTING.load(Ordering::Acquire) > 0 {
        return None;
    }
    // A commit that began and ended between the two loads moved the count.
    (GENERATION.load(Ordering::Acquire) == before).then_some(before)
}

/// Held across a commit of this process: counted as a change when dropped, whatever the
/// commit's outcome.
#[must_use = "hold it across the commit"]
#[derive(Debug)]
pub struct Committing(());

/// Before a commit that may change the catalog.
pub fn committing() -> Committing {
    COMMITTING.fetch_add(1, Ordering::AcqRel);
    Committing(())
}

impl Drop for Committing {
    fn drop(&mut self) {
        // Counted before the commit stops being in flight: no moment shows neither.
        committed();
        COMMITTING.fetch_sub(1, Ordering::AcqRel);
    }
}
