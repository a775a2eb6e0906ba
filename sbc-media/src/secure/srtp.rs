//! The SRTP contexts of one side (RFC 3711): one to unprotect what its peer sends, one to
//! protect what the SBC sends to it, keyed by SDES (RFC 4568) or by a DTLS-SRTP export
//! (RFC 5764 §4.2).
//!
//! The inbound context has replay protection on (RFC 3711 §3.3.2, a 64-packet window per SSRC,
//! the rtc-srtp default size): a replayed or forged packet fails and is dropped. Both operations
//! work in the caller's buffer: the plaintext is written over the packet it came from (it is
//! shorter), the protected packet into a buffer with room for the tag. rtc-srtp returns a fresh
//! `BytesMut` per packet, copied back here: the one allocation per SRTP packet, and only on
//! secure sides.

use rtc_srtp::context::Context;
use rtc_srtp::crypto::RTCCrypto;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

use crate::backend::SrtpProfile;

/// RTP sequence numbers and SRTCP indexes remembered per SSRC against replays.
const REPLAY_WINDOW: usize = 64;

/// Why a packet could not be (un)protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpError {
    /// Authentication failed, a replay, or too short for its tag: dropped.
    Unauthenticated,
    /// The protected packet does not fit the buffer, or the packet is not RTP/RTCP.
    Unprotectable,
}

/// Inbound and outbound contexts of one side. Owned by the media worker of its pair.
pub struct SrtpPair {
    inbound: Context,
    outbound: Context,
    profile: SrtpProfile,
}

impl SrtpPair {
    /// Contexts from master key || master salt for each direction: `local` protects what the
    /// SBC sends, `remote` unprotects what the peer sends. `None` if a key has the wrong length
    /// for `profile`.
    pub fn new(
        profile: SrtpProfile,
        local: &[u8],
        remote: &[u8],
        crypto: &dyn RTCCrypto,
    ) -> Option<SrtpPair> {
        let p = protection_profile(profile);
        let (lk, ls) = split_key(local, p)?;
        let (rk, rs) = split_key(remote, p)?;
        let outbound = Context::new(lk, ls, p, None, None, crypto).ok()?;
        let inbound = Context::new(
            rk,
            rs,
            p,
            Some(srtp_replay_protection(REPLAY_WINDOW)),
            Some(srtcp_replay_protection(REPLAY_WINDOW)),
            crypto,
        )
        .ok()?;
        Some(SrtpPair { inbound, outbound, profile })
    }

    /// The suite in use.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Unprotects the SRTP (`rtcp` false) or SRTCP packet in `packet`; the plain packet is
    /// written at its start and its length returned.
    pub fn unprotect(&mut self, rtcp: bool, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let plain =
            if rtcp { self.inbound.decrypt_rtcp(packet) } else { self.inbound.decrypt_rtp(packet) }
                .map_err(|_| SrtpError::Unauthenticated)?;
        let out = packet.get_mut(..plain.len()).ok_or(SrtpError::Unprotectable)?;
        out.copy_from_slice(&plain);
        Ok(plain.len())
    }

    /// Protects the plain packet `buf[..len]`; the protected one is written into `buf` and its
    /// length returned.
    pub fn protect(&mut self, rtcp: bool, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let plain = buf.get(..len).ok_or(SrtpError::Unprotectable)?;
        let sealed =
            if rtcp { self.outbound.encrypt_rtcp(plain) } else { self.outbound.encrypt_rtp(plain) }
                .map_err(|_| SrtpError::Unprotectable)?;
        let out = buf.get_mut(..sealed.len()).ok_or(SrtpError::Unprotectable)?;
        out.copy_from_slice(&sealed);
        Ok(sealed.len())
    }
}

/// Master key and salt of `k`, if its length is right for `p`.
fn split_key(k: &[u8], p: ProtectionProfile) -> Option<(&[u8], &[u8])> {
    (k.len() == p.key_len() + p.salt_len()).then(|| k.split_at(p.key_len()))
}

/// The rtc-srtp profile of a contract profile.
pub(crate) fn protection_profile(p: SrtpProfile) -> ProtectionProfile {
    match p {
        SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::Aes128CmHmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    }
}
