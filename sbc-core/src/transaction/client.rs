//! Client transactions (RFC 3261 section 17.1, RFC 6026) and CANCEL (section 9.1).

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

use crate::sip::{Header, HeaderName, Message, Method};
use crate::transport::Flow;

use super::{NO_TXN, Role, State, TIMER_D, TimerName, TransactionLayer, Txn, TxnEvent, TxnId};
use super::{branch, timer::TimerTable};

/// INVITE client transaction (RFC 3261 figure 5, with RFC 6026's Accepted).
#[derive(Debug)]
pub(super) enum InviteClient {
    /// Sent, nothing heard. Timers A (unreliable) and B.
    Calling {
        /// The INVITE as sent, to build the ACK or CANCEL from (boxed: it dwarfs the other states).
        invite: Box<Message>,
        /// Its bytes, for retransmission.
        request: Bytes,
        /// Current Timer A interval.
        interval: Duration,
    },
    /// A provisional response came. No timer, except Timer B once a CANCEL has gone out.
    Proceeding {
        /// The INVITE as sent.
        invite: Box<Message>,
    },
    /// A 300-699 came and was ACKed. Timer D.
    Completed {
        /// The ACK, re-sent on each retransmission of the final response.
        ack: Bytes,
    },
    /// A 2xx came; further 2xx (retransmissions, forks) are passed up. Timer M.
    Accepted,
}

/// Non-INVITE client transaction (RFC 3261 figure 6).
#[derive(Debug)]
pub(super) enum NonInviteClient {
    /// A CANCEL waiting for a provisional response to its INVITE (RFC 3261 section 9.1).
    Deferred {
        /// The CANCEL, ready to send.
        request: Bytes,
    },
    /// Sent, nothing heard. Timers E (unreliable) and F.
    Trying {
        /// The request, for retransmission.
        request: Bytes,
        /// Current Timer E interval.
        interval: Duration,
    },
    /// A provisional response came. Timer E (at T2) and F.
    Proceeding {
        /// The request, for retransmission.
        request: Bytes,
    },
    /// A final response came. Timer K.
    Completed,
}

impl TransactionLayer {
    /// Opens a client transaction for `request` (see [`TransactionLayer::send_request`]).
    pub(super) fn start_client(
        &mut self,
        now: Instant,
        mut request: Message,
        flow: Flow,
        sent_by: &str,
    ) -> TxnId {
        let Some(method) = request.method().cloned() else {
            tracing::debug!("ApiMisuse: send_request with a response; not sent");
            return NO_TXN;
        };
        let ack = method == Method::Ack;
        let id = if ack { NO_TXN } else { self.slab.reserve() };
        let branch = branch::encode(self.shard, id, self.unpredictable.random());
        let transport = flow.transport.via_name();
        request.headers.insert(
            0,
            Header::new(
                HeaderName::Via,
                format!("SIP/2.0/{transport} {sent_by};branch={branch};rport"),
            ),
        );
        let data = request.to_bytes();
        if ack {
            self.transmit(flow, data);
            // An ACK has no transaction (RFC 3261 section 17.1.1.3 / 13.2.2.4); send it as asked.
            tracing::debug!("ApiMisuse: ACK passed to send_request; sent without a transaction");
            return NO_TXN;
        }
        let mut txn = Txn {
            id,
            flow,
            timers: TimerTable::default(),
            role: Role::Client { branch: Bytes::from(branch), method: method.clone() },
        };
        let t1 = self.timers_config.t1;
        let state = if method == Method::Invite {
            self.transmit(flow, data.clone());
            self.arm_retransmit(&mut txn, TimerName::A, now, t1);
            self.arm(&mut txn, TimerName::B, now, self.t1x64());
            State::InviteClient(InviteClient::Calling {
                invite: Box::new(request),
                request: data,
                interval: t1,
            })
        } else {
            State::NonInviteClient(self.start_non_invite(now, &mut txn, data))
        };
        self.slab.put(id, txn, state);
        id
    }

    /// Sends a non-INVITE request for the first time: Trying, timers E and F.
    fn start_non_invite(&mut self, now: Instant, txn: &mut Txn, request: Bytes) -> NonInviteClient {
        let t1 = self.timers_config.t1;
        self.transmit(txn.flow, request.clone());
        self.arm_retransmit(txn, TimerName::E, now, t1);
        self.arm(txn, TimerName::F, now, self.t1x64());
        NonInviteClient::Trying { request, interval: t1 }
    }

    /// A response: to its client transaction, or up as stray.
    pub(super) fn handle_response(&mut self, now: Instant, response: Message, flow: Flow) {
        if response.via_count() != 1 {
            // RFC 3261 section 8.1.3.3: a response for us carries our Via alone.
            tracing::debug!("PeerMisbehaved: response with several Vias; discarded");
            return;
        }
        let (Some(id), Some(code)) = (self.match_client(&response), response.code()) else {
            self.events.push_back(TxnEvent::StrayResponse { response, flow });
            return;
        };
        self.transition(id, |layer, txn, state| match state {
            State::InviteClient(s) => {
                layer.invite_client_response(now, txn, s, code, response).map(State::InviteClient)
            }
            State::NonInviteClient(s) => layer
                .non_invite_client_response(now, txn, s, code, response)
                .map(State::NonInviteClient),
            other => Some(other),
        });
    }

    /// RFC 3261 section 17.1.3: the top Via branch and the CSeq method select the transaction. The
    /// branch decodes to a slot; the full branch is compared with the stored one.
    fn match_client(&self, response: &Message) -> Option<TxnId> {
        let branch = response.top_via().ok()?.branch()?;
        let method = response.cseq().ok()?.method;
        let (shard, id) = branch::decode(&branch)?;
        if shard != self.shard {
            return None;
        }
        let is_it = |id: TxnId| {
            matches!(self.slab.get(id), Some((txn, _)) if matches!(
                &txn.role,
                Role::Client { branch: b, method: m } if *b == branch && *m == method
            ))
        };
        if is_it(id) {
            return Some(id);
        }
        // A CANCEL shares its INVITE's branch: the slot is the INVITE's.
        let cancel = *self.cancels.get(&id).filter(|_| method == Method::Cancel)?;
        is_it(cancel).then_some(cancel)
    }

    fn invite_client_response(
        &mut self,
        now: Instant,
        txn: &mut Txn,
        state: InviteClient,
        code: u16,
        response: Message,
    ) -> Option<InviteClient> {
        let id = txn.id;
        match (state, code) {
            (InviteClient::Calling { invite, .. }, 100..=199) => {
                // RFC 3261 section 17.1.1.2: no more retransmissions, and no Timer B.
                txn.timers.clear_all();
                self.events.push_back(TxnEvent::ResponseReceived { txn: id, response });
                self.send_deferred_cancel(now, txn);
                Some(InviteClient::Proceeding { invite })
            }
            (s @ InviteClient::Proceeding { .. }, 100..=199) => {
                self.events.push_back(TxnEvent::ResponseReceived { txn: id, response });
                Some(s)
            }
            (InviteClient::Calling { .. } | InviteClient::Proceeding { .. }, 200..=299) => {
                // RFC 6026 section 8.4: Accepted, so that 2xx from other forks reach the user.
                txn.timers.clear_all();
                self.arm(txn, TimerName::M, now, self.t1x64());
                self.drop_deferred_cancel(id);
                self.events.push_back(TxnEvent::ResponseReceived { txn: id, response });
                Some(InviteClient::Accepted)
            }
            (InviteClient::Calling { invite, .. } | InviteClient::Proceeding { invite }, _) => {
                txn.timers.clear_all();
                self.drop_deferred_cancel(id);
                let ack = build_ack(&invite, &response).map(|m| m.to_bytes());
                self.events.push_back(TxnEvent::ResponseReceived { txn: id, response });
                let Some(ack) = ack else {
                    tracing::debug!("ApiMisuse: INVITE {id:?} lacks what its ACK needs");
                    return None;
                };
                self.transmit(txn.flow, ack.clone());
                if txn.flow.is_reliable() {
                    return None; // Timer D is 0 on reliable transports.
                }
                self.arm(txn, TimerName::D, now, TIMER_D);
                Some(InviteClient::Completed { ack })
            }
            (InviteClient::Completed { ack }, 300..=699) => {
                // A retransmission: the ACK got lost (RFC 3261 section 17.1.1.2).
                self.transmit(txn.flow, ack.clone());
                Some(InviteClient::Completed { ack })
            }
            (s @ (InviteClient::Completed { .. } | InviteClient::Accepted), 200..=299) => {
                // A retransmitted or forked 2xx: only the user can ACK (or BYE) it.
                self.events.push_back(TxnEvent::ResponseReceived { txn: id, response });
                Some(s)
            }
            (s, _) => Some(s), // late provisional or a non-2xx after a 2xx: absorbed
        }
    }

    fn non_invite_client_response(
        &mut self,
        now: Instant,
        txn: &mut Txn,
        state: NonInviteClient,
        code: u16,
        response: Message,
    ) -> Option<NonInviteClient> {
        match (state, code) {
            (
                NonInviteClient::Trying { request, .. } | NonInviteClient::Proceeding { request },
                100..=199,
            ) => {
                // Timer E keeps its deadline; when it fires it comes back at T2 (17.1.2.2).
                self.events.push_back(TxnEvent::ResponseReceived { txn: txn.id, response });
                Some(NonInviteClient::Proceeding { request })
            }
            (NonInviteClient::Trying { .. } | NonInviteClient::Proceeding { .. }, _) => {
                txn.timers.clear_all();
                self.events.push_back(TxnEvent::ResponseReceived { txn: txn.id, response });
                if txn.flow.is_reliable() {
                    return None; // Timer K is 0 on reliable transports.
                }
                self.arm(txn, TimerName::K, now, self.timers_config.t4);
                Some(NonInviteClient::Completed)
            }
            (s, _) => Some(s), // retransmissions in Completed; nothing was sent while Deferred
        }
    }

    pub(super) fn invite_client_timer(
        &mut self,
        now: Instant,
        txn: &mut Txn,
        state: InviteClient,
        name: TimerName,
    ) -> Option<InviteClient> {
        match (state, name) {
            (InviteClient::Calling { invite, request, interval }, TimerName::A) => {
                // Timer A doubles without a cap; Timer B bounds it (RFC 3261 section 17.1.1.2).
                self.transmit(txn.flow, request.clone());
                let interval = interval * 2;
                self.arm(txn, TimerName::A, now, interval);
                Some(InviteClient::Calling { invite, request, interval })
            }
            (InviteClient::Calling { .. } | InviteClient::Proceeding { .. }, TimerName::B) => {
                self.events.push_back(TxnEvent::TimedOut { txn: txn.id });
                None
            }
            (InviteClient::Completed { .. }, TimerName::D)
            | (InviteClient::Accepted, TimerName::M) => None,
            (s, _) => Some(s), // each transition clears the lanes, so this does not happen
        }
    }

    pub(super) fn non_invite_client_timer(
        &mut self,
        now: Instant,
        txn: &mut Txn,
        state: NonInviteClient,
        name: TimerName,
    ) -> Option<NonInviteClient> {
        match (state, name) {
            (NonInviteClient::Trying { request, interval }, TimerName::E) => {
                self.transmit(txn.flow, request.clone());
                let interval = self.backoff(interval);
                self.arm(txn, TimerName::E, now, interval);
                Some(NonInviteClient::Trying { request, interval })
            }
            (NonInviteClient::Proceeding { request }, TimerName::E) => {
                self.transmit(txn.flow, request.clone());
                self.arm(txn, TimerName::E, now, self.timers_config.t2);
                Some(NonInviteClient::Proceeding { request })
            }
            (NonInviteClient::Trying { .. } | NonInviteClient::Proceeding { .. }, TimerName::F) => {
                self.events.push_back(TxnEvent::TimedOut { txn: txn.id });
                None
            }
            (NonInviteClient::Completed, TimerName::K) => None,
            (s, _) => Some(s),
        }
    }

    /// See [`TransactionLayer::cancel`].
    pub(super) fn cancel_client(&mut self, now: Instant, invite: TxnId) -> Option<TxnId> {
        let (txn, state) = self.slab.get(invite)?;
        let (msg, proceeding) = match state {
            State::InviteClient(InviteClient::Calling { invite, .. }) => (invite, false),
            State::InviteClient(InviteClient::Proceeding { invite }) => (invite, true),
            _ => return None,
        };
        if let Some(&cancel) = self.cancels.get(&invite) {
            return Some(cancel); // already cancelled (or deferred): the same CANCEL
        }
        let Role::Client { branch, .. } = &txn.role else {
            return None;
        };
        let Some(request) = build_cancel(msg).map(|m| m.to_bytes()) else {
            tracing::debug!("ApiMisuse: INVITE {invite:?} lacks what its CANCEL needs");
            return None;
        };
        let (flow, branch) = (txn.flow, branch.clone());
        let id = self.slab.reserve();
        let mut cancel = Txn {
            id,
            flow,
            timers: TimerTable::default(),
            role: Role::Client { branch, method: Method::Cancel },
        };
        self.cancels.insert(invite, id);
        let state = if proceeding {
            let state = self.start_non_invite(now, &mut cancel, request);
            self.arm_cancel_timeout(now, invite);
            state
        } else {
            // RFC 3261 section 9.1: no CANCEL before a provisional response.
            NonInviteClient::Deferred { request }
        };
        self.slab.put(id, cancel, State::NonInviteClient(state));
        Some(id)
    }

    /// Sends the CANCEL of `invite` (taken out of the slab) if one was waiting for a provisional.
    fn send_deferred_cancel(&mut self, now: Instant, invite: &mut Txn) {
        let Some(&cancel) = self.cancels.get(&invite.id) else {
            return;
        };
        let mut sent = false;
        self.transition(cancel, |layer, txn, state| match state {
            State::NonInviteClient(NonInviteClient::Deferred { request }) => {
                sent = true;
                let state = layer.start_non_invite(now, txn, request);
                Some(State::NonInviteClient(state))
            }
            other => Some(other),
        });
        if sent {
            self.arm(invite, TimerName::B, now, self.t1x64());
        }
    }

    /// RFC 3261 section 9.1: without a final response 64*T1 after the CANCEL, the INVITE is
    /// given up as if Timer B had fired.
    fn arm_cancel_timeout(&mut self, now: Instant, invite: TxnId) {
        let at = now + self.t1x64();
        if let Some((txn, _)) = self.slab.get_mut(invite) {
            self.timers.arm(&mut txn.timers, invite, TimerName::B, at);
        }
    }

    /// Forgets the CANCEL of `invite` if it was never sent: the INVITE ended first.
    pub(super) fn drop_deferred_cancel(&mut self, invite: TxnId) {
        let Some(&cancel) = self.cancels.get(&invite) else {
            return;
        };
        if let Some((_, State::NonInviteClient(NonInviteClient::Deferred { .. }))) =
            self.slab.get(cancel)
        {
            self.cancels.remove(&invite);
            self.slab.release(cancel);
        }
    }
}

/// The ACK for a non-2xx final response (RFC 3261 section 17.1.1.3).
fn build_ack(invite: &Message, response: &Message) -> Option<Message> {
    let mut ack = Message::request(Method::Ack, invite.request_uri()?.clone());
    copy_request_headers(invite, &mut ack, "ACK", response.header(&HeaderName::To)?)?;
    Some(ack)
}

/// The CANCEL for an INVITE (RFC 3261 section 9.1).
fn build_cancel(invite: &Message) -> Option<Message> {
    let mut cancel = Message::request(Method::Cancel, invite.request_uri()?.clone());
    copy_request_headers(invite, &mut cancel, "CANCEL", invite.header(&HeaderName::To)?)?;
    Some(cancel)
}

/// What ACK and CANCEL share: the INVITE's top Via only (with its branch), Max-Forwards, the
/// INVITE's Route set, From, the given To, Call-ID, and CSeq with the INVITE's number.
fn copy_request_headers(
    invite: &Message,
    out: &mut Message,
    method: &str,
    to: &Bytes,
) -> Option<()> {
    // `start_client` inserted our Via as the first header line, alone on it.
    let via = invite.headers.iter().find(|h| h.name == HeaderName::Via)?;
    let seq = invite.cseq().ok()?.seq;
    out.headers.push(via.clone());
    out.push(HeaderName::MaxForwards, "70");
    out.headers.extend(invite.headers.iter().filter(|h| h.name == HeaderName::Route).cloned());
    out.push(HeaderName::From, invite.header(&HeaderName::From)?.clone());
    out.push(HeaderName::To, to.clone());
    out.push(HeaderName::CallId, invite.call_id()?.clone());
    out.push_fmt(HeaderName::CSeq, format_args!("{seq} {method}"));
    Some(())
}
