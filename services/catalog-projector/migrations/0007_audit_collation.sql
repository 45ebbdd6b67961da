-- The audit trail's filter columns compare byte-wise: equality is the same, but index
-- builds (a rebuild sorts a million rows per index) and lookups use memcmp and abbreviated
-- keys instead of the locale's collation, and an `actor` prefix can use its index.
DROP INDEX audit_actor, audit_type, audit_repository;
ALTER TABLE audit
    ALTER COLUMN actor TYPE TEXT COLLATE "C",
    ALTER COLUMN event_type TYPE TEXT COLLATE "C",
    ALTER COLUMN repository TYPE TEXT COLLATE "C";
CREATE INDEX audit_actor ON audit (actor, sequence);
CREATE INDEX audit_type ON audit (event_type, sequence);
CREATE INDEX audit_repository ON audit (repository, sequence) WHERE repository IS NOT NULL;
