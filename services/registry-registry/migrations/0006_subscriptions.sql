-- Outbound subscriptions (issue 14): the projection of the subscription aggregate, and the
-- delivery state beside it.
--
-- `subscriptions` is a projection of the stream (rebuilt from `subscription.*` events); the
-- signing secret is only ever stored sealed, and dropped once the subscription is removed
-- (its data key is destroyed too: `key_shredded_at`, local bookkeeping).
CREATE TABLE subscriptions (
    id UUID PRIMARY KEY,
    url TEXT NOT NULL,
    types TEXT[] NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    secret JSONB,
    created_by TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    -- The stream sequence of `subscription.created`: only later events are delivered.
    created_sequence BIGINT NOT NULL,
    -- The sequence of the aggregate's last event: commands expect it.
    last_sequence BIGINT NOT NULL,
    removed_at TIMESTAMPTZ,
    key_shredded_at TIMESTAMPTZ,
    -- Delivery bookkeeping shown in the view (not from events).
    last_delivered_at TIMESTAMPTZ,
    last_failed_at TIMESTAMPTZ,
    last_failure TEXT
);

-- The delivery queue (an outbox): one row per event and subscription still to deliver. Not
-- a projection: it is the delivery's own durable state, written with the delivery
-- consumer's position in one transaction, so a restart neither loses nor repeats a row.
-- `body` is the structured CloudEvent as it is on the bus. Rows of one `subject` (the
-- CloudEvent subject) go out in `sequence` order: only the oldest row of a subject is ever
-- sent, and it stays until it is delivered or dead-lettered.
CREATE TABLE subscription_outbox (
    subscription_id UUID NOT NULL,
    sequence BIGINT NOT NULL,
    subject TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_time TIMESTAMPTZ NOT NULL,
    traceparent TEXT,
    body BYTEA NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    -- Set while a dispatcher sends it; a crashed sender's lease simply runs out.
    leased_until TIMESTAMPTZ,
    first_attempt_at TIMESTAMPTZ,
    last_status INTEGER,
    last_error TEXT,
    replayed BOOLEAN NOT NULL DEFAULT false,
    enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, sequence)
);

CREATE INDEX subscription_outbox_heads ON subscription_outbox (subscription_id, subject, sequence);

-- Events given up on after the whole retry schedule: the last status or error (a bounded
-- snippet, never a response body beyond it, never the secret).
CREATE TABLE subscription_dead_letters (
    id BIGSERIAL PRIMARY KEY,
    subscription_id UUID NOT NULL,
    sequence BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    event_time TIMESTAMPTZ NOT NULL,
    attempts INTEGER NOT NULL,
    first_attempt_at TIMESTAMPTZ,
    dead_at TIMESTAMPTZ NOT NULL,
    last_status INTEGER,
    last_error TEXT
);

CREATE INDEX subscription_dead_letters_page ON subscription_dead_letters (subscription_id, id DESC);

-- Replays requested (`subscription.replay_requested`), each read from the stream from
-- `next_sequence` until the request's own sequence; `done_at` once finished.
CREATE TABLE subscription_replays (
    request_sequence BIGINT PRIMARY KEY,
    subscription_id UUID NOT NULL,
    from_time TIMESTAMPTZ NOT NULL,
    to_time TIMESTAMPTZ NOT NULL,
    next_sequence BIGINT NOT NULL DEFAULT 0,
    enqueued BIGINT NOT NULL DEFAULT 0,
    done_at TIMESTAMPTZ
);
