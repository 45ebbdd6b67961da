-- Whether the registry's pull notifications are counted (`registry.registered` /
-- `registry.updated` `report_pulls`): the webhook reads it for every notification.
ALTER TABLE registries ADD COLUMN report_pulls BOOLEAN NOT NULL DEFAULT false;
