-- The tag-mutated gate (issue 14): every `image.tag_mutated`, so a deploy of a digest that
-- came into a tag by a mutation waits for a curator's approval of that digest, and a
-- deployment still pinned to the digest a tag was moved away from is flagged.
CREATE TABLE tag_mutations (
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    old_digest TEXT NOT NULL,
    new_digest TEXT NOT NULL,
    found_by TEXT NOT NULL,
    seen_at TIMESTAMPTZ,
    at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (registry_id, repository, tag, sequence)
);

CREATE INDEX tag_mutations_old ON tag_mutations (registry_id, repository, old_digest);
