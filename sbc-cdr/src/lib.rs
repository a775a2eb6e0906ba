//! Call records of the SBC.
//!
//! The signalling core emits [`CallEvent`]s as a call progresses; a [`Recorder`] folds them into one
//! [`CallRecord`] per call and hands the record back when the call ends. Today the records are only
//! logged and counted by the binary; the records issue adds the CDR files, the journal and PCAPs
//! behind this same event stream.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::SystemTime;

/// Identifies a call across its events (allocated by the core, unique per process run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallRef(pub u64);

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseSide {
    /// Leg A's party (BYE or CANCEL from the caller).
    Caller,
    /// Leg B's party (BYE or a final error response from the callee side).
    Callee,
    /// The SBC itself (timeouts, policy, shutdown).
    Sbc,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Refused by policy before leg B was created.
    Rejected,
}

/// What the media plane measured on one leg: the packets received from that leg's peer.
/// Integers only, so that records compare exactly: jitter in microseconds, MOS times 100.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    },
    /// Leg B was sent toward a target (one event per failover attempt).
    Attempted {
        /// Outbound trunk name.
        trunk: String,
        /// Target address.
        target: SocketAddr,
        /// Callee after number rewriting.
        callee: String,
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
        /// Who released it.
        released_by: ReleaseSide,
        /// Why the SBC released it, when it did.
        reason: Option<String>,
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

/// The folded record of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
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
    /// Failover attempts (trunk, target, callee as sent).
    pub attempts: Vec<(String, SocketAddr, String)>,
    /// How it ended.
    pub disposition: Disposition,
    /// Final status.
    pub status: u16,
    /// Who released it.
    pub released_by: ReleaseSide,
    /// SBC release reason.
    pub reason: Option<String>,
    /// Media figures of leg A and leg B, when the call had media.
    pub media: Option<(MediaLegStats, MediaLegStats)>,
}

impl CallRecord {
    /// Billable duration: answer to end, zero if never answered.
    pub fn billable(&self) -> std::time::Duration {
        self.answer.and_then(|a| self.end.duration_since(a).ok()).unwrap_or_default()
    }
}

/// Folds events into records.
#[derive(Debug, Default)]
pub struct Recorder {
    open: HashMap<CallRef, CallRecord>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Takes one event; returns the finished record when the call ended.
    pub fn handle(&mut self, event: CallEvent) -> Option<CallRecord> {
        match event.kind {
            CallEventKind::Started { caller, callee, source } => {
                self.open.insert(
                    event.call,
                    CallRecord {
                        call: event.call,
                        start: event.at,
                        ring: None,
                        answer: None,
                        end: event.at,
                        caller,
                        callee,
                        source,
                        attempts: Vec::new(),
                        disposition: Disposition::Failed,
                        status: 0,
                        released_by: ReleaseSide::Sbc,
                        reason: None,
                        media: None,
                    },
                );
                None
            }
            CallEventKind::Attempted { trunk, target, callee } => {
                if let Some(r) = self.open.get_mut(&event.call) {
                    r.attempts.push((trunk, target, callee));
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
            CallEventKind::Ended { disposition, status, released_by, reason } => {
                let mut r = self.open.remove(&event.call)?;
                r.end = event.at;
                r.disposition = disposition;
                r.status = status;
                r.released_by = released_by;
                r.reason = reason;
                Some(r)
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
                CallEventKind::Started { caller: "a".into(), callee: "b".into(), source }
            ))
            .is_none()
        );
        assert!(rec.handle(ev(1, CallEventKind::Ringing)).is_none());
        assert!(rec.handle(ev(2, CallEventKind::Answered)).is_none());
        let end = CallEventKind::Ended {
            disposition: Disposition::Answered,
            status: 200,
            released_by: ReleaseSide::Caller,
            reason: None,
        };
        let r = rec.handle(ev(7, end)).unwrap();
        assert_eq!(r.billable(), Duration::from_secs(5));
        assert_eq!(rec.open_calls(), 0);
    }
}
