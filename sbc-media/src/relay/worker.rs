//! One media worker: an event loop that owns a set of pairs and relays their packets.
//!
//! Each worker thread owns a `mio::Poll` (epoll), the pairs placed on it in a slab, and one
//! [`Batch`] of buffers. Both sides of a pair live on the same worker, so forwarding is a
//! `sendmmsg` on a socket the thread already owns, with no cross-thread hop. Signalling threads
//! reach the worker only through its bounded command channel and its waker.
//!
//! Loop: wait for readiness; apply all pending commands (so a `configure` made before a packet
//! was sent applies to that packet); then, for each readable socket, `recvmmsg` a batch, read
//! the clock once, run the packet rules on each datagram, `sendmmsg` what is forwarded, and
//! publish the served direction's figures. A socket is read at most [`MAX_BATCHES`] times per
//! round; one that is still busy is carried to the next round (after a non-blocking poll) so a
//! flood on one port cannot starve the other calls of the worker.
//!
//! Nothing on the per-packet path allocates, locks or logs: buffers are the worker's batch,
//! state lives in the slab, figures go out through atomics. Logs are for control events only.
//!
//! Secure sides (SDES or DTLS-SRTP, see [`crate::secure`]) hook in at three points of the same
//! path: each datagram received on such a side goes through its `SecureSide` first (STUN and
//! DTLS are answered from the same socket, SRTP is unprotected in place before the packet
//! rules run), and each packet sent to such a side is protected in its batch buffer just
//! before it is queued. Their timers (DTLS retransmissions, handshake deadline, ICE consent)
//! sit in one heap per worker; the poll waits at most until the earliest. Only secure sides
//! allocate: rtc-srtp returns a fresh buffer per packet, STUN and DTLS allocate per message.
//!
//! Transcoding hook: a side whose [`RemoteSpec::transcode`] is set holds a [`Transcoder`]
//! (built on `configure`, on this thread, never on signalling). Its accepted RTP does not take
//! the batch path: [`transcode_rtp`] runs it through the transcoder and sends what comes out
//! (zero or more packets, in the worker's [`Emitted`] arena) through the other side's RTP socket.
//! RTCP of a transcoded pair is not forwarded (see `relay_batch`). Its outputs toward a secure
//! side are protected one by one in a scratch buffer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::packet::{self, Kind, Out, RtpFields, SideRules, Socket, Verdict};
use super::publish::SharedStats;
use super::sys::{BATCH, Batch};
use crate::LegSide;
use crate::backend::{DirectionStats, PacketTap, PairId, RemoteSpec, Security, Transcode};
use crate::dtmf::{DtmfEvent, EventDetector, Injector, OutStream, TelephoneEvents};
use crate::ports::Leased;
use crate::rtcp::{MAX_REPORT, Reporter};
use crate::secure::dtls::DtlsIdentity;
use crate::secure::{Received, SecureSide};
use crate::stats::RtpReceiveStats;
use crate::transcode::{Disposition, Emitted, OpusSettings, Transcoder};

/// Receive batches taken from one socket per round before the worker serves the others
/// (8 × 32 = 256 datagrams).
const MAX_BATCHES: usize = 8;

/// The RTP fixed header, which the transcoders' packets and injected events have alone.
const RTP_HEADER: usize = 12;

/// Readiness events taken per poll.
const EVENTS: usize = 1024;

/// The waker's token; socket tokens are `slot * 4 + side * 2 + socket`.
pub(crate) const WAKER: Token = Token(usize::MAX);

/// A request from a signalling thread.
pub(crate) enum Command {
    /// Take over a new pair: its sockets (A, B), already bound, and its figures.
    Open { id: PairId, sides: [Leased<UdpSocket>; 2], v6: [bool; 2], shared: Arc<SharedStats> },
    /// New remote description for one side; `restore`: the one it had before a refused offer
    /// (see [`crate::backend::RelayBackend::restore`]).
    Configure { id: PairId, side: LegSide, remote: Box<RemoteSpec>, restore: bool },
    /// Set or remove the pair's capture tap.
    Tap { id: PairId, tap: Option<Arc<dyn PacketTap>> },
    /// Close the pair, publish its final figures, then answer on `done`.
    Close { id: PairId, done: SyncSender<()> },
    /// Play a digit toward one side's peer (SIP INFO interworking).
    Dtmf { id: PairId, toward: LegSide, event: DtmfEvent },
    /// Close everything and end the thread.
    Shutdown,
}

/// One side of a pair, as the worker holds it.
struct Side {
    rules: SideRules,
    /// Counters of packets received from this side's peer; `lost` and `jitter_ms` are filled
    /// from `rx` when published.
    counters: DirectionStats,
    rx: RtpReceiveStats,
    /// SRTP/DTLS/ICE state when this side is secured; `None` on a plain side.
    secure: Option<SecureSide>,
    /// The secure state the latest change of security replaced (`None`: it was plain), kept
    /// for a refused offer to bring back: its peer never left it. One deep, since only the
    /// latest offer can be refused; boxed, as most sides never change.
    replaced: Option<Box<SecureSide>>,
    /// The deadline of `secure` that is in the worker's timer heap, if any.
    armed: Option<Instant>,
    /// The transcoder of RTP from this side's peer and the spec it was built for; `None` when
    /// the pair relays as is.
    transcoder: Option<(Transcode, Transcoder)>,
    /// The SBC's own RTCP reports toward this side's peer, on a transcoded pair (whose RTCP is
    /// not forwarded); boxed, as relayed pairs have none.
    rtcp: Option<Box<Reporter>>,
    /// SIP INFO interworking on this side (its [`RemoteSpec::telephone_events`]): the detector
    /// of the events its peer sends and the generator of those the SBC plays to it; `None`
    /// when the side relays events as any packet.
    dtmf: Option<Box<SideDtmf>>,
    /// The stream relayed toward this side's peer: the sequence shift that keeps it gapless
    /// around injected or consumed event packets (used only when either side interworks).
    out: OutStream,
    /// Local addresses of the RTP and RTCP sockets, for the headers of tapped packets.
    local: [SocketAddr; 2],
    /// Last field: the sockets close before the lease returns their ports.
    sockets: Leased<UdpSocket>,
}

/// The interworking state of one side, boxed: most calls never have one.
struct SideDtmf {
    events: TelephoneEvents,
    detector: EventDetector,
    injector: Injector,
}

impl Side {
    fn socket(&self, which: Socket) -> &UdpSocket {
        match which {
            Socket::Rtp => &self.sockets.rtp,
            Socket::Rtcp => &self.sockets.rtcp,
        }
    }

    fn local(&self, which: Socket) -> SocketAddr {
        self.local[usize::from(which == Socket::Rtcp)]
    }

    fn figures(&self) -> DirectionStats {
        let clock_rate = self.rules.remote().map_or(0, |r| r.clock_rate);
        DirectionStats {
            lost: self.rx.lost(),
            jitter_ms: self.rx.jitter_ms(clock_rate),
            ..self.counters
        }
    }
}

struct Pair {
    id: PairId,
    /// Indexed by side: 0 = A, 1 = B.
    sides: [Side; 2],
    last_packet: Option<Instant>,
    shared: Arc<SharedStats>,
    /// Per socket (token order): already on the carry list for the next round.
    carried: [bool; 4],
    /// Capture tap: only tapped pairs copy packets (see `relay_batch`).
    tap: Option<Arc<dyn PacketTap>>,
}

impl Pair {
    fn publish(&self, side: usize, epoch: Instant) {
        self.shared.publish(side, &self.sides[side].figures(), self.last_packet, epoch);
        if let Some(f) = self.sides[side].secure.as_ref().and_then(SecureSide::failure) {
            self.shared.publish_failure(f);
        }
    }
}

/// A secure side's deadline in the worker's heap: (when, slot, side, pair id). Entries are
/// never removed early: a popped entry whose pair is gone or whose side is armed for another
/// instant is stale and skipped (lazy deletion, as STYLE.md §2 asks).
type Deadline = Reverse<(Instant, usize, usize, u64)>;

/// The worker's state; lives on its thread.
pub(crate) struct Worker {
    poll: Poll,
    events: Events,
    commands: Receiver<Command>,
    /// Slab of pairs; a token's slot indexes it.
    pairs: Vec<Option<Pair>>,
    free: Vec<usize>,
    by_id: HashMap<PairId, usize>,
    batch: Batch,
    /// Sockets to serve again next round, and the list being built for the round after. Their
    /// capacity covers every socket, so pushing never allocates.
    carry: Vec<Token>,
    next_carry: Vec<Token>,
    /// The relay's time origin for published instants and RTP arrival clocks.
    epoch: Instant,
    /// The SBC's DTLS certificate, shared by all workers.
    identity: Arc<DtlsIdentity>,
    /// Deadlines of the secure sides on this worker.
    timers: BinaryHeap<Deadline>,
    /// Encoder settings of the transcoders this worker builds.
    opus: OpusSettings,
    /// Output arena of the transcoders, reused for every packet.
    emitted: Emitted,
    /// Keys the SSRCs and initial sequence numbers of transcoded streams (RFC 3550 §8.1 wants
    /// them random).
    random: RandomState,
    /// Transcoders built so far, mixed into their seeds.
    built: u64,
}

fn token(slot: usize, side: usize, which: Socket) -> Token {
    Token(slot * 4 + side * 2 + usize::from(which == Socket::Rtcp))
}

fn untoken(t: Token) -> (usize, usize, Socket) {
    let which = if t.0 & 1 == 0 { Socket::Rtp } else { Socket::Rtcp };
    (t.0 / 4, (t.0 / 2) & 1, which)
}

impl Worker {
    pub(crate) fn new(
        poll: Poll,
        commands: Receiver<Command>,
        epoch: Instant,
        identity: Arc<DtlsIdentity>,
        opus: OpusSettings,
    ) -> Worker {
        Worker {
            poll,
            events: Events::with_capacity(EVENTS),
            commands,
            pairs: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            batch: Batch::new(),
            carry: Vec::new(),
            next_carry: Vec::new(),
            epoch,
            identity,
            timers: BinaryHeap::new(),
            opus,
            emitted: Emitted::new(),
            random: RandomState::new(),
            built: 0,
        }
    }

    /// Runs until a `Shutdown` command or until every sender is gone.
    pub(crate) fn run(mut self) {
        loop {
            let timeout = if self.carry.is_empty() {
                // Wake for the earliest secure deadline (a stale one only costs a wake-up).
                self.timers.peek().map(|Reverse((at, ..))| {
                    at.saturating_duration_since(Instant::now())
                        // Round up: epoll counts milliseconds, and waking early would spin.
                        + Duration::from_micros(999)
                })
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "media worker: poll failed, stopping");
                return;
            }
            if !self.apply_commands() {
                return;
            }
            // Sockets left busy by the last round first; their flags clear as they are taken.
            let mut carry = std::mem::take(&mut self.carry);
            for t in carry.drain(..) {
                let (slot, _, _) = untoken(t);
                if let Some(Some(pair)) = self.pairs.get_mut(slot) {
                    pair.carried[t.0 & 3] = false;
                }
                self.serve(t);
            }
            // Hand the drained (empty, still allocated) list back for reuse.
            self.carry = carry;
            // The event list is moved out while `serve` borrows `self`; an empty `Events` does
            // not allocate.
            let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            for e in events.iter() {
                if e.token() != WAKER {
                    self.serve(e.token());
                }
            }
            self.events = events;
            std::mem::swap(&mut self.carry, &mut self.next_carry);
            self.fire_timers();
        }
    }

    /// Serves the secure sides whose deadline has come.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, slot, side, id))) = self.timers.peek().copied() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(Some(pair)) = self.pairs.get_mut(slot) else { continue };
            if pair.id.0 != id || pair.sides[side].armed != Some(at) {
                continue;
            }
            let tap = pair.tap.as_deref();
            let (s, other) = match &mut pair.sides {
                [a, b] if side == 0 => (a, b),
                [a, b] => (b, a),
            };
            s.armed = None;
            if let Some(secure) = s.secure.as_mut() {
                secure.handle_timeout(now);
                flush_control(s, tap, SystemTime::now());
            }
            let transcoder = other.transcoder.as_mut().map(|(_, t)| t);
            inject(s, transcoder, now, tap);
            send_rtcp(s, now, tap, false);
            if let Some(dtmf) = s.dtmf.as_mut() {
                // A key press whose end packets were all lost ends here.
                dtmf.detector.handle_timeout(now, dtmf.events.clock_rate);
                let leg = if side == 0 { LegSide::A } else { LegSide::B };
                while let Some(event) = dtmf.detector.poll_event() {
                    if !pair.shared.push_dtmf(leg, event) {
                        tracing::warn!(pair = id, "media worker: DTMF queue full");
                    }
                }
            }
            pair.publish(side, self.epoch);
            arm(&mut self.timers, pair, slot, side);
        }
    }

    /// New remote description for one side of the pair in `slot`: the packet rules, and the
    /// secure state (kept when the security is unchanged, so a re-INVITE does not re-key). With
    /// `restore` (a refused offer), a security equal to the one the latest change replaced
    /// brings that secure state back: the same DTLS association and SRTP contexts (rollover
    /// counters, replay windows), which a fresh state made from the same keys would not have.
    fn configure(&mut self, slot: usize, side: usize, remote: &RemoteSpec, restore: bool) {
        let Some(Some(pair)) = self.pairs.get_mut(slot) else { return };
        let tap = pair.tap.as_deref();
        let s = &mut pair.sides[side];
        s.rules.configure(remote);
        let plain = matches!(remote.security, Security::Plain);
        let keep = s.secure.as_ref().is_some_and(|sec| sec.security() == &remote.security)
            || (plain && s.secure.is_none());
        let back = restore
            && match &s.replaced {
                Some(old) => old.security() == &remote.security,
                None => plain,
            };
        if keep {
            if let Some(sec) = s.secure.as_mut() {
                sec.set_peer(remote.rtp);
            }
        } else if back {
            // The refused state is dropped: nothing can bring it back.
            s.secure = s.replaced.take().map(|old| *old);
            if let Some(sec) = s.secure.as_mut() {
                sec.set_peer(remote.rtp);
            }
            s.armed = None;
        } else {
            let next = if plain {
                None
            } else {
                let leg = if side == 0 { LegSide::A } else { LegSide::B };
                let now = Instant::now();
                SecureSide::new(now, leg, &remote.security, &self.identity, remote.rtp)
            };
            s.replaced = std::mem::replace(&mut s.secure, next).map(Box::new);
            s.armed = None;
        }
        if let Some(path) = s.secure.as_ref().and_then(SecureSide::ice_path) {
            s.rules.set_ice_path(path);
        }
        // A DTLS client without ICE sends its ClientHello at once.
        flush_control(s, tap, SystemTime::now());
        match (remote.telephone_events, s.dtmf.as_mut()) {
            (None, _) => s.dtmf = None,
            // A re-INVITE keeps a digit that plays, with the numbers it now has.
            (Some(events), Some(d)) => d.events = events,
            (Some(events), None) => {
                s.dtmf = Some(Box::new(SideDtmf {
                    events,
                    detector: EventDetector::new(),
                    injector: Injector::new(),
                }))
            }
        }
        let unchanged = match (&s.transcoder, &remote.transcode) {
            (Some((old, _)), Some(new)) => old == new,
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            if let Some((_, old)) = &s.transcoder {
                log_transcoder(pair.id, side, old);
            }
            s.transcoder = remote.transcode.as_ref().and_then(|spec| {
                self.built += 1;
                let seed = self.random.hash_one((pair.id.0, side, self.built));
                match Transcoder::new(spec, self.opus, (seed >> 32) as u32, seed) {
                    Ok(t) => Some((spec.clone(), t)),
                    Err(e) => {
                        // The plane only asks for codecs the transcoder has; the side then relays
                        // nothing rather than the wrong codec.
                        tracing::error!(pair = pair.id.0, error = %e, "media worker: no transcoder");
                        None
                    }
                }
            });
        }
        // A transcoded pair's RTCP is the SBC's own, toward both peers.
        let transcoded = pair.sides.iter().any(|s| s.transcoder.is_some());
        for (i, s) in pair.sides.iter_mut().enumerate() {
            if !transcoded {
                s.rtcp = None;
            } else if s.rtcp.is_none() {
                let seed = self.random.hash_one((pair.id.0, i, "rtcp"));
                s.rtcp = Some(Box::new(Reporter::new(Instant::now(), seed)));
            }
        }
        pair.publish(side, self.epoch);
        arm(&mut self.timers, pair, slot, side);
        arm(&mut self.timers, pair, slot, 1 - side);
    }

    /// Queues a digit to play toward side `side` of the pair in `slot`, and arms its timer.
    fn queue_dtmf(&mut self, slot: usize, side: usize, event: DtmfEvent) {
        let Some(Some(pair)) = self.pairs.get_mut(slot) else { return };
        let id = pair.id.0;
        let Some(dtmf) = pair.sides[side].dtmf.as_mut() else {
            tracing::warn!(pair = id, "media worker: digit toward a side without telephone-event");
            return;
        };
        if !dtmf.injector.queue(Instant::now(), event) {
            tracing::warn!(pair = id, "media worker: digit queue full, digit dropped");
            return;
        }
        arm(&mut self.timers, pair, slot, side);
    }

    /// Applies pending commands; `false` on shutdown.
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Open { id, sides, v6, shared }) => self.open(id, sides, v6, shared),
                Ok(Command::Configure { id, side, remote, restore }) => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        self.configure(slot, side_index(side), &remote, restore);
                    }
                }
                Ok(Command::Tap { id, tap }) => {
                    if let Some(pair) = self.by_id.get(&id).and_then(|&s| self.pairs[s].as_mut()) {
                        pair.tap = tap;
                    }
                }
                Ok(Command::Dtmf { id, toward, event }) => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        self.queue_dtmf(slot, side_index(toward), event);
                    }
                }
                Ok(Command::Close { id, done }) => {
                    self.close(id);
                    // The closer may have given up waiting; nothing to do then.
                    let _ = done.send(());
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    for slot in 0..self.pairs.len() {
                        if let Some(id) = self.pairs[slot].as_ref().map(|p| p.id) {
                            self.close(id);
                        }
                    }
                    return false;
                }
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn open(
        &mut self,
        id: PairId,
        sides: [Leased<UdpSocket>; 2],
        v6: [bool; 2],
        shared: Arc<SharedStats>,
    ) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.pairs.push(None);
            self.pairs.len() - 1
        });
        let [a, b] = sides;
        let side = |sockets: Leased<UdpSocket>, v6| {
            // Read once here so that a tapped packet costs no system call.
            let unknown = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
            let local = [
                sockets.rtp.local_addr().unwrap_or(unknown),
                sockets.rtcp.local_addr().unwrap_or(unknown),
            ];
            Side {
                rules: SideRules::new(v6),
                counters: DirectionStats::default(),
                rx: RtpReceiveStats::new(),
                secure: None,
                replaced: None,
                armed: None,
                transcoder: None,
                rtcp: None,
                dtmf: None,
                out: OutStream::default(),
                local,
                sockets,
            }
        };
        let mut pair = Pair {
            id,
            sides: [side(a, v6[0]), side(b, v6[1])],
            last_packet: None,
            shared,
            carried: [false; 4],
            tap: None,
        };
        if let Err(e) = self.register(&mut pair, slot) {
            // The pair is dropped here: sockets closed, ports returned. Its figures stay zero.
            tracing::error!(pair = id.0, error = %e, "media worker: cannot watch the pair");
            let _ = self.deregister(&mut pair);
            self.free.push(slot);
            return;
        }
        self.pairs[slot] = Some(pair);
        self.by_id.insert(id, slot);
        // Every socket can be on the carry list once: keep room for all of them.
        let sockets = 4 * self.pairs.len();
        self.carry.reserve(sockets.saturating_sub(self.carry.len()));
        self.next_carry.reserve(sockets.saturating_sub(self.next_carry.len()));
    }

    /// New remote description for one side; (re)builds its transcoder when the transcoding
    /// changed (an unchanged one keeps its state: the stream it sends goes on).
    fn register(&self, pair: &mut Pair, slot: usize) -> io::Result<()> {
        let registry = self.poll.registry();
        for (side, s) in pair.sides.iter_mut().enumerate() {
            registry.register(
                &mut s.sockets.rtp,
                token(slot, side, Socket::Rtp),
                Interest::READABLE,
            )?;
            registry.register(
                &mut s.sockets.rtcp,
                token(slot, side, Socket::Rtcp),
                Interest::READABLE,
            )?;
        }
        Ok(())
    }

    fn deregister(&self, pair: &mut Pair) -> io::Result<()> {
        let registry = self.poll.registry();
        for s in &mut pair.sides {
            // A socket that was never registered fails here; the others still go.
            let r1 = registry.deregister(&mut s.sockets.rtp);
            let r2 = registry.deregister(&mut s.sockets.rtcp);
            r1.and(r2)?;
        }
        Ok(())
    }

    fn close(&mut self, id: PairId) {
        let Some(slot) = self.by_id.remove(&id) else { return };
        let Some(mut pair) = self.pairs[slot].take() else { return };
        let now = Instant::now();
        for (side, s) in pair.sides.iter_mut().enumerate() {
            if let Some((_, t)) = &s.transcoder {
                log_transcoder(id, side, t);
            }
            send_rtcp(s, now, pair.tap.as_deref(), true);
        }
        pair.publish(0, self.epoch);
        pair.publish(1, self.epoch);
        let _ = self.deregister(&mut pair);
        // Forget its sockets in the carry lists: the slot may be reused.
        self.carry.retain(|t| untoken(*t).0 != slot);
        self.next_carry.retain(|t| untoken(*t).0 != slot);
        self.free.push(slot);
        // `pair` drops here: sockets close, then the leases return the ports.
    }

    /// Serves one readable socket for up to [`MAX_BATCHES`] batches.
    fn serve(&mut self, t: Token) {
        let (slot, side, which) = untoken(t);
        let Some(Some(pair)) = self.pairs.get_mut(slot) else { return };
        for _ in 0..MAX_BATCHES {
            let fd = pair.sides[side].socket(which).as_raw_fd();
            let n = match self.batch.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: drained. Other errors (a pending ICMP error surfaces once, then
                // the socket works again): leave it until the next readiness event.
                Err(_) => return,
            };
            relay_batch(pair, side, which, &mut self.batch, n, self.epoch, &mut self.emitted);
            pair.publish(side, self.epoch);
            if pair.sides[side].secure.is_some() || pair.sides[side].dtmf.is_some() {
                arm(&mut self.timers, pair, slot, side);
            }
            if n < BATCH {
                // The queue was empty before the batch filled; a datagram arriving after that
                // raises a new edge.
                return;
            }
        }
        // Still busy after MAX_BATCHES: serve it again next round, once.
        let flag = t.0 & 3;
        if !pair.carried[flag] {
            pair.carried[flag] = true;
            self.next_carry.push(t);
        }
    }
}

fn side_index(side: LegSide) -> usize {
    match side {
        LegSide::A => 0,
        LegSide::B => 1,
    }
}

/// RTP clock units elapsed since `epoch` at `rate` Hz, wrapping like an RTP timestamp.
fn rtp_clock(elapsed: Duration, rate: u32) -> u32 {
    let rate = u64::from(rate);
    let units = elapsed
        .as_secs()
        .wrapping_mul(rate)
        .wrapping_add(u64::from(elapsed.subsec_nanos()) * rate / 1_000_000_000);
    units as u32
}

/// The packet path: relays the `n` datagrams in `batch`, received on side `x`'s `which` socket.
fn relay_batch(
    pair: &mut Pair,
    x: usize,
    which: Socket,
    batch: &mut Batch,
    n: usize,
    epoch: Instant,
    emitted: &mut Emitted,
) {
    // One clock read per batch, not per packet.
    let now = Instant::now();
    // Untapped pairs (nearly all) pay one branch per packet; tapped ones a wall-clock read per
    // batch and a copy per packet inside the tap.
    let tap = pair.tap.as_deref();
    let wall = if tap.is_some() { SystemTime::now() } else { SystemTime::UNIX_EPOCH };
    let shared = &pair.shared;
    let pair_id = pair.id.0;
    let (xs, ys) = match &mut pair.sides {
        [a, b] if x == 0 => (a, b),
        [a, b] => (b, a),
    };
    // Only interworking pairs keep track of the stream they send (a branch per packet for the
    // others).
    let interwork = xs.dtmf.is_some() || ys.dtmf.is_some();
    let leg = if x == 0 { LegSide::A } else { LegSide::B };
    let clock_rate = xs.rules.remote().map_or(0, |r| r.clock_rate);
    // RTCP is not forwarded across a transcoded pair: its SSRCs, sequence numbers and timestamps
    // describe a stream the other peer never sees (the SBC sends its own), so its reports
    // would be wrong there.
    let transcoded = xs.transcoder.is_some() || ys.transcoder.is_some();
    let arrival = rtp_clock(now.saturating_duration_since(epoch), clock_rate);
    let mut accepted = false;
    for i in 0..n {
        let Some((data, src)) = batch.datagram(i) else {
            xs.counters.dropped += 1;
            continue;
        };
        if let Some(tap) = tap {
            // As received, before any rewrite; rejected datagrams too (they hit the call's
            // ports, so a capture on the wire would hold them).
            tap.packet(wall, src, xs.local(which), data);
        }
        // Hook 1, secure sides: STUN and DTLS are answered on this socket, SRTP is unprotected
        // in place; only plain RTP/RTCP goes on to the packet rules.
        let mut len = data.len();
        if let Some(secure) = xs.secure.as_mut() {
            let first = data.first().copied().unwrap_or(0);
            if first >= 128 && packet::media_source(&xs.rules, which, data, src).is_err() {
                xs.counters.dropped += 1;
                continue;
            }
            if (20..=63).contains(&first) && secure.ice_path().is_none() {
                // DTLS without ICE: the RTP source rules (strict, or the NAT latch) apply.
                match xs.rules.accepts_source(src) {
                    Ok(latch) if latch => xs.rules.latch(Kind::Rtp, src),
                    Ok(_) => {}
                    Err(_) => {
                        xs.counters.dropped += 1;
                        continue;
                    }
                }
            }
            match secure.handle(now, src, data) {
                Received::Media { len: plain, .. } => len = plain,
                Received::Control => {
                    if let Some(path) = secure.ice_path() {
                        xs.rules.set_ice_path(path);
                    }
                    flush_control(xs, tap, wall);
                    continue;
                }
                Received::Drop(_) => {
                    xs.counters.dropped += 1;
                    continue;
                }
            }
        }
        let Some(data) = data.get_mut(..len) else { continue };
        let (kind, latch, out) = match packet::inspect(&xs.rules, &ys.rules, which, data, src) {
            Verdict::Reject(_) => {
                xs.counters.dropped += 1;
                continue;
            }
            Verdict::Accept { kind, latch, out } => (kind, latch, out),
        };
        accepted = true;
        if latch {
            xs.rules.latch(kind, src);
            if let Some(secure) = xs.secure.as_mut() {
                secure.set_peer(Some(src));
            }
        }
        match kind {
            Kind::Rtp => {
                xs.counters.packets += 1;
                xs.counters.bytes += len as u64;
                if let Some(h) = RtpFields::parse(data) {
                    xs.rx.handle_rtp(h.ssrc, h.seq, h.timestamp, arrival);
                }
                // Hook 4, SIP INFO interworking: the peer's telephone events become key presses
                // for signalling and are not relayed.
                if let Some(dtmf) = xs.dtmf.as_mut()
                    && let Some((pt, timestamp, payload)) = packet::rtp_payload(data)
                    && pt == dtmf.events.from_peer
                {
                    dtmf.detector.handle(now, timestamp, payload, dtmf.events.clock_rate);
                    while let Some(event) = dtmf.detector.poll_event() {
                        if !shared.push_dtmf(leg, event) {
                            tracing::warn!(pair = pair_id, "media worker: DTMF queue full");
                        }
                    }
                    ys.out.consumed();
                    continue;
                }
                if let (Some((_, transcoder)), Ok(out)) = (xs.transcoder.as_mut(), &out) {
                    let sent = transcode_rtp(transcoder, data, *out, ys, emitted, tap, now, wall);
                    xs.counters.forwarded += sent.forwarded;
                    xs.counters.dropped += sent.dropped;
                    continue;
                }
                if out.is_ok()
                    && let Some(remote) = xs.rules.remote()
                {
                    packet::rewrite_payload_type(data, &remote.pt_map);
                }
                if interwork && out.is_ok() {
                    ys.out.relay(data, now);
                }
            }
            Kind::Rtcp => {
                xs.counters.rtcp_packets += 1;
                if transcoded {
                    // Its sender report is what the SBC's next report block answers.
                    if let Some(reporter) = xs.rtcp.as_mut() {
                        reporter.on_peer_rtcp(now, data);
                    }
                    // X's peer reports on the stream Y's transcoder sends it: its loss steers
                    // that encoder's in-band FEC.
                    if let Some((_, toward_x)) = ys.transcoder.as_mut() {
                        packet::for_each_report_block(data, |ssrc, lost| {
                            if toward_x.receiver_report(ssrc, lost) {
                                // Rare (levels with hysteresis), and what an operator asks
                                // first about a browser's call quality.
                                tracing::info!(
                                    pair = pair.id.0,
                                    loss = toward_x.expected_loss(),
                                    "media worker: Opus FEC follows the receiver's loss"
                                );
                            }
                        });
                    }
                    continue;
                }
            }
        }
        let Ok(out) = out else {
            xs.counters.dropped += 1;
            continue;
        };
        // Hook 2, secure destination: protect in the batch buffer (the packet grows by its
        // tag); nothing goes to that side before its keys exist.
        if let Some(secure) = ys.secure.as_mut() {
            match batch.buffer(i).and_then(|buf| secure.protect(kind == Kind::Rtcp, buf, len)) {
                Some(protected) => len = protected,
                None => {
                    xs.counters.dropped += 1;
                    continue;
                }
            }
        }
        if let Some(tap) = tap {
            tap.packet(wall, ys.local(out.via), out.to, sent_data(batch, i, len));
        }
        if out.via == Socket::Rtp {
            // Sent with the others of this batch by the sendmmsg below.
            if !batch.queue(i, len, out.to, tag(kind)) {
                xs.counters.dropped += 1;
            }
        } else if send_one(ys.socket(Socket::Rtcp), sent_data(batch, i, len), out.to).is_err() {
            // RTCP to a separate RTCP port: a few per second, sent on its own.
            xs.counters.dropped += 1;
        }
    }
    let counts = batch.flush(ys.socket(Socket::Rtp).as_raw_fd());
    xs.counters.forwarded += u64::from(counts.sent[tag(Kind::Rtp)]);
    xs.counters.dropped += u64::from(counts.failed[0] + counts.failed[1]);
    if accepted {
        pair.last_packet = Some(now);
    }
}

/// What a transcoder saw of its Opus input, when it had any: the bandwidths the sender coded
/// (a browser that honours the SBC's `maxplaybackrate=8000` sends narrowband, the cheapest to
/// decode), how many packets carried in-band FEC and how many losses it repaired; and toward
/// an Opus receiver that decodes FEC, how many frames carried it (its loss reports turn FEC on)
/// and the loss level the encoder ended at.
fn log_transcoder(id: PairId, side: usize, t: &Transcoder) {
    let [nb, mb, wb, swb, fb] = t.input_bandwidths();
    let (lbrr, fec_recovered) = t.input_fec();
    if nb + mb + wb + swb + fb > 0 {
        tracing::info!(
            pair = id.0,
            side,
            nb,
            mb,
            wb,
            swb,
            fb,
            lbrr,
            fec_recovered,
            "media worker: Opus packets decoded by coded bandwidth"
        );
    }
    if t.fec_receiver() {
        tracing::info!(
            pair = id.0,
            side,
            fec_frames = t.fec_frames(),
            loss = t.expected_loss(),
            "media worker: Opus frames encoded with in-band FEC"
        );
    }
}

/// Hook 3: sends what a secure side queued (STUN answers, DTLS flights) from its RTP socket,
/// the one its peer talks to (secure sides with DTLS are multiplexed).
fn flush_control(s: &mut Side, tap: Option<&dyn PacketTap>, wall: SystemTime) {
    let Some(secure) = s.secure.as_mut() else { return };
    while let Some(t) = secure.poll_transmit() {
        if let Some(tap) = tap {
            tap.packet(wall, s.local[0], t.to, &t.data);
        }
        // A full socket buffer loses the datagram; DTLS retransmits, and STUN checks repeat.
        let _ = send_one(&s.sockets.rtp, &t.data, t.to);
    }
}

/// Hook 4, SIP INFO interworking: sends the event packets of side `s`'s injector that are due
/// at `now` to its peer, in the stream the relay sends it, SRTP-protected on a secure side.
/// That stream is the relayed one ([`OutStream`]), or, when the other side's peer is
/// transcoded toward `s`, the transcoder's own (`transcoder`: its SSRC, sequence numbers and
/// timestamp). A digit toward a relayed side that was never sent a packet (no SSRC to join)
/// is dropped.
fn inject(
    s: &mut Side,
    mut transcoder: Option<&mut Transcoder>,
    now: Instant,
    tap: Option<&dyn PacketTap>,
) {
    let Some(dtmf) = s.dtmf.as_mut() else { return };
    let Ok(out) = s.rules.rtp_out() else {
        // Nowhere to send yet: the packets due now are lost, the digit goes on.
        while dtmf.injector.poll_packet(now, 0, 8000, |_, _| None).is_some() {}
        return;
    };
    let events = dtmf.events;
    let stream = &mut s.out;
    let mut buf = [0u8; 64];
    loop {
        let next = match transcoder.as_deref_mut() {
            Some(t) => {
                let ts = t.next_timestamp();
                dtmf.injector.poll_packet(now, events.to_peer, events.clock_rate, |_, _| Some(ts))
            }
            None => dtmf.injector.poll_packet(now, events.to_peer, events.clock_rate, |n, r| {
                stream.timestamp_at(n, r)
            }),
        };
        let Some(p) = next else { break };
        let written = match transcoder.as_deref_mut() {
            Some(t) => t.inject_event(&p, &mut buf),
            None => stream.inject(&p, &mut buf),
        };
        let Some(mut len) = written else { continue };
        if let (Some(reporter), Some(t)) = (s.rtcp.as_mut(), transcoder.as_deref())
            && let Some(h) = RtpFields::parse(&buf)
        {
            reporter.on_sent(
                now,
                h.ssrc,
                t.output_clock_rate(),
                h.timestamp,
                len.saturating_sub(RTP_HEADER),
            );
        }
        if let Some(secure) = s.secure.as_mut() {
            match secure.protect(false, &mut buf, len) {
                Some(protected) => len = protected,
                None => continue,
            }
        }
        let Some(data) = buf.get(..len) else { continue };
        if let Some(tap) = tap {
            tap.packet(SystemTime::now(), s.local[0], out.to, data);
        }
        // A full socket buffer loses the packet; the end is sent three times for that reason.
        let _ = send_one(&s.sockets.rtp, data, out.to);
    }
}

/// Sends the SBC's RTCP report toward side `s`'s peer when one is due (a transcoded pair, see
/// [`crate::rtcp`]), or with `bye` the last one, with its BYE, as the pair closes: to where that
/// peer's RTCP goes, SRTCP-protected on a secure side, nothing before its keys exist.
fn send_rtcp(s: &mut Side, now: Instant, tap: Option<&dyn PacketTap>, bye: bool) {
    let Some(reporter) = s.rtcp.as_mut() else { return };
    // Room for the SRTCP index and the longest tag (AEAD: 16 bytes).
    let mut buf = [0u8; MAX_REPORT + 32];
    let wall = SystemTime::now();
    let written = if bye {
        reporter.bye(now, wall, &s.rx, &mut buf)
    } else {
        reporter.poll_report(now, wall, &s.rx, &mut buf)
    };
    let Some(mut len) = written else { return };
    let Ok(out) = s.rules.rtcp_out() else { return };
    if let Some(secure) = s.secure.as_mut() {
        match secure.protect(true, &mut buf, len) {
            Some(protected) => len = protected,
            None => return,
        }
    }
    let Some(data) = buf.get(..len) else { return };
    if let Some(tap) = tap {
        tap.packet(wall, s.local(out.via), out.to, data);
    }
    // A lost report is replaced by the next one.
    let _ = send_one(s.socket(out.via), data, out.to);
}

/// Puts the secure side's next deadline in the heap if it is earlier than the one armed (a
/// later one is found when the armed entry fires).
fn arm(timers: &mut BinaryHeap<Deadline>, pair: &mut Pair, slot: usize, side: usize) {
    let s = &mut pair.sides[side];
    let secure = s.secure.as_ref().and_then(SecureSide::poll_timeout);
    let dtmf = s.dtmf.as_ref().and_then(|d| {
        match (d.injector.poll_timeout(), d.detector.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    });
    let rtcp = s.rtcp.as_ref().map(|r| r.poll_timeout());
    let next = [secure, dtmf, rtcp].into_iter().flatten().min();
    if let Some(t) = next
        && s.armed.is_none_or(|armed| t < armed)
    {
        s.armed = Some(t);
        timers.push(Reverse((t, slot, side, pair.id.0)));
    }
}

/// The first `len` bytes of buffer `i`, as they are sent.
fn sent_data(batch: &mut Batch, i: usize, len: usize) -> &[u8] {
    batch.buffer(i).and_then(|b| b.get(..len)).unwrap_or(&[])
}

/// What [`transcode_rtp`] did with one packet.
struct Transcoded {
    /// Packets sent toward the other side.
    forwarded: u64,
    /// The input packet, when the transcoder refused it, and outputs that could not be sent.
    dropped: u64,
}

/// The transcoding stage: one accepted RTP packet from side X (after SRTP removal, where a side
/// has it) through X's transcoder; every packet it produces goes to `out` through side Y's RTP
/// socket (where SRTP protection toward Y belongs). One `send_to` per output: a transcoded call
/// sends 100 packets/s, and the codec costs ~50 times more than the system call.
#[allow(clippy::too_many_arguments)]
fn transcode_rtp(
    transcoder: &mut Transcoder,
    data: &[u8],
    out: Out,
    ys: &mut Side,
    emitted: &mut Emitted,
    tap: Option<&dyn PacketTap>,
    now: Instant,
    wall: SystemTime,
) -> Transcoded {
    emitted.clear();
    let mut result = Transcoded { forwarded: 0, dropped: 0 };
    // Comfort noise and events toward a side without them are consumed, not dropped.
    if matches!(transcoder.handle_rtp(data, emitted), Disposition::Dropped(_)) {
        result.dropped += 1;
    }
    result.dropped += u64::from(emitted.overflow());
    // A secure destination (a browser) gets each output protected in a scratch buffer with room
    // for the SRTP tag; nothing leaves before its keys exist.
    let mut scratch = [0u8; 1600];
    let clock_rate = transcoder.output_clock_rate();
    for packet in emitted.iter() {
        if let (Some(reporter), Some(h)) = (ys.rtcp.as_mut(), RtpFields::parse(packet)) {
            reporter.on_sent(
                now,
                h.ssrc,
                clock_rate,
                h.timestamp,
                packet.len().saturating_sub(RTP_HEADER),
            );
        }
        let packet = match ys.secure.as_mut() {
            None => packet,
            Some(secure) => {
                let protected = match scratch.get_mut(..packet.len()) {
                    Some(dst) => {
                        dst.copy_from_slice(packet);
                        secure.protect(false, &mut scratch, packet.len())
                    }
                    None => None,
                };
                match protected.and_then(|len| scratch.get(..len)) {
                    Some(p) => p,
                    None => {
                        result.dropped += 1;
                        continue;
                    }
                }
            }
        };
        if let Some(tap) = tap {
            tap.packet(wall, ys.local(Socket::Rtp), out.to, packet);
        }
        match send_one(ys.socket(Socket::Rtp), packet, out.to) {
            Ok(()) => result.forwarded += 1,
            Err(_) => result.dropped += 1,
        }
    }
    result
}

fn tag(kind: Kind) -> usize {
    match kind {
        Kind::Rtp => 0,
        Kind::Rtcp => 1,
    }
}

fn send_one(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> io::Result<()> {
    socket.send_to(data, to).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for slot in [0, 1, 7, 1 << 20] {
            for side in 0..2 {
                for which in [Socket::Rtp, Socket::Rtcp] {
                    let t = token(slot, side, which);
                    assert_ne!(t, WAKER);
                    assert_eq!(untoken(t), (slot, side, which));
                }
            }
        }
    }

    #[test]
    fn rtp_clock_counts_in_clock_units() {
        assert_eq!(rtp_clock(Duration::from_millis(20), 8000), 160);
        assert_eq!(rtp_clock(Duration::from_millis(1500), 48000), 72000);
        assert_eq!(rtp_clock(Duration::from_secs(3600), 90000), 324_000_000);
        // Wraps instead of overflowing after a long uptime.
        let _ = rtp_clock(Duration::from_secs(u64::MAX / 2), 90000);
    }
}
