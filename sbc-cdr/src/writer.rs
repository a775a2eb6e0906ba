//! CDR files: records are appended to a hidden temporary file, which is fsynced and renamed into
//! the pickup directory only when complete (rotation by time or size, or shutdown), so a collector
//! never sees half a file. Completed files are kept by age and count (retention).
//!
//! Disk trouble is an alarm, not an outage: a record that cannot be written stays in a bounded
//! in-memory queue, the alarm is raised once (log and the `sbc_cdr_alarm` gauge), and the writer
//! tries again every [`RETRY`] until the disk takes the queue. A failed write is cut back to the
//! last complete record (`set_len`), so a file never holds half a record.
//!
//! The writer reads no clock: every call takes `now`, so tests drive rotation and retention with a
//! fake clock. It is owned by the CDR thread ([`crate::sink`]), never by a signalling task.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::CallRecord;
use crate::record::{self, Format};

/// How long the writer waits after a disk error before it tries again.
pub const RETRY: Duration = Duration::from_secs(1);

/// Where and how CDR files are written.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// CSV or JSON Lines.
    pub format: Format,
    /// Directory of the temporary (in-progress) files.
    pub dir: PathBuf,
    /// Directory completed files are renamed into; must be on the same file system as `dir`
    /// (rename is atomic only there).
    pub pickup_dir: PathBuf,
    /// File name prefix (`cdr` gives `cdr-20261103T100005.123Z.csv`).
    pub prefix: String,
    /// A file is completed this long after it was opened.
    pub rotate_interval: Duration,
    /// A file is completed once it holds this many bytes.
    pub rotate_bytes: u64,
    /// Completed files older than this (by the time in their name) are deleted.
    pub max_age: Option<Duration>,
    /// At most this many completed files are kept (the oldest go first).
    pub max_files: Option<usize>,
    /// Records held in memory while the disk refuses them; beyond it the newest are dropped
    /// and counted (`sbc_cdr_dropped_total`); the journal still has them until restart.
    pub queue: usize,
}

/// The CDR file writer.
#[derive(Debug)]
pub struct Writer {
    cfg: WriterConfig,
    current: Option<OpenFile>,
    pending: VecDeque<CallRecord>,
    /// Set while the disk refuses: when to try again.
    retry_at: Option<SystemTime>,
    dropped: u64,
}

#[derive(Debug)]
struct OpenFile {
    tmp: PathBuf,
    file: File,
    opened: SystemTime,
    /// Bytes of complete records (and the header) in the file.
    len: u64,
    /// A write failed after `len`: the tail must be cut before anything else is written.
    dirty: bool,
    /// Complete: waiting only for its fsync and rename to succeed.
    sealed: bool,
    ids: Vec<String>,
}

impl Writer {
    /// A writer; creates the directories if missing (a failure there is reported at the first
    /// write, as an alarm).
    pub fn new(cfg: WriterConfig) -> Writer {
        let _ = fs::create_dir_all(&cfg.dir);
        let _ = fs::create_dir_all(&cfg.pickup_dir);
        metrics::gauge!("sbc_cdr_alarm").set(0.0);
        Writer { cfg, current: None, pending: VecDeque::new(), retry_at: None, dropped: 0 }
    }

    /// Queues a record. Returns false if the queue is full and the record was dropped.
    pub fn push(&mut self, record: CallRecord) -> bool {
        if self.pending.len() >= self.cfg.queue {
            self.dropped += 1;
            metrics::counter!("sbc_cdr_dropped_total").increment(1);
            tracing::error!(record = %record.record_id, "CDR queue full; record dropped");
            return false;
        }
        self.pending.push_back(record);
        metrics::gauge!("sbc_cdr_queued").set(self.pending.len() as f64);
        true
    }

    /// Records waiting for the disk.
    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether the disk alarm is raised.
    pub fn is_alarmed(&self) -> bool {
        self.retry_at.is_some()
    }

    /// Writes what is queued and completes the current file if it is due. Returns the ids of the
    /// records in files completed by this call (they are now safe in the pickup directory).
    pub fn run(&mut self, now: SystemTime) -> Vec<String> {
        self.step(now, false)
    }

    /// Writes everything queued and completes the current file (shutdown, or after a replay).
    pub fn close(&mut self, now: SystemTime) -> Vec<String> {
        self.step(now, true)
    }

    fn step(&mut self, now: SystemTime, force: bool) -> Vec<String> {
        let mut done = Vec::new();
        if self.retry_at.is_some_and(|at| now < at) && !force {
            return done;
        }
        match self.try_step(now, force, &mut done) {
            Ok(()) => {
                if self.retry_at.take().is_some() {
                    tracing::info!(dir = %self.cfg.dir.display(), "CDR disk writable again; alarm cleared");
                    metrics::gauge!("sbc_cdr_alarm").set(0.0);
                }
            }
            Err(e) => {
                if self.retry_at.is_none() {
                    tracing::error!(
                        dir = %self.cfg.dir.display(),
                        error = %e,
                        queued = self.pending.len(),
                        "CDR ALARM: cannot write CDR files; records are queued in memory"
                    );
                    metrics::gauge!("sbc_cdr_alarm").set(1.0);
                }
                self.retry_at = Some(now + RETRY);
            }
        }
        metrics::gauge!("sbc_cdr_queued").set(self.pending.len() as f64);
        if !done.is_empty() {
            self.retain(now);
        }
        done
    }

    fn try_step(&mut self, now: SystemTime, force: bool, done: &mut Vec<String>) -> io::Result<()> {
        if let Some(f) = &mut self.current {
            if f.dirty {
                f.file.set_len(f.len)?;
                f.dirty = false;
            }
            if f.sealed || now >= f.opened + self.cfg.rotate_interval {
                self.commit(done)?;
            }
        }
        let mut buf = Vec::with_capacity(1024);
        while let Some(rec) = self.pending.front() {
            if self.current.is_none() {
                self.current = Some(self.open(now)?);
            }
            let Some(f) = self.current.as_mut() else { break };
            buf.clear();
            record::encode(self.cfg.format, rec, f.len == 0, &mut buf);
            if let Err(e) = f.file.write_all(&buf) {
                // Cut the partial record now if possible; otherwise before the next write.
                f.dirty = f.file.set_len(f.len).is_err();
                return Err(e);
            }
            f.len += buf.len() as u64;
            f.ids.push(rec.record_id.clone());
            self.pending.pop_front();
            metrics::counter!("sbc_cdr_records_total").increment(1);
            if f.len >= self.cfg.rotate_bytes {
                self.commit(done)?;
            }
        }
        if force && self.current.is_some() {
            self.commit(done)?;
        }
        Ok(())
    }

    fn open(&self, now: SystemTime) -> io::Result<OpenFile> {
        let name = format!(
            ".{}-{}.{}.tmp",
            self.cfg.prefix,
            record::utc_compact(now),
            self.cfg.format.extension()
        );
        let tmp = self.cfg.dir.join(name);
        let file = OpenOptions::new().create(true).append(true).open(&tmp)?;
        // A leftover of the same name (same millisecond) is not ours to extend.
        file.set_len(0)?;
        Ok(OpenFile {
            tmp,
            file,
            opened: now,
            len: 0,
            dirty: false,
            sealed: false,
            ids: Vec::new(),
        })
    }

    /// fsync, then rename into the pickup directory, then fsync the directory so the rename
    /// survives a power cut. On failure the file stays sealed and is retried.
    fn commit(&mut self, done: &mut Vec<String>) -> io::Result<()> {
        let Some(f) = &mut self.current else { return Ok(()) };
        if f.ids.is_empty() {
            // Opened, but every write failed (disk full): there is nothing to hand over, and an
            // empty file would only puzzle the collector.
            let _ = fs::remove_file(&f.tmp);
            self.current = None;
            return Ok(());
        }
        f.sealed = true;
        f.file.sync_all()?;
        let final_path = final_path(&self.cfg.pickup_dir, &f.tmp)?;
        fs::rename(&f.tmp, &final_path)?;
        sync_dir(&self.cfg.pickup_dir);
        tracing::debug!(file = %final_path.display(), records = f.ids.len(), "CDR file completed");
        done.append(&mut f.ids);
        self.current = None;
        Ok(())
    }

    /// Deletes completed files beyond the age and count limits.
    pub fn retain(&self, now: SystemTime) {
        if self.cfg.max_age.is_none() && self.cfg.max_files.is_none() {
            return;
        }
        let mut files = completed_files(&self.cfg.pickup_dir, &self.cfg.prefix, self.cfg.format);
        files.sort();
        let mut keep = files.len();
        for (at, path) in &files {
            let too_old = self.cfg.max_age.is_some_and(|age| *at + age < now);
            let too_many = self.cfg.max_files.is_some_and(|max| keep > max);
            if !(too_old || too_many) {
                break;
            }
            if fs::remove_file(path).is_ok() {
                tracing::debug!(file = %path.display(), "CDR file removed by retention");
            }
            keep -= 1;
        }
    }
}

/// Completes the temporary files a previous run left behind (crash, `kill -9`): each is cut to
/// its last complete line and renamed into the pickup directory. Returns the record ids they hold,
/// so that the journal replay does not write those calls twice.
pub fn recover(cfg: &WriterConfig) -> Vec<String> {
    let mut ids = Vec::new();
    let Ok(entries) = fs::read_dir(&cfg.dir) else { return ids };
    let prefix = format!(".{}-", cfg.prefix);
    let suffix = format!(".{}.tmp", cfg.format.extension());
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(&prefix) || !name.ends_with(&suffix) {
            continue;
        }
        let path = entry.path();
        match recover_file(cfg, &path) {
            Ok(mut found) => {
                tracing::info!(file = %path.display(), records = found.len(), "CDR file of a previous run completed");
                ids.append(&mut found);
            }
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot recover CDR file"),
        }
    }
    ids
}

fn recover_file(cfg: &WriterConfig, path: &Path) -> io::Result<Vec<String>> {
    let data = fs::read(path)?;
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let data = &data[..complete];
    let ids: Vec<String> = match cfg.format {
        Format::Csv => csv::Reader::from_reader(data)
            .records()
            .filter_map(|r| r.ok().and_then(|r| r.get(0).map(str::to_owned)))
            .collect(),
        Format::Jsonl => data
            .split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("record_id").and_then(|i| i.as_str()).map(str::to_owned))
            .collect(),
    };
    if ids.is_empty() {
        fs::remove_file(path)?;
        return Ok(ids);
    }
    let file = OpenOptions::new().write(true).open(path)?;
    file.set_len(complete as u64)?;
    file.sync_all()?;
    fs::rename(path, final_path(&cfg.pickup_dir, path)?)?;
    sync_dir(&cfg.pickup_dir);
    Ok(ids)
}

/// `.cdr-X.csv.tmp` in any directory -> `pickup/cdr-X.csv` (or `cdr-X-1.csv` if taken).
fn final_path(pickup: &Path, tmp: &Path) -> io::Result<PathBuf> {
    let name = tmp.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let base = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "not a temporary CDR file name")
    })?;
    let mut path = pickup.join(base);
    let (stem, ext) = base.rsplit_once('.').unwrap_or((base, ""));
    let mut n = 1;
    while path.exists() {
        path = pickup.join(format!("{stem}-{n}.{ext}"));
        n += 1;
    }
    Ok(path)
}

/// Completed files of this prefix and format in `dir`, with the time in their name.
fn completed_files(dir: &Path, prefix: &str, format: Format) -> Vec<(SystemTime, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let head = format!("{prefix}-");
    let ext = format!(".{}", format.extension());
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(&head)?;
            if !name.ends_with(&ext) {
                return None;
            }
            let at = record::parse_utc_compact(rest.get(..20)?)?;
            Some((at, e.path()))
        })
        .collect()
}

fn sync_dir(dir: &Path) {
    // Best effort: the rename is done; only its durability across a power cut depends on this.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::{CallRef, Disposition, ReleaseSide};

    pub(crate) fn rec(n: u64, start: SystemTime) -> CallRecord {
        let source: SocketAddr = "192.0.2.1:5060".parse().unwrap_or(SocketAddr::from(([0; 4], 0)));
        CallRecord {
            record_id: format!("t-{n}"),
            call: CallRef(n),
            start,
            ring: None,
            answer: Some(start),
            end: start + Duration::from_secs(5),
            caller: "alice, \"the\" caller".into(),
            callee: "100".into(),
            source,
            call_id: format!("call-{n}"),
            listener: "public".into(),
            trunk: None,
            attempts: Vec::new(),
            disposition: Disposition::Answered,
            status: 200,
            phrase: "OK".into(),
            released_by: ReleaseSide::Caller,
            reason: None,
            cause: None,
            media: None,
        }
    }

    fn cfg(dir: &Path, format: Format) -> WriterConfig {
        WriterConfig {
            format,
            dir: dir.join("work"),
            pickup_dir: dir.join("pickup"),
            prefix: "cdr".into(),
            rotate_interval: Duration::from_secs(60),
            rotate_bytes: 1 << 20,
            max_age: None,
            max_files: None,
            queue: 4,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_793_700_000 + s)
    }

    #[test]
    fn file_appears_in_pickup_only_when_complete() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path(), Format::Csv);
        let mut w = Writer::new(c.clone());
        w.push(rec(1, t(0)));
        assert!(w.run(t(0)).is_empty());
        assert!(names(&c.pickup_dir).is_empty(), "nothing visible before rotation");
        assert_eq!(names(&c.dir), vec![".cdr-20261103T100000.000Z.csv.tmp"]);
        w.push(rec(2, t(1)));
        assert!(w.run(t(30)).is_empty());
        // The interval is up: the file is completed, even with no new record.
        assert_eq!(w.run(t(60)), vec!["t-1", "t-2"]);
        assert_eq!(names(&c.pickup_dir), vec!["cdr-20261103T100000.000Z.csv"]);
        assert!(names(&c.dir).is_empty());
        let text = fs::read_to_string(c.pickup_dir.join("cdr-20261103T100000.000Z.csv")).unwrap();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(r.headers().unwrap().get(0), Some("record_id"));
        let rows: Vec<_> = r.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        // RFC 4180 quoting survives the round trip.
        assert_eq!(rows[0].get(7), Some("alice, \"the\" caller"));
        assert_eq!(rows[0].get(6), Some("5.000"));
    }

    #[test]
    fn rotates_by_size_and_writes_jsonl() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = cfg(tmp.path(), Format::Jsonl);
        c.rotate_bytes = 1;
        let mut w = Writer::new(c.clone());
        w.push(rec(1, t(0)));
        assert_eq!(w.run(t(0)), vec!["t-1"]);
        w.push(rec(2, t(0)));
        assert_eq!(w.run(t(0)), vec!["t-2"]);
        let files = names(&c.pickup_dir);
        assert_eq!(
            files,
            vec!["cdr-20261103T100000.000Z-1.jsonl", "cdr-20261103T100000.000Z.jsonl"]
        );
        let line = fs::read_to_string(c.pickup_dir.join(&files[1])).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["disposition"], "answered");
        assert_eq!(v["billable_s"], "5.000");
    }

    #[test]
    fn retention_by_count_and_age() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = cfg(tmp.path(), Format::Csv);
        c.rotate_bytes = 1;
        c.max_files = Some(3);
        c.max_age = Some(Duration::from_secs(100));
        let mut w = Writer::new(c.clone());
        for i in 0..5 {
            w.push(rec(i, t(i)));
            w.run(t(i));
        }
        assert_eq!(names(&c.pickup_dir).len(), 3, "count limit");
        assert!(names(&c.pickup_dir)[0].contains("100002"), "the oldest went first");
        w.push(rec(9, t(150)));
        w.run(t(150));
        // Files from t(2)..t(4) are more than 100 s old at t(150).
        assert_eq!(names(&c.pickup_dir), vec!["cdr-20261103T100230.000Z.csv"]);
    }

    #[test]
    fn queues_while_the_disk_refuses_then_catches_up() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path(), Format::Csv);
        // The work directory is a plain file: every open fails, as on a read-only or full disk
        // (a chmod would not stop root, which the tests may run as).
        fs::write(tmp.path().join("work"), b"").unwrap();
        let mut w = Writer::new(c.clone());
        for i in 0..5 {
            w.push(rec(i, t(0)));
        }
        assert_eq!(w.queued(), 4, "bounded");
        assert_eq!(w.dropped(), 1);
        assert!(w.run(t(0)).is_empty());
        assert!(w.is_alarmed());
        // Before the retry time nothing is attempted.
        fs::remove_file(tmp.path().join("work")).unwrap();
        fs::create_dir(tmp.path().join("work")).unwrap();
        w.run(t(0));
        assert!(w.is_alarmed());
        assert!(w.run(t(1)).is_empty());
        assert!(!w.is_alarmed(), "cleared once a write succeeds");
        assert_eq!(w.queued(), 0);
        assert_eq!(w.close(t(2)).len(), 4);
    }

    #[test]
    fn recovers_leftover_temporary_files() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path(), Format::Csv);
        let mut w = Writer::new(c.clone());
        w.push(rec(1, t(0)));
        w.push(rec(2, t(0)));
        w.run(t(0));
        // A crash: the writer is gone with its file open; a half line was being written.
        drop(w);
        let tmpfile = c.dir.join(&names(&c.dir)[0]);
        let mut f = OpenOptions::new().append(true).open(&tmpfile).unwrap();
        f.write_all(b"t-3,2026-").unwrap();
        assert_eq!(recover(&c), vec!["t-1", "t-2"]);
        assert!(names(&c.dir).is_empty());
        let text = fs::read_to_string(c.pickup_dir.join(&names(&c.pickup_dir)[0])).unwrap();
        assert_eq!(text.lines().count(), 3, "header and two whole records: {text}");
    }
}
