-- The pull budget a registry announced last (Docker Hub's `ratelimit-limit` /
-- `ratelimit-remaining`), as the scan that saw it left it: {limit, remaining, window_secs,
-- observed_at}. Shown by the status API; not part of any event.
ALTER TABLE scans ADD COLUMN rate_limit JSONB;
