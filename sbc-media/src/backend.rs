//! The seam between the media plane's call logic and the packet relay.
//!
//! [`crate::MediaPlane`] decides, from the SDP of both legs, which sockets a call needs and where each
//! side's packets must go; a [`RelayBackend`] owns the sockets and moves the packets. The real
//! backend is the multi-threaded relay; tests of the call logic use a fake that only records what
//! it was told, so offer/answer is tested without sockets.
//!
//! A call holds one stream pair per active m-line: on each side of the SBC an RTP port (even)
//! and an RTCP port (RTP + 1), bound on that side's local address. Packets that arrive on side A's
//! sockets from side A's peer leave through side B's sockets toward side B's peer, and the other
//! way round.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::LegSide;
use crate::dtmf::{DtmfEvent, TelephoneEvents};

/// Identifies one stream pair inside a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairId(pub u64);

/// What a new stream pair needs: the local address to bind on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairSpec {
    /// Local address of the sockets facing leg A's peer.
    pub local_a: IpAddr,
    /// Local address of the sockets facing leg B's peer.
    pub local_b: IpAddr,
}

/// The ports a new stream pair got. RTCP is always RTP + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairPorts {
    /// The pair, for later calls.
    pub id: PairId,
    /// RTP port facing leg A (even).
    pub a_rtp: u16,
    /// RTP port facing leg B (even).
    pub b_rtp: u16,
}

/// How strictly a side's source address is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Latch {
    /// Only packets from the address and port the SDP announced are accepted (the default; RTP
    /// Bleed fails against it).
    #[default]
    Strict,
    /// The peer is behind NAT: the first packet after (re)configuration may come from anywhere and
    /// its source becomes the only accepted one (and the destination for the other direction).
    Nat,
}

/// Where one side's peer is and what it may send; set from that side's SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// The peer's RTP address (`c=` and `m=` port); `None` until known or when the port is 0.
    pub rtp: Option<SocketAddr>,
    /// The peer's RTCP address (`a=rtcp`, or RTP + 1); ignored with `rtcp_mux`.
    pub rtcp: Option<SocketAddr>,
    /// RTCP is multiplexed on the RTP port on this side (RFC 5761): RTCP from the peer arrives on
    /// the RTP socket, and RTCP toward the peer is sent there.
    pub rtcp_mux: bool,
    /// Source address checking for this side.
    pub latch: Latch,
    /// Packets from this side's peer are forwarded to the other side (false: on hold or
    /// `recvonly`/`inactive` from this side: they are dropped and counted).
    pub forward: bool,
    /// RTP clock rate of this side's main codec, for jitter (RFC 3550 A.8).
    pub clock_rate: u32,
    /// Payload type rewriting for RTP from this side's peer: `pt_map[pt]` is the payload type
    /// sent on the other side. Identity when both legs use the same numbers.
    pub pt_map: [u8; 128],
    /// How this side's media is protected: what the relay removes from packets received from this
    /// side's peer and adds to packets sent to it.
    pub security: Security,
    /// Transcoding of the RTP received from this side's peer into the other side's codec; `None`
    /// when both sides share a codec (the packets are relayed as they are).
    pub transcode: Option<Transcode>,
    /// SIP INFO interworking toward the other leg (this is the call's RFC 4733 leg, see
    /// [`crate::dtmf`]): telephone events from this side's peer are detected and not relayed
    /// (the backend reports them through [`RelayBackend::poll_dtmf`]), and digits given to
    /// [`RelayBackend::send_dtmf`] are played toward this peer. `None`: events are relayed as
    /// any other packet.
    pub telephone_events: Option<TelephoneEvents>,
}

/// How one side of a pair is secured, from that leg's media profile and SDP.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Security {
    /// Plain RTP and RTCP.
    #[default]
    Plain,
    /// SRTP keyed in the SDP (SDES, RFC 4568).
    Sdes(SdesKeys),
    /// ICE-lite and DTLS-SRTP (RFC 5763/5764) toward a WebRTC peer, RTCP multiplexed.
    Dtls(DtlsSpec),
}

/// An SRTP protection profile (crypto suite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SrtpProfile {
    /// `AES_CM_128_HMAC_SHA1_80` (RFC 4568 and RFC 5764).
    Aes128CmHmacSha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`.
    Aes128CmHmacSha1_32,
    /// `AEAD_AES_128_GCM` (RFC 7714).
    AeadAes128Gcm,
    /// `AEAD_AES_256_GCM` (RFC 7714).
    AeadAes256Gcm,
}

/// SDES keys of one side: master key followed by master salt, as in `a=crypto` `inline:`.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesKeys {
    /// The suite both ends agreed on.
    pub profile: SrtpProfile,
    /// Key and salt the SBC protects with what it sends to this side's peer (the SBC's own
    /// `a=crypto` toward that peer).
    pub local: Vec<u8>,
    /// Key and salt the peer protects with what it sends (the peer's `a=crypto`).
    pub remote: Vec<u8>,
}

impl fmt::Debug for SdesKeys {
    /// Key material never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdesKeys").field("profile", &self.profile).finish_non_exhaustive()
    }
}

/// The DTLS role of the SBC on one side (RFC 5763 `a=setup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsRole {
    /// The SBC waits for the peer's ClientHello (it answered or offered `passive`).
    Server,
    /// The SBC sends the ClientHello (it answered `active`).
    Client,
}

/// ICE-lite short-term credentials of one side (RFC 8445 / RFC 5389 section 10.1).
#[derive(Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// The SBC's `a=ice-ufrag` toward this side.
    pub local_ufrag: String,
    /// The SBC's `a=ice-pwd` toward this side: checks from the peer are signed with it.
    pub local_pwd: String,
    /// The peer's `a=ice-ufrag`.
    pub remote_ufrag: String,
    /// The peer's `a=ice-pwd`.
    pub remote_pwd: String,
}

impl fmt::Debug for IceCredentials {
    /// Passwords never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceCredentials")
            .field("local_ufrag", &self.local_ufrag)
            .field("remote_ufrag", &self.remote_ufrag)
            .finish_non_exhaustive()
    }
}

/// A certificate fingerprint from `a=fingerprint` (RFC 8122).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// Hash function, lower case (`sha-256`).
    pub algorithm: String,
    /// The digest bytes.
    pub digest: Vec<u8>,
}

/// DTLS-SRTP toward one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsSpec {
    /// Whether the SBC is the DTLS server or client on this side.
    pub role: DtlsRole,
    /// The peer's certificate must match one of these; no match: no media, and the pair reports
    /// [`MediaFailure::FingerprintMismatch`].
    pub remote_fingerprints: Vec<Fingerprint>,
    /// ICE-lite credentials; `None` for DTLS without ICE.
    pub ice: Option<IceCredentials>,
}

/// One codec of a transcoded direction, as it appears on its leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecSpec {
    /// Encoding name as in `a=rtpmap` (`opus`, `PCMU`, `PCMA`, `telephone-event`).
    pub name: String,
    /// Payload type on that leg.
    pub payload_type: u8,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channels (`opus/48000/2`: 2).
    pub channels: u8,
}

/// Transcoding of one direction: RTP from this side's peer in `from` becomes RTP in `to` on the
/// other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcode {
    /// The codec this side's peer sends.
    pub from: CodecSpec,
    /// The codec the other side's peer receives.
    pub to: CodecSpec,
    /// RFC 4733 telephone events from this side (their payload type and clock rate), if any.
    pub dtmf_from: Option<CodecSpec>,
    /// RFC 4733 telephone events toward the other side, if it accepts them.
    pub dtmf_to: Option<CodecSpec>,
    /// The receiver of `to` decodes Opus in-band FEC (`useinbandfec=1` in its fmtp, RFC 7587
    /// §7.1): the encoder adds FEC while that receiver's RTCP reports loss.
    pub fec_to: bool,
}

/// Why a pair stopped carrying media on its own account (not hold, not silence): the call should
/// end with this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaFailure {
    /// The peer's DTLS certificate matched no `a=fingerprint` of its SDP.
    FingerprintMismatch(LegSide),
    /// The DTLS handshake failed or timed out.
    DtlsFailed(LegSide, &'static str),
    /// ICE consent freshness (RFC 7675) expired: the peer stopped answering.
    ConsentExpired(LegSide),
    /// The SDES keys do not fit their crypto suite (wrong length): no SRTP context could be made.
    BadKeys(LegSide),
}

impl RemoteSpec {
    /// Identity payload type map.
    pub const IDENTITY_PT_MAP: [u8; 128] = {
        let mut map = [0u8; 128];
        let mut i = 0;
        while i < 128 {
            map[i] = i as u8;
            i += 1;
        }
        map
    };
}

impl Default for RemoteSpec {
    fn default() -> RemoteSpec {
        RemoteSpec {
            rtp: None,
            rtcp: None,
            rtcp_mux: false,
            latch: Latch::Strict,
            forward: true,
            clock_rate: 8000,
            pt_map: RemoteSpec::IDENTITY_PT_MAP,
            security: Security::Plain,
            transcode: None,
            telephone_events: None,
        }
    }
}

/// Figures for the packets received from one side's peer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DirectionStats {
    /// RTP packets accepted from the peer.
    pub packets: u64,
    /// RTP payload bytes accepted from the peer (RTP header included).
    pub bytes: u64,
    /// RTP packets lost on the way from the peer (RFC 3550 A.3: expected - received, not below 0).
    pub lost: u64,
    /// Interarrival jitter in milliseconds (RFC 3550 A.8).
    pub jitter_ms: f64,
    /// RTP packets forwarded to the other side.
    pub forwarded: u64,
    /// RTCP packets accepted from the peer.
    pub rtcp_packets: u64,
    /// Packets dropped: wrong source, not forwarding (hold), or no destination yet; on a secure
    /// side also SRTP that fails authentication or is replayed, media before the keys exist, and
    /// STUN/DTLS that is not accepted (wrong credentials, unchecked source).
    pub dropped: u64,
}

impl DirectionStats {
    /// Loss in percent of expected packets.
    pub fn loss_percent(&self) -> f64 {
        let expected = self.packets + self.lost;
        if expected == 0 { 0.0 } else { self.lost as f64 * 100.0 / expected as f64 }
    }
}

/// Figures for one stream pair.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PairStats {
    /// Packets received from leg A's peer.
    pub from_a: DirectionStats,
    /// Packets received from leg B's peer.
    pub from_b: DirectionStats,
    /// When the last RTP or RTCP packet was accepted from either peer.
    pub last_packet: Option<Instant>,
    /// Set when the pair gave up on a side (DTLS or ICE failure): the call should end.
    pub failure: Option<MediaFailure>,
}

impl PairStats {
    /// The figures for packets received from `side`'s peer.
    pub fn from(&self, side: LegSide) -> &DirectionStats {
        match side {
            LegSide::A => &self.from_a,
            LegSide::B => &self.from_b,
        }
    }
}

/// Why a backend could not open a pair.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayError {
    /// The port range is used up (the call gets 503).
    NoPorts,
    /// A socket could not be set up.
    Io(String),
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::NoPorts => f.write_str("media port range exhausted"),
            RelayError::Io(why) => write!(f, "media socket: {why}"),
        }
    }
}

impl std::error::Error for RelayError {}

/// The packet relay as the call logic sees it. Calls are per call event (offer, answer, end),
/// never per packet. Implementations are shared by all signalling shards.
pub trait RelayBackend: Send + Sync {
    /// Binds the four sockets of a new pair (RTP and RTCP on each side) from the port range.
    fn open(&self, spec: PairSpec) -> Result<PairPorts, RelayError>;
    /// Sets or changes where `side`'s peer is and what it may send. Resets NAT latching for that
    /// side; keeps the counters.
    fn configure(&self, pair: PairId, side: LegSide, remote: &RemoteSpec);
    /// Puts `side` back to `remote`, what it had before a refused offer (RFC 3264 §8), as
    /// [`RelayBackend::configure`] does, except for the secure state: when `remote.security` is
    /// the one the side's latest change replaced, that earlier secure state itself comes back
    /// (its DTLS association, SRTP contexts with their rollover counters, ICE state) instead of
    /// a fresh one that its peer, which never left the old session, would not talk to. The
    /// default just configures (a backend without secure state).
    fn restore(&self, pair: PairId, side: LegSide, remote: &RemoteSpec) {
        self.configure(pair, side, remote);
    }
    /// Current figures of a pair (`None` for an unknown pair).
    fn stats(&self, pair: PairId) -> Option<PairStats>;
    /// Closes the pair's sockets, returns its ports to the range and its final figures.
    fn close(&self, pair: PairId) -> Option<PairStats>;
    /// Sets (or with `None` removes) the pair's capture tap: from the next packet on, every
    /// datagram received on the pair's sockets and every datagram it sends goes to `tap`. The
    /// default does nothing (a backend without packets has nothing to show).
    fn tap(&self, pair: PairId, tap: Option<Arc<dyn PacketTap>>) {
        let _ = (pair, tap);
    }
    /// The fingerprint of the SBC's DTLS certificate, as written in `a=fingerprint`
    /// (`sha-256 AB:CD:...`); `None` when the backend cannot do DTLS.
    fn dtls_fingerprint(&self) -> Option<String> {
        None
    }
    /// Plays `event` as RFC 4733 packets toward `toward`'s peer, in the stream the pair sends
    /// it; needs [`RemoteSpec::telephone_events`] on that side (else the digit is dropped). The
    /// default drops it (a backend without packets).
    fn send_dtmf(&self, pair: PairId, toward: LegSide, event: DtmfEvent) {
        let _ = (pair, toward, event);
    }
    /// The oldest key press detected on a side with [`RemoteSpec::telephone_events`], with the
    /// side whose peer sent it; `None` when there is none (always, by default).
    fn poll_dtmf(&self, pair: PairId) -> Option<(LegSide, DtmfEvent)> {
        let _ = pair;
        None
    }
}

/// Receives copies of the datagrams of tapped pairs (lawful intercept and troubleshooting
/// captures). Called on a media worker thread for each packet of a tapped pair, so it must
/// neither block nor allocate: copy into a pre-allocated slot and hand it off, or drop it.
pub trait PacketTap: Send + Sync + fmt::Debug {
    /// A datagram from `from` to `to` (one of them is the pair's own socket), seen at `at`.
    fn packet(&self, at: SystemTime, from: SocketAddr, to: SocketAddr, data: &[u8]);
}
