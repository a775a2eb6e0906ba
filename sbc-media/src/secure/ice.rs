//! The ICE-lite responder of one side (RFC 8445 §2.5 and §7.3, RFC 7675 consent freshness).
//!
//! An ICE-lite agent never sends checks: it answers the peer's STUN Binding requests and learns
//! from them where the peer is. A request is valid when its USERNAME is `local_ufrag:remote_ufrag`
//! (RFC 8445 §7.2.2), its MESSAGE-INTEGRITY verifies with the SBC's `ice-pwd` (short-term
//! credentials, RFC 5389 §10.1) and its FINGERPRINT, when present, is right. Anything else is
//! dropped silently and changes nothing: an error response would be a reply to an unauthenticated
//! packet (see STYLE.md on expensive replies to floods), and a browser does not need one.
//!
//! Each valid check adds its source to the validated addresses (media is accepted from these)
//! and selects it as the destination if it nominates (USE-CANDIDATE) or nothing was nominated
//! yet. Consent (RFC 7675 §5.1): once checks started, a side without a valid check for
//! [`CONSENT_TIMEOUT`] has lost consent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc_stun::attributes::{
    ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_USE_CANDIDATE, ATTR_USERNAME,
};
use rtc_stun::crypto::RTCCrypto;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message};
use rtc_stun::xoraddr::XorMappedAddress;

use crate::backend::IceCredentials;

/// RFC 7675 §5.1: consent expires 30 s after the last authenticated check.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Validated peer addresses kept per side; a browser checks a handful of candidate pairs, and
/// the oldest is forgotten first.
const VALIDATED: usize = 4;

/// Where the peer of an ICE side is, as learnt from its valid checks. Copied into the packet
/// rules after each check, so the packet path checks media sources without the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IcePath {
    /// Where media and DTLS toward the peer go: the nominated pair's source, or before any
    /// nomination the source of the last valid check.
    pub selected: Option<SocketAddr>,
    /// Sources of valid checks, most recent first; media is accepted from these only.
    pub validated: [Option<SocketAddr>; VALIDATED],
}

impl IcePath {
    /// Has `addr` passed a valid check?
    pub fn is_validated(&self, addr: SocketAddr) -> bool {
        self.validated.iter().flatten().any(|a| *a == addr)
    }

    fn validate(&mut self, addr: SocketAddr) {
        if let Some(i) = self.validated.iter().position(|a| *a == Some(addr)) {
            // Move it to the front: the oldest unused address is the one dropped later.
            self.validated[..=i].rotate_right(1);
        } else {
            self.validated.rotate_right(1);
            self.validated[0] = Some(addr);
        }
    }
}

/// Why a STUN datagram was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunReject {
    /// Not a well-formed STUN message, or not a Binding request (responses, indications).
    NotRequest,
    /// USERNAME missing or not `local_ufrag:remote_ufrag`.
    Username,
    /// MESSAGE-INTEGRITY missing or wrong (wrong password, or altered in transit).
    Integrity,
    /// FINGERPRINT present but wrong.
    Fingerprint,
}

/// A valid check: the answer to send back to its source.
#[derive(Debug)]
pub struct CheckAnswer {
    /// The Binding success response, ready to send to the check's source.
    pub reply: Vec<u8>,
    /// The check carried USE-CANDIDATE.
    pub nominated: bool,
}

/// The ICE-lite state of one side. Owned by the media worker of its pair.
pub struct IceLite {
    local_pwd: Vec<u8>,
    /// `local_ufrag:remote_ufrag`, what a valid check's USERNAME is.
    username: String,
    path: IcePath,
    nominated: bool,
    /// When the last valid check arrived; `None` before the first.
    last_valid: Option<Instant>,
}

impl IceLite {
    /// An agent with the side's credentials.
    pub fn new(creds: &IceCredentials) -> IceLite {
        IceLite {
            local_pwd: creds.local_pwd.as_bytes().to_vec(),
            username: format!("{}:{}", creds.local_ufrag, creds.remote_ufrag),
            path: IcePath::default(),
            nominated: false,
            last_valid: None,
        }
    }

    /// Where the peer is.
    pub fn path(&self) -> IcePath {
        self.path
    }

    /// Has any check passed?
    pub fn is_connected(&self) -> bool {
        self.last_valid.is_some()
    }

    /// Checks one STUN datagram from `from`; a valid Binding request updates the path and the
    /// consent timer and gives the response to send.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        crypto: &dyn RTCCrypto,
    ) -> Result<CheckAnswer, StunReject> {
        let mut msg = Message::new();
        msg.raw = data.to_vec();
        msg.decode().map_err(|_| StunReject::NotRequest)?;
        if msg.typ != BINDING_REQUEST {
            return Err(StunReject::NotRequest);
        }
        let username = msg.get(ATTR_USERNAME).map_err(|_| StunReject::Username)?;
        if username != self.username.as_bytes() {
            return Err(StunReject::Username);
        }
        // The HMAC-SHA1 value is 20 bytes (RFC 5389 §15.4); anything else is not worth an HMAC.
        if msg.get(ATTR_MESSAGE_INTEGRITY).map(|v| v.len()) != Ok(20) {
            return Err(StunReject::Integrity);
        }
        // The message as sent, without trailing bytes the datagram may carry: the integrity and
        // fingerprint checks cover exactly the encoded length.
        let full = 20 + msg.length as usize;
        msg.raw.truncate(full);
        if msg.contains(ATTR_FINGERPRINT) && FINGERPRINT.check(&msg).is_err() {
            return Err(StunReject::Fingerprint);
        }
        MessageIntegrity::check(&mut msg, &self.local_pwd, crypto)
            .map_err(|_| StunReject::Integrity)?;
        let nominated = msg.contains(ATTR_USE_CANDIDATE);
        let reply = self.answer(&msg, from, crypto).map_err(|_| StunReject::NotRequest)?;
        // Only now, with an authenticated check answered, does the state change.
        self.path.validate(from);
        if nominated {
            self.nominated = true;
            self.path.selected = Some(from);
        } else if !self.nominated {
            self.path.selected = Some(from);
        }
        self.last_valid = Some(now);
        Ok(CheckAnswer { reply, nominated })
    }

    /// RFC 8445 §7.3.1.1 / RFC 5389 §10.1.2: the success response echoes the transaction,
    /// carries the source as XOR-MAPPED-ADDRESS and is signed with the same password.
    fn answer(
        &self,
        request: &Message,
        from: SocketAddr,
        crypto: &dyn RTCCrypto,
    ) -> rtc_shared::error::Result<Vec<u8>> {
        let mut msg = Message::new();
        let mapped = XorMappedAddress { ip: from.ip(), port: from.port() };
        let integrity =
            MessageIntegrity::new_raw_integrity_with_provider(self.local_pwd.clone(), crypto);
        msg.build(&[
            Box::new(request.transaction_id),
            Box::new(BINDING_SUCCESS),
            Box::new(mapped),
            Box::new(integrity),
            Box::new(FINGERPRINT),
        ])?;
        Ok(msg.raw)
    }

    /// When consent expires unless a valid check comes first.
    pub fn consent_deadline(&self) -> Option<Instant> {
        self.last_valid.map(|t| t + CONSENT_TIMEOUT)
    }

    /// Has consent expired at `now`?
    pub fn is_expired(&self, now: Instant) -> bool {
        self.consent_deadline().is_some_and(|d| now >= d)
    }
}
