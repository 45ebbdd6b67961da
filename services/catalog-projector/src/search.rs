//! The names a name-ordered search page reads (issue 17): the next repositories, in name
//! order from the page's cursor, whose search vector matches every word searched for.
//!
//! A page then reads its rows from those names' ranges of the name index
//! ([`crate::query::images_named`]). Three ways to find the names, cheapest first:
//!
//! 1. **By word** ([`search_words`]): a term of ASCII letters and digits standing for at
//!    most [`WORDS_MAX`] words of `search_words` (migration `0012`) reads each word's names
//!    from the cursor on, a range of its primary key, and merges them: a few index entries
//!    per name, wherever the cursor is. With several terms, the longest one's names are
//!    read and each is checked against the whole search.
//! 2. **By name** ([`crate::query::search_scan`]): the repositories' names in order from
//!    the cursor, each checked, up to a budget: a short term (`p`) that stands for many
//!    words is in many repositories, and fills a page in the first few hundred names.
//! 3. **By the search index** ([`crate::query::search_names`]), every match after the last
//!    name read, sorted: when the budget ran out (a rare word with characters other than
//!    ASCII letters and digits, or with other terms that few of its names also match).

use sqlx::{PgPool, Row};

use crate::query::{Bind, SearchNames, Sql, search_budget, search_names, search_scan};

/// The most words one term may stand for and be read by word: each is a range read.
pub const WORDS_MAX: i64 = 16;

/// How many rounds [`next_names`] reads by word before asking the search index: a term in
/// many names that few of them match with the other terms.
const WORD_ROUNDS: usize = 3;

/// The terms of `q` (a [`crate::query::tsquery`]: `word:* & word:*`) when every one is
/// ASCII letters and digits, longest first (the one whose names are read: likely the
/// rarest). `None` when any term has another character: its lexemes may not begin with it
/// as written (the text search's parser and lower-casing decide), so the search index
/// answers it.
pub fn word_terms(q: &str) -> Option<Vec<&str>> {
    let mut terms = Vec::new();
    for t in q.split(" & ") {
        let t = t.strip_suffix(":*")?;
        if t.is_empty()
            || !t
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return None;
        }
        terms.push(t);
    }
    terms.sort_by_key(|t| std::cmp::Reverse(t.len()));
    (!terms.is_empty()).then_some(terms)
}

/// The names of the words `term` begins (each a range of `search_words`), merged in name
/// order from `from` on, at most `limit`; each with whether its repository matches the whole
/// search `q` (always, when `check` is false: `term` is the only term). One row with no
/// name instead when `term` stands for more than [`WORDS_MAX`] words.
pub fn search_words(
    q: &str,
    term: &str,
    check: bool,
    from: Option<(&str, bool)>,
    limit: i64,
) -> Sql {
    let mut sql = Sql::default();
    let cte = words_cte(&mut sql, term, from, limit);
    let matches = if check {
        let p = sql.bind(Bind::Text(q.to_owned()));
        format!(
            "EXISTS (SELECT 1 FROM repositories r WHERE r.name = c.name \
             AND r.search @@ to_tsquery('simple', {p}))"
        )
    } else {
        "true".to_owned()
    };
    sql.text = format!(
        "WITH RECURSIVE {cte} \
         (SELECT c.name, {matches} FROM c ORDER BY c.name) \
         UNION ALL (SELECT NULL, false FROM v WHERE v.n > {WORDS_MAX})"
    );
    sql
}

/// The common table expressions of a term's names, binding into `sql`: `w`, the words
/// `term` begins (at most [`WORDS_MAX`] and one more); `v`, how many; and `c(name)`, their
/// names merged in name order from `from` on, at most `limit`, none when `term` stands for
/// more than [`WORDS_MAX`] words. [`search_words`] reads them, and so does a search page
/// that finds its names in the same statement ([`crate::query::images_by_word`]).
///
/// The words are found by skipping through the index from `term` to `term || U+10FFFF`
/// (byte order), one probe each, so a term costs its words, not its names.
pub(crate) fn words_cte(
    sql: &mut Sql,
    term: &str,
    from: Option<(&str, bool)>,
    limit: i64,
) -> String {
    let t = sql.bind(Bind::Text(term.to_owned()));
    let end = sql.bind(Bind::Text(format!("{term}\u{10FFFF}")));
    let from = match from {
        Some((name, inclusive)) => {
            let a = sql.bind(Bind::Text(name.to_owned()));
            format!(" AND x.name {} {a}", if inclusive { ">=" } else { ">" })
        }
        None => String::new(),
    };
    let limit = Sql::limit(limit);
    format!(
        "w(word, k) AS (\
            (SELECT x.word, 1 FROM search_words x WHERE x.word >= {t} AND x.word < {end} \
             ORDER BY x.word LIMIT 1) \
          UNION ALL \
            SELECT (SELECT x.word FROM search_words x WHERE x.word > w.word AND x.word < {end} \
                    ORDER BY x.word LIMIT 1), w.k + 1 \
            FROM w WHERE w.word IS NOT NULL AND w.k <= {WORDS_MAX}), \
         v AS (SELECT count(w.word) AS n FROM w), \
         c AS (SELECT m.name FROM w CROSS JOIN LATERAL (\
                 SELECT x.name FROM search_words x WHERE x.word = w.word{from} \
                 ORDER BY x.name LIMIT {limit}) m \
               WHERE w.word IS NOT NULL AND (SELECT v.n FROM v) <= {WORDS_MAX} \
               GROUP BY m.name ORDER BY m.name LIMIT {limit})"
    )
}

/// The next `n` names matching the search `q` from `from` on (`(name, inclusive)`), and
/// every statement read for them when `ran` is given (the bench hands them to `pgbench`).
#[tracing::instrument(skip(pool, ran), err)]
pub async fn next_names(
    pool: &PgPool,
    q: &str,
    from: Option<(&str, bool)>,
    n: i64,
    mut ran: Option<&mut Vec<Sql>>,
) -> Result<Vec<String>, sqlx::Error> {
    let n = n.max(1);
    let mut found = match word_terms(q) {
        Some(terms) => by_word(pool, q, &terms, from, n, ran.as_deref_mut()).await?,
        None => None,
    };
    if found.is_none() {
        let budget = search_budget(n);
        let scan = search_scan(q, from, budget);
        let rows = scan
            .query()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<bool, _>(1)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        if let Some(ran) = ran.as_deref_mut() {
            ran.push(scan);
        }
        found = Some(SearchNames::from_scan(rows, n, budget));
    }
    let Some(mut found) = found else {
        return Ok(Vec::new());
    };
    if let Some(after) = found.continue_after.take() {
        let more = n - found.names.len() as i64 + 1;
        let index = search_names(q, Some((&after, true)), more);
        let names = index
            .query()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(ran) = ran {
            ran.push(index);
        }
        found.add_from_index(names, n);
    }
    Ok(found.names)
}

/// [`next_names`] by word: `None` when the first term stands for too many words. Its
/// `continue_after` is set when [`WORD_ROUNDS`] rounds did not find `n` names (the search
/// index goes on from there).
async fn by_word(
    pool: &PgPool,
    q: &str,
    terms: &[&str],
    from: Option<(&str, bool)>,
    n: i64,
    mut ran: Option<&mut Vec<Sql>>,
) -> Result<Option<SearchNames>, sqlx::Error> {
    let check = terms.len() > 1;
    // One term: every name read matches; several: a budget of names to check.
    let limit = if check { search_budget(n) } else { n };
    let mut from = from.map(|(name, inclusive)| (name.to_owned(), inclusive));
    let mut found = SearchNames {
        names: Vec::new(),
        continue_after: None,
    };
    for _ in 0..WORD_ROUNDS {
        let want = n - found.names.len() as i64;
        let statement = search_words(
            q,
            terms[0],
            check,
            from.as_ref().map(|(name, i)| (name.as_str(), *i)),
            limit,
        );
        let rows = statement
            .query()
            .fetch_all(pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<Option<String>, _>(0)?,
                    row.try_get::<bool, _>(1)?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        if let Some(ran) = ran.as_deref_mut() {
            ran.push(statement);
        }
        let mut named = Vec::with_capacity(rows.len());
        for (name, matches) in rows {
            match name {
                Some(name) => named.push((name, matches)),
                None => return Ok(None),
            }
        }
        let round = SearchNames::from_scan(named, want, limit);
        found.add_from_index(round.names, n);
        match round.continue_after {
            Some(after) if (found.names.len() as i64) < n => {
                from = Some((after.clone(), false));
                found.continue_after = Some(after);
            }
            _ => {
                found.continue_after = None;
                break;
            }
        }
    }
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_of_ascii_letters_and_digits_are_read_by_word_longest_first() {
        assert_eq!(word_terms("cnpg:*"), Some(vec!["cnpg"]));
        assert_eq!(
            word_terms("16:* & postgres:* & cnpg:*"),
            Some(vec!["postgres", "cnpg", "16"])
        );
        // Anything the text search may read otherwise goes to the search index.
        assert_eq!(word_terms("ünïcode:*"), None);
        assert_eq!(word_terms("cnpg:* & café:*"), None);
        assert_eq!(word_terms("cnpg"), None);
        assert_eq!(word_terms(""), None);
        assert_eq!(word_terms(":*"), None);
    }

    #[test]
    fn a_term_reads_the_range_of_its_words() {
        let sql = search_words("cnpg:*", "cnpg", false, Some(("postgres/a", true)), 51);
        assert_eq!(
            sql.binds,
            vec![
                Bind::Text("cnpg".into()),
                Bind::Text("cnpg\u{10FFFF}".into()),
                Bind::Text("postgres/a".into()),
            ]
        );
        assert!(sql.text.contains("x.name >= $3"));
        assert!(sql.text.contains("LIMIT 51"));
        assert!(!sql.text.contains("@@"));
        let checked = search_words("a:* & bb:*", "bb", true, None, 408);
        assert!(checked.text.contains("@@ to_tsquery('simple', $3)"));
    }
}
