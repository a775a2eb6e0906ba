//! PCAP captures of calls (troubleshooting and lawful intercept) and a rolling signalling capture.
//!
//! The shell decides which calls are captured ([`CaptureConfig::decide`] on the caller and callee
//! at call start, and on each attempt's trunk) and feeds [`CaptureHandle`] with the SIP messages
//! it receives and sends; the media relay feeds it the RTP/RTCP of tapped pairs. Every input is
//! a `try_send` on one bounded channel to the capture thread, which alone touches the disk:
//! signalling and media never wait for it. When the channel is full the record is dropped and
//! counted ([`CaptureStats::dropped`]); a capture with gaps is better than a late call.
//!
//! Files: one per call and destination, `<unix seconds>-<call ref in hex>.pcap`, written as the
//! call goes (flushed at least every [`CaptureConfig::flush_interval`], so a crash loses at
//! most that much), closed at call end. Calls of `mode: all` go to `dir`; calls matching an
//! intercept target go to `intercept.dir` (and, under `mode: all`, to `dir` too, so the
//! troubleshooting captures do not reveal a target by its absence). Directories are created
//! 0700 and files 0600. Retention keeps at most `max_files` per directory and deletes files older
//! than `max_age`, checked every few closes. The rolling signalling capture writes every SIP
//! message into `sip-<unix seconds>.pcap` files rotated by size and age.
//!
//! The target list is never logged: [`TargetRules`] prints only its length.

mod pcap;
mod writer;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use regex::Regex;

pub use self::pcap::{MAX_PAYLOAD, PcapError, PcapWriter};
use crate::CallRef;

/// Bytes of a media packet carried to the capture thread; longer packets are cut (the record
/// keeps their original length). Covers any RTP packet that fits a 1500-byte MTU.
pub const MEDIA_SNAP: usize = 1500;

/// Which calls get an ordinary (troubleshooting) capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptureMode {
    /// No call captures at all (intercept included).
    #[default]
    None,
    /// Only calls matching an intercept target, into the intercept directory.
    Targets,
    /// Every call into `dir`; targets also into the intercept directory.
    All,
}

/// One intercept rule.
#[derive(Clone)]
pub enum TargetRule {
    /// The caller's user part (From) as received matches (the whole user part).
    Caller(Regex),
    /// The callee's user part (Request-URI) as received matches (the whole user part).
    Callee(Regex),
    /// An attempt leaves through this outbound trunk.
    Trunk(String),
}

/// The intercept targets. `Debug` shows only how many there are: the list must never reach a log.
#[derive(Clone, Default)]
pub struct TargetRules(Vec<TargetRule>);

impl fmt::Debug for TargetRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TargetRules({} rules)", self.0.len())
    }
}

/// Why a target rule could not be built. Says which rule, never what it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    /// Index of the rule in the list.
    pub index: usize,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "intercept target {} is not a valid regular expression", self.index)
    }
}

impl std::error::Error for TargetError {}

impl TargetRules {
    /// An empty list.
    pub fn new() -> TargetRules {
        TargetRules::default()
    }

    /// Adds a caller rule: `pattern` must match the whole user part.
    pub fn caller(mut self, pattern: &str) -> Result<TargetRules, TargetError> {
        let re = anchored(pattern).ok_or(TargetError { index: self.0.len() })?;
        self.0.push(TargetRule::Caller(re));
        Ok(self)
    }

    /// Adds a callee rule: `pattern` must match the whole user part.
    pub fn callee(mut self, pattern: &str) -> Result<TargetRules, TargetError> {
        let re = anchored(pattern).ok_or(TargetError { index: self.0.len() })?;
        self.0.push(TargetRule::Callee(re));
        Ok(self)
    }

    /// Adds a trunk rule.
    pub fn trunk(mut self, name: &str) -> TargetRules {
        self.0.push(TargetRule::Trunk(name.to_owned()));
        self
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a call from `caller` to `callee` is a target (known at the INVITE).
    pub fn matches_parties(&self, caller: &str, callee: &str) -> bool {
        self.0.iter().any(|r| match r {
            TargetRule::Caller(re) => re.is_match(caller),
            TargetRule::Callee(re) => re.is_match(callee),
            TargetRule::Trunk(_) => false,
        })
    }

    /// Whether an attempt through `trunk` makes the call a target.
    pub fn matches_trunk(&self, trunk: &str) -> bool {
        self.0.iter().any(|r| matches!(r, TargetRule::Trunk(t) if t == trunk))
    }
}

/// `^(?:pattern)$`: a plain user part matches only itself, a pattern must cover the whole user.
fn anchored(pattern: &str) -> Option<Regex> {
    Regex::new(&format!("^(?:{pattern})$")).ok()
}

/// Where intercepted calls go.
#[derive(Debug, Clone)]
pub struct InterceptConfig {
    /// Directory of the target captures (created 0700), separate from `dir`.
    pub dir: PathBuf,
    /// The targets.
    pub targets: TargetRules,
}

/// Retention of the files of one directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most files kept; the oldest go first.
    pub max_files: Option<usize>,
    /// Files older than this are deleted.
    pub max_age: Option<Duration>,
}

/// The rolling capture of all SIP messages.
#[derive(Debug, Clone)]
pub struct SignallingCapture {
    /// Directory of the rolling files.
    pub dir: PathBuf,
    /// A file is closed and a new one started past this size.
    pub rotate_bytes: u64,
    /// ... or past this age.
    pub rotate_interval: Duration,
    /// Rolling files kept (the current one included).
    pub keep: usize,
}

/// The capture settings.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Which calls are captured.
    pub mode: CaptureMode,
    /// Directory of ordinary call captures (needed by [`CaptureMode::All`]).
    pub dir: Option<PathBuf>,
    /// Lawful intercept (needed by [`CaptureMode::Targets`]).
    pub intercept: Option<InterceptConfig>,
    /// Retention of ordinary call captures.
    pub retention: Retention,
    /// Retention of intercept captures.
    pub intercept_retention: Retention,
    /// The rolling signalling capture, when enabled.
    pub signalling: Option<SignallingCapture>,
    /// Records queued toward the capture thread before new ones are dropped.
    pub queue: usize,
    /// Longest time a written record stays in a buffer.
    pub flush_interval: Duration,
    /// Call captures open at once; calls beyond it are not captured (and counted).
    pub max_open: usize,
}

impl Default for CaptureConfig {
    fn default() -> CaptureConfig {
        CaptureConfig {
            mode: CaptureMode::None,
            dir: None,
            intercept: None,
            retention: Retention { max_files: Some(10_000), max_age: None },
            intercept_retention: Retention { max_files: None, max_age: None },
            signalling: None,
            queue: 4096,
            flush_interval: Duration::from_millis(100),
            max_open: 1024,
        }
    }
}

/// Where one call's capture goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Into `dir`.
    pub troubleshooting: bool,
    /// Into `intercept.dir`.
    pub intercept: bool,
}

impl Decision {
    /// Captured at all.
    pub fn any(self) -> bool {
        self.troubleshooting || self.intercept
    }
}

impl CaptureConfig {
    /// Whether anything is captured (a capture thread is needed).
    pub fn is_enabled(&self) -> bool {
        self.mode != CaptureMode::None || self.signalling.is_some()
    }

    /// The decision for a new call, from its parties.
    pub fn decide(&self, caller: &str, callee: &str) -> Decision {
        let intercept = self.mode != CaptureMode::None
            && self.intercept.as_ref().is_some_and(|i| i.targets.matches_parties(caller, callee));
        Decision { troubleshooting: self.mode == CaptureMode::All, intercept }
    }

    /// Whether an attempt through `trunk` makes the call a target.
    pub fn is_target_trunk(&self, trunk: &str) -> bool {
        self.mode != CaptureMode::None
            && self.intercept.as_ref().is_some_and(|i| i.targets.matches_trunk(trunk))
    }
}

/// Counters of the capture path, shared by the feeders and the capture thread.
#[derive(Debug, Default)]
pub struct CaptureStats {
    /// Records dropped because the channel to the capture thread was full.
    pub dropped: AtomicU64,
    /// Records written.
    pub written: AtomicU64,
    /// Write or open failures (the record is lost).
    pub errors: AtomicU64,
    /// Calls not captured because `max_open` captures were open.
    pub refused: AtomicU64,
}

/// What the capture thread is told.
// Media records carry their packet inline, so sending one never allocates.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Record {
    Open { call: CallRef, at: SystemTime, decision: Decision },
    Sip { call: Option<CallRef>, at: SystemTime, src: SocketAddr, dst: SocketAddr, data: Bytes },
    Media { call: CallRef, at: SystemTime, src: SocketAddr, dst: SocketAddr, packet: MediaPacket },
    Close { call: CallRef, linger: Duration },
    Stop,
}

/// A media packet copied into a fixed slot.
pub(crate) struct MediaPacket {
    len: u16,
    data: [u8; MEDIA_SNAP],
}

/// The feeding end of the capture thread; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct CaptureHandle {
    tx: SyncSender<Record>,
    stats: Arc<CaptureStats>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Record")
    }
}

/// The capture thread itself, to stop it and wait until its files are complete.
#[derive(Debug)]
pub struct CaptureThread {
    tx: SyncSender<Record>,
    join: std::thread::JoinHandle<()>,
}

impl CaptureThread {
    /// Writes what is queued, closes every file (lingering captures included) and ends the
    /// thread. Waits for it: call it at shutdown, after signalling and media have stopped.
    pub fn stop(self) {
        // A blocking send: the thread drains the queue, so this waits at most for the backlog.
        if self.tx.send(Record::Stop).is_ok() && self.join.join().is_err() {
            tracing::error!("capture thread panicked");
        }
    }
}

impl CaptureHandle {
    /// Starts the capture thread (`capture`). It ends on [`CaptureThread::stop`], or when every
    /// handle is dropped, after closing its files.
    pub fn start(config: CaptureConfig) -> std::io::Result<(CaptureHandle, CaptureThread)> {
        let (tx, rx) = mpsc::sync_channel(config.queue.max(16));
        let stats = Arc::new(CaptureStats::default());
        let w = writer::Writer::new(config, rx, Arc::clone(&stats))?;
        let join = std::thread::Builder::new().name("capture".into()).spawn(move || w.run())?;
        Ok((CaptureHandle { tx: tx.clone(), stats }, CaptureThread { tx, join }))
    }

    /// The counters.
    pub fn stats(&self) -> &CaptureStats {
        &self.stats
    }

    fn send(&self, r: Record) {
        match self.tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A call starts being captured (files opened on the capture thread).
    pub fn open_call(&self, call: CallRef, at: SystemTime, decision: Decision) {
        if decision.any() {
            self.send(Record::Open { call, at, decision });
        }
    }

    /// One SIP message from `src` to `dst`; `call` when it belongs to a captured call (it also
    /// goes to the rolling signalling capture, if enabled).
    pub fn sip(
        &self,
        call: Option<CallRef>,
        at: SystemTime,
        src: SocketAddr,
        dst: SocketAddr,
        data: Bytes,
    ) {
        self.send(Record::Sip { call, at, src, dst, data });
    }

    /// One media datagram of a captured call. Copies at most [`MEDIA_SNAP`] bytes into the
    /// channel slot; allocates nothing.
    pub fn media(
        &self,
        call: CallRef,
        at: SystemTime,
        src: SocketAddr,
        dst: SocketAddr,
        data: &[u8],
    ) {
        let len = data.len().min(MEDIA_SNAP);
        let mut packet = MediaPacket { len: len as u16, data: [0; MEDIA_SNAP] };
        packet.data[..len].copy_from_slice(&data[..len]);
        self.send(Record::Media { call, at, src, dst, packet });
    }

    /// The call is over: its files stay open for `linger` more (the last responses of its
    /// transactions, e.g. the 200 to the SBC's BYE, arrive after the call ended), then close.
    pub fn close_call(&self, call: CallRef, linger: Duration) {
        self.send(Record::Close { call, linger });
    }
}

#[cfg(test)]
mod tests;
