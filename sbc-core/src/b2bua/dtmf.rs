//! The bodies of DTMF INFO requests (SIP INFO <-> RFC 4733 interworking, see `sbc_media::dtmf`).
//!
//! Two bodies are in use (neither has an RFC; RFC 6086 leaves INFO packages to the peers):
//! `application/dtmf-relay` (Cisco, SIPp, Asterisk, FreeSWITCH: `Signal=5` and an optional
//! `Duration=160` in ms, one per line) and `application/dtmf` (the digit alone). Anything else
//! is not a key press and is relayed as any INFO. Wire input: nothing here panics.

use sbc_media::dtmf::{DEFAULT_DURATION_MS, DtmfEvent, clamp_duration, event_of};

/// What an INFO body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InfoBody {
    /// A key press (duration clamped to what the SBC generates).
    Digit(DtmfEvent),
    /// A DTMF content type whose body is unusable (400).
    Malformed(&'static str),
    /// Not a DTMF body.
    Other,
}

/// Reads the key press of an INFO from its `Content-Type` and body.
pub(crate) fn parse_info(content_type: Option<&[u8]>, body: &[u8]) -> InfoBody {
    let Some(ct) = content_type else { return InfoBody::Other };
    let ct = String::from_utf8_lossy(ct);
    let media_type = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let Ok(text) = std::str::from_utf8(body) else {
        return match media_type.as_str() {
            "application/dtmf-relay" | "application/dtmf" => InfoBody::Malformed("not UTF-8"),
            _ => InfoBody::Other,
        };
    };
    match media_type.as_str() {
        "application/dtmf-relay" => dtmf_relay(text),
        "application/dtmf" => match digit(text.trim()) {
            Some(event) => InfoBody::Digit(DtmfEvent { event, duration_ms: DEFAULT_DURATION_MS }),
            None => InfoBody::Malformed("no digit"),
        },
        _ => InfoBody::Other,
    }
}

fn dtmf_relay(text: &str) -> InfoBody {
    let (mut signal, mut duration) = (None, None);
    for line in text.lines() {
        let Some((name, value)) = line.split_once('=') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "signal" => match digit(value) {
                Some(event) => signal = Some(event),
                None => return InfoBody::Malformed("bad Signal"),
            },
            "duration" => match value.parse::<u32>() {
                Ok(ms) => duration = Some(ms),
                Err(_) => return InfoBody::Malformed("bad Duration"),
            },
            _ => {}
        }
    }
    match signal {
        Some(event) => InfoBody::Digit(DtmfEvent {
            event,
            duration_ms: clamp_duration(duration.unwrap_or(DEFAULT_DURATION_MS)),
        }),
        None => InfoBody::Malformed("no Signal"),
    }
}

/// One digit: `0`-`9`, `*`, `#`, `A`-`D`, or the event codes 10-15 some phones send for them.
fn digit(s: &str) -> Option<u8> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => event_of(c),
        _ => s.parse::<u8>().ok().filter(|e| (10..=15).contains(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: u8, duration_ms: u32) -> InfoBody {
        InfoBody::Digit(DtmfEvent { event, duration_ms })
    }

    const RELAY: Option<&[u8]> = Some(b"application/dtmf-relay");

    #[test]
    fn dtmf_relay_bodies() {
        assert_eq!(parse_info(RELAY, b"Signal=5\r\nDuration=200\r\n"), ev(5, 200));
        assert_eq!(parse_info(RELAY, b"Signal=#\n"), ev(11, 250), "default duration");
        assert_eq!(parse_info(RELAY, b"signal= * \r\nduration = 10\r\n"), ev(10, 40), "clamped");
        assert_eq!(parse_info(RELAY, b"Signal=d\r\nDuration=99999\r\n"), ev(15, 5000));
        assert_eq!(parse_info(RELAY, b"Signal=11\r\n"), ev(11, 250));
        let ct: Option<&[u8]> = Some(b"Application/DTMF-Relay ; charset=x");
        assert_eq!(parse_info(ct, b"Signal=0"), ev(0, 250));
    }

    #[test]
    fn dtmf_bodies() {
        assert_eq!(parse_info(Some(b"application/dtmf"), b"7\r\n"), ev(7, 250));
        assert_eq!(parse_info(Some(b"application/dtmf"), b""), InfoBody::Malformed("no digit"));
    }

    #[test]
    fn malformed_and_other_bodies() {
        assert_eq!(parse_info(RELAY, b"Duration=100"), InfoBody::Malformed("no Signal"));
        assert_eq!(parse_info(RELAY, b"Signal=E"), InfoBody::Malformed("bad Signal"));
        assert_eq!(parse_info(RELAY, b"Signal=16"), InfoBody::Malformed("bad Signal"));
        assert_eq!(
            parse_info(RELAY, b"Signal=1\nDuration=-5"),
            InfoBody::Malformed("bad Duration")
        );
        assert_eq!(parse_info(RELAY, &[0xff, 0xfe]), InfoBody::Malformed("not UTF-8"));
        assert_eq!(parse_info(Some(b"application/xml"), b"<x/>"), InfoBody::Other);
        assert_eq!(parse_info(None, b"Signal=1"), InfoBody::Other);
    }
}
