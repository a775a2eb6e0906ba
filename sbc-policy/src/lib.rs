//! Edge policy of the SBC: pure, synchronous decisions (no sockets, no runtime, time passed in).
//!
//! sbc-core asks [`Policy::admit`] once per new dialog, before it creates leg B. An admitted call
//! holds a [`Permit`] for its whole life; dropping the permit is how a call gives its slot back,
//! whatever the reason it ended. Today every call is admitted and permits only count calls; the
//! policy issue fills in rate limits, call admission control, blacklists and bans behind this API.

#![forbid(unsafe_code)]

pub mod auth;
mod config;

pub use config::{
    AccessLists, Algorithm, AuthUser, BanConfig, ConfigError, Credential, KNOWN_SCANNERS,
    ListenerPolicy, OffenceRule, OffenceRules, PolicyConfig, Rate, RealmConfig, RejectMode, Secret,
    TrunkLimits,
};

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// What the core knows about a new dialog when it asks.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionRequest<'a> {
    /// Source address of the request.
    pub source: IpAddr,
    /// Inbound trunk index, when the source was recognised as a trunk.
    pub inbound_trunk: Option<usize>,
    /// Request-URI user part (the dialled number).
    pub callee: &'a str,
}

/// The answer.
#[derive(Debug)]
pub enum Verdict {
    /// Go ahead; the call holds the permit until it ends.
    Admit(Permit),
    /// Refuse with this status (403 for policy, 503 for load) and an optional Retry-After.
    Reject {
        /// SIP status code to answer.
        status: u16,
        /// Retry-After seconds, for 503.
        retry_after: Option<u32>,
    },
}

/// A call's admission slot, released on drop.
#[derive(Debug)]
pub struct Permit {
    active: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Counters are shared with other shards once CAC spans them; relaxed is enough for a count.
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The policy of one signalling shard.
#[derive(Debug, Default)]
pub struct Policy {
    active: Arc<AtomicUsize>,
    admitted: u64,
}

impl Policy {
    /// A policy that admits everything.
    pub fn new() -> Policy {
        Policy::default()
    }

    /// Decides on a new dialog.
    pub fn admit(&mut self, now: Instant, request: &AdmissionRequest<'_>) -> Verdict {
        let _ = (now, request);
        self.admitted += 1;
        self.active.fetch_add(1, Ordering::Relaxed);
        Verdict::Admit(Permit { active: Arc::clone(&self.active) })
    }

    /// Calls currently holding a permit.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Calls admitted since start.
    pub fn admitted(&self) -> u64 {
        self.admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_released_on_drop() {
        let mut p = Policy::new();
        let req = AdmissionRequest {
            source: "127.0.0.1".parse().unwrap(),
            inbound_trunk: None,
            callee: "100",
        };
        let v1 = p.admit(Instant::now(), &req);
        let v2 = p.admit(Instant::now(), &req);
        assert_eq!(p.active(), 2);
        drop(v1);
        assert_eq!(p.active(), 1);
        drop(v2);
        assert_eq!(p.active(), 0);
        assert_eq!(p.admitted(), 2);
    }
}
