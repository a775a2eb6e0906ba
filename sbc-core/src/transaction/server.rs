//! Server transactions (RFC 3261 section 17.2, RFC 6026), CANCEL (section 9.2), merged requests
//! (section 8.2.2.2) and the matching of requests to transactions (section 17.2.3).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::sip::{HeaderName, Message, Method, Via};
use crate::transport::Flow;

use super::timer::TimerTable;
use super::{Role, State, TimerName, TransactionLayer, Txn, TxnEvent, TxnId};

/// INVITE server transaction (RFC 3261 figure 7, with RFC 6026's Accepted).
#[derive(Debug)]
pub(super) enum InviteServer {
    /// No final response yet. No timer.
    Proceeding {
        /// The last provisional (at first our 100 Trying), re-sent on INVITE retransmissions.
        last: Bytes,
    },
    /// A 300-699 was sent. Timers G (unreliable) and H.
    Completed {
        /// The final response, retransmitted.
        response: Bytes,
        /// Current Timer G interval.
        interval: Duration,
    },
    /// The ACK for the 300-699 came. Timer I.
    Confirmed,
    /// A 2xx was sent and its ACK is awaited (RFC 6026 section 8.7). The 2xx retransmission timer
    /// (unreliable, RFC 3261 section 13.3.1.4) and Timer L, whose firing means no ACK came.
    Accepted {
        /// The 2xx, retransmitted.
        response: Bytes,
        /// Current retransmission interval.
        interval: Duration,
    },
    /// The ACK for the 2xx came; INVITE retransmissions still get the 2xx. Timer L.
    Acknowledged {
        /// The 2xx.
        response: Bytes,
    },
}

/// Non-INVITE server transaction (RFC 3261 figure 8).
#[derive(Debug)]
pub(super) enum NonInviteServer {
    /// No response yet; retransmissions are absorbed.
    Trying,
    /// A provisional was sent.
    Proceeding {
        /// It, re-sent on retransmissions.
        last: Bytes,
    },
    /// A final response was sent. Timer J.
    Completed {
        /// It, re-sent on retransmissions.
        response: Bytes,
    },
}

/// A server transaction's entries in the layer's maps, removed when it ends.
#[derive(Debug)]
pub(super) struct ServerKeys {
    pub(super) key: ServerKey,
    /// Only for a request without To tag (RFC 3261 section 8.2.2.2).
    pub(super) merge: Option<MergeKey>,
    /// Only for INVITE; entered into the map once a 2xx is sent.
    pub(super) ack: Option<AckKey>,
}

/// RFC 3261 section 17.2.3 matching key. ACK and CANCEL look up their INVITE with
/// [`ServerKey::with_method`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum ServerKey {
    /// The branch has the magic cookie: branch, sent-by and method.
    Branch {
        branch: Bytes,
        /// Host (lower-cased) and port of the top Via.
        sent_by: Bytes,
        method: Method,
    },
    /// An RFC 2543 peer: Request-URI, To tag, From tag, Call-ID, CSeq number, top Via, method.
    Legacy {
        request_uri: Bytes,
        to_tag: Bytes,
        from_tag: Bytes,
        call_id: Bytes,
        cseq: u32,
        top_via: Bytes,
        method: Method,
    },
}

impl ServerKey {
    /// The key of the transaction of another method with the same identity (ACK and CANCEL
    /// looking for their INVITE).
    fn with_method(&self, m: Method) -> ServerKey {
        let mut key = self.clone();
        match &mut key {
            ServerKey::Branch { method, .. } | ServerKey::Legacy { method, .. } => *method = m,
        }
        key
    }

    /// For an RFC 2543 ACK: the INVITE had no To tag, the ACK has the tag of our response.
    fn without_to_tag(&self) -> Option<ServerKey> {
        let ServerKey::Legacy { to_tag, .. } = self else {
            return None;
        };
        let mut key = self.clone();
        if let ServerKey::Legacy { to_tag: t, .. } = &mut key {
            *t = Bytes::new();
        }
        (!to_tag.is_empty()).then_some(key)
    }
}

/// From tag, Call-ID and CSeq of a request without To tag (RFC 3261 section 8.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct MergeKey {
    from_tag: Bytes,
    call_id: Bytes,
    cseq: u32,
    method: Method,
}

/// Call-ID and CSeq number: what ties the ACK for a 2xx to its INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct AckKey {
    call_id: Bytes,
    cseq: u32,
}

/// What the layer reads from a request before deciding anything.
struct Incoming {
    method: Method,
    key: ServerKey,
    merge: MergeKey,
    ack: AckKey,
    /// Whether To has a tag (then the request is in a dialog and not checked for merging).
    to_tagged: bool,
}

impl Incoming {
    /// `None` when a header the matching needs is missing or malformed.
    ///
    /// The keys are copied out of the datagram: they live as long as the transaction, and a
    /// slice would pin the whole receive buffer it shares.
    fn read(request: &Message) -> Option<Incoming> {
        let own = |b: &[u8]| Bytes::copy_from_slice(b);
        let method = request.method()?.clone();
        let top_via = request.values(&HeaderName::Via).next()?;
        let via = Via::parse(&top_via).ok()?;
        let cseq = request.cseq().ok()?.seq;
        let call_id = own(request.call_id()?);
        let from_tag = own(&request.from().ok()?.tag().unwrap_or_default());
        let to_tag = request.to().ok()?.tag();
        let key = match via.branch() {
            Some(branch) if via.is_rfc3261() => ServerKey::Branch {
                branch: own(&branch),
                sent_by: sent_by(&via),
                method: method.clone(),
            },
            _ => ServerKey::Legacy {
                request_uri: own(&request.request_uri()?.raw),
                to_tag: own(&to_tag.clone().unwrap_or_default()),
                from_tag: from_tag.clone(),
                call_id: call_id.clone(),
                cseq,
                top_via: own(&top_via),
                method: method.clone(),
            },
        };
        Some(Incoming {
            merge: MergeKey { from_tag, call_id: call_id.clone(), cseq, method: method.clone() },
            ack: AckKey { call_id, cseq },
            to_tagged: to_tag.is_some(),
            method,
            key,
        })
    }
}

/// sent-by as compared in RFC 3261 section 17.2.3: host names are case-insensitive.
fn sent_by(via: &Via) -> Bytes {
    let mut s = format!("{}:{}", via.host, via.port.unwrap_or(0));
    s.make_ascii_lowercase();
    Bytes::from(s)
}

impl TransactionLayer {
    /// A request: a retransmission, an ACK, a CANCEL, a merged request, or a new transaction.
    pub(super) fn handle_request(&mut self, now: Instant, request: Message, flow: Flow) {
        let Some(incoming) = Incoming::read(&request) else {
            tracing::debug!("PeerMisbehaved: request without usable Via/CSeq/From/To; dropped");
            return;
        };
        if incoming.method == Method::Ack {
            return self.handle_ack(now, request, flow, incoming);
        }
        if let Some(&id) = self.server.get(&incoming.key) {
            return self.retransmission(id);
        }
        if !incoming.to_tagged && self.merged.contains_key(&incoming.merge) {
            // RFC 3261 section 8.2.2.2: the same request reached us by another path.
            return self.reply_stateless(&request, flow, 482, "Loop Detected");
        }
        if self.slab.len >= self.max_transactions {
            tracing::debug!("transaction cap reached; answering 503 without state");
            return self.reply_stateless(&request, flow, 503, "Service Unavailable");
        }
        if incoming.method == Method::Cancel {
            self.new_cancel(now, request, flow, incoming);
        } else {
            self.new_server(request, flow, incoming);
        }
    }

    /// RFC 3261 sections 17.2.1 and 17.2.2: a retransmitted request gets the last response again.
    fn retransmission(&mut self, id: TxnId) {
        let last = match self.slab.get(id) {
            Some((txn, State::InviteServer(s))) => match s {
                InviteServer::Proceeding { last } => Some((txn.flow, last)),
                InviteServer::Completed { response, .. }
                | InviteServer::Accepted { response, .. }
                | InviteServer::Acknowledged { response } => Some((txn.flow, response)),
                InviteServer::Confirmed => None,
            },
            Some((txn, State::NonInviteServer(s))) => match s {
                NonInviteServer::Trying => None,
                NonInviteServer::Proceeding { last } => Some((txn.flow, last)),
                NonInviteServer::Completed { response } => Some((txn.flow, response)),
            },
            _ => None,
        };
        if let Some((flow, data)) = last.map(|(f, d)| (f, d.clone())) {
            self.transmit(flow, data);
        }
    }

    fn reply_stateless(&mut self, request: &Message, flow: Flow, code: u16, reason: &str) {
        let tag = self.new_tag();
        let response = request.response_to(code, reason, Some(&tag));
        self.transmit(flow, response.to_bytes());
    }

    /// Reserves a slot and enters a new server transaction into the maps; the caller fills it.
    fn open_server(&mut self, flow: Flow, incoming: Incoming) -> Txn {
        let id = self.slab.reserve();
        let keys = Box::new(ServerKeys {
            merge: (!incoming.to_tagged).then_some(incoming.merge),
            ack: (incoming.method == Method::Invite).then_some(incoming.ack),
            key: incoming.key,
        });
        self.server.insert(keys.key.clone(), id);
        if let Some(merge) = &keys.merge {
            self.merged.insert(merge.clone(), id);
        }
        Txn { id, flow, timers: TimerTable::default(), role: Role::Server { keys, to_tag: None } }
    }

    fn new_server(&mut self, request: Message, flow: Flow, incoming: Incoming) {
        let invite = incoming.method == Method::Invite;
        let txn = self.open_server(flow, incoming);
        let id = txn.id;
        let state = if invite {
            // RFC 3261 section 17.2.1 allows waiting 200 ms for the user's provisional; the B2BUA
            // first asks admission and the next hop, so 100 goes out at once and stops Timer A.
            let trying = request.response_to(100, "Trying", None).to_bytes();
            self.transmit(flow, trying.clone());
            State::InviteServer(InviteServer::Proceeding { last: trying })
        } else {
            State::NonInviteServer(NonInviteServer::Trying)
        };
        self.slab.put(id, txn, state);
        self.events.push_back(TxnEvent::RequestReceived { txn: id, request, flow });
    }

    /// RFC 3261 section 9.2: a CANCEL is answered by the layer, in a transaction of its own.
    fn new_cancel(&mut self, now: Instant, request: Message, flow: Flow, incoming: Incoming) {
        let target = self.server.get(&incoming.key.with_method(Method::Invite)).and_then(|&id| {
            match self.slab.get(id)? {
                (txn, State::InviteServer(s)) => {
                    let tag = match &txn.role {
                        Role::Server { to_tag, .. } => to_tag.clone(),
                        Role::Client { .. } => None,
                    };
                    Some((id, matches!(s, InviteServer::Proceeding { .. }), tag))
                }
                _ => None,
            }
        });
        // The 200 carries the To tag of the INVITE's responses if there was one (section 9.2).
        let tag = match target.as_ref().and_then(|(_, _, tag)| tag.clone()) {
            Some(tag) => String::from_utf8_lossy(&tag).into_owned(),
            None => self.new_tag(),
        };
        let (code, reason) = match target {
            Some(_) => (200, "OK"),
            None => (481, "Call/Transaction Does Not Exist"),
        };
        let response = request.response_to(code, reason, Some(&tag)).to_bytes();
        let mut txn = self.open_server(flow, incoming);
        let id = txn.id;
        self.transmit(flow, response.clone());
        match self.complete_non_invite(now, &mut txn, response) {
            Some(state) => self.slab.put(id, txn, State::NonInviteServer(state)),
            None => self.terminate(id, txn),
        }
        if let Some((invite, true, _)) = target {
            self.events.push_back(TxnEvent::CancelReceived { invite, request });
        }
    }

    /// An ACK: for a non-2xx (absorbed here), for a 2xx (passed up), or stray (passed up).
    fn handle_ack(&mut self, now: Instant, request: Message, flow: Flow, incoming: Incoming) {
        let key = incoming.key.with_method(Method::Invite);
        let id = self
            .server
            .get(&key)
            .or_else(|| self.server.get(&key.without_to_tag()?))
            // The ACK for a 2xx has a branch of its own (RFC 3261 section 17.1.1.3).
            .or_else(|| self.accepted.get(&incoming.ack))
            .copied();
        let Some(id) = id else {
            self.events.push_back(TxnEvent::AckReceived { invite: None, request, flow });
            return;
        };
        self.transition(id, |layer, txn, state| match state {
            State::InviteServer(s) => {
                layer.invite_server_ack(now, txn, s, request, flow).map(State::InviteServer)
            }
            other => Some(other),
        });
    }

    fn invite_server_ack(
        &mut self,
        now: Instant,
        txn: &mut Txn,
        state: InviteServer,
        request: Message,
        flow: Flow,
    ) -> Option<InviteServer> {
        match state {
            InviteServer::Completed { .. } => {
                txn.timers.clear_all();
                if txn.flow.is_reliable() {
                    return None; // Timer I is 0 on reliable transports.
                }
                self.arm(txn, TimerName::I, now, self.timers_config.t4);
                Some(InviteServer::Confirmed)
            }
            InviteServer::Accepted { response, .. } => {
                // Stop retransmitting; linger 64*T1 to absorb INVITE retransmissions.
                txn.timers.clear_all();
                self.arm(txn, TimerName::L, now, self.t1x64());
                self.events.push_back(TxnEvent::AckReceived {
                    invite: Some(txn.id),
                    request,
                    flow,
                });
                Some(InviteServer::Acknowledged { response })
            }
            s @ InviteServer::Acknowledged { .. } => {
                // RFC 6026 section 8.7: ACKs in Accepted go to the user. Timer L is not pushed
                // back, so a peer cannot keep the transaction alive.
                self.events.push_back(TxnEvent::AckReceived {
                    invite: Some(txn.id),
                    request,
                    flow,
                });
                Some(s)
            }
            s @ InviteServer::Confirmed => Some(s), // ACK retransmission: absorbed
            s @ InviteServer::Proceeding { .. } => {
                tracing::debug!("PeerMisbehaved: ACK before any final response; dropped");
                Some(s)
            }
        }
    }

    /// See [`TransactionLayer::respond`].
    pub(super) fn respond_server(&mut self, now: Instant, id: TxnId, response: Message) {
        let Some(code) = response.code().filter(|c| (100..=699).contains(c)) else {
            tracing::debug!("ApiMisuse: respond on {id:?} with something not a response");
            return;
        };
        let live = self.transition(id, |layer, txn, state| match state {
            State::InviteServer(s) => {
                layer.invite_server_respond(now, txn, s, code, &response).map(State::InviteServer)
            }
            State::NonInviteServer(s) => layer
                .non_invite_server_respond(now, txn, s, code, &response)
                .map(State::NonInviteServer),
            other => {
                tracing::debug!("ApiMisuse: respond on client transaction {id:?}");
                Some(other)
            }
        });
        if !live {
            tracing::debug!("ApiMisuse: respond on unknown or ended transaction {id:?}");
        }
    }

    fn invite_server_respond(
        &mut self,
        now: Instant,
        txn: &mut Txn,
        state: InviteServer,
        code: u16,
        response: &Message,
    ) -> Option<InviteServer> {
        let InviteServer::Proceeding { .. } = state else {
            tracing::debug!("ApiMisuse: {code} on {:?} after its final response", txn.id);
            return Some(state);
        };
        let data = response.to_bytes();
        self.transmit(txn.flow, data.clone());
        remember_to_tag(txn, response);
        let t1 = self.timers_config.t1;
        Some(match code {
            100..=199 => InviteServer::Proceeding { last: data },
            200..=299 => {
                if let Role::Server { keys, .. } = &txn.role
                    && let Some(ack) = &keys.ack
                {
                    self.accepted.insert(ack.clone(), txn.id);
                }
                // RFC 3261 section 13.3.1.4: T1 doubling up to T2, until 64*T1 (Timer L).
                self.arm_retransmit(txn, TimerName::Retransmit2xx, now, t1);
                self.arm(txn, TimerName::L, now, self.t1x64());
                InviteServer::Accepted { response: data, interval: t1 }
            }
            _ => {
                self.arm_retransmit(txn, TimerName::G, now, t1);
                self.arm(txn, TimerName::H, now, self.t1x64());
                InviteServer::Completed { response: data, interval: t1 }
            }
        })
    }

    fn non_invite_server_respond(
        &mut self,
        now: Instant,
        txn: &mut Txn,
        state: NonInviteServer,
        code: u16,
        response: &Message,
    ) -> Option<NonInviteServer> {
        if let NonInviteServer::Completed { .. } = state {
            tracing::debug!("ApiMisuse: {code} on {:?} after its final response", txn.id);
            return Some(state);
        }
        let data = response.to_bytes();
        self.transmit(txn.flow, data.clone());
        remember_to_tag(txn, response);
        match code {
            100..=199 => Some(NonInviteServer::Proceeding { last: data }),
            _ => self.complete_non_invite(now, txn, data),
        }
    }

    /// Completed with `response` (already sent): Timer J, which is 0 on reliable transports.
    fn complete_non_invite(
        &mut self,
        now: Instant,
        txn: &mut Txn,
        response: Bytes,
    ) -> Option<NonInviteServer> {
        if txn.flow.is_reliable() {
            return None;
        }
        self.arm(txn, TimerName::J, now, self.t1x64());
        Some(NonInviteServer::Completed { response })
    }

    pub(super) fn invite_server_timer(
        &mut self,
        now: Instant,
        txn: &mut Txn,
        state: InviteServer,
        name: TimerName,
    ) -> Option<InviteServer> {
        match (state, name) {
            (InviteServer::Completed { response, interval }, TimerName::G) => {
                self.transmit(txn.flow, response.clone());
                let interval = self.backoff(interval);
                self.arm(txn, TimerName::G, now, interval);
                Some(InviteServer::Completed { response, interval })
            }
            (InviteServer::Accepted { response, interval }, TimerName::Retransmit2xx) => {
                self.transmit(txn.flow, response.clone());
                let interval = self.backoff(interval);
                self.arm(txn, TimerName::Retransmit2xx, now, interval);
                Some(InviteServer::Accepted { response, interval })
            }
            (InviteServer::Completed { .. }, TimerName::H)
            | (InviteServer::Accepted { .. }, TimerName::L) => {
                self.events.push_back(TxnEvent::TimedOut { txn: txn.id });
                None
            }
            (InviteServer::Confirmed, TimerName::I)
            | (InviteServer::Acknowledged { .. }, TimerName::L) => None,
            (s, _) => Some(s), // each transition clears the lanes, so this does not happen
        }
    }
}

pub(super) fn non_invite_server_timer(
    state: NonInviteServer,
    name: TimerName,
) -> Option<NonInviteServer> {
    match (state, name) {
        (NonInviteServer::Completed { .. }, TimerName::J) => None,
        (s, _) => Some(s),
    }
}

/// Keeps the To tag of a response we sent, for the 200 to a later CANCEL.
fn remember_to_tag(txn: &mut Txn, response: &Message) {
    if let (Role::Server { to_tag, .. }, Some(tag)) =
        (&mut txn.role, response.to().ok().and_then(|to| to.tag()))
    {
        *to_tag = Some(tag);
    }
}
