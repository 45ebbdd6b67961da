-- `gcr` only: the Artifact Registry repository a registry serves
-- (registry.registered / registry.updated `artifact_registry`): its repositories are
-- listed through the Artifact Registry API when `_catalog` is refused, instead of the
-- location the URL names.
ALTER TABLE registries ADD COLUMN artifact_registry TEXT;
