//! [`Policy`]: the source checks, admission, offences and bans of the whole process.
//!
//! One `Policy` is shared (in an `Arc`) by every receive task and signalling shard: a ban made
//! by one shard must stop the source everywhere, and a trunk's CAC limit must hold exactly
//! across shards. Every method takes `&self`. What a packet touches is read-mostly or striped:
//! the CIDR tries are immutable, bans are read from a striped index of read locks (none taken
//! while nobody is banned), per-source tables (rate-limiter state, offence windows, call
//! counts) are split into stripes by a keyed hash, and call counts are atomics that a call
//! reserves with one compare-and-swap each, so two shards can never both take the last slot.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::auth::{AuthOutcome, Authenticator};
use crate::bans::{BanChange, BanFileError, Bans, LoadedBans, Offence, Offences};
use crate::config::{
    ConfigError, ListenerPolicy, OffenceRule, PolicyConfig, RejectMode, TrunkLimits,
};
use crate::counters::{Counters, PolicyCounters};
use crate::rate::{DirectLimiter, Epoch, KeyedLimiter};
use crate::shard::{Sharded, share};
use crate::source::{Listed, Lists, SourceKey};

/// Only this much of a User-Agent is searched for scanner names.
const MAX_USER_AGENT_SCAN: usize = 256;
/// Largest ban state file [`Policy::read_bans`] reads.
const MAX_BAN_FILE: u64 = 64 << 20;

/// What the core knows about a new dialog when it asks.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionRequest<'a> {
    /// Source address of the request.
    pub source: IpAddr,
    /// Inbound trunk index, when the source was recognised as a trunk.
    pub inbound_trunk: Option<usize>,
    /// Request-URI user part (the dialled number).
    pub callee: &'a str,
}

impl<'a> AdmissionRequest<'a> {
    /// A request from `source`, from a trunk or not, for `callee`.
    pub fn new(source: IpAddr, inbound_trunk: Option<usize>, callee: &'a str) -> Self {
        AdmissionRequest { source, inbound_trunk, callee }
    }
}

/// What the core knows about a request that carries (or should carry) digest credentials.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// Wall-clock time, Unix seconds (nonces carry it).
    pub now_unix: u64,
    /// Source address (nonces are bound to it).
    pub source: IpAddr,
    /// Request method, e.g. `REGISTER`.
    pub method: &'a str,
    /// The Request-URI as received (the digest `uri` must equal it).
    pub request_uri: &'a str,
    /// The `Authorization` (REGISTER) or `Proxy-Authorization` (INVITE) value, if any.
    pub credentials: Option<&'a [u8]>,
}

/// The answer.
#[derive(Debug)]
pub enum Verdict {
    /// Go ahead; the call holds the permit until it ends.
    Admit(Permit),
    /// Refuse with this status (403 for policy, 503 for load) and an optional Retry-After.
    Reject {
        /// SIP status code to answer.
        status: u16,
        /// Retry-After seconds, for 503.
        retry_after: Option<u32>,
    },
}

/// A call's admission slots (global, trunk, source counts), released on drop whatever ends the
/// call. It may be dropped on any thread.
#[derive(Debug, Default)]
pub struct Permit {
    /// Counts this permit holds one unit of (already counted); shared with the policy.
    slots: Vec<Arc<AtomicUsize>>,
}

impl Permit {
    /// Takes one unit of `count` if it is below `max` (always when `max` is `None`). Atomic: of
    /// two threads racing for the last unit, exactly one gets it.
    fn take(&mut self, count: &Arc<AtomicUsize>, max: Option<u32>) -> bool {
        let taken = match max {
            None => {
                count.fetch_add(1, Ordering::Relaxed);
                true
            }
            // A read-modify-write on one atomic is totally ordered, so relaxed is enough: the
            // counts guard capacity, not other memory.
            Some(max) => count
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < max as usize).then_some(n + 1)
                })
                .is_ok(),
        };
        if taken {
            self.slots.push(Arc::clone(count));
        }
        taken
    }

    /// Takes over the slots of `other` (e.g. the outbound trunk's), to release them together.
    pub fn join(&mut self, mut other: Permit) {
        self.slots.append(&mut other.slots);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        for slot in &self.slots {
            slot.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The answer of the pre-parse check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceVerdict {
    /// Parse the packet.
    Allow,
    /// Drop it silently (answering floods is how SBCs become amplifiers).
    Drop(DropReason),
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The source is on a deny list.
    Denied,
    /// The listener takes allow-listed sources only.
    NotAllowed,
    /// The source is banned.
    Banned,
    /// The source exceeded its message rate.
    RateLimited,
}

/// Calls a trunk holds now (see [`Policy::trunk_calls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrunkCalls {
    /// Calls from the trunk.
    pub inbound: usize,
    /// Calls (attempts) to the trunk.
    pub outbound: usize,
    /// Both directions.
    pub total: usize,
}

/// The policy of the process. See the crate docs for the driving contract.
#[derive(Debug)]
pub struct Policy {
    // ---- immutable after construction ----
    global: Lists,
    /// Every allow entry, global and per listener: these sources are never banned.
    protected: Lists,
    listeners: Vec<Listener>,
    default_listener: Listener,
    emergency: HashSet<String>,
    scanners: Vec<Vec<u8>>,
    realms: Vec<Authenticator>,
    cac_retry_after: u32,
    cleanup_interval: Duration,
    /// Whether anything can accumulate per source (and so needs the periodic cleanup).
    tracks_sources: bool,
    // ---- shared, concurrent ----
    /// Advanced by every check (monotonic, see `rate`).
    epoch: Epoch,
    message_rate: Option<KeyedLimiter>,
    call_rate: Option<KeyedLimiter>,
    register_rate: Option<KeyedLimiter>,
    trunks: Vec<Trunk>,
    /// Concurrent calls per source on listeners with a per-source cap.
    source_calls: Sharded<Mutex<SourceCalls>>,
    active: Arc<AtomicUsize>,
    emergency_active: Arc<AtomicUsize>,
    bans: Bans,
    offences: Sharded<Mutex<Offences>>,
    /// Set once a cleanup is due, so the hot path reads a flag instead of taking a lock.
    cleanup_armed: AtomicBool,
    /// Owned by whoever drives [`Policy::handle_timeout`] (the shell's policy task).
    next_cleanup: Mutex<Option<Instant>>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Listener {
    lists: Lists,
    allow_only: bool,
    reject: RejectMode,
    max_calls_per_source: Option<u32>,
    realm: Option<usize>,
}

#[derive(Debug, Default)]
struct Trunk {
    limits: TrunkLimits,
    inbound_cps: Option<DirectLimiter>,
    outbound_cps: Option<DirectLimiter>,
    inbound: Arc<AtomicUsize>,
    outbound: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
}

/// One stripe of the per-source call counts.
#[derive(Debug, Default)]
struct SourceCalls {
    map: HashMap<SourceKey, Arc<AtomicUsize>>,
    cap: usize,
}

/// Why a request was refused, before it is turned into a status.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Denied,
    Banned,
    SourceRate(Duration),
    TrunkRate(Duration),
    RegisterRate(Duration),
    SourceCac,
    TrunkCac,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::new()
    }
}

impl Policy {
    /// A policy that admits everything (the default [`PolicyConfig`]).
    pub fn new() -> Policy {
        match Policy::with_config(PolicyConfig::default()) {
            Ok(p) => p,
            // The default config has no rates, rules or realms to reject.
            Err(e) => unreachable!("default policy config is valid: {e}"),
        }
    }

    /// A policy for `cfg`, or what is wrong with it.
    pub fn with_config(cfg: PolicyConfig) -> Result<Policy, ConfigError> {
        if cfg.cleanup_interval.is_zero() || cfg.max_tracked_sources == 0 {
            return Err(ConfigError::InvalidCleanup);
        }
        let b = &cfg.bans;
        if b.duration.is_zero() || b.factor == 0 || b.max_entries == 0 || b.max_offenders == 0 {
            return Err(ConfigError::InvalidBans);
        }
        let o = &cfg.offences;
        for (what, rule) in [
            ("rate_exceeded", o.rate_exceeded),
            ("auth_failure", o.auth_failure),
            ("unknown_user", o.unknown_user),
            ("malformed", o.malformed),
            ("scanner", o.scanner),
        ] {
            if rule.is_some_and(|r: OffenceRule| r.threshold == 0 || r.window.is_zero()) {
                return Err(ConfigError::InvalidOffenceRule { what });
            }
        }
        let realms = realms(&cfg)?;
        let epoch = Epoch::default();
        let cap = cfg.max_tracked_sources;
        let keyed = |rate: &Option<_>, what| {
            rate.as_ref().map(|r| KeyedLimiter::new(r, cap, &epoch.clock, what)).transpose()
        };
        let message_rate = keyed(&cfg.source_message_rate, "source_message_rate")?;
        let call_rate = keyed(&cfg.source_call_rate, "source_call_rate")?;
        let register_rate = keyed(&cfg.source_register_rate, "source_register_rate")?;
        let mut trunks = Vec::with_capacity(cfg.trunks.len());
        for limits in &cfg.trunks {
            let direct = |rate: &Option<_>, what| {
                rate.as_ref().map(|r| DirectLimiter::new(r, &epoch.clock, what)).transpose()
            };
            trunks.push(Trunk {
                inbound_cps: direct(&limits.inbound_cps, "trunk inbound_cps")?,
                outbound_cps: direct(&limits.outbound_cps, "trunk outbound_cps")?,
                limits: limits.clone(),
                ..Trunk::default()
            });
        }
        let listener = |l: &ListenerPolicy| -> Result<Listener, ConfigError> {
            let realm = match &l.realm {
                Some(name) => Some(
                    realms
                        .iter()
                        .position(|a| a.realm() == name)
                        .ok_or_else(|| ConfigError::UnknownRealm(name.clone()))?,
                ),
                None => None,
            };
            Ok(Listener {
                lists: Lists::new(&l.access),
                allow_only: l.allow_only,
                reject: l.reject,
                max_calls_per_source: l.max_calls_per_source,
                realm,
            })
        };
        let listeners = cfg.listeners.iter().map(listener).collect::<Result<Vec<_>, _>>()?;
        let mut allow = cfg.access.allow.clone();
        allow.extend(cfg.listeners.iter().flat_map(|l| l.access.allow.iter().copied()));
        let protected = Lists::new(&crate::config::AccessLists { allow, deny: Vec::new() });
        let tracks_sources = message_rate.is_some()
            || call_rate.is_some()
            || register_rate.is_some()
            || cfg.listeners.iter().any(|l| l.max_calls_per_source.is_some())
            || Offence::ALL.iter().any(|o| o.rule(&cfg.offences).is_some());
        let (offence_rules, max_offenders) = (cfg.offences, cfg.bans.max_offenders);
        Ok(Policy {
            global: Lists::new(&cfg.access),
            protected,
            listeners,
            default_listener: Listener::default(),
            emergency: cfg.emergency_numbers.iter().cloned().collect(),
            scanners: cfg
                .scanner_user_agents
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_ascii_lowercase())
                .collect(),
            realms,
            cac_retry_after: retry_secs(cfg.cac_retry_after),
            cleanup_interval: cfg.cleanup_interval,
            tracks_sources,
            epoch,
            message_rate,
            call_rate,
            register_rate,
            trunks,
            source_calls: Sharded::new(|i| {
                Mutex::new(SourceCalls { map: HashMap::new(), cap: share(cap, i) })
            }),
            active: Arc::default(),
            emergency_active: Arc::default(),
            bans: Bans::new(cfg.bans, cfg.queue_ban_changes),
            offences: Sharded::new(|i| {
                Mutex::new(Offences::new(offence_rules, share(max_offenders, i)))
            }),
            cleanup_armed: AtomicBool::new(false),
            next_cleanup: Mutex::new(None),
            counters: Counters::default(),
        })
    }

    // ---- pre-parse ------------------------------------------------------------------------

    /// The per-packet check, before parsing: bans, deny and allow lists, the listener's
    /// allow-only rule, and the per-source message rate. Allow-listed sources skip the rate.
    pub fn check_source(&self, now: Instant, ip: IpAddr, listener: usize) -> SourceVerdict {
        let key = SourceKey::of(ip);
        // A banned flood costs one hash lookup under a read lock.
        if self.bans.is_banned(now, &key) {
            Counters::bump(&self.counters.dropped_banned);
            return SourceVerdict::Drop(DropReason::Banned);
        }
        match self.screen(ip, Some(listener)) {
            Err(DropReason::Denied) => {
                Counters::bump(&self.counters.dropped_denied);
                return SourceVerdict::Drop(DropReason::Denied);
            }
            Err(reason) => {
                Counters::bump(&self.counters.dropped_not_allowed);
                return SourceVerdict::Drop(reason);
            }
            Ok(true) => {}
            Ok(false) => {
                if let Some(limiter) = &self.message_rate {
                    self.arm_cleanup(now);
                    self.epoch.set(now);
                    if limiter.check(&key).is_err() {
                        Counters::bump(&self.counters.dropped_rate);
                        self.offend(now, key, Offence::RateExceeded);
                        return SourceVerdict::Drop(DropReason::RateLimited);
                    }
                }
            }
        }
        Counters::bump(&self.counters.packets_allowed);
        SourceVerdict::Allow
    }

    /// Whether a User-Agent names a configured scanner (ASCII case-insensitive substring).
    pub fn is_scanner(&self, user_agent: &[u8]) -> bool {
        let ua = &user_agent[..user_agent.len().min(MAX_USER_AGENT_SCAN)];
        self.scanners.iter().any(|s| ua.windows(s.len()).any(|w| w.eq_ignore_ascii_case(s)))
    }

    // ---- admission ------------------------------------------------------------------------

    /// Decides on a new dialog when the listener is not known: the default listener settings
    /// apply (no per-source CAC, 503 for limits). Prefer [`Policy::admit_on`].
    pub fn admit(&self, now: Instant, request: &AdmissionRequest<'_>) -> Verdict {
        self.admit_call(now, None, request)
    }

    /// Decides on a new dialog that arrived on `listener`: bans and lists (403), then, unless
    /// the callee is an emergency number, per-source and inbound-trunk CAC and calls per second.
    /// Trunks and allow-listed sources skip the per-source limits.
    pub fn admit_on(
        &self,
        now: Instant,
        listener: usize,
        request: &AdmissionRequest<'_>,
    ) -> Verdict {
        self.admit_call(now, Some(listener), request)
    }

    /// Decides on sending a call to `trunk` (each attempt of a failover chain asks): its
    /// outbound and total CAC, and its outbound calls per second. Join the permit to the call's
    /// (or keep it with the attempt). A refusal is always a 503: the core tries the next trunk,
    /// and answers the caller as its listener says ([`Policy::reject_mode`]) when none is left.
    pub fn admit_outbound(&self, now: Instant, trunk: usize, callee: &str) -> Verdict {
        let mut permit = Permit::default();
        let Some(t) = self.trunks.get(trunk) else {
            Counters::bump(&self.counters.outbound_admitted);
            return Verdict::Admit(permit);
        };
        if self.emergency.contains(callee) {
            permit.take(&t.outbound, None);
            permit.take(&t.total, None);
        } else {
            let taken = permit.take(&t.outbound, t.limits.max_outbound)
                && permit.take(&t.total, t.limits.max_total);
            if !taken {
                return self.refuse(RejectMode::ServiceUnavailable, Refusal::TrunkCac);
            }
            self.epoch.set(now);
            if let Some(Err(wait)) = t.outbound_cps.as_ref().map(DirectLimiter::check) {
                return self.refuse(RejectMode::ServiceUnavailable, Refusal::TrunkRate(wait));
            }
        }
        Counters::bump(&self.counters.outbound_admitted);
        Verdict::Admit(permit)
    }

    /// Decides on a REGISTER from `source` on `listener`: bans and lists (403), then the
    /// per-source REGISTER rate (allow-listed sources skip it). The permit holds nothing.
    pub fn admit_register(&self, now: Instant, source: IpAddr, listener: usize) -> Verdict {
        let key = SourceKey::of(source);
        let mode = self.listener(Some(listener)).reject;
        let trusted = match self.screen_request(now, key, source, Some(listener)) {
            Ok(trusted) => trusted,
            Err(refusal) => return self.refuse(mode, refusal),
        };
        if !trusted && let Some(limiter) = &self.register_rate {
            self.arm_cleanup(now);
            self.epoch.set(now);
            if let Err(wait) = limiter.check(&key) {
                self.offend(now, key, Offence::RateExceeded);
                return self.refuse(mode, Refusal::RegisterRate(wait));
            }
        }
        Counters::bump(&self.counters.registers_admitted);
        Verdict::Admit(Permit::default())
    }

    fn admit_call(
        &self,
        now: Instant,
        listener: Option<usize>,
        req: &AdmissionRequest<'_>,
    ) -> Verdict {
        let key = SourceKey::of(req.source);
        let l = self.listener(listener);
        let (mode, per_source) = (l.reject, l.max_calls_per_source);
        let trusted = match self.screen_request(now, key, req.source, listener) {
            Ok(allow_listed) => allow_listed || req.inbound_trunk.is_some(),
            Err(refusal) => return self.refuse(mode, refusal),
        };
        self.arm_cleanup(now);
        let emergency = self.emergency.contains(req.callee);
        let source_slot = match per_source {
            Some(max) if !trusted => match self.source_slot(key) {
                Some(slot) => Some((slot, max)),
                None if emergency => None,
                None => return self.refuse(mode, Refusal::SourceCac),
            },
            _ => None,
        };
        let trunk = req.inbound_trunk.and_then(|t| self.trunks.get(t));
        let mut permit = Permit::default();
        permit.take(&self.active, None);
        if emergency {
            // Emergency calls bypass rate limits and CAC, but still hold their slots so the
            // counts stay true.
            permit.take(&self.emergency_active, None);
            if let Some((slot, _)) = &source_slot {
                permit.take(slot, None);
            }
            if let Some(t) = trunk {
                permit.take(&t.inbound, None);
                permit.take(&t.total, None);
            }
            Counters::bump(&self.counters.emergency_calls);
            Counters::bump(&self.counters.calls_admitted);
            return Verdict::Admit(permit);
        }
        // CAC first: a refusal changes nothing there (the permit gives back what it took),
        // while the rate limiters spend a cell.
        if let Some((slot, max)) = &source_slot
            && !permit.take(slot, Some(*max))
        {
            return self.refuse(mode, Refusal::SourceCac);
        }
        if let Some(t) = trunk {
            let taken = permit.take(&t.inbound, t.limits.max_inbound)
                && permit.take(&t.total, t.limits.max_total);
            if !taken {
                return self.refuse(mode, Refusal::TrunkCac);
            }
        }
        self.epoch.set(now);
        if !trusted && let Some(Err(wait)) = self.call_rate.as_ref().map(|l| l.check(&key)) {
            self.offend(now, key, Offence::RateExceeded);
            return self.refuse(mode, Refusal::SourceRate(wait));
        }
        if let Some(Err(wait)) =
            trunk.and_then(|t| t.inbound_cps.as_ref()).map(DirectLimiter::check)
        {
            return self.refuse(mode, Refusal::TrunkRate(wait));
        }
        Counters::bump(&self.counters.calls_admitted);
        Verdict::Admit(permit)
    }

    /// How refusals are answered on `listener` (an unknown index gets the default, 503).
    pub fn reject_mode(&self, listener: usize) -> RejectMode {
        self.listener(Some(listener)).reject
    }

    /// Calls holding a permit now (emergency calls included).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// What trunk `trunk` holds now, or `None` for an unknown index.
    pub fn trunk_calls(&self, trunk: usize) -> Option<TrunkCalls> {
        let t = self.trunks.get(trunk)?;
        Some(TrunkCalls {
            inbound: t.inbound.load(Ordering::Relaxed),
            outbound: t.outbound.load(Ordering::Relaxed),
            total: t.total.load(Ordering::Relaxed),
        })
    }

    /// Calls admitted since start.
    pub fn admitted(&self) -> u64 {
        self.counters.calls_admitted.load()
    }

    // ---- digest authentication ------------------------------------------------------------

    /// The authenticator of the realm `listener` challenges with, if any.
    pub fn authenticator(&self, listener: usize) -> Option<&Authenticator> {
        let realm = self.listeners.get(listener)?.realm?;
        self.realms.get(realm)
    }

    /// The authenticator of a realm by name.
    pub fn realm(&self, name: &str) -> Option<&Authenticator> {
        self.realms.iter().find(|a| a.realm() == name)
    }

    /// Checks the credentials of a request that arrived on `listener` against its realm
    /// (`None` when the listener has none: nothing to check). Counts the outcome and records a
    /// failure as [`Offence::AuthFailure`]. Answer anything but `Ok` with a challenge from
    /// [`Policy::authenticator`], `stale=true` for `Stale` and `Replayed`, the same way for
    /// every user: the response must not tell a wrong password from an unknown user.
    pub fn authenticate(
        &self,
        now: Instant,
        listener: usize,
        req: &AuthRequest<'_>,
    ) -> Option<AuthOutcome> {
        let auth = self.authenticator(listener)?;
        let outcome =
            auth.verify(req.now_unix, req.source, req.method, req.request_uri, req.credentials);
        let c = &self.counters;
        Counters::bump(match &outcome {
            AuthOutcome::Ok { .. } => &c.auth_ok,
            AuthOutcome::Missing => &c.auth_challenged,
            AuthOutcome::Stale => &c.auth_stale,
            AuthOutcome::Replayed => &c.auth_replayed,
            AuthOutcome::Failed(_) => &c.auth_failed,
        });
        if matches!(outcome, AuthOutcome::Failed(_)) {
            self.record(now, req.source, Offence::AuthFailure);
        }
        Some(outcome)
    }

    // ---- offences and bans ----------------------------------------------------------------

    /// Records an offence by `ip`; returns the ban length when it got the source banned.
    /// Allow-listed sources are counted but never banned.
    pub fn record(&self, now: Instant, ip: IpAddr, offence: Offence) -> Option<Duration> {
        self.offend(now, SourceKey::of(ip), offence)
    }

    fn offend(&self, now: Instant, key: SourceKey, offence: Offence) -> Option<Duration> {
        let c = &self.counters;
        Counters::bump(match offence {
            Offence::RateExceeded => &c.offences_rate_exceeded,
            Offence::AuthFailure => &c.offences_auth_failure,
            Offence::UnknownUser => &c.offences_unknown_user,
            Offence::Malformed => &c.offences_malformed,
            Offence::Scanner => &c.offences_scanner,
        });
        if self.bans.is_banned(now, &key) || self.is_protected(key) {
            return None;
        }
        self.arm_cleanup(now);
        if !lock(self.offences.of(&key)).record(now, key, offence) {
            return None;
        }
        self.bans.ban(now, key)
    }

    /// Bans `ip` (its /64 for IPv6) by hand, escalating like an offence would; `None` when the
    /// source is allow-listed or the table is full.
    pub fn ban(&self, now: Instant, ip: IpAddr) -> Option<Duration> {
        let key = SourceKey::of(ip);
        if self.is_protected(key) {
            return None;
        }
        self.bans.ban(now, key)
    }

    /// Lifts the ban of `ip` and forgets its strikes; `false` if it had none.
    pub fn unban(&self, ip: IpAddr) -> bool {
        self.bans.unban(&SourceKey::of(ip))
    }

    /// Whether `ip` is banned at `now`.
    pub fn is_banned(&self, now: Instant, ip: IpAddr) -> bool {
        self.bans.is_banned(now, &SourceKey::of(ip))
    }

    /// The next queued ban change for the kernel set (only with
    /// [`PolicyConfig::queue_ban_changes`]). Drain it after every input.
    pub fn poll_ban_change(&self) -> Option<BanChange> {
        self.bans.poll_change()
    }

    /// A number that changes whenever a ban is added, restored or lifted: the state file needs
    /// writing when it differs from the one it was written at.
    pub fn bans_version(&self) -> u64 {
        self.bans.version()
    }

    /// The active bans as a state file (see [`Policy::write_bans`]).
    pub fn bans_snapshot(&self, now: Instant, now_system: SystemTime) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.bans.write(now, now_system, &mut out);
        out
    }

    /// Writes the active bans: a header line, then `network until-unix-seconds strikes` per
    /// ban. Wall-clock time makes the file mean the same after a restart.
    pub fn write_bans(
        &self,
        now: Instant,
        now_system: SystemTime,
        out: &mut impl io::Write,
    ) -> io::Result<()> {
        self.bans.write(now, now_system, out)
    }

    /// Restores the bans of a state file that have not ended, skipping sources now
    /// allow-listed and lines that do not parse. Restored bans are queued as ban changes.
    pub fn load_bans(
        &self,
        data: &[u8],
        now: Instant,
        now_system: SystemTime,
    ) -> Result<LoadedBans, BanFileError> {
        let protected = &self.protected;
        let loaded = self
            .bans
            .load(data, now, now_system, |k| !protected.is_empty() && protected.allows_any_of(k))?;
        self.counters.bans_restored.add(loaded.restored as u64);
        Ok(loaded)
    }

    /// [`Policy::load_bans`] from a reader (at most 64 MiB are read).
    pub fn read_bans(
        &self,
        input: impl io::Read,
        now: Instant,
        now_system: SystemTime,
    ) -> Result<LoadedBans, BanFileError> {
        let mut data = Vec::new();
        io::Read::read_to_end(&mut input.take(MAX_BAN_FILE), &mut data)
            .map_err(BanFileError::Io)?;
        self.load_bans(&data, now, now_system)
    }

    // ---- time -----------------------------------------------------------------------------

    /// Ends due bans and, every cleanup interval, forgets idle sources (rate-limiter keys,
    /// offence windows, per-source call counts). Early calls are harmless. One caller at a time
    /// is expected (the shell's policy task); concurrent calls are safe but redundant.
    pub fn handle_timeout(&self, now: Instant) {
        self.bans.handle_timeout(now);
        let mut next = lock(&self.next_cleanup);
        if next.is_none_or(|at| now < at) {
            return;
        }
        self.epoch.set(now);
        for limiter in
            [&self.message_rate, &self.call_rate, &self.register_rate].into_iter().flatten()
        {
            limiter.cleanup();
        }
        for stripe in self.offences.iter() {
            lock(stripe).cleanup(now);
        }
        for stripe in self.source_calls.iter() {
            lock(stripe).map.retain(|_, n| n.load(Ordering::Relaxed) > 0);
        }
        *next = None;
        self.cleanup_armed.store(false, Ordering::Relaxed);
        if self.tracked_sources() > 0 {
            *next = Some(now + self.cleanup_interval);
            self.cleanup_armed.store(true, Ordering::Relaxed);
        }
    }

    /// When [`Policy::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.bans.next_deadline(), *lock(&self.next_cleanup)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> PolicyCounters {
        let limiters = [&self.message_rate, &self.call_rate, &self.register_rate];
        let limiters = limiters.into_iter().flatten();
        let (bans_active, bans_added, bans_refused_full, ban_changes_dropped) = self.bans.stats();
        let mut c = self.counters.snapshot();
        c.offences_ignored_full = self.offences.iter().map(|o| lock(o).ignored_full).sum();
        c.bans_added += bans_added;
        c.bans_refused_full = bans_refused_full;
        c.ban_changes_dropped = ban_changes_dropped;
        c.bans_active = bans_active as u64;
        c.active_calls = self.active.load(Ordering::Relaxed) as u64;
        c.emergency_active = self.emergency_active.load(Ordering::Relaxed) as u64;
        c.rate_keys_tracked = limiters.clone().map(|l| l.len() as u64).sum();
        c.rate_keys_overflowed = limiters.map(KeyedLimiter::overflowed).sum();
        c.offenders_tracked = self.offences.iter().map(|o| lock(o).len() as u64).sum();
        c.nonces_untracked = self.realms.iter().map(Authenticator::untracked_nonces).sum();
        c
    }

    // ---- internals ------------------------------------------------------------------------

    fn listener(&self, listener: Option<usize>) -> &Listener {
        listener.and_then(|l| self.listeners.get(l)).unwrap_or(&self.default_listener)
    }

    /// The lists' verdict: `Ok(true)` allow-listed, `Ok(false)` unlisted, `Err` refused.
    fn screen(&self, ip: IpAddr, listener: Option<usize>) -> Result<bool, DropReason> {
        let l = self.listener(listener);
        let listed = match l.lists.is_empty() {
            true => None,
            false => l.lists.lookup(ip),
        };
        let listed = listed.or_else(|| match self.global.is_empty() {
            true => None,
            false => self.global.lookup(ip),
        });
        match listed {
            Some(Listed::Allow) => Ok(true),
            Some(Listed::Deny) => Err(DropReason::Denied),
            None if l.allow_only => Err(DropReason::NotAllowed),
            None => Ok(false),
        }
    }

    /// [`Policy::screen`] plus bans, for requests that reached the core.
    fn screen_request(
        &self,
        now: Instant,
        key: SourceKey,
        ip: IpAddr,
        listener: Option<usize>,
    ) -> Result<bool, Refusal> {
        if self.bans.is_banned(now, &key) {
            return Err(Refusal::Banned);
        }
        self.screen(ip, listener).map_err(|_| Refusal::Denied)
    }

    fn is_protected(&self, key: SourceKey) -> bool {
        !self.protected.is_empty() && self.protected.allows_any_of(key)
    }

    /// The call count of a source, created on first use; `None` when its stripe is full of
    /// sources with live calls.
    fn source_slot(&self, key: SourceKey) -> Option<Arc<AtomicUsize>> {
        let mut stripe = lock(self.source_calls.of(&key));
        if let Some(slot) = stripe.map.get(&key) {
            return Some(Arc::clone(slot));
        }
        if stripe.map.len() >= stripe.cap {
            // Rare (only with more sources in calls than the cap): reclaim ended ones first.
            stripe.map.retain(|_, n| n.load(Ordering::Relaxed) > 0);
            if stripe.map.len() >= stripe.cap {
                return None;
            }
        }
        Some(Arc::clone(stripe.map.entry(key).or_default()))
    }

    fn tracked_sources(&self) -> usize {
        let limiters = [&self.message_rate, &self.call_rate, &self.register_rate];
        let keys: usize = limiters.into_iter().flatten().map(KeyedLimiter::len).sum();
        let offenders: usize = self.offences.iter().map(|o| lock(o).len()).sum();
        let calls: usize = self.source_calls.iter().map(|s| lock(s).map.len()).sum();
        keys + offenders + calls
    }

    fn arm_cleanup(&self, now: Instant) {
        // The flag keeps the per-packet cost to one relaxed load once armed.
        if !self.tracks_sources || self.cleanup_armed.load(Ordering::Relaxed) {
            return;
        }
        let mut next = lock(&self.next_cleanup);
        if next.is_none() {
            *next = Some(now + self.cleanup_interval);
        }
        self.cleanup_armed.store(true, Ordering::Relaxed);
    }

    fn refuse(&self, mode: RejectMode, refusal: Refusal) -> Verdict {
        let c = &self.counters;
        let (counter, wait) = match refusal {
            Refusal::Denied => (&c.rejected_denied, None),
            Refusal::Banned => (&c.rejected_banned, None),
            Refusal::SourceRate(w) => (&c.rejected_source_rate, Some(retry_secs(w))),
            Refusal::TrunkRate(w) => (&c.rejected_trunk_rate, Some(retry_secs(w))),
            Refusal::RegisterRate(w) => (&c.rejected_register_rate, Some(retry_secs(w))),
            Refusal::SourceCac => (&c.rejected_source_cac, Some(self.cac_retry_after)),
            Refusal::TrunkCac => (&c.rejected_trunk_cac, Some(self.cac_retry_after)),
        };
        Counters::bump(counter);
        match (wait, mode) {
            // Policy refusals and 403 listeners: no retry.
            (None, _) | (_, RejectMode::Forbidden) => {
                Verdict::Reject { status: 403, retry_after: None }
            }
            (Some(secs), RejectMode::ServiceUnavailable) => {
                Verdict::Reject { status: 503, retry_after: Some(secs) }
            }
        }
    }
}

/// Locks a policy mutex. Every update under these locks completes or changes nothing, so a
/// panic on another thread cannot leave the data half-changed: poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whole seconds for Retry-After, rounded up, at least 1.
fn retry_secs(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

fn realms(cfg: &PolicyConfig) -> Result<Vec<Authenticator>, ConfigError> {
    if cfg.realms.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<Authenticator> = Vec::with_capacity(cfg.realms.len());
    for r in &cfg.realms {
        if out.iter().any(|a| a.realm() == r.realm) {
            return Err(ConfigError::UnknownRealm(r.realm.clone()));
        }
        let secret = cfg.nonce_secret.as_bytes();
        let auth = Authenticator::new(&r.users, &r.realm, secret, cfg.nonce_lifetime)?;
        out.push(auth.with_algorithms(&cfg.auth_algorithms)?.with_max_nonces(cfg.max_nonces));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        AccessLists, AuthUser, BanConfig, Credential, OffenceRules, Rate, RealmConfig, Secret,
    };

    const S: Duration = Duration::from_secs(1);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<ipnetwork::IpNetwork> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn call(source: &str, trunk: Option<usize>, callee: &'static str) -> AdmissionRequest<'static> {
        AdmissionRequest::new(ip(source), trunk, callee)
    }

    fn status(v: &Verdict) -> Option<(u16, Option<u32>)> {
        match v {
            Verdict::Admit(_) => None,
            Verdict::Reject { status, retry_after } => Some((*status, *retry_after)),
        }
    }

    fn rule(threshold: u32) -> Option<OffenceRule> {
        Some(OffenceRule { threshold, window: 60 * S })
    }

    #[test]
    fn permits_are_released_on_drop() {
        let p = Policy::new();
        let req = AdmissionRequest {
            source: "127.0.0.1".parse().unwrap(),
            inbound_trunk: None,
            callee: "100",
        };
        let v1 = p.admit(Instant::now(), &req);
        let v2 = p.admit(Instant::now(), &req);
        assert_eq!(p.active(), 2);
        drop(v1);
        assert_eq!(p.active(), 1);
        drop(v2);
        assert_eq!(p.active(), 0);
        assert_eq!(p.admitted(), 2);
    }

    #[test]
    fn the_default_policy_admits_everything_and_never_wakes() {
        let p = Policy::default();
        let now = Instant::now();
        for i in 0..1000u32 {
            let src = IpAddr::from(std::net::Ipv4Addr::from(i));
            assert_eq!(p.check_source(now, src, 3), SourceVerdict::Allow);
            assert!(matches!(
                p.admit_on(now, 3, &call("192.0.2.1", Some(9), "1")),
                Verdict::Admit(_)
            ));
            assert!(matches!(p.admit_register(now, src, 0), Verdict::Admit(_)));
            assert!(matches!(p.admit_outbound(now, 9, "1"), Verdict::Admit(_)));
            assert_eq!(p.record(now, src, Offence::Scanner), None);
        }
        assert!(!p.is_scanner(b"friendly-scanner"));
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.poll_ban_change(), None);
        assert!(p.authenticator(0).is_none());
        let c = p.counters();
        assert_eq!((c.packets_allowed, c.calls_admitted, c.rate_keys_tracked), (1000, 1000, 0));
    }

    #[test]
    fn permit_is_send_and_released_from_another_thread() {
        fn is_send<T: Send>() {}
        is_send::<Permit>();
        is_send::<Policy>();
        let p = Policy::with_config(PolicyConfig {
            trunks: vec![TrunkLimits { max_inbound: Some(1), ..TrunkLimits::default() }],
            ..PolicyConfig::default()
        })
        .unwrap();
        let now = Instant::now();
        let Verdict::Admit(permit) = p.admit(now, &call("192.0.2.1", Some(0), "1")) else {
            panic!("first call admitted")
        };
        assert!(status(&p.admit(now, &call("192.0.2.1", Some(0), "1"))).is_some());
        std::thread::spawn(move || drop(permit)).join().unwrap();
        assert_eq!(p.active(), 0);
        assert!(matches!(p.admit(now, &call("192.0.2.1", Some(0), "1")), Verdict::Admit(_)));
    }

    #[test]
    fn lists_drop_silently_listener_first() {
        let p = Policy::with_config(PolicyConfig {
            access: AccessLists { allow: vec![], deny: nets(&["198.51.100.0/24"]) },
            listeners: vec![
                ListenerPolicy {
                    access: AccessLists { allow: nets(&["198.51.100.7/32"]), deny: vec![] },
                    ..ListenerPolicy::default()
                },
                ListenerPolicy {
                    access: AccessLists { allow: nets(&["192.0.2.0/24"]), deny: vec![] },
                    allow_only: true,
                    ..ListenerPolicy::default()
                },
            ],
            ..PolicyConfig::default()
        })
        .unwrap();
        let now = Instant::now();
        let denied = SourceVerdict::Drop(DropReason::Denied);
        assert_eq!(p.check_source(now, ip("198.51.100.8"), 0), denied);
        assert_eq!(p.check_source(now, ip("198.51.100.7"), 0), SourceVerdict::Allow);
        assert_eq!(p.check_source(now, ip("198.51.100.7"), 1), denied);
        assert_eq!(p.check_source(now, ip("203.0.113.1"), 0), SourceVerdict::Allow);
        let not_allowed = SourceVerdict::Drop(DropReason::NotAllowed);
        assert_eq!(p.check_source(now, ip("203.0.113.1"), 1), not_allowed);
        assert_eq!(p.check_source(now, ip("192.0.2.1"), 1), SourceVerdict::Allow);
        // An unknown listener index gets the global lists only.
        assert_eq!(p.check_source(now, ip("198.51.100.7"), 99), denied);
        // A denied source that reached the core anyway is refused with 403.
        assert_eq!(
            status(&p.admit_on(now, 0, &call("198.51.100.8", None, "1"))),
            Some((403, None))
        );
        let c = p.counters();
        assert_eq!((c.dropped_denied, c.dropped_not_allowed, c.packets_allowed), (3, 1, 3));
        assert_eq!(c.rejected_denied, 1);
    }

    fn flood_config() -> PolicyConfig {
        PolicyConfig {
            access: AccessLists { allow: nets(&["192.0.2.100/32"]), deny: vec![] },
            source_message_rate: Some(Rate::per_second(10)),
            offences: OffenceRules { rate_exceeded: rule(5), ..OffenceRules::default() },
            bans: BanConfig { duration: 60 * S, ..BanConfig::default() },
            queue_ban_changes: true,
            ..PolicyConfig::default()
        }
    }

    #[test]
    fn message_rate_then_ban_then_expiry() {
        let p = Policy::with_config(flood_config()).unwrap();
        let t0 = Instant::now();
        let src = ip("203.0.113.9");
        let verdicts: Vec<_> = (0..20).map(|_| p.check_source(t0, src, 0)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == SourceVerdict::Allow));
        // 5 rate drops are the threshold: the source is banned, later packets cost a lookup.
        assert!(
            verdicts[10..15].iter().all(|v| *v == SourceVerdict::Drop(DropReason::RateLimited))
        );
        assert!(verdicts[15..].iter().all(|v| *v == SourceVerdict::Drop(DropReason::Banned)));
        assert!(p.is_banned(t0, src));
        let network = "203.0.113.9/32".parse().unwrap();
        assert_eq!(p.poll_ban_change(), Some(BanChange::Added { network, timeout: 60 * S }));
        // Banned means banned for admission too, emergency or not.
        assert_eq!(status(&p.admit_on(t0, 0, &call("203.0.113.9", None, "1"))), Some((403, None)));
        let c = p.counters();
        assert_eq!((c.dropped_rate, c.dropped_banned, c.bans_active), (5, 5, 1));
        assert_eq!(c.offences_rate_exceeded, 5);

        assert_eq!(p.poll_timeout(), Some(t0 + 10 * S)); // the cleanup comes first
        p.handle_timeout(t0 + 10 * S);
        assert_eq!(p.counters().rate_keys_tracked, 0);
        assert_eq!(p.check_source(t0 + 59 * S, src, 0), SourceVerdict::Drop(DropReason::Banned));
        assert_eq!(p.check_source(t0 + 60 * S, src, 0), SourceVerdict::Allow);
        assert_eq!(p.poll_timeout(), Some(t0 + 60 * S));
        p.handle_timeout(t0 + 60 * S);
        assert_eq!(p.counters().bans_active, 0);
        // Expiry is not queued: the kernel element times out by itself.
        assert_eq!(p.poll_ban_change(), None);
    }

    #[test]
    fn repeat_offenders_are_banned_longer() {
        let p = Policy::with_config(flood_config()).unwrap();
        let mut t = Instant::now();
        let src = ip("203.0.113.9");
        for expected in [60, 120, 240, 480] {
            let ban = (0..100).find_map(|_| {
                p.check_source(t, src, 0);
                match p.poll_ban_change() {
                    Some(BanChange::Added { timeout, .. }) => Some(timeout),
                    _ => None,
                }
            });
            assert_eq!(ban, Some(expected * S));
            t += expected * S;
            p.handle_timeout(t);
            t += S;
        }
    }

    #[test]
    fn allow_listed_sources_are_never_limited_or_banned() {
        let p = Policy::with_config(PolicyConfig {
            offences: OffenceRules { scanner: rule(1), ..flood_config().offences },
            ..flood_config()
        })
        .unwrap();
        let now = Instant::now();
        let trunk = ip("192.0.2.100");
        for _ in 0..1000 {
            assert_eq!(p.check_source(now, trunk, 0), SourceVerdict::Allow);
        }
        assert_eq!(p.record(now, trunk, Offence::Scanner), None);
        assert_eq!(p.ban(now, trunk), None);
        assert!(!p.is_banned(now, trunk));
        // A neighbour is not protected.
        assert_eq!(p.record(now, ip("192.0.2.101"), Offence::Scanner), Some(60 * S));
        assert_eq!(p.counters().offences_scanner, 2);
    }

    #[test]
    fn an_allow_listed_ipv6_host_protects_its_64() {
        let p = Policy::with_config(PolicyConfig {
            listeners: vec![ListenerPolicy {
                access: AccessLists { allow: nets(&["2001:db8:0:1::5/128"]), deny: vec![] },
                ..ListenerPolicy::default()
            }],
            offences: OffenceRules { malformed: rule(1), ..OffenceRules::default() },
            ..PolicyConfig::default()
        })
        .unwrap();
        let now = Instant::now();
        assert_eq!(p.record(now, ip("2001:db8:0:1::99"), Offence::Malformed), None);
        assert!(p.record(now, ip("2001:db8:0:2::99"), Offence::Malformed).is_some());
    }

    #[test]
    fn ipv6_sources_share_their_64() {
        let p = Policy::with_config(flood_config()).unwrap();
        let now = Instant::now();
        for i in 0..10u16 {
            let src = IpAddr::from([0x2001, 0xdb8, 0, 7, i, i, i, i]);
            assert_eq!(p.check_source(now, src, 0), SourceVerdict::Allow);
        }
        let limited = SourceVerdict::Drop(DropReason::RateLimited);
        assert_eq!(p.check_source(now, ip("2001:db8:0:7:ffff::1"), 0), limited);
        assert_eq!(p.check_source(now, ip("2001:db8:0:8::1"), 0), SourceVerdict::Allow);
        for _ in 0..4 {
            p.check_source(now, ip("2001:db8:0:7::1"), 0);
        }
        let banned = SourceVerdict::Drop(DropReason::Banned);
        assert_eq!(p.check_source(now, ip("2001:db8:0:7:1:2:3:4"), 0), banned);
        let network = "2001:db8:0:7::/64".parse().unwrap();
        assert_eq!(p.poll_ban_change(), Some(BanChange::Added { network, timeout: 60 * S }));
    }

    #[test]
    fn a_spoofed_flood_keeps_memory_bounded() {
        let p = Policy::with_config(PolicyConfig {
            max_tracked_sources: 1000,
            bans: BanConfig { max_offenders: 500, max_entries: 200, ..BanConfig::default() },
            offences: OffenceRules { malformed: rule(1), ..OffenceRules::default() },
            ..flood_config()
        })
        .unwrap();
        let t0 = Instant::now();
        let legit = ip("198.51.100.1");
        assert_eq!(p.check_source(t0, legit, 0), SourceVerdict::Allow);
        for i in 0..100_000u32 {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            p.check_source(t0, src, 0);
            p.record(t0, src, Offence::Malformed);
        }
        let c = p.counters();
        assert_eq!(c.rate_keys_tracked, 1000);
        assert!(c.rate_keys_overflowed > 98_000);
        assert_eq!(c.bans_active, 200);
        assert_eq!(c.bans_refused_full, 100_000 - 200);
        // The tracked legitimate source keeps its own budget during the flood.
        assert_eq!(p.check_source(t0, legit, 0), SourceVerdict::Allow);
        // Cleanup reclaims every idle key.
        p.handle_timeout(t0 + 10 * S);
        assert_eq!(p.counters().rate_keys_tracked, 0);
        assert_eq!(p.counters().offenders_tracked, 0);
    }

    #[test]
    fn source_call_rate_answers_by_listener_mode() {
        let p = Policy::with_config(PolicyConfig {
            source_call_rate: Some(Rate::new(1, 4 * S)),
            emergency_numbers: vec!["112".into()],
            listeners: vec![
                ListenerPolicy::default(),
                ListenerPolicy { reject: RejectMode::Forbidden, ..ListenerPolicy::default() },
            ],
            ..PolicyConfig::default()
        })
        .unwrap();
        let t0 = Instant::now();
        let req = call("203.0.113.5", None, "100");
        assert!(status(&p.admit_on(t0, 0, &req)).is_none());
        assert_eq!(status(&p.admit_on(t0 + S / 2, 0, &req)), Some((503, Some(4))));
        assert_eq!(status(&p.admit_on(t0 + S, 1, &req)), Some((403, None)));
        // Emergency calls bypass the rate.
        assert!(status(&p.admit_on(t0 + S, 1, &call("203.0.113.5", None, "112"))).is_none());
        assert!(status(&p.admit_on(t0 + 4 * S, 0, &req)).is_none());
        // Trunks are not limited per source.
        for _ in 0..5 {
            assert!(status(&p.admit_on(t0, 0, &call("203.0.113.5", Some(0), "1"))).is_none());
        }
        let c = p.counters();
        assert_eq!((c.calls_admitted, c.rejected_source_rate, c.offences_rate_exceeded), (8, 2, 2));
        assert_eq!(c.emergency_calls, 1);
    }

    #[test]
    fn trunk_cac_with_emergency_bypass() {
        let p = Policy::with_config(PolicyConfig {
            trunks: vec![TrunkLimits { max_inbound: Some(10), ..TrunkLimits::default() }],
            emergency_numbers: vec!["112".into(), "911".into()],
            cac_retry_after: 7 * S,
            ..PolicyConfig::default()
        })
        .unwrap();
        let now = Instant::now();
        let req = call("192.0.2.1", Some(0), "4930123");
        let mut calls: Vec<_> = (0..20).map(|_| p.admit_on(now, 0, &req)).collect();
        let admitted = calls.iter().filter(|v| matches!(v, Verdict::Admit(_))).count();
        assert_eq!(admitted, 10);
        assert!(calls[10..].iter().all(|v| status(v) == Some((503, Some(7)))));
        let emergency = p.admit_on(now, 0, &call("192.0.2.1", Some(0), "112"));
        assert!(matches!(emergency, Verdict::Admit(_)));
        let c = p.counters();
        assert_eq!((c.emergency_calls, c.emergency_active, c.active_calls), (1, 1, 11));
        assert_eq!(c.rejected_trunk_cac, 10);
        // The emergency call holds a trunk slot too: after the 10 end, 9 more fit.
        calls.clear();
        assert_eq!(p.active(), 1);
        let again: Vec<_> = (0..10).map(|_| p.admit_on(now, 0, &req)).collect();
        assert_eq!(again.iter().filter(|v| matches!(v, Verdict::Admit(_))).count(), 9);
        drop(emergency);
        assert_eq!(p.counters().emergency_active, 0);
        assert!(matches!(p.admit_on(now, 0, &req), Verdict::Admit(_)));
    }

    #[test]
    fn outbound_and_total_cac_and_cps_per_trunk() {
        let p = Policy::with_config(PolicyConfig {
            trunks: vec![TrunkLimits {
                max_outbound: Some(2),
                max_total: Some(3),
                outbound_cps: Some(Rate::per_second(5)),
                ..TrunkLimits::default()
            }],
            emergency_numbers: vec!["911".into()],
            ..PolicyConfig::default()
        })
        .unwrap();
        let t0 = Instant::now();
        let Verdict::Admit(mut call_permit) = p.admit_on(t0, 0, &call("192.0.2.1", Some(0), "1"))
        else {
            panic!("admitted")
        };
        let Verdict::Admit(out) = p.admit_outbound(t0, 0, "1") else { panic!("admitted") };
        call_permit.join(out);
        let second = p.admit_outbound(t0, 0, "1");
        assert!(matches!(second, Verdict::Admit(_)));
        // Outbound full (2), and total full (1 inbound + 2 outbound).
        assert_eq!(status(&p.admit_outbound(t0, 0, "1")), Some((503, Some(5))));
        assert_eq!(
            status(&p.admit_on(t0, 0, &call("192.0.2.1", Some(0), "1"))),
            Some((503, Some(5)))
        );
        assert!(matches!(p.admit_outbound(t0, 0, "911"), Verdict::Admit(_)));
        // The joined permit releases the inbound and outbound slots together.
        drop(call_permit);
        drop(second);
        assert_eq!(p.trunks[0].total.load(Ordering::Relaxed), 0);
        // 5 per second outbound: 2 spent (CAC refusals and emergency calls spend none).
        for _ in 0..3 {
            assert!(matches!(p.admit_outbound(t0, 0, "1"), Verdict::Admit(_)));
        }
        assert_eq!(status(&p.admit_outbound(t0, 0, "1")), Some((503, Some(1))));
        assert!(matches!(p.admit_outbound(t0 + S / 5, 0, "1"), Verdict::Admit(_)));
        assert_eq!(p.counters().rejected_trunk_rate, 1);
    }

    #[test]
    fn per_source_cac_on_access_listeners() {
        let p = Policy::with_config(PolicyConfig {
            listeners: vec![
                ListenerPolicy { max_calls_per_source: Some(2), ..ListenerPolicy::default() },
                ListenerPolicy::default(),
            ],
            ..PolicyConfig::default()
        })
        .unwrap();
        let now = Instant::now();
        let a = call("203.0.113.1", None, "1");
        let held: Vec<_> = (0..2).map(|_| p.admit_on(now, 0, &a)).collect();
        assert_eq!(status(&p.admit_on(now, 0, &a)), Some((503, Some(5))));
        assert!(status(&p.admit_on(now, 0, &call("203.0.113.2", None, "1"))).is_none());
        // Another listener has no per-source cap; a trunk source is exempt.
        assert!(status(&p.admit_on(now, 1, &a)).is_none());
        assert!(status(&p.admit_on(now, 0, &call("203.0.113.1", Some(0), "1"))).is_none());
        drop(held);
        assert!(status(&p.admit_on(now, 0, &a)).is_none());
        // Ended sources are forgotten by the cleanup.
        assert_eq!(p.poll_timeout(), Some(now + 10 * S));
        p.handle_timeout(now + 10 * S);
        assert!(p.source_calls.iter().all(|s| lock(s).map.is_empty()));
        assert_eq!(p.poll_timeout(), None);
        assert_eq!(p.counters().rejected_source_cac, 1);
    }

    #[test]
    fn register_rate() {
        let p = Policy::with_config(PolicyConfig {
            source_register_rate: Some(Rate::new(2, 60 * S)),
            ..PolicyConfig::default()
        })
        .unwrap();
        let t0 = Instant::now();
        let src = ip("203.0.113.1");
        assert!(status(&p.admit_register(t0, src, 0)).is_none());
        assert!(status(&p.admit_register(t0, src, 0)).is_none());
        assert_eq!(status(&p.admit_register(t0, src, 0)), Some((503, Some(30))));
        assert!(status(&p.admit_register(t0 + 30 * S, src, 0)).is_none());
        let c = p.counters();
        assert_eq!((c.registers_admitted, c.rejected_register_rate, c.calls_admitted), (3, 1, 0));
    }

    #[test]
    fn scanners_are_recognised_and_banned() {
        let p = Policy::with_config(PolicyConfig {
            scanner_user_agents: crate::KNOWN_SCANNERS.iter().map(|s| s.to_string()).collect(),
            offences: OffenceRules { scanner: rule(1), ..OffenceRules::default() },
            queue_ban_changes: true,
            ..PolicyConfig::default()
        })
        .unwrap();
        assert!(p.is_scanner(b"friendly-scanner"));
        assert!(p.is_scanner(b"SIPVicious 0.3.4"));
        assert!(p.is_scanner(b"sipcli/v1.8"));
        assert!(p.is_scanner(b"VaxSIPUserAgent/3.1"));
        assert!(!p.is_scanner(b"Linphone/5.2"));
        assert!(!p.is_scanner(b""));
        let mut long = vec![b'x'; 10_000];
        long.extend_from_slice(b"sipvicious");
        assert!(!p.is_scanner(&long));
        let now = Instant::now();
        let src = ip("203.0.113.66");
        assert_eq!(p.record(now, src, Offence::Scanner), Some(600 * S));
        assert!(p.poll_ban_change().is_some());
        // Offences of a banned source change nothing.
        assert_eq!(p.record(now, src, Offence::Scanner), None);
        assert!(p.unban(src));
        let network = "203.0.113.66/32".parse().unwrap();
        assert_eq!(p.poll_ban_change(), Some(BanChange::Removed { network }));
        assert!(!p.is_banned(now, src));
    }

    #[test]
    fn bans_persist_across_a_restart() {
        let cfg = || PolicyConfig {
            access: AccessLists { allow: nets(&["192.0.2.0/24"]), deny: vec![] },
            offences: OffenceRules { auth_failure: rule(3), ..OffenceRules::default() },
            queue_ban_changes: true,
            ..PolicyConfig::default()
        };
        let p = Policy::with_config(cfg()).unwrap();
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for _ in 0..3 {
            p.record(t0, ip("203.0.113.7"), Offence::AuthFailure);
        }
        p.ban(t0, ip("198.51.100.1"));
        let mut file = Vec::new();
        p.write_bans(t0, wall, &mut file).unwrap();
        assert_eq!(file, p.bans_snapshot(t0, wall));
        // The file also holds a ban of a source allow-listed since.
        file.extend_from_slice(b"192.0.2.9/32 1800000100 1\n");

        let q = Policy::with_config(cfg()).unwrap();
        let t1 = Instant::now() + 3600 * S;
        let loaded = q.read_bans(&file[..], t1, wall + 60 * S).unwrap();
        assert_eq!(loaded, LoadedBans { restored: 2, expired: 0, skipped: 1 });
        assert!(q.is_banned(t1 + 539 * S, ip("203.0.113.7")));
        assert!(!q.is_banned(t1 + 540 * S, ip("203.0.113.7")));
        assert!(!q.is_banned(t1, ip("192.0.2.9")));
        assert_eq!(q.counters().bans_active, 2);
        assert!(matches!(q.poll_ban_change(), Some(BanChange::Added { .. })));
        // Past their end, nothing is restored.
        let r = Policy::with_config(cfg()).unwrap();
        let loaded = r.load_bans(&file, t1, wall + 700 * S).unwrap();
        assert_eq!(loaded.restored, 0);
        assert!(r.load_bans(b"not a ban file", t1, wall).is_err());
    }

    #[test]
    fn listeners_get_their_realm() {
        let users =
            vec![AuthUser { name: "a".into(), credential: Credential::Password("p".into()) }];
        let cfg = PolicyConfig {
            realms: vec![RealmConfig { realm: "sbc.example".into(), users }],
            nonce_secret: vec![9; 32].into(),
            listeners: vec![
                ListenerPolicy::default(),
                ListenerPolicy { realm: Some("sbc.example".into()), ..ListenerPolicy::default() },
            ],
            ..PolicyConfig::default()
        };
        let p = Policy::with_config(cfg.clone()).unwrap();
        assert!(p.authenticator(0).is_none());
        assert_eq!(p.authenticator(1).map(Authenticator::realm), Some("sbc.example"));
        assert!(p.realm("sbc.example").is_some());
        let ch = p.authenticator(1).unwrap().challenge(1000, ip("192.0.2.1"), false);
        assert!(ch.contains("algorithm=SHA-256"));

        let err = |cfg: PolicyConfig| Policy::with_config(cfg).unwrap_err();
        let mut bad = cfg.clone();
        bad.listeners[1].realm = Some("other".into());
        assert_eq!(err(bad), ConfigError::UnknownRealm("other".into()));
        let mut dup = cfg.clone();
        dup.realms.push(dup.realms[0].clone());
        assert_eq!(err(dup), ConfigError::UnknownRealm("sbc.example".into()));
        assert_eq!(
            err(PolicyConfig { nonce_secret: Secret::default(), ..cfg.clone() }),
            ConfigError::WeakNonceSecret
        );
        assert_eq!(err(PolicyConfig { auth_algorithms: vec![], ..cfg }), ConfigError::InvalidAuth);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let err = |cfg: PolicyConfig| Policy::with_config(cfg).unwrap_err();
        let zero_rate =
            PolicyConfig { source_call_rate: Some(Rate::per_second(0)), ..PolicyConfig::default() };
        assert_eq!(err(zero_rate), ConfigError::InvalidRate { what: "source_call_rate" });
        let trunk = TrunkLimits {
            outbound_cps: Some(Rate::new(1, Duration::ZERO)),
            ..TrunkLimits::default()
        };
        let zero_trunk = PolicyConfig { trunks: vec![trunk], ..PolicyConfig::default() };
        assert_eq!(err(zero_trunk), ConfigError::InvalidRate { what: "trunk outbound_cps" });
        let zero_rule = PolicyConfig {
            offences: OffenceRules { malformed: rule(0), ..OffenceRules::default() },
            ..PolicyConfig::default()
        };
        assert_eq!(err(zero_rule), ConfigError::InvalidOffenceRule { what: "malformed" });
        let no_bans = PolicyConfig {
            bans: BanConfig { duration: Duration::ZERO, ..BanConfig::default() },
            ..PolicyConfig::default()
        };
        assert_eq!(err(no_bans), ConfigError::InvalidBans);
        let no_cleanup = PolicyConfig { max_tracked_sources: 0, ..PolicyConfig::default() };
        assert_eq!(err(no_cleanup), ConfigError::InvalidCleanup);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn cac_is_exact_across_threads() {
        fn is_sync<T: Sync + Send>() {}
        is_sync::<Policy>();
        let p = Arc::new(
            Policy::with_config(PolicyConfig {
                trunks: vec![TrunkLimits {
                    max_inbound: Some(10),
                    max_outbound: Some(7),
                    ..TrunkLimits::default()
                }],
                ..PolicyConfig::default()
            })
            .unwrap(),
        );
        let now = Instant::now();
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (p, barrier) = (Arc::clone(&p), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut held = Vec::new();
                    for _ in 0..500 {
                        if let Verdict::Admit(permit) =
                            p.admit_on(now, 0, &call("192.0.2.1", Some(0), "1"))
                        {
                            held.push(permit);
                        }
                        if let Verdict::Admit(permit) = p.admit_outbound(now, 0, "1") {
                            held.push(permit);
                        }
                    }
                    held
                })
            })
            .collect();
        let held: Vec<Permit> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        // However the threads interleaved, exactly the limits were handed out.
        assert_eq!(held.len(), 10 + 7);
        let usage = p.trunk_calls(0).unwrap();
        assert_eq!((usage.inbound, usage.outbound, usage.total), (10, 7, 17));
        let c = p.counters();
        assert_eq!(c.rejected_trunk_cac, 8 * 500 * 2 - 17);
        drop(held);
        assert_eq!(p.trunk_calls(0).unwrap(), TrunkCalls::default());
        assert_eq!(p.active(), 0);
    }

    #[test]
    fn a_ban_made_on_one_thread_stops_the_source_on_every_other() {
        let p = Arc::new(
            Policy::with_config(PolicyConfig {
                offences: OffenceRules { scanner: rule(1), ..OffenceRules::default() },
                ..PolicyConfig::default()
            })
            .unwrap(),
        );
        let now = Instant::now();
        let src = ip("203.0.113.50");
        assert_eq!(p.check_source(now, src, 0), SourceVerdict::Allow);
        let q = Arc::clone(&p);
        std::thread::spawn(move || q.record(now, src, Offence::Scanner)).join().unwrap();
        let r = Arc::clone(&p);
        let seen = std::thread::spawn(move || r.check_source(now, src, 1)).join().unwrap();
        assert_eq!(seen, SourceVerdict::Drop(DropReason::Banned));
        // Other sources are untouched; the ban ends on time, on every thread.
        assert_eq!(p.check_source(now, ip("203.0.113.51"), 0), SourceVerdict::Allow);
        let v0 = p.bans_version();
        p.handle_timeout(now + 600 * S);
        assert_eq!(p.check_source(now + 600 * S, src, 0), SourceVerdict::Allow);
        assert!(p.unban(src) || !p.is_banned(now, src));
        assert!(p.bans_version() >= v0);
    }

    #[test]
    fn authenticate_counts_outcomes_and_bans_after_failures() {
        let users =
            vec![AuthUser { name: "1001".into(), credential: Credential::Password("pw".into()) }];
        let p = Policy::with_config(PolicyConfig {
            realms: vec![RealmConfig { realm: "lab".into(), users }],
            nonce_secret: vec![3; 32].into(),
            listeners: vec![ListenerPolicy {
                realm: Some("lab".into()),
                ..ListenerPolicy::default()
            }],
            offences: OffenceRules { auth_failure: rule(3), ..OffenceRules::default() },
            ..PolicyConfig::default()
        })
        .unwrap();
        let now = Instant::now();
        let src = ip("198.51.100.20");
        let req = |creds: Option<&'static [u8]>| AuthRequest {
            now_unix: 1_800_000_000,
            source: src,
            method: "REGISTER",
            request_uri: "sip:lab",
            credentials: creds,
        };
        // No realm on listener 1: nothing to check.
        assert!(p.authenticate(now, 1, &req(None)).is_none());
        assert_eq!(p.authenticate(now, 0, &req(None)), Some(AuthOutcome::Missing));
        let bad: &'static [u8] = b"Digest username=\"1001\", realm=\"lab\", nonce=\"x\", \
                                    uri=\"sip:lab\", response=\"00\"";
        for _ in 0..3 {
            assert!(matches!(
                p.authenticate(now, 0, &req(Some(bad))),
                Some(AuthOutcome::Failed(_))
            ));
        }
        assert!(p.is_banned(now, src));
        let c = p.counters();
        assert_eq!((c.auth_challenged, c.auth_failed, c.offences_auth_failure), (1, 3, 3));
        assert_eq!(c.bans_active, 1);
    }

    /// Cost of the per-packet check, by case (`cargo test -p sbc-policy --release -- --ignored
    /// --nocapture per_packet_cost`); prints ns per check with 1 and 2 threads.
    #[test]
    #[ignore = "timing, not a check"]
    fn per_packet_cost() {
        let p = Arc::new(
            Policy::with_config(PolicyConfig {
                access: AccessLists { allow: nets(&["192.0.2.0/28"]), deny: vec![] },
                source_message_rate: Some(Rate::per_second(1_000_000)),
                offences: OffenceRules { scanner: rule(1), ..OffenceRules::default() },
                ..PolicyConfig::default()
            })
            .unwrap(),
        );
        let t0 = Instant::now();
        p.record(t0, ip("203.0.113.66"), Offence::Scanner);
        const N: u32 = 2_000_000;
        for (case, src) in
            [("trusted", "192.0.2.1"), ("rate-checked", "198.51.100.1"), ("banned", "203.0.113.66")]
        {
            for threads in [1, 2] {
                let start = Instant::now();
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let p = Arc::clone(&p);
                        std::thread::spawn(move || {
                            let base = ip(src);
                            for i in 0..N {
                                // Spread the rate-checked case over sources (and stripes).
                                let src = match base {
                                    IpAddr::V4(v4) if case == "rate-checked" => {
                                        IpAddr::from(std::net::Ipv4Addr::from(
                                            v4.to_bits() + (i % 1000) + t * 1000,
                                        ))
                                    }
                                    other => other,
                                };
                                std::hint::black_box(p.check_source(t0, src, 0));
                            }
                        })
                    })
                    .collect();
                handles.into_iter().for_each(|h| h.join().unwrap());
                let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
                println!("{case:>12}, {threads} thread(s): {ns:.0} ns per check per thread");
            }
        }
    }
}
