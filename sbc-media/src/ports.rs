//! The media port range: RTP/RTCP port pairs handed out as RAII leases.
//!
//! A configured range `[min, max]` is cut into pairs of an even RTP port and the odd RTCP port
//! above it (RFC 3550 §11: RTP on an even port, RTCP on the next higher odd one). A lease is
//! only handed out together with both sockets already bound on the requested local address, so
//! a caller never holds a port it cannot use; if another process holds either port of a pair,
//! that pair is skipped for this request only and tried again by later ones.
//!
//! Leases go back to the pool when dropped, so a relay pair that is dropped on any path (close,
//! error, shutdown, panic unwinding) returns its ports (rtpengine #2164 leaked a half-bound pair
//! on an error path). The pool hands pairs out round-robin, so a freed pair is reused as late as
//! possible and stray packets of an ended call rarely reach the next one.
//!
//! Thread-safe: one mutex guards the free map. It is taken per call set-up and tear-down, never
//! per packet, and binds happen under it so two threads never race for the same pair.

#![forbid(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::backend::RelayError;

/// A shareable pool over one port range.
#[derive(Debug, Clone)]
pub struct PortPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// RTP port of pair slot 0 (the lowest even port of the range).
    first_rtp: u16,
    /// LOCK: the free map and cursor, taken by signalling threads on open and by whichever
    /// thread drops a lease.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `in_use[k]`: pair slot `k` (RTP port `first_rtp + 2k`) is leased.
    in_use: Vec<bool>,
    leased: usize,
    /// Next slot to try: allocation is round-robin.
    cursor: usize,
}

/// Why a port range is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortRangeError {
    /// Port 0 is in the range: it means "any port" to the kernel.
    ZeroPort,
    /// The range holds no even port whose odd neighbour is also in it.
    NoPair,
}

impl std::fmt::Display for PortRangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRangeError::ZeroPort => f.write_str("media port range includes port 0"),
            PortRangeError::NoPair => f.write_str("media port range holds no RTP/RTCP pair"),
        }
    }
}

impl std::error::Error for PortRangeError {}

impl PortPool {
    /// A pool over the ports `min..=max`.
    pub fn new(min: u16, max: u16) -> Result<PortPool, PortRangeError> {
        if min == 0 {
            return Err(PortRangeError::ZeroPort);
        }
        let first_rtp = min.checked_add(min % 2).ok_or(PortRangeError::NoPair)?;
        if max <= first_rtp {
            return Err(PortRangeError::NoPair);
        }
        // Pairs (p, p + 1) with p even, first_rtp <= p and p + 1 <= max.
        let pairs = usize::from(max - first_rtp).div_ceil(2);
        let state = State { in_use: vec![false; pairs], leased: 0, cursor: 0 };
        Ok(PortPool { inner: Arc::new(Inner { first_rtp, state: Mutex::new(state) }) })
    }

    /// Number of RTP/RTCP pairs in the range.
    pub fn capacity(&self) -> usize {
        self.inner.lock().in_use.len()
    }

    /// Number of pairs currently leased.
    pub fn leased(&self) -> usize {
        self.inner.lock().leased
    }

    /// Leases the next free pair whose two ports `bind` can bind on `ip`, and returns the lease
    /// with both sockets.
    ///
    /// `bind` is called with the RTP address, then the RTCP address. A pair where it fails with
    /// `AddrInUse` or `PermissionDenied` (a port held by someone else) is skipped and stays free
    /// for later requests; any other error (say, `ip` is not a local address) ends the request.
    /// [`RelayError::NoPorts`] when every free pair was tried.
    pub fn lease<S>(
        &self,
        ip: IpAddr,
        mut bind: impl FnMut(SocketAddr) -> io::Result<S>,
    ) -> Result<Leased<S>, RelayError> {
        let mut state = self.inner.lock();
        let slots = state.in_use.len();
        for i in 0..slots {
            let slot = (state.cursor + i) % slots;
            if state.in_use[slot] {
                continue;
            }
            let rtp_port = self.inner.port_of(slot);
            let rtp = match bind(SocketAddr::new(ip, rtp_port)) {
                Ok(s) => s,
                Err(e) if is_taken(&e) => continue,
                Err(e) => return Err(RelayError::Io(format!("bind {ip} port {rtp_port}: {e}"))),
            };
            let rtcp = match bind(SocketAddr::new(ip, rtp_port + 1)) {
                Ok(s) => s,
                Err(e) if is_taken(&e) => continue,
                Err(e) => {
                    return Err(RelayError::Io(format!("bind {ip} port {}: {e}", rtp_port + 1)));
                }
            };
            state.in_use[slot] = true;
            state.leased += 1;
            state.cursor = (slot + 1) % slots;
            let lease = PortLease { pool: Arc::clone(&self.inner), slot, rtp_port };
            return Ok(Leased { rtp, rtcp, lease });
        }
        Err(RelayError::NoPorts)
    }
}

/// The kernel's answers for "someone else has this port".
fn is_taken(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied)
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain bitmap updated in single statements; a panic elsewhere while the
        // lock was held cannot leave it half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn port_of(&self, slot: usize) -> u16 {
        // Slots were counted so that first_rtp + 2 * slot + 1 <= max <= u16::MAX.
        self.first_rtp + 2 * slot as u16
    }
}

/// One leased RTP/RTCP port pair; returned to the pool on drop.
#[derive(Debug)]
pub struct PortLease {
    pool: Arc<Inner>,
    slot: usize,
    rtp_port: u16,
}

impl PortLease {
    /// The RTP port (even).
    pub fn rtp_port(&self) -> u16 {
        self.rtp_port
    }

    /// The RTCP port (RTP + 1).
    pub fn rtcp_port(&self) -> u16 {
        self.rtp_port + 1
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        if state.in_use[self.slot] {
            state.in_use[self.slot] = false;
            state.leased -= 1;
        }
    }
}

/// A lease with its two bound sockets. Fields drop in order, so the sockets are closed before
/// the ports go back to the pool and the next lease of this pair can bind them.
#[derive(Debug)]
pub struct Leased<S> {
    /// The socket bound on the RTP port.
    pub rtp: S,
    /// The socket bound on the RTCP port.
    pub rtcp: S,
    /// The ports.
    pub lease: PortLease,
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, UdpSocket};

    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
        UdpSocket::bind(addr)
    }

    /// A fake binder that refuses the ports in `taken` and counts calls.
    fn fake(taken: &[u16]) -> impl FnMut(SocketAddr) -> io::Result<u16> + '_ {
        move |addr| {
            if taken.contains(&addr.port()) {
                Err(io::ErrorKind::AddrInUse.into())
            } else {
                Ok(addr.port())
            }
        }
    }

    #[test]
    fn counts_pairs_in_a_range() {
        assert_eq!(PortPool::new(10000, 10009).unwrap().capacity(), 5);
        assert_eq!(PortPool::new(10001, 10010).unwrap().capacity(), 4);
        assert_eq!(PortPool::new(10000, 10001).unwrap().capacity(), 1);
        assert_eq!(PortPool::new(65534, 65535).unwrap().capacity(), 1);
        assert_eq!(PortPool::new(65533, 65535).unwrap().capacity(), 1);
        assert_eq!(PortPool::new(10000, 10000).unwrap_err(), PortRangeError::NoPair);
        assert_eq!(PortPool::new(10001, 10002).unwrap_err(), PortRangeError::NoPair);
        assert_eq!(PortPool::new(65535, 65535).unwrap_err(), PortRangeError::NoPair);
        assert_eq!(PortPool::new(0, 100).unwrap_err(), PortRangeError::ZeroPort);
        assert_eq!(PortPool::new(200, 100).unwrap_err(), PortRangeError::NoPair);
    }

    #[test]
    fn hands_out_even_odd_pairs_until_exhausted_and_reuses_returned_ones() {
        let pool = PortPool::new(10000, 10009).unwrap();
        let leases: Vec<_> = (0..5).map(|_| pool.lease(LOCAL, fake(&[])).unwrap()).collect();
        let ports: Vec<_> = leases.iter().map(|l| (l.rtp, l.rtcp)).collect();
        assert_eq!(
            ports,
            [(10000, 10001), (10002, 10003), (10004, 10005), (10006, 10007), (10008, 10009)]
        );
        assert_eq!(pool.leased(), 5);
        assert!(matches!(pool.lease(LOCAL, fake(&[])), Err(RelayError::NoPorts)));
        drop(leases);
        assert_eq!(pool.leased(), 0);
        assert!(pool.lease(LOCAL, fake(&[])).is_ok());
    }

    #[test]
    fn skips_a_taken_pair_without_losing_it() {
        let pool = PortPool::new(10000, 10005).unwrap();
        // Someone holds 10001 (the RTCP port of the first pair).
        let first = pool.lease(LOCAL, fake(&[10001])).unwrap();
        assert_eq!(first.lease.rtp_port(), 10002);
        let second = pool.lease(LOCAL, fake(&[10001])).unwrap();
        assert_eq!(second.lease.rtp_port(), 10004);
        assert!(matches!(pool.lease(LOCAL, fake(&[10001])), Err(RelayError::NoPorts)));
        // Once the other holder is gone, the skipped pair is handed out.
        let third = pool.lease(LOCAL, fake(&[])).unwrap();
        assert_eq!(third.lease.rtp_port(), 10000);
        assert_eq!(pool.leased(), 3);
    }

    #[test]
    fn other_bind_errors_end_the_request() {
        let pool = PortPool::new(10000, 10009).unwrap();
        let r = pool
            .lease(LOCAL, |_| -> io::Result<()> { Err(io::ErrorKind::AddrNotAvailable.into()) });
        assert!(matches!(r, Err(RelayError::Io(_))));
        assert_eq!(pool.leased(), 0);
    }

    #[test]
    fn binds_real_sockets_and_releases_them_before_the_ports() {
        // Find a free block of 4 ports: ask the kernel for an ephemeral one and use its
        // neighbourhood; a taken port there is skipped, which is what is tested anyway.
        let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let base = probe.local_addr().unwrap().port() & !1;
        drop(probe);
        let pool = PortPool::new(base, base + 3).unwrap();
        // Hold the first RTP port: the pool must skip to the second pair. If the neighbourhood
        // got busy meanwhile there is nothing to check on this machine.
        let Ok(_held) = UdpSocket::bind((Ipv4Addr::LOCALHOST, base)) else { return };
        let Ok(leased) = pool.lease(LOCAL, bind_udp) else { return };
        assert_eq!(leased.lease.rtp_port(), base + 2);
        let rtp = leased.rtp.local_addr().unwrap().port();
        assert_eq!(leased.rtcp.local_addr().unwrap().port(), rtp + 1);
        drop(leased);
        // Sockets closed: the ports bind again.
        assert!(UdpSocket::bind((Ipv4Addr::LOCALHOST, rtp)).is_ok());
        assert!(UdpSocket::bind((Ipv4Addr::LOCALHOST, rtp + 1)).is_ok());
    }

    #[test]
    fn is_shared_between_threads() {
        let pool = PortPool::new(20000, 20199).unwrap();
        let got: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..25).map(|_| pool.lease(LOCAL, fake(&[])).unwrap()).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut ports: Vec<_> = got.iter().map(|l| l.rtp).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 100);
        assert_eq!(pool.leased(), 100);
    }
}
