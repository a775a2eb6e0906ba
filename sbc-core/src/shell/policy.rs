//! The policy task: the one owner of the shared [`Policy`]'s timers, its ban change queue, its
//! counters' export and its state file.
//!
//! Every receive task and signalling shard asks the policy directly (it is `Sync`); what needs
//! a single driver runs here, off the signalling path: ending bans and forgetting idle sources
//! ([`Policy::handle_timeout`]), logging each ban and feeding it to the kernel (nftables thread),
//! copying the counters into the `metrics` registry, and writing the ban state file (on a
//! blocking thread, at most every [`WRITE_EVERY`], atomically by rename).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Gauge};
use sbc_policy::{BanChange, Policy, PolicyCounters};

#[cfg(feature = "nftables")]
use super::nft::Kernel;
use crate::config::PolicySettings;

/// How often the task wakes when nothing is due sooner: the latency of ban logging, kernel
/// pushes and counter export.
const TICK: Duration = Duration::from_millis(250);
/// Least time between two writes of the state file.
const WRITE_EVERY: Duration = Duration::from_secs(2);
/// Ban changes logged one by one per tick; beyond it they are summed up in one line (a spoofed
/// flood can ban thousands of sources a second).
const LOG_PER_TICK: usize = 20;

/// Starts the task; `ports` are the SIP ports the kernel rule protects.
pub(crate) fn spawn(
    policy: Arc<Policy>,
    settings: &PolicySettings,
    ports: Vec<u16>,
) -> tokio::task::JoinHandle<()> {
    #[cfg(feature = "nftables")]
    let kernel = settings.nftables.as_ref().map(|cfg| Kernel::start(cfg, ports));
    #[cfg(not(feature = "nftables"))]
    {
        let _ = ports;
        if settings.nftables.is_some() {
            tracing::warn!(
                "built without the nftables feature: bans are enforced in userspace only"
            );
        }
    }
    let file = settings.ban_file.clone();
    tokio::spawn(async move {
        let export = Export::new();
        #[cfg(feature = "nftables")]
        let mut kernel = kernel;
        let mut written = policy.bans_version();
        let mut last_write: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let next = policy.poll_timeout().map_or(now + TICK, |at| at.min(now + TICK));
            tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
            let now = Instant::now();
            policy.handle_timeout(now);
            let mut logged = 0;
            while let Some(change) = policy.poll_ban_change() {
                if logged < LOG_PER_TICK {
                    log_change(&change);
                }
                logged += 1;
                #[cfg(feature = "nftables")]
                if let Some(k) = &kernel
                    && !k.push(change)
                {
                    kernel = None; // the nftables thread gave up (already logged)
                }
            }
            if logged > LOG_PER_TICK {
                tracing::info!(more = logged - LOG_PER_TICK, "more ban changes not logged");
            }
            export.update(&policy.counters());
            let version = policy.bans_version();
            let due = last_write.is_none_or(|at| now.duration_since(at) >= WRITE_EVERY);
            if let Some(path) = &file
                && version != written
                && due
            {
                let data = policy.bans_snapshot(now, SystemTime::now());
                let path = path.clone();
                let result = tokio::task::spawn_blocking(move || write_atomically(&path, &data));
                match result.await {
                    Ok(Ok(())) => written = version,
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the ban state file"),
                    Err(e) => tracing::warn!(error = %e, "ban state writer failed"),
                }
                last_write = Some(now);
            }
        }
    })
}

/// Restores the bans of the state file at start. A missing file is a first start.
pub(crate) fn load_bans(policy: &Policy, path: &Path) {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::info!(file = %path.display(), "no ban state file yet");
            return;
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the ban state file");
            return;
        }
    };
    match policy.load_bans(&data, Instant::now(), SystemTime::now()) {
        Ok(l) => tracing::info!(
            file = %path.display(),
            restored = l.restored,
            expired = l.expired,
            skipped = l.skipped,
            "bans restored"
        ),
        Err(e) => tracing::warn!(file = %path.display(), error = %e, "ban state file ignored"),
    }
}

/// Writes the bans now (at shutdown).
pub(crate) fn save_bans(policy: &Policy, path: &Path) {
    let data = policy.bans_snapshot(Instant::now(), SystemTime::now());
    match write_atomically(path, &data) {
        Ok(()) => tracing::info!(file = %path.display(), "ban state saved"),
        Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot save the ban state"),
    }
}

/// Writes `data` to a temporary file beside `path`, then renames it over `path`: a reader (or
/// the next start after a crash) sees the old file or the new one, never half of one.
fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp: PathBuf = path.to_path_buf();
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

fn log_change(change: &BanChange) {
    match change {
        BanChange::Added { network, timeout } => {
            tracing::info!(source = %network, seconds = timeout.as_secs(), "source banned")
        }
        BanChange::Removed { network } => tracing::info!(source = %network, "ban lifted"),
    }
}

/// Reads one value of a counters snapshot.
type Get = fn(&PolicyCounters) -> u64;

/// The policy counters as `metrics` handles, made once.
struct Export {
    totals: Vec<(Counter, Get)>,
    gauges: Vec<(Gauge, Get)>,
}

impl Export {
    fn new() -> Export {
        use metrics::{counter, gauge};
        let totals: Vec<(Counter, Get)> = vec![
            (counter!("sbc_policy_packets_total", "verdict" => "allowed"), |c| c.packets_allowed),
            (counter!("sbc_policy_packets_total", "verdict" => "denied"), |c| c.dropped_denied),
            (counter!("sbc_policy_packets_total", "verdict" => "not_allowed"), |c| {
                c.dropped_not_allowed
            }),
            (counter!("sbc_policy_packets_total", "verdict" => "banned"), |c| c.dropped_banned),
            (counter!("sbc_policy_packets_total", "verdict" => "rate_limited"), |c| c.dropped_rate),
            (counter!("sbc_policy_admitted_total", "kind" => "call"), |c| c.calls_admitted),
            (counter!("sbc_policy_admitted_total", "kind" => "outbound"), |c| c.outbound_admitted),
            (counter!("sbc_policy_admitted_total", "kind" => "register"), |c| c.registers_admitted),
            (counter!("sbc_policy_emergency_calls_total"), |c| c.emergency_calls),
            (counter!("sbc_policy_rejected_total", "reason" => "denied"), |c| c.rejected_denied),
            (counter!("sbc_policy_rejected_total", "reason" => "banned"), |c| c.rejected_banned),
            (counter!("sbc_policy_rejected_total", "reason" => "source_rate"), |c| {
                c.rejected_source_rate
            }),
            (counter!("sbc_policy_rejected_total", "reason" => "trunk_rate"), |c| {
                c.rejected_trunk_rate
            }),
            (counter!("sbc_policy_rejected_total", "reason" => "register_rate"), |c| {
                c.rejected_register_rate
            }),
            (counter!("sbc_policy_rejected_total", "reason" => "source_cac"), |c| {
                c.rejected_source_cac
            }),
            (counter!("sbc_policy_rejected_total", "reason" => "trunk_cac"), |c| {
                c.rejected_trunk_cac
            }),
            (counter!("sbc_policy_offences_total", "kind" => "rate_exceeded"), |c| {
                c.offences_rate_exceeded
            }),
            (counter!("sbc_policy_offences_total", "kind" => "auth_failure"), |c| {
                c.offences_auth_failure
            }),
            (counter!("sbc_policy_offences_total", "kind" => "unknown_user"), |c| {
                c.offences_unknown_user
            }),
            (counter!("sbc_policy_offences_total", "kind" => "malformed"), |c| {
                c.offences_malformed
            }),
            (counter!("sbc_policy_offences_total", "kind" => "scanner"), |c| c.offences_scanner),
            (counter!("sbc_policy_offences_ignored_total"), |c| c.offences_ignored_full),
            (counter!("sbc_policy_bans_total"), |c| c.bans_added),
            (counter!("sbc_policy_bans_refused_total"), |c| c.bans_refused_full),
            (counter!("sbc_policy_ban_changes_dropped_total"), |c| c.ban_changes_dropped),
            (counter!("sbc_policy_rate_overflow_total"), |c| c.rate_keys_overflowed),
            (counter!("sbc_auth_total", "outcome" => "ok"), |c| c.auth_ok),
            (counter!("sbc_auth_total", "outcome" => "challenged"), |c| c.auth_challenged),
            (counter!("sbc_auth_total", "outcome" => "failed"), |c| c.auth_failed),
            (counter!("sbc_auth_total", "outcome" => "stale"), |c| c.auth_stale),
            (counter!("sbc_auth_total", "outcome" => "replayed"), |c| c.auth_replayed),
            (counter!("sbc_auth_nonces_untracked_total"), |c| c.nonces_untracked),
        ];
        let gauges: Vec<(Gauge, Get)> = vec![
            (gauge!("sbc_policy_bans_active"), |c| c.bans_active),
            (gauge!("sbc_policy_calls_active"), |c| c.active_calls),
            (gauge!("sbc_policy_emergency_calls_active"), |c| c.emergency_active),
            (gauge!("sbc_policy_tracked_sources"), |c| c.rate_keys_tracked),
            (gauge!("sbc_policy_offenders_tracked"), |c| c.offenders_tracked),
        ];
        Export { totals, gauges }
    }

    fn update(&self, c: &PolicyCounters) {
        for (counter, get) in &self.totals {
            counter.absolute(get(c));
        }
        for (gauge, get) in &self.gauges {
            gauge.set(get(c) as f64);
        }
    }
}
