//! The call logic of the media plane: per call, the relay pairs and what each leg said.
//!
//! One [`MediaPlane`] per signalling shard, owned by the core's engine. Sans-IO: it never opens a
//! socket or reads a clock; it calls the [`RelayBackend`] (which owns the sockets) only on call
//! events, and takes `now` as an argument.
//!
//! The session model. A call's media is a list of streams, one per m-line (index `i` is the same
//! stream on both legs, since the SBC never adds or removes m-lines). Each enabled stream holds a
//! relay pair. The plane keeps, per side, the latest SDP that side sent (offer or answer), and
//! the latest offer in flight with the SDP the SBC sent for it, so that:
//! - an offer from side X (initial, failover replacement, or re-offer) computes the streams
//!   against the existing pairs (kept when their bind addresses are unchanged, opened when new,
//!   closed when disabled or dropped), configures X's side of every pair, and returns the offer
//!   for the other side Y;
//! - an answer from Y to that offer closes the pairs of rejected streams, configures Y's side
//!   (and X's where the answer changes it: payload type maps, forwarding), and returns the
//!   answer for X. A second answer to the same offer (a 200 after an early 183) is accepted and
//!   replaces the first.
//!
//! Everything that can fail (parsing, negotiation, opening ports) happens before the session is
//! touched, and pairs opened by a failing offer are closed again, so an error leaves the session
//! as it was. An offer that the other leg refuses (a final non-2xx to the re-INVITE or UPDATE)
//! is undone by [`MediaPlane::offer_refused`]: RFC 3264 §8 and RFC 3261 §14.1 keep the old
//! session in force, and its peers still use its addresses, ports and keys. For that an offer
//! keeps what it changed until it is answered: the session as it was, and the pairs of the streams
//! it disables, still open and configured (their ports are what the peers know).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::backend::{
    DirectionStats, DtlsRole, Latch, MediaFailure, PacketTap, PairId, PairPorts, PairSpec,
    RelayBackend, RemoteSpec, Security, SrtpProfile,
};
use crate::dtmf::{
    DtmfEvent, DtmfMode, TelephoneEvents, add_telephone_event, strip_telephone_events,
    telephone_event,
};
use crate::negotiate::{
    NegotiateError, TranscodePair, TranscodePlan, clock_rate, effective_direction, has_rtcp_mux,
    localize, main_codec, prepare_answer_transcoding, prepare_offer_transcoding, remote_addresses,
};
use crate::profile::{
    CryptoLine, MediaProfile, PeerSecurity, Setup, SideSecurity, Toward, Wire, is_webrtc_proto,
    peer_security, write_media, write_rejected_mid, write_session,
};
use crate::sdp::{Attribute, Direction, Origin, Sdp, addr_type};
use crate::{LegSide, MediaError, MediaSessionId};

/// Per-leg media profile, from the listener/trunk config of that leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegMedia {
    /// The address the SBC writes into SDP for this leg (`c=`, `o=`, `a=rtcp`); its family picks
    /// `IN IP4` or `IN IP6`, whatever the other leg uses.
    pub advertise: IpAddr,
    /// The local address the relay binds this leg's sockets on.
    pub bind: IpAddr,
    /// Codecs this leg may be offered, in order of preference, by encoding name
    /// (case-insensitive; `"name/rate"` also pins the clock rate). Empty: all, in the offerer's
    /// order. When an offer from the other leg, filtered by that leg's own list, shares no
    /// codec with this list, the SBC transcodes if both have one of Opus, PCMU, PCMA.
    pub codecs: Vec<String>,
    /// The leg's peers are behind NAT: the relay latches onto the source of their first packet
    /// instead of insisting on the SDP address ([`Latch::Nat`]).
    pub nat: bool,
    /// Media inactivity after which the call counts as dead; `None`: never.
    pub inactivity_timeout: Option<Duration>,
    /// What the leg speaks: plain RTP, SDES-SRTP or WebRTC (see [`crate::profile`]).
    pub profile: MediaProfile,
    /// SDES suites the SBC offers and accepts on this leg, in order of preference; empty:
    /// [`crate::profile::DEFAULT_SDES_SUITES`].
    pub srtp_suites: Vec<SrtpProfile>,
    /// How the leg's peers carry DTMF. A call with one [`DtmfMode::Info`] leg and one
    /// [`DtmfMode::Rfc4733`] leg interworks (see [`crate::dtmf`] and
    /// [`MediaPlane::send_dtmf`]); two legs of the same mode relay as they are.
    pub dtmf: DtmfMode,
}

impl Default for LegMedia {
    /// Loopback, all codecs, no NAT, no timeout, plain RTP: what a session gets for a leg whose
    /// profile was never set (tests, and the core until it passes the configured profiles).
    fn default() -> LegMedia {
        LegMedia {
            advertise: IpAddr::V4(Ipv4Addr::LOCALHOST),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            codecs: Vec::new(),
            nat: false,
            inactivity_timeout: None,
            profile: MediaProfile::Rtp,
            srtp_suites: Vec::new(),
            dtmf: DtmfMode::Rfc4733,
        }
    }
}

/// What one leg's media amounted to, for records.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LegSummary {
    /// The codec negotiated on this leg (the answer's first real codec), if any.
    pub codec: Option<String>,
    /// Packets received from this leg's peer: counters summed over all the call's streams
    /// (closed ones included), jitter of the worst stream.
    pub received: DirectionStats,
}

/// A call's media figures, per leg.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MediaSummary {
    /// Leg A (the caller's).
    pub a: LegSummary,
    /// Leg B (the callee's).
    pub b: LegSummary,
}

impl MediaSummary {
    /// The summary of one leg.
    pub fn leg(&self, side: LegSide) -> &LegSummary {
        match side {
            LegSide::A => &self.a,
            LegSide::B => &self.b,
        }
    }
}

/// The media plane of one signalling shard (see the module docs).
pub struct MediaPlane {
    backend: Arc<dyn RelayBackend>,
    sessions: HashMap<MediaSessionId, Session>,
    /// Makes the `o=` session ids unpredictable across processes (RFC 8866 §5.2 wants them
    /// unique); fixed by [`MediaPlane::with_seed`] for reproducible tests.
    seed: u64,
    /// SRTP master keys and ICE credentials: always seeded by the OS, never by `seed`, since a
    /// key derived from a config or test seed would be guessable.
    secrets: StdRng,
}

impl fmt::Debug for MediaPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaPlane").field("sessions", &self.sessions.len()).finish_non_exhaustive()
    }
}

impl MediaPlane {
    /// An empty plane over a relay backend.
    pub fn new(backend: Arc<dyn RelayBackend>) -> MediaPlane {
        // std's RandomState is keyed from the OS once per process: enough for o= ids, without a
        // dependency on an RNG crate.
        let seed = RandomState::new().hash_one(0x5344_5050_u64);
        MediaPlane::with_seed(backend, seed)
    }

    /// An empty plane whose `o=` session ids derive from `seed` (reproducible tests).
    pub fn with_seed(backend: Arc<dyn RelayBackend>, seed: u64) -> MediaPlane {
        MediaPlane { backend, sessions: HashMap::new(), seed, secrets: StdRng::from_os_rng() }
    }

    /// Sets the media profile of one leg, creating the session if needed. Call it for A when the
    /// INVITE arrives and for B before each attempt (failover): a new profile for a side means a
    /// new peer there, so what the old peer said is forgotten (its address unset in the relay,
    /// its unanswered offer dropped, a fresh `o=` for the new dialog). Pairs stay open: the next
    /// offer reuses them if the bind addresses did not change.
    pub fn set_leg(&mut self, id: MediaSessionId, side: LegSide, leg: LegMedia) {
        let seed = self.seed;
        let session = self.sessions.entry(id).or_insert_with(|| Session::new(seed, id));
        let s = idx(side);
        session.generation[s] += 1;
        session.origins[s] = OriginState::new(seed, id, side, session.generation[s]);
        session.current[s] = None;
        session.sec[s] = SideSecurity::default();
        // The session before the pending offer had the old peer on this side: there is nothing
        // to go back to.
        if let Some(rollback) = session.pending.as_mut().and_then(|o| o.rollback.take()) {
            for pair in rollback.retiring {
                session.close_pair(&*self.backend, pair);
            }
        }
        // An offer the old peer made can no longer be answered.
        if session.pending.as_ref().is_some_and(|o| o.from == side) {
            session.pending = None;
        }
        let latch = if leg.nat { Latch::Nat } else { Latch::Strict };
        session.legs[s] = leg;
        for pair in session.streams.iter_mut().flatten() {
            if pair.configured[s].is_some() {
                let forget = RemoteSpec { forward: false, latch, ..RemoteSpec::default() };
                self.backend.configure(pair.ports.id, side, &forget);
                pair.configured[s] = Some(forget);
            }
        }
    }

    /// An SDP offer from `from`; returns the offer to send on the other leg.
    ///
    /// Errors: `NotSdp`/`BadSdp` for an unusable body, `NoCommonCodec` when an audio stream has no
    /// codec the other leg's profile allows (488 for both), `NoPorts`/`Relay` (503). On error the
    /// session is unchanged and no port stays open.
    pub fn offer(
        &mut self,
        id: MediaSessionId,
        from: LegSide,
        sdp: &Bytes,
        now: Instant,
    ) -> Result<Bytes, MediaError> {
        let received = Sdp::parse(sdp)?;
        let seed = self.seed;
        let backend = &*self.backend;
        let is_new = !self.sessions.contains_key(&id);
        let session = self.sessions.entry(id).or_insert_with(|| Session::new(seed, id));
        let result = session.offer(backend, from, received, now, &mut self.secrets);
        if result.is_err() && is_new {
            // Nothing was opened (offer cleans up after itself); do not keep an empty session
            // for a call whose first offer failed.
            self.sessions.remove(&id);
        }
        result
    }

    /// An SDP answer from `from` to the other leg's latest offer; returns the answer to send on
    /// the other leg. Errors leave the session unchanged (`NoOffer` when there is no offer from
    /// the other leg).
    pub fn answer(
        &mut self,
        id: MediaSessionId,
        from: LegSide,
        sdp: &Bytes,
        now: Instant,
    ) -> Result<Bytes, MediaError> {
        let session = self.sessions.get_mut(&id).ok_or(MediaError::NoOffer)?;
        if session.pending.as_ref().is_none_or(|o| o.from == from) {
            return Err(MediaError::NoOffer);
        }
        let answer = Sdp::parse(sdp)?;
        session.answer(&*self.backend, from, answer, now)
    }

    /// The other leg refused the latest offer from `from` (a final non-2xx to the re-INVITE or
    /// UPDATE that carried it, whether the peer sent it or the SBC made it: 408, 503, 487 after a
    /// CANCEL): the session is put back exactly as it was before that offer (RFC 3264 §8, RFC 3261
    /// §14.1): what each side said, the security and keys, the offer pending before (already
    /// answered, or none); the relay gets back the old configuration of both sides of every pair
    /// (only where it differs from what it has now, through [`RelayBackend::restore`], so an
    /// unchanged DTLS association or SRTP context is kept and a replaced one comes back); pairs
    /// the offer opened are closed; pairs it disabled, still open, carry their stream again.
    ///
    /// Returns whether anything was undone: `false` (a no-op) when the pending offer is not from
    /// `from` (glare: the other side's offer stays), has been answered, or the session is
    /// unknown. Do not call it for an offerless re-INVITE: the offer was in its 2xx. After a
    /// refused initial offer the call ends and [`MediaPlane::release`] frees everything.
    pub fn offer_refused(&mut self, id: MediaSessionId, from: LegSide, now: Instant) -> bool {
        let Some(session) = self.sessions.get_mut(&id) else { return false };
        session.rollback(&*self.backend, from, now)
    }

    /// Why the call's media failed (DTLS fingerprint mismatch or handshake failure, ICE consent
    /// lost), as the relay reports it for any of its pairs; `None` while media is fine or for an
    /// unknown session. The call should then end with this reason.
    pub fn failure(&self, id: MediaSessionId) -> Option<MediaFailure> {
        let session = self.sessions.get(&id)?;
        session.streams.iter().flatten().find_map(|p| self.backend.stats(p.ports.id)?.failure)
    }

    /// The call's INFO leg when it interworks DTMF (one leg [`DtmfMode::Info`], the other
    /// [`DtmfMode::Rfc4733`]); `None` otherwise or for an unknown session.
    pub fn dtmf_info_leg(&self, id: MediaSessionId) -> Option<LegSide> {
        self.sessions.get(&id)?.info_leg()
    }

    /// Plays a digit received by SIP INFO toward `toward`'s peer as RFC 4733 events, on the
    /// call's first audio stream whose `toward` side negotiated telephone-event. `false` when
    /// there is none (the peer cannot receive events; the digit is not played).
    pub fn send_dtmf(&self, id: MediaSessionId, toward: LegSide, event: DtmfEvent) -> bool {
        let Some(session) = self.sessions.get(&id) else { return false };
        let pair = session.streams.iter().flatten().find(|p| {
            p.audio
                && p.configured[idx(toward)].as_ref().is_some_and(|r| r.telephone_events.is_some())
        });
        match pair {
            Some(p) => {
                self.backend.send_dtmf(p.ports.id, toward, event);
                true
            }
            None => false,
        }
    }

    /// The next key press the relay detected in the RFC 4733 events of an interworking call,
    /// with the leg whose peer sent it; `None` when there is none.
    pub fn poll_dtmf(&self, id: MediaSessionId) -> Option<(LegSide, DtmfEvent)> {
        let session = self.sessions.get(&id)?;
        session.all_pairs().find_map(|p| self.backend.poll_dtmf(p.ports.id))
    }

    /// Whether a leg of the call runs DTLS or ICE, whose failures [`MediaPlane::failure`]
    /// reports (the caller then watches for them).
    pub fn can_fail(&self, id: MediaSessionId) -> bool {
        self.sessions
            .get(&id)
            .is_some_and(|s| s.sec.iter().any(|x| matches!(x.wire, Wire::Dtls(_))))
    }

    /// When the call's media counts as dead: the later of the last packet (any stream, either
    /// direction) and the last offer or answer, plus the smaller inactivity timeout of the two
    /// legs. `None` when no leg has a timeout, the call has no relay pair, or no stream forwards
    /// in either direction (held or inactive on both sides: silence is expected then).
    pub fn inactivity_deadline(&self, id: MediaSessionId) -> Option<Instant> {
        let session = self.sessions.get(&id)?;
        let timeout = session.legs.iter().filter_map(|l| l.inactivity_timeout).min()?;
        let mut pairs = session.all_pairs().peekable();
        pairs.peek()?;
        let forwarding =
            session.all_pairs().any(|p| p.configured.iter().flatten().any(|r| r.forward));
        if !forwarding {
            return None;
        }
        let last_packet = pairs
            .filter_map(|p| self.backend.stats(p.ports.id))
            .filter_map(|s| s.last_packet)
            .max();
        let since = last_packet.max(session.last_change)?;
        since.checked_add(timeout)
    }

    /// Per leg: the negotiated codec and the figures of what that leg's peer sent.
    pub fn summary(&self, id: MediaSessionId) -> Option<MediaSummary> {
        let session = self.sessions.get(&id)?;
        let mut received = session.closed;
        for pair in session.all_pairs() {
            if let Some(stats) = self.backend.stats(pair.ports.id) {
                add_stats(&mut received[0], &stats.from_a);
                add_stats(&mut received[1], &stats.from_b);
            }
        }
        Some(session.summary(received))
    }

    /// Sets (or removes) the capture tap of a call: on its pairs now and on every pair it opens
    /// later (a stream added by a re-INVITE). No-op for an unknown session.
    pub fn tap(&mut self, id: MediaSessionId, tap: Option<Arc<dyn PacketTap>>) {
        let Some(session) = self.sessions.get_mut(&id) else { return };
        for pair in session.all_pairs() {
            self.backend.tap(pair.ports.id, tap.clone());
        }
        session.tap = tap;
    }

    /// The call ended: closes all its pairs (their ports go back to the range) and returns the
    /// final figures. `None` for an unknown session.
    pub fn release(&mut self, id: MediaSessionId) -> Option<MediaSummary> {
        let mut session = self.sessions.remove(&id)?;
        let retiring = session.pending.as_mut().and_then(|o| o.rollback.take());
        let retiring = retiring.into_iter().flat_map(|r| r.retiring);
        for pair in std::mem::take(&mut session.streams).into_iter().flatten().chain(retiring) {
            session.close_pair(&*self.backend, pair);
        }
        Some(session.summary(session.closed))
    }

    /// Number of live sessions (for metrics and leak tests).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// One call's media.
#[derive(Debug)]
struct Session {
    /// Profiles, indexed by [`idx`].
    legs: [LegMedia; 2],
    /// How many times each side's profile was set (a new peer each time).
    generation: [u64; 2],
    /// The SBC's `o=` toward each leg.
    origins: [OriginState; 2],
    /// One per m-line; `None` for a disabled stream.
    streams: Vec<Option<Pair>>,
    /// The latest SDP each side sent (offer or answer), as received.
    current: [Option<Sdp>; 2],
    /// The latest offer; kept after it is answered, for a repeated answer (183, then 200).
    pending: Option<Offer>,
    /// Negotiated codec per leg.
    codecs: [Option<String>; 2],
    /// The last successful offer or answer.
    last_change: Option<Instant>,
    /// Figures of pairs already closed (streams disabled mid-call), per side received from.
    closed: [DirectionStats; 2],
    /// Capture tap given to every pair of the call.
    tap: Option<Arc<dyn PacketTap>>,
    /// Media security per side, indexed by [`idx`].
    sec: [SideSecurity; 2],
    /// The m-line that carries the secured (and, toward WebRTC, BUNDLEd) audio stream.
    secured: Option<usize>,
}

/// An offer in flight: as the offerer sent it, and as the SBC sent it on.
#[derive(Debug)]
struct Offer {
    from: LegSide,
    received: Sdp,
    sent: Sdp,
    /// Per m-line: the offerer's side of a transcoded stream.
    transcode: Vec<Option<TranscodePlan>>,
    /// The session before this offer, until the offer is answered, superseded or refused.
    rollback: Option<Box<Rollback>>,
}

/// What an unanswered offer changed, to put it back if the other leg refuses it (RFC 3264 §8).
/// `origins` are not kept: an `o=` version that went up toward the answerer stays up (the next
/// offer differs from the refused one anyway), and `last_change` is the refusal's time.
#[derive(Debug)]
struct Rollback {
    current: [Option<Sdp>; 2],
    sec: [SideSecurity; 2],
    secured: Option<usize>,
    codecs: [Option<String>; 2],
    /// The offer before this one (answered, or superseded unanswered), without its rollback:
    /// only the latest offer can be refused, and a chain would grow with every re-INVITE.
    pending: Option<Box<Offer>>,
    /// Per m-line before the offer: the pair there and what the relay had on each side.
    streams: Vec<Option<SavedPair>>,
    /// Pairs of the streams the offer disables: open and configured as before until the answer
    /// closes them, or the refusal puts them back with the ports the peers know.
    retiring: Vec<Pair>,
}

/// A pair as it was before an offer.
#[derive(Debug)]
struct SavedPair {
    id: PairId,
    audio: bool,
    configured: [Option<RemoteSpec>; 2],
}

/// One stream's relay pair.
#[derive(Debug)]
struct Pair {
    ports: PairPorts,
    spec: PairSpec,
    audio: bool,
    /// What each side was last configured with (configure only on change, except for the side
    /// whose SDP just arrived).
    configured: [Option<RemoteSpec>; 2],
}

impl Pair {
    fn port(&self, side: LegSide) -> u16 {
        match side {
            LegSide::A => self.ports.a_rtp,
            LegSide::B => self.ports.b_rtp,
        }
    }
}

/// The SBC's `o=` toward one leg (RFC 3264 §8): a fixed session id, and a version that goes up
/// by one exactly when the description sent on that leg differs from the previous one.
#[derive(Debug)]
struct OriginState {
    session_id: u64,
    version: u64,
    last: Option<Sdp>,
}

impl OriginState {
    fn new(seed: u64, id: MediaSessionId, side: LegSide, generation: u64) -> OriginState {
        let input = seed
            ^ id.0.rotate_left(21)
            ^ generation.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (idx(side) as u64 + 1);
        // Below 2^62: some parsers read the id as a signed 64-bit number.
        let session_id = splitmix64(input) >> 2;
        OriginState { session_id, version: 1, last: None }
    }

    fn stamp(&mut self, sdp: &mut Sdp, advertise: IpAddr) {
        let origin = |version: u64| Origin {
            username: "-".to_owned(),
            session_id: self.session_id.to_string(),
            session_version: version.to_string(),
            net_type: "IN".to_owned(),
            addr_type: addr_type(advertise).to_owned(),
            address: advertise.to_string(),
        };
        sdp.origin = origin(self.version);
        if self.last.as_ref().is_some_and(|last| last != sdp) {
            self.version += 1;
            sdp.origin = origin(self.version);
        }
        self.last = Some(sdp.clone());
    }
}

impl Session {
    fn new(seed: u64, id: MediaSessionId) -> Session {
        Session {
            legs: [LegMedia::default(), LegMedia::default()],
            generation: [0, 0],
            origins: [LegSide::A, LegSide::B].map(|side| OriginState::new(seed, id, side, 0)),
            streams: Vec::new(),
            current: [None, None],
            pending: None,
            codecs: [None, None],
            last_change: None,
            closed: [DirectionStats::default(); 2],
            tap: None,
            sec: [SideSecurity::default(), SideSecurity::default()],
            secured: None,
        }
    }

    fn offer(
        &mut self,
        backend: &dyn RelayBackend,
        from: LegSide,
        received: Sdp,
        now: Instant,
        rng: &mut StdRng,
    ) -> Result<Bytes, MediaError> {
        let to = from.other();
        let prepared = prepare_offer_transcoding(
            &received,
            &self.legs[idx(from)].codecs,
            &self.legs[idx(to)].codecs,
        )?;
        let transcode = prepared.transcode;
        let mut sent = prepared.sdp;
        let security = self.offer_security(backend, from, &received, &mut sent, rng)?;
        let spec = PairSpec { local_a: self.legs[0].bind, local_b: self.legs[1].bind };

        // Open what is missing first; only when all of it worked does the session change.
        let reusable =
            |i: usize| self.streams.get(i).and_then(Option::as_ref).is_some_and(|p| p.spec == spec);
        let mut opened: Vec<(usize, PairPorts)> = Vec::new();
        for (i, m) in sent.media.iter().enumerate() {
            if m.port == 0 || reusable(i) {
                continue;
            }
            match backend.open(spec) {
                Ok(ports) => {
                    if let Some(tap) = &self.tap {
                        backend.tap(ports.id, Some(Arc::clone(tap)));
                    }
                    opened.push((i, ports))
                }
                Err(e) => {
                    for (_, ports) in opened {
                        backend.close(ports.id);
                    }
                    return Err(e.into());
                }
            }
        }

        // The session as it is, for a refusal of this offer. An earlier offer still unanswered
        // is superseded: the streams it disabled are gone in this offer too.
        let previous = self.pending.take().map(|mut offer| {
            if let Some(rollback) = offer.rollback.take() {
                for pair in rollback.retiring {
                    self.close_pair(backend, pair);
                }
            }
            Box::new(offer)
        });
        let saved = self
            .streams
            .iter()
            .map(|s| {
                s.as_ref().map(|p| SavedPair {
                    id: p.ports.id,
                    audio: p.audio,
                    configured: p.configured.clone(),
                })
            })
            .collect();
        let mut rollback = Rollback {
            current: self.current.clone(),
            sec: self.sec.clone(),
            secured: self.secured,
            codecs: self.codecs.clone(),
            pending: previous,
            streams: saved,
            retiring: Vec::new(),
        };

        let mut streams: Vec<Option<Pair>> = sent.media.iter().map(|_| None).collect();
        for (i, old) in std::mem::take(&mut self.streams).into_iter().enumerate() {
            let Some(pair) = old else { continue };
            let enabled = sent.media.get(i).is_some_and(|m| m.port != 0);
            match streams.get_mut(i) {
                Some(slot) if enabled && pair.spec == spec => {
                    let audio = sent.media.get(i).is_some_and(|m| m.is_audio());
                    *slot = Some(Pair { audio, ..pair });
                }
                // Disabled: closed by the answer (or back after a refusal), not before.
                _ if pair.spec == spec => rollback.retiring.push(pair),
                // New bind addresses come only with a new peer on a leg (`set_leg`, failover),
                // whose old session nobody can return to: closed at once.
                _ => self.close_pair(backend, pair),
            }
        }
        for (i, ports) in opened {
            let audio = sent.media.get(i).is_some_and(|m| m.is_audio());
            if let Some(slot) = streams.get_mut(i) {
                *slot = Some(Pair { ports, spec, audio, configured: [None, None] });
            }
        }
        self.streams = streams;

        let ports: Vec<Option<u16>> =
            self.streams.iter().map(|s| s.as_ref().map(|p| p.port(to))).collect();
        let advertise = self.legs[idx(to)].advertise;
        // An offer proposes RTCP on RTP + 1 even when offering rtcp-mux (RFC 5761 §5.1.1: the
        // fallback if the answerer does not multiplex).
        localize(&mut sent, advertise, &ports, &[]);
        self.write_offer_security(&mut sent, &received, security, to);
        self.offer_dtmf(&mut sent, to);
        self.origins[idx(to)].stamp(&mut sent, advertise);

        // The offerer's side now: where it receives, what it sends. Its payload type map and
        // clock rate stay those of the last answer until the next one (RFC 3264 §5.1: numbers keep
        // their meaning for the whole session).
        let mux: Vec<bool> = received.media.iter().map(has_rtcp_mux).collect();
        self.current[idx(from)] = Some(received.clone());
        for i in 0..self.streams.len() {
            let (pt_map, clock, transcoding) =
                match self.pair(i).and_then(|p| p.configured[idx(from)].as_ref()) {
                    Some(old) => (old.pt_map, old.clock_rate, old.transcode.clone()),
                    None => (
                        RemoteSpec::IDENTITY_PT_MAP,
                        match transcode.get(i).and_then(Option::as_ref) {
                            Some(plan) => plan.codec.1.clock_rate,
                            None => sent.media.get(i).map_or(8000, clock_rate),
                        },
                        None,
                    ),
                };
            let mut offerer = self.remote_spec(i, from, pt_map, get(&mux, i), clock);
            // Like the payload type map, transcoding stays as the last answer set it.
            offerer.transcode = transcoding;
            self.configure(backend, i, from, offerer, true);
            // The other side's forwarding follows what the offerer now accepts (a hold stops
            // it at once, not only when the answer comes).
            let other = self.pair(i).and_then(|p| p.configured[idx(to)].clone());
            if let Some(old) = other.filter(|_| self.current[idx(to)].is_some()) {
                let mut spec = self.remote_spec(i, to, old.pt_map, old.rtcp_mux, old.clock_rate);
                spec.transcode = old.transcode;
                self.configure(backend, i, to, spec, false);
            }
        }
        self.last_change = Some(now);
        let body = sent.to_bytes();
        let rollback = Some(Box::new(rollback));
        self.pending = Some(Offer { from, received, sent, transcode, rollback });
        Ok(body)
    }

    fn answer(
        &mut self,
        backend: &dyn RelayBackend,
        from: LegSide,
        answer: Sdp,
        now: Instant,
    ) -> Result<Bytes, MediaError> {
        let Some(offer) = self.pending.as_ref().filter(|o| o.from != from) else {
            return Err(MediaError::NoOffer);
        };
        let offerer = offer.from;
        let (prepared, transcoded) =
            prepare_answer_transcoding(&answer, &offer.sent, &offer.received, &offer.transcode)?;
        let accepted = self.secured.filter(|i| answer.media.get(*i).is_some_and(|m| m.port != 0));
        let answered = match accepted {
            Some(i) => self.sec[idx(from)].for_answer(&answer, i, self.legs[idx(from)].profile)?,
            None => self.sec[idx(from)].clone(),
        };
        let offerer_mux: Vec<bool> = offer.received.media.iter().map(has_rtcp_mux).collect();
        let mut out = prepared.sdp;

        // Answered: the offer is the session now, nothing to go back to (a second answer to it,
        // a 200 after a 183, finds no rollback).
        if let Some(rollback) = self.pending.as_mut().and_then(|o| o.rollback.take()) {
            for pair in rollback.retiring {
                self.close_pair(backend, pair);
            }
        }
        for (i, m) in out.media.iter().enumerate() {
            if m.port == 0
                && let Some(pair) = self.streams.get_mut(i).and_then(Option::take)
            {
                self.close_pair(backend, pair);
            }
        }
        let ports: Vec<Option<u16>> =
            self.streams.iter().map(|s| s.as_ref().map(|p| p.port(offerer))).collect();
        let advertise = self.legs[idx(offerer)].advertise;
        localize(&mut out, advertise, &ports, &offerer_mux);
        self.write_answer_security(&mut out, &answer, offerer, backend.dtls_fingerprint());
        self.answer_dtmf(&mut out, offerer);
        self.origins[idx(offerer)].stamp(&mut out, advertise);

        self.sec[idx(from)] = answered;
        self.current[idx(from)] = Some(answer.clone());
        for (i, maps) in prepared.pt_maps.iter().enumerate() {
            if self.pair(i).is_none() {
                continue;
            }
            // The answer's first codec is the one both ends start with.
            let clock = out.media.get(i).map_or(8000, clock_rate);
            let transcoding = transcoded.get(i).cloned().flatten();
            // Transcoded, each side has its own codec and clock.
            let (answerer_clock, offerer_clock) = match &transcoding {
                Some(t) => (t.from_answerer.from.clock_rate, t.from_offerer.from.clock_rate),
                None => (clock, clock),
            };
            let (from_answerer, from_offerer) = match transcoding {
                Some(TranscodePair { from_answerer, from_offerer }) => {
                    (Some(from_answerer), Some(from_offerer))
                }
                None => (None, None),
            };
            let mux = answer.media.get(i).is_some_and(has_rtcp_mux);
            let mut answerer = self.remote_spec(i, from, maps.from_answerer, mux, answerer_clock);
            answerer.transcode = from_answerer;
            self.configure(backend, i, from, answerer, true);
            let mut offerer_spec = self.remote_spec(
                i,
                offerer,
                maps.from_offerer,
                get(&offerer_mux, i),
                offerer_clock,
            );
            offerer_spec.transcode = from_offerer;
            self.configure(backend, i, offerer, offerer_spec, false);
        }

        let audio = self
            .streams
            .iter()
            .zip(&out.media)
            .find_map(|(s, m)| s.as_ref().filter(|p| p.audio).and_then(|_| main_codec(m)));
        if let Some(codec) = audio {
            self.codecs = [Some(codec.name.clone()), Some(codec.name)];
        }
        // A transcoded call has a codec per leg: the answerer's from its own answer.
        let answerer_codec = self.streams.iter().enumerate().find_map(|(i, s)| {
            s.as_ref().filter(|p| p.audio)?;
            transcoded.get(i)?.as_ref().map(|t| t.from_answerer.from.name.clone())
        });
        if let Some(name) = answerer_codec {
            self.codecs[idx(from)] = Some(name);
        }
        self.last_change = Some(now);
        Ok(out.to_bytes())
    }

    /// See [`MediaPlane::offer_refused`].
    fn rollback(&mut self, backend: &dyn RelayBackend, from: LegSide, now: Instant) -> bool {
        let Some(offer) = self.pending.take_if(|o| o.from == from && o.rollback.is_some()) else {
            return false;
        };
        let Some(rollback) = offer.rollback else { return false };
        let Rollback { current, sec, secured, codecs, pending, streams: saved, retiring } =
            *rollback;
        let mut open: Vec<Pair> =
            std::mem::take(&mut self.streams).into_iter().flatten().chain(retiring).collect();
        let mut streams = Vec::with_capacity(saved.len());
        for saved in saved {
            // A pair missing from `open` was closed for new bind addresses: it cannot come back.
            let pos = saved.as_ref().and_then(|s| open.iter().position(|p| p.ports.id == s.id));
            let (Some(saved), Some(pos)) = (saved, pos) else {
                streams.push(None);
                continue;
            };
            let mut pair = open.swap_remove(pos);
            pair.audio = saved.audio;
            for (side, old) in [LegSide::A, LegSide::B].into_iter().zip(saved.configured) {
                let slot = &mut pair.configured[idx(side)];
                if *slot == old {
                    continue;
                }
                match &old {
                    Some(spec) => backend.restore(pair.ports.id, side, spec),
                    None => {
                        // Never configured before the offer: the relay cannot unlearn the peer,
                        // so it stops forwarding from it, as for a forgotten peer (`set_leg`).
                        let latch =
                            if self.legs[idx(side)].nat { Latch::Nat } else { Latch::Strict };
                        let forget = RemoteSpec { forward: false, latch, ..RemoteSpec::default() };
                        backend.configure(pair.ports.id, side, &forget);
                    }
                }
                *slot = old;
            }
            streams.push(Some(pair));
        }
        // What is left was opened by the refused offer.
        for pair in open {
            self.close_pair(backend, pair);
        }
        self.streams = streams;
        self.current = current;
        self.sec = sec;
        self.secured = secured;
        self.codecs = codecs;
        self.pending = pending.map(|offer| *offer);
        self.last_change = Some(now);
        true
    }

    /// The pairs of the streams, and those an unanswered offer disabled (still open until its
    /// answer): all that carries media and holds ports.
    fn all_pairs(&self) -> impl Iterator<Item = &Pair> {
        let rollback = self.pending.as_ref().and_then(|o| o.rollback.as_deref());
        self.streams.iter().flatten().chain(rollback.into_iter().flat_map(|r| &r.retiring))
    }

    /// The INFO leg of an interworking call (see [`MediaPlane::dtmf_info_leg`]).
    fn info_leg(&self) -> Option<LegSide> {
        match (self.legs[0].dtmf, self.legs[1].dtmf) {
            (DtmfMode::Info, DtmfMode::Rfc4733) => Some(LegSide::A),
            (DtmfMode::Rfc4733, DtmfMode::Info) => Some(LegSide::B),
            _ => None,
        }
    }

    /// DTMF interworking in an offer the SBC sends to `to`: an INFO leg is offered no
    /// telephone-event; the 4733 leg is offered telephone-event even when the INFO leg's offer
    /// had none, so that its peer can send key presses.
    fn offer_dtmf(&self, sent: &mut Sdp, to: LegSide) {
        let Some(info) = self.info_leg() else { return };
        for m in sent.media.iter_mut().filter(|m| m.is_audio() && m.is_rtp() && m.port != 0) {
            if info == to {
                strip_telephone_events(m);
            } else {
                add_telephone_event(m);
            }
        }
    }

    /// DTMF interworking in an answer the SBC sends to `offerer`: an INFO offerer gets no
    /// telephone-event; a 4733 offerer gets back the telephone-event it offered, which the INFO
    /// answerer could not accept (it was never offered it), so that it sends key presses.
    fn answer_dtmf(&self, out: &mut Sdp, offerer: LegSide) {
        let Some(info) = self.info_leg() else { return };
        let Some(offer) = self.pending.as_ref() else { return };
        for (i, m) in out.media.iter_mut().enumerate() {
            if !(m.is_audio() && m.is_rtp() && m.port != 0) {
                continue;
            }
            if info == offerer {
                strip_telephone_events(m);
                continue;
            }
            let Some(offered) = offer.received.media.get(i) else { continue };
            if telephone_event(m).is_some() {
                continue;
            }
            if let Some((pt, rate)) = telephone_event(offered) {
                m.formats.push(pt.to_string());
                m.attributes.push(Attribute::new("rtpmap", format!("{pt} telephone-event/{rate}")));
                m.attributes.push(Attribute::new("fmtp", format!("{pt} 0-15")));
            }
        }
    }

    /// The telephone events of `side` on stream `i` when it is the 4733 leg of an interworking
    /// call and both its peer's SDP and the SBC's toward it have them.
    fn telephone_events(&self, i: usize, side: LegSide) -> Option<TelephoneEvents> {
        if self.info_leg()? != side.other() {
            return None;
        }
        let theirs = self.current[idx(side)].as_ref()?.media.get(i)?;
        let ours = self.origins[idx(side)].last.as_ref()?.media.get(i)?;
        let (to_peer, clock_rate) = telephone_event(theirs)?;
        let (from_peer, _) = telephone_event(ours)?;
        Some(TelephoneEvents { from_peer, to_peer, clock_rate })
    }

    fn pair(&self, i: usize) -> Option<&Pair> {
        self.streams.get(i).and_then(Option::as_ref)
    }

    /// What the relay must know about `side`'s peer on stream `i`, from the SDP both sides sent
    /// last: packets from `side` are forwarded iff it sends and the other side receives.
    fn remote_spec(
        &self,
        i: usize,
        side: LegSide,
        pt_map: [u8; 128],
        rtcp_mux: bool,
        clock_rate: u32,
    ) -> RemoteSpec {
        let own = self.current[idx(side)].as_ref();
        let other = self.current[idx(side.other())].as_ref();
        let (mut rtp, mut rtcp) = own.map_or((None, None), |sdp| remote_addresses(sdp, i));
        let mut rtcp_mux = rtcp_mux;
        let security = match self.secured {
            Some(s) if s == i => self.sec[idx(side)].wire.security(),
            _ => Security::Plain,
        };
        if let Security::Dtls(dtls) = &security {
            // ICE decides where the peer is (the relay latches on the first valid check); the
            // first host candidate is the best guess until then. WebRTC always multiplexes RTCP.
            if rtp.is_none()
                && let Some(PeerSecurity::Dtls(peer)) = own.map(|sdp| peer_security(sdp, i))
            {
                rtp = peer.candidate;
            }
            if dtls.ice.is_some() {
                rtcp_mux = true;
                rtcp = rtp;
            }
        }
        let sends = own.is_some_and(|sdp| effective_direction(sdp, i).sends());
        // Unknown until the other side speaks: forward, and the relay drops what has nowhere to go.
        let other_receives = other.is_none_or(|sdp| effective_direction(sdp, i).receives());
        RemoteSpec {
            rtp,
            rtcp,
            rtcp_mux,
            latch: if self.legs[idx(side)].nat { Latch::Nat } else { Latch::Strict },
            forward: sends && other_receives,
            clock_rate,
            pt_map,
            security,
            telephone_events: self.telephone_events(i, side),
            ..RemoteSpec::default()
        }
    }

    /// Decides the security of the offerer's side (validated against its profile) and prepares
    /// the SBC's toward the other side; limits the streams to the one secured audio line when
    /// either leg is secured or WebRTC. Changes nothing in the session: the caller commits.
    fn offer_security(
        &self,
        backend: &dyn RelayBackend,
        from: LegSide,
        received: &Sdp,
        sent: &mut Sdp,
        rng: &mut StdRng,
    ) -> Result<OfferSecurity, NegotiateError> {
        let to = from.other();
        let (leg_from, leg_to) = (&self.legs[idx(from)], &self.legs[idx(to)]);
        let fingerprint = backend.dtls_fingerprint();
        let secured = sent.media.iter().position(|m| m.port != 0 && m.is_audio() && m.is_rtp());
        let from_sec = match secured {
            Some(i) => self.sec[idx(from)].for_offer(
                received,
                i,
                leg_from.profile,
                &leg_from.srtp_suites,
                fingerprint.as_deref(),
                rng,
            )?,
            None if leg_from.profile != MediaProfile::Rtp => {
                return Err(NegotiateError::BadSdp("no audio stream"));
            }
            None => SideSecurity { wire: Wire::Plain, ..self.sec[idx(from)].clone() },
        };
        if leg_to.profile == MediaProfile::Webrtc && fingerprint.is_none() {
            return Err(NegotiateError::BadSdp("DTLS-SRTP not available"));
        }
        let restrict = from_sec.wire.is_secure()
            || leg_from.profile != MediaProfile::Rtp
            || leg_to.profile != MediaProfile::Rtp;
        if restrict {
            // One secured transport per leg carries one stream (the relay runs one DTLS/ICE
            // session per pair, and BUNDLE is of the audio line only): the others are refused.
            for (i, m) in sent.media.iter_mut().enumerate() {
                if Some(i) != secured {
                    m.port = 0;
                }
            }
        }
        let to_sec = self.sec[idx(to)].for_sending_offer(leg_to.profile, &leg_to.srtp_suites, rng);
        Ok(OfferSecurity { from: from_sec, to: to_sec, secured, fingerprint })
    }

    /// Writes the SBC's security toward `to` into the offer it sends (after [`localize`]) and
    /// commits the decided security of both sides.
    fn write_offer_security(
        &mut self,
        sent: &mut Sdp,
        received: &Sdp,
        security: OfferSecurity,
        to: LegSide,
    ) {
        let OfferSecurity { from: from_sec, to: to_sec, secured, fingerprint } = security;
        let profile = self.legs[idx(to)].profile;
        let advertise = self.legs[idx(to)].advertise;
        let from_webrtc =
            secured.and_then(|i| received.media.get(i)).is_some_and(|m| is_webrtc_proto(&m.proto));
        let mids = mids(received);
        let secured_mid = secured.and_then(|i| mids.get(i)).cloned();
        let directions: Vec<Direction> = (0..sent.media.len()).map(|i| sent.direction(i)).collect();
        for (i, m) in sent.media.iter_mut().enumerate().filter(|(_, m)| m.is_rtp()) {
            let candidate = SocketAddr::new(advertise, m.port);
            let mid = mids.get(i).map(String::as_str);
            match profile {
                MediaProfile::Rtp => {
                    let proto = m.proto.to_ascii_uppercase();
                    let proto = if proto.contains("SAVP") || proto.contains("TLS") {
                        "RTP/AVP".to_owned()
                    } else {
                        m.proto.clone()
                    };
                    write_media(m, &Toward::Plain { proto: &proto }, candidate);
                    if from_webrtc {
                        // The SBC offers rtcp-mux only where the offerer's own SIP leg could
                        // have asked for it: a browser's mandatory mux means nothing to a trunk.
                        m.attributes.retain(|a| !a.is("rtcp-mux"));
                    }
                }
                MediaProfile::Sdes => {
                    let lines = &to_sec.offered_crypto;
                    write_media(m, &Toward::Sdes { proto: "RTP/SAVP", lines }, candidate);
                    if from_webrtc {
                        m.attributes.retain(|a| !a.is("rtcp-mux"));
                    }
                }
                MediaProfile::Webrtc => {
                    let toward = Toward::Dtls {
                        proto: "UDP/TLS/RTP/SAVPF",
                        setup: Setup::ActPass,
                        fingerprint: fingerprint.as_deref().unwrap_or_default(),
                        ice: to_sec.local_ice.as_ref(),
                        mid: mid.map(|mid| (mid, Some(i) == secured)),
                        direction: directions.get(i).copied().unwrap_or(Direction::SendRecv),
                    };
                    write_media(m, &toward, candidate);
                    if m.port == 0 {
                        write_rejected_mid(m, mid);
                    }
                }
            }
        }
        let webrtc = profile == MediaProfile::Webrtc;
        let bundle = secured_mid.as_deref().filter(|_| webrtc);
        write_session(sent, webrtc, bundle, from_webrtc && !webrtc);
        let mut to_sec = to_sec;
        if webrtc {
            to_sec.mid = secured_mid.map(|mid| (mid, true));
        }
        self.sec[idx(to)] = to_sec;
        self.sec[idx(to.other())] = from_sec;
        self.secured = secured;
    }

    /// Writes the SBC's security toward the offerer into the answer it sends (after
    /// [`localize`]): in the offer's transport protocol, with the parameters decided when the
    /// offer arrived.
    fn write_answer_security(
        &self,
        out: &mut Sdp,
        answer: &Sdp,
        offerer: LegSide,
        fingerprint: Option<String>,
    ) {
        let Some(offer) = self.pending.as_ref() else { return };
        let sec = &self.sec[idx(offerer)];
        let advertise = self.legs[idx(offerer)].advertise;
        let mids = mids(&offer.received);
        let directions: Vec<Direction> = (0..out.media.len()).map(|i| out.direction(i)).collect();
        let answerer_webrtc = self
            .secured
            .and_then(|i| answer.media.get(i))
            .is_some_and(|m| is_webrtc_proto(&m.proto));
        let sdes_line = match &sec.wire {
            Wire::Sdes { tag, keys } => {
                vec![CryptoLine { tag: *tag, suite: keys.profile, key: keys.local.clone() }]
            }
            _ => Vec::new(),
        };
        for (i, m) in out.media.iter_mut().enumerate().filter(|(_, m)| m.is_rtp()) {
            let Some(proto) = offer.received.media.get(i).map(|m| m.proto.clone()) else {
                continue;
            };
            let candidate = SocketAddr::new(advertise, m.port);
            let secured = Some(i) == self.secured;
            let toward = match &sec.wire {
                Wire::Sdes { .. } if secured => Toward::Sdes { proto: &proto, lines: &sdes_line },
                Wire::Dtls(spec) => Toward::Dtls {
                    proto: &proto,
                    setup: match spec.role {
                        DtlsRole::Server => Setup::Passive,
                        DtlsRole::Client => Setup::Active,
                    },
                    fingerprint: fingerprint.as_deref().unwrap_or_default(),
                    ice: sec.local_ice.as_ref().filter(|_| spec.ice.is_some()),
                    mid: sec.mid.as_ref().filter(|_| secured).map(|(m, b)| (m.as_str(), *b)),
                    direction: directions.get(i).copied().unwrap_or(Direction::SendRecv),
                },
                _ => Toward::Plain { proto: &proto },
            };
            write_media(m, &toward, candidate);
            if matches!(sec.wire, Wire::Dtls(_)) && m.port == 0 {
                write_rejected_mid(m, mids.get(i).map(String::as_str));
            }
        }
        let (ice_lite, bundle) = match &sec.wire {
            Wire::Dtls(spec) => (
                spec.ice.is_some(),
                sec.mid.as_ref().filter(|(_, bundled)| *bundled).map(|(m, _)| m.as_str()),
            ),
            _ => (false, None),
        };
        let offerer_webrtc = matches!(sec.wire, Wire::Dtls(_));
        write_session(out, ice_lite, bundle, answerer_webrtc && !offerer_webrtc);
    }

    /// Configures one side of stream `i`'s pair: always when `always` (the side whose SDP just
    /// arrived: it may have moved, and the relay re-latches), else only if the spec changed.
    fn configure(
        &mut self,
        backend: &dyn RelayBackend,
        i: usize,
        side: LegSide,
        spec: RemoteSpec,
        always: bool,
    ) {
        let Some(pair) = self.streams.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let slot = &mut pair.configured[idx(side)];
        if always || slot.as_ref() != Some(&spec) {
            backend.configure(pair.ports.id, side, &spec);
            *slot = Some(spec);
        }
    }

    fn close_pair(&mut self, backend: &dyn RelayBackend, pair: Pair) {
        if let Some(stats) = backend.close(pair.ports.id) {
            add_stats(&mut self.closed[0], &stats.from_a);
            add_stats(&mut self.closed[1], &stats.from_b);
        }
    }

    fn summary(&self, received: [DirectionStats; 2]) -> MediaSummary {
        let [a, b] = received;
        MediaSummary {
            a: LegSummary { codec: self.codecs[0].clone(), received: a },
            b: LegSummary { codec: self.codecs[1].clone(), received: b },
        }
    }
}

/// What [`Session::offer_security`] decided, for [`Session::write_offer_security`].
struct OfferSecurity {
    from: SideSecurity,
    to: SideSecurity,
    secured: Option<usize>,
    fingerprint: Option<String>,
}

/// The `a=mid` of each m-line when every line has one (echoed toward a WebRTC peer), else the
/// line numbers (what the SBC names the lines when it offers BUNDLE itself).
fn mids(sdp: &Sdp) -> Vec<String> {
    let own: Option<Vec<String>> = sdp
        .media
        .iter()
        .map(|m| m.attribute("mid").and_then(|a| a.value.as_deref()).map(|v| v.trim().to_owned()))
        .collect();
    own.unwrap_or_else(|| (0..sdp.media.len()).map(|i| i.to_string()).collect())
}

fn add_stats(total: &mut DirectionStats, more: &DirectionStats) {
    total.packets = total.packets.saturating_add(more.packets);
    total.bytes = total.bytes.saturating_add(more.bytes);
    total.lost = total.lost.saturating_add(more.lost);
    total.forwarded = total.forwarded.saturating_add(more.forwarded);
    total.rtcp_packets = total.rtcp_packets.saturating_add(more.rtcp_packets);
    total.dropped = total.dropped.saturating_add(more.dropped);
    total.jitter_ms = total.jitter_ms.max(more.jitter_ms);
}

fn get(flags: &[bool], i: usize) -> bool {
    flags.get(i).copied().unwrap_or(false)
}

fn idx(side: LegSide) -> usize {
    match side {
        LegSide::A => 0,
        LegSide::B => 1,
    }
}

/// SplitMix64's finalizer: spreads seed bits over the whole id.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod dtmf_tests;
#[cfg(test)]
mod profile_tests;
#[cfg(test)]
mod tests;
