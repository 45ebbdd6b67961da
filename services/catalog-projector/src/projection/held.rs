//! The tag versions a bulk replay holds back, written once at the end.
//!
//! Why: a rebuild's replay writes most of its rows into `tag_versions`, and a fifth of the
//! versions it opens are closed by a later event. Written as they open, each of those is
//! written twice (its `COPY`, then an `UPDATE` of a 1.3 KB row, never HOT since `valid_to`
//! is in the current-version indexes' predicate), and every batch waits for PostgreSQL's
//! one backend to take its rows before it goes on. Held, a version is encoded once into a
//! file (binary `COPY` rows), a close is a note by the version's opening sequence, and the
//! file goes into the table with one `COPY` when the replay ends, each row with its end.
//!
//! What may be held: only versions nothing else reads or changes before the end. A batch
//! holds its new versions only when it is made of tag events alone, and not those of a
//! repository any trust or integrity event named (their lookups read the table); any
//! other batch first writes what is held ([`Held::flush`]), as does a refresh of a held
//! version (the same digest seen again). The live consumer holds nothing.
//!
//! A failed batch fails the bulk replay (a rebuild starts over), so what is held is never
//! rolled back.

use std::collections::HashMap;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::images::{NewVersion, binary_copy_statement, encode_version_binary};
use crate::copy::{BINARY_HEADER, BINARY_TRAILER, BinaryRows, CopyRow};

/// A record's header: row length, opening sequence, `valid_from` (µs), where `valid_to`
/// starts and ends in the row, where `listed_referrers` starts.
const RECORD_HEADER: usize = 4 + 8 + 8 + 4 + 4 + 4;

/// Bytes of `COPY` data sent at a time.
const CHUNK: usize = 256 * 1024;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Held {
    file: BufWriter<std::fs::File>,
    /// Versions opened at or after this sequence are held.
    from: u64,
    /// When held versions end, by opening sequence (µs since the Unix epoch).
    closes: HashMap<u64, i64>,
    rows: u64,
    scratch: BinaryRows,
}

impl Held {
    /// Hold versions opened from sequence `from` on, in an unnamed temporary file.
    pub(crate) fn new(from: u64) -> std::io::Result<Self> {
        Ok(Held {
            file: BufWriter::with_capacity(256 * 1024, tempfile::tempfile()?),
            from,
            closes: HashMap::new(),
            rows: 0,
            scratch: BinaryRows::bare(),
        })
    }

    /// Whether the version opened at `sequence` is held (not in the table yet): every
    /// version opened since the last flush is, since a batch that holds holds all its new
    /// versions and any other batch flushes first.
    pub(crate) fn holds(&self, sequence: u64) -> bool {
        sequence >= self.from
    }

    pub(crate) fn push(
        &mut self,
        v: &NewVersion<'_>,
        hm_tags: &[&str],
        approval: Option<&str>,
    ) -> std::io::Result<()> {
        debug_assert!(v.sequence >= self.from);
        self.scratch.clear();
        let at = encode_version_binary(&mut self.scratch, v, hm_tags, approval);
        let row = self.scratch.as_bytes();
        let len = |n: usize| u32::try_from(n).map_err(std::io::Error::other);
        self.file.write_all(&len(row.len())?.to_le_bytes())?;
        self.file.write_all(&v.sequence.to_le_bytes())?;
        self.file
            .write_all(&v.valid_from.timestamp_micros().to_le_bytes())?;
        self.file.write_all(&len(at.valid_to.0)?.to_le_bytes())?;
        self.file.write_all(&len(at.valid_to.1)?.to_le_bytes())?;
        self.file.write_all(&len(at.listed)?.to_le_bytes())?;
        self.file.write_all(row)?;
        self.rows += 1;
        Ok(())
    }

    /// The held version opened at `sequence` ends at `at` (not before it began).
    pub(crate) fn close(&mut self, sequence: u64, at: DateTime<Utc>) {
        self.closes.insert(sequence, at.timestamp_micros());
    }

    /// Write every held version into `tag_versions` within `tx`, each with its end (and,
    /// when ended, no listed referrers: those are kept on current versions only), then
    /// hold from `next_from` on.
    pub(crate) async fn flush(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        next_from: u64,
    ) -> Result<u64, sqlx::Error> {
        let written = self.rows;
        if written > 0 {
            let mut rows = self.reader()?;
            let mut copy = tx.copy_in_raw(&binary_copy_statement()).await?;
            copy.send(BINARY_HEADER).await?;
            while let Some(chunk) = rows.next_chunk()? {
                copy.send(chunk).await?;
            }
            copy.send(BINARY_TRAILER).await?;
            copy.finish().await?;
        }
        self.reset(next_from)?;
        Ok(written)
    }

    /// [`Held::flush`] for the end of a bulk replay, on `connections` connections of
    /// `pool` at once (a `COPY` each, in transactions of their own): PostgreSQL parses and
    /// inserts with as many backends. Nothing is held afterwards.
    pub(crate) async fn flush_all(
        mut self,
        pool: &sqlx::PgPool,
        connections: usize,
    ) -> Result<u64, sqlx::Error> {
        let written = self.rows;
        if written == 0 {
            return Ok(0);
        }
        let mut rows = self.reader()?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2 * connections);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        let mut writers = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let rx = rx.clone();
            let pool = pool.clone();
            writers.push(tokio::spawn(async move {
                let mut conn = pool.acquire().await?;
                sqlx::query("SET synchronous_commit = off")
                    .execute(&mut *conn)
                    .await?;
                let mut copy = conn.copy_in_raw(&binary_copy_statement()).await?;
                copy.send(BINARY_HEADER).await?;
                loop {
                    let chunk = rx.lock().await.recv().await;
                    let Some(chunk) = chunk else { break };
                    copy.send(chunk).await?;
                }
                copy.send(BINARY_TRAILER).await?;
                copy.finish().await?;
                sqlx::query("RESET synchronous_commit")
                    .execute(&mut *conn)
                    .await?;
                Ok::<_, sqlx::Error>(())
            }));
        }
        let mut read = Ok(());
        loop {
            match rows.next_chunk() {
                Ok(Some(chunk)) => {
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    read = Err(e);
                    break;
                }
            }
        }
        drop(tx);
        let mut result = read;
        for w in writers {
            let r = w.await.unwrap_or_else(|e| {
                Err(sqlx::Error::Io(std::io::Error::other(format!(
                    "a writer of held versions stopped: {e}"
                ))))
            });
            if result.is_ok() {
                result = r;
            }
        }
        result.map(|()| written)
    }

    fn reader(&mut self) -> Result<Rows<'_>, sqlx::Error> {
        self.file.flush()?;
        let mut file = self.file.get_ref().try_clone()?;
        file.seek(SeekFrom::Start(0))?;
        Ok(Rows {
            reader: std::io::BufReader::with_capacity(CHUNK, file),
            left: self.rows,
            closes: &self.closes,
            row: Vec::new(),
        })
    }

    fn reset(&mut self, next_from: u64) -> std::io::Result<()> {
        if self.rows > 0 {
            let file = self.file.get_mut();
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
        }
        self.closes.clear();
        self.rows = 0;
        self.from = next_from;
        Ok(())
    }
}

/// The held rows as `COPY` data, their ends written in.
struct Rows<'a> {
    reader: std::io::BufReader<std::fs::File>,
    left: u64,
    closes: &'a HashMap<u64, i64>,
    row: Vec<u8>,
}

impl Rows<'_> {
    /// The next rows, about [`CHUNK`] bytes of them; `None` once all are read.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, sqlx::Error> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut out: Vec<u8> = Vec::with_capacity(CHUNK + 4096);
        let mut header = [0u8; RECORD_HEADER];
        while self.left > 0 && out.len() < CHUNK {
            self.left -= 1;
            self.reader.read_exact(&mut header)?;
            let word = |at: usize| {
                u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
                    as usize
            };
            let long = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&header[at..at + 8]);
                u64::from_le_bytes(b)
            };
            let (len, sequence, valid_from) = (word(0), long(4), long(12) as i64);
            let (to_start, to_end, listed) = (word(20), word(24), word(28));
            if to_start > to_end || to_end > listed || listed > len {
                return Err(sqlx::Error::Protocol(
                    "a held tag version's record is damaged".into(),
                ));
            }
            self.row.resize(len, 0);
            self.reader.read_exact(&mut self.row)?;
            match self.closes.get(&sequence) {
                Some(&end) => {
                    out.extend_from_slice(&self.row[..to_start]);
                    let mut field = BinaryRows::bare();
                    field.put_time(
                        DateTime::from_timestamp_micros(end.max(valid_from)).unwrap_or_default(),
                    );
                    out.extend_from_slice(field.as_bytes());
                    out.extend_from_slice(&self.row[to_end..listed]);
                    out.extend_from_slice(&(-1i32).to_be_bytes());
                }
                None => out.extend_from_slice(&self.row),
            }
        }
        Ok(Some(out))
    }
}
