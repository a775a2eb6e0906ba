//! The SIP side of captures: which messages of a shard belong to which captured call.
//!
//! A shard step handles inputs, drains transmits, then drains events. The capture decision for a
//! call is made from its events (`Started`: caller and callee; `Attempted`: trunk), which come
//! after the INVITE was handled and forwarded. So the step's messages are held in `pending`
//! (refcounted `Bytes`, no copy) and attributed once the events and the legs' Call-IDs of the
//! step are known; then they go to the capture thread with one `try_send` each. Nothing here
//! touches a file: the step does a few hash lookups per message when capture is enabled, and
//! nothing at all when it is not (the shell has no `ShardTap` then).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use sbc_cdr::capture::{CaptureHandle, Decision};
use sbc_cdr::{CallEventKind, CallRef};
use sbc_media::backend::PacketTap;

use crate::b2bua::{Engine, LegCallId};
use crate::config::Config;
use crate::transport::{Flow, Transmit};

/// How long a call's capture stays open after the call ended: the call ends when the engine
/// has decided it (say, on a BYE from one side), but the other leg's answer to the SBC's own
/// BYE comes a round trip later. Four seconds cover a few retransmissions at T1 = 500 ms.
const CLOSE_LINGER: Duration = Duration::from_secs(4);

/// Copies the RTP/RTCP of one call's relay pairs to the capture thread (runs on media workers).
#[derive(Debug)]
struct MediaTap {
    call: CallRef,
    handle: CaptureHandle,
}

impl PacketTap for MediaTap {
    fn packet(&self, at: SystemTime, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        self.handle.media(self.call, at, from, to, data);
    }
}

struct Pending {
    at: SystemTime,
    src: SocketAddr,
    dst: SocketAddr,
    call_id: Option<Bytes>,
    data: Bytes,
}

/// One shard's capture state. Owned by the shard task.
pub(super) struct ShardTap {
    handle: CaptureHandle,
    config: Arc<Config>,
    /// Whether every message goes to the capture thread (rolling signalling capture).
    all_messages: bool,
    pending: Vec<Pending>,
    /// Captured calls and their legs' Call-IDs.
    calls: HashMap<CallRef, Vec<Bytes>>,
    by_call_id: HashMap<Bytes, CallRef>,
    ended: Vec<CallRef>,
    /// Ended calls whose Call-IDs are still recognised, oldest first.
    lingering: VecDeque<(Instant, CallRef)>,
}

impl ShardTap {
    pub(super) fn new(handle: CaptureHandle, config: Arc<Config>, engine: &mut Engine) -> ShardTap {
        engine.report_leg_ids();
        ShardTap {
            handle,
            all_messages: config.capture.signalling.is_some(),
            config,
            pending: Vec::new(),
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            ended: Vec::new(),
            lingering: VecDeque::new(),
        }
    }

    /// The local address of a flow as written in capture headers: the listener's bound address,
    /// or its advertised one when it is bound on a wildcard.
    fn local(&self, flow: &Flow) -> SocketAddr {
        match self.config.listeners.get(flow.listener.0) {
            Some(l) if l.addr.ip().is_unspecified() => SocketAddr::new(l.advertise, l.addr.port()),
            Some(l) => l.addr,
            None => flow.remote,
        }
    }

    /// A message received on `flow`, as it arrived.
    pub(super) fn incoming(
        &mut self,
        at: SystemTime,
        flow: &Flow,
        call_id: Option<Bytes>,
        data: Bytes,
    ) {
        let dst = self.local(flow);
        self.pending.push(Pending { at, src: flow.remote, dst, call_id, data });
    }

    /// A message about to be sent.
    pub(super) fn outgoing(&mut self, at: SystemTime, t: &Transmit) {
        let src = self.local(&t.flow);
        let call_id = call_id_of(&t.data);
        self.pending.push(Pending { at, src, dst: t.flow.remote, call_id, data: t.data.clone() });
    }

    /// A call event of this step: decides, opens and taps captures.
    pub(super) fn event(
        &mut self,
        engine: &mut Engine,
        at: SystemTime,
        call: CallRef,
        kind: &CallEventKind,
    ) {
        let capture = &self.config.capture;
        let decision = match kind {
            CallEventKind::Started { caller, callee, .. } => capture.decide(caller, callee),
            CallEventKind::Attempted { trunk, .. } if capture.is_target_trunk(trunk) => {
                Decision { troubleshooting: false, intercept: true }
            }
            CallEventKind::Ended { .. } => {
                if self.calls.contains_key(&call) {
                    self.ended.push(call);
                }
                return;
            }
            _ => return,
        };
        if !decision.any() {
            return;
        }
        self.handle.open_call(call, at, decision);
        if let std::collections::hash_map::Entry::Vacant(e) = self.calls.entry(call) {
            e.insert(Vec::new());
            let tap = MediaTap { call, handle: self.handle.clone() };
            engine.tap_media(call, Some(Arc::new(tap)));
        }
    }

    /// A leg's Call-ID, reported by the engine.
    pub(super) fn leg(&mut self, leg: LegCallId) {
        if let Some(ids) = self.calls.get_mut(&leg.call) {
            ids.push(leg.call_id.clone());
            self.by_call_id.insert(leg.call_id, leg.call);
        }
    }

    /// End of the step: sends the step's messages, then closes the calls that ended.
    pub(super) fn finish(&mut self) {
        for p in self.pending.drain(..) {
            let call = p.call_id.and_then(|id| self.by_call_id.get(&id).copied());
            if call.is_some() || self.all_messages {
                self.handle.sip(call, p.at, p.src, p.dst, p.data);
            }
        }
        let now = Instant::now();
        for call in self.ended.drain(..) {
            self.handle.close_call(call, CLOSE_LINGER);
            self.lingering.push_back((now + CLOSE_LINGER, call));
        }
        // Forgotten on the next step after their linger; the capture thread closes the files
        // on its own clock.
        while let Some(&(until, call)) = self.lingering.front() {
            if until > now {
                break;
            }
            self.lingering.pop_front();
            for id in self.calls.remove(&call).unwrap_or_default() {
                self.by_call_id.remove(&id);
            }
        }
    }
}

/// The Call-ID of a serialized SIP message (`Call-ID` or compact `i`), from its header section.
fn call_id_of(data: &Bytes) -> Option<Bytes> {
    // The start line is skipped; the header section ends at the first empty line.
    for line in data.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            // A sub-slice of `data`: shares its buffer, no copy.
            return Some(data.slice_ref(line[colon + 1..].trim_ascii()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_call_id_in_full_and_compact_form() {
        let m =
            Bytes::from_static(b"BYE sip:a@b SIP/2.0\r\nVia: x\r\nCall-ID:  abc@h \r\n\r\nbody");
        assert_eq!(call_id_of(&m).as_deref(), Some(&b"abc@h"[..]));
        let m = Bytes::from_static(b"SIP/2.0 200 OK\r\ni: k1\r\n\r\n");
        assert_eq!(call_id_of(&m).as_deref(), Some(&b"k1"[..]));
        // Only the header section counts.
        let m = Bytes::from_static(b"MESSAGE sip:a SIP/2.0\r\nTo: x\r\n\r\nCall-ID: no\r\n");
        assert_eq!(call_id_of(&m), None);
        assert_eq!(call_id_of(&Bytes::new()), None);
    }
}
