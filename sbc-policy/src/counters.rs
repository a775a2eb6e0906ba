//! Counters of every decision, as a plain snapshot the shell exports as metrics.

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
}
