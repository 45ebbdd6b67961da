-- The registry-registry's projection of its own aggregates (registry, rule). It is
-- rebuilt from the stream; credentials are only ever stored sealed.
CREATE TABLE registries (
    id UUID PRIMARY KEY,
    label TEXT NOT NULL,
    url TEXT NOT NULL,
    registry_type TEXT NOT NULL,
    insecure BOOLEAN NOT NULL,
    auth_kind TEXT NOT NULL,
    credential JSONB,
    webhook_secret JSONB,
    visibility TEXT[] NOT NULL DEFAULT '{}',
    ca_pem TEXT,
    scan_interval_secs BIGINT,
    repositories TEXT[] NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'pending',
    status_reason TEXT,
    status_detail TEXT,
    auth_scheme TEXT,
    catalog_access BOOLEAN,
    validated_at TIMESTAMPTZ,
    created_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    removed_at TIMESTAMPTZ,
    -- The stream sequence of the registry aggregate's last event: commands expect it.
    last_sequence BIGINT NOT NULL
);

CREATE INDEX registries_label ON registries (lower(label)) WHERE removed_at IS NULL;

CREATE TABLE rules (
    registry_id UUID NOT NULL,
    rule_id TEXT NOT NULL,
    body JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (registry_id, rule_id)
);

-- The last stream sequence of each rule aggregate (one per registry).
CREATE TABLE rule_sets (
    registry_id UUID PRIMARY KEY,
    last_sequence BIGINT NOT NULL
);
