//! Framing of SIP messages on a byte stream (TCP, TLS) by Content-Length (RFC 3261 section 18.3),
//! with RFC 5626 CRLF keep-alives.

use bytes::{Bytes, BytesMut};

use super::headers::parse_u32;
use super::parse::{Limits, ParseError, find_head_end};
use super::uri::trim_range;

/// What was cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete message, to be handed to [`super::parse_with`].
    Message(Bytes),
    /// A double-CRLF ping (RFC 5626 section 3.5.1): answer with a single CRLF.
    Ping,
}

/// Cuts the next frame from `buf`. `Ok(None)` means "need more bytes". An error is fatal for the
/// connection: the stream can no longer be framed (missing Content-Length, oversize).
pub fn next_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ParseError> {
    loop {
        if buf.starts_with(b"\r\n\r\n") {
            let _ = buf.split_to(4);
            return Ok(Some(Frame::Ping));
        }
        // Too short to tell a ping from a pong yet. Anything else is the start of a message, and
        // must not be waited on forever.
        if !buf.is_empty() && buf.len() < 4 && b"\r\n\r\n".starts_with(buf) {
            return Ok(None);
        }
        // A lone CRLF is a pong, or padding before a message (RFC 3261 section 7.5). Dropped as
        // soon as it cannot be the start of a ping, so that how the stream was cut does not
        // matter ("\r\n\n" must not be read as an empty header section).
        if buf.starts_with(b"\r\n") {
            let _ = buf.split_to(2);
            continue;
        }
        break;
    }
    let Some((head_end, body_start)) = find_head_end(buf, 0) else {
        if buf.len() > limits.max_size {
            return Err(ParseError::TooLarge);
        }
        return Ok(None);
    };
    let content_length = content_length(&buf[..head_end])?;
    let total = body_start.saturating_add(content_length);
    if total > limits.max_size {
        return Err(ParseError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame::Message(buf.split_to(total).freeze())))
}

/// The Content-Length of a header section, read the way the parser will read it: the start line
/// and folded continuation lines are not header fields (a continuation line that looks like
/// `Content-Length: 5` belongs to the field above it).
fn content_length(head: &[u8]) -> Result<usize, ParseError> {
    let mut found = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let (a, b) = trim_range(line, 0, colon);
        let name = &line[a..b];
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            if found.is_some() {
                return Err(ParseError::BadContentLength);
            }
            let (va, vb) = trim_range(line, colon + 1, line.len());
            found = Some(parse_u32(&line[va..vb]).ok_or(ParseError::BadContentLength)? as usize);
        }
    }
    found.ok_or(ParseError::BadContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pipelined_messages_split_anywhere() {
        let one = b"OPTIONS sip:x SIP/2.0\r\nl: 3\r\n\r\nabc";
        let mut stream = Vec::new();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(one);
        stream.extend_from_slice(one);
        for cut in 0..stream.len() {
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut frames = Vec::new();
            let limits = Limits::default();
            let push = |buf: &mut BytesMut, frames: &mut Vec<Frame>| {
                while let Some(f) = next_frame(buf, &limits).unwrap() {
                    frames.push(f);
                }
            };
            push(&mut buf, &mut frames);
            buf.extend_from_slice(&stream[cut..]);
            push(&mut buf, &mut frames);
            assert_eq!(frames.len(), 3, "cut at {cut}");
            assert_eq!(frames[0], Frame::Ping);
            assert_eq!(frames[2], Frame::Message(Bytes::from_static(one)));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_folded_line_is_not_a_content_length() {
        // The parser reads " l: 5" as the continuation of Subject; framing must agree.
        let msg = b"OPTIONS sip:x SIP/2.0\r\nSubject: a\r\n l: 5\r\nl: 2\r\n\r\nabXYZ";
        let mut buf = BytesMut::from(&msg[..]);
        let frame = next_frame(&mut buf, &Limits::default()).unwrap();
        assert_eq!(frame, Some(Frame::Message(Bytes::copy_from_slice(&msg[..msg.len() - 3]))));
    }

    #[test]
    fn a_lone_cr_does_not_stall_the_stream() {
        let limits = Limits { max_size: 64, max_headers: 10 };
        let mut buf = BytesMut::from(&b"\r"[..]);
        assert_eq!(next_frame(&mut buf, &limits), Ok(None));
        buf.extend_from_slice(&[b'x'; 100]);
        assert_eq!(next_frame(&mut buf, &limits), Err(ParseError::TooLarge));
    }

    #[test]
    fn crlf_then_lf_frames_alike_whole_or_cut() {
        // Found by the sip_stream fuzz target: cut after "\r\n\n", the CRLF was kept and
        // "\r\n\n" taken for an empty header section without Content-Length.
        let stream = b"\r\n\n\0\t\0\r\n";
        let limits = Limits::default();
        let mut whole = BytesMut::from(&stream[..]);
        assert_eq!(next_frame(&mut whole, &limits), Ok(None));
        let mut cut = BytesMut::from(&stream[..3]);
        assert_eq!(next_frame(&mut cut, &limits), Ok(None));
        cut.extend_from_slice(&stream[3..]);
        assert_eq!(next_frame(&mut cut, &limits), Ok(None));
        assert_eq!(cut, whole);
    }

    #[test]
    fn missing_content_length_is_fatal() {
        let mut buf = BytesMut::from(&b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n"[..]);
        assert_eq!(next_frame(&mut buf, &Limits::default()), Err(ParseError::BadContentLength));
    }

    #[test]
    fn oversize_head_is_fatal() {
        let limits = Limits { max_size: 64, max_headers: 10 };
        let mut buf = BytesMut::from(&[b'a'; 100][..]);
        assert_eq!(next_frame(&mut buf, &limits), Err(ParseError::TooLarge));
    }
}
