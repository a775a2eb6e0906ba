//! The RFC 4475 and RFC 5118 torture messages and what the RFCs prescribe for each, as a table.
//!
//! One row per message in `tests/data/` (see its README for where the bytes come from). `expect`
//! is what the codec must do with the message; `engine_status` is the response the engine must
//! send for it: the status of the parse error for a refused request, the status the RFC asks of
//! a B2BUA for a message that parses but that the application must refuse (416, 420, 483...),
//! `None` where the message is processed normally or, for a response, dropped.
//!
//! `tests/torture.rs` holds the codec to this table; the engine's scenario tests include this
//! file (`#[path = "torture_table.rs"] mod torture_table;`) to hold the engine to the same rows.
//! Built on its own, this file is also a test crate that checks the data files are intact.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use sbc_core::sip::{HeaderName, ParseError};

/// Which RFC a message comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc {
    /// RFC 4475, section 3: files are wire bytes.
    Rfc4475,
    /// RFC 5118, section 4: files are the RFC's archive, turned into wire bytes by [`wire`].
    Rfc5118,
}

/// What the codec does with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `sip::parse` returns the message.
    Parse,
    /// `sip::parse` refuses it with this error.
    Reject(ParseError),
}

/// One torture message.
#[derive(Debug, Clone)]
pub struct Case {
    /// Which RFC.
    pub rfc: Rfc,
    /// File name without `.dat`, as the RFC names the message.
    pub name: &'static str,
    /// Section of the RFC.
    pub section: &'static str,
    /// What the codec must do.
    pub expect: Expect,
    /// The response the engine must send (see the module documentation).
    pub engine_status: Option<u16>,
    /// What the RFC says, in short, and any choice the RFC leaves open.
    pub note: &'static str,
}

use Expect::{Parse, Reject};
use Rfc::{Rfc4475, Rfc5118};

const fn case(
    rfc: Rfc,
    name: &'static str,
    section: &'static str,
    expect: Expect,
    engine_status: Option<u16>,
    note: &'static str,
) -> Case {
    Case { rfc, name, section, expect, engine_status, note }
}

/// Every message, in RFC order.
#[rustfmt::skip]
pub fn cases() -> Vec<Case> {
    vec![
        // RFC 4475 3.1.1: valid messages; every element must accept them.
        case(Rfc4475, "wsinv", "3.1.1.1", Parse, None, "short tortuous INVITE: folding, LWS everywhere, compact forms, escaped quotes"),
        case(Rfc4475, "intmeth", "3.1.1.2", Parse, Some(501), "unusual but legal characters; unknown method: an endpoint answers 501 with Allow"),
        case(Rfc4475, "esc01", "3.1.1.3", Parse, None, "valid % escapes in URIs"),
        case(Rfc4475, "escnull", "3.1.1.4", Parse, None, "escaped NULs in URI user parts; two distinct Contacts"),
        case(Rfc4475, "esc02", "3.1.1.5", Parse, Some(501), "% that is not an escape: RE%47IST%45R is an unknown method, C%6Fntact an unknown header"),
        case(Rfc4475, "lwsdisp", "3.1.1.6", Parse, None, "no LWS between display name and <: accept"),
        case(Rfc4475, "longreq", "3.1.1.7", Parse, None, "long values, 34 Via values in mixed forms and case"),
        case(Rfc4475, "dblreq", "3.1.1.8", Parse, None, "datagram with octets after the body: ignored"),
        case(Rfc4475, "semiuri", "3.1.1.9", Parse, None, "; in the Request-URI user part"),
        case(Rfc4475, "transports", "3.1.1.10", Parse, None, "Via with SCTP, TLS and an unknown transport"),
        case(Rfc4475, "mpart01", "3.1.1.11", Parse, None, "multipart body with binary octets: frame by Content-Length"),
        case(Rfc4475, "unreason", "3.1.1.12", Parse, None, "UTF-8 reason phrase"),
        case(Rfc4475, "noreason", "3.1.1.13", Parse, None, "empty reason phrase after the SP"),
        // RFC 4475 3.1.2: invalid messages.
        case(Rfc4475, "badinv01", "3.1.2.1", Reject(ParseError::BadVia), Some(400), "extra ; and , in Via and Contact: 400"),
        case(Rfc4475, "clerr", "3.1.2.2", Reject(ParseError::BodyTruncated), Some(400), "Content-Length larger than the datagram: 400"),
        case(Rfc4475, "ncl", "3.1.2.3", Reject(ParseError::BadContentLength), Some(400), "negative Content-Length: an error"),
        case(Rfc4475, "scalar02", "3.1.2.4", Reject(ParseError::BadCSeq), Some(400), "CSeq beyond 2**32-1: 400"),
        case(Rfc4475, "scalarlg", "3.1.2.5", Reject(ParseError::BadCSeq), None, "response with overlarge scalars: dropped"),
        case(Rfc4475, "quotbal", "3.1.2.6", Reject(ParseError::BadNameAddr), Some(400), "unterminated quoted display name: 400"),
        case(Rfc4475, "ltgtruri", "3.1.2.7", Reject(ParseError::BadUri), Some(400), "Request-URI in <>: 400 (reasonable always)"),
        case(Rfc4475, "lwsruri", "3.1.2.8", Reject(ParseError::BadStartLine), Some(400), "LWS inside the Request-URI: 400"),
        case(Rfc4475, "lwsstart", "3.1.2.9", Reject(ParseError::BadStartLine), Some(400), "several SP in the Request-Line: rejecting is acceptable, we do"),
        case(Rfc4475, "trws", "3.1.2.10", Reject(ParseError::BadStartLine), Some(400), "SP after SIP-Version: rejecting is acceptable, we do"),
        case(Rfc4475, "escruri", "3.1.2.11", Reject(ParseError::BadUri), Some(400), "escaped headers in the Request-URI: 400 acceptable, we do rather than forward them"),
        case(Rfc4475, "baddate", "3.1.2.12", Parse, None, "non-GMT Date: reject only if Date matters; the SBC does not use it"),
        case(Rfc4475, "regbadct", "3.1.2.13", Reject(ParseError::BadNameAddr), Some(400), "Contact URI with ? not in <>: 400 reasonable, we do"),
        case(Rfc4475, "badaspec", "3.1.2.14", Reject(ParseError::BadUri), Some(400), "spaces inside <> of To: 400 reasonable, we do"),
        case(Rfc4475, "baddn", "3.1.2.15", Reject(ParseError::Incomplete), Some(400), "unquoted non-token display names: 400; the archived file also lacks its empty line"),
        case(Rfc4475, "badvers", "3.1.2.16", Reject(ParseError::UnsupportedVersion), Some(505), "SIP/7.0: 505"),
        case(Rfc4475, "mismatch01", "3.1.2.17", Reject(ParseError::BadCSeq), Some(400), "CSeq method differs from the Request-Line: 400"),
        case(Rfc4475, "mismatch02", "3.1.2.18", Reject(ParseError::BadCSeq), Some(400), "unknown method, CSeq mismatch: RFC prefers 501, 400 acceptable"),
        case(Rfc4475, "bigcode", "3.1.2.19", Reject(ParseError::BadStatusCode), None, "status code 4294967301: response dropped"),
        // RFC 4475 3.2: transaction layer.
        case(Rfc4475, "badbranch", "3.2.1", Parse, None, "branch z9hG4bK with no id: must parse; fall back to RFC 2543 matching (400 also allowed)"),
        // RFC 4475 3.3: application layer. Most parse; the engine answers.
        case(Rfc4475, "insuf", "3.3.1", Reject(ParseError::MissingHeader(HeaderName::CallId)), Some(400), "no Call-ID, From, To, Max-Forwards: 400"),
        case(Rfc4475, "unkscm", "3.3.2", Parse, Some(416), "unknown Request-URI scheme: 416"),
        case(Rfc4475, "novelsc", "3.3.3", Parse, Some(416), "soap.beep Request-URI: 416 unless supported"),
        case(Rfc4475, "unksm2", "3.3.4", Parse, Some(400), "non-SIP URIs in To/From/Contact: must parse; a registrar answers 400 (To is no SIP AOR)"),
        case(Rfc4475, "bext01", "3.3.5", Parse, Some(420), "unknown Require and Proxy-Require: 420 with Unsupported"),
        case(Rfc4475, "invut", "3.3.6", Parse, Some(415), "unknown Content-Type: 415 with Accept"),
        case(Rfc4475, "regaut01", "3.3.7", Parse, None, "unknown Authorization scheme: ignored, or 401 with a scheme the SBC knows if it authenticates"),
        case(Rfc4475, "multi01", "3.3.8", Reject(ParseError::DuplicateHeader(HeaderName::CallId)), Some(400), "several Call-ID, CSeq, From, To, Max-Forwards: 400"),
        case(Rfc4475, "mcl01", "3.3.9", Reject(ParseError::BadContentLength), Some(400), "two Content-Length values: error (and close a stream)"),
        case(Rfc4475, "bcast", "3.3.10", Parse, None, "200 OK with a broadcast second Via: must parse"),
        case(Rfc4475, "zeromf", "3.3.11", Parse, Some(483), "Max-Forwards 0: not forwarded, 483"),
        case(Rfc4475, "cparam01", "3.3.12", Parse, None, "Contact addr-spec: ;unknownparam is a header parameter"),
        case(Rfc4475, "cparam02", "3.3.13", Parse, None, "Contact name-addr: ;unknownparam is a URI parameter"),
        case(Rfc4475, "regescrt", "3.3.14", Parse, None, "Contact with an escaped Route header in <>: accept and keep"),
        case(Rfc4475, "sdp01", "3.3.15", Parse, Some(406), "Accept offers nothing the UAS can send: 406"),
        // RFC 4475 3.4: backward compatibility.
        case(Rfc4475, "inv2543", "3.4.1", Parse, None, "RFC 2543 INVITE (no Max-Forwards, branch, tag, Content-Length): accept"),
        // RFC 5118 section 4, about the wire form of each archived message.
        case(Rfc5118, "ipv6-good", "4.1", Parse, None, "IPv6 reference in the Request-URI, Via and Contact"),
        case(Rfc5118, "ipv6-bad", "4.2", Reject(ParseError::BadUri), Some(400), "IPv6 address without [] in the Request-URI: 400"),
        case(Rfc5118, "port-ambiguous", "4.3", Parse, None, "[2001:db8::10:5070] is one address, no port"),
        case(Rfc5118, "port-unambiguous", "4.4", Parse, None, "[2001:db8::10]:5070 is address and port"),
        case(Rfc5118, "via-received-param-with-delim", "4.5", Parse, None, "received=[IPv6]: accept"),
        case(Rfc5118, "via-received-param-no-delim", "4.5", Parse, None, "received=IPv6 without []: accept"),
        case(Rfc5118, "ipv6-in-sdp", "4.6", Parse, None, "IPv6 in the SDP body"),
        case(Rfc5118, "mult-ip-in-header", "4.7", Parse, None, "IPv6 and IPv4 Via values in one message"),
        case(Rfc5118, "mult-ip-in-sdp", "4.8", Parse, None, "IPv4 and IPv6 media lines"),
        case(Rfc5118, "ipv4-mapped-ipv6", "4.9", Parse, None, "::ffff:a.b.c.d addresses"),
        case(Rfc5118, "ipv6-bug-abnf-3-colons", "4.10", Parse, None, "2001:db8:::192.0.2.1 from RFC 3261's ABNF bug: must be tolerated"),
        case(Rfc5118, "ipv6-correct-abnf-2-colons", "4.10", Parse, None, "2001:db8::192.0.2.1"),
    ]
}

/// Looks a case up by name.
pub fn case_named(name: &str) -> Case {
    cases().into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no torture case {name}"))
}

/// Directory of the data files.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The file's bytes as stored (for RFC 5118, the archive's bytes).
pub fn file_bytes(case: &Case) -> Vec<u8> {
    let dir = match case.rfc {
        Rfc4475 => "rfc4475",
        Rfc5118 => "rfc5118",
    };
    let path = data_dir().join(dir).join(format!("{}.dat", case.name));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The message as it travels: RFC 4475 files as they are, RFC 5118 files through [`wire`].
pub fn message_bytes(case: &Case) -> Vec<u8> {
    let bytes = file_bytes(case);
    match case.rfc {
        Rfc4475 => bytes,
        Rfc5118 => wire(&bytes),
    }
}

/// Turns a message of the RFC 5118 archive into the message it describes: every line ended by
/// CRLF, the header section closed by an empty line, Content-Length counted from the body. Nothing
/// else changes.
pub fn wire(archived: &[u8]) -> Vec<u8> {
    let text = archived.split(|&b| b == b'\n').collect::<Vec<_>>();
    // A final LF leaves an empty last element, which is no line.
    let lines = match text.split_last() {
        Some((&[], rest)) => rest,
        _ => &text[..],
    };
    let blank = lines.iter().position(|l| l.is_empty());
    let (head, body_lines) = match blank {
        Some(i) => (&lines[..i], &lines[i + 1..]),
        None => (lines, &[][..]),
    };
    let mut body = Vec::new();
    for line in body_lines {
        body.extend_from_slice(line);
        body.extend_from_slice(b"\r\n");
    }
    let mut out = Vec::new();
    for line in head {
        if line.to_ascii_lowercase().starts_with(b"content-length:") {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        } else {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

#[test]
fn every_data_file_is_in_the_table_and_hashes_as_recorded() {
    let sums = std::fs::read_to_string(data_dir().join("SHA256SUMS")).expect("SHA256SUMS");
    let cases = cases();
    assert_eq!(cases.len(), 61);
    let listed: Vec<&str> = sums.lines().collect();
    assert_eq!(listed.len(), cases.len(), "SHA256SUMS and the table disagree");
    for c in &cases {
        let dir = match c.rfc {
            Rfc4475 => "rfc4475",
            Rfc5118 => "rfc5118",
        };
        let file = format!("{dir}/{}.dat", c.name);
        let line = listed
            .iter()
            .find(|l| l.ends_with(&format!("  {file}")))
            .unwrap_or_else(|| panic!("{file} not in SHA256SUMS"));
        let want = &line[..64];
        assert_eq!(sha256_hex(&file_bytes(c)), want, "{file} has changed");
    }
    for dir in ["rfc4475", "rfc5118"] {
        let on_disk = std::fs::read_dir(data_dir().join(dir)).expect("data dir").count();
        let in_table = cases.iter().filter(|c| (c.rfc == Rfc4475) == (dir == "rfc4475")).count();
        assert_eq!(on_disk, in_table, "{dir}: a file without a row, or a row without a file");
    }
}

#[test]
fn the_rfc4475_files_are_crlf_and_the_rfc5118_archive_is_lf() {
    for c in cases() {
        let b = file_bytes(&c);
        match c.rfc {
            // mpart01's binary body holds bare LFs; its head does not.
            Rfc4475 => {
                let head_end = b.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(b.len());
                for (i, _) in b[..head_end].iter().enumerate().filter(|(_, x)| **x == b'\n') {
                    assert_eq!(b[i - 1], b'\r', "{}: bare LF at {i}", c.name);
                }
            }
            Rfc5118 => assert!(!b.contains(&b'\r'), "{}", c.name),
        }
    }
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}
