-- The audit trail's links are derived from the type, subject, registry and repository
-- when read (`projection::audit::link`): one column less to write per event.
ALTER TABLE audit DROP COLUMN link;
