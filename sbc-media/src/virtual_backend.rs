//! A [`RelayBackend`] without sockets, for tests of the call logic: this crate's, and sbc-core's
//! sans-IO B2BUA tests, which need a [`crate::MediaPlane`] that hands out believable ports.
//!
//! It allocates port numbers from a range the way the real relay does (even RTP ports, RTCP on
//! RTP + 1, four ports per pair, [`RelayError::NoPorts`] when exhausted, ports back on close) but
//! binds nothing. It records the last [`RemoteSpec`] set for each side of each pair and how often
//! it was set (and how often by [`RelayBackend::restore`]), so a test can check what the call
//! logic told the relay, and it lets a test set the figures [`RelayBackend::stats`] reports
//! (counters, `last_packet`, `failure`). It can do DTLS as far as the call logic can tell:
//! [`VirtualBackend::set_dtls_fingerprint`] gives it a certificate fingerprint.

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::LegSide;
use crate::backend::{
    PairId, PairPorts, PairSpec, PairStats, RelayBackend, RelayError, RemoteSpec,
};
use crate::dtmf::DtmfEvent;

/// A socket-free [`RelayBackend`] (see the module docs).
#[derive(Debug)]
pub struct VirtualBackend {
    // The trait takes `&self` and must be `Sync` (the real relay is shared by all shards); a
    // mutex is the simple answer for a test double that sees a few calls per call event.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Free RTP ports (even; RTCP is the odd one above), reused oldest-freed first as a real
    /// relay does, so a late packet of a closed call does not land in the next one at once.
    free: VecDeque<u16>,
    next_id: u64,
    pairs: BTreeMap<PairId, VirtualPair>,
    /// What [`RelayBackend::dtls_fingerprint`] reports (`None`: no DTLS, as by default).
    fingerprint: Option<String>,
}

#[derive(Debug)]
struct VirtualPair {
    spec: PairSpec,
    ports: PairPorts,
    remote: [Option<RemoteSpec>; 2],
    configured: [u32; 2],
    /// How many of `configured` were [`RelayBackend::restore`]s.
    restored: [u32; 2],
    stats: PairStats,
    /// Digits asked for by `send_dtmf`, oldest first.
    sent_dtmf: Vec<(LegSide, DtmfEvent)>,
    /// Key presses `poll_dtmf` will report, oldest first.
    detected: VecDeque<(LegSide, DtmfEvent)>,
}

impl VirtualBackend {
    /// A backend whose RTP ports are the even ports of `ports` whose RTP + 1 is in the range too.
    /// Each pair takes two of them (one per side).
    pub fn new(ports: RangeInclusive<u16>) -> VirtualBackend {
        let (low, high) = (*ports.start(), *ports.end());
        let free =
            (low..high).filter(|p| p % 2 == 0 && p.checked_add(1).is_some_and(|r| r <= high));
        VirtualBackend {
            state: Mutex::new(State {
                free: free.collect(),
                next_id: 1,
                pairs: BTreeMap::new(),
                fingerprint: None,
            }),
        }
    }

    /// The fixed, fake fingerprint [`RelayBackend::dtls_fingerprint`] returns, so SDP tests can
    /// expect it (no certificate has it).
    pub const FINGERPRINT: &str = "sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:\
00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";

    /// Number of open pairs.
    pub fn open_pairs(&self) -> usize {
        self.lock().pairs.len()
    }

    /// Number of free RTP ports (a pair needs two).
    pub fn free_ports(&self) -> usize {
        self.lock().free.len()
    }

    /// The open pairs, in the order they were opened.
    pub fn pair_ids(&self) -> Vec<PairId> {
        self.lock().pairs.keys().copied().collect()
    }

    /// What a pair was opened with.
    pub fn spec(&self, pair: PairId) -> Option<PairSpec> {
        self.lock().pairs.get(&pair).map(|p| p.spec)
    }

    /// The ports a pair got.
    pub fn ports(&self, pair: PairId) -> Option<PairPorts> {
        self.lock().pairs.get(&pair).map(|p| p.ports)
    }

    /// The last [`RemoteSpec`] configured for `side` of `pair`.
    pub fn remote(&self, pair: PairId, side: LegSide) -> Option<RemoteSpec> {
        self.lock().pairs.get(&pair).and_then(|p| p.remote[idx(side)].clone())
    }

    /// How many times `side` of `pair` was configured (each one resets NAT latching).
    pub fn configure_count(&self, pair: PairId, side: LegSide) -> u32 {
        self.lock().pairs.get(&pair).map_or(0, |p| p.configured[idx(side)])
    }

    /// How many of those configurations were [`RelayBackend::restore`]s (a refused offer put
    /// the side back).
    pub fn restore_count(&self, pair: PairId, side: LegSide) -> u32 {
        self.lock().pairs.get(&pair).map_or(0, |p| p.restored[idx(side)])
    }

    /// Sets the figures `stats` and `close` report for a pair; false for an unknown pair.
    pub fn set_stats(&self, pair: PairId, stats: PairStats) -> bool {
        self.lock().pairs.get_mut(&pair).map(|p| p.stats = stats).is_some()
    }

    /// Sets when the pair last saw a packet; false for an unknown pair.
    pub fn set_last_packet(&self, pair: PairId, at: Instant) -> bool {
        self.lock().pairs.get_mut(&pair).map(|p| p.stats.last_packet = Some(at)).is_some()
    }

    /// The digits [`RelayBackend::send_dtmf`] was asked to play on a pair, oldest first.
    pub fn sent_dtmf(&self, pair: PairId) -> Vec<(LegSide, DtmfEvent)> {
        self.lock().pairs.get(&pair).map(|p| p.sent_dtmf.clone()).unwrap_or_default()
    }

    /// Makes [`RelayBackend::poll_dtmf`] report a key press from `from`'s peer, as the relay
    /// does when it detects one; false for an unknown pair.
    pub fn detect_dtmf(&self, pair: PairId, from: LegSide, event: DtmfEvent) -> bool {
        self.lock().pairs.get_mut(&pair).map(|p| p.detected.push_back((from, event))).is_some()
    }

    /// Makes the backend DTLS-capable with this certificate fingerprint (`sha-256 AB:CD:...`),
    /// as the real relay is; `None` takes it back.
    pub fn set_dtls_fingerprint(&self, fingerprint: Option<String>) {
        self.lock().fingerprint = fingerprint;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves consistent bookkeeping behind
        // (every update is a single assignment), so the poison is ignored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RelayBackend for VirtualBackend {
    fn open(&self, spec: PairSpec) -> Result<PairPorts, RelayError> {
        let mut state = self.lock();
        if state.free.len() < 2 {
            return Err(RelayError::NoPorts);
        }
        let (Some(a_rtp), Some(b_rtp)) = (state.free.pop_front(), state.free.pop_front()) else {
            return Err(RelayError::NoPorts);
        };
        let id = PairId(state.next_id);
        state.next_id += 1;
        let ports = PairPorts { id, a_rtp, b_rtp };
        let pair = VirtualPair {
            spec,
            ports,
            remote: [None, None],
            configured: [0, 0],
            restored: [0, 0],
            stats: PairStats::default(),
            sent_dtmf: Vec::new(),
            detected: VecDeque::new(),
        };
        state.pairs.insert(id, pair);
        Ok(ports)
    }

    fn configure(&self, pair: PairId, side: LegSide, remote: &RemoteSpec) {
        if let Some(p) = self.lock().pairs.get_mut(&pair) {
            p.remote[idx(side)] = Some(remote.clone());
            p.configured[idx(side)] += 1;
        }
    }

    fn restore(&self, pair: PairId, side: LegSide, remote: &RemoteSpec) {
        if let Some(p) = self.lock().pairs.get_mut(&pair) {
            p.remote[idx(side)] = Some(remote.clone());
            p.configured[idx(side)] += 1;
            p.restored[idx(side)] += 1;
        }
    }

    fn stats(&self, pair: PairId) -> Option<PairStats> {
        self.lock().pairs.get(&pair).map(|p| p.stats)
    }

    fn close(&self, pair: PairId) -> Option<PairStats> {
        let mut state = self.lock();
        let p = state.pairs.remove(&pair)?;
        state.free.push_back(p.ports.a_rtp);
        state.free.push_back(p.ports.b_rtp);
        Some(p.stats)
    }

    fn send_dtmf(&self, pair: PairId, toward: LegSide, event: DtmfEvent) {
        if let Some(p) = self.lock().pairs.get_mut(&pair) {
            p.sent_dtmf.push((toward, event));
        }
    }

    fn poll_dtmf(&self, pair: PairId) -> Option<(LegSide, DtmfEvent)> {
        self.lock().pairs.get_mut(&pair)?.detected.pop_front()
    }

    fn dtls_fingerprint(&self) -> Option<String> {
        self.lock().fingerprint.clone()
    }
}

fn idx(side: LegSide) -> usize {
    match side {
        LegSide::A => 0,
        LegSide::B => 1,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const SPEC: PairSpec = PairSpec { local_a: LOCAL, local_b: LOCAL };

    #[test]
    fn allocates_even_ports_and_runs_out() {
        // 10001..=10010: even ports whose +1 is in range are 10002..=10008 (4 of them).
        let backend = VirtualBackend::new(10001..=10010);
        assert_eq!(backend.free_ports(), 4);
        let one = backend.open(SPEC).unwrap();
        assert_eq!((one.a_rtp, one.b_rtp), (10002, 10004));
        let two = backend.open(SPEC).unwrap();
        assert_eq!(backend.open(SPEC), Err(RelayError::NoPorts));
        assert_eq!(backend.open_pairs(), 2);
        assert!(backend.close(one.id).is_some());
        assert!(backend.close(one.id).is_none(), "closing twice is harmless");
        let three = backend.open(SPEC).unwrap();
        assert_eq!((three.a_rtp, three.b_rtp), (10002, 10004));
        assert_ne!(three.id, one.id);
        backend.close(two.id);
        backend.close(three.id);
        assert_eq!((backend.open_pairs(), backend.free_ports()), (0, 4));
    }

    #[test]
    fn records_configuration_and_reports_set_stats() {
        let backend = VirtualBackend::new(20000..=20099);
        let p = backend.open(SPEC).unwrap();
        assert_eq!(backend.remote(p.id, LegSide::A), None);
        let spec = RemoteSpec { forward: false, ..RemoteSpec::default() };
        backend.configure(p.id, LegSide::A, &spec);
        backend.configure(p.id, LegSide::A, &spec);
        assert_eq!(backend.remote(p.id, LegSide::A), Some(spec));
        assert_eq!(backend.configure_count(p.id, LegSide::A), 2);
        assert_eq!(backend.configure_count(p.id, LegSide::B), 0);
        let now = Instant::now();
        assert!(backend.set_last_packet(p.id, now));
        assert_eq!(backend.stats(p.id).and_then(|s| s.last_packet), Some(now));
        assert_eq!(backend.close(p.id).and_then(|s| s.last_packet), Some(now));
        assert!(!backend.set_last_packet(p.id, now));
        assert_eq!(backend.dtls_fingerprint(), None, "no DTLS unless asked for");
        backend.set_dtls_fingerprint(Some(VirtualBackend::FINGERPRINT.to_owned()));
        assert_eq!(backend.dtls_fingerprint().as_deref(), Some(VirtualBackend::FINGERPRINT));
    }

    #[test]
    fn tiny_and_odd_ranges() {
        assert_eq!(VirtualBackend::new(5..=5).free_ports(), 0);
        assert_eq!(VirtualBackend::new(65534..=65535).free_ports(), 1);
        assert_eq!(VirtualBackend::new(65535..=65535).free_ports(), 0);
        #[allow(clippy::reversed_empty_ranges)] // an empty range from a config must not panic
        let empty = VirtualBackend::new(10..=1);
        assert_eq!(empty.free_ports(), 0);
    }
}
