-- The audit trail (issue 14): one row per event of the stream, written in the same
-- transaction as the catalog rows and the position, so a replay gives the same rows.
-- `GET /v1/audit` reads it newest first by stream sequence (keyset pagination). Never a
-- secret: a row holds a short summary written for people, not the event's data (sealed
-- credentials, subscription URLs and deployment env values are never copied).
CREATE TABLE audit (
    -- The stream sequence: the order of the trail and its pagination key.
    sequence BIGINT PRIMARY KEY,
    -- The CloudEvent `id`, `time`, `actor` (extension), `source`, `type` and `subject`.
    event_id UUID NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    actor TEXT,
    source TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    summary TEXT NOT NULL,
    -- The W3C trace id of the event's `traceparent` (32 hex digits).
    trace_id TEXT,
    -- What the event is about, when it says (a deployment's from its request).
    registry_id UUID,
    repository TEXT,
    tag TEXT,
    digest TEXT,
    -- The API path of the object: registry, rule, repository, deployment, subscription.
    link TEXT
);

-- The filters of `GET /v1/audit`, each in page order.
CREATE INDEX audit_actor ON audit (actor, sequence);
CREATE INDEX audit_type ON audit (event_type, sequence);
CREATE INDEX audit_registry ON audit (registry_id, sequence) WHERE registry_id IS NOT NULL;
CREATE INDEX audit_repository ON audit (repository, sequence) WHERE repository IS NOT NULL;
-- Time ranges: rows arrive in (nearly) time order, so a block range index is enough and
-- costs next to nothing to maintain.
CREATE INDEX audit_at ON audit USING brin (at);
