-- The scanner's tag events are most of the trail. A filter that selects them finds its
-- page by reading the trail in order anyway, so the actor and type indexes leave them out:
-- much smaller, cheaper to write and to rebuild. A filter on another actor or type uses
-- them (the API plans each query with its values, so the planner sees that the value is
-- outside the excluded range). Byte-wise ranges: the scanner is `system:sync-scanner` or
-- `system:sync-scanner/<instance>`.
DROP INDEX audit_actor, audit_type;
CREATE INDEX audit_actor ON audit (actor, sequence)
    WHERE actor < 'system:sync-scanner' OR actor >= 'system:sync-scanner0';
CREATE INDEX audit_type ON audit (event_type, sequence)
    WHERE event_type NOT IN ('io.imagelib.image.tag_discovered.v1',
        'io.imagelib.image.tag_moved.v1', 'io.imagelib.image.tag_removed.v1');
