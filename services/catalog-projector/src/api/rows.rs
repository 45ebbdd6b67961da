//! Image rows rendered once and kept while the catalog still holds them as they were.
//!
//! A page that is not kept ([`super::cache`]: the first read after each change, a cursor
//! nobody asked for since) used to read 51 rows of 32 columns, turn seven `jsonb` columns
//! into text in PostgreSQL, decode them into views and encode them again: most of what
//! it cost, and mostly for rows that had not changed since they were last shown, as one
//! batch of the projection touches few of the rows of any page.
//!
//! Here the page's statement reads each row's *stamp* only: the version's tuple id and the
//! transactions that last wrote it, its repository and its registry, with the version's
//! identity (repository id and tag), as [`crate::query::IMAGE_STAMP`] spells it. The rows
//! whose stamp is kept are not read again; the others are read by tuple id in one more
//! statement, rendered (view and JSON), and kept. A page costs one narrow index scan and,
//! for the rows that changed, a TID scan.
//!
//! Why a stamp identifies what a row shows: every column of an image row comes from the
//! version's tuple, its repository's and its registry's (`IMAGE_COLUMNS`); PostgreSQL never
//! changes a tuple in place, an `UPDATE` writes a new one whose `xmin` is the writing
//! transaction; and a transaction that wrote a row twice leaves only the last version
//! visible to anyone else. Two visible versions of one identity with the same three `xmin`
//! can therefore only come from a reused transaction id, which takes 2³² transactions:
//! entries are dropped after [`MAX_AGE`], and whenever the change listener reconnects
//! (a restarted or restored database starts counting anew).
//!
//! Between the two statements a row can change: its tuple id then reads nothing or another
//! stamp, and the page is read again (at most [`ATTEMPTS`] times, then as one full
//! statement). A page is thus always what one snapshot showed: the stamps' own.
//!
//! Bounded by `IMAGELIB_CATALOG__ROW_CACHE_MB` (0 turns it off: every page is one full
//! statement); when full, entries are dropped to make room.

use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use imagelib_events::model::Referrer;
use opentelemetry::KeyValue;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use imagelib_platform::Problem;
use sha2::{Digest, Sha256};

use super::cache::{Bounded, Kept, Listener};
use super::views::{DigestReferrers, ImageView, ReferrerView, RepositoryDetail};

/// Tries to read a page by stamps before it is read as one full statement.
pub(crate) const ATTEMPTS: usize = 3;

/// The longest a rendered row is kept, unchanged or not (see the module documentation).
pub(crate) const MAX_AGE: Duration = Duration::from_secs(3600);

/// One image row: its view (for the console) and its JSON (for the API), rendered once.
#[derive(Debug)]
pub(crate) struct Rendered {
    view: ImageView,
    repo_id: Uuid,
    json: Box<RawValue>,
    /// SHA-256 of `json`: a page's entity tag is made of its rows' (see [`ImageRows::kept`]).
    digest: [u8; 32],
    /// What a repository's detail lists for the row's digests, read from its JSON columns
    /// the first time a detail shows the row (lists never ask for it).
    links: OnceLock<Links>,
}

/// The digests an image row points at, as a repository's detail lists them.
#[derive(Debug)]
pub(crate) struct Links {
    /// The row's entries of a referrer listing: its digest (with the referrers the
    /// version lists, none when its list does not read), then each platform manifest of
    /// an index (`os/architecture[/variant]`). What a detail lists for them when no other
    /// tag shares a digest and the repository keeps no list of its own for it, written
    /// once rather than on every read.
    pub(crate) listed: Vec<Arc<Listed>>,
}

/// An entry of a repository's referrer listing with its JSON.
#[derive(Debug)]
pub(crate) struct Listed {
    entry: DigestReferrers,
    /// [`sort_key`] of the digest: a listing sorts by it without reading the digest.
    key: u128,
    json: Box<RawValue>,
    /// SHA-256 of `json`: what a detail's entity tag takes for the entry.
    sha256: [u8; 32],
}

impl Listed {
    pub(crate) fn new(entry: DigestReferrers) -> Self {
        // Strings and lists of them always serialize; `null` would only stand for a bug.
        let json =
            serde_json::value::to_raw_value(&entry).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Listed {
            sha256: Sha256::digest(json.get().as_bytes()).into(),
            key: sort_key(&entry.digest),
            entry,
            json,
        }
    }
}

impl Deref for Listed {
    type Target = DigestReferrers;
    fn deref(&self) -> &DigestReferrers {
        &self.entry
    }
}

impl Serialize for Listed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

/// [`Listed`] entries as a JSON array (for `#[serde(serialize_with)]`).
pub(crate) fn listed_seq<S: serde::Serializer>(
    listed: &[Arc<Listed>],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(listed.iter().map(|l| &**l))
}

/// The referrer lists a repository keeps for its digests (`trust_referrers`) as PostgreSQL
/// wrote them, in byte order of digest: read into views only where a listing shows one
/// that is not already the row's own (most are: a version carries its digest's list as last
/// synced), and found by merging with the listing's own order rather than by hashing.
#[derive(Debug, Default)]
pub(crate) struct KeptLists(Vec<(String, Box<RawValue>)>);

impl KeptLists {
    pub(crate) fn new(mut lists: Vec<(String, Box<RawValue>)>) -> Self {
        if !lists.is_sorted_by(|a, b| a.0 <= b.0) {
            lists.sort_by(|a, b| a.0.cmp(&b.0));
        }
        KeptLists(lists)
    }
}

/// A repository's referrer listing: each digest its tags point at (and their platform
/// manifests), in digest order, with the tags pointing at it in tag order and the list the
/// repository keeps for it in `lists` (else the first row's own). An entry no other row
/// shares, for which `lists` names no other list than the row's, is the row's, as kept.
pub(crate) fn listing(rows: &[Arc<Rendered>], lists: &KeptLists) -> Vec<Arc<Listed>> {
    // Each entry with an order-preserving key of its digest's first bytes, and the text of
    // the list it shows (a tag's own as read; a platform manifest's, none), so that
    // neither the sort nor the comparison with `lists` follows a pointer per entry.
    let mut all: Vec<(u128, &Arc<Listed>, &str, &str)> =
        Vec::with_capacity(rows.iter().map(|row| row.links().listed.len()).sum());
    for row in rows {
        for (i, l) in row.links().listed.iter().enumerate() {
            let own = if i == 0 { row.referrers.get() } else { "[]" };
            all.push((l.key, l, row.tag.as_str(), own));
        }
    }
    // Stable: a digest's entries stay in row (tag) order, the first one decides.
    all.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.digest.cmp(&b.1.digest)));
    let mut out = Vec::with_capacity(all.len());
    let mut kept = lists.0.iter().peekable();
    for group in all.chunk_by(|a, b| a.0 == b.0 && a.1.digest == b.1.digest) {
        let (_, first, _, own) = group[0];
        while kept.next_if(|(d, _)| *d < first.digest).is_some() {}
        let kept_list = kept
            .next_if(|(d, _)| *d == first.digest)
            .map(|(_, list)| list)
            .filter(|list| list.get() != own);
        if group.len() == 1 && kept_list.is_none() {
            out.push(Arc::clone(first));
            continue;
        }
        let mut tags: Vec<String> = Vec::with_capacity(group.len());
        for (_, _, tag, _) in group {
            if !tags.iter().any(|t| t == tag) {
                tags.push((*tag).to_owned());
            }
        }
        let referrers = match kept_list {
            Some(kept) => serde_json::from_str::<Vec<Referrer>>(kept.get())
                .map(|list| referrer_views(&list))
                .unwrap_or_default(),
            None => first.referrers.clone(),
        };
        out.push(Arc::new(Listed::new(DigestReferrers {
            digest: first.digest.clone(),
            tags,
            platform: first.platform.clone(),
            referrers,
        })));
    }
    out
}

/// The first 16 bytes of `s` as a number: ordered as `s` is, byte-wise, up to them.
fn sort_key(s: &str) -> u128 {
    let mut key = [0u8; 16];
    let n = s.len().min(16);
    key[..n].copy_from_slice(&s.as_bytes()[..n]);
    u128::from_be_bytes(key)
}

impl Links {
    pub(crate) fn of(view: &ImageView) -> Self {
        #[derive(Deserialize)]
        struct Platform {
            os: String,
            architecture: String,
            variant: Option<String>,
            digest: Option<String>,
        }
        let referrers = serde_json::from_str::<Vec<Referrer>>(view.referrers.get())
            .map(|list| referrer_views(&list))
            .unwrap_or_default();
        let platforms = serde_json::from_str::<Vec<Platform>>(view.platforms.get())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| {
                let name = match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                };
                Some((p.digest?, name))
            });
        let own = |digest: String, platform: Option<String>, referrers: Vec<ReferrerView>| {
            Arc::new(Listed::new(DigestReferrers {
                digest,
                tags: vec![view.tag.clone()],
                platform,
                referrers,
            }))
        };
        let mut listed = vec![own(view.digest.clone(), None, referrers)];
        listed.extend(platforms.map(|(digest, platform)| own(digest, Some(platform), Vec::new())));
        Links { listed }
    }
}

/// A referrer list as the API shows it.
pub(crate) fn referrer_views(list: &[Referrer]) -> Vec<ReferrerView> {
    list.iter()
        .map(|r| ReferrerView {
            digest: r.digest.as_str().to_owned(),
            kind: crate::projection::enum_str(&r.kind),
            artifact_type: r.artifact_type.clone(),
        })
        .collect()
}

impl Rendered {
    /// From a row of [`crate::query::IMAGE_COLUMNS`].
    pub(crate) fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let (view, repo_id) = ImageView::from_row(row)?;
        let json =
            serde_json::value::to_raw_value(&view).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(Rendered {
            digest: Sha256::digest(json.get().as_bytes()).into(),
            view,
            repo_id,
            json,
            links: OnceLock::new(),
        })
    }

    pub(crate) fn repo_id(&self) -> Uuid {
        self.repo_id
    }

    /// The digests the row points at, read once.
    pub(crate) fn links(&self) -> &Links {
        self.links.get_or_init(|| Links::of(&self.view))
    }

    fn weight(&self) -> usize {
        // The JSON, and about as much again for the view.
        self.json.get().len().saturating_mul(2) + 256
    }
}

impl Deref for Rendered {
    type Target = ImageView;
    fn deref(&self) -> &ImageView {
        &self.view
    }
}

/// One tag of a repository's detail ([`super::views::TagDetail`] in the API description):
/// its image row, kept and written as rendered, and what the repository keeps about the tag.
#[derive(Debug)]
pub(crate) struct TagRow {
    pub(crate) image: Arc<Rendered>,
    pub(crate) tag_approval: Option<super::views::ApprovalView>,
    pub(crate) mutations: Vec<super::views::MutationView>,
    pub(crate) readme: Option<super::views::ReadmeView>,
    pub(crate) used_by: Vec<super::views::DeploymentView>,
}

impl TagRow {
    /// The image row's JSON object with the tag's own members after its own (what
    /// `#[serde(flatten)]` would write, without encoding the row again), appended to `out`.
    fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        use serde::ser::Error;
        let row = self.image.json.get();
        let Some(members) = row.strip_suffix('}') else {
            return Err(serde_json::Error::custom(
                "an image row is not a JSON object",
            ));
        };
        out.extend_from_slice(members.as_bytes());
        out.extend_from_slice(b",\"tag_approval\":");
        serde_json::to_writer(&mut *out, &self.tag_approval)?;
        out.extend_from_slice(b",\"mutations\":");
        serde_json::to_writer(&mut *out, &self.mutations)?;
        out.extend_from_slice(b",\"readme\":");
        serde_json::to_writer(&mut *out, &self.readme)?;
        out.extend_from_slice(b",\"used_by\":");
        serde_json::to_writer(&mut *out, &self.used_by)?;
        out.push(b'}');
        Ok(())
    }
}

impl Serialize for TagRow {
    /// What [`TagRow::write_json`] writes, checked as JSON again: the API writes a detail
    /// with [`RepositoryDetail::kept`], which does not check it again.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let mut json = Vec::with_capacity(self.image.json.get().len() + 96);
        self.write_json(&mut json).map_err(S::Error::custom)?;
        let json = String::from_utf8(json).map_err(S::Error::custom)?;
        RawValue::from_string(json)
            .map_err(S::Error::custom)?
            .serialize(s)
    }
}

impl RepositoryDetail {
    /// The detail as the catalog keeps it for a caller who sees `teams`: its JSON written
    /// around its tags' kept rows and listing entries (what [`Serialize`] writes, without
    /// parsing each again as a [`RawValue`] would), and its entity tag from the rows' and
    /// the entries' digests and the rest of the JSON, rather than from hashing every row's
    /// bytes on every read.
    pub(crate) fn kept(self, teams: Option<&[String]>) -> Result<Kept<RepositoryDetail>, Problem> {
        #[derive(Serialize)]
        struct Head<'a> {
            #[serde(flatten)]
            repository: &'a super::views::RepositoryView,
            rule_id: &'a Option<String>,
            rule_hm_tags: &'a [String],
            curator_hm_tags: &'a [String],
            readme: &'a Option<super::views::ReadmeView>,
        }
        let internal = |e: serde_json::Error| Problem::internal(&e);
        let head = serde_json::to_vec(&Head {
            repository: &self.repository,
            rule_id: &self.rule_id,
            rule_hm_tags: &self.rule_hm_tags,
            curator_hm_tags: &self.curator_hm_tags,
            readme: &self.readme,
        })
        .map_err(internal)?;
        let used_by = serde_json::to_vec(&self.used_by).map_err(internal)?;
        let Some(head) = head.strip_suffix(b"}") else {
            return Err(Problem::internal(
                &"a repository detail is not a JSON object",
            ));
        };
        let size: usize = self
            .tags
            .iter()
            .map(|t| t.image.json.get().len() + 96)
            .chain(self.referrers.iter().map(|l| l.json.get().len() + 1))
            .sum();
        let mut json = Vec::with_capacity(head.len() + size + used_by.len() + 48);
        json.extend_from_slice(head);
        json.extend_from_slice(b",\"tags\":[");
        // Where each tag's own members are in `json`: what the entity tag hashes besides
        // the rows' digests.
        let mut members = Vec::with_capacity(self.tags.len());
        for (i, tag) in self.tags.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            let start = json.len() + tag.image.json.get().len() - 1;
            tag.write_json(&mut json).map_err(internal)?;
            members.push(start..json.len());
        }
        json.extend_from_slice(b"],\"used_by\":");
        json.extend_from_slice(&used_by);
        json.extend_from_slice(b",\"referrers\":");
        push_array(&mut json, self.referrers.iter().map(|l| &l.json));
        json.push(b'}');
        let etag = super::entity_tag_of(teams, |h| {
            let mut part = |bytes: &[u8]| {
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(bytes);
            };
            part(b"repository detail");
            part(head);
            for (tag, range) in self.tags.iter().zip(&members) {
                part(&tag.image.digest);
                part(&json[range.clone()]);
            }
            part(&used_by);
            part(&(self.referrers.len() as u64).to_be_bytes());
            for listed in &self.referrers {
                part(&listed.sha256);
            }
        });
        Ok(Kept::with_json(self, json, etag))
    }
}

/// Append a JSON array of values already written as JSON.
fn push_array<'a>(out: &mut Vec<u8>, values: impl Iterator<Item = &'a Box<RawValue>>) {
    out.push(b'[');
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b']');
}

/// A page of image rows: what `/v1/images` answers (the [`super::views::ImagePage`] of the
/// API description, written from each row's JSON), and what the console shows.
#[derive(Debug)]
pub(crate) struct ImageRows {
    pub(crate) items: Vec<Arc<Rendered>>,
    pub(crate) next_cursor: Option<String>,
}

impl ImageRows {
    /// The page as the catalog keeps it for a caller who sees `teams`: its JSON written from
    /// the rows' (what [`Serialize`] writes, without encoding anything again), and its entity
    /// tag from the rows' digests and the cursor, which determine that JSON, rather than
    /// from hashing the whole of it on every read.
    pub(crate) fn kept(self, teams: Option<&[String]>) -> Result<Kept<ImageRows>, Problem> {
        let cursor = serde_json::to_vec(&self.next_cursor).map_err(|e| Problem::internal(&e))?;
        let size: usize = self.items.iter().map(|r| r.json.get().len() + 1).sum();
        let mut json = Vec::with_capacity(size + cursor.len() + 32);
        json.extend_from_slice(b"{\"items\":");
        push_array(&mut json, self.items.iter().map(|r| &r.json));
        json.extend_from_slice(b",\"next_cursor\":");
        json.extend_from_slice(&cursor);
        json.push(b'}');
        let etag = super::entity_tag_of(teams, |h| {
            h.update(b"\0image rows\0");
            h.update((self.items.len() as u64).to_be_bytes());
            for row in &self.items {
                h.update(row.digest);
            }
            h.update(&cursor);
        });
        Ok(Kept::with_json(self, json, etag))
    }
}

impl Serialize for ImageRows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Items<'a>(&'a [Arc<Rendered>]);
        impl Serialize for Items<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|r| &r.json))
            }
        }
        let mut st = s.serialize_struct("ImagePage", 2)?;
        st.serialize_field("items", &Items(&self.items))?;
        st.serialize_field("next_cursor", &self.next_cursor)?;
        st.end()
    }
}

/// The tuple id a stamp starts with (`(page,item)`), as PostgreSQL writes a `tid`.
pub(crate) fn tuple_id(stamp: &str) -> Option<&str> {
    let end = stamp.find(')')?;
    let tid = &stamp[..=end];
    let inner = tid.strip_prefix('(')?.strip_suffix(')')?;
    let (page, item) = inner.split_once(',')?;
    (page.parse::<u32>().is_ok() && item.parse::<u16>().is_ok()).then_some(tid)
}

/// Rendered rows by stamp.
pub(crate) struct RowCache {
    budget: usize,
    listener: Arc<Listener>,
    inner: Mutex<Bounded<Box<str>, Arc<Rendered>>>,
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl RowCache {
    pub(crate) fn new(budget: usize, listener: Arc<Listener>) -> Self {
        RowCache {
            budget,
            listener,
            inner: Mutex::new(Bounded::new()),
        }
    }

    /// The epoch to read rows under, or `None` when no row may be kept now (off, or not
    /// listening: a reconnection may mean another database).
    pub(crate) fn open(&self) -> Option<u64> {
        if self.budget == 0 {
            return None;
        }
        self.listener.ensure_started();
        self.listener.epoch()
    }

    /// The kept row of each stamp, in order (`None` where none is kept).
    pub(crate) fn get_all(&self, epoch: u64, stamps: &[String]) -> Vec<Option<Arc<Rendered>>> {
        let found: Vec<_> = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.current(epoch, MAX_AGE) {
                stamps
                    .iter()
                    .map(|s| inner.get(s.as_str()).cloned())
                    .collect()
            } else {
                vec![None; stamps.len()]
            }
        };
        let hits = found.iter().filter(|r| r.is_some()).count() as u64;
        count("hit", hits);
        count("miss", found.len() as u64 - hits);
        found
    }

    /// Keep `rows`, read under `epoch`, unless the listener reconnected since.
    pub(crate) fn put_all(
        &self,
        epoch: u64,
        rows: impl IntoIterator<Item = (String, Arc<Rendered>)>,
    ) {
        if self.listener.epoch() != Some(epoch) {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !inner.current(epoch, MAX_AGE) {
            return;
        }
        for (stamp, row) in rows {
            let weight = row.weight() + stamp.len();
            if weight <= self.budget / 64 {
                inner.insert(stamp.into_boxed_str(), row, weight, self.budget);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.len()).unwrap_or(0)
    }
}

fn count(result: &'static str, n: u64) {
    static C: OnceLock<opentelemetry::metrics::Counter<u64>> = OnceLock::new();
    if n == 0 {
        return;
    }
    C.get_or_init(|| {
        opentelemetry::global::meter("imagelib")
            .u64_counter("imagelib.catalog.row_cache")
            .with_unit("{row}")
            .with_description(
                "Image rows of pages read afresh, by whether the row was kept rendered (hit) \
                 or read and rendered (miss)",
            )
            .build()
    })
    .add(n, &[KeyValue::new("result", result)]);
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn rendered(tag: &str) -> Arc<Rendered> {
        let view = view(tag);
        let json = serde_json::value::to_raw_value(&view).expect("JSON");
        Arc::new(Rendered {
            digest: Sha256::digest(json.get().as_bytes()).into(),
            view,
            repo_id: Uuid::nil(),
            json,
            links: OnceLock::new(),
        })
    }

    fn view(tag: &str) -> ImageView {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).expect("raw JSON");
        let at = chrono::DateTime::UNIX_EPOCH;
        ImageView {
            registry_id: Uuid::nil(),
            registry: "r".into(),
            repository: "a/b".into(),
            tag: tag.into(),
            reference: format!("x/a/b:{tag}"),
            digest: "sha256:00".into(),
            media_type: "m".into(),
            artifact_type: None,
            kind: "other".into(),
            model_type: None,
            architectures: vec!["amd64".into()],
            platforms: raw("[]"),
            size: 1,
            created: None,
            first_seen: at,
            last_seen: at,
            updated_at: at,
            valid_to: None,
            labels: raw("{}"),
            annotations: raw("{}"),
            extensions: raw("[]"),
            referrers: raw("[]"),
            hm_tags: vec![],
            approval: None,
            approved: false,
            description: String::new(),
            trust: Default::default(),
            mutated: None,
            pulls: 0,
            last_pulled_at: None,
            digest_pulls: 0,
            digest_last_pulled_at: None,
        }
    }

    #[test]
    fn a_tag_row_writes_what_the_tag_detail_describes() {
        use crate::api::views::{ApprovalView, MutationView, ReadmeView, TagDetail};
        let at = chrono::DateTime::UNIX_EPOCH;
        let approval = || {
            Some(ApprovalView {
                decision: "approved".into(),
                reason: "\"quoted\" reason".into(),
                by: Some("ci".into()),
                at,
                digest: Some("sha256:00".into()),
            })
        };
        let mutations = || {
            vec![MutationView {
                old_digest: "sha256:01".into(),
                new_digest: "sha256:00".into(),
                found_by: "scan".into(),
                seen_at: None,
                at,
            }]
        };
        let readme = || {
            Some(ReadmeView {
                readme: "# Hi\n".into(),
                updated_by: None,
                updated_at: at,
            })
        };
        let row = TagRow {
            image: rendered("1"),
            tag_approval: approval(),
            mutations: mutations(),
            readme: readme(),
            used_by: vec![],
        };
        let detail = TagDetail {
            image: view("1"),
            tag_approval: approval(),
            mutations: mutations(),
            readme: readme(),
            used_by: vec![],
        };
        let written = serde_json::to_string(&row).expect("a tag row");
        let expected = serde_json::to_string(&detail).expect("a tag detail");
        assert_eq!(written, expected);
        let bare = TagRow {
            image: rendered("2"),
            tag_approval: None,
            mutations: vec![],
            readme: None,
            used_by: vec![],
        };
        let value: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&bare).expect("a tag row")).expect("JSON");
        assert_eq!(value["tag"], "2");
        assert_eq!(value["tag_approval"], serde_json::Value::Null);
        assert_eq!(value["mutations"], serde_json::json!([]));
    }

    fn detail(second: &str, readme: &str, referrers: &str) -> RepositoryDetail {
        use crate::api::views::{
            ApprovalView, DeploymentView, DigestReferrers, ReadmeView, RepositoryView,
        };
        let at = chrono::DateTime::UNIX_EPOCH;
        let deployment = DeploymentView {
            deployment_id: Uuid::nil(),
            name: "d".into(),
            namespace: "ns".into(),
            tag: "1".into(),
            digest: "sha256:00".into(),
            workload: "postgres_cluster".into(),
            target: "gitops".into(),
            replicas: 1,
            status: "applied".into(),
            status_detail: None,
            revision: None,
            requested_by: Some("ci".into()),
            requested_at: at,
            updated_at: at,
            policy_violation: None,
        };
        RepositoryDetail {
            repository: RepositoryView {
                registry_id: Uuid::nil(),
                registry: "r".into(),
                name: "a/b".into(),
                kind: "database".into(),
                model_type: None,
                description: "a \"quoted\" description".into(),
                hm_tags: vec!["gold".into()],
                tag_count: 2,
                database_tags: 2,
                model_tags: 0,
                first_seen: at,
                updated_at: at,
                approval: None,
            },
            rule_id: Some("rule".into()),
            rule_hm_tags: vec![],
            curator_hm_tags: vec!["gold".into()],
            readme: Some(ReadmeView {
                readme: readme.into(),
                updated_by: None,
                updated_at: at,
            }),
            tags: vec![
                TagRow {
                    image: rendered("1"),
                    tag_approval: Some(ApprovalView {
                        decision: "approved".into(),
                        reason: "ok".into(),
                        by: None,
                        at,
                        digest: Some("sha256:00".into()),
                    }),
                    mutations: vec![],
                    readme: None,
                    used_by: vec![deployment.clone()],
                },
                TagRow {
                    image: rendered(second),
                    tag_approval: None,
                    mutations: vec![],
                    readme: Some(ReadmeView {
                        readme: readme.into(),
                        updated_by: None,
                        updated_at: at,
                    }),
                    used_by: vec![],
                },
            ],
            used_by: vec![deployment],
            referrers: vec![Arc::new(Listed::new(DigestReferrers {
                digest: "sha256:00".into(),
                tags: vec!["1".into(), second.into()],
                platform: None,
                referrers: vec![ReferrerView {
                    digest: referrers.into(),
                    kind: "signature".into(),
                    artifact_type: None,
                }],
            }))],
        }
    }

    #[test]
    fn a_detail_is_written_around_its_rows_as_serde_writes_it() {
        let expected = serde_json::to_vec(&detail("2", "# Hi\n", "sha256:aa")).expect("JSON");
        let kept = detail("2", "# Hi\n", "sha256:aa").kept(None).expect("kept");
        assert_eq!(
            String::from_utf8_lossy(kept.json()),
            String::from_utf8_lossy(&expected)
        );
        let etag = |d: RepositoryDetail, teams: Option<&[String]>| {
            d.kept(teams)
                .expect("kept")
                .etag()
                .cloned()
                .expect("an entity tag")
        };
        let base = etag(detail("2", "# Hi\n", "sha256:aa"), None);
        assert_eq!(base, etag(detail("2", "# Hi\n", "sha256:aa"), None));
        // Any part of the body changes the tag: a row, a tag's own member, the head, the
        // tail, and the teams of the caller.
        assert_ne!(base, etag(detail("3", "# Hi\n", "sha256:aa"), None));
        let mut member = detail("2", "# Hi\n", "sha256:aa");
        member.tags[1].readme = None;
        assert_ne!(base, etag(member, None));
        let mut head = detail("2", "# Hi\n", "sha256:aa");
        head.readme = None;
        assert_ne!(base, etag(head, None));
        assert_ne!(base, etag(detail("2", "# Hi\n", "sha256:bb"), None));
        let mut used = detail("2", "# Hi\n", "sha256:aa");
        used.used_by.clear();
        assert_ne!(base, etag(used, None));
        let mut listing = detail("2", "# Hi\n", "sha256:aa");
        listing.referrers.push(listing.referrers[0].clone());
        assert_ne!(base, etag(listing, None));
        assert_ne!(
            base,
            etag(detail("2", "# Hi\n", "sha256:aa"), Some(&["t".into()]))
        );
    }

    #[test]
    fn links_read_a_rows_referrers_and_platform_manifests() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).expect("raw JSON");
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let mut v = view("1");
        v.platforms = raw(&format!(
            r#"[{{"os":"linux","architecture":"arm64","variant":"v8","digest":"{}"}},
                {{"os":"linux","architecture":"amd64","digest":"{}"}},
                {{"os":"linux","architecture":"s390x"}}]"#,
            digest('a'),
            digest('b')
        ));
        v.referrers = raw(&format!(
            r#"[{{"digest":"{}","kind":"sbom","artifact_type":"application/spdx+json"}}]"#,
            digest('c')
        ));
        let row = Rendered {
            digest: [0; 32],
            view: v,
            repo_id: Uuid::nil(),
            json: raw("{}"),
            links: OnceLock::new(),
        };
        let listed = &row.links().listed;
        let entry = |l: &Listed| {
            (
                l.digest.clone(),
                l.tags.clone(),
                l.platform.clone(),
                l.referrers
                    .iter()
                    .map(|r| r.digest.clone())
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            listed.iter().map(|l| entry(l)).collect::<Vec<_>>(),
            vec![
                (
                    "sha256:00".to_owned(),
                    vec!["1".to_owned()],
                    None,
                    vec![digest('c')]
                ),
                (
                    digest('a'),
                    vec!["1".into()],
                    Some("linux/arm64/v8".into()),
                    vec![]
                ),
                (
                    digest('b'),
                    vec!["1".into()],
                    Some("linux/amd64".into()),
                    vec![]
                ),
            ]
        );
        assert_eq!(listed[0].referrers[0].kind, "sbom");
        assert_eq!(
            listed[0].referrers[0].artifact_type.as_deref(),
            Some("application/spdx+json")
        );
        // Each entry's JSON is the entry's.
        for l in listed {
            assert_eq!(
                serde_json::to_string(&**l).expect("JSON"),
                serde_json::to_string(&l.entry).expect("JSON")
            );
        }
        // A list that does not read is no list, not an error.
        let mut v = view("2");
        v.referrers = raw(r#"[{"digest":"nope"}]"#);
        let links = Links::of(&v);
        assert_eq!(links.listed.len(), 1);
        assert!(links.listed[0].referrers.is_empty());
    }

    #[test]
    fn a_listing_merges_shared_digests_and_takes_the_repositorys_lists() {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        // The first 16 bytes of `f`'s, then smaller: listed before it, apart from it.
        let near_f = format!("sha256:{}0", "f".repeat(63));
        let row = |tag: &str, own: &str, platforms: &[char], referrers: &str| {
            let mut v = view(tag);
            v.digest = own.to_owned();
            let list: Vec<String> = platforms
                .iter()
                .map(|p| {
                    format!(
                        r#"{{"os":"linux","architecture":"{p}","digest":"{}"}}"#,
                        digest(*p)
                    )
                })
                .collect();
            v.platforms = RawValue::from_string(format!("[{}]", list.join(","))).expect("JSON");
            v.referrers = RawValue::from_string(referrers.to_owned()).expect("JSON");
            Arc::new(Rendered {
                digest: [0; 32],
                json: RawValue::from_string("{}".to_owned()).expect("JSON"),
                view: v,
                repo_id: Uuid::nil(),
                links: OnceLock::new(),
            })
        };
        let signature = |d: char| {
            serde_json::to_string(&[Referrer {
                digest: digest(d).parse().expect("a digest"),
                kind: imagelib_events::model::ReferrerKind::Signature,
                artifact_type: None,
            }])
            .expect("JSON")
        };
        // Tags in tag order: `1` and `3` share their index `f`; `2`'s index shares the
        // platform manifest `a` with `1`'s; `4` and `5` list a signature of their own.
        let rows = vec![
            row("1", &digest('f'), &['a', 'b'], "[]"),
            row("2", &digest('e'), &['a'], "[]"),
            row("3", &digest('f'), &['a', 'b'], "[]"),
            row("4", &digest('d'), &[], &signature('8')),
            row("5", &near_f, &[], &signature('7')),
        ];
        let raw = |s: String| RawValue::from_string(s).expect("JSON");
        // Out of order, as a caller may give them: `b` and `e` list what no row does, `d`
        // and `near_f` what their row already does.
        let lists = KeptLists::new(vec![
            (digest('e'), raw(signature('9'))),
            (near_f.clone(), raw(signature('7'))),
            (digest('b'), raw(signature('9'))),
            (digest('d'), raw(signature('8'))),
        ]);
        let listing = listing(&rows, &lists);
        type Shown = (String, Vec<String>, Option<String>, Vec<String>);
        let shown: Vec<Shown> = listing
            .iter()
            .map(|l| {
                (
                    l.digest.clone(),
                    l.tags.clone(),
                    l.platform.clone(),
                    l.referrers.iter().map(|r| r.digest.clone()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    digest('a'),
                    vec!["1".into(), "2".into(), "3".into()],
                    Some("linux/a".into()),
                    vec![]
                ),
                (
                    digest('b'),
                    vec!["1".into(), "3".into()],
                    Some("linux/b".into()),
                    vec![digest('9')]
                ),
                (digest('d'), vec!["4".into()], None, vec![digest('8')]),
                (digest('e'), vec!["2".into()], None, vec![digest('9')]),
                (near_f, vec!["5".into()], None, vec![digest('7')]),
                (digest('f'), vec!["1".into(), "3".into()], None, vec![]),
            ]
        );
        // An entry no other row shares, whose list is the row's own, is the row's, as kept;
        // one the repository lists otherwise is made anew.
        assert!(Arc::ptr_eq(&listing[2], &rows[3].links().listed[0]));
        assert!(Arc::ptr_eq(&listing[4], &rows[4].links().listed[0]));
        assert!(!Arc::ptr_eq(&listing[3], &rows[1].links().listed[0]));
        // Merged entries are written as their entry.
        for l in &listing {
            assert_eq!(
                serde_json::to_string(&**l).expect("JSON"),
                serde_json::to_string(&l.entry).expect("JSON")
            );
        }
    }

    fn cache(budget: usize) -> RowCache {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("a lazy pool");
        let listener = Arc::new(Listener::new(pool));
        listener.pretend_connected();
        RowCache::new(budget, listener)
    }

    #[test]
    fn a_stamp_starts_with_its_tuple_id() {
        assert_eq!(tuple_id("(12,3):745:700:690:uuid:16"), Some("(12,3)"));
        assert_eq!(tuple_id("(0,1)"), Some("(0,1)"));
        for bad in [
            "",
            "12,3",
            "(12,3",
            "(a,3):1",
            "(1,99999):1",
            "(1;2):3",
            "(,):1",
        ] {
            assert_eq!(tuple_id(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn kept_rows_are_found_by_stamp_until_the_listener_reconnects() {
        let c = cache(1 << 20);
        let epoch = c.open().expect("listening");
        let stamps = vec!["(0,1):5:4:3:id:a".to_owned(), "(0,2):5:4:3:id:b".to_owned()];
        assert!(c.get_all(epoch, &stamps).iter().all(Option::is_none));
        c.put_all(epoch, [(stamps[0].clone(), rendered("a"))]);
        let found = c.get_all(epoch, &stamps);
        assert_eq!(found[0].as_ref().map(|r| r.tag.as_str()), Some("a"));
        assert!(found[1].is_none());
        // Another stamp of the same tuple (written again): not that row.
        assert!(c.get_all(epoch, &["(0,1):6:4:3:id:a".to_owned()])[0].is_none());

        // A reconnection: nothing from before is served, nor kept if read before it.
        c.listener.pretend_connected();
        let later = c.open().expect("listening");
        assert_ne!(later, epoch);
        assert!(c.get_all(later, &stamps)[0].is_none());
        c.put_all(epoch, [(stamps[1].clone(), rendered("b"))]);
        assert_eq!(c.len(), 0);
        // Not listening: not kept at all.
        c.listener.pretend_lost();
        assert_eq!(c.open(), None);
    }

    #[tokio::test]
    async fn the_budget_bounds_the_rows_kept() {
        let one = rendered("t").weight() + "(0,0):1:1:1:id:t".len();
        let c = cache(one * 64 * 3);
        let epoch = c.open().expect("listening");
        for i in 0..500u32 {
            c.put_all(epoch, [(format!("(0,{i}):1:1:1:id:t"), rendered("t"))]);
        }
        let bytes = c.inner.lock().unwrap().bytes();
        assert!(bytes <= one * 64 * 3, "{bytes}");
        assert!(c.len() >= 64 * 3 - 4 && c.len() <= 64 * 3, "{}", c.len());
        assert_eq!(cache(0).open(), None);
    }

    #[tokio::test]
    async fn no_row_is_kept_longer_than_the_max_age() {
        let c = cache(1 << 20);
        let epoch = c.open().expect("listening");
        let stamp = "(0,1):5:4:3:id:a".to_owned();
        c.put_all(epoch, [(stamp.clone(), rendered("a"))]);
        if Instant::now().checked_sub(MAX_AGE * 2).is_some() {
            c.inner.lock().unwrap().age_by(MAX_AGE * 2);
            assert!(c.get_all(epoch, &[stamp])[0].is_none());
            assert_eq!(c.len(), 0);
        }
    }

    #[test]
    fn a_page_of_rows_is_the_api_page() {
        let items = vec![rendered("a"), rendered("b")];
        let views: Vec<serde_json::Value> = items
            .iter()
            .map(|r| serde_json::to_value(&r.view).unwrap())
            .collect();
        let page = ImageRows {
            items,
            next_cursor: Some("c".into()),
        };
        let json: serde_json::Value = serde_json::to_value(&page).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"items": views, "next_cursor": "c"})
        );
        // Kept, it is the same JSON, written from the rows.
        let serialised = serde_json::to_vec(&page).unwrap();
        assert_eq!(page.kept(None).unwrap().json(), serialised.as_slice());
        let last = ImageRows {
            items: vec![rendered("a")],
            next_cursor: None,
        };
        let serialised = serde_json::to_vec(&last).unwrap();
        assert_eq!(last.kept(None).unwrap().json(), serialised.as_slice());
    }

    #[test]
    fn a_page_tag_changes_with_any_row_and_the_cursor_and_differs_by_teams() {
        let tag = |tags: &[&str], cursor: Option<&str>, teams: Option<&[String]>| {
            ImageRows {
                items: tags.iter().map(|t| rendered(t)).collect(),
                next_cursor: cursor.map(str::to_owned),
            }
            .kept(teams)
            .unwrap()
            .etag()
            .cloned()
            .expect("a tag")
        };
        let base = tag(&["a", "b"], Some("c"), None);
        assert_eq!(base, tag(&["a", "b"], Some("c"), None));
        assert_ne!(base, tag(&["a", "x"], Some("c"), None));
        assert_ne!(base, tag(&["b", "a"], Some("c"), None));
        assert_ne!(base, tag(&["a", "b"], None, None));
        assert_ne!(base, tag(&["a", "b"], Some("c"), Some(&["db".to_owned()])));
    }
}
