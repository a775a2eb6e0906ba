//! SIP, SIPS and tel URIs (RFC 3261 section 19.1, RFC 3966), as views over the received bytes.

use std::fmt;
use std::net::IpAddr;

use bytes::Bytes;

use super::parse::ParseError;

/// URI scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Anything else (`urn:`, `http:`...), kept opaque.
    Other(Bytes),
}

/// The host part of a SIP URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A domain name, as received.
    Name(Bytes),
    /// An IPv4 or IPv6 address (IPv6 was written in brackets, RFC 5118).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(&String::from_utf8_lossy(n)),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// A parsed URI. `raw` is the URI exactly as received; the other fields are slices of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    /// The whole URI, byte-exact.
    pub raw: Bytes,
    /// Scheme.
    pub scheme: Scheme,
    /// User part (sip/sips) or the subscriber number (tel), still %-escaped.
    pub user: Option<Bytes>,
    /// Host (absent for tel and opaque schemes).
    pub host: Option<Host>,
    /// Port, if given.
    pub port: Option<u16>,
    /// `;param` section without the leading `;` (empty if none).
    pub params: Bytes,
    /// `?headers` section without the leading `?` (empty if none).
    pub headers: Bytes,
}

impl Uri {
    /// Parses a URI; rejects embedded whitespace and malformed host/port.
    pub fn parse(raw: Bytes) -> Result<Uri, ParseError> {
        if raw.is_empty() || raw.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return Err(ParseError::BadUri);
        }
        let colon = memchr::memchr(b':', &raw).ok_or(ParseError::BadUri)?;
        let scheme_tok = &raw[..colon];
        if scheme_tok.is_empty()
            || !scheme_tok[0].is_ascii_alphabetic()
            || !scheme_tok
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(ParseError::BadUri);
        }
        let scheme = if scheme_tok.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_tok.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_tok.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            return Ok(Uri {
                scheme: Scheme::Other(raw.slice(..colon)),
                user: None,
                host: None,
                port: None,
                params: Bytes::new(),
                headers: Bytes::new(),
                raw,
            });
        };
        let rest_start = colon + 1;
        let rest = &raw[rest_start..];

        if scheme == Scheme::Tel {
            let q = memchr::memchr(b'?', rest).unwrap_or(rest.len());
            let headers =
                if q < rest.len() { raw.slice(rest_start + q + 1..) } else { Bytes::new() };
            let semi = memchr::memchr(b';', &rest[..q]).unwrap_or(q);
            if semi == 0 {
                return Err(ParseError::BadUri);
            }
            let params = if semi < q {
                raw.slice(rest_start + semi + 1..rest_start + q)
            } else {
                Bytes::new()
            };
            return Ok(Uri {
                scheme,
                user: Some(raw.slice(rest_start..rest_start + semi)),
                host: None,
                port: None,
                params,
                headers,
                raw,
            });
        }

        // userinfo ends at the '@'. Neither parameters, headers nor the host may hold an unescaped
        // '@', while the user part may hold ';', '?' and '/' (RFC 3261 section 19.1.1 and 25.1,
        // RFC 4475 section 3.1.1.2), so the first '@' is the only one that can end a userinfo.
        let (user, hp_start) = match memchr::memchr(b'@', rest) {
            Some(at) => {
                let userinfo = &rest[..at];
                // Drop the password: the SBC never forwards it.
                let user_end = memchr::memchr(b':', userinfo).unwrap_or(at);
                if user_end == 0 {
                    return Err(ParseError::BadUri);
                }
                (Some(raw.slice(rest_start..rest_start + user_end)), at + 1)
            }
            None => (None, 0),
        };
        let after = &rest[hp_start..];
        let q = memchr::memchr(b'?', after).unwrap_or(after.len());
        let base = rest_start + hp_start;
        let headers = if q < after.len() { raw.slice(base + q + 1..) } else { Bytes::new() };
        let hp_and_params = &after[..q];
        let semi = memchr::memchr(b';', hp_and_params).unwrap_or(hp_and_params.len());
        let (host, port) = parse_hostport(&raw.slice(base..base + semi))?;
        let params = if semi < hp_and_params.len() {
            raw.slice(base + semi + 1..base + q)
        } else {
            Bytes::new()
        };
        Ok(Uri { scheme, user, host: Some(host), port, params, headers, raw })
    }

    /// Value of a URI parameter (`;name=value`), case-insensitive name; `Some(empty)` for a flag.
    pub fn param(&self, name: &str) -> Option<Bytes> {
        param_lookup(&self.params, name)
    }

    /// The user part as text, for routing and logs.
    pub fn user_str(&self) -> Option<&str> {
        self.user.as_ref().and_then(|u| std::str::from_utf8(u).ok())
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.raw))
    }
}

/// Parses `host[:port]` where host may be a bracketed IPv6 reference (RFC 5118).
pub(crate) fn parse_hostport(hp: &Bytes) -> Result<(Host, Option<u16>), ParseError> {
    if hp.is_empty() {
        return Err(ParseError::BadUri);
    }
    let (host_bytes, port_part) = if hp[0] == b'[' {
        let close = memchr::memchr(b']', hp).ok_or(ParseError::BadUri)?;
        let ip = parse_ipv6(&hp[1..close]).ok_or(ParseError::BadUri)?;
        let rest = &hp[close + 1..];
        let port = match rest {
            [] => None,
            [b':', p @ ..] => Some(parse_port(p)?),
            _ => return Err(ParseError::BadUri),
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    } else {
        match memchr::memchr(b':', hp) {
            Some(c) => (hp.slice(..c), Some(parse_port(&hp[c + 1..])?)),
            None => (hp.clone(), None),
        }
    };
    if host_bytes.is_empty()
        || !host_bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(ParseError::BadUri);
    }
    let host = match std::str::from_utf8(&host_bytes)
        .ok()
        .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
    {
        Some(v4) => Host::Ip(IpAddr::V4(v4)),
        None => Host::Name(host_bytes),
    };
    Ok((host, port_part))
}

/// An IPv6 address from inside an IPv6 reference. RFC 3261's ABNF wrongly admits three colons
/// before an embedded IPv4 address (`2001:db8:::192.0.2.1`); RFC 5118 section 4.10 asks that this
/// be tolerated as the two-colon form it meant.
fn parse_ipv6(inner: &[u8]) -> Option<std::net::Ipv6Addr> {
    let text = std::str::from_utf8(inner).ok()?;
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let bug = text.find(":::")?;
    let (head, tail) = text.split_at(bug);
    // Only the embedded-IPv4 form the ABNF bug produces, and only one colon removed.
    if !tail[3..].contains('.') || tail[3..].contains(':') {
        return None;
    }
    format!("{head}::{}", &tail[3..]).parse().ok()
}

fn parse_port(p: &[u8]) -> Result<u16, ParseError> {
    if p.is_empty() || p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadUri);
    }
    let v: u32 = p.iter().fold(0, |a, &d| a * 10 + u32::from(d - b'0'));
    u16::try_from(v).map_err(|_| ParseError::BadUri)
}

/// Looks up `name` in a `;`-separated parameter list (`a=b;c;d=e`), case-insensitively.
pub(crate) fn param_lookup(params: &Bytes, name: &str) -> Option<Bytes> {
    let mut start = 0;
    while start <= params.len() {
        let end = memchr::memchr(b';', &params[start..]).map_or(params.len(), |e| start + e);
        let item = &params[start..end];
        let (n, v) = match memchr::memchr(b'=', item) {
            Some(eq) => (&item[..eq], Some(start + eq + 1..end)),
            None => (item, None),
        };
        if trim(n).eq_ignore_ascii_case(name.as_bytes()) {
            return Some(match v {
                Some(r) => {
                    let (a, b) = trim_range(params, r.start, r.end);
                    params.slice(a..b)
                }
                None => Bytes::new(),
            });
        }
        start = end + 1;
    }
    None
}

pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let a = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let b = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(a, |p| p + 1);
    &s[a..b]
}

pub(crate) fn trim_range(s: &[u8], mut a: usize, mut b: usize) -> (usize, usize) {
    while a < b && s[a].is_ascii_whitespace() {
        a += 1;
    }
    while b > a && s[b - 1].is_ascii_whitespace() {
        b -= 1;
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &'static str) -> Uri {
        Uri::parse(Bytes::from_static(s.as_bytes())).unwrap()
    }

    #[test]
    fn sip_uri_with_everything() {
        let u = uri("sip:alice:secret@example.com:5070;transport=tcp;lr?Subject=x");
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some(&b"alice"[..]));
        assert_eq!(u.host, Some(Host::Name(Bytes::from_static(b"example.com"))));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("transport").as_deref(), Some(&b"tcp"[..]));
        assert_eq!(u.param("lr").as_deref(), Some(&b""[..]));
        assert_eq!(&u.headers[..], b"Subject=x");
    }

    #[test]
    fn ipv6_reference_and_user_params() {
        let u = uri("sip:+1234;phone-context=x@[2001:db8::10]:5060");
        assert_eq!(u.user.as_deref(), Some(&b"+1234;phone-context=x"[..]));
        assert_eq!(u.host, Some(Host::Ip("2001:db8::10".parse().unwrap())));
        assert_eq!(u.port, Some(5060));
        assert!(Uri::parse(Bytes::from_static(b"sip:[2001:db8::10")).is_err());
        assert!(Uri::parse(Bytes::from_static(b"sip:2001:db8::10")).is_err());
    }

    #[test]
    fn tel_and_opaque() {
        let u = uri("tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user.as_deref(), Some(&b"+1-201-555-0123"[..]));
        assert!(u.host.is_none());
        let o = uri("urn:service:sos");
        assert_eq!(o.scheme, Scheme::Other(Bytes::from_static(b"urn")));
    }

    #[test]
    fn user_part_may_hold_question_mark_and_semicolon() {
        // RFC 4475 3.1.1.2: '?' in the user part did end the URI at the headers.
        let u = uri(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        );
        assert_eq!(u.user_str(), Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
        assert_eq!(u.host, Some(Host::Name(Bytes::from_static(b"example.com"))));
        assert!(u.headers.is_empty() && u.params.is_empty());
        let u = uri("sip:user@example.com;lr?Route=%3Csip:a@b%3E");
        assert_eq!(u.user_str(), Some("user"));
        assert_eq!(&u.headers[..], b"Route=%3Csip:a@b%3E");
    }

    #[test]
    fn rfc3261_abnf_three_colon_ipv6_is_tolerated() {
        // RFC 5118 4.10.
        let u = uri("sip:user@[2001:db8:::192.0.2.1]");
        assert_eq!(u.host, Some(Host::Ip("2001:db8::192.0.2.1".parse().unwrap())));
        assert!(Uri::parse(Bytes::from_static(b"sip:[2001:db8:::1]")).is_err());
        assert!(Uri::parse(Bytes::from_static(b"sip:[2001:db8::::192.0.2.1]")).is_err());
    }

    #[test]
    fn rejects_whitespace_and_bad_ports() {
        assert!(Uri::parse(Bytes::from_static(b"sip:a b@x")).is_err());
        assert!(Uri::parse(Bytes::from_static(b"sip:x:99999")).is_err());
        assert!(Uri::parse(Bytes::from_static(b"sip:")).is_err());
    }
}
