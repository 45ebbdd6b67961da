-- `max_severity=<level>` pages (issue 17): one partial index per threshold, in name order,
-- holding exactly the current versions at or under it, so a page is an ordered range scan
-- that stops after the page. With one index keyed on the name and the level last, the
-- planner, estimating few matches, read every reported row with a bitmap scan and sorted
-- them. The query names the level as a constant (0 none … 4 critical) so that the planner
-- can match the index's predicate; `critical` (every reported version) keeps
-- `tag_versions_severity`.
CREATE INDEX tag_versions_severity_le0 ON tag_versions (repository, tag, registry_id)
    WHERE valid_to IS NULL AND max_severity <= 0;
CREATE INDEX tag_versions_severity_le1 ON tag_versions (repository, tag, registry_id)
    WHERE valid_to IS NULL AND max_severity <= 1;
CREATE INDEX tag_versions_severity_le2 ON tag_versions (repository, tag, registry_id)
    WHERE valid_to IS NULL AND max_severity <= 2;
CREATE INDEX tag_versions_severity_le3 ON tag_versions (repository, tag, registry_id)
    WHERE valid_to IS NULL AND max_severity <= 3;
