//! Property tests of the SIP codec: generated well-formed messages survive parse -> serialize ->
//! parse unchanged and serialization is a fixed point; `parse` and `stream::next_frame` never panic
//! on arbitrary bytes or on mutated torture messages; framing does not depend on where the stream
//! was cut.

#[path = "torture_table.rs"]
mod torture_table;

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::select;
use sbc_core::sip::stream::{Frame, next_frame};
use sbc_core::sip::{HeaderName, Limits, Message, ParseError, parse, parse_with};

// ---------------------------------------------------------------------------------------------
// Generators of well-formed messages.

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.!%*_+`'~-]{1,12}"
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "OPTIONS",
            "REGISTER",
            "PRACK",
            "UPDATE",
            "INFO",
            "MESSAGE",
            "SUBSCRIBE",
            "NOTIFY",
            "REFER",
            "PUBLISH",
        ])
        .prop_map(str::to_owned),
        token(),
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
        any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", Ipv6Addr::from(s))),
    ]
}

fn hostport() -> impl Strategy<Value = String> {
    (host(), proptest::option::of(1u16..)).prop_map(|(h, p)| match p {
        Some(p) => format!("{h}:{p}"),
        None => h,
    })
}

/// (URI, whether it may stand as an addr-spec without <>: no ';', '?' or ',' in it).
fn uri() -> impl Strategy<Value = (String, bool)> {
    let user = prop_oneof![
        "[A-Za-z0-9._~!$&'()*+-]{1,10}".prop_map(|u| (u, true)),
        "[A-Za-z0-9._~!$&'()*+,;=?/-]{1,10}(%[0-9A-F]{2})?".prop_map(|u| (u, false)),
    ];
    let params = proptest::collection::vec((token(), proptest::option::of(token())), 0..3);
    let sip = (select(vec!["sip", "sips", "SIP"]), proptest::option::of(user), hostport(), params)
        .prop_map(|(scheme, user, hp, params)| {
            let mut s = format!("{scheme}:");
            let mut simple = params.is_empty();
            if let Some((u, plain)) = user {
                s.push_str(&u);
                s.push('@');
                simple &= plain;
            }
            s.push_str(&hp);
            for (n, v) in params {
                s.push(';');
                s.push_str(&n);
                if let Some(v) = v {
                    s.push('=');
                    s.push_str(&v);
                }
            }
            (s, simple)
        });
    let tel = "tel:\\+[0-9]{4,12}(;phone-context=[a-z]{1,8}\\.com)?"
        .prop_map(|t| (t.clone(), !t.contains(';')));
    prop_oneof![4 => sip, 1 => tel]
}

/// A From/To/Contact value for `uri`, with `param` (such as `tag=x`) appended.
fn name_addr(u: (String, bool), display: Option<String>, quoted: bool, param: &str) -> String {
    let (uri, simple) = u;
    let mut s = match display {
        Some(d) if quoted => format!("\"{d}\" <{uri}>"),
        Some(d) => format!("{d} <{uri}>"),
        None if simple => uri,
        None => format!("<{uri}>"),
    };
    if !param.is_empty() {
        s.push(';');
        s.push_str(param);
    }
    s
}

fn display() -> impl Strategy<Value = (Option<String>, bool)> {
    (proptest::option::of("[A-Za-z0-9.!%*_+`'~-]{1,8}( [A-Za-z0-9]{1,8})?"), any::<bool>())
}

fn via() -> impl Strategy<Value = (String, String)> {
    (
        select(vec!["UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "tcp"]),
        hostport(),
        "[A-Za-z0-9.!%*_+`'~-]{1,16}",
        any::<bool>(),
        proptest::option::of(any::<[u8; 4]>()),
    )
        .prop_map(|(t, hp, b, rport, received)| {
            let branch = format!("z9hG4bK{b}");
            let mut v = format!("SIP/2.0/{t} {hp};branch={branch}");
            if rport {
                v.push_str(";rport");
            }
            if let Some(r) = received {
                v.push_str(&format!(";received={}", Ipv4Addr::from(r)));
            }
            (v, branch)
        })
}

/// Picks the full or compact name, in a random case.
fn name(full: &'static str, compact: Option<&'static str>, pick: u8) -> String {
    match (compact, pick % 4) {
        (Some(c), 0) => c.to_owned(),
        (_, 1) => full.to_ascii_lowercase(),
        (_, 2) => full.to_ascii_uppercase(),
        _ => full.to_owned(),
    }
}

/// Folds a value at its first space: CRLF and some whitespace (RFC 3261 section 7.3.1).
fn fold(value: &str, how: u8) -> String {
    match (how % 3, value.find(' ')) {
        (1, Some(i)) => format!("{}\r\n {}", &value[..i], &value[i + 1..]),
        (2, Some(i)) => format!("{}\r\n\t  {}", &value[..i], &value[i + 1..]),
        _ => value.to_owned(),
    }
}

/// A generated message and the values the typed accessors must return for it.
#[derive(Debug, Clone)]
struct Generated {
    bytes: Vec<u8>,
    call_id: String,
    seq: u32,
    branch: String,
    from_tag: String,
}

fn message() -> impl Strategy<Value = Generated> {
    let start = prop_oneof![
        (method(), uri()).prop_map(|(m, (u, _))| (Some(m), "SIP/2.0".to_owned(), u)),
        (100u16..700, "[ -~]{0,20}").prop_map(|(c, r)| (None, c.to_string(), r)),
    ];
    (
        start,
        proptest::collection::vec(via(), 1..4),
        any::<bool>(),
        (uri(), display(), uri(), display()),
        ("[A-Za-z0-9.!%*_+`'~-]{1,16}(@[a-z0-9.]{1,10})?", any::<u32>(), token()),
        (proptest::option::of(0u8..=255), proptest::option::of((uri(), display()))),
        proptest::collection::vec(("X-[A-Za-z0-9-]{1,10}", "[ -~]{0,30}"), 0..4),
        proptest::collection::vec(any::<u8>(), 0..120),
        proptest::collection::vec(any::<u8>(), 16),
    )
        .prop_map(
            |(
                (method, second, third),
                vias,
                one_via_line,
                (to_uri, (to_d, to_q), from_uri, (from_d, from_q)),
                (call_id, seq, tag),
                (max_forwards, contact),
                extra,
                body,
                picks,
            )| {
                let mut lines: Vec<String> = Vec::new();
                let cseq_method = match &method {
                    Some(m) => {
                        lines.push(format!("{m} {third} {second}"));
                        m.clone()
                    }
                    None => {
                        lines.push(format!("SIP/2.0 {second} {third}"));
                        "INVITE".to_owned()
                    }
                };
                let mut via_lines: Vec<String> = Vec::new();
                let via_name = name("Via", Some("v"), picks[0]);
                if one_via_line {
                    let all: Vec<&str> = vias.iter().map(|(v, _)| v.as_str()).collect();
                    via_lines.push(format!("{via_name}: {}", fold(&all.join(", "), picks[1])));
                } else {
                    for (v, _) in &vias {
                        via_lines.push(format!("{via_name}: {}", fold(v, picks[1])));
                    }
                }
                let mut headers: Vec<String> = Vec::new();
                headers.push(format!(
                    "{}: {}",
                    name("To", Some("t"), picks[2]),
                    name_addr(to_uri, to_d, to_q, "")
                ));
                headers.push(format!(
                    "{}: {}",
                    name("From", Some("f"), picks[3]),
                    fold(&name_addr(from_uri, from_d, from_q, &format!("tag={tag}")), picks[4])
                ));
                headers.push(format!("{}: {call_id}", name("Call-ID", Some("i"), picks[5])));
                headers.push(format!(
                    "{}: {}",
                    name("CSeq", None, picks[6]),
                    fold(&format!("{seq} {cseq_method}"), picks[7])
                ));
                if let Some(mf) = max_forwards {
                    headers.push(format!("{}: {mf}", name("Max-Forwards", None, picks[8])));
                }
                if let Some((u, (d, q))) = contact {
                    headers.push(format!(
                        "{}: {}",
                        name("Contact", Some("m"), picks[9]),
                        name_addr(u, d, q, "expires=60")
                    ));
                }
                for (n, v) in &extra {
                    headers.push(format!("{n}: {}", fold(v, picks[10])));
                }
                if !body.is_empty() {
                    headers.push(format!(
                        "{}: application/octet-stream",
                        name("Content-Type", Some("c"), picks[11])
                    ));
                }
                headers.push(format!(
                    "{}: {}",
                    name("Content-Length", Some("l"), picks[12]),
                    body.len()
                ));
                // The order of different fields does not matter; vary it, keeping the Via values
                // together and in order.
                let k = usize::from(picks[13]) % headers.len();
                headers.rotate_left(k);
                let at = usize::from(picks[14]) % (headers.len() + 1);
                headers.splice(at..at, via_lines);
                lines.extend(headers);
                let mut bytes = lines.join("\r\n").into_bytes();
                bytes.extend_from_slice(b"\r\n\r\n");
                bytes.extend_from_slice(&body);
                Generated { bytes, call_id, seq, branch: vias[0].1.clone(), from_tag: tag }
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Oracles shared with the fuzz targets.

/// Limits that do not get in the way of a round trip: serializing can lengthen a message (full
/// header names, a Content-Length) past the limits the first parse was held to.
const UNLIMITED: Limits = Limits { max_size: usize::MAX, max_headers: usize::MAX };

/// If `data` parses, its serialization parses to an equal message (Content-Length aside: one is
/// added when missing) and serializing again gives the same bytes.
fn assert_round_trip(data: &[u8]) {
    let Ok(first) = parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let once = first.to_bytes();
    let second = parse_with(once.clone(), &UNLIMITED)
        .unwrap_or_else(|e| panic!("serialization of a parsed message refused: {e:?}\n{once:?}"));
    let strip = |m: &Message| {
        let mut m = m.clone();
        m.remove(&HeaderName::ContentLength);
        m
    };
    assert_eq!(strip(&first), strip(&second), "{once:?}");
    assert_eq!(second.to_bytes(), once, "serialization is not a fixed point");
}

/// Frames `chunks` fed one after another: the frames, and the error that ended framing if any.
fn frame_all<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Frame>, Option<ParseError>) {
    let limits = Limits::default();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match next_frame(&mut buf, &limits) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// Cuts `stream` at the given points (taken modulo its length, sorted).
fn cut(stream: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = points.iter().map(|p| p % (stream.len() + 1)).collect();
    at.sort_unstable();
    let mut pieces = Vec::new();
    let mut last = 0;
    for p in at {
        pieces.push(stream[last..p].to_vec());
        last = p;
    }
    pieces.push(stream[last..].to_vec());
    pieces
}

fn torture_messages() -> Vec<Vec<u8>> {
    torture_table::cases().iter().map(torture_table::message_bytes).collect()
}

/// A random edit of a message: flip, insert, delete, duplicate or truncate.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let interesting = select(vec![
        &b"\r\n"[..],
        b"\n",
        b"\r",
        b" ",
        b"\t",
        b":",
        b";",
        b",",
        b"\"",
        b"\\",
        b"<",
        b">",
        b"[",
        b"]",
        b"@",
        b"?",
        b"=",
        b"\0",
        b"\r\n ",
        b"\r\n\r\n",
        b"SIP/2.0",
        b"l: 9\r\n",
        b"%",
        b"\xff",
        b":::",
    ])
    .prop_map(<[u8]>::to_vec);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<usize>(), 1usize..20).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = data.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match e {
            Edit::Set(i, b) if len > 0 => data[at(*i)] = *b,
            Edit::Insert(i, s) => {
                let i = at(*i);
                data.splice(i..i, s.iter().copied());
            }
            Edit::Delete(i, n) if len > 0 => {
                let i = at(*i);
                data.drain(i..(i + n).min(len));
            }
            Edit::Duplicate(i, n) if len > 0 => {
                let i = at(*i);
                let piece = data[i..(i + n).min(len)].to_vec();
                data.splice(i..i, piece);
            }
            Edit::Truncate(i) => data.truncate(at(*i)),
            _ => {}
        }
    }
    data
}

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #[test]
    fn generated_messages_parse_and_round_trip_exactly(g in message()) {
        let first = parse(Bytes::from(g.bytes.clone()))
            .map_err(|e| TestCaseError::fail(format!("{e:?}: {}", String::from_utf8_lossy(&g.bytes))))?;
        prop_assert_eq!(first.call_id(), Some(&Bytes::from(g.call_id.clone())));
        prop_assert_eq!(first.cseq().map(|c| c.seq), Ok(g.seq));
        prop_assert_eq!(first.top_via().ok().and_then(|v| v.branch()), Some(Bytes::from(g.branch.clone())));
        prop_assert_eq!(first.from().ok().and_then(|f| f.tag()), Some(Bytes::from(g.from_tag.clone())));
        let once = first.to_bytes();
        let second = parse(once.clone()).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert_eq!(&second, &first);
        prop_assert_eq!(second.to_bytes(), once);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        assert_round_trip(&data);
    }

    #[test]
    fn parse_never_panics_on_sip_shaped_noise(
        pieces in proptest::collection::vec(select(vec![
            &b"INVITE "[..], b"SIP/2.0 ", b"SIP/2.0\r\n", b"sip:", b"tel:+1", b"a@b", b"[::1]",
            b":5060", b";", b",", b"<", b">", b"\"", b"\\", b"\r\n", b"\n", b" ", b"\t",
            b"Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n", b"v: ", b"To: ", b"f: ", b"i: x\r\n",
            b"CSeq: 1 INVITE\r\n", b"l: ", b"0", b"12", b"\r\n\r\n", b"\0", b"=", b"?", b"%",
        ]), 0..60),
    ) {
        assert_round_trip(&pieces.concat());
    }

    #[test]
    fn mutated_torture_messages_never_panic_and_round_trip(
        which in any::<usize>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let all = torture_messages();
        let data = apply(all[which % all.len()].clone(), &edits);
        assert_round_trip(&data);
        let _ = frame_all([&data[..]]);
    }

    #[test]
    fn framing_does_not_depend_on_where_the_stream_is_cut(
        messages in proptest::collection::vec((message(), any::<bool>()), 1..5),
        points in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for (g, ping) in &messages {
            if *ping {
                stream.extend_from_slice(b"\r\n\r\n");
                want.push(Frame::Ping);
            }
            stream.extend_from_slice(&g.bytes);
            want.push(Frame::Message(Bytes::from(g.bytes.clone())));
        }
        let whole = frame_all([&stream[..]]);
        prop_assert_eq!(&whole, &(want, None));
        let pieces = cut(&stream, &points);
        prop_assert_eq!(frame_all(pieces.iter().map(Vec::as_slice)), whole);
    }

    #[test]
    fn framing_arbitrary_or_mutated_bytes_does_not_depend_on_cuts(
        which in any::<usize>(),
        edits in proptest::collection::vec(edit(), 0..4),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
        points in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let all = torture_messages();
        let mut stream = apply(all[which % all.len()].clone(), &edits);
        stream.extend_from_slice(&noise);
        let whole = frame_all([&stream[..]]);
        let pieces = cut(&stream, &points);
        prop_assert_eq!(frame_all(pieces.iter().map(Vec::as_slice)), whole);
    }
}
