//! The branches this layer issues (RFC 3261 section 8.1.1.7) and their decoding.
//!
//! Layout: `z9hG4bK`, then the shard (4 hex digits), the slab index (8) and the generation (8) of
//! the client transaction, a `.`, and 16 hex digits from the unpredictable RNG. The fixed layout
//! lets a response find its shard and transaction without a hash lookup of peer data (Kamailio
//! `tm` puts `hash_index.label` into the branch the same way); the suffix makes the branch
//! unguessable, and the full comparison against the stored branch rejects forged responses.

use super::TxnId;

/// The RFC 3261 magic cookie.
const MAGIC: &[u8] = b"z9hG4bK";
/// Offsets of the fields after the cookie.
const SHARD: usize = MAGIC.len();
const INDEX: usize = SHARD + 4;
const GENERATION: usize = INDEX + 8;
const DOT: usize = GENERATION + 8;
const LEN: usize = DOT + 1 + 16;

/// The branch of client transaction `txn` of shard `shard`.
pub(super) fn encode(shard: u16, txn: TxnId, suffix: u64) -> String {
    format!("z9hG4bK{shard:04x}{:08x}{:08x}.{suffix:016x}", txn.index, txn.generation)
}

/// Shard and transaction encoded in a branch of ours; `None` for any other branch.
pub(super) fn decode(branch: &[u8]) -> Option<(u16, TxnId)> {
    if branch.len() != LEN
        || !branch.starts_with(MAGIC)
        || branch[DOT] != b'.'
        || hex(&branch[DOT + 1..]).is_none()
    {
        return None;
    }
    let shard = u16::try_from(hex(&branch[SHARD..INDEX])?).ok()?;
    let index = u32::try_from(hex(&branch[INDEX..GENERATION])?).ok()?;
    let generation = u32::try_from(hex(&branch[GENERATION..DOT])?).ok()?;
    Some((shard, TxnId { index, generation }))
}

/// Lower-case hex digits (as [`encode`] writes them) into a number; at most 16 digits.
fn hex(digits: &[u8]) -> Option<u64> {
    if digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &c| {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(v))
    })
}
