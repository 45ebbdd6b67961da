-- How far this service has applied the event stream: its projections resume here.
CREATE TABLE IF NOT EXISTS stream_position (
    consumer TEXT PRIMARY KEY,
    sequence BIGINT NOT NULL CHECK (sequence >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
