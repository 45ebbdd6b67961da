-- The catalog: the Image and Model Library projected from the event stream. Every row
-- here is rebuilt by replaying the stream (`catalog-projector rebuild`), so nothing is
-- stored that the events do not say. Tables are unqualified: the pool's search_path names
-- the schema, which lets a rebuild fill `catalog_next` and rename it into place.

-- Registries as the catalog shows them: never a credential or a secret.
CREATE TABLE registries (
    id UUID PRIMARY KEY,
    label TEXT NOT NULL,
    url TEXT NOT NULL,
    registry_type TEXT NOT NULL,
    insecure BOOLEAN NOT NULL DEFAULT false,
    visibility TEXT[] NOT NULL DEFAULT '{}',
    -- pending | validated | validation_failed
    status TEXT NOT NULL DEFAULT 'pending',
    status_reason TEXT,
    status_detail TEXT,
    registered_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    removed_at TIMESTAMPTZ,
    -- The latest sync: requested | running | completed | failed.
    sync_status TEXT,
    sync_reason TEXT,
    sync_id UUID,
    sync_repository TEXT,
    sync_requested_at TIMESTAMPTZ,
    sync_started_at TIMESTAMPTZ,
    sync_finished_at TIMESTAMPTZ,
    sync_error TEXT,
    -- The counts of the last completed sync, and when it completed.
    sync_counts JSONB,
    sync_completed_at TIMESTAMPTZ
);

-- Repository rules, as far as the catalog needs them (description and HM tags).
CREATE TABLE rules (
    registry_id UUID NOT NULL,
    rule_id TEXT NOT NULL,
    body JSONB NOT NULL,
    PRIMARY KEY (registry_id, rule_id)
);

-- One row per repository of a registry (the image aggregate, id = UUIDv5).
CREATE TABLE repositories (
    id UUID PRIMARY KEY,
    registry_id UUID NOT NULL,
    name TEXT NOT NULL,
    -- The kind and model type of its most recently discovered tag.
    kind TEXT NOT NULL DEFAULT 'other',
    model_type TEXT,
    -- From the rule that governs it (first enabled matching rule in rule-id order).
    rule_id TEXT,
    rule_description TEXT NOT NULL DEFAULT '',
    rule_hm_tags TEXT[] NOT NULL DEFAULT '{}',
    -- `org.opencontainers.image.description` of its most recently discovered tag.
    oci_description TEXT NOT NULL DEFAULT '',
    description TEXT GENERATED ALWAYS AS (
        CASE WHEN rule_description <> '' THEN rule_description ELSE oci_description END
    ) STORED,
    -- Curators' repository-level HM tags, and the union with the rule's.
    curator_hm_tags TEXT[] NOT NULL DEFAULT '{}',
    hm_tags TEXT[] NOT NULL DEFAULT '{}',
    -- Current tags, by kind (the counters of /v1/stats).
    tag_count INTEGER NOT NULL DEFAULT 0,
    database_tags INTEGER NOT NULL DEFAULT 0,
    model_tags INTEGER NOT NULL DEFAULT 0,
    first_seen TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    -- Full-text search on the name (split at `/ . _ -`) and the description; set by the
    -- projection when either changes (not generated: counter updates stay cheap, HOT).
    search TSVECTOR NOT NULL
) WITH (fillfactor = 50);

CREATE UNIQUE INDEX repositories_name ON repositories (name, registry_id);
CREATE INDEX repositories_registry ON repositories (registry_id, name);
CREATE INDEX repositories_search ON repositories USING gin (search);
CREATE INDEX repositories_hm_tags ON repositories USING gin (hm_tags);

-- Every version of every tag: a tag pointing at a digest from `valid_from` until
-- `valid_to` (NULL while current). The current catalog is `valid_to IS NULL`; `as_of`
-- queries read the versions valid at a time.
CREATE TABLE tag_versions (
    repo_id UUID NOT NULL,
    tag TEXT NOT NULL,
    -- The stream sequence of the event that opened this version.
    sequence BIGINT NOT NULL,
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    digest TEXT NOT NULL,
    valid_from TIMESTAMPTZ NOT NULL,
    valid_to TIMESTAMPTZ,
    -- When the tag was first seen at all, and last seen at this digest.
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    media_type TEXT NOT NULL,
    artifact_type TEXT,
    kind TEXT NOT NULL,
    model_type TEXT,
    archs TEXT[] NOT NULL,
    platforms JSONB NOT NULL,
    size BIGINT NOT NULL,
    created TIMESTAMPTZ,
    labels JSONB NOT NULL,
    annotations JSONB NOT NULL,
    extensions JSONB NOT NULL,
    referrers JSONB NOT NULL,
    -- Curators' tag-level HM tags (the repository's come from `repositories`).
    hm_tags TEXT[] NOT NULL DEFAULT '{}',
    -- approved | rejected | NULL: the effective decision for this digest.
    approval TEXT
) WITH (fillfactor = 90);

CREATE UNIQUE INDEX tag_versions_current ON tag_versions (repo_id, tag) WHERE valid_to IS NULL;
-- sort=name and the repository filter; kind for the Model Library; sort=updated.
CREATE INDEX tag_versions_name ON tag_versions (repository, tag, registry_id) WHERE valid_to IS NULL;
CREATE INDEX tag_versions_kind ON tag_versions (kind, repository, tag, registry_id) WHERE valid_to IS NULL;
CREATE INDEX tag_versions_updated ON tag_versions (valid_from, repo_id, tag) WHERE valid_to IS NULL;
CREATE INDEX tag_versions_archs ON tag_versions USING gin (archs) WHERE valid_to IS NULL;
-- as_of: every version, in name order.
CREATE INDEX tag_versions_history ON tag_versions (repository, tag, registry_id, valid_from);

-- Curators' HM tags, last writer (highest stream sequence) wins; `tag` is '' for the
-- repository itself.
CREATE TABLE hm_labels (
    repo_id UUID NOT NULL,
    tag TEXT NOT NULL,
    hm_tag TEXT NOT NULL,
    present BOOLEAN NOT NULL,
    actor TEXT,
    at TIMESTAMPTZ NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (repo_id, tag, hm_tag)
);

CREATE TABLE readmes (
    repo_id UUID NOT NULL,
    tag TEXT NOT NULL,
    readme TEXT NOT NULL,
    actor TEXT,
    at TIMESTAMPTZ NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (repo_id, tag)
);

-- The latest approval decision per repository ('') or tag; a tag decision names the
-- digest it was made for, so a moved tag is not approved by it.
CREATE TABLE approvals (
    repo_id UUID NOT NULL,
    tag TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    digest TEXT,
    reason TEXT NOT NULL DEFAULT '',
    actor TEXT,
    at TIMESTAMPTZ NOT NULL,
    sequence BIGINT NOT NULL,
    PRIMARY KEY (repo_id, tag)
);

-- Deployments of images: the "used by" of a repository.
CREATE TABLE deployments (
    id UUID PRIMARY KEY,
    repo_id UUID NOT NULL,
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    name TEXT NOT NULL,
    namespace TEXT NOT NULL,
    workload TEXT NOT NULL,
    target TEXT NOT NULL,
    replicas INTEGER NOT NULL,
    -- requested | rendered | applied | failed | deleted
    status TEXT NOT NULL,
    status_detail TEXT,
    revision TEXT,
    requested_by TEXT,
    requested_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX deployments_repo ON deployments (repo_id, tag) WHERE status <> 'deleted';
