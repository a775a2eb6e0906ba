//! Media plane of the SBC.
//!
//! sbc-core hands every SDP body of a call to a [`MediaPlane`] and sends on what it returns: an
//! offer from one leg becomes the offer sent on the other, and so on for answers, keyed by a
//! [`MediaSessionId`] the core allocates per call. The plane anchors the media: it opens a relay
//! pair per active m-line through a [`backend::RelayBackend`], writes the SBC's addresses and
//! ports into the SDP each leg gets, filters codecs by each leg's profile, and tells the relay
//! where each side's peer is and what it may send.
//!
//! Layers, each usable on its own:
//! - [`sdp`]: the SDP model, parser and writer (RFC 8866);
//! - [`negotiate`]: the pure offer/answer rewriting rules (RFC 3264);
//! - [`profile`]: the media transport profiles (plain RTP, SDES-SRTP, WebRTC) and the conversion
//!   of SDP between them;
//! - [`MediaPlane`]: the per-call state and the calls into the relay;
//! - [`dtmf`]: RFC 4733 event detection and generation for SIP INFO interworking, sans-IO;
//! - [`backend`]: the seam to the packet relay, and [`VirtualBackend`], a relay without sockets
//!   for sans-IO tests;
//! - [`secure`]: the secure media path of one relay side (ICE-lite, DTLS-SRTP, SRTP, SDES),
//!   sans-IO;
//! - [`rtcp`]: the RTCP reports the SBC sends itself on the streams it originates (transcoded
//!   pairs), sans-IO;
//! - [`relay`]: the real relay: media worker threads that own the sockets and move the packets
//!   (with [`ports`], the port pool, and [`stats`], the RFC 3550 receive figures).
//!
//! Everything but [`relay`] is sans-IO: no sockets, no clock (time comes in as `now`), no
//! threads. The relay is the one part that does I/O, on threads of its own, never on the
//! signalling shards.

pub mod backend;
pub mod dtmf;
pub mod negotiate;
mod plane;
pub mod ports;
pub mod profile;
#[cfg(target_os = "linux")]
pub mod relay;
pub mod rtcp;
pub mod sdp;
pub mod secure;
pub mod stats;
pub mod transcode;
mod virtual_backend;

use std::fmt;

pub use plane::{LegMedia, LegSummary, MediaPlane, MediaSummary};
pub use profile::MediaProfile;
pub use virtual_backend::VirtualBackend;

use crate::backend::RelayError;
use crate::negotiate::NegotiateError;
use crate::sdp::ParseError;

/// Identifies one call's media, allocated by the signalling core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaSessionId(pub u64);

/// Which leg of the call an SDP came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LegSide {
    /// The leg the call came in on.
    A,
    /// The leg the SBC created toward the callee.
    B,
}

impl LegSide {
    /// The other leg.
    pub fn other(self) -> LegSide {
        match self {
            LegSide::A => LegSide::B,
            LegSide::B => LegSide::A,
        }
    }
}

/// Why an SDP was refused; [`MediaError::status_code`] is the response the core sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaError {
    /// The body is not an SDP session description.
    NotSdp,
    /// The SDP is invalid or unusable; the reason is short static text (for the `Warning`).
    BadSdp(&'static str),
    /// An answer arrived for a session that has no offer from the other leg.
    NoOffer,
    /// An audio stream has no codec both the SDP and the leg's profile allow.
    NoCommonCodec,
    /// The relay's port range is used up.
    NoPorts,
    /// The relay could not set up a socket (other than running out of ports).
    Relay,
}

impl MediaError {
    /// The SIP status the core answers with: 503 when the SBC lacks resources, 488 (Not
    /// Acceptable Here, RFC 3261 §21.4.26) for what is wrong with the SDP.
    pub fn status_code(&self) -> u16 {
        match self {
            MediaError::NoPorts | MediaError::Relay => 503,
            MediaError::NotSdp
            | MediaError::BadSdp(_)
            | MediaError::NoOffer
            | MediaError::NoCommonCodec => 488,
        }
    }
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::NotSdp => f.write_str("body is not application/sdp"),
            MediaError::BadSdp(why) => write!(f, "bad SDP: {why}"),
            MediaError::NoOffer => f.write_str("SDP answer without an offer"),
            MediaError::NoCommonCodec => f.write_str("no common codec"),
            MediaError::NoPorts => f.write_str("media port range exhausted"),
            MediaError::Relay => f.write_str("media relay failure"),
        }
    }
}

impl std::error::Error for MediaError {}

impl From<ParseError> for MediaError {
    fn from(e: ParseError) -> MediaError {
        match e {
            ParseError::NotSdp => MediaError::NotSdp,
            other => MediaError::BadSdp(other.reason()),
        }
    }
}

impl From<NegotiateError> for MediaError {
    fn from(e: NegotiateError) -> MediaError {
        match e {
            NegotiateError::BadSdp(why) => MediaError::BadSdp(why),
            NegotiateError::NoCommonCodec => MediaError::NoCommonCodec,
        }
    }
}

impl From<RelayError> for MediaError {
    fn from(e: RelayError) -> MediaError {
        match e {
            RelayError::NoPorts => MediaError::NoPorts,
            // Any other relay failure (`Io`, and what the relay may add): the call cannot get
            // media, which is the SBC's problem, not the peer's.
            _ => MediaError::Relay,
        }
    }
}
