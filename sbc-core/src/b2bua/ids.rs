//! Identifiers the B2BUA issues: leg-B Call-IDs that encode the shard and the call's slab slot, so a
//! request from the far end finds its call (and its shard) without a lookup of peer-chosen data.

use std::hash::{BuildHasher, Hasher};

use rand::Rng;

/// Slab slot of a call, generation-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    /// Slab index.
    pub index: u32,
    /// Generation of the slot.
    pub generation: u32,
}

const CALL_ID_LEN: usize = 36;

/// A fresh leg-B Call-ID: 16 random hex digits, then shard, index and generation in hex. It
/// carries nothing of leg A (topology hiding) and nothing guessable about other calls.
pub fn make_call_id(rng: &mut impl Rng, shard: u16, key: CallKey) -> String {
    format!("{:016x}{:04x}{:08x}{:08x}", rng.random::<u64>(), shard, key.index, key.generation)
}

/// Decodes a Call-ID made by [`make_call_id`].
pub fn decode_call_id(call_id: &[u8]) -> Option<(u16, CallKey)> {
    if call_id.len() != CALL_ID_LEN
        || !call_id.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| {
        call_id[r]
            .iter()
            .fold(0u64, |acc, &b| acc * 16 + u64::from((b as char).to_digit(16).unwrap_or(0)))
    };
    let shard = u16::try_from(hex(16..20)).ok()?;
    let index = u32::try_from(hex(20..28)).ok()?;
    let generation = u32::try_from(hex(28..36)).ok()?;
    Some((shard, CallKey { index, generation }))
}

/// The shard that owns a request with this Call-ID: ours decode, foreign ones are hashed.
pub fn shard_for_call_id(call_id: &[u8], shards: u16, hasher: &impl BuildHasher) -> u16 {
    if shards <= 1 {
        return 0;
    }
    if let Some((shard, _)) = decode_call_id(call_id)
        && shard < shards
    {
        return shard;
    }
    let mut h = hasher.build_hasher();
    h.write(call_id);
    (h.finish() % u64::from(shards)) as u16
}

/// A random token for tags (RFC 3261 section 19.3 asks for at least 32 bits of randomness).
pub fn make_tag(rng: &mut impl Rng) -> String {
    format!("{:016x}", rng.random::<u64>())
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn call_ids_round_trip_and_foreign_ones_do_not_decode() {
        let mut rng = StdRng::seed_from_u64(1);
        let key = CallKey { index: 0xdead, generation: 7 };
        let id = make_call_id(&mut rng, 3, key);
        assert_eq!(decode_call_id(id.as_bytes()), Some((3, key)));
        assert_eq!(decode_call_id(b"3848276298220188511@atlanta.example.com"), None);
        let h = std::collections::hash_map::RandomState::new();
        assert_eq!(shard_for_call_id(id.as_bytes(), 4, &h), 3);
        let foreign = b"abc@host";
        assert_eq!(shard_for_call_id(foreign, 4, &h), shard_for_call_id(foreign, 4, &h));
    }
}
