//! The per-packet rules of the relay, as pure functions over one side's state.
//!
//! [`inspect`] looks at one datagram that arrived on side X and decides everything about it in a
//! [`Verdict`]: whether it is accepted from X's peer (source check, RFC 3550 header check,
//! RFC 5761 demultiplexing), whether that acceptance latches a NAT address, and where it goes on
//! side Y. The worker applies the verdict at one exit (counters, latch, payload type rewrite,
//! send), as rtpengine's `packet_handler_ctx` collects its verdicts before acting.
//!
//! Source checks are what defeat RTP Bleed: with [`Latch::Strict`] only the exact address and
//! port from the SDP is accepted; with [`Latch::Nat`] the first packet after (re)configuration
//! picks the address, and from then on only that one is accepted. RTP and RTCP latch separately.

use std::net::SocketAddr;

use crate::backend::{Latch, RemoteSpec, Security};
use crate::secure::ice::IcePath;

/// Which of a side's two sockets a datagram uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Socket {
    /// The even port.
    Rtp,
    /// The odd port (RTP + 1).
    Rtcp,
}

/// What a datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An RTP packet.
    Rtp,
    /// An RTCP (compound) packet.
    Rtcp,
}

/// Why a datagram was not relayed. Every reason counts in `DirectionStats::dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// This side has no remote description yet.
    NotConfigured,
    /// Not RTP/RTCP version 2, or too short for its header.
    Malformed,
    /// From an address this side does not accept.
    Source,
    /// RTP from a side that does not forward (hold, recvonly, inactive).
    Hold,
    /// The other side has no destination yet (or one of the other address family).
    NoDestination,
}

/// Where an accepted datagram goes: through side Y's `via` socket to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Out {
    pub(crate) via: Socket,
    pub(crate) to: SocketAddr,
}

/// The decision about one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not accepted from the peer; counted only as dropped.
    Reject(DropReason),
    /// Accepted from the peer (counted as received); `latch` records its source as this side's
    /// NAT address; `out` is where it goes, or why it goes nowhere.
    Accept { kind: Kind, latch: bool, out: Result<Out, DropReason> },
}

/// One side's addressing state. Owned by the media worker of its pair.
#[derive(Debug, Clone, Default)]
pub(crate) struct SideRules {
    /// From this side's SDP; `None` until the first `configure`.
    remote: Option<RemoteSpec>,
    /// Under [`Latch::Nat`], the RTP source latched since the last configuration.
    latched_rtp: Option<SocketAddr>,
    /// Under [`Latch::Nat`], the RTCP source latched since the last configuration.
    latched_rtcp: Option<SocketAddr>,
    /// The family of this side's local sockets, which can send only to that family.
    local_v6: bool,
    /// On an ICE side: the peer addresses its checks validated, which replace the SDP address
    /// and latching (media only from validated addresses, toward the selected one). Copied
    /// from the side's ICE agent after each check it answered.
    ice: Option<IcePath>,
}

impl SideRules {
    /// A side whose sockets are bound on an IPv6 (`local_v6`) or IPv4 address.
    pub(crate) fn new(local_v6: bool) -> SideRules {
        SideRules { local_v6, ..SideRules::default() }
    }

    /// New remote description: replaces the old one and forgets latched addresses.
    pub(crate) fn configure(&mut self, remote: &RemoteSpec) {
        let mut remote = remote.clone();
        // An IPv4-mapped IPv6 address from an SDP is the IPv4 peer; sockets are IPv6-only, so
        // it must be used (and compared) as IPv4.
        remote.rtp = remote.rtp.map(canonical);
        remote.rtcp = remote.rtcp.map(canonical);
        // DTLS-SRTP toward a WebRTC peer is always multiplexed on one port (RFC 8829 §5.1.1
        // requires rtcp-mux), and with ICE the checks locate the peer.
        let ice = match &remote.security {
            Security::Dtls(spec) => {
                remote.rtcp_mux = true;
                spec.ice.is_some()
            }
            _ => false,
        };
        self.ice = ice.then(|| self.ice.unwrap_or_default());
        self.remote = Some(remote);
        self.latched_rtp = None;
        self.latched_rtcp = None;
    }

    /// New ICE state of this side (ignored on a side without ICE).
    pub(crate) fn set_ice_path(&mut self, path: IcePath) {
        if let Some(ice) = self.ice.as_mut() {
            *ice = path;
        }
    }

    /// Would a datagram from `src` be accepted as RTP from this side's peer? `Ok(true)`: yes,
    /// and it latches. For DTLS on a side without ICE, which follows the RTP source rules.
    pub(crate) fn accepts_source(&self, src: SocketAddr) -> Result<bool, DropReason> {
        let remote = self.remote.as_ref().ok_or(DropReason::NotConfigured)?;
        source_check(self, remote, Kind::Rtp, src)
    }

    /// The remote description, if configured.
    pub(crate) fn remote(&self) -> Option<&RemoteSpec> {
        self.remote.as_ref()
    }

    /// Records `src` as the NAT address for `kind`.
    pub(crate) fn latch(&mut self, kind: Kind, src: SocketAddr) {
        match kind {
            Kind::Rtp => self.latched_rtp = Some(src),
            Kind::Rtcp => self.latched_rtcp = Some(src),
        }
    }

    /// Where RTP toward this side's peer goes, for packets the relay makes itself.
    pub(crate) fn rtp_out(&self) -> Result<Out, DropReason> {
        self.rtp_destination()
    }

    /// Where RTCP toward this side's peer goes, for reports the relay makes itself.
    pub(crate) fn rtcp_out(&self) -> Result<Out, DropReason> {
        self.rtcp_destination()
    }

    /// Where RTP toward this side's peer goes: the latched address, else the SDP's.
    fn rtp_destination(&self) -> Result<Out, DropReason> {
        let remote = self.remote.as_ref().ok_or(DropReason::NoDestination)?;
        if let Some(ice) = &self.ice {
            return self.out(Socket::Rtp, ice.selected);
        }
        // With rtcp-mux both share the peer's port, so an RTCP latch also locates the RTP peer.
        let latched =
            if remote.rtcp_mux { self.latched_rtp.or(self.latched_rtcp) } else { self.latched_rtp };
        self.out(Socket::Rtp, latched.or(remote.rtp))
    }

    /// Where RTCP toward this side's peer goes: on the RTP port with rtcp-mux (RFC 5761 §5.1.1),
    /// else on the RTCP port.
    fn rtcp_destination(&self) -> Result<Out, DropReason> {
        let remote = self.remote.as_ref().ok_or(DropReason::NoDestination)?;
        if let Some(ice) = &self.ice {
            return self.out(Socket::Rtp, ice.selected);
        }
        if remote.rtcp_mux {
            self.out(Socket::Rtp, self.latched_rtp.or(self.latched_rtcp).or(remote.rtp))
        } else {
            self.out(Socket::Rtcp, self.latched_rtcp.or(remote.rtcp))
        }
    }

    fn out(&self, via: Socket, to: Option<SocketAddr>) -> Result<Out, DropReason> {
        match to {
            Some(to) if to.is_ipv6() == self.local_v6 && to.port() != 0 => Ok(Out { via, to }),
            _ => Err(DropReason::NoDestination),
        }
    }
}

/// Decides about `data`, received from `src` on side X's `on` socket, with `y` the other side.
pub(crate) fn inspect(
    x: &SideRules,
    y: &SideRules,
    on: Socket,
    data: &[u8],
    src: SocketAddr,
) -> Verdict {
    let Some(remote) = &x.remote else {
        return Verdict::Reject(DropReason::NotConfigured);
    };
    let kind = kind_of(remote, on, data);
    let well_formed = match kind {
        Kind::Rtp => is_rtp(data),
        Kind::Rtcp => is_rtcp(data),
    };
    if !well_formed {
        return Verdict::Reject(DropReason::Malformed);
    }
    let latch = match source_check(x, remote, kind, src) {
        Ok(latch) => latch,
        Err(reason) => return Verdict::Reject(reason),
    };
    let out = match kind {
        Kind::Rtp if !remote.forward => Err(DropReason::Hold),
        Kind::Rtp => y.rtp_destination(),
        // RTCP keeps flowing on hold: RFC 3264 §5.1 keeps RTCP for recvonly/inactive streams.
        Kind::Rtcp => y.rtcp_destination(),
    };
    Verdict::Accept { kind, latch, out }
}

/// RFC 5761 §4: on a multiplexed port, a second byte (marker bit masked) of 64..=95 is RTCP
/// (packet types 192..=223), anything else is RTP.
fn kind_of(remote: &RemoteSpec, on: Socket, data: &[u8]) -> Kind {
    match on {
        Socket::Rtp if remote.rtcp_mux && is_rtcp_type(data) => Kind::Rtcp,
        Socket::Rtp => Kind::Rtp,
        Socket::Rtcp => Kind::Rtcp,
    }
}

/// The source check of [`inspect`] alone, for SRTP before it is unprotected: a packet from a
/// source that would be refused must not cost a decryption, nor advance the replay window
/// (a copy raced from elsewhere would otherwise make the genuine packet a "replay").
pub(crate) fn media_source(
    x: &SideRules,
    on: Socket,
    data: &[u8],
    src: SocketAddr,
) -> Result<(), DropReason> {
    let remote = x.remote.as_ref().ok_or(DropReason::NotConfigured)?;
    source_check(x, remote, kind_of(remote, on, data), src).map(|_| ())
}

/// Is `src` accepted for `kind`? `Ok(true)`: accepted and to be latched.
fn source_check(
    x: &SideRules,
    remote: &RemoteSpec,
    kind: Kind,
    src: SocketAddr,
) -> Result<bool, DropReason> {
    if let Some(ice) = &x.ice {
        return if ice.is_validated(src) { Ok(false) } else { Err(DropReason::Source) };
    }
    let (latched, announced) = match kind {
        Kind::Rtp => (x.latched_rtp, remote.rtp),
        Kind::Rtcp if remote.rtcp_mux => (x.latched_rtcp, remote.rtp),
        Kind::Rtcp => (x.latched_rtcp, remote.rtcp),
    };
    let expected = match (remote.latch, latched) {
        (Latch::Strict, _) => announced,
        (Latch::Nat, Some(latched)) => Some(latched),
        (Latch::Nat, None) => return Ok(true),
    };
    match expected {
        Some(addr) if same_endpoint(addr, src) => Ok(false),
        _ => Err(DropReason::Source),
    }
}

/// Same IP and port; IPv6 flow labels and scope ids do not name another peer.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip() == b.ip()
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// RFC 5761 §4 demultiplexing test on the second byte.
fn is_rtcp_type(data: &[u8]) -> bool {
    data.get(1).is_some_and(|b| (64..=95).contains(&(b & 0x7f)))
}

/// RTP version 2 with room for the fixed header and its CSRC list (RFC 3550 §5.1). Payload types
/// 72..=76 are refused: RFC 3550 §12 reserves them so RTP can never be mistaken for RTCP.
fn is_rtp(data: &[u8]) -> bool {
    let &[b0, b1, ..] = data else { return false };
    let csrc_len = 4 * usize::from(b0 & 0x0f);
    b0 >> 6 == 2 && data.len() >= 12 + csrc_len && !(72..=76).contains(&(b1 & 0x7f))
}

/// Calls `f(ssrc, fraction_lost)` for each report block of the SR and RR packets in a compound
/// RTCP packet (RFC 3550 §6.4.1, §6.4.2): the stream reported on and its loss in 1/256. The
/// walk stops at the first packet whose header or length does not fit.
pub(crate) fn for_each_report_block(data: &[u8], mut f: impl FnMut(u32, u8)) {
    const SR: u8 = 200;
    const RR: u8 = 201;
    const BLOCK: usize = 24;
    for (packet_type, count, packet) in crate::rtcp::compound(data) {
        let first = match packet_type {
            SR => 28,
            RR => 8,
            _ => continue,
        };
        let blocks = packet.get(first..).unwrap_or(&[]).chunks_exact(BLOCK);
        for block in blocks.take(usize::from(count)) {
            f(u32::from_be_bytes([block[0], block[1], block[2], block[3]]), block[4]);
        }
    }
}

/// RTCP version 2 with at least a header and a sender SSRC (RFC 3550 §6.4).
fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] >> 6 == 2 && is_rtcp_type(data)
}

/// The fields of an RTP header the statistics need; `data` passed [`inspect`] as RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RtpFields {
    pub(crate) seq: u16,
    pub(crate) timestamp: u32,
    pub(crate) ssrc: u32,
}

impl RtpFields {
    /// Reads sequence number, timestamp and SSRC; `None` if `data` is shorter than 12 bytes.
    pub(crate) fn parse(data: &[u8]) -> Option<RtpFields> {
        let h: &[u8; 12] = data.get(..12)?.try_into().ok()?;
        Some(RtpFields {
            seq: u16::from_be_bytes([h[2], h[3]]),
            timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        })
    }
}

/// Payload type, timestamp and payload of an RTP packet (after the CSRC list and any header
/// extension, padding removed); `None` when the header does not fit in `data`.
pub(crate) fn rtp_payload(data: &[u8]) -> Option<(u8, u32, &[u8])> {
    let h = RtpFields::parse(data)?;
    let b0 = *data.first()?;
    let pt = data.get(1)? & 0x7f;
    let mut start = 12 + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let ext = data.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = data.len();
    if b0 & 0x20 != 0 {
        end = end.checked_sub(usize::from(*data.last()?))?;
    }
    Some((pt, h.timestamp, data.get(start..end)?))
}

/// Rewrites the payload type of an RTP packet through `pt_map`, keeping the marker bit. The only
/// byte of a relayed packet the relay changes.
pub(crate) fn rewrite_payload_type(data: &mut [u8], pt_map: &[u8; 128]) {
    if let Some(b) = data.get_mut(1) {
        *b = (*b & 0x80) | (pt_map[usize::from(*b & 0x7f)] & 0x7f);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn side(spec: RemoteSpec) -> SideRules {
        let mut s = SideRules::new(spec.rtp.is_some_and(|a| a.is_ipv6()));
        s.configure(&spec);
        s
    }

    fn spec(rtp: &str, rtcp: &str) -> RemoteSpec {
        RemoteSpec { rtp: Some(addr(rtp)), rtcp: Some(addr(rtcp)), ..RemoteSpec::default() }
    }

    const RTP: [u8; 12] = [0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
    const RTCP_RR: [u8; 8] = [0x80, 201, 0, 1, 1, 2, 3, 4];

    #[test]
    fn header_checks() {
        assert!(is_rtp(&RTP));
        assert!(!is_rtp(&RTP[..11]));
        assert!(!is_rtp(&[0x40; 12]), "version 1");
        // Two CSRCs announced, none present.
        assert!(!is_rtp(&[0x82, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_rtp(&[0x80, 200, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]), "RTCP SR as RTP");
        assert!(!is_rtp(&[]));
        assert!(is_rtcp(&RTCP_RR));
        assert!(!is_rtcp(&RTCP_RR[..7]));
        assert!(!is_rtcp(&RTP[..8]));
        assert_eq!(
            RtpFields::parse(&RTP),
            Some(RtpFields { seq: 1, timestamp: 160, ssrc: 0x01020304 })
        );
        assert_eq!(RtpFields::parse(&RTP[..11]), None);
    }

    #[test]
    fn payload_type_rewrite_keeps_marker() {
        let mut map = RemoteSpec::IDENTITY_PT_MAP;
        map[96] = 101;
        let mut p = RTP;
        p[1] = 0x80 | 96;
        rewrite_payload_type(&mut p, &map);
        assert_eq!(p[1], 0x80 | 101);
        p[1] = 96;
        rewrite_payload_type(&mut p, &map);
        assert_eq!(p[1], 101);
        assert_eq!(p[2..], RTP[2..]);
    }

    #[test]
    fn strict_accepts_only_the_announced_endpoints() {
        let a = side(spec("10.0.0.1:4000", "10.0.0.1:4001"));
        let b = side(spec("10.0.0.2:5000", "10.0.0.2:5001"));
        let to_b = Ok(Out { via: Socket::Rtp, to: addr("10.0.0.2:5000") });
        let ok = Verdict::Accept { kind: Kind::Rtp, latch: false, out: to_b };
        assert_eq!(inspect(&a, &b, Socket::Rtp, &RTP, addr("10.0.0.1:4000")), ok);
        for bad in ["10.0.0.1:4002", "10.0.0.9:4000", "[::1]:4000"] {
            assert_eq!(
                inspect(&a, &b, Socket::Rtp, &RTP, addr(bad)),
                Verdict::Reject(DropReason::Source)
            );
        }
        // RTCP from the RTCP address only, toward B's RTCP port.
        let rtcp_ok = Verdict::Accept {
            kind: Kind::Rtcp,
            latch: false,
            out: Ok(Out { via: Socket::Rtcp, to: addr("10.0.0.2:5001") }),
        };
        assert_eq!(inspect(&a, &b, Socket::Rtcp, &RTCP_RR, addr("10.0.0.1:4001")), rtcp_ok);
        assert_eq!(
            inspect(&a, &b, Socket::Rtcp, &RTCP_RR, addr("10.0.0.1:4000")),
            Verdict::Reject(DropReason::Source)
        );
        // RTP on the RTCP port is refused.
        assert_eq!(
            inspect(&a, &b, Socket::Rtcp, &RTP, addr("10.0.0.1:4001")),
            Verdict::Reject(DropReason::Malformed)
        );
    }

    #[test]
    fn unconfigured_sides() {
        let none = SideRules::new(false);
        let a = side(spec("10.0.0.1:4000", "10.0.0.1:4001"));
        assert_eq!(
            inspect(&none, &a, Socket::Rtp, &RTP, addr("10.0.0.1:4000")),
            Verdict::Reject(DropReason::NotConfigured)
        );
        assert_eq!(
            inspect(&a, &none, Socket::Rtp, &RTP, addr("10.0.0.1:4000")),
            Verdict::Accept { kind: Kind::Rtp, latch: false, out: Err(DropReason::NoDestination) }
        );
    }

    #[test]
    fn nat_latches_the_first_source_then_is_strict() {
        let mut a =
            side(RemoteSpec { latch: Latch::Nat, ..spec("192.168.1.5:4000", "192.168.1.5:4001") });
        let mut b = side(spec("10.0.0.2:5000", "10.0.0.2:5001"));
        let nat = addr("203.0.113.7:31000");
        let v = inspect(&a, &b, Socket::Rtp, &RTP, nat);
        assert!(matches!(v, Verdict::Accept { latch: true, .. }));
        a.latch(Kind::Rtp, nat);
        assert!(matches!(
            inspect(&a, &b, Socket::Rtp, &RTP, nat),
            Verdict::Accept { latch: false, .. }
        ));
        assert_eq!(
            inspect(&a, &b, Socket::Rtp, &RTP, addr("192.168.1.5:4000")),
            Verdict::Reject(DropReason::Source)
        );
        // B's packets now go to the latched address.
        assert_eq!(
            inspect(&b, &a, Socket::Rtp, &RTP, addr("10.0.0.2:5000")),
            Verdict::Accept {
                kind: Kind::Rtp,
                latch: false,
                out: Ok(Out { via: Socket::Rtp, to: nat })
            }
        );
        // RTCP latches on its own.
        assert!(matches!(
            inspect(&a, &b, Socket::Rtcp, &RTCP_RR, addr("203.0.113.7:31001")),
            Verdict::Accept { kind: Kind::Rtcp, latch: true, .. }
        ));
        // Reconfiguration forgets the latch.
        a.configure(&RemoteSpec {
            latch: Latch::Nat,
            ..spec("192.168.1.5:4000", "192.168.1.5:4001")
        });
        assert!(matches!(
            inspect(&a, &b, Socket::Rtp, &RTP, addr("198.51.100.1:1")),
            Verdict::Accept { latch: true, .. }
        ));
        b.configure(&RemoteSpec { forward: false, ..spec("10.0.0.2:5000", "10.0.0.2:5001") });
        assert_eq!(
            inspect(&b, &a, Socket::Rtp, &RTP, addr("10.0.0.2:5000")),
            Verdict::Accept { kind: Kind::Rtp, latch: false, out: Err(DropReason::Hold) }
        );
        // RTCP still flows on hold.
        assert!(matches!(
            inspect(&b, &a, Socket::Rtcp, &RTCP_RR, addr("10.0.0.2:5001")),
            Verdict::Accept { kind: Kind::Rtcp, out: Ok(_), .. }
        ));
    }

    #[test]
    fn rtcp_mux_demultiplexes_and_routes() {
        let a = side(RemoteSpec { rtcp_mux: true, ..spec("10.0.0.1:4000", "10.0.0.1:4001") });
        let b = side(spec("10.0.0.2:5000", "10.0.0.2:5001"));
        let from_a = addr("10.0.0.1:4000");
        // RTCP on A's RTP port, from A's RTP address, goes to B's RTCP port.
        assert_eq!(
            inspect(&a, &b, Socket::Rtp, &RTCP_RR, from_a),
            Verdict::Accept {
                kind: Kind::Rtcp,
                latch: false,
                out: Ok(Out { via: Socket::Rtcp, to: addr("10.0.0.2:5001") })
            }
        );
        // RTP with the marker bit set and PT 0 is still RTP (second byte 0x80).
        let mut marked = RTP;
        marked[1] = 0x80;
        assert!(matches!(
            inspect(&a, &b, Socket::Rtp, &marked, from_a),
            Verdict::Accept { kind: Kind::Rtp, .. }
        ));
        // RTCP from B goes to A's RTP port.
        assert_eq!(
            inspect(&b, &a, Socket::Rtcp, &RTCP_RR, addr("10.0.0.2:5001")),
            Verdict::Accept {
                kind: Kind::Rtcp,
                latch: false,
                out: Ok(Out { via: Socket::Rtp, to: from_a })
            }
        );
    }

    #[test]
    fn destinations_of_the_wrong_family_or_port_zero_are_dropped() {
        let a = side(spec("10.0.0.1:4000", "10.0.0.1:4001"));
        let mut b = SideRules::new(true);
        b.configure(&spec("10.0.0.2:5000", "10.0.0.2:5001"));
        assert!(matches!(
            inspect(&a, &b, Socket::Rtp, &RTP, addr("10.0.0.1:4000")),
            Verdict::Accept { out: Err(DropReason::NoDestination), .. }
        ));
        // An IPv4-mapped address reaches an IPv4 side.
        let mut c = SideRules::new(false);
        c.configure(&spec("[::ffff:10.0.0.3]:6000", "[::ffff:10.0.0.3]:6001"));
        assert!(matches!(
            inspect(&c, &a, Socket::Rtp, &RTP, addr("10.0.0.3:6000")),
            Verdict::Accept { out: Ok(_), .. }
        ));
        let mut d = SideRules::new(false);
        d.configure(&spec("10.0.0.4:0", "10.0.0.4:1"));
        assert!(matches!(
            inspect(&a, &d, Socket::Rtp, &RTP, addr("10.0.0.1:4000")),
            Verdict::Accept { out: Err(DropReason::NoDestination), .. }
        ));
    }

    #[test]
    fn an_ice_side_takes_sources_and_destination_from_its_checks() {
        use crate::backend::{DtlsRole, DtlsSpec, IceCredentials};
        let creds = IceCredentials {
            local_ufrag: "a".into(),
            local_pwd: "b".into(),
            remote_ufrag: "c".into(),
            remote_pwd: "d".into(),
        };
        let dtls =
            DtlsSpec { role: DtlsRole::Server, remote_fingerprints: vec![], ice: Some(creds) };
        let mut a = side(RemoteSpec {
            security: Security::Dtls(dtls),
            ..spec("10.0.0.1:4000", "10.0.0.1:4001")
        });
        let b = side(spec("10.0.0.2:5000", "10.0.0.2:5001"));
        assert!(a.remote().is_some_and(|r| r.rtcp_mux), "DTLS sides are multiplexed");
        // Before any check: not even the SDP address is accepted, and nothing goes to A.
        assert_eq!(
            inspect(&a, &b, Socket::Rtp, &RTP, addr("10.0.0.1:4000")),
            Verdict::Reject(DropReason::Source)
        );
        assert!(matches!(
            inspect(&b, &a, Socket::Rtp, &RTP, addr("10.0.0.2:5000")),
            Verdict::Accept { out: Err(DropReason::NoDestination), .. }
        ));
        let checked = addr("203.0.113.9:6000");
        let mut path = IcePath { selected: Some(checked), ..IcePath::default() };
        path.validated[0] = Some(checked);
        a.set_ice_path(path);
        assert!(matches!(
            inspect(&a, &b, Socket::Rtp, &RTP, checked),
            Verdict::Accept { latch: false, out: Ok(_), .. }
        ));
        assert_eq!(
            inspect(&b, &a, Socket::Rtcp, &RTCP_RR, addr("10.0.0.2:5001")),
            Verdict::Accept {
                kind: Kind::Rtcp,
                latch: false,
                out: Ok(Out { via: Socket::Rtp, to: checked })
            }
        );
        // Reconfiguring the same side keeps what the checks found.
        a.configure(&a.remote().unwrap().clone());
        assert_eq!(a.accepts_source(checked), Ok(false));
    }

    #[test]
    fn arbitrary_datagrams_never_panic() {
        // Deterministic xorshift noise, biased toward version-2 headers so the deeper checks run.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let sides = [
            side(spec("10.0.0.1:4000", "10.0.0.1:4001")),
            side(RemoteSpec {
                rtcp_mux: true,
                latch: Latch::Nat,
                ..spec("10.0.0.1:4000", "10.0.0.1:4001")
            }),
            SideRules::new(false),
        ];
        let mut map = RemoteSpec::IDENTITY_PT_MAP;
        map.iter_mut().for_each(|v| *v = (next() & 0xff) as u8);
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0
                && let Some(b0) = data.first_mut()
            {
                *b0 = 0x80 | (*b0 & 0x3f);
            }
            let from = addr(if next() % 2 == 0 { "10.0.0.1:4000" } else { "10.0.0.1:4001" });
            for x in &sides {
                for y in &sides {
                    for on in [Socket::Rtp, Socket::Rtcp] {
                        let _ = inspect(x, y, on, &data, from);
                    }
                }
            }
            let _ = RtpFields::parse(&data);
            rewrite_payload_type(&mut data, &map);
        }
    }

    /// Report blocks as (SSRC, fraction lost) from a compound packet.
    fn blocks(data: &[u8]) -> Vec<(u32, u8)> {
        let mut v = Vec::new();
        for_each_report_block(data, |ssrc, lost| v.push((ssrc, lost)));
        v
    }

    fn block(ssrc: u32, lost: u8) -> Vec<u8> {
        let mut b = ssrc.to_be_bytes().to_vec();
        b.push(lost);
        b.extend_from_slice(&[0; 19]);
        b
    }

    #[test]
    fn report_blocks_of_sr_and_rr_in_a_compound_packet() {
        // SR with one block (Chrome's usual first packet), then an RR with two, then an SDES.
        let mut sr = vec![0x81, 200, 0, 12, 0, 0, 0, 1];
        sr.extend_from_slice(&[0; 20]);
        sr.extend(block(0xAAAA_0001, 13));
        let mut rr = vec![0x82, 201, 0, 13, 0, 0, 0, 1];
        rr.extend(block(0xAAAA_0002, 0));
        rr.extend(block(0xAAAA_0003, 255));
        let sdes = [0x81, 202, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0];
        let compound = [sr, rr, sdes.to_vec()].concat();
        assert_eq!(blocks(&compound), [(0xAAAA_0001, 13), (0xAAAA_0002, 0), (0xAAAA_0003, 255)]);
    }

    #[test]
    fn report_blocks_stop_at_what_does_not_fit() {
        // The count says 2, the length holds 1: only the one that is there.
        let mut rr = vec![0x82, 201, 0, 7, 0, 0, 0, 1];
        rr.extend(block(7, 9));
        assert_eq!(blocks(&rr), [(7, 9)]);
        // A length beyond the datagram ends the walk; so does a wrong version.
        let mut long = rr.clone();
        long[3] = 40;
        assert!(blocks(&long).is_empty());
        let mut v1 = rr.clone();
        v1[0] = 0x42;
        assert!(blocks(&v1).is_empty());
        // A packet type without report blocks is skipped whole.
        let app = [0x80, 204, 0, 2, 0, 0, 0, 1, b'n', b'a', b'm', b'e'];
        assert_eq!(blocks(&[app.to_vec(), rr].concat()), [(7, 9)]);
    }

    proptest! {
        #[test]
        fn report_blocks_of_any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let n = blocks(&data).len();
            prop_assert!(n <= data.len() / 24);
        }
    }
}
