-- Search by word in name order (issue 17). A search page needs the next matching names
-- after its cursor; the search index (GIN on `repositories.search`) gives every match of a
-- word unordered, to be sorted on each page. `search_words` holds, for each repository
-- name, the words its search vector starts with, so the names of a word are one range of
-- its primary key, in name order from any cursor.
--
-- `word` is a lexeme's leading run of ASCII letters and digits (`cnpg` for `cnpg-00012`):
-- a search term of ASCII letters and digits matches a lexeme as a prefix (`cnpg:*`)
-- exactly when it is a prefix of that run, so a term's names are those of the few words
-- in `[term, term || U+10FFFF)` (byte order: `COLLATE "C"`). A term with any other
-- character is searched with the search index. `name` keeps the catalog's collation: its
-- order is the pages' order.
--
-- Kept by triggers, so that every writer of `repositories.search` (new repositories, a new
-- OCI description, a rule's description) keeps it, in the same transaction. The triggers
-- name the tables through their own schema (`TG_TABLE_SCHEMA`): a rebuild fills a schema of
-- another name and renames it.
CREATE TABLE search_words (
    word TEXT COLLATE "C" NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (word, name)
);

-- A word's names are read by an index-only scan in name order, which the planner prefers
-- to reading every name of the word and sorting them only when the visibility map says the
-- heap need not be visited: vacuumed soon after changes (a rebuild vacuums it at its end).
ALTER TABLE search_words SET (
    autovacuum_vacuum_insert_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_scale_factor = 0.05
);

INSERT INTO search_words (word, name)
SELECT DISTINCT substring(l FROM '^[a-z0-9]+'), r.name
FROM repositories r, unnest(tsvector_to_array(r.search)) AS l
WHERE l ~ '^[a-z0-9]';

CREATE FUNCTION search_words_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO %I.search_words (word, name)
         SELECT DISTINCT substring(l FROM ''^[a-z0-9]+''), n.name
         FROM added n, unnest(tsvector_to_array(n.search)) AS l
         WHERE l ~ ''^[a-z0-9]''
         ON CONFLICT DO NOTHING', TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

-- A name's words again from every repository of that name (a name may be in several
-- registries).
CREATE FUNCTION search_words_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    names TEXT[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        names := ARRAY[OLD.name];
    ELSE
        names := ARRAY[OLD.name, NEW.name];
    END IF;
    EXECUTE format('DELETE FROM %I.search_words WHERE name = ANY($1)', TG_TABLE_SCHEMA)
        USING names;
    EXECUTE format(
        'INSERT INTO %I.search_words (word, name)
         SELECT DISTINCT substring(l FROM ''^[a-z0-9]+''), r.name
         FROM %I.repositories r, unnest(tsvector_to_array(r.search)) AS l
         WHERE r.name = ANY($1) AND l ~ ''^[a-z0-9]''
         ON CONFLICT DO NOTHING', TG_TABLE_SCHEMA, TG_TABLE_SCHEMA)
        USING names;
    RETURN NULL;
END
$$;

CREATE TRIGGER repositories_search_added AFTER INSERT ON repositories
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION search_words_added();

CREATE TRIGGER repositories_search_changed AFTER UPDATE OF name, search ON repositories
    FOR EACH ROW
    WHEN (OLD.search IS DISTINCT FROM NEW.search OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION search_words_changed();

CREATE TRIGGER repositories_search_removed AFTER DELETE ON repositories
    FOR EACH ROW EXECUTE FUNCTION search_words_changed();
