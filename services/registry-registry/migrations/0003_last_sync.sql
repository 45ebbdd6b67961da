-- The last scan of each registry, from the sync aggregate, so a registry's view says how
-- its discovery is going.
ALTER TABLE registries
    ADD COLUMN last_sync_state TEXT,
    ADD COLUMN last_sync_at TIMESTAMPTZ,
    ADD COLUMN last_sync_summary JSONB,
    ADD COLUMN sync_sequence BIGINT NOT NULL DEFAULT 0;
