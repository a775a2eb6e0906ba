//! Counters of every decision, as a plain snapshot the shell exports as metrics.
//!
//! Every packet of every receive task bumps one of them, so each counter is striped: a thread
//! adds to its own cell (on its own cache line) and a snapshot sums the cells. One shared atomic
//! would make all cores fight over one cache line on every packet.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::shard::SHARDS;

/// A snapshot of [`crate::Policy::counters`]. Totals count since start; the fields marked
/// "now" are gauges. Bans that ended count as active until the next
/// [`crate::Policy::handle_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyCounters {
    /// Packets that passed [`crate::Policy::check_source`].
    pub packets_allowed: u64,
    /// Packets dropped: the source is on a deny list.
    pub dropped_denied: u64,
    /// Packets dropped: the listener accepts allow-listed sources only.
    pub dropped_not_allowed: u64,
    /// Packets dropped: the source is banned.
    pub dropped_banned: u64,
    /// Packets dropped: the source exceeded its message rate.
    pub dropped_rate: u64,
    /// Calls admitted (emergency calls included).
    pub calls_admitted: u64,
    /// Emergency calls admitted (they bypass rate limits and CAC).
    pub emergency_calls: u64,
    /// Outbound trunk attempts admitted.
    pub outbound_admitted: u64,
    /// REGISTER requests admitted.
    pub registers_admitted: u64,
    /// Requests refused (403): the source is denied or not allowed on the listener.
    pub rejected_denied: u64,
    /// Requests refused (403): the source is banned.
    pub rejected_banned: u64,
    /// Calls refused: per-source calls per second.
    pub rejected_source_rate: u64,
    /// Calls refused: a trunk's calls per second (inbound or outbound).
    pub rejected_trunk_rate: u64,
    /// REGISTERs refused: per-source REGISTER rate.
    pub rejected_register_rate: u64,
    /// Calls refused: per-source concurrent calls.
    pub rejected_source_cac: u64,
    /// Calls refused: a trunk's concurrent calls (inbound, outbound or total).
    pub rejected_trunk_cac: u64,
    /// Offences recorded: rate exceeded.
    pub offences_rate_exceeded: u64,
    /// Offences recorded: digest authentication failed.
    pub offences_auth_failure: u64,
    /// Offences recorded: unknown user or domain.
    pub offences_unknown_user: u64,
    /// Offences recorded: malformed message.
    pub offences_malformed: u64,
    /// Offences recorded: scanner User-Agent.
    pub offences_scanner: u64,
    /// Offences not counted because the offender table was full.
    pub offences_ignored_full: u64,
    /// Bans imposed (escalations and restores from the state file included).
    pub bans_added: u64,
    /// Bans refused because the ban table was full.
    pub bans_refused_full: u64,
    /// Ban changes dropped because the shell did not drain the queue.
    pub ban_changes_dropped: u64,
    /// Now: bans in force.
    pub bans_active: u64,
    /// Now: calls holding a permit.
    pub active_calls: u64,
    /// Now: emergency calls holding a permit.
    pub emergency_active: u64,
    /// Now: sources tracked by the per-source rate limiters (all of them together).
    pub rate_keys_tracked: u64,
    /// Rate checks that fell into the shared overflow bucket because a limiter was full.
    pub rate_keys_overflowed: u64,
    /// Now: sources whose offences are being counted.
    pub offenders_tracked: u64,
    /// Digest authentications that succeeded.
    pub auth_ok: u64,
    /// Requests challenged because they carried no credentials for the realm.
    pub auth_challenged: u64,
    /// Digest authentications that failed (wrong password, unknown user, bad nonce, ...).
    pub auth_failed: u64,
    /// Right credentials with an expired or foreign nonce (answered `stale=true`).
    pub auth_stale: u64,
    /// Right credentials replayed with a used nonce count (answered `stale=true`).
    pub auth_replayed: u64,
    /// Nonces accepted without replay tracking because the nonce table was full.
    pub nonces_untracked: u64,
}

/// A total that any thread may bump without sharing a cache line with the others.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    cells: [Padded; SHARDS],
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// Hands each thread its cell, round robin.
static NEXT_CELL: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static CELL: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl Counter {
    /// Adds `n`. Relaxed: counters order nothing.
    pub(crate) fn add(&self, n: u64) {
        let i = CELL.with(|c| {
            if c.get() == usize::MAX {
                c.set(NEXT_CELL.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            c.get()
        });
        self.cells[i].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total.
    pub(crate) fn load(&self) -> u64 {
        self.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// Declares the live counters: one [`Counter`] per total of [`PolicyCounters`] that is counted as
/// it happens (the gauges and the table statistics are read from their tables).
macro_rules! live_counters {
    ($($field:ident),* $(,)?) => {
        /// The totals, bumped from any thread.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $field: Counter,)*
            /// Bans restored from the state file (reported inside `bans_added`).
            pub(crate) bans_restored: Counter,
        }

        impl Counters {
            /// The totals; table statistics and gauges are left at 0 for the caller to fill.
            pub(crate) fn snapshot(&self) -> PolicyCounters {
                PolicyCounters {
                    $($field: self.$field.load(),)*
                    bans_added: self.bans_restored.load(),
                    ..PolicyCounters::default()
                }
            }
        }
    };
}

live_counters!(
    packets_allowed,
    dropped_denied,
    dropped_not_allowed,
    dropped_banned,
    dropped_rate,
    calls_admitted,
    emergency_calls,
    outbound_admitted,
    registers_admitted,
    rejected_denied,
    rejected_banned,
    rejected_source_rate,
    rejected_trunk_rate,
    rejected_register_rate,
    rejected_source_cac,
    rejected_trunk_cac,
    offences_rate_exceeded,
    offences_auth_failure,
    offences_unknown_user,
    offences_malformed,
    offences_scanner,
    auth_ok,
    auth_challenged,
    auth_failed,
    auth_stale,
    auth_replayed,
);

impl Counters {
    /// Counts one event.
    pub(crate) fn bump(counter: &Counter) {
        counter.add(1);
    }
}
