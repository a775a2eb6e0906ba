//! Message parser and its errors.

use std::fmt;

use bytes::Bytes;

use super::headers::{Header, HeaderName, NameAddr, Via, list_items, parse_u32};
use super::message::{Message, RequestLine, StartLine, StatusLine};
use super::method::Method;
use super::uri::{Scheme, Uri, trim_range};

/// Size limits applied before anything is interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message in bytes (head and body).
    pub max_size: usize,
    /// Largest number of header fields.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_size: 65_535, max_headers: 128 }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Larger than [`Limits::max_size`].
    TooLarge,
    /// More header fields than [`Limits::max_headers`].
    TooManyHeaders,
    /// No blank line ending the header section.
    Incomplete,
    /// Bytes that are not valid in a header section (NUL, bare CR...).
    BadBytes,
    /// Start line is neither a Request-Line nor a Status-Line.
    BadStartLine,
    /// SIP version other than 2.0 (answered 505).
    UnsupportedVersion,
    /// Status code outside 100-699.
    BadStatusCode,
    /// A header line without a colon or with an invalid name.
    BadHeaderLine,
    /// A URI that does not parse.
    BadUri,
    /// A Via that does not parse.
    BadVia,
    /// A From/To/Contact/Route that does not parse.
    BadNameAddr,
    /// A CSeq that does not parse, or whose method differs from the request's.
    BadCSeq,
    /// Content-Length missing where required, negative, not a number, or repeated.
    BadContentLength,
    /// Content-Length larger than the bytes received.
    BodyTruncated,
    /// Max-Forwards not a number.
    BadMaxForwards,
    /// One of Via, From, To, Call-ID, CSeq is missing.
    MissingHeader(HeaderName),
    /// A header that must appear once appears several times.
    DuplicateHeader(HeaderName),
}

impl ParseError {
    /// Status code of the response to a request that failed this way (RFC 3261 section 8.2 and
    /// 21.4). Responses that fail to parse are never answered.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::TooLarge => 513,
            ParseError::UnsupportedVersion => 505,
            _ => 400,
        }
    }

    /// Reason phrase for the response, which also tells the peer what was wrong.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::TooLarge => "Message Too Large",
            ParseError::TooManyHeaders => "Too Many Header Fields",
            ParseError::Incomplete => "Incomplete Message",
            ParseError::BadBytes => "Invalid Characters",
            ParseError::BadStartLine => "Bad Request-Line",
            ParseError::UnsupportedVersion => "Version Not Supported",
            ParseError::BadStatusCode => "Bad Status Code",
            ParseError::BadHeaderLine => "Bad Header Field",
            ParseError::BadUri => "Bad URI",
            ParseError::BadVia => "Bad Via",
            ParseError::BadNameAddr => "Bad Address",
            ParseError::BadCSeq => "Bad CSeq",
            ParseError::BadContentLength => "Bad Content-Length",
            ParseError::BodyTruncated => "Content-Length Exceeds Body",
            ParseError::BadMaxForwards => "Bad Max-Forwards",
            ParseError::MissingHeader(_) => "Missing Mandatory Header",
            ParseError::DuplicateHeader(_) => "Duplicate Header",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::MissingHeader(h) => write!(f, "missing {h} header"),
            ParseError::DuplicateHeader(h) => write!(f, "duplicate {h} header"),
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for ParseError {}

/// token characters (RFC 3261 section 25.1).
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~')
}

/// Parses one message from a datagram (or a frame cut by [`super::stream`]) with default limits.
pub fn parse(data: Bytes) -> Result<Message, ParseError> {
    parse_with(data, &Limits::default())
}

/// Parses one message with explicit limits. On a datagram a missing Content-Length means "the rest
/// of the datagram"; extra bytes beyond Content-Length are discarded (RFC 3261 section 18.3).
pub fn parse_with(data: Bytes, limits: &Limits) -> Result<Message, ParseError> {
    if data.len() > limits.max_size {
        return Err(ParseError::TooLarge);
    }
    // RFC 3261 section 7.5: CRLFs before the start line are ignored.
    let mut start = 0;
    while start < data.len() && matches!(data[start], b'\r' | b'\n') {
        start += 1;
    }
    let (head_end, body_start) = find_head_end(&data, start).ok_or(ParseError::Incomplete)?;
    // NUL is allowed only as a quoted-pair (RFC 3261 section 25.1, RFC 4475 section 3.1.1.2).
    let head = &data[start..head_end];
    if memchr::memchr_iter(0, head).any(|i| i == 0 || head[i - 1] != b'\\') {
        return Err(ParseError::BadBytes);
    }

    let mut lines = LineIter { data: &data, pos: start, end: head_end };
    let (sl_a, sl_b) = lines.next().ok_or(ParseError::BadStartLine)?;
    let start_line = parse_start_line(&data.slice(sl_a..sl_b))?;

    let mut headers: Vec<Header> = Vec::with_capacity(16);
    // A header line, possibly followed by continuation lines (folding, RFC 3261 section 7.3.1).
    let mut current: Option<(usize, usize, usize)> = None; // (line start, colon, line end)
    let mut folded = false;
    let finish = |cur: (usize, usize, usize), folded: bool, headers: &mut Vec<Header>| {
        if headers.len() >= limits.max_headers {
            return Err(ParseError::TooManyHeaders);
        }
        headers.push(make_header(&data, cur, folded)?);
        Ok(())
    };
    for (a, b) in lines {
        if a < b && matches!(data[a], b' ' | b'\t') {
            match current.as_mut() {
                Some(cur) => {
                    cur.2 = b;
                    folded = true;
                }
                None => return Err(ParseError::BadHeaderLine),
            }
            continue;
        }
        if let Some(cur) = current.take() {
            finish(cur, folded, &mut headers)?;
        }
        folded = false;
        let colon = memchr::memchr(b':', &data[a..b]).ok_or(ParseError::BadHeaderLine)? + a;
        current = Some((a, colon, b));
    }
    if let Some(cur) = current.take() {
        finish(cur, folded, &mut headers)?;
    }

    let available = data.len() - body_start;
    let mut content_length = None;
    for h in headers.iter().filter(|h| h.name == HeaderName::ContentLength) {
        if content_length.is_some() {
            return Err(ParseError::BadContentLength);
        }
        let n = parse_u32(&h.value).ok_or(ParseError::BadContentLength)? as usize;
        content_length = Some(n);
    }
    let body_len = match content_length {
        Some(n) if n > available => return Err(ParseError::BodyTruncated),
        Some(n) => n,
        None => available,
    };
    let msg =
        Message { start: start_line, headers, body: data.slice(body_start..body_start + body_len) };
    validate(&msg)?;
    Ok(msg)
}

/// Returns (end of the last header line, start of the body).
pub(crate) fn find_head_end(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(p) = memchr::memchr(b'\n', &data[i..]) {
        let nl = i + p;
        // The blank line: "\n\r\n" or "\n\n".
        match data.get(nl + 1) {
            Some(b'\n') => return Some((nl + 1, nl + 2)),
            Some(b'\r') if data.get(nl + 2) == Some(&b'\n') => return Some((nl + 1, nl + 3)),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

struct LineIter<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
}

impl Iterator for LineIter<'_> {
    type Item = (usize, usize);
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.pos >= self.end {
            return None;
        }
        let a = self.pos;
        let nl = memchr::memchr(b'\n', &self.data[a..self.end]).map_or(self.end, |p| a + p);
        self.pos = nl + 1;
        let b = if nl > a && self.data[nl - 1] == b'\r' { nl - 1 } else { nl };
        Some((a, b))
    }
}

fn make_header(
    data: &Bytes,
    (a, colon, b): (usize, usize, usize),
    folded: bool,
) -> Result<Header, ParseError> {
    let (na, nb) = trim_range(data, a, colon);
    if na == nb
        || !data[na..nb].iter().all(|&c| is_token_char(c))
        || nb != colon && !data[nb..colon].iter().all(|c| matches!(c, b' ' | b'\t'))
    {
        return Err(ParseError::BadHeaderLine);
    }
    let name = HeaderName::from_bytes(&data.slice(na..nb));
    let (va, vb) = trim_range(data, colon + 1, b);
    let raw = &data[va..vb];
    if raw.contains(&b'\r') && !folded {
        return Err(ParseError::BadBytes);
    }
    let value = if folded {
        // Rare: replace each CRLF+WS run by one space; this is the only copying path.
        let mut v = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\r' || raw[i] == b'\n' {
                while i < raw.len() && matches!(raw[i], b'\r' | b'\n' | b' ' | b'\t') {
                    i += 1;
                }
                while v.last().is_some_and(|c: &u8| *c == b' ' || *c == b'\t') {
                    v.pop();
                }
                v.push(b' ');
            } else {
                v.push(raw[i]);
                i += 1;
            }
        }
        Bytes::from(v)
    } else {
        data.slice(va..vb)
    };
    Ok(Header { name, value })
}

fn parse_start_line(line: &Bytes) -> Result<StartLine, ParseError> {
    if line.starts_with(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
        if &line[..sp1] != b"SIP/2.0" {
            return Err(ParseError::UnsupportedVersion);
        }
        let rest = &line[sp1 + 1..];
        let code_end = memchr::memchr(b' ', rest).unwrap_or(rest.len());
        if code_end != 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadStatusCode);
        }
        let code = u16::from(rest[0] - b'0') * 100
            + u16::from(rest[1] - b'0') * 10
            + u16::from(rest[2] - b'0');
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStatusCode);
        }
        let reason =
            if code_end < rest.len() { line.slice(sp1 + 1 + code_end + 1..) } else { Bytes::new() };
        return Ok(StartLine::Response(StatusLine { code, reason }));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single spaces (RFC 3261 section 7.1).
    let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    let sp2 = memchr::memchr(b' ', &line[sp1 + 1..]).ok_or(ParseError::BadStartLine)? + sp1 + 1;
    let method = Method::from_token(&line.slice(..sp1)).ok_or(ParseError::BadStartLine)?;
    let version = &line[sp2 + 1..];
    if version.contains(&b' ') || sp2 == sp1 + 1 {
        return Err(ParseError::BadStartLine);
    }
    if !version.starts_with(b"SIP/") {
        return Err(ParseError::BadStartLine);
    }
    if version != b"SIP/2.0" {
        return Err(ParseError::UnsupportedVersion);
    }
    let uri = Uri::parse(line.slice(sp1 + 1..sp2))?;
    // Headers are not allowed in a Request-URI (RFC 3261 section 19.1.1); forwarding them is how
    // they would turn into real header fields (RFC 4475 section 3.1.2.11).
    if matches!(uri.scheme, Scheme::Sip | Scheme::Sips) && !uri.headers.is_empty() {
        return Err(ParseError::BadUri);
    }
    Ok(StartLine::Request(RequestLine { method, uri }))
}

/// Mandatory headers and the syntax of what the engine relies on (RFC 3261 section 8.1.1).
fn validate(msg: &Message) -> Result<(), ParseError> {
    for name in [
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::From,
        HeaderName::To,
        HeaderName::MaxForwards,
    ] {
        let mut it = msg.headers.iter().filter(|h| h.name == name);
        match (it.next(), it.next()) {
            (None, _) if name != HeaderName::MaxForwards => {
                return Err(ParseError::MissingHeader(name));
            }
            (Some(_), Some(_)) => return Err(ParseError::DuplicateHeader(name)),
            _ => {}
        }
    }
    if msg.header(&HeaderName::Via).is_none() {
        return Err(ParseError::MissingHeader(HeaderName::Via));
    }
    if msg.call_id().is_none_or(|c| c.is_empty() || c.iter().any(|b| b.is_ascii_whitespace())) {
        return Err(ParseError::MissingHeader(HeaderName::CallId));
    }
    let cseq = msg.cseq()?;
    if let StartLine::Request(rl) = &msg.start
        && cseq.method != rl.method
    {
        return Err(ParseError::BadCSeq);
    }
    // Every Via value, not only the top one: a malformed one further down is as much a syntax
    // error (RFC 4475 section 3.1.2.1), and responses are routed by them.
    for h in msg.headers.iter().filter(|h| h.name == HeaderName::Via) {
        for item in list_items(&h.value) {
            Via::parse(&item.ok_or(ParseError::BadVia)?)?;
        }
    }
    msg.from()?;
    msg.to()?;
    // Contact values the B2BUA will read; `*` is left to the registrar (RFC 3261 section 10.3).
    for h in msg.headers.iter().filter(|h| h.name == HeaderName::Contact && &h.value[..] != b"*") {
        for item in list_items(&h.value) {
            NameAddr::parse(&item.ok_or(ParseError::BadNameAddr)?)?;
        }
    }
    if let Some(v) = msg.header(&HeaderName::MaxForwards) {
        parse_u32(v).ok_or(ParseError::BadMaxForwards)?;
    }
    Ok(())
}

/// Checks a header value that should be a list of NameAddr (Contact, Route, Record-Route).
pub(crate) fn parse_name_addr_list(v: &Bytes) -> Result<Vec<NameAddr>, ParseError> {
    super::headers::split_list(v).map(|item| NameAddr::parse(&item)).collect()
}

/// A stateless error response to a request that failed to parse, if one can be formed: its Via,
/// From, To, Call-ID and CSeq lines are copied as received (RFC 3261 section 8.2.6.2), those that
/// are missing are left out (RFC 4475 3.3.1: answer 400 even then). `None` for responses, ACKs
/// (never answered), and requests without a Via (there is nowhere to send an answer).
pub fn error_response(data: &[u8], err: &ParseError) -> Option<Bytes> {
    let mut start = 0;
    while start < data.len() && matches!(data[start], b'\r' | b'\n') {
        start += 1;
    }
    let data = &data[start..];
    let head_end = find_head_end(data, 0).map_or(data.len().min(8192), |(h, _)| h);
    let mut lines =
        data[..head_end].split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    if first.starts_with(b"SIP/") || first.starts_with(b"ACK ") {
        return None;
    }
    let mut vias: Vec<&[u8]> = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for line in lines {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (na, nb) = trim_range(line, 0, colon);
        let (va, vb) = trim_range(line, colon + 1, line.len());
        let value = &line[va..vb];
        if value.iter().any(|&b| b < 0x20 && b != b'\t') {
            return None;
        }
        match HeaderName::from_bytes(&Bytes::copy_from_slice(&line[na..nb])) {
            HeaderName::Via => vias.push(value),
            HeaderName::From => from = from.or(Some(value)),
            HeaderName::To => to = to.or(Some(value)),
            HeaderName::CallId => call_id = call_id.or(Some(value)),
            HeaderName::CSeq => cseq = cseq.or(Some(value)),
            _ => {}
        }
    }
    if vias.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!("SIP/2.0 {} {}\r\n", err.status(), err.reason()).as_bytes());
    for v in vias {
        out.extend_from_slice(b"Via: ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    let present = [("From", from), ("To", to), ("Call-ID", call_id), ("CSeq", cseq)];
    for (name, v) in present.into_iter().filter_map(|(n, v)| Some((n, v?))) {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        if name == "To" && !v.windows(4).any(|w| w.eq_ignore_ascii_case(b"tag=")) {
            out.extend_from_slice(b";tag=sbc-err");
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:b@x>\r\n\
From: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n";

    fn options(extra: &str) -> Result<Message, ParseError> {
        parse(Bytes::from(format!(
            "OPTIONS sip:b@x SIP/2.0\r\n{HEAD}{extra}Content-Length: 0\r\n\r\n"
        )))
    }

    #[test]
    fn nul_only_as_a_quoted_pair() {
        // RFC 4475 3.1.1.2 quotes a NUL in a display name.
        assert!(options("Subject: \"a\\\0b\"\r\n").is_ok());
        assert_eq!(options("Subject: a\0b\r\n"), Err(ParseError::BadBytes));
    }

    #[test]
    fn every_via_value_must_parse() {
        // RFC 4475 3.1.2.1: the fault is past the top Via value.
        assert_eq!(options("Via: SIP/2.0/UDP 192.0.2.15;;,;,,\r\n"), Err(ParseError::BadVia));
        assert_eq!(options("Via: SIP/2.0/UDP a, ,SIP/2.0/UDP b\r\n"), Err(ParseError::BadVia));
        assert!(options("v: SIP/2.0/UDP a ,SIP/2.0/TCP [2001:db8::1]:5061\r\n").is_ok());
    }

    #[test]
    fn contact_values_must_parse_but_star_is_fine() {
        assert_eq!(
            options("Contact: \"Joe\" <sip:joe@example.org>;;;;\r\n"),
            Err(ParseError::BadNameAddr)
        );
        assert_eq!(options("Contact: <sip:a@x>,,<sip:b@x>\r\n"), Err(ParseError::BadNameAddr));
        assert!(options("Contact: *\r\n").is_ok());
        assert!(options("m: <sip:a@x>;expires=60, sip:b@x;q=0.5\r\n").is_ok());
    }

    #[test]
    fn request_uri_headers_are_refused() {
        // RFC 3261 19.1.1, RFC 4475 3.1.2.11.
        let m = format!("INVITE sip:b@x?Route=%3Csip:y%3E SIP/2.0\r\n{HEAD}\r\n")
            .replace("1 OPTIONS", "1 INVITE");
        assert_eq!(parse(Bytes::from(m)), Err(ParseError::BadUri));
    }
}
