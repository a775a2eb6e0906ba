//! Header fields: names (with compact forms, RFC 3261 section 7.3.3) and the typed views the B2BUA
//! needs. Values are interpreted on demand from the raw bytes.

use std::fmt;

use bytes::Bytes;

use super::method::Method;
use super::parse::{ParseError, is_token_char};
use super::uri::{Host, Uri, param_lookup, parse_hostport, trim_range};

macro_rules! header_names {
    ($( $variant:ident => $full:literal $(, $compact:literal)? ;)*) => {
        /// A header field name. Known names are recognised case-insensitively and in compact form;
        /// others keep their bytes as received.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[allow(missing_docs)] // each variant is the header field of the same name
        pub enum HeaderName {
            $( $variant, )*
            /// A header the SBC does not interpret, name kept as received.
            Other(Bytes),
        }

        impl HeaderName {
            /// Recognises a name (full or compact form, any case).
            pub fn from_bytes(raw: &Bytes) -> HeaderName {
                // Length first, then case-insensitive bytes: no copy, no allocation.
                $(
                    if raw.eq_ignore_ascii_case($full.as_bytes())
                        $( || raw.eq_ignore_ascii_case($compact.as_bytes()) )? {
                        return HeaderName::$variant;
                    }
                )*
                HeaderName::Other(raw.clone())
            }

            /// The full name as the SBC writes it.
            pub fn as_str(&self) -> &str {
                match self {
                    $( HeaderName::$variant => $full, )*
                    HeaderName::Other(b) => std::str::from_utf8(b).unwrap_or("X-Invalid"),
                }
            }
        }
    };
}

header_names! {
    Via => "Via", "v";
    From => "From", "f";
    To => "To", "t";
    CallId => "Call-ID", "i";
    CSeq => "CSeq";
    Contact => "Contact", "m";
    MaxForwards => "Max-Forwards";
    Route => "Route";
    RecordRoute => "Record-Route";
    ContentLength => "Content-Length", "l";
    ContentType => "Content-Type", "c";
    ContentEncoding => "Content-Encoding", "e";
    ContentDisposition => "Content-Disposition";
    Expires => "Expires";
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", "k";
    Unsupported => "Unsupported";
    Allow => "Allow";
    RSeq => "RSeq";
    RAck => "RAck";
    SessionExpires => "Session-Expires", "x";
    MinSe => "Min-SE";
    Reason => "Reason";
    RetryAfter => "Retry-After";
    UserAgent => "User-Agent";
    Server => "Server";
    Warning => "Warning";
    Event => "Event", "o";
    ReferTo => "Refer-To", "r";
    ReferredBy => "Referred-By", "b";
    SubscriptionState => "Subscription-State";
    Subject => "Subject", "s";
    Accept => "Accept";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl HeaderName {
    /// Whether this header may carry several comma-separated values (RFC 3261 section 7.3.1).
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Supported
                | HeaderName::Unsupported
                | HeaderName::Allow
                | HeaderName::ContentEncoding
                | HeaderName::Accept
        )
    }

    /// Compares with a configured name (full form, case-insensitive).
    pub fn matches(&self, name: &str) -> bool {
        self.as_str().eq_ignore_ascii_case(name)
    }
}

/// One header field: the name and the value with leading/trailing whitespace removed (and folding
/// replaced by a single space, RFC 3261 section 7.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name.
    pub name: HeaderName,
    /// Field value, byte-exact except for trimmed whitespace and unfolding.
    pub value: Bytes,
}

impl Header {
    /// Builds a header from text.
    pub fn new(name: HeaderName, value: impl Into<Bytes>) -> Header {
        Header { name, value: value.into() }
    }
}

/// Splits a list header value on commas outside quoted strings and angle brackets, skipping
/// empty items.
pub fn split_list(value: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    list_items(value).flatten()
}

/// Every item of a list header value, an empty one (`a,,b`, a trailing comma) as `None`: the
/// grammar has no empty items (RFC 3261 section 7.3.1), so a caller validating a message refuses
/// them.
pub(crate) fn list_items(value: &Bytes) -> impl Iterator<Item = Option<Bytes>> + '_ {
    let mut pos = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let start = pos;
        let (mut in_quote, mut in_angle, mut escaped) = (false, false, false);
        let mut end = value.len();
        for (i, &c) in value.iter().enumerate().skip(start) {
            if in_quote {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    in_quote = false;
                }
            } else if c == b'"' {
                in_quote = true;
            } else if c == b'<' {
                in_angle = true;
            } else if c == b'>' {
                in_angle = false;
            } else if c == b',' && !in_angle {
                end = i;
                break;
            }
        }
        if end == value.len() {
            done = true;
        }
        pos = end + 1;
        let (a, b) = trim_range(value, start, end);
        Some((a < b).then(|| value.slice(a..b)))
    })
}

/// Whether a `;`-separated list of generic-params (without its first `;`) is well formed: each a
/// token, optionally `=` and a token, a host or a quoted string, with LWS allowed around `;` and
/// `=` (RFC 3261 section 25.1). Bare IPv6 addresses are let through for Via `received`.
pub(crate) fn params_well_formed(p: &[u8]) -> bool {
    let skip_ws = |i: &mut usize| {
        while *i < p.len() && p[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let mut i = 0;
    loop {
        skip_ws(&mut i);
        let name = i;
        while i < p.len() && is_token_char(p[i]) {
            i += 1;
        }
        if i == name {
            return false;
        }
        skip_ws(&mut i);
        if i < p.len() && p[i] == b'=' {
            i += 1;
            skip_ws(&mut i);
            if i < p.len() && p[i] == b'"' {
                i += 1;
                loop {
                    match p.get(i) {
                        None => return false,
                        Some(b'\\') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            } else {
                let value = i;
                while i < p.len() && (is_token_char(p[i]) || matches!(p[i], b':' | b'[' | b']')) {
                    i += 1;
                }
                if i == value {
                    return false;
                }
            }
            skip_ws(&mut i);
        }
        if i >= p.len() {
            return true;
        }
        if p[i] != b';' {
            return false;
        }
        i += 1;
    }
}

/// A Via header value (RFC 3261 section 20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token, upper-cased as received (`UDP`, `TCP`, `TLS`, `WS`...).
    pub transport: Bytes,
    /// sent-by host.
    pub host: Host,
    /// sent-by port, if given.
    pub port: Option<u16>,
    /// Parameters after sent-by, without the first `;`.
    pub params: Bytes,
}

impl Via {
    /// Parses one Via value (one element of the list).
    pub fn parse(v: &Bytes) -> Result<Via, ParseError> {
        // sent-protocol = name LWS? "/" LWS? version LWS? "/" LWS? transport (LWS is allowed).
        let mut parts = [(0usize, 0usize); 3];
        let mut pos = 0;
        for (i, part) in parts.iter_mut().enumerate() {
            let end = if i < 2 {
                memchr::memchr(b'/', &v[pos..]).map(|e| pos + e).ok_or(ParseError::BadVia)?
            } else {
                let mut e = pos;
                while e < v.len() && v[e].is_ascii_whitespace() {
                    e += 1;
                }
                while e < v.len() && is_token_char(v[e]) {
                    e += 1;
                }
                e
            };
            *part = trim_range(v, pos, end);
            pos = if i < 2 { end + 1 } else { end };
        }
        if !v[parts[0].0..parts[0].1].eq_ignore_ascii_case(b"SIP")
            || &v[parts[1].0..parts[1].1] != b"2.0"
        {
            return Err(ParseError::BadVia);
        }
        let transport = v.slice(parts[2].0..parts[2].1);
        if transport.is_empty() || !transport.iter().all(|&b| is_token_char(b)) {
            return Err(ParseError::BadVia);
        }
        let semi = memchr::memchr(b';', &v[pos..]).map_or(v.len(), |e| pos + e);
        let (a, b) = trim_range(v, pos, semi);
        let (host, port) = parse_hostport(&v.slice(a..b)).map_err(|_| ParseError::BadVia)?;
        let params = if semi < v.len() {
            let params = v.slice(semi + 1..);
            if !params_well_formed(&params) {
                return Err(ParseError::BadVia);
            }
            params
        } else {
            Bytes::new()
        };
        Ok(Via { transport, host, port, params })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<Bytes> {
        self.param("branch")
    }

    /// Any parameter by name.
    pub fn param(&self, name: &str) -> Option<Bytes> {
        param_lookup(&self.params, name)
    }

    /// The `received` parameter as an address. RFC 3261's grammar has a bare IPv6 address there,
    /// RFC 5118 section 4.5 asks that the bracketed form be accepted too.
    pub fn received(&self) -> Option<std::net::IpAddr> {
        let v = self.param("received")?;
        let inner = match &v[..] {
            [b'[', inner @ .., b']'] => inner,
            other => other,
        };
        std::str::from_utf8(inner).ok()?.parse().ok()
    }

    /// Whether the branch carries the RFC 3261 magic cookie (section 8.1.1.7).
    pub fn is_rfc3261(&self) -> bool {
        self.branch().is_some_and(|b| b.len() > 7 && b[..7].eq_ignore_ascii_case(b"z9hG4bK"))
    }
}

/// A name-addr or addr-spec with header parameters: From, To, Contact, Route, Record-Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as written (quotes kept), if any.
    pub display: Option<Bytes>,
    /// The URI.
    pub uri: Uri,
    /// Header parameters after the URI, without the first `;`.
    pub params: Bytes,
}

impl NameAddr {
    /// Parses one value (not a list).
    pub fn parse(v: &Bytes) -> Result<NameAddr, ParseError> {
        let (mut a, b) = trim_range(v, 0, v.len());
        let mut display = None;
        if a < b && v[a] == b'"' {
            let mut i = a + 1;
            let mut escaped = false;
            loop {
                if i >= b {
                    return Err(ParseError::BadNameAddr);
                }
                match (escaped, v[i]) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => break,
                    _ => {}
                }
                i += 1;
            }
            display = Some(v.slice(a..i + 1));
            a = i + 1;
            while a < b && v[a].is_ascii_whitespace() {
                a += 1;
            }
            if a >= b || v[a] != b'<' {
                return Err(ParseError::BadNameAddr);
            }
        }
        if let Some(lt) = memchr::memchr(b'<', &v[a..b]).map(|p| a + p) {
            if display.is_none() {
                let (da, db) = trim_range(v, a, lt);
                if da < db {
                    // An unquoted display name is a sequence of tokens separated by LWS.
                    if !v[da..db].iter().all(|&c| is_token_char(c) || c == b' ' || c == b'\t') {
                        return Err(ParseError::BadNameAddr);
                    }
                    display = Some(v.slice(da..db));
                }
            }
            let gt =
                memchr::memchr(b'>', &v[lt..b]).map(|p| lt + p).ok_or(ParseError::BadNameAddr)?;
            let uri = Uri::parse(v.slice(lt + 1..gt))?;
            let rest = trim_range(v, gt + 1, b);
            let params = match &v[rest.0..rest.1] {
                [] => Bytes::new(),
                [b';', p @ ..] if params_well_formed(p) => v.slice(rest.0 + 1..rest.1),
                _ => return Err(ParseError::BadNameAddr),
            };
            Ok(NameAddr { display, uri, params })
        } else {
            // addr-spec: any ';' params belong to the header, not the URI, and a URI with a '?'
            // must be enclosed in <> (RFC 3261 section 20.10, RFC 4475 section 3.1.2.13).
            let semi = memchr::memchr(b';', &v[a..b]).map_or(b, |p| a + p);
            let (ua, ub) = trim_range(v, a, semi);
            if v[ua..ub].contains(&b'?') {
                return Err(ParseError::BadNameAddr);
            }
            let uri = Uri::parse(v.slice(ua..ub))?;
            let params = if semi < b {
                if !params_well_formed(&v[semi + 1..b]) {
                    return Err(ParseError::BadNameAddr);
                }
                v.slice(semi + 1..b)
            } else {
                Bytes::new()
            };
            Ok(NameAddr { display: None, uri, params })
        }
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<Bytes> {
        self.param("tag")
    }

    /// Any header parameter by name.
    pub fn param(&self, name: &str) -> Option<Bytes> {
        param_lookup(&self.params, name)
    }
}

/// The CSeq header (RFC 3261 section 20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number, < 2**31 per RFC 3261 section 8.1.1.5 (we accept up to 2**32-1).
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses `number LWS method`.
    pub fn parse(v: &Bytes) -> Result<CSeq, ParseError> {
        let sp = v.iter().position(|b| b.is_ascii_whitespace()).ok_or(ParseError::BadCSeq)?;
        let seq = parse_u32(&v[..sp]).ok_or(ParseError::BadCSeq)?;
        let (a, b) = trim_range(v, sp, v.len());
        let method = Method::from_token(&v.slice(a..b)).ok_or(ParseError::BadCSeq)?;
        Ok(CSeq { seq, method })
    }
}

/// Parses a decimal u32 with no sign, no whitespace, at most 10 digits.
pub(crate) fn parse_u32(d: &[u8]) -> Option<u32> {
    if d.is_empty() || d.len() > 10 || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = d.iter().fold(0u64, |a, &c| a * 10 + u64::from(c - b'0'));
    u32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn compact_and_case_insensitive_names() {
        assert_eq!(HeaderName::from_bytes(&b("v")), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(&b("CALL-id")), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(&b("i")), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(&b("X-Foo")), HeaderName::Other(b("X-Foo")));
        assert_eq!(HeaderName::SessionExpires.as_str(), "Session-Expires");
    }

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        let v = b(r#""A, b" <sip:a@x;p=1,2>;q=1 , <sip:b@y>,"#);
        let items: Vec<Bytes> = split_list(&v).collect();
        assert_eq!(items, vec![b(r#""A, b" <sip:a@x;p=1,2>;q=1"#), b("<sip:b@y>")]);
    }

    #[test]
    fn via_with_lws_ipv6_and_params() {
        let v =
            Via::parse(&b("SIP / 2.0 / UDP [2001:db8::9]:5061 ;branch=z9hG4bKabc;rport")).unwrap();
        assert_eq!(&v.transport[..], b"UDP");
        assert_eq!(v.host, Host::Ip("2001:db8::9".parse().unwrap()));
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.branch().as_deref(), Some(&b"z9hG4bKabc"[..]));
        assert!(v.is_rfc3261());
        assert!(Via::parse(&b("SIP/3.0/UDP host")).is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n =
            NameAddr::parse(&b(r#""Bob \"B\"" <sip:bob@b.example;transport=tcp>;tag=42"#)).unwrap();
        assert_eq!(n.tag().as_deref(), Some(&b"42"[..]));
        assert_eq!(n.uri.param("transport").as_deref(), Some(&b"tcp"[..]));
        let n = NameAddr::parse(&b("sip:carol@c.example;tag=7")).unwrap();
        assert_eq!(n.tag().as_deref(), Some(&b"7"[..]));
        assert!(n.uri.params.is_empty());
        let n = NameAddr::parse(&b("Carol Smith <tel:+123>")).unwrap();
        assert_eq!(n.display.as_deref(), Some(&b"Carol Smith"[..]));
        assert!(NameAddr::parse(&b(r#""unterminated <sip:x@y>"#)).is_err());
    }

    #[test]
    fn generic_params_grammar() {
        for ok in [
            "tag=1",
            " tag = 98asjd8",
            "lr",
            "newparam = newvalue ; secondparam ; q = 0.33",
            "received=2001:db8::9:255;branch=z9hG4bKas3",
            "received=[2001:db8::9:255]",
            "fromParam''~+*_!.-%=\"р\";tag=_token~1'+`*%!-.",
            "+sip.instance=\"<urn:uuid:1;2>\";reg-id=1",
        ] {
            assert!(params_well_formed(ok.as_bytes()), "{ok}");
        }
        for bad in ["", ";", ";;;", "tag=", "=1", "a b", "tag=\"open", "tag=1;"] {
            assert!(!params_well_formed(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn list_items_reports_empty_items() {
        let v = b("a, <sip:x,y>,,b,");
        let items: Vec<Option<Bytes>> = list_items(&v).collect();
        assert_eq!(items, vec![Some(b("a")), Some(b("<sip:x,y>")), None, Some(b("b")), None]);
        assert_eq!(split_list(&v).count(), 3);
    }

    #[test]
    fn via_params_and_received() {
        // RFC 4475 3.1.2.1: empty parameters are a syntax error.
        assert!(Via::parse(&b("SIP/2.0/UDP 192.0.2.15;;")).is_err());
        assert!(Via::parse(&b("SIP/2.0/UDP h;branch=z9hG4bK1;")).is_err());
        // RFC 5118 4.5: received with and without brackets.
        for v in [
            "SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111",
            "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3",
        ] {
            let via = Via::parse(&b(v)).unwrap();
            assert_eq!(via.received(), Some("2001:db8::9:255".parse().unwrap()));
            assert!(via.is_rfc3261());
        }
        assert_eq!(Via::parse(&b("SIP/2.0/UDP h;received=junk")).unwrap().received(), None);
    }

    #[test]
    fn addr_spec_is_trimmed_and_may_not_hold_headers() {
        // RFC 4475 3.1.1.1: LWS before the ';' of an addr-spec's parameters.
        let n = NameAddr::parse(&b("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n"))
            .unwrap();
        assert_eq!(n.uri.host, Some(Host::Name(b("chair-dnrc.example.com"))));
        assert_eq!(n.tag().as_deref(), Some(&b"1918181833n"[..]));
        // RFC 4475 3.1.2.13: a URI with '?' must be in <>.
        assert!(
            NameAddr::parse(&b("sip:user@example.com?Route=%3Csip:sip.example.com%3E")).is_err()
        );
        assert!(
            NameAddr::parse(&b("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>")).is_ok()
        );
        // RFC 4475 3.1.2.1: empty header parameters.
        assert!(NameAddr::parse(&b("\"Joe\" <sip:joe@example.org>;;;;")).is_err());
        assert!(NameAddr::parse(&b("<sip:joe@example.org>;")).is_err());
    }

    #[test]
    fn cseq_bounds() {
        assert_eq!(CSeq::parse(&b("4294967295 INVITE")).unwrap().seq, u32::MAX);
        assert!(CSeq::parse(&b("4294967296 INVITE")).is_err());
        assert!(CSeq::parse(&b("-1 INVITE")).is_err());
        assert_eq!(
            CSeq::parse(&b("1   NEWMETHOD")).unwrap().method,
            Method::Extension(b("NEWMETHOD"))
        );
    }
}
