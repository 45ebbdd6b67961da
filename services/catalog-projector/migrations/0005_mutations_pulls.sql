-- Tag integrity and pulls (issue 14).

-- Every `image.tag_mutated`: a tag policy calls immutable was found at another digest.
-- One row per event (a tag can be re-pushed more than once); the old digest stays here
-- whatever the tag's versions say, so a mutation never hides what the tag pointed at before.
CREATE TABLE tag_mutations (
    repo_id UUID NOT NULL,
    tag TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    old_digest TEXT NOT NULL,
    new_digest TEXT NOT NULL,
    -- scan | webhook | deploy | sweep
    found_by TEXT NOT NULL,
    -- When the scanner saw the new digest under the tag (absent when it did not say).
    seen_at TIMESTAMPTZ,
    -- The event time.
    at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repo_id, tag, sequence)
);

-- The current version of a tag that was ever mutated is marked, for the `mutated` filter
-- and counter (a partial index: a catalog without mutations pays nothing). Closed versions
-- are never marked, so the mark does not depend on how a replay was batched.
ALTER TABLE tag_versions ADD COLUMN mutated BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX tag_versions_mutated ON tag_versions (repository, tag, registry_id)
    WHERE valid_to IS NULL AND mutated;

-- `image.pulls_counted`, summed per (repository, tag, digest); `tag` is '' for pulls by
-- digest. `sequence` is the last event added: a redelivered event (at or below it) adds
-- nothing, so the sums are those of one pass over the stream however often it is replayed.
CREATE TABLE pulls (
    repo_id UUID NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    pulls BIGINT NOT NULL,
    first_pulled_at TIMESTAMPTZ NOT NULL,
    last_pulled_at TIMESTAMPTZ NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (repo_id, tag, digest)
);

CREATE INDEX pulls_digest ON pulls (repo_id, digest);
