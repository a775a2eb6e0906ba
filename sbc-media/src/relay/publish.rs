//! Figures of one pair, published by its worker and read by signalling threads without a lock.
//!
//! The worker owns the live counters; after each receive batch it copies the figures of the
//! direction it just served into [`SharedStats`] (a handful of relaxed atomic stores). Readers
//! (`Relay::stats`, `Relay::close`) take a consistent snapshot through a sequence lock: the
//! single writer makes the sequence odd while it writes and even again after, and a reader
//! retries while the sequence is odd or changed under it. This is the seqlock with atomic data
//! fields of Boehm, "Can seqlocks get along with programming language memory models?" (2012), the
//! same scheme crossbeam's `AtomicCell` uses. Neither side ever blocks the other, so the packet
//! path takes no lock.

use std::collections::VecDeque;
use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::LegSide;
use crate::backend::{DirectionStats, MediaFailure, PairStats};
use crate::dtmf::DtmfEvent;

/// Fields of one direction, in the order of [`DirectionStats`].
const FIELDS: usize = 7;

/// A reader spins this many times on a busy writer before it yields its time slice.
const SPINS_BEFORE_YIELD: u32 = 64;

/// The published figures of one pair. Written only by the pair's worker.
#[derive(Debug, Default)]
pub(crate) struct SharedStats {
    /// Odd while the worker writes.
    seq: AtomicU64,
    /// Per side (A, B): the [`DirectionStats`] fields; `jitter_ms` as `f64` bits.
    dirs: [[AtomicU64; FIELDS]; 2],
    /// Nanoseconds from the relay's epoch to the last accepted packet, plus one; 0: none yet.
    last_packet: AtomicU64,
    /// The pair's first failure: written once by the worker, read without a lock (a failure is
    /// final, so it sits outside the sequence).
    failure: OnceLock<MediaFailure>,
    /// Key presses detected and not yet taken by signalling, oldest first, at most
    /// [`DTMF_QUEUE`] (further ones are dropped). LOCK: taken once per key press by the worker
    /// and once per poll by signalling, never per packet.
    dtmf: Mutex<VecDeque<(LegSide, DtmfEvent)>>,
}

/// Key presses kept for signalling per pair: a few seconds of fast dialling between two polls.
pub(crate) const DTMF_QUEUE: usize = 32;

impl SharedStats {
    /// Publishes the figures of packets from `side` (0 = A, 1 = B). Worker thread only.
    pub(crate) fn publish(
        &self,
        side: usize,
        d: &DirectionStats,
        last_packet: Option<Instant>,
        epoch: Instant,
    ) {
        let values = [
            d.packets,
            d.bytes,
            d.lost,
            d.jitter_ms.to_bits(),
            d.forwarded,
            d.rtcp_packets,
            d.dropped,
        ];
        let last = last_packet.map_or(0, |t| {
            u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX - 1) + 1
        });
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd sequence before the data stores, for a reader that sees new data.
        fence(Ordering::Release);
        for (slot, v) in self.dirs[side & 1].iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
        self.last_packet.store(last, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Queues a detected key press for signalling (dropped when [`DTMF_QUEUE`] wait). Worker
    /// thread only.
    pub(crate) fn push_dtmf(&self, side: LegSide, event: DtmfEvent) -> bool {
        let mut q = self.dtmf.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= DTMF_QUEUE {
            return false;
        }
        q.push_back((side, event));
        true
    }

    /// The oldest key press queued. Any thread.
    pub(crate) fn pop_dtmf(&self) -> Option<(LegSide, DtmfEvent)> {
        self.dtmf.lock().unwrap_or_else(PoisonError::into_inner).pop_front()
    }

    /// Records the pair's failure; only the first one is kept. Worker thread only.
    pub(crate) fn publish_failure(&self, failure: MediaFailure) {
        let _ = self.failure.set(failure);
    }

    /// A consistent copy of the figures. Any thread.
    ///
    /// Retries until it reads between two publications. The writer cannot stop half-way (only
    /// atomic stores stand between its two sequence stores, none of which can panic), and it
    /// publishes at most once per receive system call, so a retry soon finds a quiet moment.
    pub(crate) fn snapshot(&self, epoch: Instant) -> PairStats {
        let mut tries = 0;
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            let mut raw = [[0u64; FIELDS]; 2];
            for (side, fields) in raw.iter_mut().enumerate() {
                for (v, slot) in fields.iter_mut().zip(&self.dirs[side]) {
                    *v = slot.load(Ordering::Relaxed);
                }
            }
            let last = self.last_packet.load(Ordering::Relaxed);
            // Orders the data loads before the second sequence load.
            fence(Ordering::Acquire);
            let s2 = self.seq.load(Ordering::Relaxed);
            if s1 == s2 && s1.is_multiple_of(2) {
                return PairStats {
                    from_a: direction(&raw[0]),
                    from_b: direction(&raw[1]),
                    last_packet: last.checked_sub(1).map(|n| epoch + Duration::from_nanos(n)),
                    failure: self.failure.get().copied(),
                };
            }
            tries += 1;
            if tries % SPINS_BEFORE_YIELD == 0 {
                std::thread::yield_now();
            } else {
                spin_loop();
            }
        }
    }
}

fn direction(v: &[u64; FIELDS]) -> DirectionStats {
    DirectionStats {
        packets: v[0],
        bytes: v[1],
        lost: v[2],
        jitter_ms: f64::from_bits(v[3]),
        forwarded: v[4],
        rtcp_packets: v[5],
        dropped: v[6],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[test]
    fn round_trips_figures() {
        let epoch = Instant::now();
        let shared = SharedStats::default();
        assert_eq!(shared.snapshot(epoch), PairStats::default());
        let d = DirectionStats {
            packets: 1,
            bytes: 2,
            lost: 3,
            jitter_ms: 4.5,
            forwarded: 5,
            rtcp_packets: 6,
            dropped: 7,
        };
        let at = epoch + Duration::from_millis(1500);
        shared.publish(1, &d, Some(at), epoch);
        let snap = shared.snapshot(epoch);
        assert_eq!(snap.from_b, d);
        assert_eq!(snap.from_a, DirectionStats::default());
        assert_eq!(snap.last_packet, Some(at));
        // A packet at the epoch itself is still "some packet".
        shared.publish(0, &d, Some(epoch), epoch);
        assert_eq!(shared.snapshot(epoch).last_packet, Some(epoch));
        // The first failure stays.
        assert_eq!(shared.snapshot(epoch).failure, None);
        shared.publish_failure(MediaFailure::ConsentExpired(LegSide::A));
        shared.publish_failure(MediaFailure::FingerprintMismatch(LegSide::B));
        assert_eq!(shared.snapshot(epoch).failure, Some(MediaFailure::ConsentExpired(LegSide::A)));
    }

    #[test]
    fn readers_never_see_a_torn_copy() {
        // The writer keeps all fields equal; a reader must never see two different values.
        let epoch = Instant::now();
        let shared = Arc::new(SharedStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let d = DirectionStats {
                        packets: n,
                        bytes: n,
                        lost: n,
                        jitter_ms: n as f64,
                        forwarded: n,
                        rtcp_packets: n,
                        dropped: n,
                    };
                    shared.publish(0, &d, None, epoch);
                    shared.publish(1, &d, None, epoch);
                }
            })
        };
        for _ in 0..20_000 {
            let s = shared.snapshot(epoch);
            let a = s.from_a;
            assert!(
                [a.bytes, a.lost, a.forwarded, a.rtcp_packets, a.dropped, a.jitter_ms as u64]
                    .iter()
                    .all(|&v| v == a.packets),
                "torn: {a:?}"
            );
            assert!(s.from_b.packets <= a.packets && a.packets <= s.from_b.packets + 1);
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }
}
