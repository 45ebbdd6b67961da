-- Whether the registry reports pulls (opt-in per registry, issue 14): shown beside the
-- registry so a reader knows whether a tag's zero pulls mean "never pulled" or "not counted".
ALTER TABLE registries ADD COLUMN report_pulls BOOLEAN NOT NULL DEFAULT false;
