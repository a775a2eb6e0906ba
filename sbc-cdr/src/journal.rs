//! The journal of calls in progress: an append-only file of JSON lines, so that a crash or
//! `kill -9` loses no record.
//!
//! Entries: `open` (the record as folded so far, written at start, each attempt, ring and answer),
//! `end` (the final record, written when the call ends), `done` (record ids now in a completed
//! CDR file) and `tick` (the time the SBC was last known alive, written with each sync while calls
//! are open). Syncs are batched: [`Journal::sync_if_due`] fsyncs at most every [`SYNC_EVERY`].
//!
//! At start-up, [`replay`] turns the file into the records still owed: every call with an `open`
//! but no `end` becomes a record with disposition interrupted and the last known time as its end;
//! every `end` without `done` is written as it was. The journal is then compacted: it is rewritten
//! with only what is still open whenever it grows past its limit (and at start-up), so its size
//! stays bounded by the calls in progress.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{CallRecord, Disposition, ReleaseSide};

/// Longest time between a journal write and its fsync.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    Open(Box<CallRecord>),
    End(Box<CallRecord>),
    Done(Vec<String>),
    Tick(u64),
}

/// The records a journal still owed at start-up.
#[derive(Debug, Default)]
pub struct Replay {
    /// Calls that were in progress: disposition interrupted.
    pub interrupted: Vec<CallRecord>,
    /// Calls that had ended but whose record was not yet in a completed file.
    pub ended: Vec<CallRecord>,
}

/// Reads a journal left by a previous run. `already` holds record ids found in recovered CDR
/// files, which are not owed again. A missing file owes nothing; a torn last line is ignored.
pub fn replay(path: &Path, already: &[String]) -> io::Result<Replay> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Replay::default()),
        Err(e) => return Err(e),
    };
    let mut open: HashMap<String, CallRecord> = HashMap::new();
    let mut ended: HashMap<String, CallRecord> = HashMap::new();
    let mut last_alive = UNIX_EPOCH;
    for line in BufReader::new(file).split(b'\n') {
        let Ok(entry) = serde_json::from_slice::<Entry>(&line?) else { continue };
        match entry {
            Entry::Open(r) => {
                last_alive = last_alive.max(r.last_seen());
                open.insert(r.record_id.clone(), *r);
            }
            Entry::End(r) => {
                last_alive = last_alive.max(r.last_seen());
                open.remove(&r.record_id);
                ended.insert(r.record_id.clone(), *r);
            }
            Entry::Done(ids) => {
                for id in ids {
                    ended.remove(&id);
                }
            }
            Entry::Tick(ms) => {
                last_alive = last_alive.max(UNIX_EPOCH + Duration::from_millis(ms));
            }
        }
    }
    let owed = |r: &CallRecord| !already.contains(&r.record_id);
    let mut interrupted: Vec<CallRecord> = open
        .into_values()
        .filter(owed)
        .map(|mut r| {
            r.end = last_alive.max(r.last_seen());
            r.disposition = Disposition::Interrupted;
            r.status = 0;
            r.phrase = String::new();
            r.released_by = ReleaseSide::Sbc;
            r.reason = Some("interrupted".into());
            r
        })
        .collect();
    let mut ended: Vec<CallRecord> = ended.into_values().filter(owed).collect();
    interrupted.sort_by_key(|r| r.start);
    ended.sort_by_key(|r| r.end);
    Ok(Replay { interrupted, ended })
}

/// The journal being written.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
    /// Bytes in the file, for compaction.
    len: u64,
    /// The file is rewritten with only the open calls past this size.
    max_bytes: u64,
    dirty: bool,
    last_sync: Option<SystemTime>,
    failed: bool,
    buf: Vec<u8>,
}

impl Journal {
    /// Starts a fresh journal at `path` holding `open` (records still owed from a replay, as
    /// `end` entries, so that a second crash still owes them).
    pub fn create(path: &Path, max_bytes: u64, owed: &[CallRecord]) -> Journal {
        let mut j = Journal {
            path: path.to_owned(),
            file: None,
            len: 0,
            max_bytes,
            dirty: false,
            last_sync: None,
            failed: false,
            buf: Vec::new(),
        };
        j.rewrite(std::iter::empty(), owed.iter());
        j
    }

    /// A call started or progressed: its record so far.
    pub fn open(&mut self, record: &CallRecord) {
        self.append(&Entry::Open(Box::new(record.clone())));
    }

    /// A call ended: its final record.
    pub fn end(&mut self, record: &CallRecord) {
        self.append(&Entry::End(Box::new(record.clone())));
    }

    /// These records are in completed CDR files.
    pub fn done(&mut self, ids: Vec<String>) {
        if !ids.is_empty() {
            self.append(&Entry::Done(ids));
        }
    }

    /// fsyncs pending entries if the last sync is [`SYNC_EVERY`] old; while `calls_open`, also
    /// notes the time, so that a crash can date its interrupted calls.
    pub fn sync_if_due(&mut self, now: SystemTime, calls_open: bool) {
        if self.last_sync.is_some_and(|t| now < t + SYNC_EVERY) {
            return;
        }
        if calls_open {
            let ms = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
            self.append(&Entry::Tick(ms));
        }
        self.sync(now);
    }

    /// fsyncs now (shutdown).
    pub fn sync(&mut self, now: SystemTime) {
        self.last_sync = Some(now);
        if !self.dirty {
            return;
        }
        if let Some(f) = &self.file {
            match f.sync_data() {
                Ok(()) => self.dirty = false,
                Err(e) => self.fail(&e),
            }
        }
    }

    /// Whether the journal has grown past its limit and should be [`compact`](Self::compact)ed.
    pub fn wants_compaction(&self) -> bool {
        self.len > self.max_bytes
    }

    /// Rewrites the journal with only `open` calls and `owed` records (ended, not yet in a
    /// completed file): write aside, fsync, rename over the old one.
    pub fn compact<'a>(
        &mut self,
        open: impl Iterator<Item = &'a CallRecord>,
        owed: impl Iterator<Item = &'a CallRecord>,
    ) {
        self.rewrite(open, owed);
    }

    fn rewrite<'a>(
        &mut self,
        open: impl Iterator<Item = &'a CallRecord>,
        owed: impl Iterator<Item = &'a CallRecord>,
    ) {
        let aside = self.path.with_extension("compact");
        let result = (|| {
            let mut data = Vec::new();
            for r in open {
                line(&mut data, &Entry::Open(Box::new(r.clone())));
            }
            for r in owed {
                line(&mut data, &Entry::End(Box::new(r.clone())));
            }
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut f = File::create(&aside)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&aside, &self.path)?;
            let file = OpenOptions::new().append(true).open(&self.path)?;
            Ok::<_, io::Error>((file, data.len() as u64))
        })();
        match result {
            Ok((file, len)) => {
                self.file = Some(file);
                self.len = len;
                self.dirty = false;
                if self.failed {
                    tracing::info!(path = %self.path.display(), "CDR journal writable again");
                    self.failed = false;
                }
            }
            Err(e) => {
                // Keep appending to the old file if there is one: it still holds everything.
                if self.file.is_none() {
                    self.file = OpenOptions::new().create(true).append(true).open(&self.path).ok();
                }
                self.fail(&e);
            }
        }
    }

    fn append(&mut self, entry: &Entry) {
        self.buf.clear();
        line(&mut self.buf, entry);
        let Some(f) = &mut self.file else {
            return self.fail(&io::Error::new(io::ErrorKind::NotFound, "journal not open"));
        };
        match f.write_all(&self.buf) {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.dirty = true;
            }
            Err(e) => {
                // A torn line is skipped by replay; the next entry starts on a fresh line.
                let _ = f.write_all(b"\n");
                self.fail(&e);
            }
        }
    }

    fn fail(&mut self, e: &io::Error) {
        if !self.failed {
            tracing::error!(path = %self.path.display(), error = %e, "CDR ALARM: cannot write the journal");
            self.failed = true;
        }
    }
}

fn line(out: &mut Vec<u8>, entry: &Entry) {
    // Records hold strings, integers and addresses only: serialization cannot fail.
    let _ = serde_json::to_writer(&mut *out, entry);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::tests::rec;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_793_700_000 + s)
    }

    #[test]
    fn replay_owes_interrupted_and_unwritten_calls() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal");
        let mut j = Journal::create(&path, 1 << 20, &[]);
        let mut a = rec(1, t(0));
        a.answer = None;
        j.open(&a);
        a.answer = Some(t(2));
        j.open(&a);
        let b = rec(2, t(1));
        j.open(&b);
        j.end(&b);
        let c = rec(3, t(1));
        j.open(&c);
        j.end(&c);
        j.done(vec!["t-3".into()]);
        j.sync_if_due(t(9), true);
        // kill -9 here: nothing else is written. A torn last line too.
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"open\":{\"rec").unwrap();
        let r = replay(&path, &[]).unwrap();
        assert_eq!(r.interrupted.len(), 1);
        let i = &r.interrupted[0];
        assert_eq!(i.record_id, "t-1");
        assert_eq!(i.disposition, Disposition::Interrupted);
        assert_eq!(i.end, t(9), "end = last known alive");
        assert_eq!(i.billable(), Duration::from_secs(7));
        assert_eq!(r.ended.len(), 1);
        assert_eq!(r.ended[0].record_id, "t-2");
        assert_eq!(r.ended[0].disposition, Disposition::Answered);
        // Records already recovered from a CDR file are not owed twice.
        let r = replay(&path, &["t-1".into(), "t-2".into()]).unwrap();
        assert!(r.interrupted.is_empty() && r.ended.is_empty());
    }

    #[test]
    fn compaction_keeps_only_what_is_owed() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("journal");
        let mut j = Journal::create(&path, 512, &[]);
        for i in 0..10 {
            let r = rec(i, t(0));
            j.open(&r);
            j.end(&r);
            j.done(vec![r.record_id.clone()]);
        }
        assert!(j.wants_compaction());
        let open = rec(42, t(5));
        j.compact([&open].into_iter(), std::iter::empty());
        assert!(!j.wants_compaction());
        let r = replay(&path, &[]).unwrap();
        assert_eq!(r.interrupted.len(), 1);
        assert!(r.ended.is_empty());
        // A fresh journal carries the records still owed by a replay.
        let owed = rec(7, t(0));
        let j = Journal::create(&path, 512, std::slice::from_ref(&owed));
        drop(j);
        assert_eq!(replay(&path, &[]).unwrap().ended, vec![owed]);
    }
}
