-- Hosts besides the registry's own whose token realm may receive its credentials.
ALTER TABLE registries ADD COLUMN auth_hosts TEXT[] NOT NULL DEFAULT '{}';
-- When the removed registry's data key was destroyed. A removed registry without it still
-- has a key to shred: the shredder retries until it is set (also after a restart). Local
-- bookkeeping, not projected from events: a rebuilt table shreds again, which is harmless.
ALTER TABLE registries ADD COLUMN key_shredded_at TIMESTAMPTZ;
