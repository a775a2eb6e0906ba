//! Call records of the SBC.
//!
//! The signalling core emits [`CallEvent`]s as a call progresses; a [`Recorder`] folds them into one
//! [`CallRecord`] per call and hands the record back when the call ends. Attempts refused by policy
//! before a call exists arrive as one [`CallEventKind::Rejected`] event and become a record at
//! once, so every INVITE that reached routing leaves exactly one record.
//!
//! Behind the same event stream, [`sink::CdrSink`] runs the CDR files: one writer thread for all
//! shards (so records are exact across shards), the [`journal`] of calls in progress (replayed after
//! a crash) and the [`writer`] of CSV or JSON Lines files (atomic rename into the pickup directory,
//! rotation, retention, a bounded queue while the disk is unwritable). [`record`] defines the flat
//! row that both formats share. Signalling never waits on any of it: events cross a bounded channel
//! with `try_send`.

#![forbid(unsafe_code)]

pub mod capture;
pub mod journal;
pub mod record;
pub mod sink;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Identifies a call across its events (allocated by the core, unique per process run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallRef(pub u64);

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseSide {
    /// Leg A's party (BYE or CANCEL from the caller).
    Caller,
    /// Leg B's party (BYE or a final error response from the callee side).
    Callee,
    /// The SBC itself (timeouts, policy, shutdown).
    Sbc,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    /// Answered, then hung up.
    Answered,
    /// 486/600 from the callee side.
    Busy,
    /// No answer within the ring timeout.
    NoAnswer,
    /// The caller cancelled before answer.
    Cancelled,
    /// Any other failure to connect.
    Failed,
    /// Refused by policy (admission, CAC, rate, access) before a call existed.
    Rejected,
    /// In progress when the SBC stopped without ending it (crash, `kill -9`): written at the next
    /// start from the journal, with the last time known alive as its end.
    Interrupted,
}

impl Disposition {
    /// The label used in CDR files and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Busy => "busy",
            Disposition::NoAnswer => "no_answer",
            Disposition::Cancelled => "cancelled",
            Disposition::Failed => "failed",
            Disposition::Rejected => "rejected_by_policy",
            Disposition::Interrupted => "interrupted",
        }
    }
}

impl ReleaseSide {
    /// The label used in CDR files.
    pub fn label(self) -> &'static str {
        match self {
            ReleaseSide::Caller => "caller",
            ReleaseSide::Callee => "callee",
            ReleaseSide::Sbc => "sbc",
        }
    }
}

/// What the media plane measured on one leg: the packets received from that leg's peer.
/// Integers only, so that records compare exactly: jitter in microseconds, MOS times 100.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaLegStats {
    /// Codec of the leg's first audio stream (`PCMA`), empty when none was negotiated.
    pub codec: String,
    /// RTP packets received from the leg's peer.
    pub packets: u64,
    /// RTP bytes received from the leg's peer.
    pub bytes: u64,
    /// RTP packets lost on the way from the peer (RFC 3550 A.3).
    pub lost: u64,
    /// Interarrival jitter (RFC 3550 A.8), microseconds.
    pub jitter_us: u32,
    /// Estimated MOS (E-model), times 100 (e.g. 441 for 4.41).
    pub mos_x100: u16,
}

/// One step of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEventKind {
    /// The INVITE on leg A was accepted for routing.
    Started {
        /// Caller (From user) as received.
        caller: String,
        /// Callee (Request-URI user) as received.
        callee: String,
        /// Source of the INVITE.
        source: SocketAddr,
        /// Leg A's Call-ID.
        call_id: String,
        /// Name of the listener the INVITE arrived on.
        listener: String,
        /// Inbound trunk, when the source is one.
        trunk: Option<String>,
    },
    /// Leg B was sent toward a target (one event per failover attempt).
    Attempted {
        /// Outbound trunk name.
        trunk: String,
        /// Target address.
        target: SocketAddr,
        /// Caller as sent on leg B.
        caller: String,
        /// Callee after number rewriting.
        callee: String,
        /// Leg B's Call-ID for this attempt.
        call_id: String,
    },
    /// A 180/183 was relayed to the caller.
    Ringing,
    /// The call was answered.
    Answered,
    /// Media figures at the end of the call, per leg (sent just before `Ended`).
    Media {
        /// Leg A (the caller's side).
        a: MediaLegStats,
        /// Leg B (the callee's side).
        b: MediaLegStats,
    },
    /// The call is over; no more events for it.
    Ended {
        /// How it ended.
        disposition: Disposition,
        /// Final SIP status sent to the caller (200 for answered calls).
        status: u16,
        /// Reason phrase of that status.
        phrase: String,
        /// Who released it.
        released_by: ReleaseSide,
        /// Why the SBC released it, when it did.
        reason: Option<String>,
        /// Reason header (RFC 3326, e.g. a Q.850 cause) received with the final response, BYE or
        /// CANCEL that ended the call.
        cause: Option<String>,
    },
    /// An INVITE refused by policy before any call state existed: the whole record in one event.
    Rejected {
        /// Caller (From user) as received.
        caller: String,
        /// Callee (Request-URI user) as received.
        callee: String,
        /// Source of the INVITE.
        source: SocketAddr,
        /// Its Call-ID.
        call_id: String,
        /// Name of the listener it arrived on.
        listener: String,
        /// Inbound trunk, when the source is one.
        trunk: Option<String>,
        /// Status sent (403, 503...).
        status: u16,
        /// Its reason phrase.
        phrase: String,
        /// Which policy refused it.
        reason: String,
    },
}

/// A call event with its wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// The call.
    pub call: CallRef,
    /// When it happened.
    pub at: SystemTime,
    /// What happened.
    pub kind: CallEventKind,
}

/// One failover attempt of a call: where leg B was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Outbound trunk name.
    pub trunk: String,
    /// Target address.
    pub target: SocketAddr,
    /// Caller as sent.
    pub caller: String,
    /// Callee as sent, after rewriting.
    pub callee: String,
    /// Leg B's Call-ID.
    pub call_id: String,
}

/// The folded record of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Unique across restarts: the recorder's instance and the call.
    pub record_id: String,
    /// The call.
    pub call: CallRef,
    /// INVITE received.
    pub start: SystemTime,
    /// First ringing relayed.
    pub ring: Option<SystemTime>,
    /// Answered.
    pub answer: Option<SystemTime>,
    /// Ended.
    pub end: SystemTime,
    /// Caller as received.
    pub caller: String,
    /// Callee as received.
    pub callee: String,
    /// Source of the INVITE.
    pub source: SocketAddr,
    /// Leg A's Call-ID.
    pub call_id: String,
    /// Listener the INVITE arrived on.
    pub listener: String,
    /// Inbound trunk, when the source is one.
    pub trunk: Option<String>,
    /// Attempts on leg B, in order (the last is the one that decided the call).
    pub attempts: Vec<Attempt>,
    /// How it ended.
    pub disposition: Disposition,
    /// Final status.
    pub status: u16,
    /// Reason phrase of the final status.
    pub phrase: String,
    /// Who released it.
    pub released_by: ReleaseSide,
    /// SBC release reason.
    pub reason: Option<String>,
    /// Reason header / Q.850 cause received.
    pub cause: Option<String>,
    /// Media figures of leg A and leg B, when the call had media.
    pub media: Option<(MediaLegStats, MediaLegStats)>,
}

impl CallRecord {
    /// Billable duration: answer to end, zero if never answered.
    pub fn billable(&self) -> std::time::Duration {
        self.answer.and_then(|a| self.end.duration_since(a).ok()).unwrap_or_default()
    }

    /// Whole duration: INVITE received to end.
    pub fn duration(&self) -> std::time::Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }

    /// The latest time this record knows of (for a call cut short: when it was last seen alive).
    pub fn last_seen(&self) -> SystemTime {
        [Some(self.start), self.ring, self.answer, Some(self.end)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.start)
    }
}

/// What a record knows of a call from its INVITE alone (Started and Rejected events).
struct Inbound {
    caller: String,
    callee: String,
    source: SocketAddr,
    call_id: String,
    listener: String,
    trunk: Option<String>,
}

/// Folds events into records.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Prefix of record ids: distinct per process run (e.g. its start time in ms), because call
    /// refs restart at each run.
    instance: u64,
    open: HashMap<CallRef, CallRecord>,
}

impl Recorder {
    /// An empty recorder (instance 0: ids unique within this run only).
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// An empty recorder whose record ids carry `instance`.
    pub fn with_instance(instance: u64) -> Recorder {
        Recorder { instance, open: HashMap::new() }
    }

    /// A record as it stands when its INVITE arrives: nothing but the inbound side known yet.
    fn opened(&self, call: CallRef, at: SystemTime, inbound: Inbound) -> CallRecord {
        let Inbound { caller, callee, source, call_id, listener, trunk } = inbound;
        CallRecord {
            record_id: self.record_id(call),
            call,
            start: at,
            ring: None,
            answer: None,
            end: at,
            caller,
            callee,
            source,
            call_id,
            listener,
            trunk,
            attempts: Vec::new(),
            disposition: Disposition::Failed,
            status: 0,
            phrase: String::new(),
            released_by: ReleaseSide::Sbc,
            reason: None,
            cause: None,
            media: None,
        }
    }

    fn record_id(&self, call: CallRef) -> String {
        format!("{:x}-{:x}", self.instance, call.0)
    }

    /// The record of an open call, as folded so far.
    pub fn get(&self, call: CallRef) -> Option<&CallRecord> {
        self.open.get(&call)
    }

    /// Every open call's record so far.
    pub fn open(&self) -> impl Iterator<Item = &CallRecord> {
        self.open.values()
    }

    /// Takes one event; returns the finished record when the call ended.
    pub fn handle(&mut self, event: CallEvent) -> Option<CallRecord> {
        match event.kind {
            CallEventKind::Started { caller, callee, source, call_id, listener, trunk } => {
                let inbound = Inbound { caller, callee, source, call_id, listener, trunk };
                let record = self.opened(event.call, event.at, inbound);
                self.open.insert(event.call, record);
                None
            }
            CallEventKind::Attempted { trunk, target, caller, callee, call_id } => {
                if let Some(r) = self.open.get_mut(&event.call) {
                    r.attempts.push(Attempt { trunk, target, caller, callee, call_id });
                }
                None
            }
            CallEventKind::Ringing => {
                if let Some(r) = self.open.get_mut(&event.call) {
                    r.ring.get_or_insert(event.at);
                }
                None
            }
            CallEventKind::Answered => {
                if let Some(r) = self.open.get_mut(&event.call) {
                    r.answer.get_or_insert(event.at);
                }
                None
            }
            CallEventKind::Media { a, b } => {
                if let Some(r) = self.open.get_mut(&event.call) {
                    r.media = Some((a, b));
                }
                None
            }
            CallEventKind::Ended { disposition, status, phrase, released_by, reason, cause } => {
                let mut r = self.open.remove(&event.call)?;
                r.end = event.at;
                r.disposition = disposition;
                r.status = status;
                r.phrase = phrase;
                r.released_by = released_by;
                r.reason = reason;
                r.cause = cause;
                Some(r)
            }
            CallEventKind::Rejected {
                caller,
                callee,
                source,
                call_id,
                listener,
                trunk,
                status,
                phrase,
                reason,
            } => {
                let inbound = Inbound { caller, callee, source, call_id, listener, trunk };
                Some(CallRecord {
                    disposition: Disposition::Rejected,
                    status,
                    phrase,
                    reason: Some(reason),
                    ..self.opened(event.call, event.at, inbound)
                })
            }
        }
    }

    /// Calls with events but no end yet.
    pub fn open_calls(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn folds_a_call_into_one_record() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let call = CallRef(1);
        let ev = |s: u64, kind| CallEvent { call, at: t0 + Duration::from_secs(s), kind };
        let mut rec = Recorder::new();
        let source = "127.0.0.1:5061".parse().unwrap();
        assert!(
            rec.handle(ev(
                0,
                CallEventKind::Started {
                    caller: "a".into(),
                    callee: "b".into(),
                    source,
                    call_id: "c1".into(),
                    listener: "public".into(),
                    trunk: None,
                }
            ))
            .is_none()
        );
        assert!(rec.handle(ev(1, CallEventKind::Ringing)).is_none());
        assert!(rec.handle(ev(2, CallEventKind::Answered)).is_none());
        let end = CallEventKind::Ended {
            disposition: Disposition::Answered,
            status: 200,
            phrase: "OK".into(),
            released_by: ReleaseSide::Caller,
            reason: None,
            cause: None,
        };
        let r = rec.handle(ev(7, end)).unwrap();
        assert_eq!(r.billable(), Duration::from_secs(5));
        assert_eq!(rec.open_calls(), 0);
    }
}
