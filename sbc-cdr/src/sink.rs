//! The CDR thread: the one place where call events of every shard become records, journal entries
//! and CDR files.
//!
//! Shards hand events over with [`CdrSink::record`], a `try_send` on a bounded channel: signalling
//! never waits for this thread or its disk. If the channel is full the event is dropped and
//! counted (`sbc_cdr_events_dropped_total`); the thread only folds events in memory and appends
//! to files, so that happens only if the disk hangs for long.
//!
//! Start-up order matters for "exactly one record per call": first the temporary CDR files of a
//! previous run are completed ([`writer::recover`]), then the journal is replayed without the
//! records those files already hold ([`journal::replay`]), the records still owed are written
//! and their file completed, and only then is the journal started afresh.

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::journal::{self, Journal};
use crate::writer::{self, Writer, WriterConfig};
use crate::{CallEvent, CallEventKind, CallRecord, Recorder};

/// How often the thread wakes when idle: journal syncs, rotation, retries.
const TICK: Duration = Duration::from_millis(100);

/// Configuration of the CDR thread.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The CDR files.
    pub writer: WriterConfig,
    /// The journal file; without one, a crash loses the calls in progress.
    pub journal: Option<PathBuf>,
    /// The journal is compacted past this size.
    pub journal_max_bytes: u64,
    /// Events in flight from the shards to the thread.
    pub channel: usize,
}

// Events dominate the channel; boxing them would add an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Event(CallEvent),
    Stop,
}

/// Handle on the CDR thread.
#[derive(Debug)]
pub struct CdrSink {
    tx: SyncSender<Msg>,
    /// Taken by the first `stop`.
    thread: Mutex<Option<JoinHandle<()>>>,
    dropped: metrics::Counter,
}

/// What start-up found from a previous run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartReport {
    /// Records found in temporary files of the previous run, now completed.
    pub recovered: usize,
    /// Calls in progress at the crash: written as interrupted.
    pub interrupted: usize,
    /// Calls that had ended but were not yet in a completed file: written as they were.
    pub ended: usize,
}

impl CdrSink {
    /// Recovers what a previous run left, then starts the thread. `now` is the start time; it
    /// also makes this run's record ids unique.
    pub fn start(cfg: SinkConfig, now: SystemTime) -> io::Result<(CdrSink, StartReport)> {
        let instance = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let mut writer = Writer::new(cfg.writer.clone());
        let recovered = writer::recover(&cfg.writer);
        let replay = match &cfg.journal {
            Some(path) => journal::replay(path, &recovered)?,
            None => journal::Replay::default(),
        };
        let report = StartReport {
            recovered: recovered.len(),
            interrupted: replay.interrupted.len(),
            ended: replay.ended.len(),
        };
        let owed: Vec<CallRecord> = replay.interrupted.into_iter().chain(replay.ended).collect();
        let mut done = Vec::new();
        for r in &owed {
            // The replay may hold more than the queue: write as we go.
            if !writer.push(r.clone()) {
                done.append(&mut writer.close(now));
            }
        }
        done.append(&mut writer.close(now));
        let still_owed: Vec<CallRecord> =
            owed.into_iter().filter(|r| !done.contains(&r.record_id)).collect();
        let journal = cfg
            .journal
            .as_ref()
            .map(|path| Journal::create(path, cfg.journal_max_bytes, &still_owed));
        let (tx, rx) = mpsc::sync_channel(cfg.channel.max(1));
        let thread = std::thread::Builder::new().name("sbc-cdr".into()).spawn(move || {
            run(rx, Recorder::with_instance(instance), writer, journal);
        })?;
        let dropped = metrics::counter!("sbc_cdr_events_dropped_total");
        Ok((CdrSink { tx, thread: Mutex::new(Some(thread)), dropped }, report))
    }

    /// Hands one event to the thread, never waiting.
    pub fn record(&self, event: CallEvent) {
        match self.tx.try_send(Msg::Event(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.increment(1)
            }
        }
    }

    /// Writes everything queued, completes the current file, syncs the journal and stops the
    /// thread. Blocks: call it off the runtime (shutdown).
    /// Later calls return at once. Events recorded after it are dropped.
    pub fn stop(&self) {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = self.tx.send(Msg::Stop);
            let _ = t.join();
        }
    }
}

fn run(
    rx: mpsc::Receiver<Msg>,
    mut recorder: Recorder,
    mut writer: Writer,
    mut journal: Option<Journal>,
) {
    let mut stopping = false;
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Msg::Event(ev)) => {
                handle(ev, &mut recorder, &mut writer, journal.as_mut());
                // Take what else is there before touching the disk: one sync per batch.
                for _ in 0..4096 {
                    match rx.try_recv() {
                        Ok(Msg::Event(ev)) => {
                            handle(ev, &mut recorder, &mut writer, journal.as_mut())
                        }
                        Ok(Msg::Stop) => {
                            stopping = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stopping = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = SystemTime::now();
        let done = if stopping { writer.close(now) } else { writer.run(now) };
        if let Some(j) = &mut journal {
            j.done(done);
            if j.wants_compaction() {
                // Only what is open must survive the rewrite: complete the current file first
                // so that no ended record is owed by the journal any more.
                let done = writer.close(now);
                j.done(done);
                if writer.queued() == 0 {
                    j.compact(recorder.open(), std::iter::empty());
                }
            }
            if stopping {
                j.sync(now);
            } else {
                j.sync_if_due(now, recorder.open_calls() > 0);
            }
        }
        if stopping {
            if writer.queued() > 0 {
                tracing::error!(
                    records = writer.queued(),
                    "CDR disk still unwritable at shutdown; the journal keeps these records"
                );
            }
            if recorder.open_calls() > 0 {
                tracing::warn!(
                    calls = recorder.open_calls(),
                    "calls still open at shutdown; the next start records them as interrupted"
                );
            }
            return;
        }
    }
}

fn handle(
    ev: CallEvent,
    recorder: &mut Recorder,
    writer: &mut Writer,
    journal: Option<&mut Journal>,
) {
    let call = ev.call;
    let media = matches!(ev.kind, CallEventKind::Media { .. });
    match recorder.handle(ev) {
        Some(record) => {
            if let Some(j) = journal {
                j.end(&record);
            }
            writer.push(record);
        }
        // Media figures come just before the end: the end entry carries them.
        None if media => {}
        None => {
            if let (Some(j), Some(r)) = (journal, recorder.get(call)) {
                j.open(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::record::Format;
    use crate::{CallRef, Disposition, ReleaseSide};

    fn cfg(dir: &std::path::Path) -> SinkConfig {
        SinkConfig {
            writer: WriterConfig {
                format: Format::Jsonl,
                dir: dir.join("cdr"),
                pickup_dir: dir.join("cdr"),
                prefix: "cdr".into(),
                rotate_interval: Duration::from_secs(3600),
                rotate_bytes: 1 << 20,
                max_age: None,
                max_files: None,
                queue: 100,
            },
            journal: Some(dir.join("journal")),
            journal_max_bytes: 1 << 20,
            channel: 1000,
        }
    }

    fn started(n: u64) -> CallEvent {
        CallEvent {
            call: CallRef(n),
            at: SystemTime::now(),
            kind: CallEventKind::Started {
                caller: "a".into(),
                callee: "b".into(),
                source: ([127, 0, 0, 1], 5062).into(),
                call_id: format!("c{n}"),
                listener: "public".into(),
                trunk: None,
            },
        }
    }

    fn lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().into_string().unwrap();
            if name.starts_with("cdr-") {
                for l in fs::read_to_string(e.path()).unwrap().lines() {
                    out.push(serde_json::from_str(l).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn a_crash_leaves_interrupted_records_at_the_next_start() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path());
        let (sink, _) = CdrSink::start(c.clone(), SystemTime::now()).unwrap();
        for n in 0..3 {
            sink.record(started(n));
        }
        sink.record(CallEvent {
            call: CallRef(0),
            at: SystemTime::now(),
            kind: CallEventKind::Ended {
                disposition: Disposition::Cancelled,
                status: 487,
                phrase: "Request Terminated".into(),
                released_by: ReleaseSide::Caller,
                reason: None,
                cause: None,
            },
        });
        // Let the thread journal and sync, then "crash": the thread is left running detached
        // with its files, as after kill -9 nothing more is written by it.
        std::thread::sleep(Duration::from_millis(300));
        std::mem::forget(sink);
        let (sink, report) = CdrSink::start(c.clone(), SystemTime::now()).unwrap();
        assert_eq!(report.interrupted, 2);
        assert_eq!(report.recovered + report.ended, 1, "{report:?}");
        sink.stop();
        let recs = lines(&c.writer.pickup_dir);
        let count = |d: &str| recs.iter().filter(|r| r["disposition"] == d).count();
        assert_eq!((count("interrupted"), count("cancelled"), recs.len()), (2, 1, 3));
        // A third start owes nothing more.
        let (sink, report) = CdrSink::start(c, SystemTime::now()).unwrap();
        assert_eq!(report, StartReport::default());
        sink.stop();
    }
}
