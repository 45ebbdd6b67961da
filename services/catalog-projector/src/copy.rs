//! PostgreSQL `COPY ... FROM STDIN` text format, for bulk inserts of new tag versions.
//!
//! The projection knows exactly which rows are new (it folds each batch in memory against
//! the current rows), so it can stream them with `COPY` instead of `INSERT`: the cheapest
//! way into PostgreSQL.

use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

/// One COPY payload being built, row by row.
#[derive(Debug, Default)]
pub struct CopyBuf {
    buf: String,
    first_in_row: bool,
    rows: usize,
}

impl CopyBuf {
    pub fn new() -> Self {
        CopyBuf {
            buf: String::with_capacity(64 * 1024),
            first_in_row: true,
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_bytes()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.first_in_row = true;
        self.rows = 0;
    }

    fn sep(&mut self) {
        if !self.first_in_row {
            self.buf.push('\t');
        }
        self.first_in_row = false;
    }

    pub fn end_row(&mut self) {
        self.buf.push('\n');
        self.first_in_row = true;
        self.rows += 1;
    }

    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.buf.push_str("\\N");
        self
    }

    pub fn text(&mut self, s: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.buf, s);
        self
    }

    pub fn opt_text(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    pub fn uuid(&mut self, u: Uuid) -> &mut Self {
        self.sep();
        let _ = write!(self.buf, "{}", u.hyphenated());
        self
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        self.sep();
        let _ = write!(self.buf, "{v}");
        self
    }

    pub fn time(&mut self, t: DateTime<Utc>) -> &mut Self {
        self.sep();
        self.buf
            .push_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true));
        self
    }

    pub fn opt_time(&mut self, t: Option<DateTime<Utc>>) -> &mut Self {
        match t {
            Some(t) => self.time(t),
            None => self.null(),
        }
    }

    /// A `text[]` value.
    pub fn text_array<S: AsRef<str>>(&mut self, items: &[S]) -> &mut Self {
        let literal = array_literal(items);
        self.text(&literal)
    }
}

/// Escape a value for the COPY text format: backslash, tab, newline and carriage return.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// A PostgreSQL array literal (`{"a","b"}`) of text values.
pub fn array_literal<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.as_ref().chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_tab_separated_and_escaped() {
        let mut b = CopyBuf::new();
        b.text("a\tb\\c\nd")
            .null()
            .int(-3)
            .text_array(&["x", "y\"z"]);
        b.end_row();
        assert_eq!(
            std::str::from_utf8(b.as_bytes()).unwrap(),
            "a\\tb\\\\c\\nd\t\\N\t-3\t{\"x\",\"y\\\\\"z\"}\n"
        );
        assert_eq!(b.rows(), 1);
    }

    #[test]
    fn times_are_microsecond_rfc3339() {
        let t = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut b = CopyBuf::new();
        b.time(t);
        assert_eq!(
            std::str::from_utf8(b.as_bytes()).unwrap(),
            "2025-01-02T03:04:05.123456Z"
        );
    }
}
