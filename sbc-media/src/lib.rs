//! Media plane of the SBC.
//!
//! sbc-core hands every SDP body of a call to a [`MediaPlane`] and sends on what it returns: an
//! offer from one leg becomes the offer sent on the other, and so on for answers, keyed by a
//! [`MediaSessionId`] the core allocates per call. Today the plane validates the SDP and passes it
//! through unchanged; the media issue replaces the inside (port leases, rewriting, RTP relay)
//! without changing this API, so the call path already goes through it.

pub mod backend;
pub mod negotiate;
pub mod sdp;
mod virtual_backend;

pub use virtual_backend::VirtualBackend;

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;

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

/// Why an SDP was refused (answered 488 by the core).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaError {
    /// The body is not an SDP session description.
    NotSdp,
    /// The SDP is syntactically invalid.
    BadSdp(&'static str),
    /// An answer arrived for a session that has no offer.
    NoOffer,
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::NotSdp => f.write_str("body is not application/sdp"),
            MediaError::BadSdp(why) => write!(f, "bad SDP: {why}"),
            MediaError::NoOffer => f.write_str("SDP answer without an offer"),
        }
    }
}

impl std::error::Error for MediaError {}

#[derive(Debug, Default)]
struct Session {
    offers: u32,
    answers: u32,
}

/// The media plane of one signalling shard.
#[derive(Debug, Default)]
pub struct MediaPlane {
    sessions: HashMap<MediaSessionId, Session>,
}

impl MediaPlane {
    /// An empty plane.
    pub fn new() -> MediaPlane {
        MediaPlane::default()
    }

    /// An SDP offer from `from`; returns the SDP to send on the other leg.
    pub fn offer(
        &mut self,
        id: MediaSessionId,
        from: LegSide,
        sdp: &Bytes,
    ) -> Result<Bytes, MediaError> {
        let _ = from;
        check_sdp(sdp)?;
        self.sessions.entry(id).or_default().offers += 1;
        Ok(sdp.clone())
    }

    /// An SDP answer from `from`; returns the SDP to send on the other leg.
    pub fn answer(
        &mut self,
        id: MediaSessionId,
        from: LegSide,
        sdp: &Bytes,
    ) -> Result<Bytes, MediaError> {
        let _ = from;
        check_sdp(sdp)?;
        let session = self.sessions.get_mut(&id).ok_or(MediaError::NoOffer)?;
        session.answers += 1;
        Ok(sdp.clone())
    }

    /// The call ended: give back everything the session holds.
    pub fn release(&mut self, id: MediaSessionId) {
        self.sessions.remove(&id);
    }

    /// Number of live sessions (for metrics and leak tests).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// Minimal RFC 4566 shape check: `v=0` first, then `type=value` lines.
fn check_sdp(sdp: &[u8]) -> Result<(), MediaError> {
    if !sdp.starts_with(b"v=0") {
        return Err(MediaError::NotSdp);
    }
    for line in sdp.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.len() < 2 || line[1] != b'=' || !line[0].is_ascii_lowercase() {
            return Err(MediaError::BadSdp("line is not type=value"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_valid_sdp_and_tracks_sessions() {
        let mut plane = MediaPlane::new();
        let sdp = Bytes::from_static(
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n",
        );
        let id = MediaSessionId(7);
        assert_eq!(plane.answer(id, LegSide::B, &sdp), Err(MediaError::NoOffer));
        assert_eq!(plane.offer(id, LegSide::A, &sdp).as_ref(), Ok(&sdp));
        assert!(plane.answer(id, LegSide::B, &sdp).is_ok());
        assert_eq!(plane.len(), 1);
        plane.release(id);
        assert!(plane.is_empty());
    }

    #[test]
    fn rejects_non_sdp() {
        let mut plane = MediaPlane::new();
        let id = MediaSessionId(1);
        assert_eq!(
            plane.offer(id, LegSide::A, &Bytes::from_static(b"hello")),
            Err(MediaError::NotSdp)
        );
        let bad = Bytes::from_static(b"v=0\r\nnonsense\r\n");
        assert!(matches!(plane.offer(id, LegSide::A, &bad), Err(MediaError::BadSdp(_))));
    }
}
