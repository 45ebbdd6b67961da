//! The catalog's read queries: filters in, one SQL statement out.
//!
//! Every list is one statement (visibility, filters, keyset pagination and the joins it
//! shows), so a page costs one round trip. [`Sql::literal`] renders the same statement with
//! its parameters inlined, which is what the bench hands to `pgbench`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Uuid(Uuid),
    Text(String),
    TextArray(Vec<String>),
    Time(DateTime<Utc>),
    Int(i64),
}

/// An SQL statement and its parameters (`$1`, `$2`, … in order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub(crate) fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }

    /// A row count for `LIMIT`, written into the statement rather than bound: for `LIMIT $n`
    /// PostgreSQL's generic plan assumes a tenth of the rows and costs it far above any
    /// custom plan, so a prepared list would be planned again on every execution (in
    /// pgbench, a page's statement ran at a third of its prepared rate when planned each
    /// time). Each page size is then a statement of its own, planned once per connection.
    pub fn limit(n: i64) -> String {
        n.clamp(0, 1_000_000).to_string()
    }

    /// The statement with its parameters inlined as literals (for `pgbench -f`).
    pub fn literal(&self) -> String {
        let mut out = self.text.clone();
        // From the highest index down, so `$1` does not clobber `$10`.
        for (i, b) in self.binds.iter().enumerate().rev() {
            let lit = match b {
                Bind::Uuid(u) => format!("'{u}'::uuid"),
                Bind::Text(s) => quote(s),
                Bind::TextArray(v) => format!(
                    "ARRAY[{}]::text[]",
                    v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(",")
                ),
                Bind::Time(t) => format!("'{}'::timestamptz", t.to_rfc3339()),
                Bind::Int(n) => n.to_string(),
            };
            out = out.replace(&format!("${}", i + 1), &lit);
        }
        out
    }

    /// A sqlx query with the parameters bound.
    pub fn query(&self) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let mut q = sqlx::query(&self.text);
        for b in &self.binds {
            q = match b {
                Bind::Uuid(u) => q.bind(*u),
                Bind::Text(s) => q.bind(s.as_str()),
                Bind::TextArray(v) => q.bind(v.as_slice()),
                Bind::Time(t) => q.bind(*t),
                Bind::Int(n) => q.bind(*n),
            };
        }
        q
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// How `/v1/images` is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    /// Repository, then tag, then registry (ascending).
    #[default]
    Name,
    /// Most recently changed first (the version's start).
    Updated,
}

/// Where the previous page ended. Opaque to clients (base64url JSON).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "s", rename_all = "lowercase")]
pub enum Cursor {
    Name {
        r: String,
        t: String,
        g: Uuid,
    },
    Updated {
        /// Microseconds since the epoch.
        u: i64,
        i: Uuid,
        t: String,
    },
    Repo {
        n: String,
        g: Uuid,
    },
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(s: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Who is asking: `None` sees every registry (admins), otherwise registries with no
/// visibility or one of these teams.
pub type Teams = Option<Vec<String>>;

/// The filters of `/v1/images` and `/v1/models`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ImageFilter {
    pub teams: Teams,
    pub registry: Option<Uuid>,
    pub repository: Option<String>,
    pub kind: Option<String>,
    pub model_type: Option<String>,
    pub hm_tag: Option<String>,
    pub arch: Option<String>,
    pub approved: Option<bool>,
    /// Trust filters: a verified signature; the highest severity at most this level
    /// (`tag_versions.max_severity`, items without a report excluded); an SBOM; the verdict.
    pub signed: Option<bool>,
    pub max_severity: Option<i16>,
    pub has_sbom: Option<bool>,
    pub policy: Option<String>,
    /// Tags ever found mutated (`image.tag_mutated`), or the others.
    pub mutated: Option<bool>,
    /// A `to_tsquery('simple', …)` expression (see [`tsquery`]).
    pub q: Option<String>,
    pub as_of: Option<DateTime<Utc>>,
    pub sort: Sort,
    pub after: Option<Cursor>,
    /// Rows fetched (the page size plus one, to know whether there is a next page).
    pub fetch: i64,
}

impl ImageFilter {
    /// The repository a name-ordered page goes on from (itself included: the cursor's
    /// repository may have more tags), if it has a cursor.
    pub fn name_from(&self) -> Option<(&str, bool)> {
        match &self.after {
            Some(Cursor::Name { r, .. }) => Some((r.as_str(), true)),
            _ => None,
        }
    }
}

/// [`IMAGE_COLUMNS`] with the registry's label, the repository's HM tags and its description
/// read from where a statement has them.
macro_rules! image_columns {
    ($label:literal, $repository_hm_tags:literal, $description:literal) => {
        concat!(
            "t.registry_id AS c0, ",
            $label,
            " AS c1, t.repository AS c2, t.tag AS c3, \
     t.digest AS c4, t.media_type AS c5, t.artifact_type AS c6, t.kind AS c7, t.model_type AS c8, \
     t.archs AS c9, t.platforms::text AS c10, t.size AS c11, t.created AS c12, t.first_seen AS c13, \
     t.last_seen AS c14, t.valid_from AS c15, t.valid_to AS c16, t.labels::text AS c17, \
     t.annotations::text AS c18, t.extensions::text AS c19, \
     COALESCE(t.listed_referrers, t.referrers)::text AS c20, \
     t.hm_tags AS c21, ",
            $repository_hm_tags,
            " AS c22, t.approval AS c23, ",
            $description,
            " AS c24, t.repo_id AS c25, \
     t.trust::text AS c26, CASE WHEN t.mutated THEN t.mutation::text END AS c27, \
     t.tag_pulls AS c28, t.tag_last_pulled_at AS c29, t.digest_pulls AS c30, \
     t.digest_last_pulled_at AS c31"
        )
    };
}

/// The columns of an image row, in the order `api` reads them, for the current catalog:
/// every one is read from the row the page scans, its registry and its repository. The
/// projection keeps on the current version what would otherwise be looked up per row: the
/// pulls under the tag and of its digest, the latest mutation of a marked tag, and the
/// referrers as last listed for the digest (`trust_referrers`; else as the tag event carried
/// them). Each column is named (`c0`…) so that the bench can load a page's rows into a flat
/// table.
pub const IMAGE_COLUMNS: &str = image_columns!("g.label", "r.hm_tags", "r.description");

/// [`IMAGE_COLUMNS`] with each image's repository and registry read from a search name's
/// matching repositories (`m`: arrays in the order of `m.ids`), not joined per row
/// ([`images_of`]).
const NAMED_IMAGE_COLUMNS: &str = image_columns!(
    "m.gl[array_position(m.ids, t.repo_id)]",
    "m.rh[array_position(m.ids, t.repo_id)]::text[]",
    "m.rd[array_position(m.ids, t.repo_id)]"
);

/// Before every row of a name: no tag is empty.
const NIL_UUID: &str = "'00000000-0000-0000-0000-000000000000'::uuid";

/// How many columns [`IMAGE_COLUMNS`] has.
pub const IMAGE_COLUMN_COUNT: usize = 32;

macro_rules! image_stamp {
    () => {
        image_stamp!("r.xmin", "g.xmin")
    };
    ($repository_xmin:literal, $registry_xmin:literal) => {
        concat!(
            "concat_ws(':', t.ctid, t.xmin, ",
            $repository_xmin,
            ", ",
            $registry_xmin,
            ", t.repo_id, t.tag)"
        )
    };
}

/// What identifies the content of a current image row ([`crate::api`]'s row cache): the
/// version's tuple id (to read it back), the transactions that last wrote the version, its
/// repository and its registry, and the version's identity. Every column of
/// [`IMAGE_COLUMNS`] comes from those three rows.
pub const IMAGE_STAMP: &str = image_stamp!();

/// What a list's statement reads for each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Every column of the page ([`IMAGE_COLUMNS`], or [`IMAGE_COLUMNS_AS_OF`]).
    Full,
    /// The row's stamp ([`IMAGE_STAMP`]) alone (and, for a search's names, the name
    /// order's key its outer query sorts on). Only for the current catalog.
    Stamps,
}

/// The columns [`Shape::Stamps`] reads.
pub const STAMP_COLUMNS: &str = concat!(image_stamp!(), " AS s");

/// The columns [`Shape::Stamps`] reads for a search's names ([`images_named`]): the same
/// stamp, its repository's and registry's `xmin` from the name's matching repositories
/// (`m`, as [`NAMED_IMAGE_COLUMNS`]).
pub const NAMED_STAMP_COLUMNS: &str = concat!(
    image_stamp!(
        "m.rx[array_position(m.ids, t.repo_id)]",
        "m.gx[array_position(m.ids, t.repo_id)]"
    ),
    " AS s, t.registry_id AS c0, t.repository AS c2, t.tag AS c3"
);

/// The current image rows at the tuple ids `tids` (from stamps), each with its stamp after
/// [`IMAGE_COLUMNS`]: a TID scan.
pub fn image_rows_at(tids: &[String]) -> Sql {
    let mut sql = Sql::default();
    let p = sql.bind(Bind::TextArray(tids.to_vec()));
    sql.text = format!(
        "SELECT {IMAGE_COLUMNS}, {IMAGE_STAMP} AS s FROM tag_versions t \
         LEFT JOIN registries g ON g.id = t.registry_id \
         JOIN repositories r ON r.id = t.repo_id \
         WHERE t.ctid = ANY({p}::tid[]) AND t.valid_to IS NULL"
    );
    sql
}

/// The same columns for any version (`as_of`): a closed version's pulls and listed referrers
/// are looked up, as they are not kept on it (nor is its mutation mark, which only a current
/// version shows).
pub const IMAGE_COLUMNS_AS_OF: &str = "t.registry_id, g.label, t.repository, t.tag, t.digest, t.media_type, \
     t.artifact_type, t.kind, t.model_type, t.archs, t.platforms::text, t.size, t.created, t.first_seen, \
     t.last_seen, t.valid_from, t.valid_to, t.labels::text, t.annotations::text, t.extensions::text, \
     COALESCE((SELECT x.referrers::text FROM trust_referrers x \
        WHERE x.repo_id = t.repo_id AND x.digest = t.digest), t.referrers::text), t.hm_tags, r.hm_tags, \
     t.approval, r.description, t.repo_id, t.trust::text, \
     CASE WHEN t.mutated THEN t.mutation::text END, \
     COALESCE(tp.pulls, 0), tp.last, COALESCE(dp.pulls, 0), dp.last";

/// The lookups [`IMAGE_COLUMNS_AS_OF`] reads the pulls from.
const AS_OF_PULLS: &str = "LEFT JOIN LATERAL (SELECT LEAST(COALESCE(sum(p.pulls), 0), 9223372036854775807)::int8 AS pulls, \
        max(p.last_pulled_at) AS last FROM pulls p WHERE p.repo_id = t.repo_id AND p.tag = t.tag) tp ON true \
     LEFT JOIN LATERAL (SELECT LEAST(COALESCE(sum(p.pulls), 0), 9223372036854775807)::int8 AS pulls, \
        max(p.last_pulled_at) AS last FROM pulls p WHERE p.repo_id = t.repo_id AND p.digest = t.digest) dp ON true";

fn visibility(sql: &mut Sql, teams: &Teams, as_of: Option<&str>) -> String {
    let mut w = match as_of {
        Some(a) => format!("(g.removed_at IS NULL OR g.removed_at > {a})"),
        None => "g.removed_at IS NULL".to_owned(),
    };
    if let Some(teams) = teams {
        let p = sql.bind(Bind::TextArray(teams.clone()));
        w.push_str(&format!(
            " AND (cardinality(g.visibility) = 0 OR g.visibility && {p})"
        ));
    }
    w
}

/// Whether the statement of `f` may be prepared once and its plan cached: every list but a
/// search ordered otherwise than by name or `as_of`, which is planned with its words each
/// time, since a generic plan does not know how few repositories match and may read the
/// name index from the cursor on. (A name-ordered search is two statements, see
/// [`search_names`].)
pub fn cacheable(f: &ImageFilter) -> bool {
    f.q.is_none() || by_name_search(f)
}

/// Whether `f` is a search read name by name: [`search_names`] gives the next matching
/// names, [`images_named`] the page's rows from their ranges.
pub fn by_name_search(f: &ImageFilter) -> bool {
    f.q.is_some() && f.as_of.is_none() && matches!(f.sort, Sort::Name)
}

/// The repositories' names in order from `from` on (the name itself included when
/// `inclusive`: a cursor's repository may have more tags), at most `budget` rows, each with
/// whether it matches the search `q`: a word in many repositories finds a page's worth of
/// names in the first few hundred, read in order from the name index and stopped there.
/// [`SearchNames`] says what the rows give, and [`search_names`] goes on from there for a
/// rarer word.
pub fn search_scan(q: &str, from: Option<(&str, bool)>, budget: i64) -> Sql {
    let mut sql = Sql::default();
    let p = sql.bind(Bind::Text(q.to_owned()));
    let from = from_name(&mut sql, from, "WHERE");
    let limit = Sql::limit(budget);
    sql.text = format!(
        "SELECT s.name, s.search @@ to_tsquery('simple', {p}) FROM repositories s{from} \
         ORDER BY s.name LIMIT {limit}"
    );
    sql
}

/// The next `n` names of repositories that match the search `q`, in name order, from
/// `from` on: the matches from the search index, sorted (few, for a word that
/// [`search_scan`] did not find often enough).
pub fn search_names(q: &str, from: Option<(&str, bool)>, n: i64) -> Sql {
    let mut sql = Sql::default();
    let p = sql.bind(Bind::Text(q.to_owned()));
    let from = from_name(&mut sql, from, "AND");
    let limit = Sql::limit(n);
    sql.text = format!(
        "SELECT s.name FROM repositories s WHERE s.search @@ to_tsquery('simple', {p}){from} \
         GROUP BY s.name ORDER BY s.name LIMIT {limit}"
    );
    sql
}

fn from_name(sql: &mut Sql, from: Option<(&str, bool)>, keyword: &str) -> String {
    match from {
        Some((name, inclusive)) => {
            let a = sql.bind(Bind::Text(name.to_owned()));
            format!(
                " {keyword} s.name {} {a}",
                if inclusive { ">=" } else { ">" }
            )
        }
        None => String::new(),
    }
}

/// How many repository rows [`search_scan`] reads for `n` names: a word in one repository
/// of eight fills them; a rarer one goes to the search index after that many rows.
pub fn search_budget(n: i64) -> i64 {
    n.saturating_mul(8).clamp(256, 4096)
}

/// What the rows of [`search_scan`] give: the matching names (each once, in order, at most
/// `n`), and whether [`search_names`] must go on after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchNames {
    pub names: Vec<String>,
    /// The search index is to be asked for the names after this one (the scan read its
    /// whole budget before finding `n`); `None`: the names are all there is up to `n`.
    pub continue_after: Option<String>,
}

impl SearchNames {
    pub fn from_scan(rows: impl IntoIterator<Item = (String, bool)>, n: i64, budget: i64) -> Self {
        let n = usize::try_from(n).unwrap_or(0);
        let mut names: Vec<String> = Vec::new();
        let mut read = 0i64;
        let mut last = None;
        for (name, matches) in rows {
            read += 1;
            if matches && names.last() != Some(&name) {
                if names.len() == n {
                    return SearchNames {
                        names,
                        continue_after: None,
                    };
                }
                names.push(name.clone());
            }
            last = Some(name);
        }
        let continue_after = match last {
            // The budget ran out: more repositories follow the last one read (which may be
            // in several registries: its other rows are asked for again).
            Some(last) if read >= budget && names.len() < n => Some(last),
            _ => None,
        };
        SearchNames {
            names,
            continue_after,
        }
    }

    /// Adds the names [`search_names`] gave after `continue_after` (asked for inclusively,
    /// so its first may be the last name already here), up to `n` in all.
    pub fn add_from_index(&mut self, names: impl IntoIterator<Item = String>, n: i64) {
        let n = usize::try_from(n).unwrap_or(0);
        for name in names {
            if self.names.len() >= n {
                break;
            }
            if self.names.last() != Some(&name) {
                self.names.push(name);
            }
        }
    }
}

/// The `/v1/images` statement. A name-ordered search reads the matching names from the
/// search index here (every match, sorted); the API reads it as [`search_names`] and
/// [`images_named`] instead.
pub fn images(f: &ImageFilter) -> Sql {
    images_of(f, None, Shape::Full)
}

/// Where the page of a name-ordered search ([`by_name_search`]) takes its names from.
#[derive(Debug, Clone, Copy)]
pub enum Names<'a> {
    /// Found beforehand ([`crate::search::next_names`]), in order.
    Given(&'a [String]),
    /// In the same statement: the names of the words `term` (the search's only term, of
    /// ASCII letters and digits) begins, from the cursor's repository on, at most `n`
    /// ([`crate::search::words_cte`]).
    ByWord { term: &'a str, n: i64 },
}

/// [`images`], [`images_named`] or [`images_by_word`], read as `shape` (`Stamps` is
/// ignored for `as_of`).
pub fn images_shaped(f: &ImageFilter, names: Option<Names<'_>>, shape: Shape) -> Sql {
    images_of(f, names, shape)
}

/// The page of a name-ordered search ([`by_name_search`]) among the repositories `names`
/// (from [`search_names`], in order): each name's repositories that match and the caller
/// sees, then the name's rows of those repositories in order from the cursor (a range of
/// `tag_versions_name`), name after name until the page is full.
pub fn images_named(f: &ImageFilter, names: &[String]) -> Sql {
    images_of(f, Some(Names::Given(names)), Shape::Full)
}

/// [`images_named`] with the names found in the same statement: the names of the words
/// `term` begins (the search's only term), at most as many as the page has rows. A page
/// that comes back short is read again the other ways ([`crate::search`]): the term may
/// stand for too many words, or other filters hide the names' rows.
pub fn images_by_word(f: &ImageFilter, term: &str, shape: Shape) -> Sql {
    images_of(
        f,
        Some(Names::ByWord {
            term,
            n: f.fetch.max(1),
        }),
        shape,
    )
}

fn images_of(f: &ImageFilter, names: Option<Names<'_>>, shape: Shape) -> Sql {
    let mut sql = Sql::default();
    let mut wh: Vec<String> = Vec::new();
    let as_of = f.as_of.map(|t| sql.bind(Bind::Time(t)));
    match &as_of {
        Some(a) => wh.push(format!(
            "t.valid_from <= {a} AND (t.valid_to IS NULL OR t.valid_to > {a})"
        )),
        None => wh.push("t.valid_to IS NULL".into()),
    }
    // Visibility as one opaque condition on the outer join's registry: the registries can
    // only be matched to the rows the scan yields, never drive the scan (once per registry,
    // then a sort). A tag without a registry row is not shown, as with an inner join.
    let names = names.filter(|_| by_name_search(f));
    let visible = visibility(&mut sql, &f.teams, as_of.as_deref());
    let visible = format!("COALESCE(g.id IS NOT NULL AND {visible}, false)");
    // A search's names check each repository once (below), not each row.
    if names.is_none() {
        wh.push(visible.clone());
    }
    // What a search's names aggregate of their matching repositories beside their ids.
    let mut repos = Vec::new();
    if let Some(r) = f.registry {
        let p = sql.bind(Bind::Uuid(r));
        wh.push(format!("t.registry_id = {p}"));
    }
    if let Some(r) = &f.repository {
        let p = sql.bind(Bind::Text(r.clone()));
        wh.push(format!("t.repository = {p}"));
    }
    if let Some(k) = &f.kind {
        let p = sql.bind(Bind::Text(k.clone()));
        wh.push(format!("t.kind = {p}"));
    }
    if let Some(m) = &f.model_type {
        let p = sql.bind(Bind::Text(m.clone()));
        wh.push(format!("t.model_type = {p}"));
    }
    if let Some(h) = &f.hm_tag {
        let p = sql.bind(Bind::TextArray(vec![h.clone()]));
        if names.is_some() {
            repos.push(format!(
                "array_agg(r.id) FILTER (WHERE r.hm_tags @> {p}) AS hm"
            ));
            wh.push(format!("(t.hm_tags @> {p} OR t.repo_id = ANY(m.hm))"));
        } else {
            wh.push(format!("(t.hm_tags @> {p} OR r.hm_tags @> {p})"));
        }
    }
    if let Some(a) = &f.arch {
        let p = sql.bind(Bind::TextArray(vec![a.clone()]));
        wh.push(format!("t.archs @> {p}"));
    }
    match f.approved {
        Some(true) => wh.push("t.approval = 'approved'".into()),
        Some(false) => wh.push("t.approval IS DISTINCT FROM 'approved'".into()),
        None => {}
    }
    match f.signed {
        Some(true) => wh.push("t.signed".into()),
        Some(false) => wh.push("NOT t.signed".into()),
        None => {}
    }
    if let Some(level) = f.max_severity {
        // A constant, not a parameter: the planner matches it to the threshold's partial
        // index (`tag_versions_severity_le<level>`) only when it can see it. No `IS NOT
        // NULL` beside it: the comparison already excludes NULL (and implies the predicate
        // of `tag_versions_severity`), and the planner, taking both as independent, would
        // count the share of versions without a report twice and expect a page of 1 row
        // (then read every match with a bitmap scan and sort them).
        wh.push(format!("t.max_severity <= {}", level.clamp(0, 4)));
    }
    match f.has_sbom {
        Some(true) => wh.push("t.has_sbom".into()),
        Some(false) => wh.push("NOT t.has_sbom".into()),
        None => {}
    }
    if let Some(v) = &f.policy {
        let p = sql.bind(Bind::Text(v.clone()));
        wh.push(format!("t.policy = {p}"));
    }
    match f.mutated {
        Some(true) => wh.push("t.mutated".into()),
        Some(false) => wh.push("NOT t.mutated".into()),
        None => {}
    }
    // For a search's names: the condition on each repository of a name (a name can be in
    // several registries, and match in one only), and where each name's rows begin.
    let mut search = String::new();
    let mut from_row = format!("''::text AS ft, {NIL_UUID} AS fg");
    if let Some(q) = &f.q {
        let p = sql.bind(Bind::Text(q.clone()));
        let matches = format!("r.search @@ to_tsquery('simple', {p})");
        if names.is_some() {
            search = format!(" AND {matches}");
        } else {
            wh.push(matches);
            wh.push(format!(
                "t.repository = ANY(ARRAY(SELECT s.name FROM repositories s \
                 WHERE s.search @@ to_tsquery('simple', {p})))"
            ));
        }
    }
    let order = match (&f.sort, &f.after) {
        (Sort::Name, after) => {
            if let Some(Cursor::Name { r, t, g }) = after {
                let (a, b, c) = (
                    sql.bind(Bind::Text(r.clone())),
                    sql.bind(Bind::Text(t.clone())),
                    sql.bind(Bind::Uuid(*g)),
                );
                if names.is_some() {
                    // Each name is read from after the cursor's tag and registry in the
                    // cursor's name, else from its first row.
                    from_row = format!(
                        "CASE WHEN u.name = {a} THEN {b} ELSE ''::text END AS ft, \
                         CASE WHEN u.name = {a} THEN {c} ELSE {NIL_UUID} END AS fg"
                    );
                } else {
                    wh.push(format!(
                        "(t.repository, t.tag, t.registry_id) > ({a}, {b}, {c})"
                    ));
                }
            }
            "t.repository, t.tag, t.registry_id"
        }
        (Sort::Updated, after) => {
            if let Some(Cursor::Updated { u, i, t }) = after {
                let at = DateTime::<Utc>::from_timestamp_micros(*u).unwrap_or_default();
                let (a, b, c) = (
                    sql.bind(Bind::Time(at)),
                    sql.bind(Bind::Uuid(*i)),
                    sql.bind(Bind::Text(t.clone())),
                );
                wh.push(format!(
                    "(t.valid_from, t.repo_id, t.tag) < ({a}, {b}, {c})"
                ));
            }
            "t.valid_from DESC, t.repo_id DESC, t.tag DESC"
        }
    };
    let limit = Sql::limit(f.fetch);
    let (columns, lookups) = match (f.as_of, shape) {
        (None, Shape::Full) if names.is_some() => (NAMED_IMAGE_COLUMNS, ""),
        (None, Shape::Full) => (IMAGE_COLUMNS, ""),
        (None, Shape::Stamps) if names.is_some() => (NAMED_STAMP_COLUMNS, ""),
        (None, Shape::Stamps) => (STAMP_COLUMNS, ""),
        (Some(_), _) => (IMAGE_COLUMNS_AS_OF, AS_OF_PULLS),
    };
    if let Some(names) = names {
        // PostgreSQL 15 cannot read several ranges of one index as one ordered stream, so
        // `repository = ANY(names)` would read every tag of the names and sort them. Here
        // the names (a page's worth, sorted here) are read in order: for each, its
        // repositories that match the search and that the caller sees, checked once and
        // aggregated (`m`: a name can be in several registries and match in one only),
        // then its rows after the cursor from `tag_versions_name`, already in the page's
        // order, at most a page of them. Each name's rows follow the previous name's (a
        // nested loop over lateral subqueries keeps its outer order, and the read
        // connections never plan a parallel scan), so the page stops at `limit` rows
        // without a sort, which would read every row of the name the page ends in.
        let (with, source) = match names {
            Names::Given(names) => {
                let n = sql.bind(Bind::TextArray(names.to_vec()));
                (String::new(), format!("unnest({n}::text[]) AS u(name)"))
            }
            Names::ByWord { term, n } => {
                let cte = crate::search::words_cte(&mut sql, term, f.name_from(), n);
                // As an array, like given names: read from `c` itself, the planner expects
                // one name, and sorts every row of all of them rather than stopping after
                // the page (18 ms instead of 0.8 on the bench's catalog).
                (
                    format!("WITH RECURSIVE {cte} "),
                    "unnest(ARRAY(SELECT c.name FROM c)) AS u(name)".to_owned(),
                )
            }
        };
        let shown: &[&str] = match shape {
            Shape::Stamps => &["array_agg(r.xmin) AS rx", "array_agg(g.xmin) AS gx"],
            Shape::Full => &[
                "array_agg(g.label) AS gl",
                "array_agg(r.hm_tags::text) AS rh",
                "array_agg(r.description) AS rd",
            ],
        };
        repos.extend(shown.iter().map(|c| c.to_string()));
        wh.push("(t.tag, t.registry_id) > (s.ft, s.fg)".into());
        sql.text = format!(
            "{with}SELECT x.* FROM (SELECT u.name, {from_row} FROM {source} ORDER BY u.name) s \
             CROSS JOIN LATERAL (SELECT array_agg(r.id) AS ids, {} FROM repositories r \
               LEFT JOIN registries g ON g.id = r.registry_id \
               WHERE r.name = s.name{search} AND {visible}) m \
             CROSS JOIN LATERAL (SELECT {columns} FROM tag_versions t \
               WHERE t.repository = s.name AND t.repo_id = ANY(m.ids) AND {} \
               ORDER BY t.tag, t.registry_id LIMIT {limit}) x \
             LIMIT {limit}",
            repos.join(", "),
            wh.join(" AND ")
        );
        return sql;
    }
    sql.text = format!(
        "SELECT {columns} FROM tag_versions t \
         LEFT JOIN registries g ON g.id = t.registry_id \
         JOIN repositories r ON r.id = t.repo_id {lookups} \
         WHERE {} ORDER BY {order} LIMIT {limit}",
        wh.join(" AND ")
    );
    sql
}

/// A repository's current tags in tag order (its detail and console page): one range of
/// `tag_versions_current`.
pub fn repository_tags(repo_id: Uuid) -> Sql {
    repository_tags_shaped(repo_id, Shape::Full)
}

/// [`repository_tags`] read as `shape`.
pub fn repository_tags_shaped(repo_id: Uuid, shape: Shape) -> Sql {
    let mut sql = Sql::default();
    let p = sql.bind(Bind::Uuid(repo_id));
    let columns = match shape {
        Shape::Full => IMAGE_COLUMNS,
        Shape::Stamps => STAMP_COLUMNS,
    };
    sql.text = format!(
        "SELECT {columns} FROM tag_versions t \
         JOIN registries g ON g.id = t.registry_id \
         JOIN repositories r ON r.id = t.repo_id \
         WHERE t.repo_id = {p} AND t.valid_to IS NULL ORDER BY t.tag"
    );
    sql
}

/// The filters of `/v1/repositories`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepositoryFilter {
    pub teams: Teams,
    pub registry: Option<Uuid>,
    pub kind: Option<String>,
    pub hm_tag: Option<String>,
    pub q: Option<String>,
    pub after: Option<Cursor>,
    pub fetch: i64,
}

pub const REPOSITORY_COLUMNS: &str = "r.id, r.registry_id, g.label, r.name, r.kind, r.model_type, \
     r.description, r.hm_tags, r.tag_count, r.database_tags, r.model_tags, r.first_seen, r.updated_at, \
     a.decision, a.reason, a.actor, a.at";

pub fn repositories(f: &RepositoryFilter) -> Sql {
    let mut sql = Sql::default();
    let mut wh = vec!["r.tag_count > 0".to_owned()];
    wh.push(visibility(&mut sql, &f.teams, None));
    if let Some(r) = f.registry {
        let p = sql.bind(Bind::Uuid(r));
        wh.push(format!("r.registry_id = {p}"));
    }
    if let Some(k) = &f.kind {
        let p = sql.bind(Bind::Text(k.clone()));
        wh.push(format!("r.kind = {p}"));
    }
    if let Some(h) = &f.hm_tag {
        let p = sql.bind(Bind::TextArray(vec![h.clone()]));
        wh.push(format!("r.hm_tags @> {p}"));
    }
    if let Some(q) = &f.q {
        let p = sql.bind(Bind::Text(q.clone()));
        wh.push(format!("r.search @@ to_tsquery('simple', {p})"));
    }
    if let Some(Cursor::Repo { n, g }) = &f.after {
        let (a, b) = (sql.bind(Bind::Text(n.clone())), sql.bind(Bind::Uuid(*g)));
        wh.push(format!("(r.name, r.registry_id) > ({a}, {b})"));
    }
    let limit = Sql::limit(f.fetch);
    sql.text = format!(
        "SELECT {REPOSITORY_COLUMNS} FROM repositories r \
         JOIN registries g ON g.id = r.registry_id \
         LEFT JOIN approvals a ON a.repo_id = r.id AND a.tag = '' \
         WHERE {} ORDER BY r.name, r.registry_id LIMIT {limit}",
        wh.join(" AND ")
    );
    sql
}

/// Turn free text into a prefix-matching `tsquery` over the `simple` configuration: every
/// word must match the start of a word of the name or description. `None` when the text
/// has no word.
pub fn tsquery(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| format!("{}:*", w.to_lowercase()))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" & "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor::Name {
            r: "nvidia/nim/llm".into(),
            t: "1.0".into(),
            g: Uuid::from_u128(9),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("not a cursor"), None);
        assert_eq!(Cursor::decode(""), None);
    }

    #[test]
    fn tsquery_is_prefix_and_safe() {
        assert_eq!(tsquery("Llama 3.1"), Some("llama:* & 3:* & 1:*".into()));
        assert_eq!(tsquery("a'|!b"), Some("a:* & b:*".into()));
        assert_eq!(tsquery(" -- "), None);
    }

    #[test]
    fn a_search_scan_gives_its_matches_once_and_says_when_the_index_must_go_on() {
        let rows = |v: &[(&str, bool)]| {
            v.iter()
                .map(|(n, m)| ((*n).to_owned(), *m))
                .collect::<Vec<_>>()
        };
        // A common word: the names fill up before the budget, each once (a name in two
        // registries is two rows).
        let found = SearchNames::from_scan(
            rows(&[
                ("a", true),
                ("a", true),
                ("b", false),
                ("c", true),
                ("d", true),
            ]),
            2,
            256,
        );
        assert_eq!(found.names, ["a", "c"]);
        assert_eq!(found.continue_after, None);
        // A rare word: the budget ran out first; the index goes on from the last name read.
        let found = SearchNames::from_scan(rows(&[("a", false), ("b", true), ("c", false)]), 5, 3);
        assert_eq!(found.names, ["b"]);
        assert_eq!(found.continue_after.as_deref(), Some("c"));
        // The index goes on from `c` inclusively: `c` again is not added twice, nor past 5.
        let mut found = found;
        found.add_from_index(["c", "d", "d", "e", "f", "g"].map(String::from), 5);
        assert_eq!(found.names, ["b", "c", "d", "e", "f"]);
        // The end of the table before the budget: nothing more to ask.
        let found = SearchNames::from_scan(rows(&[("a", false), ("b", true)]), 5, 3);
        assert_eq!(found.names, ["b"]);
        assert_eq!(found.continue_after, None);
        assert_eq!(
            SearchNames::from_scan(rows(&[]), 5, 3),
            SearchNames {
                names: vec![],
                continue_after: None
            }
        );
        assert_eq!(search_budget(51), 408);
        assert_eq!(search_budget(1), 256);
        assert_eq!(search_budget(10_000), 4096);
    }

    #[test]
    fn literal_inlines_parameters_in_order() {
        let f = ImageFilter {
            teams: Some(vec!["ml".into()]),
            repository: Some("o'brien/x".into()),
            kind: Some("model".into()),
            fetch: 51,
            ..Default::default()
        };
        let sql = images(&f);
        // The page size is in the statement (see `Sql::limit`), not a parameter.
        assert_eq!(sql.binds.len(), 3);
        assert!(sql.text.ends_with("LIMIT 51"), "{}", sql.text);
        let lit = sql.literal();
        assert!(lit.contains("g.visibility && ARRAY['ml']::text[]"), "{lit}");
        assert!(lit.contains("t.repository = 'o''brien/x'"), "{lit}");
        assert!(lit.ends_with("LIMIT 51"), "{lit}");
        assert!(!lit.contains('$'), "{lit}");
    }
}
