-- Hosts besides the registry's own whose token realm may receive its credentials
-- (registry.registered / registry.updated `auth_hosts`).
ALTER TABLE registries ADD COLUMN auth_hosts TEXT[] NOT NULL DEFAULT '{}';
