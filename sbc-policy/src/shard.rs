//! Lock striping: a table split into [`SHARDS`] parts, each behind its own lock, picked by a
//! keyed hash of the key.
//!
//! The policy is shared by every receive task and signalling shard of the process. A single lock
//! around a per-source table would make all of them take turns on every packet; striped, two
//! threads only meet when their sources land in the same stripe. The hash is SipHash with a
//! random key (std `RandomState`), so a flood of chosen source addresses cannot aim at one
//! stripe and fill its share of a capped table.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};

/// Stripes per table: enough that a few dozen threads rarely meet, few enough that iterating
/// all of them on a timer costs nothing.
pub(crate) const SHARDS: usize = 16;

/// One stripe, on its own cache line so that two stripes' locks do not share one.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded<T>(T);

/// A value split into [`SHARDS`] stripes.
#[derive(Debug)]
pub(crate) struct Sharded<T> {
    hasher: RandomState,
    shards: Box<[Padded<T>]>,
}

impl<T> Sharded<T> {
    /// Builds stripe `i` with `make(i)`.
    pub(crate) fn new(mut make: impl FnMut(usize) -> T) -> Sharded<T> {
        Sharded {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|i| Padded(make(i))).collect(),
        }
    }

    /// The stripe that holds `key`.
    pub(crate) fn of<K: Hash + ?Sized>(&self, key: &K) -> &T {
        // SHARDS divides 2^64, so the modulo is unbiased.
        let i = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        &self.shards[i].0
    }

    /// Every stripe, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + Clone {
        self.shards.iter().map(|p| &p.0)
    }
}

/// The share of `total` that stripe `i` gets: the shares add up to `total` exactly, so a table
/// capped at `total` never holds more, and (when every stripe is full) holds exactly that. A cap
/// below [`SHARDS`] still gives every stripe one entry (a table of 10 tracks up to 16), so that
/// no key is left without a place of its own.
pub(crate) fn share(total: usize, i: usize) -> usize {
    (total / SHARDS + usize::from(i < total % SHARDS)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for total in [16, 17, 100, 100_000] {
            assert_eq!((0..SHARDS).map(|i| share(total, i)).sum::<usize>(), total);
        }
        assert_eq!((0..SHARDS).map(|i| share(1, i)).sum::<usize>(), SHARDS);
    }

    #[test]
    fn a_key_always_lands_in_the_same_stripe() {
        let s = Sharded::new(|i| i);
        for k in 0..100u32 {
            assert_eq!(s.of(&k), s.of(&k));
        }
        assert_eq!(s.iter().count(), SHARDS);
    }
}
