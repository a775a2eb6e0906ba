//! Rate limiters on governor's GCRA, driven by the time the caller passes in.
//!
//! governor normally reads a clock itself; here a [`PolicyClock`] is advanced to the caller's
//! `now` before every check, so the limiters are as deterministic as the rest of the policy. The
//! clock only moves forward: threads checking at nearly the same moment may pass `now`s a few
//! microseconds apart, and the later one wins (a check then sees at most that much more credit).
//! The keyed limiters store their state in a [`CappedStore`]: governor's own stores grow with
//! every new key, and their API cannot tell a known key from a new one, which a cap that spares
//! the sources already tracked needs. The store is striped ([`Sharded`]), so receive tasks on
//! different cores do not take turns on one lock for every packet.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use crate::config::{ConfigError, Rate};
use crate::shard::{Sharded, share};
use crate::source::SourceKey;

/// The policy's monotonic time as governor reads it: nanoseconds since the first `now` the
/// policy saw. Clones share the time (the limiters hold clones; the policy advances it).
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicyClock {
    nanos: Arc<AtomicU64>,
}

impl PolicyClock {
    /// Moves the clock to `since_epoch` unless it is already later.
    pub(crate) fn advance(&self, since_epoch: Duration) {
        let ns = u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_max(ns, Ordering::Relaxed);
    }
}

impl Clock for PolicyClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.nanos.load(Ordering::Relaxed))
    }
}

/// Maps the caller's `Instant`s onto the [`PolicyClock`].
#[derive(Debug, Default)]
pub(crate) struct Epoch {
    start: OnceLock<Instant>,
    pub(crate) clock: PolicyClock,
}

impl Epoch {
    /// Advances the shared clock to `now`. Times before the first one seen read as the epoch.
    pub(crate) fn set(&self, now: Instant) {
        let start = *self.start.get_or_init(|| now);
        self.clock.advance(now.saturating_duration_since(start));
    }
}

fn quota(rate: &Rate, what: &'static str) -> Result<Quota, ConfigError> {
    let err = ConfigError::InvalidRate { what };
    let count = NonZeroU32::new(rate.count).ok_or(err.clone())?;
    let burst = NonZeroU32::new(rate.burst).unwrap_or(count);
    let quota = Quota::with_period(rate.per / count.get()).ok_or(err)?;
    Ok(quota.allow_burst(burst))
}

type Keyed = RateLimiter<SourceKey, CappedStore<SourceKey>, PolicyClock, NoOpMiddleware<Nanos>>;

/// A per-source rate limit with a cap on tracked sources.
#[derive(Debug)]
pub(crate) struct KeyedLimiter {
    limiter: Keyed,
    overflowed: Arc<AtomicU64>,
}

impl KeyedLimiter {
    pub(crate) fn new(
        rate: &Rate,
        cap: usize,
        clock: &PolicyClock,
        what: &'static str,
    ) -> Result<KeyedLimiter, ConfigError> {
        let overflowed = Arc::new(AtomicU64::new(0));
        let store = CappedStore::new(cap, Arc::clone(&overflowed));
        let limiter = RateLimiter::new(quota(rate, what)?, store, clock.clone());
        Ok(KeyedLimiter { limiter, overflowed })
    }

    /// Takes one cell for `key`; `Err` carries how long until the next would conform.
    pub(crate) fn check(&self, key: &SourceKey) -> Result<(), Duration> {
        self.limiter.check_key(key).map_err(|n| n.wait_time_from(self.limiter.clock().now()))
    }

    /// Forgets sources whose state is back to fresh (governor's `retain_recent`).
    pub(crate) fn cleanup(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Sources tracked now.
    pub(crate) fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Checks that fell into the overflow bucket because the table was full.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, PolicyClock, NoOpMiddleware<Nanos>>;

/// One rate limit (a trunk's calls per second).
#[derive(Debug)]
pub(crate) struct DirectLimiter {
    limiter: Direct,
}

impl DirectLimiter {
    pub(crate) fn new(
        rate: &Rate,
        clock: &PolicyClock,
        what: &'static str,
    ) -> Result<DirectLimiter, ConfigError> {
        Ok(DirectLimiter {
            limiter: RateLimiter::direct_with_clock(quota(rate, what)?, clock.clone()),
        })
    }

    pub(crate) fn check(&self) -> Result<(), Duration> {
        self.limiter.check().map_err(|n| n.wait_time_from(self.limiter.clock().now()))
    }
}

/// A governor state store that tracks at most `cap` keys, striped. Keys seen while their stripe
/// is full share that stripe's overflow state, so a flood of new sources is still limited (as
/// one source per stripe) and tracked sources keep their own budget. Each state is governor's
/// "theoretical arrival time".
#[derive(Debug)]
pub(crate) struct CappedStore<K> {
    shards: Sharded<Mutex<CappedInner<K>>>,
    overflowed: Arc<AtomicU64>,
}

#[derive(Debug)]
struct CappedInner<K> {
    map: HashMap<K, u64>,
    cap: usize,
    overflow: Option<u64>,
}

impl<K> CappedStore<K> {
    fn new(cap: usize, overflowed: Arc<AtomicU64>) -> CappedStore<K> {
        let shards = Sharded::new(|i| {
            Mutex::new(CappedInner { map: HashMap::new(), cap: share(cap, i), overflow: None })
        });
        CappedStore { shards, overflowed }
    }

    fn lock(m: &Mutex<CappedInner<K>>) -> MutexGuard<'_, CappedInner<K>> {
        // No code under the lock can panic mid-update, so a poisoned stripe is still consistent.
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone> StateStore for CappedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut inner = Self::lock(self.shards.of(key));
        if let Some(tat) = inner.map.get_mut(key) {
            let (out, next) = f(Some(Nanos::from(*tat)))?;
            *tat = next.as_u64();
            return Ok(out);
        }
        if inner.map.len() < inner.cap {
            let (out, next) = f(None)?;
            inner.map.insert(key.clone(), next.as_u64());
            return Ok(out);
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        let (out, next) = f(inner.overflow.map(Nanos::from))?;
        inner.overflow = Some(next.as_u64());
        Ok(out)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for CappedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        let below = drop_below.as_u64();
        for shard in self.shards.iter() {
            let mut inner = Self::lock(shard);
            inner.map.retain(|_, tat| *tat > below);
            if inner.overflow.is_some_and(|tat| tat <= below) {
                inner.overflow = None;
            }
        }
    }

    fn shrink_to_fit(&self) {
        for shard in self.shards.iter() {
            let mut inner = Self::lock(shard);
            // Shrink only after a flood has receded, not on every cleanup.
            if inner.map.capacity() > 4 * inner.map.len().max(1024) {
                inner.map.shrink_to_fit();
            }
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| Self::lock(s).map.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| Self::lock(s).map.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn key(s: &str) -> SourceKey {
        SourceKey::of(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn burst_then_refill() {
        let epoch = Epoch::default();
        let t0 = Instant::now();
        let l =
            KeyedLimiter::new(&Rate::per_second(2).with_burst(4), 10, &epoch.clock, "t").unwrap();
        let k = key("192.0.2.1");
        epoch.set(t0);
        for _ in 0..4 {
            assert!(l.check(&k).is_ok());
        }
        let wait = l.check(&k).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another source has its own budget.
        assert!(l.check(&key("192.0.2.2")).is_ok());
        epoch.set(t0 + Duration::from_millis(499));
        assert!(l.check(&k).is_err());
        epoch.set(t0 + Duration::from_millis(500));
        assert!(l.check(&k).is_ok());
        assert!(l.check(&k).is_err());
        // After a full second at 2/s two more cells are available, not more.
        epoch.set(t0 + Duration::from_millis(1500));
        assert!(l.check(&k).is_ok());
        assert!(l.check(&k).is_ok());
        assert!(l.check(&k).is_err());
    }

    #[test]
    fn key_cap_holds_and_cleanup_reclaims() {
        let epoch = Epoch::default();
        let t0 = Instant::now();
        let l = KeyedLimiter::new(&Rate::per_second(1), 100, &epoch.clock, "t").unwrap();
        epoch.set(t0);
        let tracked = key("198.51.100.1");
        assert!(l.check(&tracked).is_ok());
        let mut admitted = 0;
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if l.check(&SourceKey::of(ip)).is_ok() {
                admitted += 1;
            }
            assert!(l.len() <= 100);
        }
        assert_eq!(l.len(), 100);
        // 99 new sources got a slot each; the other 9 901 shared their stripe's bucket of 1/s
        // (every stripe filled up: 10 000 random sources spread over 16 stripes of 6 or 7).
        assert_eq!(admitted, 99 + crate::shard::SHARDS);
        assert_eq!(l.overflowed(), 9_901);
        // A tracked source keeps its own state while the table is full.
        assert!(l.check(&tracked).is_err());
        epoch.set(t0 + Duration::from_secs(1));
        assert!(l.check(&tracked).is_ok());
        // Once their state is back to fresh, keys are reclaimed.
        epoch.set(t0 + Duration::from_secs(3));
        l.cleanup();
        assert_eq!(l.len(), 0);
        assert!(l.check(&key("203.0.113.5")).is_ok());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn cleanup_keeps_sources_still_limited() {
        let epoch = Epoch::default();
        let t0 = Instant::now();
        let l = KeyedLimiter::new(&Rate::new(1, Duration::from_secs(10)), 10, &epoch.clock, "t")
            .unwrap();
        epoch.set(t0);
        assert!(l.check(&key("192.0.2.1")).is_ok());
        epoch.set(t0 + Duration::from_secs(5));
        l.cleanup();
        assert_eq!(l.len(), 1);
        assert!(l.check(&key("192.0.2.1")).is_err());
    }

    #[test]
    fn direct_limiter_and_invalid_rates() {
        let epoch = Epoch::default();
        let t0 = Instant::now();
        let l = DirectLimiter::new(&Rate::per_second(1), &epoch.clock, "t").unwrap();
        epoch.set(t0);
        assert!(l.check().is_ok());
        assert!(l.check().is_err());
        epoch.set(t0 + Duration::from_secs(1));
        assert!(l.check().is_ok());
        let zero = Rate::per_second(0);
        assert!(DirectLimiter::new(&zero, &epoch.clock, "t").is_err());
        let no_period = Rate::new(1, Duration::ZERO);
        assert!(KeyedLimiter::new(&no_period, 1, &epoch.clock, "t").is_err());
    }
}
