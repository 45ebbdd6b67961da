-- `search_words_changed` deletes a repository's words by name: without an index on the
-- name alone each call read the whole table, which made a new OCI description on 10,000
-- repositories (a rebuild's repository details, written at its end) take 8.8 s.
CREATE INDEX search_words_name ON search_words (name);
