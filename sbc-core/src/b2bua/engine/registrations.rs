//! Registrations in the engine: REGISTER from access clients, relayed to a registrar trunk or
//! kept locally, and calls to registered clients.
//!
//! Relay mode: a client's first REGISTER creates a binding with a fresh token and is sent
//! upstream as the binding's own registration dialog (new Call-ID and From tag, the SBC's
//! Contact `sip:<token>@<trunk listener>`, the client's Request-URI, To and credentials). The
//! upstream answer decides: a 2xx grants the binding (the client gets at most
//! `client_expires`, and never beyond the upstream registration), a 401/407 goes back to the
//! client unchanged so that it answers the upstream realm. Refreshes are answered locally while
//! the upstream registration has at least half its lifetime left (`Binding::refresh`); the
//! first refresh after that goes upstream again with the client's latest credentials. An
//! unregistration, a dropped connection and a client that stops refreshing (the sweep) remove
//! the binding at once and send `Expires: 0` upstream with the last credentials, best effort:
//! if the registrar refuses it, its binding expires on its own and a call to the token meanwhile
//! gets 404 from the SBC.
//!
//! Calls: an INVITE from a trunk whose Request-URI user is a token goes to that binding's
//! client; an unknown or expired token is 404. With a local registrar, an INVITE (from anywhere)
//! to `user@domain` (or `user@` one of the SBC's addresses) of a realm user goes to the user's
//! latest binding, or is 480 when the user has none. Both come before the routes. Leg B then
//! leaves on the client's flow (its connection; for UDP the address its REGISTER came from),
//! with the client's Contact as Request-URI and the access listener's media profile.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use sbc_policy::Verdict;

use super::{CallKey, CallTimer, Engine, Role, b_from_hdr, leg_media};
use crate::b2bua::bindings::{self, Binding, BindingError, Refresh, Upstream, make_token};
use crate::b2bua::dialog::Dialog;
use crate::b2bua::ids::{make_call_id, make_tag};
use crate::b2bua::registrar::{self, ContactRequest};
use crate::b2bua::routing::Origin;
use crate::config::{ListenerId, RegistrarMode, Side, TrunkId};
use crate::sip::{Header, HeaderName, Host, Message, Uri};
use crate::transaction::TxnId;
use crate::transport::Flow;

/// How often the sweeping shard expires bindings (and how late an expiry may be noticed).
pub(super) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Ring timeout of calls to registered clients (they match no route).
pub(super) const RING_TIMEOUT: Duration = Duration::from_secs(120);

/// The key of owners that belong to no call (upstream REGISTERs).
const IDLE: CallKey = CallKey { index: u32::MAX, generation: 0 };

/// Where leg B of a call to a registered client goes.
#[derive(Debug, Clone)]
pub(super) struct ClientTarget {
    /// The client's flow.
    pub(super) flow: Flow,
    /// The client's Contact URI: leg B's Request-URI.
    contact: Bytes,
    /// The address of record called.
    aor: String,
}

impl ClientTarget {
    fn of(b: Binding) -> ClientTarget {
        ClientTarget { flow: b.flow, contact: b.contact, aor: b.aor }
    }
}

/// What an INVITE's Request-URI is, for the registrar.
pub(super) enum Registered {
    /// A registered client.
    Client(ClientTarget),
    /// A contact token of no live binding: 404.
    Unknown,
    /// A local registrar's user with no binding: 480.
    Unavailable,
}

/// An upstream REGISTER waiting for its answer, with the client REGISTER it answers.
#[derive(Debug, Clone)]
pub(super) struct PendingRegister {
    server: TxnId,
    request: Message,
    token: String,
    /// What the client may be granted at most (its request, capped by `client_expires`).
    requested: Duration,
    /// What we asked upstream (the expiry assumed when the 2xx names none).
    asked: Duration,
    /// The upstream registration as sent: to undo it if the binding went meanwhile.
    upstream: Upstream,
}

/// A relay registrar's settings.
#[derive(Debug, Clone, Copy)]
struct Relay {
    trunk: TrunkId,
    upstream_expires: Duration,
    client_expires: Duration,
}

impl Engine {
    /// REGISTER: bans, lists and the REGISTER rate, then the listener's registrar (none: 405).
    pub(super) fn on_register(&mut self, now: Instant, txn: TxnId, req: Message, flow: Flow) {
        if let Verdict::Reject { status, retry_after } =
            self.policy.admit_register(now, flow.remote.ip(), flow.listener.0)
        {
            return self.refuse(now, txn, &req, status, retry_after);
        }
        let access =
            self.config.listeners.get(flow.listener.0).is_some_and(|l| l.side == Side::Access);
        let Some(reg) = access.then(|| self.config.registrar(flow.listener)).flatten() else {
            return self.reject(now, txn, &req, 405, "Method Not Allowed");
        };
        let request = match registrar::contact_request(&req, reg.client_expires) {
            Ok(r) => r,
            Err(why) => return self.reply(now, txn, &req, 400, why),
        };
        let Some(to_aor) = req.to().ok().and_then(|t| registrar::aor_of(&t.uri)) else {
            return self.reply(now, txn, &req, 404, "Not Found");
        };
        match reg.mode {
            RegistrarMode::Local { domain } => {
                let user = match self.authenticate(now, txn, &req, flow, flow.listener) {
                    Ok(Some(user)) => user,
                    Ok(None) => return self.reply(now, txn, &req, 403, "Forbidden"),
                    Err(()) => return,
                };
                // A user registers its own address only (RFC 3261 section 10.3 step 3).
                if to_aor.rsplit_once('@').map(|(u, _)| u) != Some(user.as_str()) {
                    return self.reply(now, txn, &req, 403, "Forbidden");
                }
                let aor = format!("{user}@{domain}");
                self.register_local(now, txn, &req, flow, reg.client_expires, &aor, request);
            }
            RegistrarMode::Relay { trunk, upstream_expires } => {
                // The upstream registrar authenticates: its challenges pass through.
                let relay = Relay { trunk, upstream_expires, client_expires: reg.client_expires };
                self.register_relay(now, txn, req, flow, relay, &to_aor, request);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn register_local(
        &mut self,
        now: Instant,
        txn: TxnId,
        req: &Message,
        flow: Flow,
        client_max: Duration,
        aor: &str,
        request: ContactRequest,
    ) {
        match request {
            ContactRequest::Query => {}
            ContactRequest::RemoveAll => {
                for b in self.bindings.of_aor(now, aor) {
                    self.bindings.remove(&b.token);
                }
            }
            ContactRequest::Bind { contact, expires } if expires.is_zero() => {
                if let Some(b) = self.bindings.find(aor, &contact) {
                    self.bindings.remove(&b.token);
                }
            }
            ContactRequest::Bind { contact, expires } => {
                let token = match self.bindings.find(aor, &contact) {
                    Some(b) => b.token,
                    None => make_token(&mut self.rng),
                };
                let expires = now + expires.min(client_max);
                let binding =
                    Binding { aor: aor.to_owned(), contact, flow, expires, token, upstream: None };
                if let Err(e) = self.bindings.insert(binding) {
                    return self.binding_refused(now, txn, req, e);
                }
            }
        }
        self.stats.registers_accepted += 1;
        self.answer_bindings(now, txn, req, aor);
    }

    #[allow(clippy::too_many_arguments)]
    fn register_relay(
        &mut self,
        now: Instant,
        txn: TxnId,
        req: Message,
        flow: Flow,
        relay: Relay,
        aor: &str,
        request: ContactRequest,
    ) {
        let credentials = registrar::credentials_of(&req);
        let (contact, expires) = match request {
            ContactRequest::Query => {
                self.stats.registers_accepted += 1;
                return self.answer_bindings(now, txn, &req, aor);
            }
            ContactRequest::RemoveAll => {
                for b in self.bindings.of_aor(now, aor) {
                    if let Some(b) = self.bindings.remove(&b.token) {
                        self.unregister(now, &b.token, b.upstream, &credentials);
                    }
                }
                self.stats.registers_accepted += 1;
                return self.answer_bindings(now, txn, &req, aor);
            }
            ContactRequest::Bind { contact, expires } if expires.is_zero() => {
                let found = self.bindings.find(aor, &contact);
                if let Some(b) = found.and_then(|b| self.bindings.remove(&b.token)) {
                    self.unregister(now, &b.token, b.upstream, &credentials);
                }
                self.stats.registers_accepted += 1;
                return self.answer_bindings(now, txn, &req, aor);
            }
            ContactRequest::Bind { contact, expires } => (contact, expires),
        };
        let requested = expires.min(relay.client_expires);
        let token = match self.bindings.find(aor, &contact) {
            Some(b) => {
                let decision = b.refresh(now, expires, relay.client_expires);
                let until = match decision {
                    Refresh::Local(secs) => Some(now + Duration::from_secs(u64::from(secs))),
                    Refresh::Upstream => None,
                };
                // The client may have moved (another NAT port, a new connection).
                self.bindings.update(&b.token, |b| {
                    b.flow = flow;
                    if let Some(until) = until {
                        b.expires = until;
                    }
                    if let Some(u) = b.upstream.as_mut().filter(|_| !credentials.is_empty()) {
                        u.credentials = credentials.clone();
                    }
                });
                if until.is_some() {
                    // Throttled: the upstream registration still lasts long enough.
                    self.stats.registers_accepted += 1;
                    return self.answer_bindings(now, txn, &req, aor);
                }
                b.token
            }
            None => {
                let (Some(from), Some(to), Some(ruri)) = (
                    registrar::from_without_tag(&req),
                    req.header(&HeaderName::To).cloned(),
                    req.request_uri().map(|u| u.raw.clone()),
                ) else {
                    return self.reply(now, txn, &req, 400, "Bad Request");
                };
                let upstream = Upstream {
                    trunk: relay.trunk,
                    call_id: format!("{:032x}", self.rng.random::<u128>()),
                    from_tag: make_tag(&mut self.rng),
                    cseq: 0,
                    request_uri: ruri,
                    from,
                    to,
                    credentials,
                    granted: None,
                };
                let token = make_token(&mut self.rng);
                // Until the registrar answers, the binding lives as long as the client asked:
                // a client that never answers a challenge leaves nothing behind.
                let binding = Binding {
                    aor: aor.to_owned(),
                    contact,
                    flow,
                    expires: now + requested,
                    token: token.clone(),
                    upstream: Some(upstream),
                };
                if let Err(e) = self.bindings.insert(binding) {
                    return self.binding_refused(now, txn, &req, e);
                }
                token
            }
        };
        let Some(b) = self.bindings.update(&token, |b| {
            if let Some(u) = b.upstream.as_mut() {
                u.cseq = u.cseq.wrapping_add(1);
            }
        }) else {
            return self.reply(now, txn, &req, 500, "Server Internal Error");
        };
        let Some(upstream) = b.upstream else {
            // A local binding under a listener now relaying (a config change): start afresh.
            self.bindings.remove(&token);
            return self.reply(now, txn, &req, 500, "Server Internal Error");
        };
        let asked = relay.upstream_expires;
        let Some(t) = self.send_upstream(now, &upstream, &token, asked) else {
            return self.reply(now, txn, &req, 500, "Server Internal Error");
        };
        let pending =
            PendingRegister { server: txn, request: req, token, requested, asked, upstream };
        self.owners.insert(t, (IDLE, Role::Register(Box::new(pending))));
    }

    /// The registrar's final answer to an upstream REGISTER.
    pub(super) fn on_register_response(
        &mut self,
        now: Instant,
        pending: PendingRegister,
        resp: Message,
    ) {
        let code = resp.code().unwrap_or(500);
        let PendingRegister { server, request, token, requested, asked, upstream } = pending;
        if !(200..300).contains(&code) {
            // Keep the binding through a challenge (the client answers it) and a temporary
            // failure; a refusal ends it, and a binding never registered ends too.
            let keep = matches!(code, 401 | 407) || code >= 500;
            let registered = self
                .bindings
                .by_token(now, &token)
                .is_some_and(|b| b.upstream.is_some_and(|u| u.granted.is_some()));
            if !keep || (code >= 500 && !registered) {
                self.bindings.remove(&token);
            }
            let r = registrar::relay_refusal(&request, &resp, &make_tag(&mut self.rng));
            return self.txns.respond(now, server, r);
        }
        let granted = registrar::granted_expiry(&resp, &token).unwrap_or(asked);
        let aor = request.to().ok().and_then(|t| registrar::aor_of(&t.uri)).unwrap_or_default();
        if granted.is_zero() {
            self.bindings.remove(&token);
            return self.answer_bindings(now, server, &request, &aor);
        }
        let grant = requested.min(granted);
        let updated = self.bindings.update(&token, |b| {
            b.expires = now + grant;
            if let Some(u) = b.upstream.as_mut() {
                u.granted = Some((granted, now + granted));
            }
        });
        if updated.is_none() {
            // The binding went while its registration was on the way (its connection
            // dropped): take the registration back.
            let mut upstream = upstream;
            upstream.granted = Some((granted, now + granted));
            self.unregister(now, &token, Some(upstream), &[]);
        }
        self.answer_bindings(now, server, &request, &aor);
    }

    /// The upstream REGISTER timed out or could not be sent: the client hears it and may
    /// retry; its binding stays as it was (or expires).
    pub(super) fn on_register_failed(
        &mut self,
        now: Instant,
        pending: PendingRegister,
        code: u16,
        reason: &str,
    ) {
        let r = pending.request.response_to(code, reason, Some(&make_tag(&mut self.rng)));
        self.txns.respond(now, pending.server, r);
    }

    /// The sweep: bindings whose client stopped refreshing go, and upstream with them.
    pub(super) fn sweep_bindings(&mut self, now: Instant) {
        for b in self.bindings.expire(now) {
            self.unregister(now, &b.token, b.upstream, &[]);
        }
        self.timers.push(Reverse((now + SWEEP_INTERVAL, IDLE, CallTimer::Sweep)));
    }

    /// A connection is gone: its bindings go, and upstream with them.
    pub(super) fn drop_flow_bindings(&mut self, now: Instant, flow: Flow) {
        for b in self.bindings.remove_flow(flow) {
            self.unregister(now, &b.token, b.upstream, &[]);
        }
    }

    /// Whether an INVITE's Request-URI names a registered client (see the module docs).
    pub(super) fn registered_target(
        &self,
        now: Instant,
        origin: Origin,
        ruri: &Uri,
    ) -> Option<Registered> {
        let user = ruri.user_str()?;
        if origin.trunk().is_some() && bindings::is_token(user) {
            return Some(match self.bindings.by_token(now, user) {
                Some(b) => Registered::Client(ClientTarget::of(b)),
                None => Registered::Unknown,
            });
        }
        let host = ruri.host.as_ref()?;
        let own = matches!(host, Host::Ip(ip)
            if self.config.listeners.iter().any(|l| l.advertise == *ip || l.addr.ip() == *ip));
        for listener in (0..self.config.listeners.len()).map(ListenerId) {
            let Some(reg) = self.config.registrar(listener) else { continue };
            let RegistrarMode::Local { domain } = &reg.mode else { continue };
            if !own && !registrar::host_is(host, domain) {
                continue;
            }
            // Several clients of one user: the latest registered takes the call.
            if let Some(b) = self.bindings.of_aor(now, &format!("{user}@{domain}")).pop() {
                return Some(Registered::Client(ClientTarget::of(b)));
            }
            if self.is_local_user(listener, user) {
                return Some(Registered::Unavailable);
            }
        }
        None
    }

    /// Sends the INVITE of a call to a registered client on a new leg B.
    pub(super) fn start_client_attempt(&mut self, now: Instant, key: CallKey) {
        let Some(call) = self.call(key) else { return };
        let (Some(client), Some(invite)) = (call.client.clone(), call.a_invite_req.clone()) else {
            return;
        };
        let flow = client.flow;
        let Some(sent_by) = self.sent_by.get(flow.listener.0).cloned() else { return };
        let contact = self.contact_for(flow.listener, flow.transport);
        let Ok(ruri) = Uri::parse(client.contact.clone()) else {
            return self.fail_attempt(now, key, 480, "Temporarily Unavailable", None);
        };
        let tag = make_tag(&mut self.rng);
        let b = Dialog {
            call_id: Bytes::from(make_call_id(&mut self.rng, self.shard, key)),
            from_hdr: b_from_hdr(&invite, &sent_by, &tag),
            local_tag: Bytes::from(tag),
            remote_tag: None,
            to_hdr: Bytes::from(format!("<sip:{}>", client.aor)),
            local_cseq: 0,
            remote_cseq: None,
            remote_target: ruri,
            route_set: Vec::new(),
            flow,
            contact,
            sent_by,
        };
        let leg = leg_media(&self.config, flow.listener, None);
        let name = self.config.listeners[flow.listener.0].name.clone();
        let callee = client.aor.rsplit_once('@').map_or("", |(u, _)| u).to_owned();
        self.send_b_invite(now, key, b, None, leg, name, flow.remote, callee);
    }

    // ---- helpers ---------------------------------------------------------------------------

    /// Sends the REGISTER of `up` (its CSeq already set) asking for `expires`; `None` when the
    /// registrar trunk or the stored Request-URI is unusable.
    fn send_upstream(
        &mut self,
        now: Instant,
        up: &Upstream,
        token: &str,
        expires: Duration,
    ) -> Option<TxnId> {
        let trunk = self.config.trunks.get(up.trunk.0)?;
        // The first target that is up; all down (or no probing): the first.
        let idx = (0..trunk.targets.len()).find(|&i| self.health.is_up(up.trunk, i)).unwrap_or(0);
        let target = trunk.targets.get(idx)?;
        let flow =
            Flow { listener: trunk.listener, transport: target.transport, remote: target.addr };
        let sent_by = self.sent_by.get(trunk.listener.0)?.clone();
        let ours = self.contact_for(trunk.listener, target.transport);
        let rest = String::from_utf8_lossy(ours.strip_prefix(b"<sip:")?).into_owned();
        let msg = registrar::upstream_register(up, &format!("<sip:{token}@{rest}"), expires)?;
        self.stats.registers_relayed += 1;
        Some(self.txns.send_request(now, msg, flow, &sent_by))
    }

    /// Takes a removed binding's registration (`upstream`) back upstream (`Expires: 0`), with `credentials`
    /// when the client just sent some, else its last ones. Nothing to do for a binding never
    /// registered or whose registration already ended.
    fn unregister(
        &mut self,
        now: Instant,
        token: &str,
        upstream: Option<Upstream>,
        credentials: &[Header],
    ) {
        let Some(mut up) = upstream else { return };
        if up.granted.is_none_or(|(_, until)| until <= now) {
            return;
        }
        up.cseq = up.cseq.wrapping_add(1);
        if !credentials.is_empty() {
            up.credentials = credentials.to_vec();
        }
        if let Some(t) = self.send_upstream(now, &up, token, Duration::ZERO) {
            // Its outcome changes nothing here (see the module docs).
            self.owners.insert(t, (IDLE, Role::Fire));
        }
    }

    /// `200 OK` listing the live bindings of `aor` (the clients' own contacts).
    fn answer_bindings(&mut self, now: Instant, txn: TxnId, req: &Message, aor: &str) {
        let contacts: Vec<(Bytes, u64)> = self
            .bindings
            .of_aor(now, aor)
            .into_iter()
            .map(|b| (b.contact, b.expires.saturating_duration_since(now).as_secs()))
            .collect();
        let date = registrar::http_date(self.unix_time(now));
        let r = registrar::bindings_ok(req, &make_tag(&mut self.rng), &date, &contacts);
        self.txns.respond(now, txn, r);
    }

    fn binding_refused(&mut self, now: Instant, txn: TxnId, req: &Message, e: BindingError) {
        tracing::debug!(error = %e, "binding refused");
        match e {
            BindingError::TooManyContacts => self.reply(now, txn, req, 403, "Too Many Contacts"),
            _ => self.reject(now, txn, req, 503, "Service Unavailable"),
        }
    }

    /// Whether `user` is a digest user of the realm of `listener`.
    fn is_local_user(&self, listener: ListenerId, user: &str) -> bool {
        let rules = &self.config.policy.rules;
        let Some(realm) = rules.listeners.get(listener.0).and_then(|l| l.realm.as_deref()) else {
            return false;
        };
        rules
            .realms
            .iter()
            .filter(|r| r.realm == realm)
            .any(|r| r.users.iter().any(|u| u.name == user))
    }
}
