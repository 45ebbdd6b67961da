-- serving-deployer's own view, projected from the stream: registries, the tags it may
-- deploy (with their digests), approvals, and the deployments themselves.
CREATE TABLE registries (
    id UUID PRIMARY KEY,
    label TEXT NOT NULL,
    url TEXT NOT NULL,
    visibility TEXT[] NOT NULL DEFAULT '{}',
    removed BOOLEAN NOT NULL DEFAULT false,
    last_sequence BIGINT NOT NULL
);

CREATE TABLE tags (
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    kind TEXT NOT NULL,
    model_type TEXT,
    media_type TEXT NOT NULL,
    labels JSONB NOT NULL DEFAULT '{}',
    annotations JSONB NOT NULL DEFAULT '{}',
    extensions JSONB NOT NULL DEFAULT '[]',
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (registry_id, repository, tag)
);

-- The last stream sequence applied per image (and catalog) aggregate.
CREATE TABLE aggregate_sequences (
    aggregate TEXT NOT NULL,
    id UUID NOT NULL,
    last_sequence BIGINT NOT NULL,
    PRIMARY KEY (aggregate, id)
);

-- Curators' decisions; tag '' is the whole repository.
CREATE TABLE approvals (
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT,
    approved BOOLEAN NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (registry_id, repository, tag)
);

CREATE TABLE deployments (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    namespace TEXT NOT NULL,
    workload TEXT NOT NULL,
    target TEXT NOT NULL,
    registry_id UUID NOT NULL,
    repository TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    request JSONB NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    manifests JSONB NOT NULL DEFAULT '[]',
    revision TEXT,
    history JSONB NOT NULL DEFAULT '[]',
    registry_removed BOOLEAN NOT NULL DEFAULT false,
    requested_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    last_sequence BIGINT NOT NULL
);

CREATE INDEX deployments_image ON deployments (registry_id, repository);
