//! The message type, its typed accessors and its serializer.

use std::io::Write as _;

use bytes::Bytes;

use super::headers::{CSeq, Header, HeaderName, NameAddr, Via, parse_u32, split_list};
use super::method::Method;
use super::parse::{ParseError, parse_name_addr_list};
use super::uri::{Uri, trim};

/// Request-Line (RFC 3261 section 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// Method.
    pub method: Method,
    /// Request-URI.
    pub uri: Uri,
}

/// Status-Line (RFC 3261 section 7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    /// Status code, 100-699.
    pub code: u16,
    /// Reason phrase as received.
    pub reason: Bytes,
}

/// First line of a message.
// Boxing the request line would cost an allocation per request to save stack on responses.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// A request.
    Request(RequestLine),
    /// A response.
    Response(StatusLine),
}

/// A SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request-Line or Status-Line.
    pub start: StartLine,
    /// Header fields in order. Content-Length is rewritten from the body on serialization.
    pub headers: Vec<Header>,
    /// Body, exactly Content-Length bytes.
    pub body: Bytes,
}

impl Message {
    /// A new request with no headers.
    pub fn request(method: Method, uri: Uri) -> Message {
        Message {
            start: StartLine::Request(RequestLine { method, uri }),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// A new response with no headers.
    pub fn response(code: u16, reason: impl Into<Bytes>) -> Message {
        Message {
            start: StartLine::Response(StatusLine { code, reason: reason.into() }),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request(_))
    }

    /// Method of a request; for a response, `None` (use [`Message::cseq`]).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request(rl) => Some(&rl.method),
            StartLine::Response(_) => None,
        }
    }

    /// Request-URI of a request.
    pub fn request_uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request(rl) => Some(&rl.uri),
            StartLine::Response(_) => None,
        }
    }

    /// Status code of a response.
    pub fn code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response(sl) => Some(sl.code),
            StartLine::Request(_) => None,
        }
    }

    /// First value of a header.
    pub fn header(&self, name: &HeaderName) -> Option<&Bytes> {
        self.headers.iter().find(|h| &h.name == name).map(|h| &h.value)
    }

    /// Every value of a (list) header, across repeated lines and comma-separated items.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = Bytes> + 'a {
        self.headers.iter().filter(move |h| &h.name == name).flat_map(|h| split_list(&h.value))
    }

    /// Whether a token list header (Require, Supported...) contains `token` (case-insensitive).
    pub fn has_token(&self, name: &HeaderName, token: &str) -> bool {
        self.values(name).any(|v| v.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Appends a header.
    pub fn push(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        self.headers.push(Header { name, value: value.into() });
    }

    /// Appends a header built from format arguments.
    pub fn push_fmt(&mut self, name: HeaderName, args: std::fmt::Arguments<'_>) {
        let mut v = Vec::with_capacity(64);
        let _ = v.write_fmt(args);
        self.headers.push(Header { name, value: Bytes::from(v) });
    }

    /// Removes every occurrence of a header.
    pub fn remove(&mut self, name: &HeaderName) {
        self.headers.retain(|h| &h.name != name);
    }

    /// Replaces every occurrence of a header by one value.
    pub fn set(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        self.remove(&name);
        self.push(name, value);
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Result<Via, ParseError> {
        let first = self
            .values(&HeaderName::Via)
            .next()
            .ok_or(ParseError::MissingHeader(HeaderName::Via))?;
        Via::parse(&first)
    }

    /// Number of Via values.
    pub fn via_count(&self) -> usize {
        self.values(&HeaderName::Via).count()
    }

    /// Call-ID.
    pub fn call_id(&self) -> Option<&Bytes> {
        self.header(&HeaderName::CallId)
    }

    /// CSeq.
    pub fn cseq(&self) -> Result<CSeq, ParseError> {
        CSeq::parse(
            self.header(&HeaderName::CSeq).ok_or(ParseError::MissingHeader(HeaderName::CSeq))?,
        )
    }

    /// From.
    pub fn from(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(
            self.header(&HeaderName::From).ok_or(ParseError::MissingHeader(HeaderName::From))?,
        )
    }

    /// To.
    pub fn to(&self) -> Result<NameAddr, ParseError> {
        NameAddr::parse(
            self.header(&HeaderName::To).ok_or(ParseError::MissingHeader(HeaderName::To))?,
        )
    }

    /// First Contact, if any (`*` is not a NameAddr and yields an error).
    pub fn contact(&self) -> Option<Result<NameAddr, ParseError>> {
        self.values(&HeaderName::Contact).next().map(|v| NameAddr::parse(&v))
    }

    /// Record-Route values in order.
    pub fn record_route(&self) -> Result<Vec<NameAddr>, ParseError> {
        let mut out = Vec::new();
        for h in self.headers.iter().filter(|h| h.name == HeaderName::RecordRoute) {
            out.extend(parse_name_addr_list(&h.value)?);
        }
        Ok(out)
    }

    /// Max-Forwards, if present and valid.
    pub fn max_forwards(&self) -> Option<u32> {
        self.header(&HeaderName::MaxForwards).and_then(|v| parse_u32(v))
    }

    /// Expires in seconds.
    pub fn expires(&self) -> Option<u32> {
        self.header(&HeaderName::Expires).and_then(|v| parse_u32(v))
    }

    /// Content-Type value.
    pub fn content_type(&self) -> Option<&Bytes> {
        self.header(&HeaderName::ContentType)
    }

    /// RSeq (RFC 3262).
    pub fn rseq(&self) -> Option<u32> {
        self.header(&HeaderName::RSeq).and_then(|v| parse_u32(trim(v)))
    }

    /// RAck (RFC 3262): response number, CSeq number, method.
    pub fn rack(&self) -> Option<(u32, u32, Method)> {
        let v = self.header(&HeaderName::RAck)?;
        let mut parts = v.split(|b| b.is_ascii_whitespace()).filter(|p| !p.is_empty());
        let rseq = parse_u32(parts.next()?)?;
        let cseq = parse_u32(parts.next()?)?;
        let m = parts.next()?;
        let method = Method::from_token(&v.slice_ref(m))?;
        Some((rseq, cseq, method))
    }

    /// Session-Expires delta-seconds and the `refresher` parameter (RFC 4028).
    pub fn session_expires(&self) -> Option<(u32, Option<Bytes>)> {
        let v = self.header(&HeaderName::SessionExpires)?;
        let semi = memchr::memchr(b';', v).unwrap_or(v.len());
        let secs = parse_u32(trim(&v[..semi]))?;
        let params = if semi < v.len() { v.slice(semi + 1..) } else { Bytes::new() };
        Some((secs, super::uri::param_lookup(&params, "refresher")))
    }

    /// A response to this request per RFC 3261 section 8.2.6.2: Via, From, To, Call-ID and CSeq
    /// copied; `to_tag` is added to To when To has no tag yet.
    pub fn response_to(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut r = Message::response(code, Bytes::copy_from_slice(reason.as_bytes()));
        r.headers.reserve(6);
        for h in &self.headers {
            match h.name {
                HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                    r.headers.push(h.clone())
                }
                HeaderName::To => match to_tag {
                    Some(tag) if self.to().is_ok_and(|t| t.tag().is_none()) => r.push_fmt(
                        HeaderName::To,
                        format_args!("{};tag={tag}", String::from_utf8_lossy(&h.value)),
                    ),
                    _ => r.headers.push(h.clone()),
                },
                _ => {}
            }
        }
        r
    }

    /// Serializes the message, writing a Content-Length that matches the body: in the place of
    /// the first Content-Length header if there is one (later ones are dropped), else last.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match &self.start {
            StartLine::Request(rl) => {
                out.extend_from_slice(rl.method.as_bytes());
                out.push(b' ');
                out.extend_from_slice(&rl.uri.raw);
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response(sl) => {
                let _ = write!(out, "SIP/2.0 {} ", sl.code);
                out.extend_from_slice(&sl.reason);
                out.extend_from_slice(b"\r\n");
            }
        }
        let mut wrote_length = false;
        for h in &self.headers {
            if h.name == HeaderName::ContentLength {
                // One Content-Length, where it was, giving the body's length: the received
                // digits if they already say so, so that a parsed message is written back as
                // it came.
                if !wrote_length {
                    wrote_length = true;
                    self.write_content_length(out, Some(&h.value));
                }
                continue;
            }
            out.extend_from_slice(h.name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&h.value);
            out.extend_from_slice(b"\r\n");
        }
        if !wrote_length {
            self.write_content_length(out, None);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    fn write_content_length(&self, out: &mut Vec<u8>, received: Option<&Bytes>) {
        out.extend_from_slice(b"Content-Length: ");
        match received {
            Some(v) if parse_u32(v).is_some_and(|n| n as usize == self.body.len()) => {
                out.extend_from_slice(v);
            }
            _ => {
                let _ = write!(out, "{}", self.body.len());
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Serializes into a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut v = Vec::with_capacity(512 + self.body.len());
        self.write_to(&mut v);
        Bytes::from(v)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
v: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111\r\n\
Max-Forwards: 70\r\n\
t: <sip:bob@biloxi.example.com>\r\n\
f: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
i: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@[2001:db8::9:1]>\r\n\
X-Custom:   kept   as is\r\n\
Subject: folded\r\n  across lines\r\n\
c: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\r\nEXTRA";

    #[test]
    fn parses_compact_folded_ipv6_and_truncates_body() {
        let m = parse(Bytes::from_static(INVITE)).unwrap();
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.top_via().unwrap().branch().as_deref(), Some(&b"z9hG4bKas3-111"[..]));
        assert_eq!(m.from().unwrap().tag().as_deref(), Some(&b"9fxced76sl"[..]));
        assert_eq!(m.cseq().unwrap().seq, 314159);
        assert_eq!(
            m.header(&HeaderName::Subject).map(|v| &v[..]),
            Some(&b"folded across lines"[..])
        );
        assert_eq!(&m.body[..], b"v=0\r");
        let x = m.header(&HeaderName::Other(Bytes::from_static(b"X-Custom"))).unwrap();
        assert_eq!(&x[..], b"kept   as is");
    }

    #[test]
    fn round_trip_is_stable() {
        let m = parse(Bytes::from_static(INVITE)).unwrap();
        let once = m.to_bytes();
        let again = parse(once.clone()).unwrap();
        assert_eq!(again.to_bytes(), once);
        assert_eq!(again.headers.len(), m.headers.len());
    }

    #[test]
    fn rejects_what_rfc3261_forbids() {
        let no_cl_body =
            b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:b@x>\r\n\
From: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 50\r\n\r\nshort";
        assert_eq!(parse(Bytes::from_static(no_cl_body)), Err(ParseError::BodyTruncated));
        let mismatch =
            b"OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:b@x>\r\n\
From: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(parse(Bytes::from_static(mismatch)), Err(ParseError::BadCSeq));
        let version = b"OPTIONS sip:b@x SIP/7.0\r\nVia: SIP/2.0/UDP h\r\n\r\n";
        assert_eq!(parse(Bytes::from_static(version)), Err(ParseError::UnsupportedVersion));
        let two_to =
            b"OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:b@x>\r\n\
To: <sip:c@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert_eq!(
            parse(Bytes::from_static(two_to)),
            Err(ParseError::DuplicateHeader(HeaderName::To))
        );
    }

    #[test]
    fn content_length_is_written_in_place_and_from_the_body() {
        let m = parse(Bytes::from_static(
            b"OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 03\r\n\
To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\nabc",
        ))
        .unwrap();
        let out = m.to_bytes();
        // Same place, same digits: they already give the body's length.
        assert!(out.starts_with(
            b"OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 03\r\nTo:"
        ));
        assert_eq!(parse(out).unwrap(), m);
        let mut shorter = m.clone();
        shorter.body = Bytes::from_static(b"ab");
        let out = shorter.to_bytes();
        assert!(out.windows(19).any(|w| w == b"Content-Length: 2\r\n"));
        let mut none = m.clone();
        none.remove(&HeaderName::ContentLength);
        assert!(none.to_bytes().ends_with(b"Content-Length: 3\r\n\r\nabc"));
    }

    #[test]
    fn unknown_method_and_tel_uri_are_fine() {
        let m = b"NEWMETHOD tel:+15551234 SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nTo: <tel:+15551234>\r\n\
From: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 8 NEWMETHOD\r\nContent-Length: 0\r\n\r\n";
        let m = parse(Bytes::from_static(m)).unwrap();
        assert_eq!(m.method(), Some(&Method::Extension(Bytes::from_static(b"NEWMETHOD"))));
        assert_eq!(m.request_uri().unwrap().user_str(), Some("+15551234"));
    }
}
