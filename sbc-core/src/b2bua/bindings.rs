//! The registration bindings of access clients, shared by every shard.
//!
//! A binding ties an address of record (`user@domain`) to the client that registered it: the
//! client's [`Flow`] (its connection, or for UDP the address its REGISTER came from, so a NATed
//! client is reached where it really is; never its Contact, which for a WebSocket client names an
//! `.invalid` host), its Contact URI (the Request-URI of calls to it), the expiry granted to it,
//! and an opaque token. In relay mode the token is the user part of the Contact the SBC registers
//! upstream in the client's place (topology hiding: the upstream registrar never sees the
//! client), and an INVITE to that token reaches the client; the binding then also carries the
//! upstream registration's dialog state ([`Upstream`]).
//!
//! Calls are sharded by Call-ID, so a REGISTER and a later INVITE to the same user land on
//! different shards: one [`Bindings`] per process is shared (`Arc`) by all shards, like the edge
//! policy. It is sans-IO like the rest of the core: every operation takes `now`, and nothing
//! expires by itself; one shard sweeps ([`Bindings::expire`]) and sends the upstream
//! unregistrations, and lookups ignore bindings past their expiry meanwhile.
//!
//! Locking: one `Mutex` around the tables. Every operation is a few hash-map operations (no I/O,
//! no SIP work under the lock) and registrations are rare next to other messages (a client
//! refreshes once a minute), so the lock is uncontended in practice; a striped store would
//! only pay off far beyond the `max` this is bounded by.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::TrunkId;
use crate::sip::Header;
use crate::transport::Flow;

/// Bindings a process holds by default (the shell's store, and an engine's own); beyond it a
/// new registration is answered 503.
pub const DEFAULT_MAX_BINDINGS: usize = 1 << 20;

/// Contacts one address of record may have at once; more are refused (STYLE: bound everything).
pub const MAX_CONTACTS_PER_AOR: usize = 16;

/// Length of a contact token: `rg` and 32 hex digits (128 random bits).
const TOKEN_LEN: usize = 34;

/// One client's registration of one address of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The address of record, `user@domain`, the domain in lower case.
    pub aor: String,
    /// The client's Contact URI, as it wrote it: the Request-URI of calls to it.
    pub contact: Bytes,
    /// Where the client is: its connection, or the address its UDP REGISTER came from.
    pub flow: Flow,
    /// When the client's registration ends unless it refreshes.
    pub expires: Instant,
    /// The SBC's contact token of this binding (see [`make_token`]).
    pub token: String,
    /// The registration upstream, in relay mode.
    pub upstream: Option<Upstream>,
}

/// The SBC's registration of a binding at the upstream registrar: one REGISTER dialog per binding
/// (same Call-ID and From tag for every refresh, CSeq incremented, RFC 3261 section 10.2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The registrar trunk.
    pub trunk: TrunkId,
    /// Call-ID of the upstream registration.
    pub call_id: String,
    /// Our From tag on it.
    pub from_tag: String,
    /// CSeq of the last REGISTER sent.
    pub cseq: u32,
    /// The client's Request-URI, kept so that its digest `uri` keeps matching.
    pub request_uri: Bytes,
    /// The client's From value without its tag, and its To value.
    pub from: Bytes,
    /// The To value (the address of record) as the client wrote it.
    pub to: Bytes,
    /// The client's last Authorization / Proxy-Authorization headers, re-sent on refreshes and
    /// on the unregistration.
    pub credentials: Vec<Header>,
    /// The lifetime the registrar granted and when it ends; `None` until a 2xx.
    pub granted: Option<(Duration, Instant)>,
}

/// What to do with a client's refresh of an existing binding (relay mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Answer `200` locally, granting this many seconds.
    Local(u32),
    /// Register upstream again first (not registered yet, or less than half the upstream
    /// lifetime left).
    Upstream,
}

impl Binding {
    /// Whether the binding is still valid at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        self.expires > now
    }

    /// Whether a client asking for `requested` seconds (at most `client_max`) can be answered
    /// locally: only while the upstream registration has at least half its lifetime left, and
    /// never for longer than that registration still lasts.
    pub fn refresh(&self, now: Instant, requested: Duration, client_max: Duration) -> Refresh {
        let Some((lifetime, until)) = self.upstream.as_ref().and_then(|u| u.granted) else {
            return Refresh::Upstream;
        };
        let left = until.saturating_duration_since(now);
        if left < lifetime / 2 || left.is_zero() {
            return Refresh::Upstream;
        }
        Refresh::Local(requested.min(client_max).min(left).as_secs() as u32)
    }
}

/// Why a binding could not be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// The store holds its maximum of bindings.
    #[error("binding store full")]
    Full,
    /// The address of record has [`MAX_CONTACTS_PER_AOR`] contacts.
    #[error("too many contacts for this address of record")]
    TooManyContacts,
}

/// Every binding of the process; see the module docs.
#[derive(Debug)]
pub struct Bindings {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_token: HashMap<String, Binding>,
    /// (aor, client contact) -> token: finds a client's binding when it refreshes.
    by_contact: HashMap<(String, Bytes), String>,
    by_aor: HashMap<String, Vec<String>>,
    /// Connection-oriented flows only: UDP has no connection whose loss ends a binding.
    by_flow: HashMap<Flow, Vec<String>>,
    /// Expiry order, exact (entries are replaced when a binding is refreshed).
    expiry: BTreeSet<(Instant, String)>,
}

impl Bindings {
    /// An empty store of at most `max` bindings.
    pub fn new(max: usize) -> Bindings {
        Bindings { max, inner: Mutex::new(Inner::default()) }
    }

    /// Bindings held, live or waiting for the sweep.
    pub fn len(&self) -> usize {
        self.lock().by_token.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live binding of `token`.
    pub fn by_token(&self, now: Instant, token: &str) -> Option<Binding> {
        self.lock().by_token.get(token).filter(|b| b.is_live(now)).cloned()
    }

    /// The binding (live or not) of a client's contact for an address of record.
    pub fn find(&self, aor: &str, contact: &[u8]) -> Option<Binding> {
        let inner = self.lock();
        let token = inner.by_contact.get(&(aor.to_owned(), Bytes::copy_from_slice(contact)))?;
        inner.by_token.get(token).cloned()
    }

    /// The live bindings of an address of record, oldest first.
    pub fn of_aor(&self, now: Instant, aor: &str) -> Vec<Binding> {
        let inner = self.lock();
        let tokens = inner.by_aor.get(aor).map_or(&[][..], Vec::as_slice);
        tokens
            .iter()
            .filter_map(|t| inner.by_token.get(t))
            .filter(|b| b.is_live(now))
            .cloned()
            .collect()
    }

    /// Stores `binding`, replacing the one with the same token (a refresh: its flow, contact
    /// and expiry may change).
    pub fn insert(&self, binding: Binding) -> Result<(), BindingError> {
        let mut inner = self.lock();
        if !inner.by_token.contains_key(&binding.token) {
            if inner.by_token.len() >= self.max {
                return Err(BindingError::Full);
            }
            if inner.by_aor.get(&binding.aor).is_some_and(|v| v.len() >= MAX_CONTACTS_PER_AOR) {
                return Err(BindingError::TooManyContacts);
            }
        }
        inner.unlink(&binding.token);
        inner.link(binding);
        Ok(())
    }

    /// Changes the binding of `token` in place (keeping its indices right); returns it as
    /// changed.
    pub fn update(&self, token: &str, f: impl FnOnce(&mut Binding)) -> Option<Binding> {
        let mut inner = self.lock();
        let mut b = inner.unlink(token)?;
        f(&mut b);
        b.token = token.to_owned();
        inner.link(b.clone());
        Some(b)
    }

    /// Removes the binding of `token`.
    pub fn remove(&self, token: &str) -> Option<Binding> {
        self.lock().unlink(token)
    }

    /// Removes every binding reached through `flow` (its connection is gone). Each binding is
    /// returned to exactly one caller, however many shards report the same flow.
    pub fn remove_flow(&self, flow: Flow) -> Vec<Binding> {
        let mut inner = self.lock();
        let tokens = inner.by_flow.remove(&flow).unwrap_or_default();
        tokens.iter().filter_map(|t| inner.unlink(t)).collect()
    }

    /// Removes and returns the bindings whose expiry has passed.
    pub fn expire(&self, now: Instant) -> Vec<Binding> {
        let mut inner = self.lock();
        let mut out = Vec::new();
        while let Some((at, token)) = inner.expiry.first().cloned() {
            if at > now {
                break;
            }
            match inner.unlink(&token) {
                Some(b) => out.push(b),
                None => {
                    inner.expiry.remove(&(at, token));
                }
            }
        }
        out
    }

    /// The earliest expiry held.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.lock().expiry.first().map(|(at, _)| *at)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing every registration: keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn link(&mut self, b: Binding) {
        let token = b.token.clone();
        self.by_contact.insert((b.aor.clone(), b.contact.clone()), token.clone());
        self.by_aor.entry(b.aor.clone()).or_default().push(token.clone());
        if b.flow.is_reliable() {
            self.by_flow.entry(b.flow).or_default().push(token.clone());
        }
        self.expiry.insert((b.expires, token.clone()));
        self.by_token.insert(token, b);
    }

    fn unlink(&mut self, token: &str) -> Option<Binding> {
        let b = self.by_token.remove(token)?;
        let key = (b.aor.clone(), b.contact.clone());
        if self.by_contact.get(&key).is_some_and(|t| t == token) {
            self.by_contact.remove(&key);
        }
        remove_from(&mut self.by_aor, &b.aor, token);
        remove_from(&mut self.by_flow, &b.flow, token);
        self.expiry.remove(&(b.expires, token.to_owned()));
        Some(b)
    }
}

fn remove_from<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Vec<String>>,
    key: &K,
    token: &str,
) {
    if let Some(v) = map.get_mut(key) {
        v.retain(|t| t != token);
        if v.is_empty() {
            map.remove(key);
        }
    }
}

/// A fresh contact token: `rg` and 128 random bits in hex. Unguessable, so that only the
/// upstream registrar, which was given it, can route a call to the client.
pub fn make_token(rng: &mut impl rand::Rng) -> String {
    format!("rg{:032x}", rng.random::<u128>())
}

/// Whether a Request-URI user part has the shape of a contact token.
pub fn is_token(user: &str) -> bool {
    user.len() == TOKEN_LEN
        && user.starts_with("rg")
        && user.bytes().skip(2).all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::config::{ListenerId, Transport};

    fn flow(transport: Transport, port: u16) -> Flow {
        let remote = format!("192.0.2.7:{port}").parse().unwrap();
        Flow { listener: ListenerId(0), transport, remote }
    }

    fn binding(
        rng: &mut StdRng,
        aor: &str,
        contact: &str,
        flow: Flow,
        expires: Instant,
    ) -> Binding {
        Binding {
            aor: aor.into(),
            contact: Bytes::copy_from_slice(contact.as_bytes()),
            flow,
            expires,
            token: make_token(rng),
            upstream: None,
        }
    }

    fn upstream(granted: Option<(Duration, Instant)>) -> Upstream {
        Upstream {
            trunk: TrunkId(0),
            call_id: "c".into(),
            from_tag: "t".into(),
            cseq: 1,
            request_uri: Bytes::from_static(b"sip:example.com"),
            from: Bytes::from_static(b"<sip:alice@example.com>"),
            to: Bytes::from_static(b"<sip:alice@example.com>"),
            credentials: Vec::new(),
            granted,
        }
    }

    #[test]
    fn tokens_have_their_shape_and_differ() {
        let mut rng = StdRng::seed_from_u64(7);
        let (a, b) = (make_token(&mut rng), make_token(&mut rng));
        assert!(is_token(&a) && is_token(&b) && a != b, "{a} {b}");
        for not in ["alice", "100", "rg", &a[..33], &a.to_uppercase(), &format!("{a}0")] {
            assert!(!is_token(not), "{not}");
        }
    }

    #[test]
    fn bindings_expire_on_the_fake_clock_and_refresh_moves_the_expiry() {
        let mut rng = StdRng::seed_from_u64(1);
        let t0 = Instant::now();
        let store = Bindings::new(10);
        let b = binding(&mut rng, "alice@x", "sip:a@h", flow(Transport::Udp, 1), t0 + secs(60));
        let token = b.token.clone();
        store.insert(b).unwrap();
        assert_eq!(store.next_expiry(), Some(t0 + secs(60)));
        assert!(store.by_token(t0 + secs(59), &token).is_some());
        assert!(store.by_token(t0 + secs(60), &token).is_none(), "expired bindings are not found");
        assert_eq!(store.of_aor(t0, "alice@x").len(), 1);
        // A refresh at 50 s moves the expiry; the sweep at 60 s leaves it.
        store.update(&token, |b| b.expires = t0 + secs(110)).unwrap();
        assert!(store.expire(t0 + secs(60)).is_empty());
        assert_eq!(store.len(), 1);
        assert!(store.find("alice@x", b"sip:a@h").is_some());
        let gone = store.expire(t0 + secs(110));
        assert_eq!(gone.iter().map(|b| b.token.as_str()).collect::<Vec<_>>(), [token.as_str()]);
        assert!(store.is_empty() && store.next_expiry().is_none());
        assert!(store.find("alice@x", b"sip:a@h").is_none());
        assert!(store.of_aor(t0, "alice@x").is_empty());
    }

    #[test]
    fn a_dropped_connection_removes_its_bindings_once() {
        let mut rng = StdRng::seed_from_u64(2);
        let t0 = Instant::now();
        let store = Bindings::new(10);
        let tcp = flow(Transport::Tcp, 40000);
        let other = flow(Transport::Tcp, 40001);
        let udp = flow(Transport::Udp, 40000);
        for (aor, f) in [("a@x", tcp), ("b@x", tcp), ("c@x", other), ("d@x", udp)] {
            store.insert(binding(&mut rng, aor, "sip:c@h", f, t0 + secs(60))).unwrap();
        }
        let mut gone: Vec<String> = store.remove_flow(tcp).into_iter().map(|b| b.aor).collect();
        gone.sort();
        assert_eq!(gone, ["a@x", "b@x"]);
        assert!(store.remove_flow(tcp).is_empty(), "a second shard reporting it gets nothing");
        assert!(store.remove_flow(udp).is_empty(), "UDP has no connection to lose");
        assert_eq!(store.len(), 2);
        assert!(store.of_aor(t0, "a@x").is_empty());
    }

    #[test]
    fn a_client_that_moves_is_found_on_its_new_flow_only() {
        let mut rng = StdRng::seed_from_u64(5);
        let t0 = Instant::now();
        let store = Bindings::new(10);
        let (old, new) = (flow(Transport::Tcp, 1000), flow(Transport::Tcp, 1001));
        let b = binding(&mut rng, "a@x", "sip:a@h", old, t0 + secs(60));
        let token = b.token.clone();
        store.insert(b).unwrap();
        // It re-registered over a new connection.
        let moved = store.update(&token, |b| b.flow = new).unwrap();
        assert_eq!(moved.flow, new);
        assert!(store.remove_flow(old).is_empty(), "the old connection holds nothing now");
        assert_eq!(store.by_token(t0, &token).map(|b| b.flow), Some(new));
        assert_eq!(store.remove_flow(new).len(), 1);
        assert!(store.update(&token, |_| {}).is_none(), "gone");
    }

    #[test]
    fn the_store_and_each_aor_are_bounded() {
        let mut rng = StdRng::seed_from_u64(3);
        let t0 = Instant::now();
        let store = Bindings::new(MAX_CONTACTS_PER_AOR + 1);
        for i in 0..MAX_CONTACTS_PER_AOR {
            let c = format!("sip:c{i}@h");
            store.insert(binding(&mut rng, "a@x", &c, flow(Transport::Udp, 1), t0)).unwrap();
        }
        let more = binding(&mut rng, "a@x", "sip:more@h", flow(Transport::Udp, 1), t0);
        assert_eq!(store.insert(more), Err(BindingError::TooManyContacts));
        store.insert(binding(&mut rng, "b@x", "sip:b@h", flow(Transport::Udp, 1), t0)).unwrap();
        let full = binding(&mut rng, "c@x", "sip:c@h", flow(Transport::Udp, 1), t0);
        assert_eq!(store.insert(full), Err(BindingError::Full));
        // Replacing an existing binding is not a new one.
        let again = store.find("b@x", b"sip:b@h").unwrap();
        assert_eq!(store.insert(again), Ok(()));
    }

    #[test]
    fn refreshes_are_local_while_half_the_upstream_lifetime_is_left() {
        let mut rng = StdRng::seed_from_u64(4);
        let t0 = Instant::now();
        let mut b = binding(&mut rng, "a@x", "sip:a@h", flow(Transport::Udp, 1), t0 + secs(60));
        let client_max = secs(60);
        b.upstream = Some(upstream(None));
        assert_eq!(b.refresh(t0, secs(3600), client_max), Refresh::Upstream, "not registered");
        b.upstream = Some(upstream(Some((secs(600), t0 + secs(600)))));
        assert_eq!(b.refresh(t0 + secs(1), secs(3600), client_max), Refresh::Local(60));
        assert_eq!(b.refresh(t0 + secs(60), secs(30), client_max), Refresh::Local(30));
        assert_eq!(b.refresh(t0 + secs(300), secs(3600), client_max), Refresh::Local(60));
        assert_eq!(b.refresh(t0 + secs(301), secs(3600), client_max), Refresh::Upstream);
        // Never granted past the upstream registration's end.
        b.upstream = Some(upstream(Some((secs(100), t0 + secs(100)))));
        assert_eq!(b.refresh(t0 + secs(45), secs(3600), client_max), Refresh::Local(55));
        assert_eq!(b.refresh(t0 + secs(100), secs(3600), client_max), Refresh::Upstream);
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }
}
