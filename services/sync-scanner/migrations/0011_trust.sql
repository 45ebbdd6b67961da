-- Trust (issue 13): what referrers say about the digests the scanner announced.

-- Referrer content, content-addressed: the manifest and the blobs its interpretation
-- needed, so policies are re-evaluated without the registry and a referrer shared by many
-- digests is read once. `skipped` names blobs not read (over the size limit), each once.
CREATE TABLE referrer_content (
    digest TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    manifest BYTEA NOT NULL,
    blob_digests TEXT[] NOT NULL DEFAULT '{}',
    blob_bodies BYTEA[] NOT NULL DEFAULT '{}',
    skipped JSONB NOT NULL DEFAULT '[]',
    bytes BIGINT NOT NULL,
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The referrers of each digest as last announced (a tag event's `referrers`, or
-- `image.referrers_changed`): a projection of the scanner's own events.
CREATE TABLE subject_referrers (
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    referrers JSONB NOT NULL,
    last_sequence BIGINT NOT NULL,
    PRIMARY KEY (registry_id, repository, digest)
);

-- What the trust events last said per digest (`policy`, `sig/<source>/<rule>`,
-- `sbom/<source>`, `vuln/<source>`), so each is emitted only when it changes: a
-- projection of the scanner's own events.
CREATE TABLE trust_facts (
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    key TEXT NOT NULL,
    value JSONB NOT NULL,
    last_sequence BIGINT NOT NULL,
    PRIMARY KEY (registry_id, repository, digest, key)
);
