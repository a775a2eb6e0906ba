//! The secure media path of one relay side: ICE-lite, DTLS-SRTP, SRTP and SDES-SRTP, sans-IO.
//!
//! A [`SecureSide`] stands between one side's socket and the relay's packet rules. Every datagram
//! that side's socket receives goes through [`SecureSide::handle`] first, which demultiplexes it
//! by its first byte (RFC 7983 §7: 0-3 STUN, 20-63 DTLS, 128-191 RTP/RTCP) and returns what the
//! relay does with it:
//!
//! - STUN and DTLS are answered by the side itself ([`Received::Control`]); the datagrams to send
//!   back are then drained with [`SecureSide::poll_transmit`] and sent from the same socket;
//! - SRTP/SRTCP is unprotected in place ([`Received::Media`]) and relayed like plain RTP;
//! - everything else is dropped and counted ([`Received::Drop`]).
//!
//! What the relay sends to that side goes through [`SecureSide::protect`]. Timers (DTLS
//! retransmissions, the handshake deadline, consent freshness) come from
//! [`SecureSide::poll_timeout`] and are served by [`SecureSide::handle_timeout`]. A side that
//! gives up (fingerprint mismatch, handshake failure, expired consent) reports it once through
//! [`SecureSide::failure`] and drops everything from then on.
//!
//! Driving contract, as for the other sans-IO cores: after every `handle*` call, drain
//! `poll_transmit`, then ask `poll_timeout` again. No sockets, no clock: `now` is an argument.
//!
//! Allocation: the plain path never comes here. On a secure side, STUN and DTLS allocate freely
//! (a handful of packets per call), and each SRTP packet costs one buffer inside rtc-srtp (see
//! [`srtp`]).

pub mod dtls;
pub mod ice;
pub mod srtp;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use self::dtls::{DtlsAgent, DtlsIdentity, DtlsProgress};
use self::ice::{IceLite, IcePath, StunReject};
use self::srtp::SrtpPair;
use crate::LegSide;
use crate::backend::{DtlsRole, MediaFailure, SdesKeys, Security};

pub use self::dtls::IdentityError;

/// Datagrams queued for sending per side; a full queue drops new ones (DTLS retransmits, and a
/// STUN check is repeated by its sender). A handshake flight is at most a few datagrams.
const TRANSMIT_QUEUE: usize = 32;

/// What the relay does with a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// STUN or DTLS, consumed by the side; drain [`SecureSide::poll_transmit`].
    Control,
    /// Plain RTP (`rtcp` false) or RTCP, now in the first `len` bytes of the buffer.
    Media {
        /// RTCP (RFC 5761 §4 test on the second byte).
        rtcp: bool,
        /// Length of the plain packet.
        len: usize,
    },
    /// Dropped; counted by the caller.
    Drop(SecureDrop),
}

/// Why a datagram was dropped by a secure side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureDrop {
    /// The first byte names no protocol spoken here (RFC 7983).
    Unknown,
    /// A STUN message that is not a valid check (or STUN on a side without ICE).
    Stun(StunReject),
    /// DTLS on a side without DTLS, or from an address that has not passed a check.
    Dtls,
    /// SRTP/SRTCP before the keys exist.
    NotReady,
    /// SRTP/SRTCP whose authentication failed, or a replay.
    Unauthenticated,
    /// The side has failed: nothing passes.
    Failed,
}

/// A datagram the side wants sent from its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// The datagram.
    pub data: Vec<u8>,
}

/// Counters of a secure side, for tests and troubleshooting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecureCounters {
    /// Valid STUN checks answered.
    pub checks: u64,
    /// STUN datagrams rejected.
    pub stun_rejected: u64,
    /// SRTP/SRTCP packets that failed authentication or were replays.
    pub auth_failures: u64,
    /// Datagrams not queued because the transmit queue was full.
    pub transmit_overflow: u64,
}

/// The secure state of one relay side. Owned by the media worker of its pair.
pub struct SecureSide {
    side: LegSide,
    /// What it was made from, to tell a re-INVITE that changes nothing from a new setup.
    security: Security,
    identity: Arc<DtlsIdentity>,
    ice: Option<IceLite>,
    dtls: Option<DtlsAgent>,
    srtp: Option<SrtpPair>,
    /// Where DTLS and media go without ICE (from the SDP, or the latched source).
    peer: Option<SocketAddr>,
    failure: Option<MediaFailure>,
    transmits: VecDeque<Transmit>,
    counters: SecureCounters,
}

impl SecureSide {
    /// The secure state for `side` as `security` describes it; `None` for [`Security::Plain`].
    /// `peer` is the side's address from its SDP (where a DTLS client without ICE starts).
    pub fn new(
        now: Instant,
        side: LegSide,
        security: &Security,
        identity: &Arc<DtlsIdentity>,
        peer: Option<SocketAddr>,
    ) -> Option<SecureSide> {
        let mut s = SecureSide {
            side,
            security: security.clone(),
            identity: Arc::clone(identity),
            ice: None,
            dtls: None,
            srtp: None,
            peer,
            failure: None,
            transmits: VecDeque::new(),
            counters: SecureCounters::default(),
        };
        match security {
            Security::Sdes(keys) => s.key_sdes(keys),
            Security::Dtls(spec) => {
                s.ice = spec.ice.as_ref().map(IceLite::new);
                s.dtls = Some(DtlsAgent::new(identity, spec.role, &spec.remote_fingerprints));
                if s.ice.is_none() {
                    s.start_client(now);
                }
            }
            // Plain, and whatever later variants this code does not know: no secure state.
            _ => return None,
        }
        Some(s)
    }

    fn key_sdes(&mut self, keys: &SdesKeys) {
        let crypto = self.identity.provider().crypto();
        match SrtpPair::new(keys.profile, &keys.local, &keys.remote, crypto) {
            Some(pair) => self.srtp = Some(pair),
            None => self.fail(MediaFailure::BadKeys(self.side)),
        }
    }

    /// The description this side was made from.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Sets where DTLS and media go on a side without ICE (new SDP address, or a latched one).
    pub fn set_peer(&mut self, peer: Option<SocketAddr>) {
        if self.ice.is_none() {
            self.peer = peer;
        }
    }

    /// Where DTLS and media toward the peer go now.
    pub fn peer(&self) -> Option<SocketAddr> {
        match &self.ice {
            Some(ice) => ice.path().selected,
            None => self.peer,
        }
    }

    /// The ICE path, on a side with ICE.
    pub fn ice_path(&self) -> Option<IcePath> {
        self.ice.as_ref().map(IceLite::path)
    }

    /// The failure, once the side has given up.
    pub fn failure(&self) -> Option<MediaFailure> {
        self.failure
    }

    /// Are the SRTP keys in place?
    pub fn is_ready(&self) -> bool {
        self.srtp.is_some() && self.failure.is_none()
    }

    /// The counters.
    pub fn counters(&self) -> SecureCounters {
        self.counters
    }

    /// Handles one datagram from `from`, unprotecting SRTP in place (see [`Received`]).
    pub fn handle(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) -> Received {
        if self.failure.is_some() {
            return Received::Drop(SecureDrop::Failed);
        }
        match data.first().copied().unwrap_or(255) {
            0..=3 => self.handle_stun(now, from, data),
            20..=63 => self.handle_dtls(now, from, data),
            128..=191 => {
                // RFC 5761 §4: packet types 192-223 (second byte, marker masked: 64-95) are RTCP.
                let rtcp = data.get(1).is_some_and(|b| (64..=95).contains(&(b & 0x7f)));
                let Some(srtp) = self.srtp.as_mut() else {
                    return Received::Drop(SecureDrop::NotReady);
                };
                match srtp.unprotect(rtcp, data) {
                    Ok(len) => Received::Media { rtcp, len },
                    Err(_) => {
                        self.counters.auth_failures += 1;
                        Received::Drop(SecureDrop::Unauthenticated)
                    }
                }
            }
            _ => Received::Drop(SecureDrop::Unknown),
        }
    }

    fn handle_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Received {
        let crypto = self.identity.provider().crypto();
        let Some(ice) = self.ice.as_mut() else {
            return Received::Drop(SecureDrop::Stun(StunReject::NotRequest));
        };
        match ice.handle_stun(now, from, data, crypto) {
            Ok(answer) => {
                self.counters.checks += 1;
                self.queue(from, answer.reply);
                // Chrome sends its ClientHello right after its first successful check, before it
                // nominates (LAB-NOTES): a client SBC starts at the same point.
                self.start_client(now);
                Received::Control
            }
            Err(reject) => {
                self.counters.stun_rejected += 1;
                Received::Drop(SecureDrop::Stun(reject))
            }
        }
    }

    fn handle_dtls(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Received {
        let Some(dtls) = self.dtls.as_mut() else {
            return Received::Drop(SecureDrop::Dtls);
        };
        match &self.ice {
            // RFC 8445 §2: DTLS only over a pair that passed a check.
            Some(ice) if !ice.path().is_validated(from) => {
                return Received::Drop(SecureDrop::Dtls);
            }
            Some(_) => {}
            // Without ICE the relay's source rules accepted `from`: it is the peer.
            None => self.peer = Some(from),
        }
        let progress = dtls.handle_datagram(now, data);
        self.apply(progress);
        self.drain_dtls();
        Received::Control
    }

    /// Client role: sends the ClientHello once the peer is known (and, with ICE, reachable).
    fn start_client(&mut self, now: Instant) {
        let reachable = self.peer().is_some();
        if let Some(dtls) = self.dtls.as_mut()
            && dtls.role() == DtlsRole::Client
            && !dtls.is_started()
            && reachable
        {
            let progress = dtls.connect(now, &self.identity);
            self.apply(progress);
            self.drain_dtls();
        }
    }

    fn apply(&mut self, progress: DtlsProgress) {
        match progress {
            DtlsProgress::Pending => {}
            DtlsProgress::Keys(keys) => match keys.contexts(&self.identity) {
                Some(pair) => self.srtp = Some(pair),
                None => self.fail(MediaFailure::DtlsFailed(self.side, "bad exported keys")),
            },
            DtlsProgress::FingerprintMismatch => {
                self.fail(MediaFailure::FingerprintMismatch(self.side))
            }
            DtlsProgress::Failed(why) => self.fail(MediaFailure::DtlsFailed(self.side, why)),
        }
    }

    fn fail(&mut self, failure: MediaFailure) {
        if self.failure.is_none() {
            self.failure = Some(failure);
        }
        // No media at all from now on, whatever was negotiated.
        self.srtp = None;
    }

    fn drain_dtls(&mut self) {
        let Some(dtls) = self.dtls.as_mut() else { return };
        let mut out = Vec::new();
        while let Some(d) = dtls.poll_transmit() {
            out.push(d);
        }
        // Flights go where the peer is now (ICE may have moved it).
        if let Some(to) = self.peer() {
            for d in out {
                self.queue(to, d.to_vec());
            }
        }
    }

    fn queue(&mut self, to: SocketAddr, data: Vec<u8>) {
        if self.transmits.len() >= TRANSMIT_QUEUE {
            self.counters.transmit_overflow += 1;
            return;
        }
        self.transmits.push_back(Transmit { to, data });
    }

    /// The next datagram to send from this side's socket.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Protects the plain RTP (`rtcp` false) or RTCP packet `buf[..len]` for this side's peer,
    /// in place; the protected length, or `None` (drop it) before the keys exist or when it
    /// does not fit `buf`.
    pub fn protect(&mut self, rtcp: bool, buf: &mut [u8], len: usize) -> Option<usize> {
        if self.failure.is_some() {
            return None;
        }
        self.srtp.as_mut()?.protect(rtcp, buf, len).ok()
    }

    /// The earliest instant [`SecureSide::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failure.is_some() {
            return None;
        }
        let dtls = self.dtls.as_ref().and_then(DtlsAgent::poll_timeout);
        let consent = self.ice.as_ref().and_then(IceLite::consent_deadline);
        match (dtls, consent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Serves the timers due at `now`; may be called early (then it does nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failure.is_some() {
            return;
        }
        if self.ice.as_ref().is_some_and(|ice| ice.is_expired(now)) {
            self.fail(MediaFailure::ConsentExpired(self.side));
            return;
        }
        if let Some(dtls) = self.dtls.as_mut() {
            let progress = dtls.handle_timeout(now);
            self.apply(progress);
            self.drain_dtls();
        }
    }
}
