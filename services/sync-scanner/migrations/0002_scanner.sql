-- sync-scanner's own state: every table is a projection of the stream (registries, rules,
-- its own image and sync events) or a cache of immutable content; dropping the schema and
-- replaying the stream rebuilds it.

-- Registries as the scanner needs them (credentials only ever sealed).
CREATE TABLE registries (
    id UUID PRIMARY KEY,
    url TEXT NOT NULL,
    insecure BOOLEAN NOT NULL,
    ca_pem TEXT,
    auth_kind TEXT NOT NULL,
    credential JSONB,
    visibility TEXT[] NOT NULL DEFAULT '{}',
    scan_interval_secs BIGINT,
    repositories TEXT[] NOT NULL DEFAULT '{}',
    removed BOOLEAN NOT NULL DEFAULT FALSE,
    -- When the registry's rules last changed (a rescan follows, debounced).
    rules_changed_at TIMESTAMPTZ,
    last_sequence BIGINT NOT NULL
);

CREATE TABLE rules (
    registry_id UUID NOT NULL,
    rule_id TEXT NOT NULL,
    body JSONB NOT NULL,
    PRIMARY KEY (registry_id, rule_id)
);

-- The last stream sequence of each rule aggregate (one per registry).
CREATE TABLE rule_sets (
    registry_id UUID PRIMARY KEY,
    last_sequence BIGINT NOT NULL
);

-- What the scanner last said about each tag: the projection of its image events. A
-- removed tag stays as a tombstone (present = false) so that an older event delivered
-- late can never bring it back.
CREATE TABLE known_tags (
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    present BOOLEAN NOT NULL,
    kind TEXT,
    -- Platform digests of a multi-arch index (JSON list of Platform).
    platforms JSONB NOT NULL DEFAULT '[]',
    last_sequence BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (registry_id, repository, tag)
);

CREATE INDEX known_tags_present ON known_tags (registry_id, repository) WHERE present;

-- Content-addressed cache of manifests and config blobs: what a digest names never
-- changes, so a digest found here is never fetched again.
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    body BYTEA NOT NULL,
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Each registry's scans, from the sync events (every replica sees every replica's scans).
CREATE TABLE scans (
    registry_id UUID PRIMARY KEY,
    running_sync_id UUID,
    running_since TIMESTAMPTZ,
    running_repository TEXT,
    running_actor TEXT,
    last_sync_id UUID,
    last_started_at TIMESTAMPTZ,
    last_full_started_at TIMESTAMPTZ,
    last_finished_at TIMESTAMPTZ,
    -- completed | partial | failed
    last_state TEXT,
    last_summary JSONB,
    last_sequence BIGINT NOT NULL
);
