//! Tests of the relay over real loopback sockets (127.0.0.1, 127.0.0.2 and ::1).
//!
//! Each relay gets a port range of its own below the kernel's ephemeral range, so tests run in
//! parallel; peers bind ephemeral ports. Waits are bounded (a 2 s read timeout, a 2 s deadline
//! for figures). A packet that must be dropped is checked without sleeping: a packet that must
//! pass is sent after it on the same path, and the peer's first packet has to be that one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::backend::Latch;

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V4_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(2);

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A relay over a fresh range of `pairs` RTP/RTCP pairs.
fn relay_with(pairs: u16, workers: usize) -> Relay {
    // 500 ports per test process, placed by pid so two runs at once rarely meet; a port that
    // is taken anyway is skipped by the pool.
    let base = 20_000 + (std::process::id() % 20) as u16 * 500;
    let start = base + NEXT_PORT.fetch_add(2 * pairs, Ordering::Relaxed);
    assert!(start + 2 * pairs <= base + 500, "test port block used up");
    Relay::start(RelayConfig {
        port_min: start,
        port_max: start + 2 * pairs - 1,
        workers,
        dscp: None,
    })
    .unwrap()
}

fn relay() -> Relay {
    relay_with(4, 2)
}

/// A UDP endpoint playing a phone or a trunk.
struct Peer {
    sock: UdpSocket,
}

impl Peer {
    fn new(ip: IpAddr) -> Peer {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        Peer { sock }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&self, data: &[u8], to: SocketAddr) {
        self.sock.send_to(data, to).unwrap();
    }

    fn recv(&self) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2048];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => (buf[..n].to_vec(), from),
            Err(e) => panic!("peer {} received nothing: {e}", self.addr()),
        }
    }
}

fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend(seq.to_be_bytes());
    p.extend(ts.to_be_bytes());
    p.extend(ssrc.to_be_bytes());
    p.extend([0xd5; 160]); // 20 ms of G.711 silence
    p
}

fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend(ssrc.to_be_bytes());
    p
}

/// One side's remote description: strict, toward `rtp` and `rtcp`.
fn remote(rtp: &Peer, rtcp: &Peer) -> RemoteSpec {
    RemoteSpec { rtp: Some(rtp.addr()), rtcp: Some(rtcp.addr()), ..RemoteSpec::default() }
}

/// An open pair with a peer (RTP and RTCP socket) on each side, configured strict.
struct Call {
    relay: Relay,
    id: PairId,
    /// The relay's RTP addresses facing A and B.
    at_a: SocketAddr,
    at_b: SocketAddr,
    a: Peer,
    a_rtcp: Peer,
    b: Peer,
    b_rtcp: Peer,
}

impl Call {
    fn new(local_a: IpAddr, local_b: IpAddr) -> Call {
        let relay = relay();
        let ports = relay.open(PairSpec { local_a, local_b }).unwrap();
        let (a, a_rtcp, b, b_rtcp) =
            (Peer::new(local_a), Peer::new(local_a), Peer::new(local_b), Peer::new(local_b));
        relay.configure(ports.id, LegSide::A, &remote(&a, &a_rtcp));
        relay.configure(ports.id, LegSide::B, &remote(&b, &b_rtcp));
        Call {
            id: ports.id,
            at_a: SocketAddr::new(local_a, ports.a_rtp),
            at_b: SocketAddr::new(local_b, ports.b_rtp),
            relay,
            a,
            a_rtcp,
            b,
            b_rtcp,
        }
    }

    fn configure(&self, side: LegSide, spec: RemoteSpec) {
        self.relay.configure(self.id, side, &spec);
    }

    /// Waits until the pair's figures satisfy `ok`.
    fn stats_until(&self, ok: impl Fn(&PairStats) -> bool) -> PairStats {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.relay.stats(self.id).unwrap();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "figures never matched: {s:#?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn rtcp_port(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip(), addr.port() + 1)
}

/// Sends `n` packets from `from` through the relay at `via` to `to`, in windows small enough
/// for the receiver's socket buffer, and checks that they arrive unchanged from `expect_src`.
fn relay_stream(
    from: &Peer,
    via: SocketAddr,
    to: &Peer,
    expect_src: SocketAddr,
    n: u16,
    ssrc: u32,
) {
    let mut seq = 0u16;
    while seq < n {
        let window = (n - seq).min(50);
        for k in 0..window {
            from.send(&rtp(0, false, seq + k, u32::from(seq + k) * 160, ssrc), via);
        }
        for k in 0..window {
            let (got, src) = to.recv();
            assert_eq!(src, expect_src);
            assert_eq!(got, rtp(0, false, seq + k, u32::from(seq + k) * 160, ssrc));
        }
        seq += window;
    }
}

#[test]
fn relays_a_thousand_packets_each_way() {
    let c = Call::new(V4, V4);
    relay_stream(&c.a, c.at_a, &c.b, c.at_b, 1000, 0xaaaa);
    relay_stream(&c.b, c.at_b, &c.a, c.at_a, 1000, 0xbbbb);
    let s = c.stats_until(|s| s.from_a.forwarded == 1000 && s.from_b.forwarded == 1000);
    for d in [s.from_a, s.from_b] {
        assert_eq!(d.packets, 1000);
        assert_eq!(d.bytes, 1000 * 172);
        assert_eq!(d.lost, 0);
        assert_eq!(d.dropped, 0);
        assert_eq!(d.rtcp_packets, 0);
        assert!(d.jitter_ms.is_finite() && d.jitter_ms >= 0.0);
    }
    let last = s.last_packet.unwrap();
    assert!(last <= Instant::now() && last.elapsed() < Duration::from_secs(10));
}

#[test]
fn strict_source_drops_other_ports_and_other_hosts() {
    let c = Call::new(V4, V4);
    let same_host = Peer::new(V4);
    let other_host = Peer::new(V4_OTHER);
    same_host.send(&rtp(0, false, 1, 160, 1), c.at_a);
    other_host.send(&rtp(0, false, 2, 320, 1), c.at_a);
    // RTCP from the RTP peer's address is not the announced RTCP address.
    c.a.send(&rtcp_rr(1), rtcp_port(c.at_a));
    c.a.send(&rtp(0, false, 3, 480, 1), c.at_a);
    c.a_rtcp.send(&rtcp_rr(1), rtcp_port(c.at_a));
    assert_eq!(c.b.recv().0, rtp(0, false, 3, 480, 1));
    assert_eq!(c.b_rtcp.recv().0, rtcp_rr(1));
    // Figures of the RTP and the RTCP socket are published batch by batch: wait for both.
    let s = c.stats_until(|s| {
        s.from_a.dropped == 3 && s.from_a.forwarded == 1 && s.from_a.rtcp_packets == 1
    });
    assert_eq!(s.from_a.packets, 1);
    // Nothing leaked to the intruders.
    same_host.sock.set_nonblocking(true).unwrap();
    assert!(same_host.sock.recv_from(&mut [0u8; 64]).is_err());
}

#[test]
fn nat_latches_the_first_source_and_reconfiguration_unlatches() {
    let c = Call::new(V4, V4);
    // The SDP announced a private address; the packets come from elsewhere.
    let announced: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let nat_spec = RemoteSpec {
        rtp: Some(announced),
        rtcp: Some(rtcp_port(announced)),
        latch: Latch::Nat,
        ..RemoteSpec::default()
    };
    c.configure(LegSide::A, nat_spec.clone());
    let behind_nat = Peer::new(V4);
    let third = Peer::new(V4_OTHER);
    behind_nat.send(&rtp(0, false, 1, 160, 7), c.at_a);
    assert_eq!(c.b.recv().0, rtp(0, false, 1, 160, 7));
    // B's media now goes to the latched address.
    c.b.send(&rtp(0, false, 1, 160, 8), c.at_b);
    assert_eq!(behind_nat.recv(), (rtp(0, false, 1, 160, 8), c.at_a));
    // A third source is refused.
    third.send(&rtp(0, false, 2, 320, 7), c.at_a);
    behind_nat.send(&rtp(0, false, 3, 480, 7), c.at_a);
    assert_eq!(c.b.recv().0, rtp(0, false, 3, 480, 7));
    c.stats_until(|s| s.from_a.dropped == 1 && s.from_a.forwarded == 2);

    // A re-INVITE: latching starts over; the next source wins, the old one is refused.
    c.configure(LegSide::A, nat_spec);
    third.send(&rtp(0, false, 4, 640, 7), c.at_a);
    assert_eq!(c.b.recv().0, rtp(0, false, 4, 640, 7));
    behind_nat.send(&rtp(0, false, 5, 800, 7), c.at_a);
    third.send(&rtp(0, false, 6, 960, 7), c.at_a);
    assert_eq!(c.b.recv().0, rtp(0, false, 6, 960, 7));
    c.b.send(&rtp(0, false, 2, 320, 8), c.at_b);
    assert_eq!(third.recv(), (rtp(0, false, 2, 320, 8), c.at_a));
    let s = c.stats_until(|s| s.from_a.dropped == 2 && s.from_a.forwarded == 4);
    // Counters survive reconfiguration.
    assert_eq!(s.from_a.packets, 4);
}

#[test]
fn nat_latches_rtcp_separately() {
    let c = Call::new(V4, V4);
    let announced: SocketAddr = "127.0.0.1:9".parse().unwrap();
    c.configure(
        LegSide::A,
        RemoteSpec {
            rtp: Some(announced),
            rtcp: Some(rtcp_port(announced)),
            latch: Latch::Nat,
            ..RemoteSpec::default()
        },
    );
    let nat_rtcp = Peer::new(V4);
    nat_rtcp.send(&rtcp_rr(7), rtcp_port(c.at_a));
    assert_eq!(c.b_rtcp.recv().0, rtcp_rr(7));
    c.b_rtcp.send(&rtcp_rr(8), rtcp_port(c.at_b));
    assert_eq!(nat_rtcp.recv(), (rtcp_rr(8), rtcp_port(c.at_a)));
    // RTP has not latched yet: any source is still taken for it.
    c.a.send(&rtp(0, false, 1, 160, 7), c.at_a);
    assert_eq!(c.b.recv().0, rtp(0, false, 1, 160, 7));
}

#[test]
fn hold_drops_one_direction_and_resumes() {
    let c = Call::new(V4, V4);
    let mut held = remote(&c.a, &c.a_rtcp);
    held.forward = false;
    c.configure(LegSide::A, held.clone());
    c.a.send(&rtp(0, false, 1, 160, 1), c.at_a);
    // The other direction still flows, and so does A's RTCP.
    c.b.send(&rtp(0, false, 1, 160, 2), c.at_b);
    assert_eq!(c.a.recv().0, rtp(0, false, 1, 160, 2));
    c.a_rtcp.send(&rtcp_rr(1), rtcp_port(c.at_a));
    assert_eq!(c.b_rtcp.recv().0, rtcp_rr(1));
    held.forward = true;
    c.configure(LegSide::A, held);
    c.a.send(&rtp(0, false, 2, 320, 1), c.at_a);
    assert_eq!(c.b.recv().0, rtp(0, false, 2, 320, 1));
    let s = c.stats_until(|s| s.from_a.forwarded == 1 && s.from_a.packets == 2);
    assert_eq!(s.from_a.dropped, 1);
    assert_eq!(s.from_a.lost, 0);
}

#[test]
fn payload_type_rewrite_keeps_the_marker_bit() {
    let c = Call::new(V4, V4);
    let mut spec = remote(&c.a, &c.a_rtcp);
    spec.pt_map[96] = 111;
    spec.pt_map[101] = 100;
    c.configure(LegSide::A, spec);
    for (pt, marker, want) in [(96, true, 111), (96, false, 111), (101, true, 100), (0, false, 0)] {
        let sent = rtp(pt, marker, 1, 160, 0xdead_beef);
        c.a.send(&sent, c.at_a);
        let (got, _) = c.b.recv();
        assert_eq!(got[1], want | if marker { 0x80 } else { 0 });
        assert_eq!(got[0], sent[0]);
        assert_eq!(got[2..], sent[2..], "only the payload type byte changes");
    }
    // B's map is its own (identity here).
    c.b.send(&rtp(96, false, 1, 160, 2), c.at_b);
    assert_eq!(c.a.recv().0[1], 96);
}

#[test]
fn rtcp_goes_from_port_plus_one_to_port_plus_one() {
    let c = Call::new(V4, V4);
    c.a_rtcp.send(&rtcp_rr(1), rtcp_port(c.at_a));
    assert_eq!(c.b_rtcp.recv(), (rtcp_rr(1), rtcp_port(c.at_b)));
    c.b_rtcp.send(&rtcp_rr(2), rtcp_port(c.at_b));
    assert_eq!(c.a_rtcp.recv(), (rtcp_rr(2), rtcp_port(c.at_a)));
    let s = c.stats_until(|s| s.from_a.rtcp_packets == 1 && s.from_b.rtcp_packets == 1);
    assert_eq!(s.from_a.packets, 0, "RTCP is not counted as RTP");
    assert!(s.last_packet.is_some());
}

#[test]
fn rtcp_mux_side_bridges_to_a_non_mux_side() {
    let c = Call::new(V4, V4);
    c.configure(
        LegSide::A,
        RemoteSpec { rtp: Some(c.a.addr()), rtcp: None, rtcp_mux: true, ..RemoteSpec::default() },
    );
    // A multiplexes: its RTCP arrives on the relay's RTP port and leaves on B's RTCP port.
    c.a.send(&rtcp_rr(1), c.at_a);
    assert_eq!(c.b_rtcp.recv(), (rtcp_rr(1), rtcp_port(c.at_b)));
    // RTP with marker bit and PT 0 is not mistaken for RTCP.
    c.a.send(&rtp(0, true, 1, 160, 1), c.at_a);
    assert_eq!(c.b.recv().0, rtp(0, true, 1, 160, 1));
    // B's RTCP arrives on A's RTP port, from the relay's RTP port.
    c.b_rtcp.send(&rtcp_rr(2), rtcp_port(c.at_b));
    assert_eq!(c.a.recv(), (rtcp_rr(2), c.at_a));
    c.b.send(&rtp(0, false, 1, 160, 2), c.at_b);
    assert_eq!(c.a.recv(), (rtp(0, false, 1, 160, 2), c.at_a));
    // Figures are published just after the send: wait for them.
    c.stats_until(|s| {
        (s.from_a.rtcp_packets, s.from_b.rtcp_packets, s.from_a.packets, s.from_b.packets)
            == (1, 1, 1, 1)
    });
}

#[test]
fn relays_between_ipv4_and_ipv6() {
    let c = Call::new(V4, V6);
    assert!(c.at_a.is_ipv4() && c.at_b.is_ipv6());
    relay_stream(&c.a, c.at_a, &c.b, c.at_b, 100, 4);
    relay_stream(&c.b, c.at_b, &c.a, c.at_a, 100, 6);
    c.a_rtcp.send(&rtcp_rr(4), rtcp_port(c.at_a));
    assert_eq!(c.b_rtcp.recv(), (rtcp_rr(4), rtcp_port(c.at_b)));
    c.b_rtcp.send(&rtcp_rr(6), rtcp_port(c.at_b));
    assert_eq!(c.a_rtcp.recv(), (rtcp_rr(6), rtcp_port(c.at_a)));
    c.stats_until(|s| s.from_a.forwarded == 100 && s.from_b.forwarded == 100);
}

#[test]
fn malformed_and_unconfigured_traffic_is_dropped() {
    let relay = relay();
    let ports = relay.open(PairSpec { local_a: V4, local_b: V4 }).unwrap();
    let (a, b) = (Peer::new(V4), Peer::new(V4));
    let at_a = SocketAddr::new(V4, ports.a_rtp);
    // Waits until `n` drops (and `fwd` forwards) are published.
    let wait_for = |n: u64, fwd: u64| {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = relay.stats(ports.id).unwrap();
            if (s.from_a.dropped >= n && s.from_a.forwarded >= fwd) || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // Neither side configured: refused. (Each step waits for the worker before the next
    // configure, which would otherwise apply to the packet already queued.)
    a.send(&rtp(0, false, 1, 160, 1), at_a);
    wait_for(1, 0);
    relay.configure(
        ports.id,
        LegSide::A,
        &RemoteSpec { rtp: Some(a.addr()), ..RemoteSpec::default() },
    );
    // A configured, B not: accepted from A but nowhere to go.
    a.send(&rtp(0, false, 2, 320, 1), at_a);
    wait_for(2, 0);
    relay.configure(
        ports.id,
        LegSide::B,
        &RemoteSpec { rtp: Some(b.addr()), ..RemoteSpec::default() },
    );
    a.send(&[0x80, 0, 0, 3], at_a); // too short
    a.send(
        &{
            let mut p = rtp(0, false, 4, 640, 1);
            p[0] = 0x40;
            p
        },
        at_a,
    ); // version 1
    a.send(&[0u8; 0], at_a);
    a.send(&rtp(0, false, 5, 800, 1), at_a);
    assert_eq!(b.recv().0, rtp(0, false, 5, 800, 1));
    let s = wait_for(5, 1);
    assert_eq!(s.from_a.dropped, 5, "{s:?}");
    assert_eq!(s.from_a.packets, 2);
    assert_eq!(s.from_a.forwarded, 1);
    // Sequence 2 and 5 accepted: 3 and 4 count as lost.
    assert_eq!(s.from_a.lost, 2);
}

#[test]
fn exhausted_range_reports_no_ports_and_close_frees_them() {
    // Two RTP/RTCP pairs: exactly one call.
    let relay = relay_with(2, 1);
    let first = relay.open(PairSpec { local_a: V4, local_b: V4 }).unwrap();
    assert_eq!(first.a_rtp % 2, 0);
    assert_eq!(first.b_rtp % 2, 0);
    assert_ne!(first.a_rtp, first.b_rtp);
    assert_eq!(relay.open(PairSpec { local_a: V4, local_b: V4 }), Err(RelayError::NoPorts));
    assert_eq!(relay.pairs(), 1);
    relay.close(first.id).unwrap();
    let again = relay.open(PairSpec { local_a: V4, local_b: V6 }).unwrap();
    let mut ports = [again.a_rtp, again.b_rtp];
    ports.sort_unstable();
    let mut before = [first.a_rtp, first.b_rtp];
    before.sort_unstable();
    assert_eq!(ports, before, "the freed ports are handed out again");
    assert_ne!(again.id, first.id);
}

#[test]
fn a_failed_second_side_returns_the_first_sides_ports() {
    let relay = relay_with(2, 1);
    // 192.0.2.1 (TEST-NET-1) is not on this host: side B cannot bind.
    let bad = PairSpec { local_a: V4, local_b: "192.0.2.1".parse().unwrap() };
    assert!(matches!(relay.open(bad), Err(RelayError::Io(_))));
    assert!(relay.open(PairSpec { local_a: V4, local_b: V4 }).is_ok());
}

#[test]
fn close_returns_final_figures_and_forgets_the_pair() {
    let c = Call::new(V4, V4);
    relay_stream(&c.a, c.at_a, &c.b, c.at_b, 10, 1);
    c.a_rtcp.send(&rtcp_rr(1), rtcp_port(c.at_a));
    c.b_rtcp.recv();
    // No waiting on figures: close itself waits for the worker.
    let s = c.relay.close(c.id).unwrap();
    assert_eq!(s.from_a.packets, 10);
    assert_eq!(s.from_a.forwarded, 10);
    assert_eq!(s.from_a.rtcp_packets, 1);
    assert!(s.last_packet.is_some());
    assert_eq!(c.relay.stats(c.id), None);
    assert_eq!(c.relay.close(c.id), None);
    c.relay.configure(c.id, LegSide::A, &RemoteSpec::default()); // no effect, no panic
    // The sockets are closed: the ports bind again.
    assert!(UdpSocket::bind(c.at_a).is_ok());
    assert!(UdpSocket::bind(rtcp_port(c.at_b)).is_ok());
}

#[test]
fn pairs_are_spread_over_the_workers() {
    let relay = relay_with(8, 2);
    let spec = PairSpec { local_a: V4, local_b: V4 };
    let ids: Vec<_> = (0..4).map(|_| relay.open(spec).unwrap().id).collect();
    let control = relay.control();
    let mut load = control.load.clone();
    load.sort_unstable();
    assert_eq!(load, [2, 2]);
    assert_eq!(ids.len(), control.pairs.len());
}

#[test]
fn drop_stops_and_joins_the_workers() {
    let relay = relay_with(2, 2);
    assert_eq!(relay.workers(), 2);
    let alive: Vec<_> = relay.workers.iter().map(|w| w.alive.clone()).collect();
    assert!(alive.iter().all(|w| w.upgrade().is_some()));
    let ports = relay.open(PairSpec { local_a: V4, local_b: V4 }).unwrap();
    drop(relay);
    assert!(alive.iter().all(|w| w.upgrade().is_none()), "a worker thread is still running");
    // Its open pair was closed on the way out.
    assert!(UdpSocket::bind((V4, ports.a_rtp)).is_ok());
}

#[test]
fn shutdown_is_idempotent_and_keeps_the_last_figures() {
    let c = Call::new(V4, V4);
    relay_stream(&c.a, c.at_a, &c.b, c.at_b, 3, 1);
    c.stats_until(|s| s.from_a.forwarded == 3);
    c.relay.shutdown();
    c.relay.shutdown();
    assert_eq!(c.relay.stats(c.id).unwrap().from_a.forwarded, 3);
    assert!(matches!(
        c.relay.open(PairSpec { local_a: V4, local_b: V4 }),
        Err(RelayError::Io(_) | RelayError::NoPorts)
    ));
}

#[test]
fn config_is_checked() {
    let bad = |port_min, port_max, dscp| {
        Relay::start(RelayConfig { port_min, port_max, workers: 1, dscp }).unwrap_err().kind()
    };
    assert_eq!(bad(0, 100, None), io::ErrorKind::InvalidInput);
    assert_eq!(bad(30001, 30002, None), io::ErrorKind::InvalidInput);
    assert_eq!(bad(30000, 30001, Some(64)), io::ErrorKind::InvalidInput);
}

#[test]
fn sockets_carry_the_dscp() {
    use socket2::SockRef;
    let v4 = bind_socket(SocketAddr::new(V4, 0), Some(46)).unwrap();
    assert_eq!(SockRef::from(&v4).tos_v4().unwrap(), 46 << 2);
    let v6 = bind_socket(SocketAddr::new(V6, 0), Some(46)).unwrap();
    assert_eq!(SockRef::from(&v6).tclass_v6().unwrap(), 46 << 2);
    assert!(SockRef::from(&v6).only_v6().unwrap());
    let plain = bind_socket(SocketAddr::new(V4, 0), None).unwrap();
    assert_eq!(SockRef::from(&plain).tos_v4().unwrap(), 0);
    assert!(SockRef::from(&plain).recv_buffer_size().unwrap() >= 208 * 1024);
}

/// Relay throughput through one worker on loopback. Run with
/// `cargo test -p sbc-media --release -- --ignored --nocapture throughput`;
/// `RELAY_BENCH_PAIRS` (default 1) spreads the load over that many pairs.
#[test]
#[ignore = "benchmark: run on demand, in release mode"]
fn throughput_one_worker() {
    use std::os::fd::AsRawFd;

    use super::sys::{BATCH, Batch};

    let pairs: u16 =
        std::env::var("RELAY_BENCH_PAIRS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let secs: u64 =
        std::env::var("RELAY_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    // A range of its own below the test block, sized to the run (up to 2,500 pairs).
    let pairs = pairs.clamp(1, 2500);
    let config =
        RelayConfig { port_min: 10_000, port_max: 10_000 + 4 * pairs - 1, workers: 1, dscp: None };
    let relay = Relay::start(config).unwrap();
    let sender = UdpSocket::bind((V4, 0)).unwrap();
    let sink = UdpSocket::bind((V4, 0)).unwrap(); // never read: the kernel drops its overflow
    let mut targets = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..pairs {
        let p = relay.open(PairSpec { local_a: V4, local_b: V4 }).unwrap();
        let a = RemoteSpec { rtp: Some(sender.local_addr().unwrap()), ..RemoteSpec::default() };
        let b = RemoteSpec { rtp: Some(sink.local_addr().unwrap()), ..RemoteSpec::default() };
        relay.configure(p.id, LegSide::A, &a);
        relay.configure(p.id, LegSide::B, &b);
        targets.push(SocketAddr::new(V4, p.a_rtp));
        ids.push(p.id);
    }
    sender.set_nonblocking(true).unwrap();
    // The worker names its thread as it starts: wait for the name to appear.
    let named = Instant::now() + WAIT;
    let mut cpu_before = thread_cpu("media-0");
    while cpu_before.is_none() && Instant::now() < named {
        std::thread::sleep(Duration::from_millis(1));
        cpu_before = thread_cpu("media-0");
    }
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut batch = Batch::new();
    let mut seq = 0u16;
    let mut sent = 0u64;
    let start = Instant::now();
    let mut next = 0;
    while Instant::now() < stop {
        for i in 0..BATCH {
            seq = seq.wrapping_add(1);
            batch.stage(i, &rtp(0, false, seq, u32::from(seq) * 160, 1));
            batch.queue(i, 172, targets[next], 0);
            next = (next + 1) % targets.len();
        }
        let counts = batch.flush(sender.as_raw_fd());
        sent += u64::from(counts.sent[0]);
        if counts.failed[0] > 0 {
            std::thread::yield_now();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let the worker finish what is queued.
    std::thread::sleep(Duration::from_millis(50));
    let cpu = thread_cpu("media-0").zip(cpu_before).map(|(after, before)| after - before);
    let (mut forwarded, mut received) = (0, 0);
    for id in &ids {
        let s = relay.stats(*id).unwrap();
        forwarded += s.from_a.forwarded;
        received += s.from_a.packets;
    }
    let cpu = cpu.map_or(f64::NAN, |c| c.as_secs_f64());
    println!(
        "relay throughput, 1 worker, {pairs} pair(s), {elapsed:.1} s: offered {:.0} pkt/s, \
         relayed {:.0} pkt/s ({received} received, {forwarded} forwarded); worker CPU {cpu:.2} s \
         = {:.0} pkt per CPU-second",
        sent as f64 / elapsed,
        forwarded as f64 / elapsed,
        forwarded as f64 / cpu,
    );
    assert!(forwarded > 0);
}

/// Baseline for `throughput_one_worker`: the same load through a thread that forwards with one
/// `recv_from` and one `send_to` per packet and no checks, to show what batching buys.
#[test]
#[ignore = "benchmark: run on demand, in release mode"]
fn throughput_naive_baseline() {
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use super::sys::{BATCH, Batch};

    let secs: u64 =
        std::env::var("RELAY_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let a = bind_socket(SocketAddr::new(V4, 0), None).unwrap();
    let b = bind_socket(SocketAddr::new(V4, 0), None).unwrap();
    a.set_nonblocking(false).unwrap();
    a.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let at = a.local_addr().unwrap();
    let sink = UdpSocket::bind((V4, 0)).unwrap();
    let to = sink.local_addr().unwrap();
    let (stop, forwarded) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let thread = {
        let (stop, forwarded) = (Arc::clone(&stop), Arc::clone(&forwarded));
        std::thread::Builder::new()
            .name("naive-0".into())
            .spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, _)) = a.recv_from(&mut buf)
                        && b.send_to(&buf[..n], to).is_ok()
                    {
                        forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .unwrap()
    };
    let named = Instant::now() + WAIT;
    let mut cpu_before = thread_cpu("naive-0");
    while cpu_before.is_none() && Instant::now() < named {
        std::thread::sleep(Duration::from_millis(1));
        cpu_before = thread_cpu("naive-0");
    }
    let sender = UdpSocket::bind((V4, 0)).unwrap();
    sender.set_nonblocking(true).unwrap();
    let mut batch = Batch::new();
    let start = Instant::now();
    let mut seq = 0u16;
    while start.elapsed() < Duration::from_secs(secs) {
        for i in 0..BATCH {
            seq = seq.wrapping_add(1);
            batch.stage(i, &rtp(0, false, seq, u32::from(seq) * 160, 1));
            batch.queue(i, 172, at, 0);
        }
        if batch.flush(sender.as_raw_fd()).failed[0] > 0 {
            std::thread::yield_now();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = thread_cpu("naive-0").zip(cpu_before).map(|(after, before)| after - before);
    let done = forwarded.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    let cpu = cpu.map_or(f64::NAN, |c| c.as_secs_f64());
    println!(
        "naive forwarder (recv_from/send_to), {elapsed:.1} s: relayed {:.0} pkt/s; \
         thread CPU {cpu:.2} s = {:.0} pkt per CPU-second",
        done as f64 / elapsed,
        done as f64 / cpu,
    );
}

/// CPU time (user + system) of this process's thread named `name`, from /proc.
fn thread_cpu(name: &str) -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        if std::fs::read_to_string(dir.join("comm")).ok()?.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // /proc reports in USER_HZ, which is 100 on Linux.
        return Some(Duration::from_millis(ticks * 10));
    }
    None
}

/// Records what a tap was given.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<(SocketAddr, SocketAddr, Vec<u8>)>>,
}

impl PacketTap for Recorder {
    fn packet(&self, _at: std::time::SystemTime, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        self.seen.lock().unwrap().push((from, to, data.to_vec()));
    }
}

#[test]
fn a_tapped_pair_shows_each_packet_as_received_and_as_sent() {
    let call = Call::new(V4, V4_OTHER);
    let tap = Arc::new(Recorder::default());
    // Untapped: nothing recorded.
    call.a.send(&rtp(8, false, 1, 160, 7), call.at_a);
    call.b.recv();
    call.relay.tap(call.id, Some(Arc::clone(&tap) as Arc<dyn PacketTap>));
    let p = rtp(8, false, 2, 320, 7);
    call.a.send(&p, call.at_a);
    assert_eq!(call.b.recv().0, p);
    let seen = tap.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![(call.a.addr(), call.at_a, p.clone()), (call.at_b, call.b.addr(), p.clone())]
    );
    // Removed: nothing more.
    call.relay.tap(call.id, None);
    call.a.send(&rtp(8, false, 3, 480, 7), call.at_a);
    call.b.recv();
    assert_eq!(tap.seen.lock().unwrap().len(), 2);
}

/// A browser on loopback: ICE checks, DTLS client, SRTP, over its own UDP socket.
struct Browser {
    sock: UdpSocket,
    peer: crate::secure::tests::Peer,
    srtp: Option<crate::secure::srtp::SrtpPair>,
}

impl Browser {
    fn new(relay_at: SocketAddr) -> Browser {
        let sock = UdpSocket::bind((V4, 0)).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        let mut peer = crate::secure::tests::Peer::new(true);
        peer.sbc = relay_at;
        Browser { sock, peer, srtp: None }
    }

    fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// The SBC side's description of this browser, expecting `fingerprint`.
    fn remote(&self, fingerprint: crate::backend::Fingerprint) -> RemoteSpec {
        use crate::backend::{DtlsRole, DtlsSpec, Security};
        let creds = crate::secure::tests::creds();
        let dtls = DtlsSpec {
            role: DtlsRole::Server,
            remote_fingerprints: vec![fingerprint],
            ice: Some(creds),
        };
        RemoteSpec {
            rtp: Some(self.addr()),
            security: Security::Dtls(dtls),
            ..RemoteSpec::default()
        }
    }

    fn recv(&self) -> Vec<u8> {
        let mut buf = [0u8; 2048];
        let (n, from) = self.sock.recv_from(&mut buf).expect("the browser received nothing");
        assert_eq!(from, self.peer.sbc);
        buf[..n].to_vec()
    }

    /// One valid check (answered), then the DTLS handshake as client, as Chrome does it.
    fn connect(&mut self) {
        use rtc_stun::message::{BINDING_SUCCESS, Message};
        let check = crate::secure::tests::check("sbcU:brwsr", "sbc-password-0123456789", true);
        self.sock.send_to(&check, self.peer.sbc).unwrap();
        let mut resp = Message::new();
        resp.raw = self.recv();
        resp.decode().unwrap();
        assert_eq!(resp.typ, BINDING_SUCCESS);
        let now = Instant::now();
        let config = Arc::clone(&self.peer.config);
        self.peer.endpoint.connect(now, self.peer.sbc, config, None).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut done = false;
        while !done {
            assert!(Instant::now() < deadline, "the DTLS handshake did not complete");
            while let Some(t) = self.peer.endpoint.poll_transmit() {
                self.sock.send_to(&t.message, self.peer.sbc).unwrap();
            }
            let data = self.recv();
            let events = self
                .peer
                .endpoint
                .read(Instant::now(), self.peer.sbc, None, bytes::BytesMut::from(&data[..]))
                .unwrap();
            done = events
                .iter()
                .any(|e| matches!(e, rtc_dtls::endpoint::EndpointEvent::HandshakeComplete));
        }
        // The last flight (if any) still goes out.
        while let Some(t) = self.peer.endpoint.poll_transmit() {
            self.sock.send_to(&t.message, self.peer.sbc).unwrap();
        }
        self.srtp = Some(self.peer.srtp(true).0);
    }

    fn send_rtp(&mut self, plain: &[u8]) {
        let mut buf = plain.to_vec();
        buf.resize(2048, 0);
        let n = self.srtp.as_mut().unwrap().protect(false, &mut buf, plain.len()).unwrap();
        self.sock.send_to(&buf[..n], self.peer.sbc).unwrap();
    }

    fn recv_rtp(&mut self) -> Vec<u8> {
        let mut data = self.recv();
        let n = self.srtp.as_mut().unwrap().unprotect(false, &mut data).expect("SRTP from the SBC");
        data.truncate(n);
        data
    }
}

#[test]
fn dtls_srtp_side_bridges_to_a_plain_side_and_a_bad_fingerprint_fails_alone() {
    // One worker: both calls share it, so the failing one must not disturb the other.
    let relay = relay_with(4, 1);
    let fp = relay.dtls_fingerprint().unwrap();
    assert!(fp.starts_with("sha-256 ") && fp.len() == 8 + 95, "{fp}");
    let open = || {
        let p = relay.open(PairSpec { local_a: V4, local_b: V4 }).unwrap();
        (p.id, SocketAddr::new(V4, p.a_rtp), SocketAddr::new(V4, p.b_rtp))
    };
    let (good, good_a, good_b) = open();
    let (bad, bad_a, bad_b) = open();
    let mut browser = Browser::new(good_a);
    let mut intruder = Browser::new(bad_a);
    let (trunk, trunk_rtcp) = (Peer::new(V4), Peer::new(V4));
    let (trunk2, trunk2_rtcp) = (Peer::new(V4), Peer::new(V4));
    relay.configure(good, LegSide::A, &browser.remote(browser.peer.fingerprint.clone()));
    relay.configure(good, LegSide::B, &remote(&trunk, &trunk_rtcp));
    let mut wrong = intruder.peer.fingerprint.clone();
    wrong.digest[31] ^= 1;
    relay.configure(bad, LegSide::A, &intruder.remote(wrong));
    relay.configure(bad, LegSide::B, &remote(&trunk2, &trunk2_rtcp));

    // Before the handshake nothing reaches the browser, and plain RTP toward it is dropped.
    trunk.send(&rtp(0, false, 1, 160, 7), good_b);
    browser.connect();
    // Browser -> trunk: decrypted. Trunk -> browser: encrypted.
    for seq in 1..=20 {
        let plain = rtp(0, false, seq, u32::from(seq) * 160, 0xabcd);
        browser.send_rtp(&plain);
        let (got, from) = trunk.recv();
        assert_eq!((got, from), (plain, good_b));
        let back = rtp(0, false, seq, u32::from(seq) * 160, 0x7777);
        trunk.send(&back, good_b);
        assert_eq!(browser.recv_rtp(), back);
    }
    // A packet with a bad tag is dropped, the next good one passes.
    let plain = rtp(0, false, 30, 4800, 0xabcd);
    let mut buf = plain.clone();
    buf.resize(2048, 0);
    let n = browser.srtp.as_mut().unwrap().protect(false, &mut buf, plain.len()).unwrap();
    buf[n - 1] ^= 0x80;
    browser.sock.send_to(&buf[..n], good_a).unwrap();
    let next = rtp(0, false, 31, 4960, 0xabcd);
    browser.send_rtp(&next);
    assert_eq!(trunk.recv().0, next, "the forged packet never reached the trunk");

    // A check with a wrong password, from another address, gets no answer and moves nothing:
    // media still goes to the browser.
    let bad_check = crate::secure::tests::check("sbcU:brwsr", "wrong-password", true);
    intruder.sock.send_to(&bad_check, good_a).unwrap();
    let back = rtp(0, false, 32, 5120, 0x7777);
    trunk.send(&back, good_b);
    assert_eq!(browser.recv_rtp(), back);

    // The intruder completes DTLS with a certificate its SDP did not announce.
    intruder.connect();
    let s = relay_stats_until(&relay, bad, |s| s.failure.is_some());
    assert_eq!(s.failure, Some(crate::backend::MediaFailure::FingerprintMismatch(LegSide::A)));
    intruder.send_rtp(&rtp(0, false, 1, 160, 0x5555));
    trunk2.send(&rtp(0, false, 1, 160, 0x6666), bad_b);
    // The good call still works both ways...
    let plain = rtp(0, false, 40, 6400, 0xabcd);
    browser.send_rtp(&plain);
    assert_eq!(trunk.recv().0, plain);
    let back = rtp(0, false, 41, 6560, 0x7777);
    trunk.send(&back, good_b);
    assert_eq!(browser.recv_rtp(), back);
    assert_eq!(relay.stats(good).unwrap().failure, None);
    // ... and nothing crossed the failed one.
    for p in [&trunk2.sock, &intruder.sock] {
        p.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 2048];
        assert!(p.recv_from(&mut buf).is_err(), "media crossed a failed pair");
    }
    let s = relay.stats(bad).unwrap();
    assert_eq!(s.from_a.forwarded + s.from_b.forwarded, 0);
}

fn relay_stats_until(relay: &Relay, id: PairId, ok: impl Fn(&PairStats) -> bool) -> PairStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = relay.stats(id).unwrap();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "figures never matched: {s:#?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_dtls_client_side_sends_its_hello_at_once_and_retransmits_on_the_workers_timer() {
    use crate::backend::{DtlsRole, DtlsSpec, Fingerprint, Security};
    let call = Call::new(V4, V4);
    let server = Peer::new(V4);
    let dtls = DtlsSpec {
        role: DtlsRole::Client,
        remote_fingerprints: vec![Fingerprint { algorithm: "sha-256".into(), digest: vec![0; 32] }],
        ice: None,
    };
    let spec = RemoteSpec {
        rtp: Some(server.addr()),
        security: Security::Dtls(dtls),
        ..RemoteSpec::default()
    };
    call.configure(LegSide::A, spec);
    // Without ICE the ClientHello goes to the SDP address at configure, from the RTP port.
    let (hello, from) = server.recv();
    assert_eq!((hello[0], from), (22, call.at_a));
    // Nobody answers: rtc-dtls retransmits after its first interval (1 s), which only the
    // worker's deadline heap can trigger (no packet arrives to wake it).
    let t = Instant::now();
    let (again, from) = server.recv();
    assert_eq!((again[0], from), (22, call.at_a));
    assert!(t.elapsed() >= Duration::from_millis(500), "a retransmission, not a duplicate");
    assert_eq!(call.relay.stats(call.id).unwrap().failure, None);
}

/// Side A as an SDES-SRTP phone (AES_CM_128_HMAC_SHA1_80, fixed keys): its remote spec, to
/// configure (after any change), and the phone's own SRTP contexts.
fn sdes_phone_on_a(call: &Call) -> (RemoteSpec, crate::secure::srtp::SrtpPair) {
    use crate::backend::{SdesKeys, Security, SrtpProfile};
    let phone_key: Vec<u8> = (0..30).collect();
    let sbc_key: Vec<u8> = (50..80).collect();
    let provider = rtc_dtls::crypto_provider::default_provider().unwrap();
    let phone = crate::secure::srtp::SrtpPair::new(
        SrtpProfile::Aes128CmHmacSha1_80,
        &phone_key,
        &sbc_key,
        provider.crypto(),
    )
    .unwrap();
    let keys =
        SdesKeys { profile: SrtpProfile::Aes128CmHmacSha1_80, local: sbc_key, remote: phone_key };
    let spec = RemoteSpec { security: Security::Sdes(keys), ..remote(&call.a, &call.a_rtcp) };
    (spec, phone)
}

#[test]
fn an_sdes_phone_bridges_to_a_plain_trunk_with_separate_rtcp() {
    use crate::secure::srtp::SrtpPair;
    let call = Call::new(V4, V4);
    let (spec, mut phone) = sdes_phone_on_a(&call);
    call.configure(LegSide::A, spec);
    let seal = |ctx: &mut SrtpPair, rtcp: bool, plain: &[u8]| {
        let mut buf = plain.to_vec();
        buf.resize(2048, 0);
        let n = ctx.protect(rtcp, &mut buf, plain.len()).unwrap();
        buf.truncate(n);
        buf
    };
    // Phone -> trunk, RTP and SRTCP on the RTCP port.
    let plain = rtp(0, false, 1, 160, 0x1111);
    call.a.send(&seal(&mut phone, false, &plain), call.at_a);
    assert_eq!(call.b.recv().0, plain);
    let rr = rtcp_rr(0x1111);
    call.a_rtcp.send(&seal(&mut phone, true, &rr), rtcp_port(call.at_a));
    assert_eq!(call.b_rtcp.recv().0, rr);
    // A forged packet is dropped; the next good one passes.
    let mut forged = seal(&mut phone, false, &rtp(0, false, 2, 320, 0x1111));
    let last = forged.len() - 1;
    forged[last] ^= 1;
    call.a.send(&forged, call.at_a);
    let next = rtp(0, false, 3, 480, 0x1111);
    call.a.send(&seal(&mut phone, false, &next), call.at_a);
    assert_eq!(call.b.recv().0, next);
    // Trunk -> phone: protected with the SBC's key, RTCP to the phone's RTCP port.
    let back = rtp(0, false, 9, 1440, 0x2222);
    call.b.send(&back, call.at_b);
    let (mut got, _) = call.a.recv();
    assert_ne!(got, back);
    let n = phone.unprotect(false, &mut got).unwrap();
    assert_eq!(&got[..n], &back[..]);
    call.b_rtcp.send(&rtcp_rr(0x2222), rtcp_port(call.at_b));
    let (mut got, _) = call.a_rtcp.recv();
    let n = phone.unprotect(true, &mut got).unwrap();
    assert_eq!(&got[..n], &rtcp_rr(0x2222)[..]);
    let s = call.stats_until(|s| s.from_a.dropped >= 1);
    assert_eq!(s.from_a.packets, 2);
}

/// Goertzel power of `freq` in 8 kHz samples, normalised by the length.
fn goertzel(x: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64).powi(2)
}

fn assert_1khz(pcm: &[i16]) {
    let tone = goertzel(pcm, 1000.0);
    for other in [500.0, 1500.0, 2500.0] {
        assert!(tone > 100.0 * goertzel(pcm, other), "no 1 kHz tone ({tone} vs {other} Hz)");
    }
}

fn tone(rate: u32, k: usize, n: usize) -> Vec<i16> {
    (k * n..(k + 1) * n)
        .map(|i| {
            (6000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / f64::from(rate)).sin())
                as i16
        })
        .collect()
}

fn rtp_with(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = rtp(pt, seq == 0, seq, ts, ssrc);
    p.truncate(12);
    p.extend_from_slice(payload);
    p
}

/// A transcoded call: A is the browser (Opus 111), B the trunk (PCMU); `fec_to_browser`: the
/// browser decodes in-band FEC.
fn browser_and_trunk(fec_to_browser: bool) -> Call {
    use crate::backend::{CodecSpec, Transcode};
    let opus = CodecSpec { name: "opus".into(), payload_type: 111, clock_rate: 48000, channels: 2 };
    let pcmu = CodecSpec { name: "PCMU".into(), payload_type: 0, clock_rate: 8000, channels: 1 };
    let c = Call::new(V4, V4);
    let a_to_b = Transcode {
        from: opus.clone(),
        to: pcmu.clone(),
        dtmf_from: None,
        dtmf_to: None,
        fec_to: false,
    };
    let b_to_a =
        Transcode { from: pcmu, to: opus, dtmf_from: None, dtmf_to: None, fec_to: fec_to_browser };
    c.configure(LegSide::A, RemoteSpec { transcode: Some(a_to_b), ..remote(&c.a, &c.a_rtcp) });
    c.configure(LegSide::B, RemoteSpec { transcode: Some(b_to_a), ..remote(&c.b, &c.b_rtcp) });
    c
}

#[test]
fn transcodes_pcmu_to_opus_and_back_over_loopback() {
    use crate::transcode::g711;
    use opusic_c::{Application, Channels, SampleRate};

    let c = browser_and_trunk(false);

    // B -> A: 40 PCMU packets of a 1 kHz tone arrive as 40 Opus packets at 48 kHz timestamps.
    let mut dec = opusic_c::Decoder::new(Channels::Mono, SampleRate::Hz8000).unwrap();
    let mut heard = Vec::new();
    let mut last: Option<(u16, u32, u32)> = None;
    for k in 0..40usize {
        let payload: Vec<u8> = tone(8000, k, 160).iter().map(|&s| g711::ulaw_encode(s)).collect();
        c.b.send(&rtp_with(0, k as u16, 160 * k as u32, 0xb0b, &payload), c.at_b);
        let (got, src) = c.a.recv();
        assert_eq!(src, c.at_a);
        assert_eq!(got[1] & 0x7f, 111);
        let seq = u16::from_be_bytes([got[2], got[3]]);
        let ts = u32::from_be_bytes([got[4], got[5], got[6], got[7]]);
        let ssrc = u32::from_be_bytes([got[8], got[9], got[10], got[11]]);
        assert_ne!(ssrc, 0xb0b, "the transcoded stream has its own SSRC");
        if let Some((s0, t0, x0)) = last {
            assert_eq!((seq, ts, ssrc), (s0.wrapping_add(1), t0.wrapping_add(960), x0));
        }
        last = Some((seq, ts, ssrc));
        let mut pcm = [0u16; 960];
        let n = dec.decode_to_slice(&got[12..], &mut pcm, false).unwrap();
        heard.extend(pcm[..n].iter().map(|&s| s as i16));
    }
    assert_1khz(&heard[1600..]);

    // A -> B: Opus from a 48 kHz encoder (as a browser sends) arrives as PCMU.
    let mut enc =
        opusic_c::Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip).unwrap();
    let mut heard = Vec::new();
    for k in 0..40usize {
        let pcm: Vec<u16> = tone(48000, k, 960).iter().map(|&s| s as u16).collect();
        let mut buf = [0u8; 400];
        let len = enc.encode_to_slice(&pcm, &mut buf).unwrap();
        c.a.send(&rtp_with(111, k as u16, 960 * k as u32, 0xa0a, &buf[..len]), c.at_a);
        let (got, src) = c.b.recv();
        assert_eq!(src, c.at_b);
        assert_eq!((got[1] & 0x7f, got.len()), (0, 12 + 160));
        heard.extend(got[12..].iter().map(|&b| g711::ulaw_decode(b)));
    }
    assert_1khz(&heard[1600..]);

    // RTCP is not carried across: B's report stays at the SBC (A may get the SBC's own).
    c.b_rtcp.send(&rtcp_rr(0xb0b), rtcp_port(c.at_b));
    let s = c.stats_until(|s| s.from_b.rtcp_packets == 1);
    c.a_rtcp.sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 256];
    while let Ok((n, _)) = c.a_rtcp.sock.recv_from(&mut buf) {
        assert_ne!(buf[..n], rtcp_rr(0xb0b)[..], "RTCP crossed a transcoded pair");
    }
    // Figures stay those of each received leg.
    assert_eq!((s.from_b.packets, s.from_b.forwarded, s.from_b.dropped), (40, 40, 0));
    assert_eq!((s.from_a.packets, s.from_a.forwarded), (40, 40));
}

#[test]
fn the_browsers_loss_reports_turn_fec_on_toward_it() {
    use crate::transcode::g711;

    // The browser decodes in-band FEC (useinbandfec=1).
    let c = browser_and_trunk(true);
    // Sends PCMU packets `range` from B; the Opus packets A got, and how many carry FEC.
    let send = |range: std::ops::Range<usize>| {
        let mut with_fec = 0;
        let mut ssrc = 0;
        for k in range {
            let payload: Vec<u8> =
                tone(8000, k, 160).iter().map(|&s| g711::ulaw_encode(s)).collect();
            c.b.send(&rtp_with(0, k as u16, 160 * k as u32, 0xb0b, &payload), c.at_b);
            let (got, _) = c.a.recv();
            ssrc = u32::from_be_bytes([got[8], got[9], got[10], got[11]]);
            with_fec += usize::from(crate::transcode::opus_has_lbrr(&got[12..]));
        }
        (ssrc, with_fec)
    };
    let (ssrc, with_fec) = send(0..10);
    assert_eq!(with_fec, 0, "no loss reported: no FEC");

    // The browser's receiver report on the SBC's stream: 10 % lost (26/256).
    let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0x0a, 0x0a];
    rr.extend(ssrc.to_be_bytes());
    rr.push(26);
    rr.extend([0; 19]);
    c.a_rtcp.send(&rr, rtcp_port(c.at_a));
    c.stats_until(|s| s.from_a.rtcp_packets == 1);
    let (_, with_fec) = send(10..20);
    assert!(with_fec >= 9, "FEC in {with_fec} of 10 packets after the report");
}

/// The next datagram on `peer` that is an RTCP sender report (the SBC's first comes 1.25-3.75 s
/// after the pair became transcoded).
fn sender_report(peer: &Peer) -> Vec<u8> {
    peer.sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    loop {
        let (got, _) = peer.recv();
        if got.get(1) == Some(&200) {
            return got;
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn a_transcoded_pair_sends_its_own_sender_reports_to_both_peers() {
    use crate::transcode::g711;
    use opusic_c::{Application, Channels, SampleRate};

    let c = browser_and_trunk(false);
    // B's peer sends 20 PCMU packets; A's peer gets 20 Opus packets of the SBC's stream.
    let mut to_a = (0, 0);
    for k in 0..20usize {
        let payload: Vec<u8> = tone(8000, k, 160).iter().map(|&s| g711::ulaw_encode(s)).collect();
        c.b.send(&rtp_with(0, k as u16, 160 * k as u32, 0xb0b, &payload), c.at_b);
        let (got, _) = c.a.recv();
        to_a = (be32(&got, 8), to_a.1 + got.len() as u32 - 12);
    }
    // A's peer sends 20 Opus packets, of which the 6th is lost; B's peer gets PCMU.
    let mut enc =
        opusic_c::Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip).unwrap();
    let mut to_b = 0;
    for k in 0..20usize {
        let pcm: Vec<u16> = tone(48000, k, 960).iter().map(|&s| s as u16).collect();
        let mut buf = [0u8; 400];
        let len = enc.encode_to_slice(&pcm, &mut buf).unwrap();
        if k != 5 {
            c.a.send(&rtp_with(111, k as u16, 960 * k as u32, 0xa0a, &buf[..len]), c.at_a);
        }
        // The lost packet is concealed when the next one arrives: 20 PCMU packets in all.
        let expected = match k {
            5 => 0,
            6 => 2,
            _ => 1,
        };
        for _ in 0..expected {
            to_b = be32(&c.b.recv().0, 8);
        }
    }
    // B's peer sends a sender report (NTP 0x0102030405060708): the SBC's report echoes it.
    let mut sr = vec![0x80, 200, 0, 6, 0, 0, 0x0b, 0x0b, 1, 2, 3, 4, 5, 6, 7, 8];
    sr.extend([0; 12]);
    c.b_rtcp.send(&sr, rtcp_port(c.at_b));
    c.stats_until(|s| s.from_b.rtcp_packets == 1);

    // Toward A (the browser): an SR on the Opus stream, with a block on A's own stream.
    let report = sender_report(&c.a_rtcp);
    assert_eq!(report[0] & 0x1f, 1, "one report block");
    assert_eq!(be32(&report, 4), to_a.0, "the SSRC of the stream A receives");
    assert_eq!((be32(&report, 20), be32(&report, 24)), (20, to_a.1), "packets, payload octets");
    assert_eq!(be32(&report, 28), 0xa0a, "the block is on A's stream");
    assert_eq!(be32(&report, 32) & 0xff_ffff, 1, "one packet of A's lost");
    assert_eq!(be32(&report, 36), 19, "highest sequence number");
    assert_eq!(report[53], 202, "then the SDES");

    // Toward B (the trunk): an SR on the PCMU stream, LSR from B's sender report.
    let report = sender_report(&c.b_rtcp);
    assert_eq!(be32(&report, 4), to_b);
    assert_eq!((be32(&report, 20), be32(&report, 24)), (20, 20 * 160));
    assert_eq!(be32(&report, 28), 0xb0b);
    assert_eq!((be32(&report, 32) & 0xff_ffff, be32(&report, 36)), (0, 19));
    assert_eq!(be32(&report, 44), 0x0304_0506, "LSR");
    assert!(be32(&report, 48) > 0, "DLSR counts the time since B's report");

    // The pair closes: each peer gets a last report ending with a BYE for the SBC's stream.
    c.relay.close(c.id);
    for (peer, ssrc) in [(&c.a_rtcp, to_a.0), (&c.b_rtcp, to_b)] {
        // A periodic report may come first; the last one ends with the BYE.
        let ends_with_bye = |p: &Vec<u8>| p.len() >= 8 && p[p.len() - 7] == 203;
        let last = std::iter::repeat_with(|| peer.recv().0).find(ends_with_bye).unwrap();
        let bye = &last[last.len() - 8..];
        assert_eq!((bye[0], bye[1], be32(bye, 4)), (0x81, 203, ssrc), "{last:02x?}");
    }
}

/// A telephone-event packet (RFC 4733): event, E bit, volume 10, duration.
fn event_rtp(seq: u16, ts: u32, ssrc: u32, event: u8, end: bool, duration: u16) -> Vec<u8> {
    let mut p = vec![0x80, 101];
    p.extend(seq.to_be_bytes());
    p.extend(ts.to_be_bytes());
    p.extend(ssrc.to_be_bytes());
    p.extend([event, if end { 0x8a } else { 0x0a }]);
    p.extend(duration.to_be_bytes());
    p
}

fn seq_of(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

#[test]
fn interworking_side_turns_events_into_key_presses_and_keeps_the_stream_gapless() {
    use crate::dtmf::{DtmfEvent, TelephoneEvents};
    let c = Call::new(V4, V4);
    let events = TelephoneEvents { from_peer: 101, to_peer: 101, clock_rate: 8000 };
    c.configure(
        LegSide::A,
        RemoteSpec { telephone_events: Some(events), ..remote(&c.a, &c.a_rtcp) },
    );
    // Peer A: audio 0..2, key 7 (start, update, three ends: one key press), audio 3.
    c.a.send(&rtp(0, false, 0, 0, 0xa), c.at_a);
    c.a.send(&rtp(0, false, 1, 160, 0xa), c.at_a);
    c.a.send(&event_rtp(2, 320, 0xa, 7, false, 160), c.at_a);
    c.a.send(&event_rtp(3, 320, 0xa, 7, false, 320), c.at_a);
    for s in 4..7 {
        c.a.send(&event_rtp(s, 320, 0xa, 7, true, 800), c.at_a);
    }
    c.a.send(&rtp(0, false, 7, 1120, 0xa), c.at_a);
    // B gets the audio only, numbered without a gap.
    let got: Vec<u16> = (0..3).map(|_| seq_of(&c.b.recv().0)).collect();
    assert_eq!(got, vec![0, 1, 2]);
    let deadline = Instant::now() + WAIT;
    let detected = loop {
        if let Some(d) = c.relay.poll_dtmf(c.id) {
            break d;
        }
        assert!(Instant::now() < deadline, "no key press reported");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(detected, (LegSide::A, DtmfEvent { event: 7, duration_ms: 100 }));
    assert_eq!(c.relay.poll_dtmf(c.id), None, "one key press, one report");

    // The other way: B's stream toward A, then a digit played into it.
    c.b.send(&rtp(0, false, 100, 8000, 0xb), c.at_b);
    assert_eq!(seq_of(&c.a.recv().0), 100);
    c.relay.send_dtmf(c.id, LegSide::A, DtmfEvent { event: 5, duration_ms: 100 });
    let mut played = Vec::new();
    while played.len() < 5 {
        let (p, src) = c.a.recv();
        assert_eq!(src, c.at_a);
        played.push(p);
    }
    let start = &played[0];
    assert_eq!(start[1], 0x80 | 101, "start packet: marker and the event payload type");
    assert_eq!(&start[8..12], &0xbu32.to_be_bytes(), "the SSRC of the stream A receives");
    let ts = u32::from_be_bytes([start[4], start[5], start[6], start[7]]);
    assert!((8000..8000 + 8 * 500).contains(&ts), "timestamp follows the stream: {ts}");
    for (k, p) in played.iter().enumerate() {
        assert_eq!(seq_of(p), 101 + k as u16);
        assert_eq!(p[12], 5);
        assert_eq!(&p[4..8], &start[4..8]);
    }
    let ends: Vec<&Vec<u8>> = played.iter().filter(|p| p[13] & 0x80 != 0).collect();
    assert_eq!(ends.len(), 3);
    assert_eq!(u16::from_be_bytes([ends[0][14], ends[0][15]]), 800);
    // Start, one update at 50 ms, three ends at 100 ms; B's next packet continues after them.
    c.b.send(&rtp(0, false, 101, 8160, 0xb), c.at_b);
    assert_eq!(seq_of(&c.a.recv().0), 106);
}

#[test]
fn interworking_on_an_sdes_side_unprotects_events_and_protects_injected_digits() {
    use crate::dtmf::{DtmfEvent, TelephoneEvents};
    use crate::secure::srtp::SrtpPair;
    let c = Call::new(V4, V4);
    let (mut spec, mut phone) = sdes_phone_on_a(&c);
    spec.telephone_events =
        Some(TelephoneEvents { from_peer: 101, to_peer: 101, clock_rate: 8000 });
    c.configure(LegSide::A, spec);
    let seal = |ctx: &mut SrtpPair, plain: &[u8]| {
        let mut buf = plain.to_vec();
        buf.resize(2048, 0);
        let n = ctx.protect(false, &mut buf, plain.len()).unwrap();
        buf.truncate(n);
        buf
    };
    // The phone's SRTP key press (start, end x3) is detected; only its audio reaches the trunk.
    c.a.send(&seal(&mut phone, &event_rtp(1, 160, 0xa, 9, false, 160)), c.at_a);
    for s in 2..5 {
        c.a.send(&seal(&mut phone, &event_rtp(s, 160, 0xa, 9, true, 480)), c.at_a);
    }
    c.a.send(&seal(&mut phone, &rtp(0, false, 5, 640, 0xa)), c.at_a);
    assert_eq!(seq_of(&c.b.recv().0), 1, "the audio, numbered after the consumed events");
    let deadline = Instant::now() + WAIT;
    let detected = loop {
        if let Some(d) = c.relay.poll_dtmf(c.id) {
            break d;
        }
        assert!(Instant::now() < deadline, "no key press reported");
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(detected, (LegSide::A, DtmfEvent { event: 9, duration_ms: 60 }));
    // The trunk's stream toward the phone, then a digit: protected with the SBC's key.
    c.b.send(&rtp(0, false, 40, 6400, 0xb), c.at_b);
    let (mut got, _) = c.a.recv();
    let n = phone.unprotect(false, &mut got).unwrap();
    assert_eq!(seq_of(&got[..n]), 40);
    c.relay.send_dtmf(c.id, LegSide::A, DtmfEvent { event: 0, duration_ms: 40 });
    for k in 0..4u16 {
        let (mut got, _) = c.a.recv();
        let n = phone.unprotect(false, &mut got).expect("SRTP from the SBC");
        let p = &got[..n];
        assert_eq!(n, 16);
        assert_eq!((p[1] & 0x7f, seq_of(p), p[12]), (101, 41 + k, 0));
        assert_eq!(&p[8..12], &0xbu32.to_be_bytes());
    }
}

#[test]
fn a_pair_closed_while_a_digit_plays_ends_cleanly() {
    use crate::dtmf::{DtmfEvent, TelephoneEvents};
    let c = Call::new(V4, V4);
    let events = TelephoneEvents { from_peer: 101, to_peer: 101, clock_rate: 8000 };
    c.configure(
        LegSide::A,
        RemoteSpec { telephone_events: Some(events), ..remote(&c.a, &c.a_rtcp) },
    );
    c.b.send(&rtp(0, false, 1, 160, 0xb), c.at_b);
    c.a.recv();
    c.relay.send_dtmf(c.id, LegSide::A, DtmfEvent { event: 3, duration_ms: 5000 });
    let (start, _) = c.a.recv();
    assert_eq!(start[1], 0x80 | 101);
    // Digits toward the side without telephone events are refused by the worker, not played.
    c.relay.send_dtmf(c.id, LegSide::B, DtmfEvent { event: 3, duration_ms: 100 });
    assert!(c.relay.close(c.id).is_some());
    assert_eq!(c.relay.poll_dtmf(c.id), None, "a closed pair reports nothing");
    c.relay.send_dtmf(c.id, LegSide::A, DtmfEvent { event: 4, duration_ms: 100 });
    // The worker goes on serving other pairs.
    let other = c.relay.open(PairSpec { local_a: V4, local_b: V4 }).unwrap();
    let (pa, pb) = (Peer::new(V4), Peer::new(V4));
    c.relay.configure(
        other.id,
        LegSide::A,
        &RemoteSpec { rtp: Some(pa.addr()), ..RemoteSpec::default() },
    );
    c.relay.configure(
        other.id,
        LegSide::B,
        &RemoteSpec { rtp: Some(pb.addr()), ..RemoteSpec::default() },
    );
    pa.send(&rtp(0, false, 7, 0, 0xc), SocketAddr::new(V4, other.a_rtp));
    assert_eq!(seq_of(&pb.recv().0), 7);
}

#[test]
fn a_key_press_whose_ends_were_lost_is_reported_after_the_timeout() {
    use crate::dtmf::{DtmfEvent, END_TIMEOUT, TelephoneEvents};
    let c = Call::new(V4, V4);
    let events = TelephoneEvents { from_peer: 101, to_peer: 101, clock_rate: 8000 };
    c.configure(
        LegSide::A,
        RemoteSpec { telephone_events: Some(events), ..remote(&c.a, &c.a_rtcp) },
    );
    // Key 3: start and one update, then nothing (the three end packets are lost).
    let sent = Instant::now();
    c.a.send(&event_rtp(0, 320, 0xa, 3, false, 160), c.at_a);
    c.a.send(&event_rtp(1, 320, 0xa, 3, false, 480), c.at_a);
    let deadline = sent + END_TIMEOUT + WAIT;
    let detected = loop {
        if let Some(d) = c.relay.poll_dtmf(c.id) {
            break d;
        }
        assert!(Instant::now() < deadline, "the key press was never reported");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(sent.elapsed() >= END_TIMEOUT, "reported before the timeout");
    assert_eq!(detected, (LegSide::A, DtmfEvent { event: 3, duration_ms: 60 }));
    assert_eq!(c.relay.poll_dtmf(c.id), None);
}

#[test]
fn a_refused_offer_brings_back_the_dtls_association_it_replaced() {
    let relay = relay_with(2, 1);
    let p = relay.open(PairSpec { local_a: V4, local_b: V4 }).unwrap();
    let (at_a, at_b) = (SocketAddr::new(V4, p.a_rtp), SocketAddr::new(V4, p.b_rtp));
    let mut browser = Browser::new(at_a);
    let (trunk, trunk_rtcp) = (Peer::new(V4), Peer::new(V4));
    let old = browser.remote(browser.peer.fingerprint.clone());
    relay.configure(p.id, LegSide::A, &old);
    relay.configure(p.id, LegSide::B, &remote(&trunk, &trunk_rtcp));
    browser.connect();
    let plain = rtp(0, false, 1, 160, 0xabcd);
    browser.send_rtp(&plain);
    assert_eq!(trunk.recv().0, plain);

    // A re-offer with another certificate: the relay sets up a new association at once, which
    // the browser's packets (still under the old one) do not pass.
    let mut other = browser.peer.fingerprint.clone();
    other.digest[0] ^= 1;
    let other = browser.remote(other);
    relay.configure(p.id, LegSide::A, &other);
    browser.send_rtp(&rtp(0, false, 2, 320, 0xabcd));
    relay_stats_until(&relay, p.id, |s| s.from_a.dropped == 1);

    // Refused: the old association itself comes back, no new handshake; media flows both ways
    // with the keys it had.
    relay.restore(p.id, LegSide::A, &old);
    let plain = rtp(0, false, 3, 480, 0xabcd);
    browser.send_rtp(&plain);
    assert_eq!(trunk.recv().0, plain);
    let back = rtp(0, false, 1, 160, 0x7777);
    trunk.send(&back, at_b);
    assert_eq!(browser.recv_rtp(), back);

    // A plain configure with the old description is a new association, as before: only a
    // restore brings back the replaced one.
    relay.configure(p.id, LegSide::A, &other);
    relay.configure(p.id, LegSide::A, &old);
    browser.send_rtp(&rtp(0, false, 4, 640, 0xabcd));
    relay_stats_until(&relay, p.id, |s| s.from_a.dropped == 2);
    assert_eq!(relay.stats(p.id).unwrap().failure, None);
}

#[test]
fn a_refused_sdes_re_key_brings_back_the_srtp_context_with_its_replay_window() {
    use crate::backend::Security;
    let call = Call::new(V4, V4);
    let (old, mut phone) = sdes_phone_on_a(&call);
    call.configure(LegSide::A, old.clone());
    let mut sealed = rtp(0, false, 1, 160, 0x1111);
    let len = sealed.len();
    sealed.resize(2048, 0);
    let n = phone.protect(false, &mut sealed, len).unwrap();
    sealed.truncate(n);
    call.a.send(&sealed, call.at_a);
    assert_eq!(call.b.recv().0, rtp(0, false, 1, 160, 0x1111));

    // Re-key offered, then refused: the context that saw packet 1 is back, so a replay of it
    // is refused (a fresh context from the same keys would take it).
    let mut rekeyed = old.clone();
    if let Security::Sdes(keys) = &mut rekeyed.security {
        keys.remote = (100..130).collect();
    }
    call.configure(LegSide::A, rekeyed);
    call.relay.restore(call.id, LegSide::A, &old);
    call.a.send(&sealed, call.at_a);
    call.stats_until(|s| s.from_a.dropped == 1);
    let mut next = rtp(0, false, 2, 320, 0x1111);
    next.resize(2048, 0);
    let n = phone.protect(false, &mut next, len).unwrap();
    call.a.send(&next[..n], call.at_a);
    assert_eq!(call.b.recv().0, rtp(0, false, 2, 320, 0x1111));
}
