//! Session timers (RFC 4028), negotiated and enforced per leg.
//!
//! Each leg has its own interval and its own refresher: the SBC refreshes a leg where it is the
//! refresher (UPDATE at half the interval) and ends the call when a leg the peer should refresh goes
//! quiet, so a dead phone on one side never keeps a trunk channel billed on the other.

use std::time::{Duration, Instant};

use crate::sip::Message;

/// Smallest interval accepted (RFC 4028 section 4: Min-SE defaults to 90 s and may not be lower).
pub const MIN_SE: u32 = 90;
/// Interval the SBC asks for on leg B (RFC 4028 section 4 recommends 1800 s).
pub const DEFAULT_SE: u32 = 1800;

/// A leg's negotiated session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    /// Session interval.
    pub interval: Duration,
    /// Whether the SBC sends the refreshes on this leg.
    pub we_refresh: bool,
}

impl SessionTimer {
    /// Leg A (the SBC answers the INVITE): `Ok(None)` when the caller asked for no timer,
    /// `Err(MIN_SE)` when its interval is too small (answer 422 with Min-SE).
    pub fn negotiate_uas(
        invite: &Message,
        caller_supports_timer: bool,
    ) -> Result<Option<SessionTimer>, u32> {
        let Some((secs, refresher)) = invite.session_expires() else { return Ok(None) };
        if secs < MIN_SE {
            return Err(MIN_SE);
        }
        // RFC 4028 section 9: with no refresher chosen, the UAC refreshes if it supports timers.
        let we_refresh = match refresher.as_deref() {
            Some(r) if r.eq_ignore_ascii_case(b"uas") => true,
            Some(_) => false,
            None => !caller_supports_timer,
        };
        Ok(Some(SessionTimer { interval: Duration::from_secs(u64::from(secs)), we_refresh }))
    }

    /// Leg B (the SBC sent the INVITE), from the 2xx: no Session-Expires means the callee does
    /// not do session timers, and neither does the SBC on that leg.
    pub fn negotiate_uac(response: &Message) -> Option<SessionTimer> {
        let (secs, refresher) = response.session_expires()?;
        let secs = secs.max(MIN_SE);
        let we_refresh = !refresher.as_deref().is_some_and(|r| r.eq_ignore_ascii_case(b"uas"));
        Some(SessionTimer { interval: Duration::from_secs(u64::from(secs)), we_refresh })
    }

    /// Session-Expires value for a message the SBC sends on this leg: in a request the SBC is the
    /// UAC of that transaction, in a response its UAS.
    pub fn header(&self, in_request: bool) -> String {
        let refresher = match (self.we_refresh, in_request) {
            (true, true) | (false, false) => "uac",
            (true, false) | (false, true) => "uas",
        };
        format!("{};refresher={refresher}", self.interval.as_secs())
    }

    /// When to act next after a refresh at `now`: send ours at half the interval, or give up on
    /// the peer's at the interval minus min(32 s, interval/3) (RFC 4028 section 10).
    pub fn deadline(&self, now: Instant) -> Instant {
        if self.we_refresh {
            now + self.interval / 2
        } else {
            now + self.interval - (self.interval / 3).min(Duration::from_secs(32))
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn msg(se: &str) -> Message {
        let text = format!(
            "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
To: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n{se}Content-Length: 0\r\n\r\n"
        );
        crate::sip::parse(Bytes::from(text)).unwrap()
    }

    #[test]
    fn uas_negotiation() {
        assert_eq!(SessionTimer::negotiate_uas(&msg(""), true), Ok(None));
        assert_eq!(SessionTimer::negotiate_uas(&msg("Session-Expires: 60\r\n"), true), Err(90));
        let t = SessionTimer::negotiate_uas(&msg("Session-Expires: 120;refresher=uac\r\n"), true)
            .unwrap()
            .unwrap();
        assert!(!t.we_refresh);
        assert_eq!(t.header(false), "120;refresher=uac");
        let t = SessionTimer::negotiate_uas(&msg("x: 300\r\n"), false).unwrap().unwrap();
        assert!(t.we_refresh, "a caller without timer support cannot refresh");
        assert_eq!(t.header(false), "300;refresher=uas");
    }

    #[test]
    fn deadlines() {
        let now = Instant::now();
        let ours = SessionTimer { interval: Duration::from_secs(1800), we_refresh: true };
        assert_eq!(ours.deadline(now), now + Duration::from_secs(900));
        let theirs = SessionTimer { interval: Duration::from_secs(90), we_refresh: false };
        assert_eq!(theirs.deadline(now), now + Duration::from_secs(60));
        let long = SessionTimer { interval: Duration::from_secs(1800), we_refresh: false };
        assert_eq!(long.deadline(now), now + Duration::from_secs(1768));
    }
}
