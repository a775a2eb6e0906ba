//! The engine: calls, the mapping of transactions to calls, and every relay decision.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sbc_cdr::{CallEventKind, CallRef, Disposition, MediaLegStats, ReleaseSide};
use sbc_media::backend::{MediaFailure, PacketTap, RelayBackend};
use sbc_media::dtmf::DtmfMode;
use sbc_media::{
    LegMedia, LegSide, MediaError, MediaPlane, MediaSessionId, MediaSummary, VirtualBackend,
};
use sbc_policy::auth::AuthOutcome;
use sbc_policy::{AdmissionRequest, AuthRequest, Offence, Permit, Policy, RejectMode, Verdict};

use super::bindings::Bindings;
use super::dialog::Dialog;
use super::dtmf;
use super::health::{ProbeCounter, TrunkHealth};
use super::ids::{CallKey, decode_call_id, make_call_id, make_tag};
use super::routing::{self, Origin};
use super::session_timer::{DEFAULT_SE, MIN_SE, SessionTimer};
use crate::config::{Config, ListenerId, Transport, TrunkId};
use crate::sip::{self, HeaderName, Host, Limits, Message, Method, Uri};
use crate::transaction::{TransactionLayer, TxnEvent, TxnId, shard_of_branch};
use crate::transport::{Flow, Transmit};

mod registrations;

/// Calls one shard holds at most; beyond it new INVITEs get 503 (STYLE: bound everything). Call
/// admission control per trunk (sbc-policy) is the operator's real limit; this one only protects
/// memory (a call costs about 2 KiB).
const MAX_CALLS_PER_SHARD: usize = 1 << 19;
/// While a call's media has no inactivity deadline (held in both directions), it is looked at
/// again after this long.
const MEDIA_RECHECK: Duration = Duration::from_secs(5);
/// How often an answered call whose media runs DTLS or ICE asks the relay whether that failed (a
/// fingerprint mismatch, a dead handshake, lost consent): the relay has no way to call the core,
/// and a second of dead air before the BYE is what a user notices least.
const MEDIA_FAILURE_POLL: Duration = Duration::from_secs(1);
/// How often a call that interworks DTMF takes the key presses the relay detected: the delay
/// it adds to a digit, small next to the key press itself (reported at its end).
const DTMF_POLL: Duration = Duration::from_millis(50);

/// Option tags the SBC understands on either leg (RFC 3261 section 8.2.2.3).
const SUPPORTED: &[&str] = &["100rel", "timer", "replaces"];
const ALLOW: &str =
    "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO, MESSAGE, NOTIFY, REFER";

/// Headers that always cross legs with the message they belong to (they describe the message, not
/// the topology).
const CONTENT_HEADERS: &[HeaderName] = &[HeaderName::ContentType, HeaderName::ContentDisposition];

/// What the engine reports to its shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Call progress, for records (the shell stamps the wall-clock time).
    Call {
        /// The call.
        call: CallRef,
        /// What happened.
        kind: CallEventKind,
    },
}

/// The Call-ID of one leg of a call, reported (when asked for with
/// [`Engine::report_leg_ids`]) so that a shell can tell which messages belong to which call, e.g.
/// for captures. Leg B gets one per attempt (each failover attempt has its own Call-ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegCallId {
    /// The call.
    pub call: CallRef,
    /// Which leg.
    pub side: LegSide,
    /// Its Call-ID.
    pub call_id: Bytes,
}

/// Counters of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Datagrams or frames that did not parse.
    pub malformed: u64,
    /// Calls created.
    pub calls_created: u64,
    /// Calls ended.
    pub calls_ended: u64,
    /// Requests dropped unanswered because their source is banned (banned after the shell's
    /// pre-parse check let them through, or on their own User-Agent).
    pub dropped_banned: u64,
    /// REGISTERs answered 200 by the SBC itself (local registrar, or a relayed client's
    /// refresh while its upstream registration lasts).
    pub registers_accepted: u64,
    /// REGISTERs sent to an upstream registrar (registrations, refreshes, unregistrations).
    pub registers_relayed: u64,
    /// DTMF key presses converted between SIP INFO and RFC 4733 (both directions).
    pub dtmf_interworked: u64,
}

#[derive(Debug, Clone)]
enum Role {
    /// The initial INVITE's server transaction on leg A.
    AInvite,
    /// The initial INVITE's client transaction on leg B (current attempt).
    BInvite,
    /// A request we originate whose outcome does not matter (CANCEL, BYE, our own PRACK).
    Fire,
    /// A session refresh we send on a leg: failure means the leg is dead.
    Refresh,
    /// An INFO carrying a key press detected in RFC 4733 events: a failure is logged, the call
    /// goes on.
    DtmfInfo,
    /// Leg B's INVITE of a call that ended before it was answered (CANCEL, ring timeout,
    /// shutdown): a 2xx racing the CANCEL is ACKed and BYEd with this dialog (RFC 3261 9.1).
    Orphan(Box<Dialog>),
    /// An OPTIONS keep-alive to a trunk target.
    Probe { trunk: TrunkId, target: usize },
    /// An in-dialog request received on one leg, relayed as `client` on the other.
    RelayServer { request: Box<Message>, client: TxnId },
    /// The relayed copy of the request received in `server`.
    RelayClient { server: TxnId },
    /// A REGISTER sent upstream for a client's REGISTER.
    Register(Box<registrations::PendingRegister>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Leg B is being tried; leg A has no final response yet.
    Early,
    /// 2xx relayed to leg A.
    Answered,
}

/// A relayed INVITE inside the dialog (re-INVITE), tracked for glare (491) and ACK relay.
#[derive(Debug, Clone)]
struct ReInvite {
    from: LegSide,
    /// CSeq number used on the other leg, for the ACK.
    client_cseq: u32,
}

#[derive(Debug)]
struct Call {
    call_ref: CallRef,
    origin: Origin,
    phase: Phase,
    a: Dialog,
    a_invite_req: Option<Box<Message>>,
    a_invite: Option<TxnId>,
    a_supports_100rel: bool,
    a_rseq: u32,
    /// (RSeq sent on A, RSeq received on B) for reliable provisionals (RFC 3262).
    rseq_map: Vec<(u32, u32)>,
    b: Option<Dialog>,
    b_invite: Option<TxnId>,
    b_invite_cseq: u32,
    b_confirmed: bool,
    /// ACK sent for leg B's 2xx, re-sent on each 2xx retransmission.
    b_ack: Option<Bytes>,
    /// Leg B's 2xx ACK waits for leg A's ACK (late offer: A's ACK carries the answer).
    b_ack_pending: bool,
    attempts: Vec<(TrunkId, usize)>,
    attempt: usize,
    media: MediaSessionId,
    /// Admission slots of the inbound side (global, source, inbound trunk): released when the
    /// call is dropped, whatever ended it.
    _permit: Permit,
    /// Slots of the current attempt's outbound trunk, replaced on failover.
    out_permit: Option<Permit>,
    /// Retry-After of the last outbound refusal, sent if that refusal is the caller's answer.
    retry_after: Option<u32>,
    ring_deadline: Option<Instant>,
    /// A `CallTimer::Media` check is armed (one chain per call: from the first early answer
    /// whose media can fail, or from the 2xx).
    media_watched: bool,
    reinvite: Option<ReInvite>,
    /// Server transactions waiting for a relayed answer; answered 487/481 if the call ends first.
    pending_servers: Vec<TxnId>,
    /// Min-SE leg B asked for with a 422 (RFC 4028 section 6), once; `MIN_SE` until then.
    b_min_se: u32,
    /// Transactions this call owns in `Engine::owners`, released when the call ends.
    txns: Vec<TxnId>,
    /// Session timer per leg (RFC 4028): leg A offered in its INVITE, leg B from its 2xx.
    session: [Option<SessionTimer>; 2],
    /// Reason phrase of the final response that decided the call, for its record.
    final_phrase: Option<String>,
    /// Reason header (RFC 3326) received with what ended the call, for its record.
    cause: Option<String>,
    /// Current deadline of each leg's session timer (stale heap entries are skipped).
    session_due: [Option<Instant>; 2],
    /// Leg B goes to a registered client instead of the attempts' trunks.
    client: Option<Box<registrations::ClientTarget>>,
}

impl Call {
    fn arm_session(&mut self, side: LegSide, now: Instant) -> Option<Instant> {
        let at = self.session[idx(side)]?.deadline(now);
        self.session_due[idx(side)] = Some(at);
        Some(at)
    }

    fn leg(&mut self, side: LegSide) -> Option<&mut Dialog> {
        match side {
            LegSide::A => Some(&mut self.a),
            LegSide::B => self.b.as_mut(),
        }
    }

    fn out_trunk(&self) -> Option<TrunkId> {
        self.attempts.get(self.attempt).map(|a| a.0)
    }
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    call: Option<Box<Call>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CallTimer {
    Ring,
    /// Session timer of a leg: refresh it or declare it dead.
    Session(LegSide),
    /// Keep-alive of (trunk, target); the key is unused.
    Probe(TrunkId, usize),
    /// Media inactivity check of an answered call.
    Media,
    /// Poll of the key presses the relay detected, for a call that interworks DTMF.
    Dtmf,
    /// Expiry sweep of the shared bindings (one shard does it); the key is unused.
    Sweep,
}

/// OPTIONS keep-alive state of this shard (only the probing shard has one).
#[derive(Debug)]
struct Prober {
    health: Arc<TrunkHealth>,
    counters: HashMap<(TrunkId, usize), ProbeCounter>,
}

/// One shard of the B2BUA.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    shard: u16,
    limits: Limits,
    txns: TransactionLayer,
    media: MediaPlane,
    /// Shared with every shard and the shell's receive tasks (bans and CAC are process-wide).
    policy: Arc<Policy>,
    /// A monotonic instant and the wall-clock time at it, set by the shell: digest nonces and
    /// the Date of a REGISTER answer need Unix time, and the engine reads no clock.
    wall: Option<(Instant, SystemTime)>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Leg-A Call-IDs are chosen by peers: SipHash map (STYLE section 3).
    by_a_call_id: HashMap<Bytes, CallKey>,
    owners: HashMap<TxnId, (CallKey, Role)>,
    timers: BinaryHeap<Reverse<(Instant, CallKey, CallTimer)>>,
    events: VecDeque<Event>,
    rng: StdRng,
    draining: bool,
    next_call_ref: u64,
    /// `host:port` of each listener, as written in Via and Contact.
    sent_by: Vec<String>,
    stats: EngineStats,
    health: Arc<TrunkHealth>,
    prober: Option<Prober>,
    /// Queue of [`LegCallId`]s; filled only once a shell asked for them (otherwise nobody would
    /// drain it). Drained after every input like `events`.
    leg_ids: Option<VecDeque<LegCallId>>,
    /// Registration bindings, shared with every shard (see [`Engine::set_bindings`]).
    bindings: Arc<Bindings>,
}

impl Engine {
    /// A shard with its own RNG seed.
    /// A shard whose media plane has no sockets ([`VirtualBackend`] over the configured port
    /// range): for tests and tools that drive the engine without a relay.
    pub fn new(config: Arc<Config>, shard: u16, seed: u64) -> Engine {
        let ports = config.media.port_min..=config.media.port_max;
        Engine::with_relay(config, shard, seed, Arc::new(VirtualBackend::new(ports)))
    }

    /// A shard whose calls' media go through `relay` (shared by all shards).
    pub fn with_relay(
        config: Arc<Config>,
        shard: u16,
        seed: u64,
        relay: Arc<dyn RelayBackend>,
    ) -> Engine {
        let health = Arc::new(TrunkHealth::new(&config));
        let sent_by = config
            .listeners
            .iter()
            .map(|l| SocketAddr::new(l.advertise, l.addr.port()).to_string())
            .collect();
        Engine {
            config: Arc::clone(&config),
            txns: TransactionLayer::new(config.timers, shard, seed ^ 0x7478_6e73),
            limits: Limits { max_size: config.max_message_size, max_headers: config.max_headers },
            shard,
            media: MediaPlane::with_seed(relay, seed ^ 0x006d_6564_6961),
            policy: Arc::new(Policy::with_config(config.policy_rules()).unwrap_or_else(|e| {
                // Configs from the file were checked at load; a hand-built one may not be.
                tracing::error!(error = %e, "invalid policy config: admitting everything");
                Policy::new()
            })),
            wall: None,
            slots: Vec::new(),
            free: Vec::new(),
            by_a_call_id: HashMap::new(),
            owners: HashMap::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            draining: false,
            next_call_ref: u64::from(shard) << 48,
            sent_by,
            stats: EngineStats::default(),
            health,
            prober: None,
            leg_ids: None,
            bindings: Arc::new(Bindings::new(super::bindings::DEFAULT_MAX_BINDINGS)),
        }
    }

    /// Shares trunk liveness with other shards; `probe` makes this shard the one that sends the
    /// OPTIONS keep-alives (first probes at `now`).
    pub fn set_health(&mut self, now: Instant, health: Arc<TrunkHealth>, probe: bool) {
        self.health = Arc::clone(&health);
        self.prober = None;
        if !probe {
            return;
        }
        for (t, trunk) in self.config.trunks.iter().enumerate() {
            if trunk.options.is_some() {
                for i in 0..trunk.targets.len() {
                    let idle = CallKey { index: u32::MAX, generation: 0 };
                    self.timers.push(Reverse((now, idle, CallTimer::Probe(TrunkId(t), i))));
                }
            }
        }
        self.prober = Some(Prober { health, counters: HashMap::new() });
    }

    /// Shares the registration bindings with other shards (one store per process); `sweep`
    /// makes this shard the one that expires them, every second from `now`, and unregisters
    /// relayed bindings upstream when their client stops refreshing.
    pub fn set_bindings(&mut self, now: Instant, bindings: Arc<Bindings>, sweep: bool) {
        self.bindings = bindings;
        if sweep {
            let idle = CallKey { index: u32::MAX, generation: 0 };
            self.timers.push(Reverse((
                now + registrations::SWEEP_INTERVAL,
                idle,
                CallTimer::Sweep,
            )));
        }
    }

    /// The registration bindings this shard uses.
    pub fn bindings(&self) -> &Arc<Bindings> {
        &self.bindings
    }

    /// Shares the process-wide policy (the shell gives every shard the same one).
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    /// The policy this shard asks.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Tells the engine the wall-clock time at `now` (the shell calls it before each input;
    /// tests once). Without it Unix time reads as 0 plus the time since the first input.
    pub fn set_wall_clock(&mut self, now: Instant, wall: SystemTime) {
        self.wall = Some((now, wall));
    }

    /// Raw bytes from a flow: parsed here; malformed requests get a 4xx/5xx if one can be formed.
    pub fn handle_datagram(&mut self, now: Instant, flow: Flow, data: Bytes) {
        match sip::parse_with(data.clone(), &self.limits) {
            Ok(msg) => self.handle_message(now, flow, msg),
            Err(err) => {
                self.stats.malformed += 1;
                self.policy.record(now, flow.remote.ip(), Offence::Malformed);
                tracing::debug!(remote = %flow.remote, %err, "malformed message");
                if let Some(resp) = sip::error_response(&data, &err) {
                    self.txns.send_stateless(flow, resp);
                }
            }
        }
    }

    /// A parsed message from a flow.
    pub fn handle_message(&mut self, now: Instant, flow: Flow, msg: Message) {
        if msg.is_request() && !self.screen_request(now, flow, &msg) {
            return;
        }
        self.txns.handle_message(now, msg, flow);
        self.drain_txn_events(now);
    }

    /// Before any transaction exists: a request naming a scanner in its User-Agent is an
    /// offence, and a request from a banned source is dropped unanswered (the shell drops most
    /// of them before parsing; this catches the ones queued before the ban, and the request that
    /// triggers it).
    fn screen_request(&mut self, now: Instant, flow: Flow, msg: &Message) -> bool {
        let ip = flow.remote.ip();
        let out_of_dialog = !msg.to().is_ok_and(|t| t.tag().is_some());
        if out_of_dialog
            && let Some(ua) = msg.header(&HeaderName::UserAgent)
            && self.policy.is_scanner(ua)
            && let Some(ban) = self.policy.record(now, ip, Offence::Scanner)
        {
            tracing::debug!(remote = %flow.remote, ?ban, "scanner User-Agent: banned");
        }
        if self.policy.is_banned(now, ip) {
            self.stats.dropped_banned += 1;
            return false;
        }
        true
    }

    /// The shell could not reach `flow` (TCP connect refused, connection lost): requests pending
    /// on it fail now, like a 503, and failover moves on.
    pub fn handle_flow_error(&mut self, now: Instant, flow: Flow) {
        self.txns.handle_flow_error(now, flow);
        self.drain_txn_events(now);
        // A client's connection is gone: so are its registrations (every shard hears of the
        // flow; the store hands each binding to one of them).
        self.drop_flow_bindings(now, flow);
        self.drain_txn_events(now);
    }

    /// Fires due timers (transaction and call timers). Early calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.txns.handle_timeout(now);
        self.drain_txn_events(now);
        while let Some(Reverse((at, key, timer))) = self.timers.peek().cloned() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                CallTimer::Ring => self.ring_timeout(now, key, at),
                CallTimer::Session(side) => self.session_timeout(now, key, side, at),
                CallTimer::Probe(trunk, target) => self.send_probe(now, trunk, target),
                CallTimer::Media => self.media_check(now, key),
                CallTimer::Dtmf => self.dtmf_check(now, key),
                CallTimer::Sweep => self.sweep_bindings(now),
            }
            self.drain_txn_events(now);
        }
    }

    /// Stops admitting new calls (SIGTERM): new INVITEs get 503.
    pub fn start_drain(&mut self) {
        self.draining = true;
    }

    /// Ends every call now: BYE on answered legs, CANCEL/487 on calls still ringing.
    pub fn terminate_all(&mut self, now: Instant) {
        let keys: Vec<CallKey> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.call.is_some())
            .map(|(i, s)| CallKey { index: i as u32, generation: s.generation })
            .collect();
        for key in keys {
            let Some(call) = self.call(key) else { continue };
            match call.phase {
                Phase::Answered => {
                    self.send_bye(now, key, LegSide::A);
                    self.send_bye(now, key, LegSide::B);
                    self.end_call(
                        now,
                        key,
                        Disposition::Answered,
                        200,
                        ReleaseSide::Sbc,
                        Some("shutdown"),
                    );
                }
                Phase::Early => {
                    self.cancel_b(now, key);
                    self.answer_a_invite(now, key, 503, "Service Unavailable", None);
                    self.end_call(
                        now,
                        key,
                        Disposition::Failed,
                        503,
                        ReleaseSide::Sbc,
                        Some("shutdown"),
                    );
                }
            }
        }
        self.drain_txn_events(now);
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.txns.poll_transmit()
    }

    /// Next event for the shell.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// From now on, report each leg's Call-ID through [`Engine::poll_leg_id`]; the shell must
    /// then drain it after every input, like [`Engine::poll_event`].
    pub fn report_leg_ids(&mut self) {
        self.leg_ids.get_or_insert_with(VecDeque::new);
    }

    /// Next leg Call-ID (see [`Engine::report_leg_ids`]).
    pub fn poll_leg_id(&mut self) -> Option<LegCallId> {
        self.leg_ids.as_mut()?.pop_front()
    }

    /// Sets (or removes) the capture tap of a call's media: its relay pairs copy every packet to
    /// `tap`. The shell calls it when it decides to capture the call.
    pub fn tap_media(&mut self, call: CallRef, tap: Option<Arc<dyn PacketTap>>) {
        // A call's media session id is its call reference (see `on_new_invite`).
        self.media.tap(MediaSessionId(call.0), tap);
    }

    /// Earliest deadline of this shard.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let txn = self.txns.poll_timeout().map(|(at, _)| at);
        let call = self.timers.peek().map(|Reverse((at, _, _))| *at);
        match (txn, call) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Calls in progress on this shard.
    pub fn call_count(&self) -> usize {
        self.by_a_call_id.len()
    }

    /// Live transactions on this shard.
    pub fn transaction_count(&self) -> usize {
        self.txns.len()
    }

    /// Media sessions on this shard (for leak checks).
    pub fn media_session_count(&self) -> usize {
        self.media.len()
    }

    /// Transactions the engine still maps to a role (for leak checks).
    pub fn owner_count(&self) -> usize {
        self.owners.len()
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    // ---- dispatch --------------------------------------------------------------------------

    fn drain_txn_events(&mut self, now: Instant) {
        while let Some(ev) = self.txns.poll_event() {
            match ev {
                TxnEvent::RequestReceived { txn, request, flow } => {
                    self.on_request(now, txn, request, flow)
                }
                TxnEvent::AckReceived { invite, request, flow } => {
                    self.on_ack(now, invite, request, flow)
                }
                TxnEvent::CancelReceived { invite, .. } => self.on_cancel(now, invite),
                TxnEvent::ResponseReceived { txn, response } => {
                    self.on_response(now, txn, response)
                }
                TxnEvent::StrayResponse { response, flow } => {
                    self.on_stray_response(now, response, flow)
                }
                TxnEvent::TimedOut { txn } => self.on_txn_failed(now, txn, 408, "Request Timeout"),
                TxnEvent::TransportFailed { txn } => {
                    self.on_txn_failed(now, txn, 503, "Service Unavailable")
                }
            }
        }
    }

    fn on_request(&mut self, now: Instant, txn: TxnId, req: Message, flow: Flow) {
        let has_to_tag = req.to().is_ok_and(|t| t.tag().is_some());
        if has_to_tag {
            return self.on_in_dialog_request(now, txn, req, flow);
        }
        if let Some((code, reason)) = self.check_request(&req) {
            return self.reject(now, txn, &req, code, reason);
        }
        match req.method() {
            Some(Method::Invite) => self.on_new_invite(now, txn, req, flow),
            Some(Method::Register) if !req.to().is_ok_and(|t| is_sip_uri(&t.uri)) => {
                // An address of record is a SIP URI (RFC 3261 section 10.2; RFC 4475 3.3.4).
                self.reply(now, txn, &req, 400, "To Is Not a SIP URI");
            }
            Some(Method::Register) => self.on_register(now, txn, req, flow),
            Some(Method::Options) => {
                let mut r = req.response_to(200, "OK", Some(&make_tag(&mut self.rng)));
                r.push(HeaderName::Allow, Bytes::from_static(ALLOW.as_bytes()));
                r.push(HeaderName::Supported, Bytes::from_static(b"100rel, timer, replaces"));
                r.push(HeaderName::Accept, Bytes::from_static(b"application/sdp"));
                self.txns.respond(now, txn, r);
            }
            Some(Method::Bye | Method::Prack | Method::Update | Method::Info | Method::Notify) => {
                self.reply(now, txn, &req, 481, "Call/Transaction Does Not Exist");
            }
            Some(Method::Subscribe | Method::Publish | Method::Message | Method::Refer) => {
                self.reject(now, txn, &req, 405, "Method Not Allowed")
            }
            _ => self.reject(now, txn, &req, 501, "Not Implemented"),
        }
    }

    /// Checks every out-of-dialog request the SBC answers or forwards.
    fn check_request(&self, req: &Message) -> Option<(u16, &'static str)> {
        if req.max_forwards() == Some(0) {
            return Some((483, "Too Many Hops"));
        }
        if self.is_loop(req) && !to_contact_token(req) {
            return Some((482, "Loop Detected"));
        }
        if matches!(req.request_uri()?.scheme, sip::Scheme::Other(_)) {
            return Some((416, "Unsupported URI Scheme"));
        }
        if req.values(&HeaderName::Require).any(|t| !is_supported(&t)) {
            return Some((420, "Bad Extension"));
        }
        None
    }

    /// Refuses a request, with the header each status calls for (RFC 3261 section 21).
    fn reject(&mut self, now: Instant, txn: TxnId, req: &Message, code: u16, reason: &str) {
        let mut r = req.response_to(code, reason, Some(&make_tag(&mut self.rng)));
        match code {
            420 => {
                let unsupported: Vec<String> = req
                    .values(&HeaderName::Require)
                    .filter(|t| !is_supported(t))
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .collect();
                r.push(HeaderName::Unsupported, unsupported.join(", "));
            }
            405 | 501 => r.push(HeaderName::Allow, Bytes::from_static(ALLOW.as_bytes())),
            406 | 415 => r.push(HeaderName::Accept, Bytes::from_static(b"application/sdp")),
            503 => r.push(HeaderName::RetryAfter, Bytes::from_static(b"30")),
            _ => {}
        }
        self.txns.respond(now, txn, r);
    }

    /// Answers a request with a bare status (our own tag on To when it had none).
    fn reply(&mut self, now: Instant, txn: TxnId, req: &Message, code: u16, reason: &str) {
        let tag = make_tag(&mut self.rng);
        let r = req.response_to(code, reason, Some(&tag));
        self.txns.respond(now, txn, r);
    }

    /// Answers a policy refusal: 403, or 503 with Retry-After.
    fn refuse(
        &mut self,
        now: Instant,
        txn: TxnId,
        req: &Message,
        status: u16,
        retry_after: Option<u32>,
    ) {
        let reason = if status == 403 { "Forbidden" } else { "Service Unavailable" };
        let mut r = req.response_to(status, reason, Some(&make_tag(&mut self.rng)));
        if let Some(s) = retry_after {
            r.push_fmt(HeaderName::RetryAfter, format_args!("{s}"));
        }
        self.txns.respond(now, txn, r);
    }

    /// Wall-clock Unix seconds at `now` (see [`Engine::set_wall_clock`]).
    fn unix_time(&self, now: Instant) -> u64 {
        let Some((at, wall)) = self.wall else {
            return 0;
        };
        let wall = match now.checked_duration_since(at) {
            Some(ahead) => wall.checked_add(ahead),
            None => wall.checked_sub(at.duration_since(now)),
        };
        wall.and_then(|w| w.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs())
    }

    /// Digest authentication of a request from an access listener with a realm: `true` when
    /// it may go on (no realm, or credentials accepted); otherwise it has been answered with a
    /// challenge, the same for every user (RFC 3261 section 22: 401 with WWW-Authenticate for
    /// REGISTER, 407 with Proxy-Authenticate for everything else, one header per algorithm).
    fn authenticated(
        &mut self,
        now: Instant,
        txn: TxnId,
        req: &Message,
        flow: Flow,
        listener: ListenerId,
    ) -> bool {
        self.authenticate(now, txn, req, flow, listener).is_ok()
    }

    /// [`Engine::authenticated`], telling who: `Ok(Some(user))` authenticated, `Ok(None)` no
    /// realm to check, `Err(())` answered with a challenge.
    fn authenticate(
        &mut self,
        now: Instant,
        txn: TxnId,
        req: &Message,
        flow: Flow,
        listener: ListenerId,
    ) -> Result<Option<String>, ()> {
        let register = req.method() == Some(&Method::Register);
        let (code, reason, ask, answer) = match register {
            true => (401, "Unauthorized", HeaderName::WwwAuthenticate, HeaderName::Authorization),
            false => (
                407,
                "Proxy Authentication Required",
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            ),
        };
        let request_uri = req.request_uri().map(|u| u.raw.clone()).unwrap_or_default();
        let method = req.method().map(|m| m.to_string()).unwrap_or_default();
        let now_unix = self.unix_time(now);
        let source = flow.remote.ip();
        let request_uri = std::str::from_utf8(&request_uri).unwrap_or("");
        // A request may carry credentials for several realms (RFC 3261 section 22.3); the one
        // for ours is checked, the others read as missing. Not `values()`: a credentials value
        // is one comma-separated list of auth-params, never split (RFC 3261 section 25.1); each
        // header line is one set of credentials.
        let values: Vec<Bytes> =
            req.headers.iter().filter(|h| h.name == answer).map(|h| h.value.clone()).collect();
        let mut outcome = None;
        let candidates = values.iter().map(|v| Some(&v[..]));
        let candidates: Vec<Option<&[u8]>> =
            if values.is_empty() { vec![None] } else { candidates.collect() };
        for credentials in candidates {
            let check = AuthRequest { now_unix, source, method: &method, request_uri, credentials };
            match self.policy.authenticate(now, listener.0, &check) {
                None => return Ok(None),
                Some(AuthOutcome::Missing) => outcome = Some(AuthOutcome::Missing),
                Some(o) => {
                    outcome = Some(o);
                    break;
                }
            }
        }
        let Some(outcome) = outcome else {
            return Ok(None);
        };
        let stale = match outcome {
            AuthOutcome::Ok { user } => return Ok(Some(user)),
            AuthOutcome::Stale | AuthOutcome::Replayed => true,
            AuthOutcome::Missing | AuthOutcome::Failed(_) => false,
        };
        let Some(auth) = self.policy.authenticator(listener.0) else {
            return Ok(None);
        };
        let challenges = auth.challenges(now_unix, source, stale);
        let mut r = req.response_to(code, reason, Some(&make_tag(&mut self.rng)));
        for c in challenges {
            r.push(ask.clone(), c);
        }
        self.txns.respond(now, txn, r);
        Err(())
    }

    // ---- new calls -------------------------------------------------------------------------

    fn on_new_invite(&mut self, now: Instant, txn: TxnId, req: Message, flow: Flow) {
        if let Some((code, reason)) = self.check_new_invite(&req) {
            return self.reject(now, txn, &req, code, reason);
        }
        let a_supports_timer = req.has_token(&HeaderName::Supported, "timer");
        let a_session = match SessionTimer::negotiate_uas(&req, a_supports_timer) {
            Ok(t) => t,
            Err(min_se) => {
                let mut r = req.response_to(
                    422,
                    "Session Interval Too Small",
                    Some(&make_tag(&mut self.rng)),
                );
                r.push_fmt(HeaderName::MinSe, format_args!("{min_se}"));
                return self.txns.respond(now, txn, r);
            }
        };
        let Some(origin) = routing::classify(&self.config, flow.listener, flow.remote.ip()) else {
            tracing::debug!(remote = %flow.remote, "INVITE from an unknown source on a trunk listener");
            // Access control on a trunk listener: a policy refusal, recorded as such.
            self.emit_rejected(&req, flow, None, 403, "Forbidden", "unknown source");
            return self.reply(now, txn, &req, 403, "Forbidden");
        };
        let Some(ruri) = req.request_uri().cloned() else {
            return;
        };
        // Access users prove who they are before anything is decided for them (RFC 3261
        // section 22.3: a proxy-style 407, so the caller's UA answers with
        // Proxy-Authorization).
        if let Origin::Access(listener) = origin
            && !self.authenticated(now, txn, &req, flow, listener)
        {
            return;
        }
        let user = ruri.user_str().map(str::to_owned);
        let domain = match &ruri.host {
            Some(Host::Name(n)) => std::str::from_utf8(n).ok().map(str::to_owned),
            _ => None,
        };
        // Admission before routing: rate limits count every new call attempt, routable or
        // not, and a refused caller learns nothing about the numbering plan.
        let admission = AdmissionRequest {
            source: flow.remote.ip(),
            inbound_trunk: origin.trunk().map(|t| t.0),
            callee: user.as_deref().unwrap_or(""),
        };
        let permit = match self.policy.admit_on(now, flow.listener.0, &admission) {
            Verdict::Admit(p) => p,
            Verdict::Reject { status, retry_after } => {
                let (phrase, why) = match status {
                    403 => ("Forbidden", "policy"),
                    _ => ("Service Unavailable", "admission limit"),
                };
                self.emit_rejected(&req, flow, origin.trunk(), status, phrase, why);
                return self.refuse(now, txn, &req, status, retry_after);
            }
        };
        // Calls to registered clients come before the routes (see `registrations`).
        let client = match self.registered_target(now, origin, &ruri) {
            Some(registrations::Registered::Client(c)) => Some(c),
            Some(registrations::Registered::Unknown) => {
                return self.reply(now, txn, &req, 404, "Not Found");
            }
            Some(registrations::Registered::Unavailable) => {
                return self.reply(now, txn, &req, 480, "Temporarily Unavailable");
            }
            None => None,
        };
        let (ring_timeout, attempts) = if client.is_some() {
            (registrations::RING_TIMEOUT, Vec::new())
        } else {
            let Some((_, route)) =
                routing::select(&self.config, origin, user.as_deref(), domain.as_deref())
            else {
                // Probing for users or domains that do not exist is how scanners map a system.
                self.policy.record(now, flow.remote.ip(), Offence::UnknownUser);
                return self.reply(now, txn, &req, 404, "Not Found");
            };
            let attempts: Vec<(TrunkId, usize)> = route
                .trunks
                .iter()
                .flat_map(|&t| (0..self.config.trunks[t.0].targets.len()).map(move |i| (t, i)))
                .filter(|&(t, i)| self.health.is_up(t, i))
                .collect();
            if attempts.is_empty() {
                return self.reply(now, txn, &req, 503, "Service Unavailable");
            }
            (route.ring_timeout, attempts)
        };

        // Leg A: we are the UAS. Our To tag is fixed now so every response carries the same one.
        let Some(call_id) = req.call_id().cloned() else {
            return;
        };
        if self.by_a_call_id.contains_key(&call_id) {
            // A new INVITE (no To tag) reusing a live Call-ID with a new branch: a loop or a
            // confused peer; RFC 3261 section 8.2.2.2 answers 482.
            return self.reply(now, txn, &req, 482, "Loop Detected");
        }
        let a_tag = make_tag(&mut self.rng);
        let to_raw = req.header(&HeaderName::To).cloned().unwrap_or_default();
        let from_raw = req.header(&HeaderName::From).cloned().unwrap_or_default();
        let a_cseq = req.cseq().map(|c| c.seq).unwrap_or(0);
        let mut a = Dialog {
            call_id: call_id.clone(),
            local_tag: Bytes::from(a_tag.clone()),
            remote_tag: req.from().ok().and_then(|f| f.tag()),
            from_hdr: Bytes::from(format!("{};tag={a_tag}", String::from_utf8_lossy(&to_raw))),
            to_hdr: from_raw,
            local_cseq: 0,
            remote_cseq: Some(a_cseq),
            remote_target: ruri.clone(),
            route_set: Vec::new(),
            flow,
            contact: self.contact_for(flow.listener, flow.transport),
            sent_by: self.sent_by[flow.listener.0].clone(),
        };
        a.learn_from_request(&req);

        let key = self.alloc_call();
        self.next_call_ref += 1;
        let call_ref = CallRef(self.next_call_ref);
        let media = MediaSessionId(call_ref.0);
        let caller =
            req.from().ok().and_then(|f| f.uri.user_str().map(str::to_owned)).unwrap_or_default();
        self.emit(
            call_ref,
            CallEventKind::Started {
                caller,
                callee: user.clone().unwrap_or_default(),
                source: flow.remote,
                call_id: String::from_utf8_lossy(&call_id).into_owned(),
                listener: self.config.listeners[flow.listener.0].name.clone(),
                trunk: origin.trunk().map(|t| self.config.trunks[t.0].name.clone()),
            },
        );
        let call = Call {
            call_ref,
            origin,
            phase: Phase::Early,
            a,
            a_supports_100rel: req.has_token(&HeaderName::Supported, "100rel")
                || req.has_token(&HeaderName::Require, "100rel"),
            a_invite_req: Some(Box::new(req)),
            a_invite: Some(txn),
            a_rseq: 0,
            rseq_map: Vec::new(),
            b: None,
            b_invite: None,
            b_invite_cseq: 0,
            b_confirmed: false,
            b_ack: None,
            b_ack_pending: false,
            attempts,
            attempt: 0,
            media,
            _permit: permit,
            out_permit: None,
            retry_after: None,
            ring_deadline: Some(now + ring_timeout),
            media_watched: false,
            reinvite: None,
            pending_servers: Vec::new(),
            b_min_se: MIN_SE,
            txns: Vec::new(),
            session: [a_session, None],
            session_due: [None, None],
            final_phrase: None,
            cause: None,
            client: client.map(Box::new),
        };
        self.stats.calls_created += 1;
        self.slots[key.index as usize].call = Some(Box::new(call));
        let leg_a = leg_media(&self.config, origin.listener(), origin.trunk());
        self.media.set_leg(media, LegSide::A, leg_a);
        if let Some(q) = &mut self.leg_ids {
            q.push_back(LegCallId { call: call_ref, side: LegSide::A, call_id: call_id.clone() });
        }
        self.by_a_call_id.insert(call_id, key);
        self.own(txn, key, Role::AInvite);
        self.timers.push(Reverse((now + ring_timeout, key, CallTimer::Ring)));
        self.start_attempt(now, key);
    }

    /// Checks that answer a new INVITE before any state is created.
    fn check_new_invite(&self, req: &Message) -> Option<(u16, &'static str)> {
        if self.draining || self.by_a_call_id.len() >= MAX_CALLS_PER_SHARD {
            return Some((503, "Service Unavailable"));
        }
        if !req.body.is_empty() && !is_sdp(req) {
            return Some((415, "Unsupported Media Type"));
        }
        // RFC 3261 section 21.4.7: the caller accepts no body type we would answer with.
        let mut accept = req.values(&HeaderName::Accept).peekable();
        if accept.peek().is_some()
            && !accept.any(|v| {
                let base = v.split(|&b| b == b';').next().unwrap_or(&v[..]);
                let base = sip_trim(base);
                ["application/sdp", "application/*", "*/*"]
                    .iter()
                    .any(|t| base.eq_ignore_ascii_case(t.as_bytes()))
            })
        {
            return Some((406, "Not Acceptable"));
        }
        None
    }

    /// A request that already passed through this SBC: one of its Vias carries a branch we issued
    /// with one of our listeners as sent-by.
    fn is_loop(&self, req: &Message) -> bool {
        req.values(&HeaderName::Via).filter_map(|v| sip::Via::parse(&v).ok()).any(|via| {
            via.branch().is_some_and(|b| shard_of_branch(&b).is_some()) && {
                let sent_by = match via.port {
                    Some(p) => format!("{}:{p}", via.host),
                    None => via.host.to_string(),
                };
                self.sent_by.contains(&sent_by)
            }
        })
    }

    fn contact_for(&self, listener: ListenerId, transport: Transport) -> Bytes {
        let sent_by = &self.sent_by[listener.0];
        // `sip:` with `;transport=tls` rather than `sips:` (RFC 5630 section 3.1.3 keeps that
        // meaning): sips would promise TLS on every hop beyond the SBC, which it cannot know.
        Bytes::from(match transport {
            Transport::Udp => format!("<sip:{sent_by}>"),
            t => format!("<sip:{sent_by};transport={}>", t.name()),
        })
    }

    fn alloc_call(&mut self) -> CallKey {
        match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.generation = slot.generation.wrapping_add(1);
                CallKey { index, generation: slot.generation }
            }
            None => {
                self.slots.push(Slot { generation: 0, call: None });
                CallKey { index: (self.slots.len() - 1) as u32, generation: 0 }
            }
        }
    }

    /// Records that `txn` belongs to a call in `role`; the call drops it when it ends.
    fn own(&mut self, txn: TxnId, key: CallKey, role: Role) {
        self.owners.insert(txn, (key, role));
        let owners = &self.owners;
        if let Some(call) = slot_call_mut(&mut self.slots, key) {
            // Long calls with many relayed requests: forget the ones already finished.
            if call.txns.len() >= 64 {
                call.txns.retain(|t| owners.contains_key(t));
            }
            call.txns.push(txn);
        }
    }

    fn call(&self, key: CallKey) -> Option<&Call> {
        self.slots
            .get(key.index as usize)
            .filter(|s| s.generation == key.generation)?
            .call
            .as_deref()
    }

    fn call_mut(&mut self, key: CallKey) -> Option<&mut Call> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)?
            .call
            .as_deref_mut()
    }

    fn emit(&mut self, call: CallRef, kind: CallEventKind) {
        self.events.push_back(Event::Call { call, kind });
    }

    /// Records an INVITE refused by policy before any call existed (its own call ref, so that
    /// it gets its own record).
    fn emit_rejected(
        &mut self,
        req: &Message,
        flow: Flow,
        trunk: Option<TrunkId>,
        status: u16,
        phrase: &str,
        why: &str,
    ) {
        self.next_call_ref += 1;
        let call_ref = CallRef(self.next_call_ref);
        let user = |u: Option<&Uri>| u.and_then(|u| u.user_str().map(str::to_owned));
        let kind = CallEventKind::Rejected {
            caller: user(req.from().ok().as_ref().map(|f| &f.uri)).unwrap_or_default(),
            callee: user(req.request_uri()).unwrap_or_default(),
            source: flow.remote,
            call_id: req
                .call_id()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .unwrap_or_default(),
            listener: self.config.listeners[flow.listener.0].name.clone(),
            trunk: trunk.map(|t| self.config.trunks[t.0].name.clone()),
            status,
            phrase: phrase.to_owned(),
            reason: why.to_owned(),
        };
        self.emit(call_ref, kind);
    }

    /// Sends the INVITE of the current attempt on a brand-new leg B.
    fn start_attempt(&mut self, now: Instant, key: CallKey) {
        if self.call(key).is_some_and(|c| c.client.is_some()) {
            return self.start_client_attempt(now, key);
        }
        let shard = self.shard;
        let config = Arc::clone(&self.config);
        let Some(call) = self.call(key) else { return };
        let Some(&(trunk_id, target_idx)) = call.attempts.get(call.attempt) else {
            return;
        };
        let Some(invite) = call.a_invite_req.clone() else {
            return;
        };
        let invite = &*invite;
        let callee_in = invite.request_uri().and_then(|u| u.user_str()).unwrap_or("");
        // Each attempt asks for its own outbound slots; the previous attempt's go back first.
        if let Some(call) = self.call_mut(key) {
            call.out_permit = None;
        }
        match self.policy.admit_outbound(now, trunk_id.0, callee_in) {
            Verdict::Admit(p) => {
                if let Some(call) = self.call_mut(key) {
                    call.out_permit = Some(p);
                    call.retry_after = None;
                }
            }
            Verdict::Reject { status, retry_after } => {
                if let Some(call) = self.call_mut(key) {
                    call.retry_after = retry_after;
                }
                return self.fail_attempt(now, key, status, "Service Unavailable", None);
            }
        }
        let trunk = &config.trunks[trunk_id.0];
        let target = trunk.targets[target_idx];
        let listener = trunk.listener;
        let flow = Flow { listener, transport: target.transport, remote: target.addr };
        let sent_by = self.sent_by[listener.0].clone();
        let contact = self.contact_for(listener, target.transport);

        let callee = routing::rewrite(&trunk.rewrite, callee_in);
        let target_hp = target.addr.to_string();
        let transport_param = match target.transport {
            Transport::Udp => String::new(),
            t => format!(";transport={}", t.name()),
        };
        let ruri_text = if callee.is_empty() {
            format!("sip:{target_hp}{transport_param}")
        } else {
            format!("sip:{callee}@{target_hp}{transport_param}")
        };
        let Ok(ruri) = Uri::parse(Bytes::from(ruri_text)) else {
            tracing::warn!(callee = %callee, "rewritten callee does not form a valid URI");
            return self.fail_attempt(now, key, 404, "Not Found", None);
        };
        let tag = make_tag(&mut self.rng);
        let from_hdr = b_from_hdr(invite, &sent_by, &tag);
        let to_hdr = if callee.is_empty() {
            format!("<sip:{target_hp}>")
        } else {
            format!("<sip:{callee}@{target_hp}>")
        };

        let call_id = make_call_id(&mut self.rng, shard, key);
        let b = Dialog {
            call_id: Bytes::from(call_id),
            local_tag: Bytes::from(tag),
            remote_tag: None,
            from_hdr,
            to_hdr: Bytes::from(to_hdr),
            local_cseq: 0,
            remote_cseq: None,
            remote_target: ruri,
            route_set: Vec::new(),
            flow,
            contact,
            sent_by: sent_by.clone(),
        };
        let leg = leg_media(&config, listener, Some(trunk_id));
        let trunk_name = config.trunks[trunk_id.0].name.clone();
        self.send_b_invite(now, key, b, Some(trunk_id), leg, trunk_name, target.addr, callee);
    }

    /// Sends leg B's INVITE on the new dialog `b` (leg A's offer through the media plane as
    /// `leg`, the headers `headers`' trunk allows) and reports the attempt.
    #[allow(clippy::too_many_arguments)]
    fn send_b_invite(
        &mut self,
        now: Instant,
        key: CallKey,
        mut b: Dialog,
        headers: Option<TrunkId>,
        leg: LegMedia,
        trunk_name: String,
        target: SocketAddr,
        callee: String,
    ) {
        let config = Arc::clone(&self.config);
        let Some(invite) = self.call(key).and_then(|c| c.a_invite_req.clone()) else {
            return;
        };
        let invite = &*invite;
        let caller = invite.from().ok().and_then(|f| f.uri.user.clone());
        let (flow, sent_by) = (b.flow, b.sent_by.clone());
        if let (Some(q), Some(call)) = (&mut self.leg_ids, slot_call_mut(&mut self.slots, key)) {
            q.push_back(LegCallId {
                call: call.call_ref,
                side: LegSide::B,
                call_id: b.call_id.clone(),
            });
        }
        let mut msg = b.request(Method::Invite, None);
        let mf = invite.max_forwards().unwrap_or(70).saturating_sub(1).min(70);
        msg.set(HeaderName::MaxForwards, Bytes::from(mf.to_string()));
        msg.push(HeaderName::Allow, Bytes::from_static(ALLOW.as_bytes()));
        let call = self.call(key).map(|c| (c.a_supports_100rel, c.media));
        let Some((a_100rel, media)) = call else {
            return;
        };
        msg.push(
            HeaderName::Supported,
            Bytes::from_static(if a_100rel { b"100rel, timer" } else { b"timer" }),
        );
        let b_min_se = self.call(key).map_or(MIN_SE, |c| c.b_min_se);
        msg.push_fmt(HeaderName::SessionExpires, format_args!("{}", DEFAULT_SE.max(b_min_se)));
        msg.push_fmt(HeaderName::MinSe, format_args!("{b_min_se}"));
        if let Some(t) = headers {
            copy_allowed_headers(invite, &mut msg, &config.trunks[t.0].headers);
        }
        // Each attempt may leave through another listener, with another trunk's media profile.
        self.media.set_leg(media, LegSide::B, leg);
        if !invite.body.is_empty() {
            match self.media.offer(media, LegSide::A, &invite.body, now) {
                Ok(sdp) => set_body(&mut msg, invite.content_type().cloned(), sdp),
                Err(e) => {
                    tracing::debug!(error = %e, "offer refused");
                    let why = match e {
                        MediaError::NoPorts | MediaError::Relay => "no media ports",
                        _ => "bad SDP offer",
                    };
                    self.refuse_a_media(now, key, &e);
                    if self.call(key).is_some() {
                        let code = e.status_code();
                        self.end_call(
                            now,
                            key,
                            Disposition::Failed,
                            code,
                            ReleaseSide::Sbc,
                            Some(why),
                        );
                    }
                    return;
                }
            }
        }
        let b_cseq = b.local_cseq;
        let b_call_id = String::from_utf8_lossy(&b.call_id).into_owned();
        let b_txn = self.txns.send_request(now, msg, flow, &sent_by);
        let Some(call) = self.call_mut(key) else {
            return;
        };
        call.b = Some(b);
        call.b_invite = Some(b_txn);
        call.b_invite_cseq = b_cseq;
        call.b_confirmed = false;
        call.b_ack = None;
        call.rseq_map.clear();
        let call_ref = call.call_ref;
        self.own(b_txn, key, Role::BInvite);
        self.emit(
            call_ref,
            CallEventKind::Attempted {
                trunk: trunk_name,
                target,
                caller: caller
                    .map(|c| String::from_utf8_lossy(&c).into_owned())
                    .unwrap_or_default(),
                callee,
                call_id: b_call_id,
            },
        );
    }

    /// The current attempt failed with `code`: try the next one if the code allows, else relay.
    fn fail_attempt(
        &mut self,
        now: Instant,
        key: CallKey,
        code: u16,
        reason: &str,
        reason_hdr: Option<Bytes>,
    ) {
        let Some(call) = self.call_mut(key) else {
            return;
        };
        call.b_invite = None;
        // RFC 3261 section 16.7 and operator practice: 408, 5xx and transport failures mean "this
        // target could not take the call"; 4xx and 6xx are answers about the call itself.
        let retry = code == 408 || (500..600).contains(&code);
        if retry && call.attempt + 1 < call.attempts.len() {
            call.attempt += 1;
            self.start_attempt(now, key);
            return;
        }
        call.final_phrase = Some(reason.to_owned());
        call.cause = reason_hdr.as_ref().map(|h| String::from_utf8_lossy(h).into_owned());
        self.answer_a_invite(now, key, code, reason, reason_hdr);
        let disposition = match code {
            486 | 600 => Disposition::Busy,
            _ => Disposition::Failed,
        };
        self.end_call(now, key, disposition, code, ReleaseSide::Callee, None);
    }

    /// Sends a final (non-2xx) response on leg A's INVITE.
    fn answer_a_invite(
        &mut self,
        now: Instant,
        key: CallKey,
        code: u16,
        reason: &str,
        reason_hdr: Option<Bytes>,
    ) {
        let forbidden = {
            let listener = self.call(key).map_or(0, |c| c.a.flow.listener.0);
            self.policy.reject_mode(listener) == RejectMode::Forbidden
        };
        let Some(call) = self.call_mut(key) else {
            return;
        };
        let (Some(txn), Some(req)) = (call.a_invite.take(), call.a_invite_req.as_deref()) else {
            return;
        };
        // An outbound refusal (trunk CAC or rate) that is the caller's answer is answered as
        // the caller's listener says: 503 with Retry-After, or 403.
        let refusal = call.retry_after.take().filter(|_| code == 503);
        let (code, reason) = match refusal {
            Some(_) if forbidden => (403, "Forbidden"),
            _ => (code, reason),
        };
        let mut r =
            req.response_to(code, reason, Some(&String::from_utf8_lossy(&call.a.local_tag)));
        if let Some(h) = reason_hdr {
            r.push(HeaderName::Reason, h);
        }
        if let Some(secs) = refusal.filter(|_| !forbidden) {
            r.push_fmt(HeaderName::RetryAfter, format_args!("{secs}"));
        }
        self.owners.remove(&txn);
        self.txns.respond(now, txn, r);
    }

    /// Refuses leg A's INVITE because of its media: 503 when the SBC has no ports left (the
    /// caller may retry later or elsewhere), else 488 with a Warning that says what was wrong
    /// with the SDP (RFC 3261 section 20.43, code 399: miscellaneous).
    fn refuse_a_media(&mut self, now: Instant, key: CallKey, e: &MediaError) {
        let code = e.status_code();
        let host = self.call(key).map(|c| c.a.sent_by.clone()).unwrap_or_default();
        let Some(call) = self.call_mut(key) else {
            return;
        };
        let (Some(txn), Some(req)) = (call.a_invite.take(), call.a_invite_req.as_deref()) else {
            return;
        };
        let reason = if code == 503 { "Service Unavailable" } else { "Not Acceptable Here" };
        let mut r =
            req.response_to(code, reason, Some(&String::from_utf8_lossy(&call.a.local_tag)));
        let why = e.to_string().replace(['"', '\\'], "'");
        r.push_fmt(HeaderName::Warning, format_args!("399 {host} \"{why}\""));
        self.owners.remove(&txn);
        self.txns.respond(now, txn, r);
    }

    // ---- responses on leg B's INVITE --------------------------------------------------------

    fn on_response(&mut self, now: Instant, txn: TxnId, resp: Message) {
        let Some((key, role)) = self.owners.get(&txn).cloned() else {
            return;
        };
        let code = resp.code().unwrap_or(500);
        if code >= 200 {
            // Keep the owner of an INVITE client transaction: 2xx retransmissions and forks
            // still arrive through it (RFC 6026 Accepted).
            let is_invite = matches!(role, Role::BInvite);
            if !is_invite || code >= 300 {
                self.owners.remove(&txn);
            }
        }
        match role {
            Role::BInvite => self.on_b_invite_response(now, key, txn, resp),
            Role::RelayClient { server } => self.on_relay_response(now, key, server, resp),
            Role::Orphan(b) => {
                if (200..300).contains(&code) {
                    self.ack_and_bye_fork(now, *b, &resp);
                }
            }
            Role::Refresh if (200..300).contains(&code) || code < 200 => {}
            Role::Refresh => {
                // RFC 4028 section 10 and RFC 3261 12.2.1.2: 481 or 408 means the leg is gone.
                if matches!(code, 408 | 481) {
                    self.session_dead(now, key);
                }
            }
            Role::Probe { trunk, target } => {
                // Any final answer proves the target alive, except 503 (overloaded).
                if code >= 200 {
                    self.probe_result(trunk, target, code != 503);
                }
            }
            Role::Register(pending) if code >= 200 => {
                self.on_register_response(now, *pending, resp)
            }
            Role::Register(_) => {}
            Role::DtmfInfo if code >= 300 => {
                tracing::warn!(code, "INFO with a DTMF digit refused by the peer; call goes on");
            }
            Role::AInvite | Role::RelayServer { .. } | Role::Fire | Role::DtmfInfo => {}
        }
    }

    fn send_probe(&mut self, now: Instant, trunk_id: TrunkId, target_idx: usize) {
        if self.prober.is_none() {
            return;
        }
        let config = Arc::clone(&self.config);
        let trunk = &config.trunks[trunk_id.0];
        let (Some(target), Some(ka)) = (trunk.targets.get(target_idx), trunk.options) else {
            return;
        };
        let sent_by = self.sent_by[trunk.listener.0].clone();
        let host = sent_by.rsplit_once(':').map_or(sent_by.as_str(), |(h, _)| h);
        let Ok(uri) = Uri::parse(Bytes::from(format!("sip:{}", target.addr))) else {
            return;
        };
        let mut m = Message::request(Method::Options, uri);
        m.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
        m.push_fmt(
            HeaderName::From,
            format_args!("<sip:keepalive@{host}>;tag={}", make_tag(&mut self.rng)),
        );
        m.push_fmt(HeaderName::To, format_args!("<sip:{}>", target.addr));
        m.push_fmt(HeaderName::CallId, format_args!("{:016x}", self.rng.random::<u64>()));
        m.push(HeaderName::CSeq, Bytes::from_static(b"1 OPTIONS"));
        let flow =
            Flow { listener: trunk.listener, transport: target.transport, remote: target.addr };
        let txn = self.txns.send_request(now, m, flow, &sent_by);
        let idle = CallKey { index: u32::MAX, generation: 0 };
        self.owners.insert(txn, (idle, Role::Probe { trunk: trunk_id, target: target_idx }));
        self.timers.push(Reverse((
            now + ka.interval,
            idle,
            CallTimer::Probe(trunk_id, target_idx),
        )));
    }

    fn probe_result(&mut self, trunk: TrunkId, target: usize, ok: bool) {
        let Some(ka) = self.config.trunks.get(trunk.0).and_then(|t| t.options) else {
            return;
        };
        let Some(prober) = self.prober.as_mut() else {
            return;
        };
        let up = prober.health.is_up(trunk, target);
        let counter = prober.counters.entry((trunk, target)).or_default();
        if let Some(new) = counter.record(ok, up, ka.down_after, ka.up_after) {
            prober.health.set(trunk, target, new);
            let name = &self.config.trunks[trunk.0].name;
            if new {
                tracing::info!(trunk = %name, target, "trunk target up");
            } else {
                tracing::warn!(trunk = %name, target, "trunk target down (OPTIONS)");
            }
        }
    }

    fn on_b_invite_response(&mut self, now: Instant, key: CallKey, txn: TxnId, resp: Message) {
        let code = resp.code().unwrap_or(500);
        // A call that ended hands its pending INVITE over as an orphan (see end_call), so the
        // call is alive here and the transaction is its current attempt.
        let Some(call) = self.call_mut(key) else { return };
        if call.b_invite != Some(txn) {
            return;
        }
        match code {
            100 => {}
            101..=199 => self.on_b_provisional(now, key, resp),
            200..=299 => self.on_b_success(now, key, resp),
            422 if min_se_above(&resp, call.b_min_se).is_some() && call.b_min_se == MIN_SE => {
                // RFC 4028 section 7.4: retry once with the interval the callee asked for; the
                // caller never sees the 422.
                call.b_min_se = min_se_above(&resp, call.b_min_se).unwrap_or(MIN_SE);
                call.b_invite = None;
                self.start_attempt(now, key);
            }
            _ => {
                let reason = match &resp.start {
                    sip::StartLine::Response(s) => String::from_utf8_lossy(&s.reason).into_owned(),
                    sip::StartLine::Request(_) => String::new(),
                };
                let reason_hdr = resp.header(&HeaderName::Reason).cloned();
                self.fail_attempt(now, key, code, &reason, reason_hdr);
            }
        }
    }

    fn on_b_provisional(&mut self, now: Instant, key: CallKey, resp: Message) {
        let code = resp.code().unwrap_or(180);
        let reliable = resp.has_token(&HeaderName::Require, "100rel");
        let b_rseq = resp.rseq();
        let Some(call) = self.call_mut(key) else {
            return;
        };
        let media = call.media;
        let a_100rel = call.a_supports_100rel;
        if let Some(b) = call.b.as_mut()
            && b.remote_tag.is_none()
        {
            b.learn_from_response(&resp);
        }
        let call_ref = call.call_ref;
        let Some(req) = call.a_invite_req.as_deref() else {
            return;
        };
        let Some(txn) = call.a_invite else { return };
        let mut r = req.response_to(
            code,
            &reason_of(&resp),
            Some(&String::from_utf8_lossy(&call.a.local_tag)),
        );
        r.push(HeaderName::Contact, call.a.contact.clone());
        let mut prack_b = None;
        if reliable && let Some(b_rseq) = b_rseq {
            if a_100rel {
                call.a_rseq += 1;
                let a_rseq = call.a_rseq;
                call.rseq_map.push((a_rseq, b_rseq));
                r.push(HeaderName::Require, Bytes::from_static(b"100rel"));
                r.push_fmt(HeaderName::RSeq, format_args!("{a_rseq}"));
            } else {
                // Leg A cannot PRACK: the SBC acknowledges leg B's reliable provisional itself.
                prack_b = Some(b_rseq);
            }
        }
        let body = if resp.body.is_empty() || !is_sdp(&resp) {
            None
        } else {
            match self.media.answer(media, LegSide::B, &resp.body, now) {
                Ok(sdp) => Some(sdp),
                Err(e) => {
                    tracing::debug!(error = %e, "early answer refused; relaying the provisional without SDP");
                    None
                }
            }
        };
        let early_media = body.is_some();
        if let Some(sdp) = body {
            set_body(&mut r, resp.content_type().cloned(), sdp);
        }
        self.txns.respond(now, txn, r);
        if early_media {
            self.watch_early_media(now, key);
        }
        if let Some(b_rseq) = prack_b {
            self.send_own_prack(now, key, b_rseq);
        }
        if matches!(code, 180 | 183) {
            self.emit(call_ref, CallEventKind::Ringing);
        }
    }

    fn send_own_prack(&mut self, now: Instant, key: CallKey, b_rseq: u32) {
        let Some(call) = self.call_mut(key) else {
            return;
        };
        let invite_cseq = call.b_invite_cseq;
        let Some(b) = call.b.as_mut() else { return };
        let mut prack = b.request(Method::Prack, None);
        prack.push_fmt(HeaderName::RAck, format_args!("{b_rseq} {invite_cseq} INVITE"));
        let (flow, sent_by) = (b.flow, b.sent_by.clone());
        let t = self.txns.send_request(now, prack, flow, &sent_by);
        self.own(t, key, Role::Fire);
    }

    fn on_b_success(&mut self, now: Instant, key: CallKey, resp: Message) {
        let Some(call) = self.call_mut(key) else {
            return;
        };
        if call.b_confirmed {
            let same_dialog = resp.to().ok().and_then(|t| t.tag())
                == call.b.as_ref().and_then(|b| b.remote_tag.clone());
            if same_dialog {
                // A retransmitted 2xx: our ACK was lost.
                if let (Some(ack), Some(b)) = (call.b_ack.clone(), call.b.as_ref()) {
                    let flow = b.flow;
                    self.txns.send_stateless(flow, ack);
                }
            } else {
                // A second fork answered: ACK it and hang it up (RFC 3261 section 13.2.2.4).
                if let Some(b) = call.b.clone() {
                    self.ack_and_bye_fork(now, b, &resp);
                }
            }
            return;
        }
        call.b_confirmed = true;
        call.phase = Phase::Answered;
        call.ring_deadline = None;
        let media = call.media;
        let call_ref = call.call_ref;
        let late_offer = call.a_invite_req.as_deref().is_some_and(|r| r.body.is_empty());
        let Some(b) = call.b.as_mut() else { return };
        // The 2xx may come from another fork than the early dialog we learned: it wins.
        b.remote_tag = None;
        b.learn_from_response(&resp);
        let b_cseq = call.b_invite_cseq;
        call.session[idx(LegSide::B)] = SessionTimer::negotiate_uac(&resp);
        let due =
            [LegSide::A, LegSide::B].map(|side| call.arm_session(side, now).map(|at| (at, side)));
        for (at, side) in due.into_iter().flatten() {
            self.timers.push(Reverse((at, key, CallTimer::Session(side))));
        }

        // Body: an answer to A's offer, or (late offer) B's offer relayed to A.
        let sdp = if resp.body.is_empty() {
            Ok(None)
        } else if late_offer {
            self.media.offer(media, LegSide::B, &resp.body, now).map(Some)
        } else {
            self.media.answer(media, LegSide::B, &resp.body, now).map(Some)
        };
        let call_salt: u64 = self.rng.random();
        let sdp = match sdp {
            Ok(sdp) => sdp,
            Err(e) => {
                // Leg B is up but its media cannot be bridged: hang it up, refuse leg A.
                tracing::debug!(error = %e, "SDP in the 2xx refused");
                if let Some(call) = slot_call_mut(&mut self.slots, key) {
                    Self::send_b_ack(&mut self.txns, call, b_cseq, None, call_salt);
                }
                self.send_bye(now, key, LegSide::B);
                self.refuse_a_media(now, key, &e);
                let code = e.status_code();
                let why = Some("bad SDP answer");
                return self.end_call(now, key, Disposition::Failed, code, ReleaseSide::Sbc, why);
            }
        };
        let timeout = self.media_timeout_of(key).map(|t| MEDIA_RECHECK.min(t));
        let failure = self.media_can_fail(key).then_some(MEDIA_FAILURE_POLL);
        let watched = self.call(key).is_some_and(|c| c.media_watched);
        // A chain armed by early media goes on into the answered call (at most a poll later).
        if let Some(after) = timeout.into_iter().chain(failure).min().filter(|_| !watched) {
            self.timers.push(Reverse((now + after, key, CallTimer::Media)));
            if let Some(call) = slot_call_mut(&mut self.slots, key) {
                call.media_watched = true;
            }
        }
        if self.media.dtmf_info_leg(media).is_some() {
            self.timers.push(Reverse((now + DTMF_POLL, key, CallTimer::Dtmf)));
        }
        let Some(call) = slot_call_mut(&mut self.slots, key) else {
            return;
        };
        if !late_offer {
            let salt = call_salt;
            Self::send_b_ack(&mut self.txns, call, b_cseq, None, salt);
        } else {
            call.b_ack_pending = true;
        }
        let Some(req) = call.a_invite_req.as_deref() else {
            return;
        };
        let Some(a_txn) = call.a_invite.take() else {
            return;
        };
        let mut r = req.response_to(
            200,
            &reason_of(&resp),
            Some(&String::from_utf8_lossy(&call.a.local_tag)),
        );
        r.push(HeaderName::Contact, call.a.contact.clone());
        r.push(HeaderName::Allow, Bytes::from_static(ALLOW.as_bytes()));
        if let Some(st) = call.session[idx(LegSide::A)] {
            r.push(HeaderName::SessionExpires, st.header(false));
            if req.has_token(&HeaderName::Supported, "timer") {
                r.push(HeaderName::Require, Bytes::from_static(b"timer"));
            }
        }
        if let Some(sdp) = sdp {
            set_body(&mut r, resp.content_type().cloned(), sdp);
        }
        self.own(a_txn, key, Role::AInvite);
        self.txns.respond(now, a_txn, r);
        self.emit(call_ref, CallEventKind::Answered);
    }

    fn send_b_ack(
        txns: &mut TransactionLayer,
        call: &mut Call,
        cseq: u32,
        body: Option<(Option<Bytes>, Bytes)>,
        salt: u64,
    ) {
        let Some(b) = call.b.as_mut() else { return };
        let mut ack = b.request(Method::Ack, Some(cseq));
        // The ACK of a 2xx is its own transaction with a new branch (RFC 3261 section 13.2.2.4).
        ack.headers.insert(0, b.ack_via(salt));
        if let Some((ct, sdp)) = body {
            set_body(&mut ack, ct, sdp);
        }
        let data = ack.to_bytes();
        txns.send_stateless(b.flow, data.clone());
        call.b_ack = Some(data);
        call.b_ack_pending = false;
    }

    /// ACK and BYE a 2xx that belongs to no live dialog of ours (late fork, answer after CANCEL).
    /// ACK and BYE a 2xx from another fork of `b`'s INVITE (same Call-ID and From tag, another
    /// To tag).
    fn ack_and_bye_fork(&mut self, now: Instant, mut b: Dialog, resp: &Message) {
        b.remote_tag = None;
        b.learn_from_response(resp);
        let cseq = resp.cseq().map(|c| c.seq).unwrap_or(1);
        self.ack_and_bye_dialog(now, b, cseq);
    }

    fn ack_and_bye_dialog(&mut self, now: Instant, mut d: Dialog, invite_cseq: u32) {
        let salt = self.rng.random();
        let mut ack = d.request(Method::Ack, Some(invite_cseq));
        ack.headers.insert(0, d.ack_via(salt));
        self.txns.send_stateless(d.flow, ack.to_bytes());
        d.local_cseq = d.local_cseq.max(invite_cseq);
        let bye = d.request(Method::Bye, None);
        let t = self.txns.send_request(now, bye, d.flow, &d.sent_by);
        // Owned by no call: its response is irrelevant.
        let _ = t;
    }

    // ---- ACK, CANCEL, timeouts ------------------------------------------------------------

    fn on_ack(&mut self, now: Instant, invite: Option<TxnId>, ack: Message, _flow: Flow) {
        // The ACK of our 2xx on leg A: its INVITE transaction needs no owner any more.
        if let Some(t) = invite
            && matches!(self.owners.get(&t), Some((_, Role::AInvite)))
        {
            self.owners.remove(&t);
        }
        let call_salt: u64 = self.rng.random();
        let ack_salt = call_salt;
        let Some((key, side)) = self.find_call(&ack) else {
            return;
        };
        let Some(call) = self.call_mut(key) else {
            return;
        };
        if side == LegSide::A && call.b_ack_pending {
            // Late offer: A's ACK carries the answer to B's offer.
            let b_cseq = call.b_invite_cseq;
            let media = call.media;
            let body = if ack.body.is_empty() {
                None
            } else {
                let ct = ack.content_type().cloned();
                self.media.answer(media, LegSide::A, &ack.body, now).ok().map(|sdp| (ct, sdp))
            };
            if let Some(call) = slot_call_mut(&mut self.slots, key) {
                let salt = call_salt;
                Self::send_b_ack(&mut self.txns, call, b_cseq, body, salt);
            }
            return;
        }
        // The ACK of a relayed re-INVITE's 2xx goes end to end, with the other leg's CSeq.
        let Some(re) = call.reinvite.clone() else {
            return;
        };
        if re.from != side {
            return;
        }
        let ack_cseq = ack.cseq().map(|c| c.seq).ok();
        if call.leg(side).and_then(|d| d.remote_cseq) != ack_cseq {
            return;
        }
        call.reinvite = None;
        let other = other_side(side);
        let media = call.media;
        let Some(d) = call.leg(other) else { return };
        let mut out = d.request(Method::Ack, Some(re.client_cseq));
        let salt = ack_salt;
        out.headers.insert(0, d.ack_via(salt));
        let flow = d.flow;
        if !ack.body.is_empty()
            && is_sdp(&ack)
            && let Ok(sdp) = self.media.answer(media, side, &ack.body, now)
        {
            set_body(&mut out, ack.content_type().cloned(), sdp);
        }
        self.txns.send_stateless(flow, out.to_bytes());
        let _ = now;
    }

    fn on_cancel(&mut self, now: Instant, invite: TxnId) {
        let Some((key, role)) = self.owners.get(&invite).cloned() else {
            return;
        };
        match role {
            Role::AInvite => {
                self.cancel_b(now, key);
                self.answer_a_invite(now, key, 487, "Request Terminated", None);
                self.end_call(now, key, Disposition::Cancelled, 487, ReleaseSide::Caller, None);
            }
            Role::RelayServer { client, .. } => {
                // A re-INVITE was cancelled: cancel the relayed copy; its 487 is relayed back.
                if let Some(t) = self.txns.cancel(now, client) {
                    self.own(t, key, Role::Fire);
                }
            }
            _ => {}
        }
    }

    fn cancel_b(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.call_mut(key) else {
            return;
        };
        // b_invite stays set: if the call ends now, end_call turns it into an orphan so that a
        // 2xx racing the CANCEL is still ACKed and BYEd. A second cancel() returns the first.
        if let Some(b_txn) = call.b_invite
            && !call.b_confirmed
            && let Some(t) = self.txns.cancel(now, b_txn)
        {
            self.own(t, key, Role::Fire);
        }
    }

    fn ring_timeout(&mut self, now: Instant, key: CallKey, at: Instant) {
        let Some(call) = self.call(key) else { return };
        if call.phase != Phase::Early || call.ring_deadline != Some(at) {
            return;
        }
        self.cancel_b(now, key);
        self.answer_a_invite(now, key, 408, "Request Timeout", None);
        self.end_call(now, key, Disposition::NoAnswer, 408, ReleaseSide::Sbc, Some("ring timeout"));
    }

    fn session_timeout(&mut self, now: Instant, key: CallKey, side: LegSide, at: Instant) {
        let Some(call) = self.call_mut(key) else { return };
        if call.session_due[idx(side)] != Some(at) {
            return;
        }
        let Some(st) = call.session[idx(side)] else { return };
        if !st.we_refresh {
            return self.session_dead(now, key);
        }
        let Some(d) = call.leg(side) else { return };
        let mut update = d.request(Method::Update, None);
        update.push(HeaderName::SessionExpires, st.header(true));
        update.push(HeaderName::Supported, Bytes::from_static(b"timer"));
        let (flow, sent_by) = (d.flow, d.sent_by.clone());
        if let Some(at) = call.arm_session(side, now) {
            self.timers.push(Reverse((at, key, CallTimer::Session(side))));
        }
        let t = self.txns.send_request(now, update, flow, &sent_by);
        self.own(t, key, Role::Refresh);
    }

    /// A leg stopped refreshing or refused our refresh: the call is over on both legs.
    fn session_dead(&mut self, now: Instant, key: CallKey) {
        if self.call(key).is_none_or(|c| c.phase != Phase::Answered) {
            return;
        }
        self.send_bye(now, key, LegSide::A);
        self.send_bye(now, key, LegSide::B);
        self.end_call(
            now,
            key,
            Disposition::Answered,
            200,
            ReleaseSide::Sbc,
            Some("session timer expired"),
        );
    }

    /// The shorter media inactivity timeout of the call's two legs; `None`: not watched.
    fn media_timeout_of(&self, key: CallKey) -> Option<Duration> {
        let call = self.call(key)?;
        let a = leg_media(&self.config, call.origin.listener(), call.origin.trunk());
        let trunk = call.out_trunk().and_then(|t| self.config.trunks.get(t.0));
        let b = match &call.client {
            Some(c) => Some(leg_media(&self.config, c.flow.listener, None)),
            None => trunk.map(|t| leg_media(&self.config, t.listener, call.out_trunk())),
        };
        [a.inactivity_timeout, b.and_then(|b| b.inactivity_timeout)].into_iter().flatten().min()
    }

    /// Whether the call's media runs DTLS or ICE, whose failures the relay reports.
    fn media_can_fail(&self, key: CallKey) -> bool {
        self.call(key).is_some_and(|call| self.media.can_fail(call.media))
    }

    /// The media check of an answered call: ends it when the relay reports a media failure or
    /// when its RTP has stopped for longer than the timeout, else looks again when it could next
    /// expire (or fail).
    fn media_check(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.call(key) else { return };
        if call.phase == Phase::Early {
            return self.early_media_check(now, key);
        }
        if let Some(failure) = self.media.failure(call.media) {
            let (cause, text) = failure_reason(failure);
            tracing::info!(%text, "media failed: ending the call");
            let reason = Bytes::from(format!("Q.850;cause={cause};text=\"{text}\""));
            self.send_bye_with(now, key, LegSide::A, Some(reason.clone()));
            self.send_bye_with(now, key, LegSide::B, Some(reason));
            let why = Some(text.as_str());
            return self.end_call(now, key, Disposition::Answered, 200, ReleaseSide::Sbc, why);
        }
        let can_fail = self.media.can_fail(call.media);
        if !can_fail && self.media_timeout_of(key).is_none() {
            if let Some(call) = self.call_mut(key) {
                call.media_watched = false;
            }
            return;
        }
        let next = match self.media.inactivity_deadline(call.media) {
            Some(deadline) if deadline <= now => {
                let reason = Bytes::from_static(b"Q.850;cause=102;text=\"media timeout\"");
                self.send_bye_with(now, key, LegSide::A, Some(reason.clone()));
                self.send_bye_with(now, key, LegSide::B, Some(reason));
                let why = Some("media timeout");
                return self.end_call(now, key, Disposition::Answered, 200, ReleaseSide::Sbc, why);
            }
            Some(deadline) => deadline,
            // Held both ways (or no stream yet): nothing can expire now; look again later.
            None => now + MEDIA_RECHECK,
        };
        let next = if can_fail { next.min(now + MEDIA_FAILURE_POLL) } else { next };
        self.timers.push(Reverse((next, key, CallTimer::Media)));
    }

    /// Early media (an SDP answer in a provisional) on a call whose media can fail (DTLS,
    /// ICE): watch it from now, not only from the 2xx, so that a failed handshake ends the
    /// attempt while it rings instead of the call being answered and hung up at once.
    fn watch_early_media(&mut self, now: Instant, key: CallKey) {
        if !self.media_can_fail(key) {
            return;
        }
        let Some(call) = self.call_mut(key) else { return };
        if call.media_watched {
            return;
        }
        call.media_watched = true;
        self.timers.push(Reverse((now + MEDIA_FAILURE_POLL, key, CallTimer::Media)));
    }

    /// The media check of a call still ringing with early media: a media failure cancels leg
    /// B and refuses leg A with 488 and the failure as Reason; otherwise look again later.
    fn early_media_check(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.call(key) else { return };
        let Some(failure) = self.media.failure(call.media) else {
            self.timers.push(Reverse((now + MEDIA_FAILURE_POLL, key, CallTimer::Media)));
            return;
        };
        let (cause, text) = failure_reason(failure);
        tracing::info!(%text, "media failed before the answer: ending the call");
        let reason = Bytes::from(format!("Q.850;cause={cause};text=\"{text}\""));
        self.cancel_b(now, key);
        self.answer_a_invite(now, key, 488, "Not Acceptable Here", Some(reason));
        let why = Some(text.as_str());
        self.end_call(now, key, Disposition::Failed, 488, ReleaseSide::Sbc, why);
    }

    fn on_txn_failed(&mut self, now: Instant, txn: TxnId, code: u16, reason: &str) {
        let Some((key, role)) = self.owners.remove(&txn) else {
            return;
        };
        match role {
            Role::BInvite => {
                let current = self.call(key).is_some_and(|c| c.b_invite == Some(txn));
                if current {
                    self.fail_attempt(now, key, code, reason, None);
                }
            }
            Role::AInvite => {
                // Our 2xx was never ACKed (RFC 3261 section 13.3.1.4): the call is dead.
                if self.call(key).is_some_and(|c| c.phase == Phase::Answered) {
                    self.send_bye(now, key, LegSide::B);
                    self.send_bye(now, key, LegSide::A);
                    self.end_call(
                        now,
                        key,
                        Disposition::Answered,
                        200,
                        ReleaseSide::Sbc,
                        Some("no ACK"),
                    );
                }
            }
            Role::RelayClient { server } => {
                if let Some((_, Role::RelayServer { request, .. })) = self.owners.get(&server) {
                    let resp = request.response_to(code, reason, None);
                    let request = request.clone();
                    // As for a final response relayed from the other leg: the re-INVITE is over,
                    // or every later one would be answered 491 as glare.
                    if request.method() == Some(&Method::Invite)
                        && let Some(call) = self.call_mut(key)
                    {
                        call.reinvite = None;
                    }
                    self.relayed_offer_refused(now, key, &request, code);
                    self.finish_server(now, key, server, resp);
                }
            }
            Role::Probe { trunk, target } => self.probe_result(trunk, target, false),
            Role::Refresh => self.session_dead(now, key),
            Role::Register(pending) => self.on_register_failed(now, *pending, code, reason),
            Role::DtmfInfo => {
                tracing::warn!(code, reason, "INFO with a DTMF digit failed; call goes on");
            }
            Role::RelayServer { .. } | Role::Fire | Role::Orphan(_) => {}
        }
    }

    fn on_stray_response(&mut self, now: Instant, resp: Message, _flow: Flow) {
        // A 2xx to our INVITE arriving after the client transaction is gone: re-ACK if it is
        // the confirmed dialog, else it is a fork we never took.
        let is_invite_2xx = resp.code().is_some_and(|c| (200..300).contains(&c))
            && resp.cseq().is_ok_and(|c| c.method == Method::Invite);
        if !is_invite_2xx {
            return;
        }
        let Some(call_id) = resp.call_id() else {
            return;
        };
        let Some((_, key)) = decode_call_id(call_id) else {
            return;
        };
        let Some(call) = self.call(key) else { return };
        let same = call.b.as_ref().is_some_and(|b| {
            b.call_id == call_id && b.remote_tag == resp.to().ok().and_then(|t| t.tag())
        });
        if same {
            if let (Some(ack), Some(b)) = (call.b_ack.clone(), call.b.as_ref()) {
                let flow = b.flow;
                self.txns.send_stateless(flow, ack);
            }
        } else if let Some(b) = call.b.clone() {
            let mut d = b;
            d.remote_tag = None;
            d.learn_from_response(&resp);
            let cseq = resp.cseq().map(|c| c.seq).unwrap_or(1);
            self.ack_and_bye_dialog(now, d, cseq);
        }
    }

    // ---- in-dialog requests ----------------------------------------------------------------

    /// Finds the call and leg of an in-dialog message by its Call-ID (and checks the tags).
    fn find_call(&self, msg: &Message) -> Option<(CallKey, LegSide)> {
        let call_id = msg.call_id()?;
        if let Some(&key) = self.by_a_call_id.get(call_id) {
            return Some((key, LegSide::A));
        }
        let (_, key) = decode_call_id(call_id)?;
        let call = self.call(key)?;
        (call.b.as_ref()?.call_id == *call_id).then_some((key, LegSide::B))
    }

    fn on_in_dialog_request(&mut self, now: Instant, txn: TxnId, req: Message, _flow: Flow) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        let Some((key, side)) = self.find_call(&req) else {
            return self.reply(now, txn, &req, 481, "Call/Transaction Does Not Exist");
        };
        let to_tag = req.to().ok().and_then(|t| t.tag());
        let cseq = req.cseq().map(|c| c.seq).unwrap_or(0);
        let Some(call) = self.call_mut(key) else {
            return;
        };
        let Some(dialog) = call.leg(side) else {
            return self.reply(now, txn, &req, 481, "Call/Transaction Does Not Exist");
        };
        if to_tag.as_ref() != Some(&dialog.local_tag) {
            return self.reply(now, txn, &req, 481, "Call/Transaction Does Not Exist");
        }
        // RFC 3261 section 12.2.2: a lower CSeq than seen before is out of order (500).
        if dialog.remote_cseq.is_some_and(|r| cseq < r) && method != Method::Ack {
            return self.reply(now, txn, &req, 500, "Server Internal Error");
        }
        dialog.remote_cseq = Some(cseq);
        if matches!(method, Method::Invite | Method::Update)
            && let Some(at) = call.arm_session(side, now)
        {
            // A re-INVITE or UPDATE from the peer is its session refresh (RFC 4028 section 10).
            self.timers.push(Reverse((at, key, CallTimer::Session(side))));
            if method == Method::Update && req.body.is_empty() {
                // A pure refresh concerns this leg only: answered here, not relayed.
                let Some(st) = self.call(key).and_then(|c| c.session[idx(side)]) else { return };
                let mut r = req.response_to(200, "OK", None);
                r.push(HeaderName::SessionExpires, st.header(false));
                r.push(HeaderName::Require, Bytes::from_static(b"timer"));
                return self.txns.respond(now, txn, r);
            }
        }
        let Some(call) = self.call_mut(key) else { return };
        match method {
            Method::Bye => self.on_bye(now, key, side, txn, &req),
            Method::Invite => {
                if call.reinvite.is_some() || call.phase != Phase::Answered {
                    // RFC 3261 section 14.2: an INVITE while one is pending on the dialog is glare.
                    let mut r = req.response_to(491, "Request Pending", None);
                    r.push(HeaderName::RetryAfter, Bytes::from_static(b"1"));
                    return self.txns.respond(now, txn, r);
                }
                self.relay_request(now, key, side, txn, req);
            }
            Method::Info if self.dtmf_info(now, key, side, txn, &req) => {}
            _ => self.relay_request(now, key, side, txn, req),
        }
    }

    /// An INFO on the INFO leg of a call that interworks DTMF: a key press (`application/
    /// dtmf-relay` or `application/dtmf`) is answered here and played as RFC 4733 events toward
    /// the other leg's peer. `false`: not such an INFO; the caller relays it as any request.
    fn dtmf_info(
        &mut self,
        now: Instant,
        key: CallKey,
        side: LegSide,
        txn: TxnId,
        req: &Message,
    ) -> bool {
        let Some(media) = self.call(key).map(|c| c.media) else { return false };
        if self.media.dtmf_info_leg(media) != Some(side) {
            return false;
        }
        let event = match dtmf::parse_info(req.content_type().map(|c| &c[..]), &req.body) {
            dtmf::InfoBody::Other => return false,
            dtmf::InfoBody::Malformed(why) => {
                tracing::debug!(why, "malformed DTMF INFO");
                self.reply(now, txn, req, 400, "Bad DTMF Body");
                return true;
            }
            dtmf::InfoBody::Digit(event) => event,
        };
        self.reply(now, txn, req, 200, "OK");
        let digit = event.digit().unwrap_or('?');
        // RFC 6086 leaves the INFO package to the peers: a digit the other side cannot receive
        // is answered 200 all the same (the sender cannot do better), and logged.
        if self.media.send_dtmf(media, other_side(side), event) {
            self.stats.dtmf_interworked += 1;
            tracing::info!(%digit, duration_ms = event.duration_ms, "DTMF: SIP INFO to RFC 4733");
        } else {
            tracing::warn!(%digit, "DTMF INFO dropped: the other leg negotiated no telephone-event");
        }
        true
    }

    /// Sends the key presses the relay detected on the 4733 leg of an interworking call as
    /// INFOs on its INFO leg, then polls again in [`DTMF_POLL`].
    fn dtmf_check(&mut self, now: Instant, key: CallKey) {
        let Some(media) = self.call(key).map(|c| c.media) else { return };
        let Some(info) = self.media.dtmf_info_leg(media) else { return };
        while let Some((from, event)) = self.media.poll_dtmf(media) {
            let Some(digit) = event.digit().filter(|_| from != info) else { continue };
            let Some(call) = self.call_mut(key) else { return };
            if info == LegSide::B && !call.b_confirmed {
                continue;
            }
            let Some(d) = call.leg(info) else { continue };
            let mut req = d.request(Method::Info, None);
            let body = format!("Signal={digit}\r\nDuration={}\r\n", event.duration_ms);
            set_body(&mut req, Some(Bytes::from_static(b"application/dtmf-relay")), body.into());
            let (flow, sent_by) = (d.flow, d.sent_by.clone());
            let t = self.txns.send_request(now, req, flow, &sent_by);
            self.own(t, key, Role::DtmfInfo);
            self.stats.dtmf_interworked += 1;
            tracing::info!(%digit, duration_ms = event.duration_ms, "DTMF: RFC 4733 to SIP INFO");
        }
        self.timers.push(Reverse((now + DTMF_POLL, key, CallTimer::Dtmf)));
    }

    fn on_bye(&mut self, now: Instant, key: CallKey, side: LegSide, txn: TxnId, req: &Message) {
        // The BYE is answered at once: the call is over whatever the other leg says.
        let r = req.response_to(200, "OK", None);
        self.txns.respond(now, txn, r);
        let other = other_side(side);
        let early = self.call(key).is_some_and(|c| c.phase == Phase::Early);
        if early {
            // BYE on an early dialog: treat as a cancel of the whole call.
            self.cancel_b(now, key);
            self.answer_a_invite(now, key, 487, "Request Terminated", None);
            self.end_call(now, key, Disposition::Cancelled, 487, ReleaseSide::Caller, None);
            return;
        }
        if let Some(call) = self.call_mut(key) {
            call.cause =
                req.header(&HeaderName::Reason).map(|h| String::from_utf8_lossy(h).into_owned());
        }
        self.send_bye(now, key, other);
        let released_by =
            if side == LegSide::A { ReleaseSide::Caller } else { ReleaseSide::Callee };
        self.end_call(now, key, Disposition::Answered, 200, released_by, None);
    }

    fn send_bye(&mut self, now: Instant, key: CallKey, side: LegSide) {
        self.send_bye_with(now, key, side, None);
    }

    /// BYE on one leg, with a Reason header (RFC 3326) when the SBC has one to give.
    fn send_bye_with(&mut self, now: Instant, key: CallKey, side: LegSide, reason: Option<Bytes>) {
        let Some(call) = self.call_mut(key) else {
            return;
        };
        if side == LegSide::B && !call.b_confirmed {
            return;
        }
        let Some(d) = call.leg(side) else { return };
        let mut bye = d.request(Method::Bye, None);
        if let Some(reason) = reason {
            bye.push(HeaderName::Reason, reason);
        }
        let (flow, sent_by) = (d.flow, d.sent_by.clone());
        let t = self.txns.send_request(now, bye, flow, &sent_by);
        self.own(t, key, Role::Fire);
    }

    /// Relays an in-dialog request to the other leg as a new request of that leg's dialog.
    fn relay_request(
        &mut self,
        now: Instant,
        key: CallKey,
        side: LegSide,
        txn: TxnId,
        req: Message,
    ) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        let other = other_side(side);
        let config = Arc::clone(&self.config);
        let Some(call) = self.call_mut(key) else {
            return;
        };
        let media = call.media;
        let session_other = call.session[idx(other)];
        let header_trunk = match other {
            LegSide::B => call.out_trunk(),
            LegSide::A => call.origin.trunk(),
        };
        // PRACK: map leg A's RAck to leg B's RSeq (RFC 3262 section 7.2).
        let rack = if method == Method::Prack {
            let Some((a_rseq, _, _)) = req.rack() else {
                return self.reply(now, txn, &req, 400, "Missing RAck");
            };
            match call.rseq_map.iter().find(|(a, _)| *a == a_rseq) {
                Some(&(_, b_rseq)) => Some((b_rseq, call.b_invite_cseq)),
                None => return self.reply(now, txn, &req, 481, "Call/Transaction Does Not Exist"),
            }
        } else {
            None
        };
        if matches!(method, Method::Invite | Method::Update)
            && let Some(d) = call.leg(side)
        {
            d.refresh_target(&req);
        }
        let Some(d) = call.leg(other) else {
            return self.reply(now, txn, &req, 481, "Call/Transaction Does Not Exist");
        };
        if other == LegSide::B && d.remote_tag.is_none() {
            return self.reply(now, txn, &req, 481, "Call/Transaction Does Not Exist");
        }
        let mut out = d.request(method.clone(), None);
        let out_cseq = d.local_cseq;
        let (flow, sent_by) = (d.flow, d.sent_by.clone());
        if let Some((b_rseq, invite_cseq)) = rack {
            out.push_fmt(HeaderName::RAck, format_args!("{b_rseq} {invite_cseq} INVITE"));
        }
        if matches!(method, Method::Invite | Method::Update)
            && let Some(st) = session_other
        {
            out.push(HeaderName::SessionExpires, st.header(true));
            out.push(HeaderName::Supported, Bytes::from_static(b"timer"));
        }
        for name in [HeaderName::Event, HeaderName::SubscriptionState, HeaderName::ReferTo] {
            if let Some(v) = req.header(&name) {
                out.push(name, v.clone());
            }
        }
        if let Some(t) = header_trunk {
            copy_allowed_headers(&req, &mut out, &config.trunks[t.0].headers);
        }
        if !req.body.is_empty() {
            let ct = req.content_type().cloned();
            if !is_sdp(&req) && matches!(method, Method::Invite | Method::Update | Method::Prack) {
                // As for a new INVITE: the SBC bridges SDP only, and relaying another body (a
                // multipart one with SDP inside) would carry the peer's addresses past the relay.
                return self.reject(now, txn, &req, 415, "Unsupported Media Type");
            }
            let body = if is_sdp(&req) {
                let sdp = if method == Method::Prack || method == Method::Ack {
                    self.media.answer(media, side, &req.body, now)
                } else {
                    self.media.offer(media, side, &req.body, now)
                };
                match sdp {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "in-dialog SDP refused");
                        return self.reply(now, txn, &req, 488, "Not Acceptable Here");
                    }
                }
            } else {
                req.body.clone()
            };
            set_body(&mut out, ct, body);
        }
        let client = self.txns.send_request(now, out, flow, &sent_by);
        self.own(txn, key, Role::RelayServer { request: Box::new(req), client });
        self.own(client, key, Role::RelayClient { server: txn });
        if let Some(call) = self.call_mut(key) {
            call.pending_servers.push(txn);
            if method == Method::Invite {
                call.reinvite = Some(ReInvite { from: side, client_cseq: out_cseq });
            }
        }
    }

    /// A response to a relayed in-dialog request: relay it back on the original leg.
    fn on_relay_response(&mut self, now: Instant, key: CallKey, server: TxnId, resp: Message) {
        let code = resp.code().unwrap_or(500);
        if code == 100 {
            return;
        }
        let Some((_, Role::RelayServer { request, .. })) = self.owners.get(&server) else {
            return;
        };
        let request = request.clone();
        let Some(call) = self.call_mut(key) else {
            return;
        };
        let media = call.media;
        let is_invite = request.method() == Some(&Method::Invite);
        let side = call.by_side_of(&request);
        if is_invite && (200..300).contains(&code) {
            // Target refresh from the other leg's 2xx.
            if let Some(d) = call.leg(other_side(side)) {
                d.refresh_target(&resp);
            }
        }
        if is_invite && code >= 300 {
            call.reinvite = None;
        }
        let session_side = call.session[idx(side)];
        let Some(d) = call.leg(side) else { return };
        let contact = d.contact.clone();
        self.relayed_offer_refused(now, key, &request, code);
        let mut r = request.response_to(code, &reason_of(&resp), None);
        if (101..300).contains(&code)
            && matches!(
                request.method(),
                Some(Method::Invite | Method::Update | Method::Subscribe | Method::Refer)
            )
        {
            r.push(HeaderName::Contact, contact);
        }
        if (200..300).contains(&code)
            && matches!(request.method(), Some(Method::Invite | Method::Update))
            && let Some(st) = session_side
        {
            r.push(HeaderName::SessionExpires, st.header(false));
        }
        for name in [HeaderName::Reason, HeaderName::RetryAfter] {
            if let Some(v) = resp.header(&name) {
                r.push(name, v.clone());
            }
        }
        if !resp.body.is_empty() {
            let ct = resp.content_type().cloned();
            // Responses to INVITE, UPDATE and PRACK are where offers and answers travel: a body
            // there that is not plain SDP (multipart holding one, say) is never relayed as it
            // is, since it would carry the peer's addresses past the relay; it counts as SDP
            // the plane refuses.
            let offer_answer =
                matches!(request.method(), Some(Method::Invite | Method::Update | Method::Prack));
            let body = if is_sdp(&resp) || offer_answer {
                // An offerless re-INVITE: the 2xx carries the other side's offer (its ACK will
                // carry the answer); otherwise the SDP answers the relayed offer.
                let from = other_side(side);
                let sdp = if !is_sdp(&resp) {
                    Err(MediaError::NotSdp)
                } else if is_invite && request.body.is_empty() {
                    self.media.offer(media, from, &resp.body, now)
                } else {
                    self.media.answer(media, from, &resp.body, now)
                };
                match sdp {
                    Ok(sdp) => Some(sdp),
                    // The 2xx of a re-INVITE or UPDATE with an offer, or of an offerless
                    // re-INVITE, is half of an offer/answer exchange: it cannot go on without
                    // its SDP (nor with the peer's own, which would leak its addresses and
                    // bypass the relay).
                    Err(e)
                        if (200..300).contains(&code)
                            && (carries_offer(&request)
                                || (is_invite && request.body.is_empty())) =>
                    {
                        return self.relayed_2xx_refused(now, key, server, &request, &e);
                    }
                    // Elsewhere (a provisional, a refusal, SDP where no exchange is under way)
                    // the SDP completes nothing: relay the response without it.
                    Err(e) => {
                        tracing::debug!(error = %e, "SDP in a relayed response refused");
                        None
                    }
                }
            } else {
                Some(resp.body.clone())
            };
            if let Some(body) = body {
                set_body(&mut r, ct, body);
            }
        }
        if code >= 200 {
            self.finish_server(now, key, server, r);
        } else {
            self.txns.respond(now, server, r);
        }
    }

    /// A relayed INVITE or UPDATE that carried an SDP offer got a final non-2xx (from the other
    /// leg, or made by the SBC for its client transaction: 408, 503): the offer is refused and the
    /// old session stays in force (RFC 3264 §8, RFC 3261 §14.1), in the relay too. An offerless
    /// re-INVITE offered nothing (the offer would have been in its 2xx); a 491 the SBC sends for
    /// glare never reaches here, and the plane leaves an offer from the other side alone.
    fn relayed_offer_refused(&mut self, now: Instant, key: CallKey, request: &Message, code: u16) {
        if !carries_offer(request) || code < 300 {
            return;
        }
        let Some(call) = self.call(key) else { return };
        let (media, from) = (call.media, call.by_side_of(request));
        if self.media.offer_refused(media, from, now) {
            tracing::debug!(code, ?from, "refused offer: the media session is back as it was");
        }
    }

    /// Leg Y answered a re-INVITE or UPDATE relayed from leg X with a 2xx whose SDP the media
    /// plane refuses: an answer to X's offer (a codec X did not offer, m= lines that do not
    /// match, garbage), or the offer in the 2xx of an offerless re-INVITE.
    ///
    /// Relaying that 2xx without its SDP would break offer/answer: X's offer would get no
    /// answer (RFC 3264 §5, RFC 3261 §13.2.1), or the ACK no offer to answer, and the legs would
    /// disagree, Y on its new session and the relay on the old one. Y's SDP itself never goes to
    /// X (its addresses, and media around the relay). Y has accepted the exchange, so only a new
    /// offer could bring it back to the old session, and the SBC has no offer of its own to
    /// make; a call whose legs disagree on their media cannot go on reliably. So, as for an
    /// initial INVITE's 2xx with SDP the plane refuses (`on_b_success`):
    /// - Y's 2xx to a re-INVITE is ACKed on Y's leg (RFC 3261 §13.2.2.4), without a body: the
    ///   SBC has no valid answer to an offer it could not take, and that section's "valid answer
    ///   in the ACK, then BYE" comes down to the BYE that follows at once. An UPDATE's 2xx
    ///   needs nothing;
    /// - X's request gets the plane's status (488; 503 when the SBC lacks ports) with the
    ///   plane's `Warning` (as a refused initial answer) and `Reason: SIP;cause=488;
    ///   text="bad SDP answer"` (RFC 3326: the cause is the SIP status the exchange failed
    ///   with, not a Q.850 media failure as the DTLS or timeout endings); X's offer, if it made
    ///   one, is rolled back in the plane as for any refused offer (`relayed_offer_refused`);
    /// - the call ends: BYE on both legs with that `Reason` (an UPDATE in an early dialog, RFC
    ///   3311: leg B cancelled, leg A's INVITE refused with the same status and `Reason`),
    ///   one record, disposition failed, released by the SBC, reason "bad SDP answer" (the
    ///   same words as for the initial 2xx, whether the 2xx's SDP was an answer or an offer).
    fn relayed_2xx_refused(
        &mut self,
        now: Instant,
        key: CallKey,
        server: TxnId,
        request: &Message,
        e: &MediaError,
    ) {
        const WHY: &str = "bad SDP answer";
        tracing::info!(error = %e, "SDP in a relayed 2xx refused: ending the call");
        let code = e.status_code();
        let salt: u64 = self.rng.random();
        let Some(call) = self.call_mut(key) else { return };
        let offerer = call.by_side_of(request);
        let phase = call.phase;
        // A relayed re-INVITE always has its `reinvite` (set when relayed, kept until X's ACK;
        // glare keeps a second one out), with the CSeq Y's 2xx answers.
        let is_invite = request.method() == Some(&Method::Invite);
        if let Some(re) = call.reinvite.take_if(|_| is_invite)
            && let Some(d) = call.leg(other_side(offerer))
        {
            let mut ack = d.request(Method::Ack, Some(re.client_cseq));
            ack.headers.insert(0, d.ack_via(salt));
            let flow = d.flow;
            self.txns.send_stateless(flow, ack.to_bytes());
        }
        let host = self.call_mut(key).and_then(|c| c.leg(offerer).map(|d| d.sent_by.clone()));
        self.relayed_offer_refused(now, key, request, code);
        let phrase = if code == 503 { "Service Unavailable" } else { "Not Acceptable Here" };
        let reason = Bytes::from(format!("SIP;cause={code};text=\"{WHY}\""));
        let mut r = request.response_to(code, phrase, None);
        r.push(HeaderName::Reason, reason.clone());
        let warning = e.to_string().replace(['"', '\\'], "'");
        r.push_fmt(
            HeaderName::Warning,
            format_args!("399 {} \"{warning}\"", host.unwrap_or_default()),
        );
        self.finish_server(now, key, server, r);
        match phase {
            Phase::Answered => {
                self.send_bye_with(now, key, LegSide::A, Some(reason.clone()));
                self.send_bye_with(now, key, LegSide::B, Some(reason));
            }
            Phase::Early => {
                self.cancel_b(now, key);
                self.answer_a_invite(now, key, code, phrase, Some(reason));
            }
        }
        self.end_call(now, key, Disposition::Failed, code, ReleaseSide::Sbc, Some(WHY));
    }

    fn finish_server(&mut self, now: Instant, key: CallKey, server: TxnId, resp: Message) {
        self.owners.remove(&server);
        if let Some(call) = self.call_mut(key) {
            call.pending_servers.retain(|t| *t != server);
        }
        self.txns.respond(now, server, resp);
    }

    // ---- end of call -----------------------------------------------------------------------

    fn end_call(
        &mut self,
        now: Instant,
        key: CallKey,
        disposition: Disposition,
        status: u16,
        released_by: ReleaseSide,
        reason: Option<&str>,
    ) {
        let Some(slot) =
            self.slots.get_mut(key.index as usize).filter(|s| s.generation == key.generation)
        else {
            return;
        };
        let Some(call) = slot.call.take() else { return };
        self.free.push(key.index);
        self.by_a_call_id.remove(&call.a.call_id);
        if let Some(summary) = self.media.release(call.media) {
            let (a, b) = (media_stats(&summary, LegSide::A), media_stats(&summary, LegSide::B));
            self.emit(call.call_ref, CallEventKind::Media { a, b });
        }
        self.stats.calls_ended += 1;
        // Relayed requests still waiting for the other leg will never get an answer from it.
        for server in &call.pending_servers {
            if let Some((_, Role::RelayServer { request, client })) = self.owners.remove(server) {
                self.owners.remove(&client);
                let resp = request.response_to(487, "Request Terminated", None);
                self.txns.respond(now, *server, resp);
            }
        }
        // Every transaction of the call forgets it, except an unanswered leg-B INVITE, which
        // stays as an orphan until its final response (a 2xx racing our CANCEL is hung up).
        let pending_b = call.b_invite.filter(|_| !call.b_confirmed);
        for txn in &call.txns {
            let owned = self.owners.remove(txn).is_some();
            if owned
                && Some(*txn) == pending_b
                && let Some(b) = call.b.clone()
            {
                self.owners.insert(*txn, (key, Role::Orphan(Box::new(b))));
            }
        }
        let phrase = call.final_phrase.clone().unwrap_or_else(|| default_phrase(status).to_owned());
        self.emit(
            call.call_ref,
            CallEventKind::Ended {
                disposition,
                status,
                phrase,
                released_by,
                reason: reason.map(str::to_owned),
                cause: call.cause.clone(),
            },
        );
        // The permit drops with the call: admission slots come back whatever the path.
    }
}

impl Call {
    /// For a request we relayed, which leg it came from: leg A requests carry leg A's Call-ID.
    fn by_side_of(&self, request: &Message) -> LegSide {
        if request.call_id() == Some(&self.a.call_id) { LegSide::A } else { LegSide::B }
    }
}

/// Leg B's From: the caller's display name and user part at the SBC's host, with our `tag`
/// (nothing else of leg A's From crosses).
fn b_from_hdr(invite: &Message, sent_by: &str, tag: &str) -> Bytes {
    let from = invite.from().ok();
    let caller = from.as_ref().and_then(|f| f.uri.user.clone());
    let display = from.as_ref().and_then(|f| f.display.clone());
    let mut from_hdr = Vec::with_capacity(96);
    if let Some(d) = &display {
        from_hdr.extend_from_slice(d);
        from_hdr.push(b' ');
    }
    from_hdr.extend_from_slice(b"<sip:");
    if let Some(u) = &caller {
        from_hdr.extend_from_slice(u);
        from_hdr.push(b'@');
    }
    from_hdr.extend_from_slice(sent_by.split(':').next().unwrap_or(sent_by).as_bytes());
    from_hdr.extend_from_slice(b">;tag=");
    from_hdr.extend_from_slice(tag.as_bytes());
    Bytes::from(from_hdr)
}

/// The RFC 3261 section 21 phrase of the statuses the SBC ends calls with itself.
fn default_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        _ => "",
    }
}

fn slot_call_mut(slots: &mut [Slot], key: CallKey) -> Option<&mut Call> {
    slots
        .get_mut(key.index as usize)
        .filter(|s| s.generation == key.generation)?
        .call
        .as_deref_mut()
}

/// The Min-SE of a 422, if it is larger than what we asked (RFC 4028 section 6).
fn min_se_above(resp: &Message, asked: u32) -> Option<u32> {
    let v = resp.header(&HeaderName::MinSe)?;
    let secs: u32 = std::str::from_utf8(v).ok()?.split(';').next()?.trim().parse().ok()?;
    (secs > asked).then_some(secs)
}

/// Whether a request is addressed to one of the SBC's registration contact tokens. Such a
/// request comes back from an upstream registrar after its location lookup, and carries the
/// SBC's own Via when one of its clients called another through that registrar (client -> SBC
/// -> registrar -> SBC -> client): the Request-URI changed on the way, so RFC 3261 section 16.3
/// calls it a spiral, not a loop. Max-Forwards, lowered on every pass through the SBC, still
/// ends a real loop (483).
fn to_contact_token(req: &Message) -> bool {
    req.request_uri().and_then(|u| u.user_str()).is_some_and(super::bindings::is_token)
}

fn is_supported(option_tag: &[u8]) -> bool {
    SUPPORTED.iter().any(|s| option_tag.eq_ignore_ascii_case(s.as_bytes()))
}

fn is_sip_uri(uri: &Uri) -> bool {
    matches!(uri.scheme, sip::Scheme::Sip | sip::Scheme::Sips)
}

fn idx(side: LegSide) -> usize {
    match side {
        LegSide::A => 0,
        LegSide::B => 1,
    }
}

fn other_side(side: LegSide) -> LegSide {
    match side {
        LegSide::A => LegSide::B,
        LegSide::B => LegSide::A,
    }
}

/// One leg's media figures, as the records crate keeps them.
fn media_stats(summary: &MediaSummary, side: LegSide) -> MediaLegStats {
    let leg = summary.leg(side);
    let r = &leg.received;
    MediaLegStats {
        codec: leg.codec.clone().unwrap_or_default(),
        packets: r.packets,
        bytes: r.bytes,
        lost: r.lost,
        jitter_us: (r.jitter_ms * 1000.0).clamp(0.0, u32::MAX as f64) as u32,
        // No packets, no quality to estimate: 0 says "unknown" rather than a perfect score.
        mos_x100: if r.packets == 0 {
            0
        } else {
            (r.mos_estimate() * 100.0).round().clamp(0.0, 500.0) as u16
        },
    }
}

/// The media profile of a leg on `listener`, from or toward `trunk`: the trunk's own options win
/// over the listener's, which win over the `media:` section's.
fn leg_media(config: &Config, listener: ListenerId, trunk: Option<TrunkId>) -> LegMedia {
    let Some(l) = config.listeners.get(listener.0) else {
        return LegMedia::default();
    };
    let mut options = l.media.or(&config.media.defaults);
    if let Some(t) = trunk.and_then(|t| config.trunks.get(t.0)) {
        options = t.media.or(&options);
    }
    LegMedia {
        advertise: l.media_advertise,
        bind: l.media_bind,
        codecs: options.codecs.unwrap_or_default(),
        nat: options.nat.unwrap_or(false),
        inactivity_timeout: options.inactivity_timeout.flatten(),
        profile: options.profile.unwrap_or_default(),
        srtp_suites: options.srtp_suites.unwrap_or_default(),
        dtmf: trunk.and_then(|t| config.trunks.get(t.0)).map_or(DtmfMode::Rfc4733, |t| t.dtmf),
    }
}

/// The Q.850 cause and text of the `Reason` a call ends with when its media failed (and the
/// CDR's release reason).
fn failure_reason(failure: MediaFailure) -> (u16, String) {
    // Cause 47 (resource unavailable): the media path could not be secured; 102 (recovery on
    // timer expiry) for a peer that stopped answering, as for the inactivity timeout.
    let (cause, text) = match failure {
        MediaFailure::FingerprintMismatch(_) => (47, "DTLS fingerprint mismatch".to_owned()),
        MediaFailure::DtlsFailed(_, why) => (47, format!("DTLS failure: {why}")),
        MediaFailure::ConsentExpired(_) => (102, "ICE consent expired".to_owned()),
        MediaFailure::BadKeys(_) => (47, "SRTP keys unusable".to_owned()),
        _ => (47, "media failure".to_owned()),
    };
    // The text is a quoted-string (RFC 3326): nothing that could end it or the header.
    let text = text.chars().filter(|c| !matches!(c, '"' | '\\') && !c.is_control()).collect();
    (cause, text)
}

/// Whether an in-dialog request is an SDP offer: a re-INVITE or UPDATE with an SDP body (a
/// PRACK's or ACK's SDP is taken as an answer).
fn carries_offer(request: &Message) -> bool {
    matches!(request.method(), Some(Method::Invite | Method::Update))
        && !request.body.is_empty()
        && is_sdp(request)
}

fn is_sdp(msg: &Message) -> bool {
    msg.content_type().is_some_and(|ct| {
        let base = ct.split(|&b| b == b';').next().unwrap_or(&ct[..]);
        sip_trim(base).eq_ignore_ascii_case(b"application/sdp")
    })
}

fn sip_trim(s: &[u8]) -> &[u8] {
    let a = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let b = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(a, |p| p + 1);
    &s[a..b]
}

fn reason_of(resp: &Message) -> String {
    match &resp.start {
        sip::StartLine::Response(s) => String::from_utf8_lossy(&s.reason).into_owned(),
        sip::StartLine::Request(_) => String::new(),
    }
}

fn set_body(msg: &mut Message, content_type: Option<Bytes>, body: Bytes) {
    msg.set(
        HeaderName::ContentType,
        content_type.unwrap_or_else(|| Bytes::from_static(b"application/sdp")),
    );
    msg.body = body;
}

/// Copies the headers a trunk allows from the other leg's request, then applies remove and add.
fn copy_allowed_headers(from: &Message, to: &mut Message, policy: &crate::config::HeaderPolicy) {
    for h in &from.headers {
        if CONTENT_HEADERS.contains(&h.name) {
            continue;
        }
        let allowed = policy.allow.iter().any(|n| h.name.matches(n));
        let removed = policy.remove.iter().any(|n| h.name.matches(n));
        if allowed && !removed {
            to.headers.push(h.clone());
        }
    }
    for rule in &policy.rewrite {
        for h in to.headers.iter_mut().filter(|h| h.name.matches(&rule.name)) {
            if let Ok(v) = std::str::from_utf8(&h.value)
                && let std::borrow::Cow::Owned(new) = rule.pattern.replace(v, rule.replace.as_str())
            {
                h.value = Bytes::from(new);
            }
        }
    }
    for (name, value) in &policy.add {
        let hn = HeaderName::from_bytes(&Bytes::copy_from_slice(name.as_bytes()));
        to.remove(&hn);
        to.push(hn, Bytes::copy_from_slice(value.as_bytes()));
    }
}
