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

use std::time::Instant;

use bytes::Bytes;

use crate::config::TimerConfig;
use crate::sip::Message;
use crate::transport::{Flow, Transmit};

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
    _private: (),
}

impl TransactionLayer {
    /// A layer for shard `shard` (encoded into the branches it issues), with the given timers.
    /// `seed` seeds the generator of unpredictable branch suffixes.
    pub fn new(timers: TimerConfig, shard: u16, seed: u64) -> TransactionLayer {
        let _ = (timers, shard, seed);
        todo!()
    }

    /// An incoming message (already parsed and validated) from `flow`.
    pub fn handle_message(&mut self, now: Instant, message: Message, flow: Flow) {
        let _ = (now, message, flow);
        todo!()
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
        let _ = (now, request, flow, sent_by);
        todo!()
    }

    /// Sends a response on a server transaction (provisional or final). A 2xx to INVITE is
    /// retransmitted until the ACK arrives or 64*T1 passes ([`TxnEvent::TimedOut`]).
    pub fn respond(&mut self, now: Instant, txn: TxnId, response: Message) {
        let _ = (now, txn, response);
        todo!()
    }

    /// Cancels a client INVITE transaction (RFC 3261 section 9.1): builds the CANCEL from the stored
    /// INVITE and sends it as its own client transaction once a provisional response has been
    /// received (at once if one has). Returns the CANCEL's transaction, or `None` if the INVITE is
    /// unknown or already has a final response.
    pub fn cancel(&mut self, now: Instant, invite: TxnId) -> Option<TxnId> {
        let _ = (now, invite);
        todo!()
    }

    /// Sends a message outside any transaction (ACK for 2xx, stateless responses).
    pub fn send_stateless(&mut self, flow: Flow, data: Bytes) {
        let _ = (flow, data);
        todo!()
    }

    /// The shell failed to send the last transmit of `txn`'s flow.
    pub fn handle_transport_error(&mut self, now: Instant, txn: TxnId) {
        let _ = (now, txn);
        todo!()
    }

    /// Fires due timers. Calling early is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        todo!()
    }

    /// Next event for the user.
    pub fn poll_event(&mut self) -> Option<TxnEvent> {
        todo!()
    }

    /// Earliest pending deadline and which timer it is.
    pub fn poll_timeout(&self) -> Option<(Instant, TimerName)> {
        todo!()
    }

    /// Number of live transactions (for metrics and leak tests).
    pub fn len(&self) -> usize {
        todo!()
    }

    /// Whether there are no live transactions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shard encoded in a branch this layer issued, if it is one of ours (used by the shell to
/// route responses to the right shard without parsing more than the top Via).
pub fn shard_of_branch(branch: &[u8]) -> Option<u16> {
    let _ = branch;
    todo!()
}
