//! Liveness of trunk targets, probed with OPTIONS by one shard and read by all.
//!
//! The only state shared between shards: one flag per (trunk, target), written by the probing
//! shard and read when a call builds its list of attempts. A flag is a single relaxed atomic: a
//! call that reads a stale value merely tries a dead target first and fails over.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{Config, TrunkId};

/// Up/down flags of every trunk target, flattened.
#[derive(Debug)]
pub struct TrunkHealth {
    offsets: Vec<usize>,
    up: Vec<AtomicBool>,
}

impl TrunkHealth {
    /// All targets start up, so calls flow before the first probe has answered.
    pub fn new(config: &Config) -> TrunkHealth {
        let mut offsets = Vec::with_capacity(config.trunks.len());
        let mut n = 0;
        for t in &config.trunks {
            offsets.push(n);
            n += t.targets.len();
        }
        TrunkHealth { offsets, up: (0..n).map(|_| AtomicBool::new(true)).collect() }
    }

    /// Whether a target is considered up.
    pub fn is_up(&self, trunk: TrunkId, target: usize) -> bool {
        self.slot(trunk, target).is_none_or(|i| self.up[i].load(Ordering::Relaxed))
    }

    /// Marks a target up or down.
    pub fn set(&self, trunk: TrunkId, target: usize, up: bool) {
        if let Some(i) = self.slot(trunk, target) {
            self.up[i].store(up, Ordering::Relaxed);
        }
    }

    fn slot(&self, trunk: TrunkId, target: usize) -> Option<usize> {
        let i = self.offsets.get(trunk.0)? + target;
        (i < self.up.len()).then_some(i)
    }
}

/// Consecutive probe results of one target, turned into up/down transitions with hysteresis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeCounter {
    successes: u32,
    failures: u32,
}

impl ProbeCounter {
    /// Records one probe; returns the new state if it changed.
    pub fn record(
        &mut self,
        ok: bool,
        currently_up: bool,
        down_after: u32,
        up_after: u32,
    ) -> Option<bool> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (!currently_up && self.successes >= up_after).then_some(true)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            (currently_up && self.failures >= down_after).then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis() {
        let mut c = ProbeCounter::default();
        assert_eq!(c.record(false, true, 3, 2), None);
        assert_eq!(c.record(false, true, 3, 2), None);
        assert_eq!(c.record(false, true, 3, 2), Some(false));
        assert_eq!(c.record(true, false, 3, 2), None);
        assert_eq!(c.record(false, false, 3, 2), None);
        assert_eq!(c.record(true, false, 3, 2), None);
        assert_eq!(c.record(true, false, 3, 2), Some(true));
    }
}
