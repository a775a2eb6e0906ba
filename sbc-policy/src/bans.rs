//! Dynamic bans: fail2ban inside the box.
//!
//! Offences are counted per source and kind in a fixed window; reaching a kind's threshold bans
//! the source. A repeat within [`BanConfig::memory`] escalates (`duration * factor^n`, capped).
//! Expiry runs on a deadline heap with lazy deletion, so [`crate::Policy::poll_timeout`] is a
//! peek and expiry never scans the table.
//!
//! The table is shared by every thread of the process: a ban made by one signalling shard must
//! stop the source's packets in every receive task. [`Bans`] keeps the full table (strikes,
//! deadlines, change queue) behind one lock, taken only when a ban is made, lifted or expires,
//! and mirrors "banned until" into a striped index of read locks, which is all the per-packet
//! check reads. In front of the index a counting filter (one small counter per hash slot) tells
//! a source that is not banned apart with one shared read, no lock and no write: the
//! per-packet check of an innocent source costs the same whether bans exist or not. Lock order:
//! table, then index stripe. Every ban added or lifted can be queued as a
//! [`BanChange`] for the shell to push into a kernel set; expiry is not queued, because the
//! kernel element carries the same timeout. Active bans survive a restart through a small text
//! file written by [`Bans::write`] and read by [`Bans::load`].

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;

use crate::config::{BanConfig, OffenceRule, OffenceRules};
use crate::shard::Sharded;
use crate::source::SourceKey;

/// Misbehaviour the shell or core reports with [`crate::Policy::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offence {
    /// Exceeded a per-source rate (also recorded by the policy itself when it drops or refuses
    /// for rate).
    RateExceeded,
    /// Failed digest authentication ([`crate::auth::AuthOutcome::Failed`]).
    AuthFailure,
    /// Asked for an unknown user or domain (the core answered 404).
    UnknownUser,
    /// Sent a message that did not parse.
    Malformed,
    /// Identified itself as a scanner ([`crate::Policy::is_scanner`]).
    Scanner,
}

impl Offence {
    /// Every kind, in counter order.
    pub const ALL: [Offence; 5] = [
        Offence::RateExceeded,
        Offence::AuthFailure,
        Offence::UnknownUser,
        Offence::Malformed,
        Offence::Scanner,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn rule(self, rules: &OffenceRules) -> Option<OffenceRule> {
        match self {
            Offence::RateExceeded => rules.rate_exceeded,
            Offence::AuthFailure => rules.auth_failure,
            Offence::UnknownUser => rules.unknown_user,
            Offence::Malformed => rules.malformed,
            Offence::Scanner => rules.scanner,
        }
    }
}

/// A change of the ban list, for kernel enforcement (e.g. an nftables set with timeouts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanChange {
    /// Drop packets from `network` for `timeout` (a /32 or an IPv6 /64). Sent again with a new
    /// timeout when a ban is restored from the state file.
    Added {
        /// The banned network.
        network: IpNetwork,
        /// How long the ban lasts from now.
        timeout: Duration,
    },
    /// The ban was lifted before its time ([`crate::Policy::unban`]).
    Removed {
        /// The network no longer banned.
        network: IpNetwork,
    },
}

/// What [`crate::Policy::load_bans`] restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadedBans {
    /// Bans active again.
    pub restored: usize,
    /// Entries whose ban had ended meanwhile.
    pub expired: usize,
    /// Lines that did not parse, sources now allow-listed, or entries beyond the table cap.
    pub skipped: usize,
}

/// A ban state file that cannot be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum BanFileError {
    /// The first line is not the header this crate writes.
    NotABanFile,
    /// Reading failed.
    Io(io::Error),
}

impl fmt::Display for BanFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanFileError::NotABanFile => f.write_str("not a ban state file (bad header)"),
            BanFileError::Io(e) => write!(f, "reading the ban state: {e}"),
        }
    }
}

impl std::error::Error for BanFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BanFileError::Io(e) => Some(e),
            BanFileError::NotABanFile => None,
        }
    }
}

/// Slots of the ban filter (128 KiB): with the 100 000 bans of a full default table, about 4 in 5
/// innocent sources still pass on the filter alone.
const FILTER_SLOTS: usize = 1 << 16;

/// The filter slot of a source: a multiplicative hash (a collision only costs a read lock).
fn filter_slot(key: &SourceKey) -> usize {
    let bits = match key {
        SourceKey::V4(v4) => u64::from(v4.to_bits()),
        SourceKey::V6(hi) => *hi ^ (*hi >> 29),
    };
    (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as usize
}

/// First line of the state file; the version changes when the format does.
const HEADER: &str = "# sbc-policy bans v1";
/// Bound of the change queue; the oldest change is dropped (and counted) beyond it. Userspace
/// bans still hold, only the kernel copy misses the change.
const CHANGE_QUEUE_CAP: usize = 4096;
/// Escalation stops growing after this many strikes (the duration is capped anyway).
const MAX_STRIKES: u32 = 32;

#[derive(Debug)]
struct BanEntry {
    until: Instant,
    /// When the strikes are forgotten (`until + memory`).
    forget_at: Instant,
    /// Bans so far, the current one included.
    strikes: u32,
    /// Counted in `active`: set on ban, cleared when the expiry deadline is handled.
    active: bool,
}

/// The bans, shared by all threads: the table behind a lock, and a striped index of the bans in
/// force for the per-packet check.
#[derive(Debug)]
pub(crate) struct Bans {
    table: Mutex<BanTable>,
    /// "Banned until", per source; expired entries are removed when their deadline is handled
    /// and ignored until then.
    index: Sharded<RwLock<HashMap<SourceKey, Instant>>>,
    /// Entries in `index`: zero lets the check skip hashing (the common case).
    indexed: AtomicUsize,
    /// Entries of `index` per hash slot (written under the table lock only). A zero slot means
    /// "not banned" without touching the index.
    filter: Box<[AtomicU16]>,
    /// Bumped whenever a ban is added, restored or lifted (the state file is then stale).
    version: AtomicU64,
}

impl Bans {
    pub(crate) fn new(cfg: BanConfig, queue_changes: bool) -> Bans {
        Bans {
            table: Mutex::new(BanTable::new(cfg, queue_changes)),
            index: Sharded::new(|_| RwLock::new(HashMap::new())),
            indexed: AtomicUsize::new(0),
            filter: (0..FILTER_SLOTS).map(|_| AtomicU16::new(0)).collect(),
            version: AtomicU64::new(0),
        }
    }

    /// The per-packet check: a read of the filter, and one read lock of one stripe only for a
    /// source whose filter slot is taken (banned, or sharing a slot with a banned source).
    pub(crate) fn is_banned(&self, now: Instant, key: &SourceKey) -> bool {
        if self.indexed.load(Ordering::Relaxed) == 0
            || self.filter[filter_slot(key)].load(Ordering::Relaxed) == 0
        {
            return false;
        }
        let stripe = self.index.of(key).read().unwrap_or_else(PoisonError::into_inner);
        stripe.get(key).is_some_and(|until| now < *until)
    }

    /// Bans `key` for the escalated duration; returns it, or `None` when the table is full.
    pub(crate) fn ban(&self, now: Instant, key: SourceKey) -> Option<Duration> {
        let mut table = self.lock();
        let out = table.ban(now, key);
        self.sync(&mut table);
        out
    }

    /// Lifts a ban (and forgets its strikes).
    pub(crate) fn unban(&self, key: &SourceKey) -> bool {
        let mut table = self.lock();
        let out = table.unban(key);
        self.sync(&mut table);
        out
    }

    /// Ends due bans and forgets due strikes.
    pub(crate) fn handle_timeout(&self, now: Instant) {
        let mut table = self.lock();
        table.handle_timeout(now);
        self.sync(&mut table);
    }

    pub(crate) fn load(
        &self,
        data: &[u8],
        now: Instant,
        now_system: SystemTime,
        protected: impl Fn(SourceKey) -> bool,
    ) -> Result<LoadedBans, BanFileError> {
        let mut table = self.lock();
        let out = table.load(data, now, now_system, protected);
        self.sync(&mut table);
        out
    }

    pub(crate) fn write(
        &self,
        now: Instant,
        now_system: SystemTime,
        out: &mut dyn io::Write,
    ) -> io::Result<()> {
        // Render under the lock (cheap), write after it: `out` may be slow.
        let mut text = Vec::new();
        self.lock().write(now, now_system, &mut text)?;
        out.write_all(&text)
    }

    pub(crate) fn poll_change(&self) -> Option<BanChange> {
        self.lock().poll_change()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.lock().next_deadline()
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// (active, added, refused_full, changes_dropped)
    pub(crate) fn stats(&self) -> (usize, u64, u64, u64) {
        let t = self.lock();
        (t.active, t.added, t.refused_full, t.changes_dropped)
    }

    fn lock(&self) -> MutexGuard<'_, BanTable> {
        // Every update of the table completes or is a no-op; a panic elsewhere cannot leave it
        // half-changed.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mirrors what the last operation changed into the index.
    fn sync(&self, table: &mut BanTable) {
        if table.touched.is_empty() {
            return;
        }
        self.version.fetch_add(1, Ordering::Relaxed);
        for (key, until) in table.touched.drain(..) {
            let mut stripe = self.index.of(&key).write().unwrap_or_else(PoisonError::into_inner);
            let slot = &self.filter[filter_slot(&key)];
            match until {
                Some(until) => {
                    if stripe.insert(key, until).is_none() {
                        self.indexed.fetch_add(1, Ordering::Relaxed);
                        // Saturating: a slot that reached the top stays "maybe" for good.
                        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            (n < u16::MAX).then_some(n + 1)
                        });
                    }
                }
                None => {
                    if stripe.remove(&key).is_some() {
                        self.indexed.fetch_sub(1, Ordering::Relaxed);
                        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            (n > 0 && n < u16::MAX).then(|| n - 1)
                        });
                    }
                }
            }
        }
    }
}

/// The ban table, with its deadline heap and change queue (single-threaded; see [`Bans`]).
#[derive(Debug)]
struct BanTable {
    cfg: BanConfig,
    entries: HashMap<SourceKey, BanEntry>,
    /// Ban ends and strike forgets; stale items are skipped when popped.
    deadlines: BinaryHeap<Reverse<(Instant, SourceKey)>>,
    active: usize,
    changes: Option<VecDeque<BanChange>>,
    /// Sources whose "banned until" changed (`None`: no longer banned), for [`Bans::sync`].
    touched: Vec<(SourceKey, Option<Instant>)>,
    added: u64,
    refused_full: u64,
    changes_dropped: u64,
}

impl BanTable {
    fn new(cfg: BanConfig, queue_changes: bool) -> BanTable {
        BanTable {
            cfg,
            entries: HashMap::new(),
            deadlines: BinaryHeap::new(),
            active: 0,
            changes: queue_changes.then(VecDeque::new),
            touched: Vec::new(),
            added: 0,
            refused_full: 0,
            changes_dropped: 0,
        }
    }

    #[cfg(test)]
    fn is_banned(&self, now: Instant, key: &SourceKey) -> bool {
        self.entries.get(key).is_some_and(|e| now < e.until)
    }

    fn ban(&mut self, now: Instant, key: SourceKey) -> Option<Duration> {
        let len = self.entries.len();
        let entry = match self.entries.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(_) if len >= self.cfg.max_entries => {
                self.refused_full += 1;
                return None;
            }
            Entry::Vacant(v) => {
                v.insert(BanEntry { until: now, forget_at: now, strikes: 0, active: false })
            }
        };
        let strikes = if now < entry.forget_at { entry.strikes } else { 0 };
        let duration = escalated(&self.cfg, strikes);
        entry.strikes = (strikes + 1).min(MAX_STRIKES);
        entry.until = entry.until.max(now + duration);
        entry.forget_at = entry.until + self.cfg.memory;
        if !entry.active {
            entry.active = true;
            self.active += 1;
        }
        let timeout = entry.until - now;
        self.deadlines.push(Reverse((entry.until, key)));
        self.touched.push((key, Some(entry.until)));
        self.added += 1;
        self.push_change(BanChange::Added { network: key.network(), timeout });
        Some(timeout)
    }

    fn unban(&mut self, key: &SourceKey) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.touched.push((*key, None));
        if entry.active {
            self.active -= 1;
            self.push_change(BanChange::Removed { network: key.network() });
        }
        true
    }

    #[cfg(test)]
    fn active(&self) -> usize {
        self.active
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((at, _))| *at)
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.active && entry.until <= now {
                entry.active = false;
                self.active -= 1;
                self.touched.push((key, None));
                self.deadlines.push(Reverse((entry.forget_at, key)));
            } else if !entry.active && entry.forget_at <= now {
                self.entries.remove(&key);
            }
        }
    }

    fn poll_change(&mut self) -> Option<BanChange> {
        self.changes.as_mut()?.pop_front()
    }

    fn push_change(&mut self, change: BanChange) {
        let Some(queue) = self.changes.as_mut() else {
            return;
        };
        if queue.len() >= CHANGE_QUEUE_CAP {
            queue.pop_front();
            self.changes_dropped += 1;
        }
        queue.push_back(change);
    }

    /// Writes the active bans: one `network until_unix_seconds strikes` line each.
    fn write(
        &self,
        now: Instant,
        now_system: SystemTime,
        out: &mut dyn io::Write,
    ) -> io::Result<()> {
        writeln!(out, "{HEADER}")?;
        let mut lines: Vec<(SourceKey, u64, u32)> = self
            .entries
            .iter()
            .filter(|(_, e)| now < e.until)
            .map(|(k, e)| {
                // Round up: a ban restored a fraction of a second long is better than one lost.
                let left = e.until - now;
                let until = unix_secs(now_system + left) + u64::from(left.subsec_nanos() > 0);
                (*k, until, e.strikes)
            })
            .collect();
        // A stable order makes the file diffable.
        lines.sort_unstable();
        for (key, until, strikes) in lines {
            writeln!(out, "{} {until} {strikes}", key.network())?;
        }
        Ok(())
    }

    /// Restores the bans of a state file that are still running, except for `protected`
    /// sources.
    fn load(
        &mut self,
        data: &[u8],
        now: Instant,
        now_system: SystemTime,
        protected: impl Fn(SourceKey) -> bool,
    ) -> Result<LoadedBans, BanFileError> {
        let text = String::from_utf8_lossy(data);
        let mut lines = text.lines();
        if lines.next().map(str::trim_end) != Some(HEADER) {
            return Err(BanFileError::NotABanFile);
        }
        let now_unix = unix_secs(now_system);
        let mut loaded = LoadedBans::default();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let Some((key, until, strikes)) = parse_line(line) else {
                loaded.skipped += 1;
                continue;
            };
            if until <= now_unix {
                loaded.expired += 1;
                continue;
            }
            if protected(key)
                || !self.restore(now, key, Duration::from_secs(until - now_unix), strikes)
            {
                loaded.skipped += 1;
                continue;
            }
            loaded.restored += 1;
        }
        Ok(loaded)
    }

    fn restore(&mut self, now: Instant, key: SourceKey, left: Duration, strikes: u32) -> bool {
        let len = self.entries.len();
        let entry = match self.entries.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(_) if len >= self.cfg.max_entries => return false,
            Entry::Vacant(v) => {
                v.insert(BanEntry { until: now, forget_at: now, strikes: 0, active: false })
            }
        };
        entry.until = entry.until.max(now + left.min(self.cfg.max_duration));
        entry.forget_at = entry.until + self.cfg.memory;
        entry.strikes = entry.strikes.max(strikes.clamp(1, MAX_STRIKES));
        if !entry.active {
            entry.active = true;
            self.active += 1;
        }
        let timeout = entry.until - now;
        self.deadlines.push(Reverse((entry.until, key)));
        self.touched.push((key, Some(entry.until)));
        self.push_change(BanChange::Added { network: key.network(), timeout });
        true
    }
}

fn escalated(cfg: &BanConfig, strikes: u32) -> Duration {
    let factor = cfg.factor.checked_pow(strikes).unwrap_or(u32::MAX);
    cfg.duration.saturating_mul(factor).min(cfg.max_duration)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn parse_line(line: &str) -> Option<(SourceKey, u64, u32)> {
    let mut fields = line.split_ascii_whitespace();
    let key = SourceKey::parse(fields.next()?)?;
    let until = fields.next()?.parse().ok()?;
    let strikes = fields.next()?.parse().ok()?;
    fields.next().is_none().then_some((key, until, strikes))
}

/// Per-source offence windows, one per kind.
#[derive(Debug)]
pub(crate) struct Offences {
    rules: OffenceRules,
    cap: usize,
    map: HashMap<SourceKey, [Window; 5]>,
    pub(crate) ignored_full: u64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

impl Offences {
    pub(crate) fn new(rules: OffenceRules, cap: usize) -> Offences {
        Offences { rules, cap, map: HashMap::new(), ignored_full: 0 }
    }

    /// Counts an offence; `true` when it reaches the kind's threshold. The source's windows are
    /// then forgotten: it is about to be banned, and counts afresh after the ban.
    pub(crate) fn record(&mut self, now: Instant, key: SourceKey, offence: Offence) -> bool {
        let Some(rule) = offence.rule(&self.rules) else {
            return false;
        };
        let len = self.map.len();
        let windows = match self.map.entry(key) {
            Entry::Occupied(o) => o.into_mut(),
            // Full: the periodic cleanup frees the windows that ended.
            Entry::Vacant(_) if len >= self.cap => {
                self.ignored_full += 1;
                return false;
            }
            Entry::Vacant(v) => v.insert([Window { start: now, count: 0 }; 5]),
        };
        let w = &mut windows[offence.index()];
        if w.count == 0 || now.saturating_duration_since(w.start) >= rule.window {
            *w = Window { start: now, count: 0 };
        }
        w.count += 1;
        if w.count < rule.threshold {
            return false;
        }
        self.map.remove(&key);
        true
    }

    /// Forgets the sources whose windows have all ended.
    pub(crate) fn cleanup(&mut self, now: Instant) {
        let rules = self.rules;
        self.map.retain(|_, windows| {
            Offence::ALL.iter().any(|o| {
                let w = windows[o.index()];
                o.rule(&rules).is_some_and(|r| {
                    w.count > 0 && now.saturating_duration_since(w.start) < r.window
                })
            })
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn key(s: &str) -> SourceKey {
        SourceKey::of(s.parse::<IpAddr>().unwrap())
    }

    fn cfg() -> BanConfig {
        BanConfig {
            duration: 10 * S,
            factor: 2,
            max_duration: 35 * S,
            memory: 100 * S,
            max_entries: 3,
            max_offenders: 3,
        }
    }

    #[test]
    fn ban_expires_and_escalates_up_to_the_max() {
        let t0 = Instant::now();
        let mut b = BanTable::new(cfg(), false);
        let k = key("192.0.2.1");
        assert_eq!(b.ban(t0, k), Some(10 * S));
        assert!(b.is_banned(t0 + 9 * S, &k));
        assert_eq!(b.active(), 1);
        assert_eq!(b.next_deadline(), Some(t0 + 10 * S));
        b.handle_timeout(t0 + 10 * S);
        assert!(!b.is_banned(t0 + 10 * S, &k));
        assert_eq!(b.active(), 0);
        // A repeat within the memory doubles, then caps.
        let t1 = t0 + 20 * S;
        assert_eq!(b.ban(t1, k), Some(20 * S));
        b.handle_timeout(t1 + 20 * S);
        assert_eq!(b.ban(t1 + 30 * S, k), Some(35 * S));
        assert_eq!(b.active(), 1);
        b.handle_timeout(t1 + 65 * S);
        assert_eq!(b.active(), 0);
        // Past the memory the strikes are forgotten and the entry is gone.
        b.handle_timeout(t1 + 165 * S);
        assert!(b.entries.is_empty());
        assert_eq!(b.ban(t1 + 200 * S, k), Some(10 * S));
    }

    #[test]
    fn a_ban_after_its_end_but_before_the_timeout_is_handled_counts_once() {
        let t0 = Instant::now();
        let mut b = BanTable::new(cfg(), false);
        let k = key("192.0.2.1");
        b.ban(t0, k);
        // The shell was late: the ban ended but handle_timeout has not run yet.
        b.ban(t0 + 11 * S, k);
        assert_eq!(b.active(), 1);
        b.handle_timeout(t0 + 12 * S);
        assert_eq!(b.active(), 1);
        b.handle_timeout(t0 + 31 * S);
        assert_eq!(b.active(), 0);
    }

    #[test]
    fn table_cap_refuses_new_bans() {
        let t0 = Instant::now();
        let mut b = BanTable::new(cfg(), false);
        for i in 1..=3 {
            assert!(b.ban(t0, key(&format!("192.0.2.{i}"))).is_some());
        }
        assert_eq!(b.ban(t0, key("192.0.2.9")), None);
        assert_eq!(b.refused_full, 1);
        assert_eq!(b.entries.len(), 3);
    }

    #[test]
    fn changes_are_queued_only_when_asked_and_bounded() {
        let t0 = Instant::now();
        let mut off = BanTable::new(cfg(), false);
        off.ban(t0, key("192.0.2.1"));
        assert_eq!(off.poll_change(), None);

        let mut on = BanTable::new(BanConfig { max_entries: 10_000, ..cfg() }, true);
        let k = key("2001:db8::1");
        on.ban(t0, k);
        let net: IpNetwork = "2001:db8::/64".parse().unwrap();
        assert_eq!(on.poll_change(), Some(BanChange::Added { network: net, timeout: 10 * S }));
        assert!(on.unban(&k));
        assert_eq!(on.poll_change(), Some(BanChange::Removed { network: net }));
        assert_eq!(on.poll_change(), None);
        for i in 0..(CHANGE_QUEUE_CAP as u32 + 5) {
            on.ban(t0, SourceKey::V4(i.into()));
        }
        assert_eq!(on.changes_dropped, 5);
    }

    #[test]
    fn persistence_round_trip_drops_expired_and_protected() {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut b = BanTable::new(BanConfig { max_entries: 10, ..cfg() }, false);
        b.ban(t0, key("192.0.2.1"));
        b.ban(t0 + 3 * S, key("2001:db8::7"));
        b.ban(t0 + 3 * S, key("192.0.2.2"));
        b.ban(t0 + 3 * S, key("192.0.2.2")); // second strike: 20 s more
        let mut file = Vec::new();
        b.write(t0 + 5 * S, wall, &mut file).unwrap();
        let text = String::from_utf8(file.clone()).unwrap();
        assert_eq!(
            text,
            "# sbc-policy bans v1\n192.0.2.1/32 1800000005 1\n192.0.2.2/32 1800000018 2\n\
             2001:db8::/64 1800000008 1\n"
        );

        // Restart 7 s of wall time later, with a new monotonic clock: the first ban has ended,
        // the IPv6 one is now allow-listed, the third has 11 s left.
        let t9 = t0 + 1000 * S;
        let mut r = BanTable::new(BanConfig { max_entries: 10, ..cfg() }, true);
        let protected = key("2001:db8::1");
        let loaded = r.load(&file, t9, wall + 7 * S, |k| k == protected).unwrap();
        assert_eq!(loaded, LoadedBans { restored: 1, expired: 1, skipped: 1 });
        assert!(r.is_banned(t9 + 10 * S, &key("192.0.2.2")));
        assert!(!r.is_banned(t9 + 11 * S, &key("192.0.2.2")));
        assert!(!r.is_banned(t9, &key("192.0.2.1")));
        assert!(!r.is_banned(t9, &key("2001:db8::7")));
        let restored = r.poll_change();
        assert!(matches!(restored, Some(BanChange::Added { timeout, .. }) if timeout == 11 * S));
        // Strikes survive: the next ban escalates (10 s * 2^2, capped at 35 s).
        r.handle_timeout(t9 + 11 * S);
        assert_eq!(r.active(), 0);
        assert_eq!(r.ban(t9 + 12 * S, key("192.0.2.2")), Some(35 * S));
    }

    #[test]
    fn load_is_lenient_with_lines_and_strict_with_the_header() {
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1000);
        let mut b = BanTable::new(cfg(), false);
        assert!(matches!(b.load(b"junk\n", t0, wall, |_| false), Err(BanFileError::NotABanFile)));
        assert!(matches!(b.load(b"", t0, wall, |_| false), Err(BanFileError::NotABanFile)));
        let file = b"# sbc-policy bans v1\n\n192.0.2.1/24 2000 1\nx y z\n192.0.2.1/32 2000\n\
                     192.0.2.1/32 99999999999999999999 1\n\xff\xfe\n192.0.2.3/32 2000 1 extra\n\
                     192.0.2.4/32 2000 1\n";
        let loaded = b.load(file, t0, wall, |_| false).unwrap();
        assert_eq!(loaded, LoadedBans { restored: 1, expired: 0, skipped: 6 });
        // A duration beyond the configured maximum is clamped.
        assert!(b.is_banned(t0 + 34 * S, &key("192.0.2.4")));
        assert!(!b.is_banned(t0 + 35 * S, &key("192.0.2.4")));
    }

    #[test]
    fn offences_ban_at_the_threshold_within_the_window() {
        let t0 = Instant::now();
        let rules = OffenceRules {
            auth_failure: Some(OffenceRule { threshold: 3, window: 60 * S }),
            ..OffenceRules::default()
        };
        let mut o = Offences::new(rules, 2);
        let k = key("192.0.2.1");
        // Kinds without a rule are not tracked.
        assert!(!o.record(t0, k, Offence::Malformed));
        assert_eq!(o.len(), 0);
        assert!(!o.record(t0, k, Offence::AuthFailure));
        assert!(!o.record(t0 + 30 * S, k, Offence::AuthFailure));
        // The window ended: counting starts again.
        assert!(!o.record(t0 + 61 * S, k, Offence::AuthFailure));
        assert!(!o.record(t0 + 62 * S, k, Offence::AuthFailure));
        assert!(o.record(t0 + 63 * S, k, Offence::AuthFailure));
        assert_eq!(o.len(), 0);
        // The cap ignores new sources; cleanup frees ended windows.
        for i in 2..=4 {
            assert!(!o.record(t0 + 63 * S, key(&format!("192.0.2.{i}")), Offence::AuthFailure));
        }
        assert_eq!(o.ignored_full, 1);
        o.cleanup(t0 + 122 * S);
        assert_eq!(o.len(), 2);
        o.cleanup(t0 + 124 * S);
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn the_shared_index_and_its_filter_follow_the_table() {
        let t0 = Instant::now();
        let bans = Bans::new(BanConfig { max_entries: 10_000, ..cfg() }, false);
        let banned: Vec<SourceKey> = (0..5000u32).map(|i| SourceKey::V4((i * 7).into())).collect();
        for k in &banned {
            assert!(bans.ban(t0, *k).is_some());
        }
        assert!(banned.iter().all(|k| bans.is_banned(t0, k)));
        let innocent = (0..5000u32).map(|i| SourceKey::V4((i * 7 + 1).into()));
        assert_eq!(innocent.clone().filter(|k| bans.is_banned(t0, k)).count(), 0);
        assert!(bans.unban(&banned[0]));
        assert!(!bans.is_banned(t0, &banned[0]));
        // Expiry empties the index and every filter slot.
        bans.handle_timeout(t0 + 10 * S);
        assert!(banned.iter().all(|k| !bans.is_banned(t0 + 10 * S, k)));
        assert_eq!(bans.indexed.load(Ordering::Relaxed), 0);
        assert!(bans.filter.iter().all(|n| n.load(Ordering::Relaxed) == 0));
        let (active, added, _, _) = bans.stats();
        assert_eq!((active, added), (0, 5000));
    }
}
