//! RFC 3261 section 17 transactions, sans-IO.
//!
//! One [`TransactionLayer`] per engine shard owns every client and server transaction of that shard.
//! It is driven like every core in this crate: feed it with `handle_*` (each carrying `now`), then
//! drain [`TransactionLayer::poll_transmit`] and [`TransactionLayer::poll_event`] until both are empty,
//! then ask [`TransactionLayer::poll_timeout`] for the next deadline.
//!
//! What the layer does on its own: retransmissions on unreliable flows (timers A, E, G), absorbing
//! request retransmissions (resending the last response), `100 Trying` for every new INVITE, the ACK
//! for a non-2xx final response to a client INVITE, answering CANCEL (200, or 481 when nothing
//! matches), retransmitting a 2xx to an INVITE until its ACK arrives (RFC 6026 "Accepted"),
//! merged-request detection (482, RFC 3261 section 8.2.2.2) and timeouts (B, F, H).
//! What it leaves to the transaction user (the B2BUA): every decision about content.
//!
//! Internals: transactions live in a slab of generation-checked slots ([`TxnId`]). Client
//! transactions are found from a response's branch, which encodes the slot (`branch.rs`); server
//! transactions from the peer's branch and sent-by, or the RFC 2543 fields, in std `HashMap`s
//! (SipHash: the keys are peer-chosen). The state machines are in `client.rs` and `server.rs`;
//! each transition consumes the old state and returns the new one, or `None` to end the
//! transaction, which then leaves the slab and every map at once. Timers are one heap with lazy
//! deletion (`timer.rs`).
//!
//! Bounds: at most [`TransactionLayer::DEFAULT_MAX_TRANSACTIONS`] live transactions (see
//! [`TransactionLayer::with_max_transactions`]); a request that would open a server transaction
//! beyond it is answered 503 without state. At most [`MAX_QUEUED_TRANSMITS`] transmits wait in the
//! queue; beyond that a transmit is dropped and counted ([`TransactionLayer::dropped_transmits`]),
//! like a datagram lost on the wire. Events are not dropped: each input yields at most one event
//! per transaction it touches, so under the driving contract the event queue is bounded by the
//! number of live transactions.

mod branch;
mod client;
mod server;
mod timer;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::TimerConfig;
use crate::sip::{Message, Method};
use crate::transport::{Flow, Transmit};

use self::client::{InviteClient, NonInviteClient};
use self::server::{InviteServer, NonInviteServer, ServerKeys};
use self::timer::{TimerTable, Timers};

/// Transmits queued beyond this are dropped and counted (the user did not drain the queue).
pub const MAX_QUEUED_TRANSMITS: usize = 1 << 16;

/// Timer D on unreliable flows: "at least 32 seconds" (RFC 3261 section 17.1.1.2).
const TIMER_D: Duration = Duration::from_secs(32);

/// A handle that never names a live transaction (returned for an ACK passed to `send_request`).
const NO_TXN: TxnId = TxnId { index: u32::MAX, generation: u32::MAX };

/// Handle of a transaction: slab index and generation, so a stale handle never reaches a reused
/// slot. Client transaction branches encode it (with the shard) so a response finds its transaction
/// without a hash lookup of peer-chosen data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId {
    /// Slab index.
    pub index: u32,
    /// Generation of the slot.
    pub generation: u32,
}

/// What the layer tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnEvent {
    /// A new request (not ACK, not CANCEL) created a server transaction; answer it with
    /// [`TransactionLayer::respond`].
    RequestReceived {
        /// The new server transaction.
        txn: TxnId,
        /// The request.
        request: Message,
        /// Where it came from; responses go back on this flow.
        flow: Flow,
    },
    /// An ACK that belongs to no INVITE server transaction in Completed state: the ACK for a 2xx
    /// (or a stray ACK). `invite` is the server transaction whose 2xx it acknowledges, if the layer
    /// found it (same Call-ID and CSeq number); the layer then stops retransmitting that 2xx.
    AckReceived {
        /// The INVITE server transaction acknowledged, if any.
        invite: Option<TxnId>,
        /// The ACK.
        request: Message,
        /// Where it came from.
        flow: Flow,
    },
    /// A CANCEL matched an INVITE server transaction still in Proceeding; the layer already sent
    /// 200 to the CANCEL. The user should end the INVITE with 487.
    CancelReceived {
        /// The INVITE server transaction being cancelled.
        invite: TxnId,
        /// The CANCEL request.
        request: Message,
    },
    /// A response for a client transaction (provisional or final; for an INVITE also 2xx
    /// retransmissions and forked 2xx while in Accepted state, so the user can re-ACK).
    ResponseReceived {
        /// The client transaction.
        txn: TxnId,
        /// The response.
        response: Message,
    },
    /// A response that matches no client transaction (a 2xx retransmitted after the transaction
    /// ended, or garbage). The user may match it to a dialog and re-send the ACK.
    StrayResponse {
        /// The response.
        response: Message,
        /// Where it came from.
        flow: Flow,
    },
    /// A transaction timed out: Timer B or F (client: no final response; the user treats it as
    /// 408), or Timer H / the 2xx retransmission limit (server: no ACK came).
    TimedOut {
        /// The transaction.
        txn: TxnId,
    },
    /// The shell could not send on the transaction's flow (reported back with
    /// [`TransactionLayer::handle_transport_error`]); treated like a 503 by the user (RFC 3261
    /// section 8.1.3.1).
    TransportFailed {
        /// The transaction.
        txn: TxnId,
    },
}

/// Why the next wake-up is due, for debugging a busy loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerName {
    /// INVITE request retransmit (client, unreliable).
    A,
    /// INVITE transaction timeout (client).
    B,
    /// Wait for response retransmits (client INVITE, Completed).
    D,
    /// Non-INVITE request retransmit (client, unreliable).
    E,
    /// Non-INVITE transaction timeout (client).
    F,
    /// INVITE final response retransmit (server, unreliable).
    G,
    /// Wait for ACK (server INVITE, Completed).
    H,
    /// Wait for ACK retransmits (server INVITE, Confirmed).
    I,
    /// Wait for request retransmits (server non-INVITE, Completed).
    J,
    /// Wait for response retransmits (client non-INVITE, Completed).
    K,
    /// Wait for 2xx retransmits and ACK (server INVITE, Accepted, RFC 6026).
    L,
    /// Wait for 2xx retransmits (client INVITE, Accepted, RFC 6026).
    M,
    /// 2xx retransmit (server INVITE, Accepted, RFC 3261 section 13.3.1.4).
    Retransmit2xx,
    /// 100 Trying is sent at once; no timer. Placeholder for completeness of the enum.
    Trying,
}

/// All transactions of one engine shard.
#[derive(Debug)]
pub struct TransactionLayer {
    timers_config: TimerConfig,
    shard: u16,
    max_transactions: usize,
    /// Branch suffixes and To tags: values a peer must not be able to guess (RFC 3261 19.3).
    unpredictable: StdRng,
    slab: Slab,
    timers: Timers,
    /// Server transactions by their RFC 3261 section 17.2.3 key.
    server: HashMap<server::ServerKey, TxnId>,
    /// Server transactions opened by a request without To tag, by From tag, Call-ID and CSeq
    /// (RFC 3261 section 8.2.2.2).
    merged: HashMap<server::MergeKey, TxnId>,
    /// INVITE server transactions that sent a 2xx, by Call-ID and CSeq number: the ACK for a 2xx
    /// has a branch of its own (RFC 3261 section 17.1.1.3), so this is how it is matched.
    accepted: HashMap<server::AckKey, TxnId>,
    /// The CANCEL client transaction of an INVITE client transaction. The CANCEL carries the
    /// INVITE's branch (RFC 3261 section 9.1), so its responses decode to the INVITE's slot; this
    /// leads on to the CANCEL, and outlives the INVITE when the CANCEL's answer comes last.
    cancels: HashMap<TxnId, TxnId>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxnEvent>,
    dropped_transmits: u64,
}

impl TransactionLayer {
    /// Default cap on live transactions (see [`TransactionLayer::with_max_transactions`]).
    pub const DEFAULT_MAX_TRANSACTIONS: usize = 1 << 20;

    /// A layer for shard `shard` (encoded into the branches it issues), with the given timers.
    /// `seed` seeds the generator of unpredictable branch suffixes.
    pub fn new(timers: TimerConfig, shard: u16, seed: u64) -> TransactionLayer {
        TransactionLayer {
            timers_config: timers,
            shard,
            max_transactions: Self::DEFAULT_MAX_TRANSACTIONS,
            unpredictable: StdRng::seed_from_u64(seed),
            slab: Slab::default(),
            timers: Timers::new(),
            server: HashMap::new(),
            merged: HashMap::new(),
            accepted: HashMap::new(),
            cancels: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            dropped_transmits: 0,
        }
    }

    /// Caps the number of live transactions. A request that would open a server transaction
    /// beyond the cap is answered 503 without keeping state; client transactions are not refused
    /// (the user bounds those by admitting calls).
    pub fn with_max_transactions(mut self, max: usize) -> TransactionLayer {
        self.max_transactions = max;
        self
    }

    /// An incoming message (already parsed and validated) from `flow`.
    pub fn handle_message(&mut self, now: Instant, message: Message, flow: Flow) {
        if message.is_request() {
            self.handle_request(now, message, flow);
        } else {
            self.handle_response(now, message, flow);
        }
        self.settle();
    }

    /// Starts a client transaction: inserts the top Via `SIP/2.0/{transport} {sent_by};branch=...;rport`
    /// (the branch encodes the shard and the returned id), sends the request on `flow` and
    /// retransmits it as the timers say. ACK must not be sent through here (use
    /// [`TransactionLayer::send_stateless`]).
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        flow: Flow,
        sent_by: &str,
    ) -> TxnId {
        let id = self.start_client(now, request, flow, sent_by);
        self.settle();
        id
    }

    /// Sends a response on a server transaction (provisional or final). A 2xx to INVITE is
    /// retransmitted until the ACK arrives or 64*T1 passes ([`TxnEvent::TimedOut`]).
    pub fn respond(&mut self, now: Instant, txn: TxnId, response: Message) {
        self.respond_server(now, txn, response);
        self.settle();
    }

    /// Cancels a client INVITE transaction (RFC 3261 section 9.1): builds the CANCEL from the stored
    /// INVITE and sends it as its own client transaction once a provisional response has been
    /// received (at once if one has). Returns the CANCEL's transaction, or `None` if the INVITE is
    /// unknown or already has a final response.
    pub fn cancel(&mut self, now: Instant, invite: TxnId) -> Option<TxnId> {
        let id = self.cancel_client(now, invite);
        self.settle();
        id
    }

    /// Sends a message outside any transaction (ACK for 2xx, stateless responses).
    pub fn send_stateless(&mut self, flow: Flow, data: Bytes) {
        self.transmit(flow, data);
    }

    /// The shell failed to send the last transmit of `txn`'s flow.
    pub fn handle_transport_error(&mut self, now: Instant, txn: TxnId) {
        let _ = now;
        let Some((t, _state)) = self.slab.take(txn) else {
            return;
        };
        // RFC 3261 section 17.1.4: the client transaction informs its user; a server transaction
        // has nobody to tell that could do better (RFC 3261 section 17.2.4).
        if matches!(t.role, Role::Client { .. }) {
            self.events.push_back(TxnEvent::TransportFailed { txn });
        }
        self.terminate(txn, t);
        self.settle();
    }

    /// The shell could not reach `flow` at all (a TCP connect failed, the connection broke):
    /// every client transaction on it fails at once (RFC 3261 section 8.1.3.1), so failover does
    /// not wait for Timer B. Scans the slab: connection failures are rare next to messages.
    pub fn handle_flow_error(&mut self, now: Instant, flow: Flow) {
        let ids: Vec<TxnId> = self
            .slab
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (t, _) = s.entry.as_ref()?;
                let client = matches!(t.role, Role::Client { .. });
                (client && t.flow == flow)
                    .then_some(TxnId { index: i as u32, generation: s.generation })
            })
            .collect();
        for id in ids {
            self.handle_transport_error(now, id);
        }
    }

    /// Fires due timers. Calling early is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        let before = self.timers.next_seq();
        while let Some(entry) = self.timers.pop_due(now, before) {
            let live = self.slab.get_mut(entry.txn).is_some_and(|(txn, _)| txn.timers.fire(&entry));
            if live {
                self.fire(now, entry.txn, entry.name);
            }
        }
        self.settle();
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the user.
    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        self.events.pop_front()
    }

    /// Earliest pending deadline and which timer it is.
    pub fn poll_timeout(&self) -> Option<(Instant, TimerName)> {
        // Every mutating method ends with `settle`, which leaves a live entry on top.
        self.timers.peek().map(|e| (e.at, e.name))
    }

    /// Number of live transactions (for metrics and leak tests).
    pub fn len(&self) -> usize {
        self.slab.len
    }

    /// Whether there are no live transactions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Transmits dropped because the queue held [`MAX_QUEUED_TRANSMITS`] (for metrics).
    pub fn dropped_transmits(&self) -> u64 {
        self.dropped_transmits
    }
}

/// The shard encoded in a branch this layer issued, if it is one of ours (used by the shell to
/// route responses to the right shard without parsing more than the top Via).
pub fn shard_of_branch(branch: &[u8]) -> Option<u16> {
    branch::decode(branch).map(|(shard, _)| shard)
}

/// What every transaction has besides its state: identity, flow, timers.
#[derive(Debug)]
struct Txn {
    id: TxnId,
    /// Where requests go (client) or where the request came from and responses go (server).
    flow: Flow,
    timers: TimerTable,
    role: Role,
}

/// What matching and clean-up need; fixed for the life of the transaction.
#[derive(Debug)]
enum Role {
    /// A transaction we started.
    Client {
        /// The branch of our top Via (a CANCEL shares the INVITE's).
        branch: Bytes,
        /// The request method, compared with the CSeq method of responses (RFC 3261 17.1.3).
        method: Method,
    },
    /// A transaction a peer started.
    Server {
        /// Its entries in the layer's maps (boxed: an RFC 2543 key is large).
        keys: Box<ServerKeys>,
        /// The To tag of our last response, reused in the 200 to a CANCEL (RFC 3261 9.2).
        to_tag: Option<Bytes>,
    },
}

/// The state machine of a transaction.
#[derive(Debug)]
enum State {
    InviteClient(InviteClient),
    NonInviteClient(NonInviteClient),
    InviteServer(InviteServer),
    NonInviteServer(NonInviteServer),
}

/// Transactions by slot, with generations so that a stale [`TxnId`] never reaches a reused slot.
#[derive(Debug, Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Reserved slots, filled or not.
    len: usize,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    /// `None` while free, and while reserved but not yet (or not at the moment) filled.
    entry: Option<(Txn, State)>,
}

impl Slab {
    /// Reserves a slot; fill it with [`Slab::put`] or give it back with [`Slab::release`].
    fn reserve(&mut self) -> TxnId {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let generation = self.slots[index as usize].generation;
            return TxnId { index, generation };
        }
        // The live-transaction cap keeps the slab far below u32::MAX slots.
        let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX - 1);
        self.slots.push(Slot { generation: 0, entry: None });
        TxnId { index, generation: 0 }
    }

    fn slot(&self, id: TxnId) -> Option<&Slot> {
        self.slots.get(id.index as usize).filter(|s| s.generation == id.generation)
    }

    fn get(&self, id: TxnId) -> Option<(&Txn, &State)> {
        self.slot(id).and_then(|s| s.entry.as_ref()).map(|(t, s)| (t, s))
    }

    fn get_mut(&mut self, id: TxnId) -> Option<(&mut Txn, &mut State)> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.entry.as_mut())
            .map(|(t, s)| (t, s))
    }

    /// Takes a transaction out for a transition; its slot stays reserved.
    fn take(&mut self, id: TxnId) -> Option<(Txn, State)> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.entry.take())
    }

    /// Fills a reserved slot.
    fn put(&mut self, id: TxnId, txn: Txn, state: State) {
        if let Some(slot) =
            self.slots.get_mut(id.index as usize).filter(|s| s.generation == id.generation)
        {
            slot.entry = Some((txn, state));
        }
    }

    /// Frees a reserved slot; the new generation makes every outstanding handle stale.
    fn release(&mut self, id: TxnId) {
        if let Some(slot) =
            self.slots.get_mut(id.index as usize).filter(|s| s.generation == id.generation)
        {
            slot.entry = None;
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(id.index);
            self.len -= 1;
        }
    }

    /// Whether a timer entry is still the armed one of its transaction.
    fn is_armed(&self, entry: &timer::Entry) -> bool {
        self.get(entry.txn).is_some_and(|(txn, _)| txn.timers.is_armed(entry))
    }
}

impl TransactionLayer {
    /// Takes `id` out of the slab, lets `step` consume its state, and stores the state `step`
    /// returns, or ends the transaction on `None`. Returns whether `id` was live.
    fn transition(
        &mut self,
        id: TxnId,
        step: impl FnOnce(&mut Self, &mut Txn, State) -> Option<State>,
    ) -> bool {
        let Some((mut txn, state)) = self.slab.take(id) else {
            return false;
        };
        match step(self, &mut txn, state) {
            Some(state) => self.slab.put(id, txn, state),
            None => self.terminate(id, txn),
        }
        true
    }

    /// Removes a transaction (already taken out of its slot) from every map and frees its slot.
    fn terminate(&mut self, id: TxnId, txn: Txn) {
        match txn.role {
            Role::Client { branch, method } => match method {
                Method::Invite => self.drop_deferred_cancel(id),
                Method::Cancel => {
                    if let Some((_, invite)) = branch::decode(&branch) {
                        remove_if(&mut self.cancels, &invite, id);
                    }
                }
                _ => {}
            },
            Role::Server { keys, .. } => {
                remove_if(&mut self.server, &keys.key, id);
                if let Some(merge) = &keys.merge {
                    remove_if(&mut self.merged, merge, id);
                }
                if let Some(ack) = &keys.ack {
                    remove_if(&mut self.accepted, ack, id);
                }
            }
        }
        self.slab.release(id);
    }

    /// Runs the timer `name` of `id`, which was due and live.
    fn fire(&mut self, now: Instant, id: TxnId, name: TimerName) {
        self.transition(id, |layer, txn, state| match state {
            State::InviteClient(s) => {
                layer.invite_client_timer(now, txn, s, name).map(State::InviteClient)
            }
            State::NonInviteClient(s) => {
                layer.non_invite_client_timer(now, txn, s, name).map(State::NonInviteClient)
            }
            State::InviteServer(s) => {
                layer.invite_server_timer(now, txn, s, name).map(State::InviteServer)
            }
            State::NonInviteServer(s) => {
                server::non_invite_server_timer(s, name).map(State::NonInviteServer)
            }
        });
    }

    /// Arms `name` of `txn` to fire `after` from `now`.
    fn arm(&mut self, txn: &mut Txn, name: TimerName, now: Instant, after: Duration) {
        self.timers.arm(&mut txn.timers, txn.id, name, now + after);
    }

    /// Arms a retransmission timer, which only runs on unreliable flows (RFC 3261 17.1.1.2).
    fn arm_retransmit(&mut self, txn: &mut Txn, name: TimerName, now: Instant, after: Duration) {
        if !txn.flow.is_reliable() {
            self.arm(txn, name, now, after);
        }
    }

    /// 64*T1: timers B, F, H, J, L, M.
    fn t1x64(&self) -> Duration {
        self.timers_config.t1 * 64
    }

    /// Next retransmission interval: doubled, capped at T2 (timers E, G, 2xx).
    fn backoff(&self, interval: Duration) -> Duration {
        (interval * 2).min(self.timers_config.t2)
    }

    fn transmit(&mut self, flow: Flow, data: Bytes) {
        if self.transmits.len() >= MAX_QUEUED_TRANSMITS {
            self.dropped_transmits += 1;
            tracing::debug!("transmit queue full, dropping a message");
            return;
        }
        self.transmits.push_back(Transmit { flow, data });
    }

    /// A fresh To tag (RFC 3261 section 19.3: at least 32 bits of randomness).
    fn new_tag(&mut self) -> String {
        format!("{:016x}", self.unpredictable.random::<u64>())
    }

    /// Restores the invariant `poll_timeout` relies on: the heap's top entry is live.
    fn settle(&mut self) {
        let slab = &self.slab;
        self.timers.prune(|e| slab.is_armed(e), slab.len);
    }
}

/// Removes `key` from `map` if it still leads to `id` (a later transaction may have taken it over).
fn remove_if<K: std::hash::Hash + Eq>(map: &mut HashMap<K, TxnId>, key: &K, id: TxnId) {
    if map.get(key) == Some(&id) {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests;
