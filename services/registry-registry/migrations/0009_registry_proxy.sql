-- A registry's own forward proxy (`http[s]://host:port`, never credentials) and the hosts
-- reached directly despite it (issue 16).
ALTER TABLE registries ADD COLUMN proxy_url TEXT;
ALTER TABLE registries ADD COLUMN no_proxy TEXT[] NOT NULL DEFAULT '{}';
