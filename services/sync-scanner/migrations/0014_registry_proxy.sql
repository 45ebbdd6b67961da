-- A registry's own forward proxy and the hosts reached directly despite it
-- (registry.registered / registry.updated `proxy_url`, `no_proxy`): its client is built
-- with them, and the network guard checks the proxy's address.
ALTER TABLE registries ADD COLUMN proxy_url TEXT;
ALTER TABLE registries ADD COLUMN no_proxy TEXT[] NOT NULL DEFAULT '{}';
