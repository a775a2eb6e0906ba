//! Timer bookkeeping: one heap for the whole layer, a two-lane table per transaction.
//!
//! Every RFC 3261 transaction state runs at most one retransmission timer (A, E, G, 2xx) and one
//! timeout (B, D, F, H, I, J, K, L, M) at a time, so a transaction's [`TimerTable`] has two lanes.
//! A lane holds the sequence number of its armed heap entry. Disarming clears the lane and leaves
//! the heap entry behind: it is stale and is skipped when it reaches the top (lazy deletion), so
//! arming and disarming are O(log n) and O(1) and nothing ever scans all transactions.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Instant;

use super::{TimerName, TxnId};

/// Heap entries beyond this many per live transaction (each has at most two live ones) mean the
/// heap is mostly stale; it is then compacted in one O(n) pass, amortised over the disarms.
const STALE_FACTOR: usize = 4;
/// Below this size the heap is never compacted.
const COMPACT_FLOOR: usize = 64;

/// The two timers a transaction may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// Retransmission: A, E, G and the 2xx retransmission.
    Retransmit,
    /// Transaction timeout or linger: B, D, F, H, I, J, K, L, M.
    Timeout,
}

impl TimerName {
    fn lane(self) -> Lane {
        match self {
            TimerName::A
            | TimerName::E
            | TimerName::G
            | TimerName::Retransmit2xx
            | TimerName::Trying => Lane::Retransmit,
            TimerName::B
            | TimerName::D
            | TimerName::F
            | TimerName::H
            | TimerName::I
            | TimerName::J
            | TimerName::K
            | TimerName::L
            | TimerName::M => Lane::Timeout,
        }
    }
}

/// Per-transaction timers: the sequence number of the armed heap entry of each lane, 0 if none.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct TimerTable([u64; 2]);

impl TimerTable {
    /// Disarms one lane.
    pub(super) fn clear(&mut self, lane: Lane) {
        self.0[lane as usize] = 0;
    }

    /// Disarms both lanes (on every change of state).
    pub(super) fn clear_all(&mut self) {
        self.0 = [0; 2];
    }

    /// Whether `entry` is the armed one of its lane.
    pub(super) fn is_armed(&self, entry: &Entry) -> bool {
        self.0[entry.name.lane() as usize] == entry.seq
    }

    /// If `entry` is the armed one of its lane, disarms the lane (the timer fires) and says so.
    pub(super) fn fire(&mut self, entry: &Entry) -> bool {
        let armed = self.is_armed(entry);
        if armed {
            self.clear(entry.name.lane());
        }
        armed
    }
}

/// One armed (or stale) deadline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    /// When it fires.
    pub(super) at: Instant,
    /// Unique, increasing: tells a live entry from a stale one and orders equal deadlines.
    pub(super) seq: u64,
    /// Whose timer it is.
    pub(super) txn: TxnId,
    /// Which timer, also reported by `poll_timeout`.
    pub(super) name: TimerName,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The deadlines of all transactions of a layer.
#[derive(Debug)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    next_seq: u64,
}

impl Timers {
    pub(super) fn new() -> Timers {
        Timers { heap: BinaryHeap::new(), next_seq: 1 }
    }

    /// Arms `name` of transaction `txn` at `at`, replacing whatever its lane held.
    pub(super) fn arm(&mut self, table: &mut TimerTable, txn: TxnId, name: TimerName, at: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        table.0[name.lane() as usize] = seq;
        self.heap.push(Reverse(Entry { at, seq, txn, name }));
    }

    /// Sequence number the next armed entry will get; entries below it existed before.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Earliest entry (live if [`Timers::prune`] ran since the last change).
    pub(super) fn peek(&self) -> Option<&Entry> {
        self.heap.peek().map(|Reverse(e)| e)
    }

    /// Pops the earliest entry if it is due at `now` and was armed before `before` (so a timer
    /// re-armed with a zero interval cannot spin one `handle_timeout` forever).
    pub(super) fn pop_due(&mut self, now: Instant, before: u64) -> Option<Entry> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now && e.seq < before => {
                self.heap.pop().map(|Reverse(e)| e)
            }
            _ => None,
        }
    }

    /// Drops stale entries from the top, so that [`Timers::peek`] shows a live one, and compacts
    /// the heap when stale entries dominate it.
    pub(super) fn prune(&mut self, is_live: impl Fn(&Entry) -> bool, live_txns: usize) {
        if self.heap.len() > COMPACT_FLOOR + STALE_FACTOR * live_txns {
            self.heap.retain(|Reverse(e)| is_live(e));
        }
        while let Some(Reverse(e)) = self.heap.peek() {
            if is_live(e) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Number of heap entries, live or stale (for leak tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}
