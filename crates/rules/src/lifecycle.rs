//! The retention dry run (issue 14): which of a rule's tags its retention policy would keep,
//! which would go and why, and what deleting them would free. Nothing here deletes anything;
//! catalog-projector feeds it the catalog's facts for `GET /v1/lifecycle/preview`.
//!
//! It lives beside the validation ([`crate::retention`]) and the tag selection
//! ([`CompiledRule::select_tags`]) so that the tags previewed are exactly the rule's, and a
//! policy means here what the validation accepted; it is pure (facts and a clock in, verdicts
//! out) so that its semantics are tested without a catalog.
//!
//! Semantics (Harbor's tag retention, on imagelib's facts):
//! - the tags looked at are the rule's: the current tags of the repositories it matches that
//!   its tag filters select (include, exclude, artifact tags, `newest`). The other tags of
//!   those repositories are left alone, and keep their digests (below);
//! - a tag is **kept** when any retention rule keeps it (rules are OR-ed, as in Harbor) or it
//!   is **protected**: used by a deployment (of the tag or of its digest), approved, or
//!   carrying one of the policy's protected HM tags (its own or its repository's). Every
//!   other tag would go, those no retention rule looks at included: as in Harbor, a policy
//!   names what to keep;
//! - each retention rule looks only at the tags its `tags` filter selects, and keeps:
//!   - `latest_pushed`: the `count` most recently pushed, per repository or, with
//!     `per: major`, per repository and major version (the first number of a version tag;
//!     tags without a version form one group); ties in push time go to the newer version
//!     (the order of [`crate::version`]);
//!   - `latest_pulled`: the `count` most recently pulled, grouped alike; a tag never pulled
//!     is never among them;
//!   - `pushed_within_days` / `pulled_within_days`: those pushed / last pulled at most `days`
//!     days before now (never pulled: not kept);
//!   - `always`: all of them;
//!
//!   protected tags are ranked like the others (a deployed tag among the 3 most recent takes
//!   one of the 3 places); protection is added on top, it does not make room;
//! - registries delete manifests, not tags: deleting a going tag's digest deletes every tag
//!   pointing at it. A digest is **freed** only when every tag pointing at it in the
//!   repository goes; one kept (or not the rule's) keeps it, and the preview says which. The
//!   bytes freed are the sizes of the freed digests, each once.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use imagelib_events::model::{RetentionRule, RetentionScope, RetentionTemplate};
use imagelib_events::{RepositoryName, Tag};
use serde::Serialize;

use crate::compiled::CompiledRule;
use crate::retention::{CompiledRetention, template_name};
use crate::version::{NewestKey, newest_first, parse_tag_version};

/// What the catalog knows of one current tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFacts {
    pub repository: RepositoryName,
    pub tag: Tag,
    pub digest: String,
    /// The image's size in bytes (what deleting its manifest makes collectable, at most).
    pub size: u64,
    /// When it was pushed, as far as imagelib can tell (the caller's choice; the catalog
    /// uses the image's creation time or when the tag was first seen at its digest).
    pub pushed_at: DateTime<Utc>,
    /// When it was last pulled (`None`: never, or the registry does not report pulls).
    pub last_pulled_at: Option<DateTime<Utc>>,
    /// Deployments using the tag or its digest, by name, for the reason.
    pub deployments: Vec<String>,
    pub approved: bool,
    /// Its HM tags, its repository's included.
    pub hm_tags: Vec<String>,
}

/// Why a tag is kept or would go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Kept: used by a deployment.
    Deployed,
    /// Kept: approved by a curator.
    Approved,
    /// Kept: carries a protected HM tag.
    ProtectedHmTag,
    /// Kept or not by a retention rule of this template.
    LatestPushed,
    LatestPulled,
    PushedWithinDays,
    PulledWithinDays,
    Always,
    /// Goes: no retention rule looks at it.
    NoRule,
}

impl ReasonCode {
    fn of(t: RetentionTemplate) -> Self {
        match t {
            RetentionTemplate::LatestPushed => Self::LatestPushed,
            RetentionTemplate::LatestPulled => Self::LatestPulled,
            RetentionTemplate::PushedWithinDays => Self::PushedWithinDays,
            RetentionTemplate::PulledWithinDays => Self::PulledWithinDays,
            RetentionTemplate::Always => Self::Always,
        }
    }
}

/// One reason, for machines (`code`, `rule`) and people (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: ReasonCode,
    /// The retention rule it comes from (its index in `retention.rules`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    pub message: String,
}

/// The verdict on one of the rule's tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The tag's index in the facts given to [`preview`].
    pub index: usize,
    pub kept: bool,
    /// Kept: every protection and every retention rule that keeps it. Going: what each
    /// retention rule that looked at it decided, or [`ReasonCode::NoRule`].
    pub reasons: Vec<Reason>,
    /// Going: the tags that stay (kept, or not the rule's) at the same digest in the
    /// repository. Deleting the digest would delete them too; it frees nothing.
    pub digest_kept_by: Vec<Tag>,
    /// Going: the other going tags at the same digest (one deletion removes them all).
    pub digest_shared_with: Vec<Tag>,
}

impl Outcome {
    /// Whether deleting this tag's digest frees it (no staying tag points at it).
    pub fn frees_digest(&self) -> bool {
        !self.kept && self.digest_kept_by.is_empty()
    }
}

/// The dry run of a policy over a rule's tags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Preview {
    /// One per tag of the rule, in the order of the facts.
    pub outcomes: Vec<Outcome>,
    pub kept: usize,
    pub going: usize,
    /// Tags of the matched repositories the rule does not select: left alone.
    pub not_selected: usize,
    /// Distinct digests (per repository) every tag of which goes, and their total size.
    pub digests_freed: usize,
    pub bytes_freed: u64,
    /// Whether any of the rule's tags has a pull time; without any, `latest_pulled` and
    /// `pulled_within_days` keep nothing (the registry may not report pulls).
    pulls_known: bool,
}

impl Preview {
    pub fn pulls_known(&self) -> bool {
        self.pulls_known
    }
}

/// A group `latest_*` counts in, within a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Repository,
    Major(u64),
    NoVersion,
}

impl Group {
    fn of(per: RetentionScope, tag: &Tag) -> Self {
        match per {
            RetentionScope::Repository => Group::Repository,
            RetentionScope::Major => parse_tag_version(tag.as_str())
                .map_or(Group::NoVersion, |v| Group::Major(v.version.major)),
        }
    }

    fn describe(self, repository: &RepositoryName) -> String {
        match self {
            Group::Repository => format!("in {repository}"),
            Group::Major(m) => format!("of major version {m} in {repository}"),
            Group::NoVersion => format!("without a version in {repository}"),
        }
    }
}

/// Evaluates `retention` over the tags of `rule` among `tags` (every current tag the caller
/// has; those of repositories the rule does not match are ignored), at `now`.
pub fn preview(
    rule: &CompiledRule,
    retention: &CompiledRetention,
    tags: &[TagFacts],
    now: DateTime<Utc>,
) -> Preview {
    // The tags of each matched repository, in the order given.
    let mut by_repository: BTreeMap<&RepositoryName, Vec<usize>> = BTreeMap::new();
    for (i, t) in tags.iter().enumerate() {
        if rule.matches_repository(&t.repository) {
            by_repository.entry(&t.repository).or_default().push(i);
        }
    }
    let mut in_scope = vec![false; tags.len()];
    let mut not_selected = 0;
    for indices in by_repository.values() {
        let names: Vec<Tag> = indices.iter().map(|&i| tags[i].tag.clone()).collect();
        let selected = rule.select_indices(&names);
        not_selected += indices.len() - selected.len();
        for j in selected {
            in_scope[indices[j]] = true;
        }
    }
    let scope: Vec<usize> = (0..tags.len()).filter(|&i| in_scope[i]).collect();

    let mut retained: Vec<Vec<Reason>> = vec![Vec::new(); tags.len()];
    let mut refused: Vec<Vec<Reason>> = vec![Vec::new(); tags.len()];
    for (r, policy_rule) in retention.policy().rules.iter().enumerate() {
        let considered: Vec<usize> = scope
            .iter()
            .copied()
            .filter(|&i| retention.selects(r, &tags[i].tag))
            .collect();
        let label = rule_label(r, policy_rule);
        let mut verdict = |i: usize, keep: bool, message: String| {
            let reason = Reason {
                code: ReasonCode::of(policy_rule.template),
                rule: Some(r),
                message: format!("{label}: {message}"),
            };
            if keep {
                retained[i].push(reason);
            } else {
                refused[i].push(reason);
            }
        };
        match policy_rule.template {
            RetentionTemplate::LatestPushed | RetentionTemplate::LatestPulled => {
                let pulled = policy_rule.template == RetentionTemplate::LatestPulled;
                let count = policy_rule.count.unwrap_or(0) as usize;
                let mut groups: BTreeMap<(&RepositoryName, Group), Vec<usize>> = BTreeMap::new();
                for &i in &considered {
                    if pulled && tags[i].last_pulled_at.is_none() {
                        verdict(i, false, "never pulled".into());
                        continue;
                    }
                    let key = (
                        &tags[i].repository,
                        Group::of(policy_rule.per, &tags[i].tag),
                    );
                    groups.entry(key).or_default().push(i);
                }
                for ((repository, group), mut members) in groups {
                    members.sort_by(|&a, &b| {
                        let (a, b) = (&tags[a], &tags[b]);
                        let by_pull = if pulled {
                            b.last_pulled_at.cmp(&a.last_pulled_at)
                        } else {
                            std::cmp::Ordering::Equal
                        };
                        by_pull
                            .then_with(|| b.pushed_at.cmp(&a.pushed_at))
                            .then_with(|| {
                                newest_first(
                                    &NewestKey::new(a.tag.as_str()),
                                    &NewestKey::new(b.tag.as_str()),
                                )
                            })
                    });
                    let total = members.len();
                    let what = if pulled { "pulled" } else { "pushed" };
                    let within = group.describe(repository);
                    for (rank, &i) in members.iter().enumerate() {
                        let position = format!(
                            "{} most recently {what} of {total} {within}",
                            ordinal(rank + 1)
                        );
                        if rank < count {
                            verdict(i, true, position);
                        } else {
                            verdict(i, false, format!("{position}, after the {count} it keeps"));
                        }
                    }
                }
            }
            RetentionTemplate::PushedWithinDays => {
                let days = policy_rule.days.unwrap_or(0);
                let cutoff = now - Duration::days(i64::from(days));
                for &i in &considered {
                    let at = tags[i].pushed_at;
                    if at >= cutoff {
                        verdict(i, true, format!("pushed {}", ago(now, at)));
                    } else {
                        verdict(
                            i,
                            false,
                            format!("pushed {}, before the last {days} days", ago(now, at)),
                        );
                    }
                }
            }
            RetentionTemplate::PulledWithinDays => {
                let days = policy_rule.days.unwrap_or(0);
                let cutoff = now - Duration::days(i64::from(days));
                for &i in &considered {
                    match tags[i].last_pulled_at {
                        Some(at) if at >= cutoff => {
                            verdict(i, true, format!("last pulled {}", ago(now, at)));
                        }
                        Some(at) => verdict(
                            i,
                            false,
                            format!("last pulled {}, before the last {days} days", ago(now, at)),
                        ),
                        None => verdict(i, false, "never pulled".into()),
                    }
                }
            }
            RetentionTemplate::Always => {
                for &i in &considered {
                    verdict(i, true, "always kept".into());
                }
            }
        }
    }

    let mut kept = vec![false; tags.len()];
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); tags.len()];
    for &i in &scope {
        let mut protections = protections(retention, &tags[i]);
        let keep = !protections.is_empty() || !retained[i].is_empty();
        kept[i] = keep;
        reasons[i] = if keep {
            protections.append(&mut retained[i]);
            protections
        } else if refused[i].is_empty() {
            vec![Reason {
                code: ReasonCode::NoRule,
                rule: None,
                message: "no retention rule looks at this tag (their `tags` filters leave it \
                          out), so none keeps it"
                    .into(),
            }]
        } else {
            std::mem::take(&mut refused[i])
        };
    }

    // Digests: who stays and who goes at each, per repository.
    let mut at_digest: BTreeMap<(&RepositoryName, &str), AtDigest> = BTreeMap::new();
    for indices in by_repository.values() {
        for &i in indices {
            let entry = at_digest
                .entry((&tags[i].repository, tags[i].digest.as_str()))
                .or_default();
            if in_scope[i] && !kept[i] {
                entry.going.push(i);
            } else {
                entry.staying.push(i);
            }
        }
    }
    let mut preview = Preview {
        not_selected,
        pulls_known: scope.iter().any(|&i| tags[i].last_pulled_at.is_some()),
        ..Preview::default()
    };
    for AtDigest { staying, going } in at_digest.values() {
        if staying.is_empty() && !going.is_empty() {
            preview.digests_freed += 1;
            preview.bytes_freed += going.iter().map(|&i| tags[i].size).max().unwrap_or(0);
        }
    }
    for &i in &scope {
        let (digest_kept_by, digest_shared_with) = if kept[i] {
            (Vec::new(), Vec::new())
        } else {
            let AtDigest { staying, going } = at_digest
                .get(&(&tags[i].repository, tags[i].digest.as_str()))
                .cloned()
                .unwrap_or_default();
            (
                staying.iter().map(|&j| tags[j].tag.clone()).collect(),
                going
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| tags[j].tag.clone())
                    .collect(),
            )
        };
        if kept[i] {
            preview.kept += 1;
        } else {
            preview.going += 1;
        }
        preview.outcomes.push(Outcome {
            index: i,
            kept: kept[i],
            reasons: std::mem::take(&mut reasons[i]),
            digest_kept_by,
            digest_shared_with,
        });
    }
    preview
}

/// The tags of a repository at one digest: those that stay and those that would go.
#[derive(Debug, Clone, Default)]
struct AtDigest {
    staying: Vec<usize>,
    going: Vec<usize>,
}

fn protections(retention: &CompiledRetention, t: &TagFacts) -> Vec<Reason> {
    let mut out = Vec::new();
    if !t.deployments.is_empty() {
        out.push(Reason {
            code: ReasonCode::Deployed,
            rule: None,
            message: format!("used by deployment {}", t.deployments.join(", ")),
        });
    }
    if t.approved {
        out.push(Reason {
            code: ReasonCode::Approved,
            rule: None,
            message: "approved by a curator".into(),
        });
    }
    for hm in t.hm_tags.iter().filter(|h| retention.protects(h)) {
        out.push(Reason {
            code: ReasonCode::ProtectedHmTag,
            rule: None,
            message: format!("carries the protected HM tag `{hm}`"),
        });
    }
    out
}

/// `rule 0 (latest_pushed 3 per major version)`.
fn rule_label(index: usize, rule: &RetentionRule) -> String {
    let name = template_name(rule.template);
    let parameter = match (rule.count, rule.days) {
        (Some(n), _) => format!(" {n}"),
        (None, Some(d)) => format!(" {d} days"),
        (None, None) => String::new(),
    };
    let per = match (rule.template, rule.per) {
        (
            RetentionTemplate::LatestPushed | RetentionTemplate::LatestPulled,
            RetentionScope::Major,
        ) => " per major version",
        (RetentionTemplate::LatestPushed | RetentionTemplate::LatestPulled, _) => " per repository",
        _ => "",
    };
    format!("rule {index} ({name}{parameter}{per})")
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn ago(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    match (now - at).num_days() {
        d if d < 1 => "less than a day ago".into(),
        1 => "1 day ago".into(),
        d => format!("{d} days ago"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::RuleInput;
    use imagelib_events::RegistryId;
    use serde_json::{Value, json};

    fn now() -> DateTime<Utc> {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    fn days_ago(d: i64) -> DateTime<Utc> {
        now() - Duration::days(d)
    }

    /// A rule over `apps/*` (its tags: everything but `-rc` tags) with `retention`.
    fn compiled(retention: Value) -> (CompiledRule, CompiledRetention) {
        let set = RuleInput::from_json_value(json!({
            "repositories": "apps/*",
            "tags": {"exclude": ["-rc"]},
            "retention": retention,
        }))
        .unwrap()
        .into_rule_set(RegistryId::new(), "apps".parse().unwrap())
        .unwrap();
        let rule = CompiledRule::compile(&set).unwrap();
        let retention =
            CompiledRetention::compile(set.retention.as_ref().unwrap(), "/retention").unwrap();
        (rule, retention)
    }

    struct Row {
        repo: &'static str,
        tag: &'static str,
        digest: u32,
        size: u64,
        pushed: i64,
        pulled: Option<i64>,
    }

    fn row(
        repo: &'static str,
        tag: &'static str,
        digest: u32,
        size: u64,
        pushed: i64,
        pulled: Option<i64>,
    ) -> Row {
        Row {
            repo,
            tag,
            digest,
            size,
            pushed,
            pulled,
        }
    }

    fn facts(rows: &[Row]) -> Vec<TagFacts> {
        rows.iter()
            .map(|r| TagFacts {
                repository: r.repo.parse().unwrap(),
                tag: r.tag.parse().unwrap(),
                digest: format!("sha256:{:064x}", r.digest),
                size: r.size,
                pushed_at: days_ago(r.pushed),
                last_pulled_at: r.pulled.map(days_ago),
                deployments: vec![],
                approved: false,
                hm_tags: vec![],
            })
            .collect()
    }

    fn set(tags: &mut [TagFacts], tag: &str, f: impl Fn(&mut TagFacts)) {
        let t = tags
            .iter_mut()
            .find(|t| t.tag.as_str() == tag)
            .unwrap_or_else(|| panic!("no tag {tag}"));
        f(t);
    }

    /// `repo:tag` of the kept and the going tags.
    fn split(p: &Preview, tags: &[TagFacts]) -> (Vec<String>, Vec<String>) {
        let name = |o: &Outcome| {
            let t = &tags[o.index];
            format!("{}:{}", t.repository, t.tag)
        };
        (
            p.outcomes.iter().filter(|o| o.kept).map(name).collect(),
            p.outcomes.iter().filter(|o| !o.kept).map(name).collect(),
        )
    }

    fn outcome<'a>(p: &'a Preview, tags: &[TagFacts], repo_tag: &str) -> &'a Outcome {
        p.outcomes
            .iter()
            .find(|o| format!("{}:{}", tags[o.index].repository, tags[o.index].tag) == repo_tag)
            .unwrap_or_else(|| panic!("no outcome for {repo_tag}"))
    }

    fn codes(o: &Outcome) -> Vec<(ReasonCode, Option<usize>)> {
        o.reasons.iter().map(|r| (r.code, r.rule)).collect()
    }

    /// The fixture of the README's example, computed by hand:
    ///
    /// | repo:tag | digest | size | pushed | pulled | other |
    /// |---|---|---|---|---|---|
    /// | web:1.0.0 | 1 | 100 | 200 d | – | |
    /// | web:1.0 | 1 | 100 | 199 d | – | |
    /// | web:1.1.0 | 2 | 110 | 150 d | 100 d | |
    /// | web:1.2.0 | 3 | 120 | 100 d | – | deployed |
    /// | web:1.3.0 | 4 | 130 | 60 d | 5 d | |
    /// | web:stable | 4 | 130 | 60 d | – | |
    /// | web:2.0.0 | 5 | 200 | 40 d | – | approved |
    /// | web:2.1.0 | 6 | 210 | 20 d | – | |
    /// | web:2.2.0 | 7 | 220 | 10 d | 2 d | |
    /// | web:latest | 7 | 220 | 10 d | 1 d | |
    /// | web:dev-abc | 8 | 50 | 90 d | – | HM approved-production |
    /// | web:dev-def | 9 | 60 | 80 d | – | |
    /// | web:2.3.0-rc1 | 9 | 60 | 5 d | – | not the rule's (`-rc` excluded) |
    /// | api:3.0.0 | 20 | 300 | 300 d | – | |
    /// | api:3.1.0 | 21 | 310 | 250 d | – | |
    /// | api:3.2.0 | 22 | 320 | 5 d | – | |
    /// | other:1.0 | 30 | 999 | 900 d | – | not a repository of the rule |
    ///
    /// Policy: rule 0 keeps the 2 most recently pushed per major version of the tags
    /// starting with a digit; rule 1 keeps what was pulled within 30 days; rule 2 always
    /// keeps `latest`.
    ///
    /// - rule 0, web major 1 by push: 1.3.0 (60), 1.2.0 (100) kept; 1.1.0 (150), 1.0 (199),
    ///   1.0.0 (200) not; major 2: 2.2.0, 2.1.0 kept, 2.0.0 not; api major 3: 3.2.0, 3.1.0
    ///   kept, 3.0.0 not;
    /// - rule 1: 1.3.0 (5 d), 2.2.0 (2 d), latest (1 d) kept; 1.1.0 (100 d) and the rest not;
    /// - rule 2: latest;
    /// - protected: 1.2.0 (deployed, also kept by rule 0), 2.0.0 (approved), dev-abc (HM).
    ///
    /// Going: web:1.0.0, web:1.0 (digest 1, freed once: 100), web:1.1.0 (2: 110), web:stable
    /// (4, kept by 1.3.0: not freed), web:dev-def (9, kept by 2.3.0-rc1: not freed),
    /// api:3.0.0 (20: 300). Freed: 3 digests, 510 bytes.
    fn fixture() -> Vec<TagFacts> {
        let mut tags = facts(&[
            row("apps/web", "1.0.0", 1, 100, 200, None),
            row("apps/web", "1.0", 1, 100, 199, None),
            row("apps/web", "1.1.0", 2, 110, 150, Some(100)),
            row("apps/web", "1.2.0", 3, 120, 100, None),
            row("apps/web", "1.3.0", 4, 130, 60, Some(5)),
            row("apps/web", "stable", 4, 130, 60, None),
            row("apps/web", "2.0.0", 5, 200, 40, None),
            row("apps/web", "2.1.0", 6, 210, 20, None),
            row("apps/web", "2.2.0", 7, 220, 10, Some(2)),
            row("apps/web", "latest", 7, 220, 10, Some(1)),
            row("apps/web", "dev-abc", 8, 50, 90, None),
            row("apps/web", "dev-def", 9, 60, 80, None),
            row("apps/web", "2.3.0-rc1", 9, 60, 5, None),
            row("apps/api", "3.0.0", 20, 300, 300, None),
            row("apps/api", "3.1.0", 21, 310, 250, None),
            row("apps/api", "3.2.0", 22, 320, 5, None),
            row("other/x", "1.0", 30, 999, 900, None),
        ]);
        set(&mut tags, "1.2.0", |t| {
            t.deployments = vec!["models/web".into()]
        });
        set(&mut tags, "2.0.0", |t| t.approved = true);
        set(&mut tags, "dev-abc", |t| {
            t.hm_tags = vec!["gpu".into(), "approved-production".into()];
        });
        tags
    }

    fn fixture_policy() -> Value {
        json!({"rules": [
            {"template": "latest_pushed", "count": 2, "per": "major", "tags": {"include": ["^[0-9]"]}},
            {"template": "pulled_within_days", "days": 30},
            {"template": "always", "tags": {"include": [{"exact": "latest"}]}},
        ]})
    }

    #[test]
    fn the_hand_computed_fixture() {
        let (rule, retention) = compiled(fixture_policy());
        let tags = fixture();
        let p = preview(&rule, &retention, &tags, now());
        let (kept, going) = split(&p, &tags);
        assert_eq!(
            kept,
            [
                "apps/web:1.2.0",
                "apps/web:1.3.0",
                "apps/web:2.0.0",
                "apps/web:2.1.0",
                "apps/web:2.2.0",
                "apps/web:latest",
                "apps/web:dev-abc",
                "apps/api:3.1.0",
                "apps/api:3.2.0",
            ]
        );
        assert_eq!(
            going,
            [
                "apps/web:1.0.0",
                "apps/web:1.0",
                "apps/web:1.1.0",
                "apps/web:stable",
                "apps/web:dev-def",
                "apps/api:3.0.0",
            ]
        );
        assert_eq!((p.kept, p.going, p.not_selected), (9, 6, 1));
        assert_eq!((p.digests_freed, p.bytes_freed), (3, 510));
        assert!(p.pulls_known());

        // Why each one goes.
        let o = outcome(&p, &tags, "apps/web:1.0.0");
        assert_eq!(
            codes(o),
            [
                (ReasonCode::LatestPushed, Some(0)),
                (ReasonCode::PulledWithinDays, Some(1))
            ]
        );
        assert_eq!(
            o.reasons[0].message,
            "rule 0 (latest_pushed 2 per major version): 5th most recently pushed of 5 of \
             major version 1 in apps/web, after the 2 it keeps"
        );
        assert_eq!(
            o.reasons[1].message,
            "rule 1 (pulled_within_days 30 days): never pulled"
        );
        assert_eq!(o.digest_shared_with, vec!["1.0".parse::<Tag>().unwrap()]);
        assert!(o.digest_kept_by.is_empty() && o.frees_digest());
        let o = outcome(&p, &tags, "apps/web:1.1.0");
        assert_eq!(
            o.reasons[1].message,
            "rule 1 (pulled_within_days 30 days): last pulled 100 days ago, before the last 30 days"
        );
        let o = outcome(&p, &tags, "apps/web:stable");
        assert_eq!(codes(o), [(ReasonCode::PulledWithinDays, Some(1))]);
        assert_eq!(o.digest_kept_by, vec!["1.3.0".parse::<Tag>().unwrap()]);
        assert!(!o.frees_digest());
        let o = outcome(&p, &tags, "apps/web:dev-def");
        assert_eq!(o.digest_kept_by, vec!["2.3.0-rc1".parse::<Tag>().unwrap()]);
        let o = outcome(&p, &tags, "apps/api:3.0.0");
        assert_eq!(
            o.reasons[0].message,
            "rule 0 (latest_pushed 2 per major version): 3rd most recently pushed of 3 of \
             major version 3 in apps/api, after the 2 it keeps"
        );

        // Why each one stays: protections first, then every rule that keeps it.
        let o = outcome(&p, &tags, "apps/web:1.2.0");
        assert_eq!(
            codes(o),
            [
                (ReasonCode::Deployed, None),
                (ReasonCode::LatestPushed, Some(0))
            ]
        );
        assert_eq!(o.reasons[0].message, "used by deployment models/web");
        assert_eq!(
            o.reasons[1].message,
            "rule 0 (latest_pushed 2 per major version): 2nd most recently pushed of 5 of \
             major version 1 in apps/web"
        );
        let o = outcome(&p, &tags, "apps/web:2.0.0");
        assert_eq!(codes(o), [(ReasonCode::Approved, None)]);
        let o = outcome(&p, &tags, "apps/web:dev-abc");
        assert_eq!(codes(o), [(ReasonCode::ProtectedHmTag, None)]);
        assert_eq!(
            o.reasons[0].message,
            "carries the protected HM tag `approved-production`"
        );
        let o = outcome(&p, &tags, "apps/web:latest");
        assert_eq!(
            codes(o),
            [
                (ReasonCode::PulledWithinDays, Some(1)),
                (ReasonCode::Always, Some(2))
            ]
        );
        assert_eq!(
            o.reasons[0].message,
            "rule 1 (pulled_within_days 30 days): last pulled 1 day ago"
        );
        assert!(o.digest_kept_by.is_empty(), "only going tags list them");
    }

    #[test]
    fn per_repository_counts_across_major_versions() {
        let (rule, retention) = compiled(json!({"rules": [
            {"template": "latest_pushed", "count": 3, "tags": {"include": ["^[0-9]"]}},
        ]}));
        let tags = fixture();
        let p = preview(&rule, &retention, &tags, now());
        let (kept, going) = split(&p, &tags);
        // web by push: 2.2.0 (10), 2.1.0 (20), 2.0.0 (40) | 1.3.0 (60), 1.2.0 (deployed),
        // 1.1.0, 1.0, 1.0.0; dev-abc is protected; stable, latest, dev-def are looked at by
        // no rule.
        assert_eq!(
            kept,
            [
                "apps/web:1.2.0",
                "apps/web:2.0.0",
                "apps/web:2.1.0",
                "apps/web:2.2.0",
                "apps/web:dev-abc",
                "apps/api:3.0.0",
                "apps/api:3.1.0",
                "apps/api:3.2.0",
            ]
        );
        assert_eq!(going.len(), 7, "{going:?}");
        let o = outcome(&p, &tags, "apps/web:1.3.0");
        assert_eq!(
            o.reasons[0].message,
            "rule 0 (latest_pushed 3 per repository): 4th most recently pushed of 8 in \
             apps/web, after the 3 it keeps"
        );
        let o = outcome(&p, &tags, "apps/web:latest");
        assert_eq!(codes(o), [(ReasonCode::NoRule, None)]);
        // latest goes with 2.2.0 kept at its digest: nothing freed by it.
        assert_eq!(o.digest_kept_by, vec!["2.2.0".parse::<Tag>().unwrap()]);
        // Freed: digest 1 (1.0.0 and 1.0), 2 (1.1.0), 4 (1.3.0 and stable), 9 is kept by
        // the rc tag: 100 + 110 + 130.
        assert_eq!((p.digests_freed, p.bytes_freed), (3, 340));
    }

    #[test]
    fn tags_without_a_version_form_one_major_group() {
        let (rule, retention) = compiled(json!({"rules": [
            {"template": "latest_pushed", "count": 1, "per": "major"},
        ]}));
        let tags = facts(&[
            row("apps/a", "main", 1, 1, 30, None),
            row("apps/a", "edge", 2, 1, 10, None),
            row("apps/a", "v1.0", 3, 1, 50, None),
            row("apps/a", "1.1", 4, 1, 40, None),
            row("apps/a", "2.0-bookworm", 5, 1, 45, None),
        ]);
        let p = preview(&rule, &retention, &tags, now());
        let (kept, _) = split(&p, &tags);
        assert_eq!(kept, ["apps/a:edge", "apps/a:1.1", "apps/a:2.0-bookworm"]);
        let o = outcome(&p, &tags, "apps/a:main");
        assert_eq!(
            o.reasons[0].message,
            "rule 0 (latest_pushed 1 per major version): 2nd most recently pushed of 2 \
             without a version in apps/a, after the 1 it keeps"
        );
    }

    #[test]
    fn equal_push_times_go_to_the_newer_version() {
        let (rule, retention) = compiled(json!({"rules": [
            {"template": "latest_pushed", "count": 2},
        ]}));
        // One scan saw them all at once.
        let tags = facts(&[
            row("apps/a", "1.9", 1, 1, 3, None),
            row("apps/a", "1.10", 2, 1, 3, None),
            row("apps/a", "1.2", 3, 1, 3, None),
            row("apps/a", "latest", 4, 1, 3, None),
        ]);
        let p = preview(&rule, &retention, &tags, now());
        assert_eq!(split(&p, &tags).0, ["apps/a:1.9", "apps/a:1.10"]);
    }

    #[test]
    fn latest_pulled_ranks_pulled_tags_only() {
        let (rule, retention) = compiled(json!({"rules": [
            {"template": "latest_pulled", "count": 2},
        ]}));
        let tags = facts(&[
            row("apps/a", "1", 1, 10, 1, None),
            row("apps/a", "2", 2, 10, 50, Some(40)),
            row("apps/a", "3", 3, 10, 50, Some(3)),
            row("apps/a", "4", 4, 10, 50, Some(7)),
        ]);
        let p = preview(&rule, &retention, &tags, now());
        assert_eq!(
            split(&p, &tags),
            (
                vec!["apps/a:3".to_owned(), "apps/a:4".to_owned()],
                vec!["apps/a:1".to_owned(), "apps/a:2".to_owned()],
            )
        );
        assert_eq!(
            outcome(&p, &tags, "apps/a:1").reasons[0].message,
            "rule 0 (latest_pulled 2 per repository): never pulled"
        );
        assert_eq!(
            outcome(&p, &tags, "apps/a:2").reasons[0].message,
            "rule 0 (latest_pulled 2 per repository): 3rd most recently pulled of 3 in \
             apps/a, after the 2 it keeps"
        );
        // Without any pull data every tag goes, and the preview says pulls are unknown.
        let unpulled = facts(&[row("apps/a", "1", 1, 10, 1, None)]);
        let p = preview(&rule, &retention, &unpulled, now());
        assert_eq!((p.kept, p.going, p.pulls_known()), (0, 1, false));
    }

    #[test]
    fn pushed_within_days_is_inclusive_of_the_boundary() {
        let (rule, retention) = compiled(json!({"rules": [
            {"template": "pushed_within_days", "days": 30},
        ]}));
        let tags = facts(&[
            row("apps/a", "a", 1, 10, 30, None),
            row("apps/a", "b", 2, 10, 31, None),
            row("apps/a", "c", 3, 10, 0, None),
        ]);
        let p = preview(&rule, &retention, &tags, now());
        assert_eq!(split(&p, &tags).0, ["apps/a:a", "apps/a:c"]);
        assert_eq!(
            outcome(&p, &tags, "apps/a:c").reasons[0].message,
            "rule 0 (pushed_within_days 30 days): pushed less than a day ago"
        );
        assert_eq!(
            outcome(&p, &tags, "apps/a:b").reasons[0].message,
            "rule 0 (pushed_within_days 30 days): pushed 31 days ago, before the last 30 days"
        );
    }

    #[test]
    fn protected_hm_tags_are_the_policys() {
        let (rule, retention) = compiled(json!({
            "rules": [{"template": "always", "tags": {"include": ["^none$"]}}],
            "protect_hm_tags": ["gold"],
        }));
        let mut tags = facts(&[
            row("apps/a", "1", 1, 10, 1, None),
            row("apps/a", "2", 2, 10, 1, None),
        ]);
        set(&mut tags, "1", |t| {
            t.hm_tags = vec!["approved-production".into()]
        });
        set(&mut tags, "2", |t| t.hm_tags = vec!["gold".into()]);
        let p = preview(&rule, &retention, &tags, now());
        assert_eq!(split(&p, &tags).0, ["apps/a:2"]);
    }

    #[test]
    fn the_rules_newest_limits_its_tags() {
        let set = RuleInput::from_json_value(json!({
            "repositories": "apps/a",
            "tags": {"newest": 2},
            "retention": {"rules": [{"template": "latest_pushed", "count": 1}]},
        }))
        .unwrap()
        .into_rule_set(RegistryId::new(), "a".parse().unwrap())
        .unwrap();
        let rule = CompiledRule::compile(&set).unwrap();
        let retention =
            CompiledRetention::compile(set.retention.as_ref().unwrap(), "/retention").unwrap();
        let tags = facts(&[
            row("apps/a", "1.0", 1, 10, 1, None),
            row("apps/a", "2.0", 2, 10, 2, None),
            row("apps/a", "3.0", 3, 10, 3, None),
        ]);
        let p = preview(&rule, &retention, &tags, now());
        // The rule takes 3.0 and 2.0; 1.0 is not its tag and is left alone, although it
        // was pushed last.
        assert_eq!(
            split(&p, &tags),
            (vec!["apps/a:2.0".to_owned()], vec!["apps/a:3.0".to_owned()])
        );
        assert_eq!(p.not_selected, 1);
    }

    #[test]
    fn ordinals_and_ages() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111]
            .iter()
            .map(|&n| ordinal(n))
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th"
            ]
        );
        assert_eq!(
            ago(now(), now() + Duration::hours(3)),
            "less than a day ago"
        );
        assert_eq!(ago(now(), days_ago(2)), "2 days ago");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Repository, tag, digest, pushed and pulled days ago, deployed, approved.
        type RowSpec = (u8, u8, u8, i64, Option<i64>, bool, bool);

        fn any_rows() -> impl Strategy<Value = Vec<RowSpec>> {
            prop::collection::vec(
                (
                    0u8..2,
                    0u8..12,
                    0u8..8,
                    0i64..400,
                    prop::option::of(0i64..400),
                    any::<bool>(),
                    any::<bool>(),
                ),
                0..40,
            )
        }

        proptest! {
            /// Whatever the facts: every tag of the rule gets one verdict with a reason,
            /// protected tags are kept, a freed digest has no staying tag, and the bytes
            /// freed are the freed digests' sizes.
            #[test]
            fn verdicts_are_complete_and_consistent(rows in any_rows()) {
                let (rule, retention) = compiled(fixture_policy());
                let repos = ["apps/a", "apps/b"];
                let tag_names = ["1.0", "1.1", "2.0", "2.1", "latest", "stable", "dev", "3.0-rc1", "v1", "0.9", "10.0", "main"];
                let mut seen = std::collections::HashSet::new();
                let mut tags = Vec::new();
                for (repo, tag, digest, pushed, pulled, deployed, approved) in rows {
                    if !seen.insert((repo, tag)) { continue; }
                    tags.push(TagFacts {
                        repository: repos[repo as usize].parse().unwrap(),
                        tag: tag_names[tag as usize].parse().unwrap(),
                        digest: format!("sha256:{digest:064x}"),
                        size: u64::from(digest) * 10 + 1,
                        pushed_at: days_ago(pushed),
                        last_pulled_at: pulled.map(days_ago),
                        deployments: if deployed { vec!["d".into()] } else { vec![] },
                        approved,
                        hm_tags: vec![],
                    });
                }
                let p = preview(&rule, &retention, &tags, now());
                let in_scope = tags.iter().filter(|t| !t.tag.as_str().contains("-rc")).count();
                prop_assert_eq!(p.outcomes.len(), in_scope);
                prop_assert_eq!(p.kept + p.going, in_scope);
                prop_assert_eq!(p.not_selected, tags.len() - in_scope);
                let mut freed = std::collections::BTreeMap::new();
                for o in &p.outcomes {
                    let t = &tags[o.index];
                    prop_assert!(!o.reasons.is_empty());
                    if t.approved || !t.deployments.is_empty() {
                        prop_assert!(o.kept);
                    }
                    if o.frees_digest() {
                        prop_assert!(tags.iter().all(|u| u.repository != t.repository
                            || u.digest != t.digest
                            || p.outcomes.iter().any(|x| !x.kept && std::ptr::eq(&tags[x.index], u))));
                        freed.insert((t.repository.clone(), t.digest.clone()), t.size);
                    }
                }
                prop_assert_eq!(p.digests_freed, freed.len());
                prop_assert_eq!(p.bytes_freed, freed.values().sum::<u64>());
            }
        }
    }
}
