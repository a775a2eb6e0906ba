//! The capture thread: the only code that touches capture files.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use super::{CaptureConfig, CaptureStats, PcapWriter, Record, Retention, SignallingCapture};
use crate::CallRef;

/// Buffer of each open file: a few hundred RTP packets between flushes.
const FILE_BUFFER: usize = 64 * 1024;

/// Retention runs after this many closed call captures (and at least this often).
const RETENTION_EVERY: u32 = 64;
const RETENTION_PERIOD: Duration = Duration::from_secs(60);

/// How often a growing drop or error count is logged.
const REPORT_PERIOD: Duration = Duration::from_secs(10);

type File_ = PcapWriter<BufWriter<File>>;

/// A call's open files: index 0 in `dir`, 1 in the intercept directory.
struct CallFiles {
    files: [Option<File_>; 2],
    /// Set by `Close`: the files close at this time.
    closing: Option<Instant>,
}

struct Rolling {
    config: SignallingCapture,
    file: Option<(File_, Instant)>,
}

pub(super) struct Writer {
    config: CaptureConfig,
    rx: Receiver<Record>,
    stats: Arc<CaptureStats>,
    calls: HashMap<CallRef, CallFiles>,
    rolling: Option<Rolling>,
    dirty: bool,
    /// Captures waiting for their linger to end.
    closing: usize,
    last_flush: Instant,
    closes: u32,
    last_retention: Instant,
    last_report: Instant,
    reported: (u64, u64),
}

impl Writer {
    /// Creates the directories (0700) before the thread starts, so a bad path fails at start.
    pub(super) fn new(
        config: CaptureConfig,
        rx: Receiver<Record>,
        stats: Arc<CaptureStats>,
    ) -> io::Result<Writer> {
        let mut dirs: Vec<&Path> = Vec::new();
        dirs.extend(config.dir.as_deref());
        dirs.extend(config.intercept.as_ref().map(|i| i.dir.as_path()));
        dirs.extend(config.signalling.as_ref().map(|s| s.dir.as_path()));
        for d in dirs {
            private_dir(d)?;
        }
        let rolling = config.signalling.clone().map(|config| Rolling { config, file: None });
        let now = Instant::now();
        Ok(Writer {
            config,
            rx,
            stats,
            calls: HashMap::new(),
            rolling,
            dirty: false,
            closing: 0,
            last_flush: now,
            closes: 0,
            last_retention: now,
            last_report: now,
            reported: (0, 0),
        })
    }

    pub(super) fn run(mut self) {
        let tick = self.config.flush_interval.max(Duration::from_millis(1));
        loop {
            match self.rx.recv_timeout(tick) {
                Ok(Record::Stop) => break,
                Ok(r) => self.handle(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            if self.closing > 0 {
                self.close_due(now);
            }
            if self.dirty && now.duration_since(self.last_flush) >= tick {
                self.flush_all();
                self.last_flush = now;
            }
            if now.duration_since(self.last_retention) >= RETENTION_PERIOD {
                self.retention();
            }
            if now.duration_since(self.last_report) >= REPORT_PERIOD {
                self.report(now);
            }
        }
        for (_, mut c) in self.calls.drain() {
            for f in c.files.iter_mut().flatten() {
                let _ = f.flush();
            }
        }
        if let Some((f, _)) = self.rolling.as_mut().and_then(|r| r.file.as_mut()) {
            let _ = f.flush();
        }
    }

    fn handle(&mut self, r: Record) {
        match r {
            Record::Open { call, at, decision } => {
                // A second Open adds a destination: a call becomes a target when an attempt
                // goes through a target trunk. It is captured from then on.
                if !self.calls.contains_key(&call) && self.calls.len() >= self.config.max_open {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let name = format!("{}-{:016x}.pcap", unix_secs(at), call.0);
                let dirs = [
                    (decision.troubleshooting, self.config.dir.as_deref()),
                    (decision.intercept, self.config.intercept.as_ref().map(|i| i.dir.as_path())),
                ];
                let entry = self
                    .calls
                    .entry(call)
                    .or_insert(CallFiles { files: [None, None], closing: None });
                for (slot, (wanted, dir)) in entry.files.iter_mut().zip(dirs) {
                    if let (true, Some(dir), None) = (wanted, dir, &slot) {
                        match open_pcap(&dir.join(&name)) {
                            Ok(f) => *slot = Some(f),
                            Err(_) => {
                                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
            Record::Sip { call, at, src, dst, data } => {
                if let Some(c) = call.and_then(|c| self.calls.get_mut(&c)) {
                    for f in c.files.iter_mut().flatten() {
                        count(&self.stats, f.write_udp(at, src, dst, &data).is_ok());
                    }
                    self.dirty = true;
                }
                if let Some(rolling) = &mut self.rolling {
                    if let Some(f) = rolling.current(at, &self.stats) {
                        count(&self.stats, f.write_udp(at, src, dst, &data).is_ok());
                    }
                    self.dirty = true;
                }
            }
            Record::Media { call, at, src, dst, packet } => {
                // Packets still queued from a call whose capture closed are dropped here.
                if let Some(c) = self.calls.get_mut(&call) {
                    let data = &packet.data[..usize::from(packet.len)];
                    for f in c.files.iter_mut().flatten() {
                        count(&self.stats, f.write_udp(at, src, dst, data).is_ok());
                    }
                    self.dirty = true;
                }
            }
            Record::Close { call, linger } => {
                if let Some(c) = self.calls.get_mut(&call)
                    && c.closing.is_none()
                {
                    c.closing = Some(Instant::now() + linger);
                    self.closing += 1;
                }
            }
            Record::Stop => {}
        }
    }

    /// Closes the captures whose linger is over.
    fn close_due(&mut self, now: Instant) {
        let due: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, c)| c.closing.is_some_and(|t| t <= now))
            .map(|(&call, _)| call)
            .collect();
        for call in due {
            if let Some(mut c) = self.calls.remove(&call) {
                for f in c.files.iter_mut().flatten() {
                    if f.flush().is_err() {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.closing -= 1;
                self.closes += 1;
            }
        }
        if self.closes >= RETENTION_EVERY {
            self.retention();
        }
    }

    fn flush_all(&mut self) {
        for c in self.calls.values_mut() {
            for f in c.files.iter_mut().flatten() {
                if f.flush().is_err() {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some((f, _)) = self.rolling.as_mut().and_then(|r| r.file.as_mut()) {
            let _ = f.flush();
        }
        self.dirty = false;
    }

    fn retention(&mut self) {
        self.closes = 0;
        self.last_retention = Instant::now();
        if let Some(dir) = &self.config.dir {
            apply_retention(dir, "", &self.config.retention);
        }
        if let Some(i) = &self.config.intercept {
            apply_retention(&i.dir, "", &self.config.intercept_retention);
        }
    }

    fn report(&mut self, now: Instant) {
        self.last_report = now;
        let dropped = self.stats.dropped.load(Ordering::Relaxed);
        let errors = self.stats.errors.load(Ordering::Relaxed);
        if (dropped, errors) != self.reported {
            tracing::warn!(dropped, errors, "capture records lost (queue full or write errors)");
            self.reported = (dropped, errors);
        }
    }
}

impl Rolling {
    /// The current rolling file, rotated first when it is too big or too old.
    fn current(&mut self, at: SystemTime, stats: &CaptureStats) -> Option<&mut File_> {
        let due = self.file.as_ref().is_some_and(|(f, opened)| {
            f.written() >= self.config.rotate_bytes
                || opened.elapsed() >= self.config.rotate_interval
        });
        if due && let Some((mut f, _)) = self.file.take() {
            let _ = f.flush();
        }
        if self.file.is_none() {
            // Millisecond names: a small rotate size may start several files per second.
            let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            let path = self.config.dir.join(format!("sip-{}.pcap", since.as_millis()));
            match open_pcap(&path) {
                Ok(f) => self.file = Some((f, Instant::now())),
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
            let keep = Retention { max_files: Some(self.config.keep.max(1)), max_age: None };
            apply_retention(&self.config.dir, "sip-", &keep);
        }
        self.file.as_mut().map(|(f, _)| f)
    }
}

fn count(stats: &CaptureStats, ok: bool) {
    let counter = if ok { &stats.written } else { &stats.errors };
    counter.fetch_add(1, Ordering::Relaxed);
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Creates `dir` (and parents) with mode 0700, and tightens an existing one to 0700: captures
/// hold phone numbers and media.
pub(super) fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// A new capture file, mode 0600 (never an existing one: `create_new`).
fn open_pcap(path: &Path) -> io::Result<File_> {
    let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    PcapWriter::new(BufWriter::with_capacity(FILE_BUFFER, file))
}

/// Deletes the oldest `.pcap` files starting with `prefix` beyond `max_files`, and those older
/// than `max_age`. Names start with the creation time, so name order is age order.
fn apply_retention(dir: &Path, prefix: &str, r: &Retention) {
    if r.max_files.is_none() && r.max_age.is_none() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut files: Vec<(PathBuf, Option<SystemTime>)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(prefix) && name.ends_with(".pcap")
        })
        .map(|e| (e.path(), e.metadata().and_then(|m| m.modified()).ok()))
        .collect();
    files.sort_by(|x, y| x.0.cmp(&y.0));
    let excess = r.max_files.map_or(0, |max| files.len().saturating_sub(max));
    let now = SystemTime::now();
    for (i, (path, modified)) in files.iter().enumerate() {
        let old = r.max_age.is_some_and(|age| {
            modified.and_then(|m| now.duration_since(m).ok()).is_some_and(|d| d > age)
        });
        if i < excess || old {
            let _ = fs::remove_file(path);
        }
    }
}
