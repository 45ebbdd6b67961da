-- The registry's type (registry.registered / registry.updated `registry_type`): a
-- `dockerhub` registry lists its namespace through the Hub API (Hub has no `_catalog`).
ALTER TABLE registries ADD COLUMN registry_type TEXT NOT NULL DEFAULT 'generic';
