-- The read model shaped by its queries (issue 17): a page of the Image or Model Library is
-- one index range scan over the current tag versions that stops after the page. What a page
-- shows about a tag's pulls, its latest mutation and its digest's listed referrers is kept on
-- its current version by the projection (as the trust columns are) instead of being looked up
-- per row when read. Closing a version clears them; `as_of` pages look them up.

-- Pulls under the tag (every digest it pointed at) and of its current digest (under any tag
-- or by digest), saturated at the int8 maximum, as `pulls` sums them.
ALTER TABLE tag_versions
    ADD COLUMN tag_pulls BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN tag_last_pulled_at TIMESTAMPTZ,
    ADD COLUMN digest_pulls BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN digest_last_pulled_at TIMESTAMPTZ,
    -- The latest `image.tag_mutated` of a marked tag (`mutated`), as the API shows it.
    ADD COLUMN mutation JSONB;

UPDATE tag_versions t SET tag_pulls = s.pulls, tag_last_pulled_at = s.last
FROM (SELECT repo_id, tag, LEAST(sum(pulls), 9223372036854775807)::int8 AS pulls,
             max(last_pulled_at) AS last
      FROM pulls GROUP BY repo_id, tag) s
WHERE t.repo_id = s.repo_id AND t.tag = s.tag AND t.valid_to IS NULL;

UPDATE tag_versions t SET digest_pulls = s.pulls, digest_last_pulled_at = s.last
FROM (SELECT repo_id, digest, LEAST(sum(pulls), 9223372036854775807)::int8 AS pulls,
             max(last_pulled_at) AS last
      FROM pulls GROUP BY repo_id, digest) s
WHERE t.repo_id = s.repo_id AND t.digest = s.digest AND t.valid_to IS NULL;

UPDATE tag_versions t SET mutation = (
    SELECT jsonb_build_object('old_digest', m.old_digest, 'new_digest', m.new_digest,
        'found_by', m.found_by, 'seen_at', m.seen_at, 'at', m.at)
    FROM tag_mutations m WHERE m.repo_id = t.repo_id AND m.tag = t.tag
    ORDER BY m.sequence DESC LIMIT 1)
WHERE t.valid_to IS NULL AND t.mutated;

-- The referrers listed for a current version's digest (`trust_referrers`), when a list was
-- recorded for it; NULL otherwise (the page shows the tag event's `referrers`). Kept by the
-- projection wherever a list is recorded, found through the current versions by digest.
ALTER TABLE tag_versions ADD COLUMN listed_referrers JSONB;
CREATE UNIQUE INDEX tag_versions_digest ON tag_versions (repo_id, digest, tag) WHERE valid_to IS NULL;
UPDATE tag_versions t SET listed_referrers = x.referrers
FROM trust_referrers x
WHERE x.repo_id = t.repo_id AND x.digest = t.digest AND t.valid_to IS NULL;
