-- The stream sequence of the last scan's `sync.started`, so a client that requested a scan
-- (and got the request's sequence back) can tell the scan that answers it from one that
-- was already running.
ALTER TABLE registries ADD COLUMN last_sync_started_sequence BIGINT;
