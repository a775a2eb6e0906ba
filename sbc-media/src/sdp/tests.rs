use proptest::prelude::*;

use super::*;

pub(crate) const SIPP: &str = include_str!("../../tests/data/sdp/sipp.sdp");
pub(crate) const BARESIP: &str = include_str!("../../tests/data/sdp/baresip.sdp");
pub(crate) const ASTERISK: &str = include_str!("../../tests/data/sdp/asterisk.sdp");
pub(crate) const FREESWITCH: &str = include_str!("../../tests/data/sdp/freeswitch.sdp");
pub(crate) const CHROME: &str = include_str!("../../tests/data/sdp/chrome.sdp");
/// Chrome's offer for an audio-only call (what JsSIP sends over loopback).
pub(crate) const CHROME_AUDIO: &str = include_str!("../../tests/data/sdp/chrome-audio.sdp");
pub(crate) const HOLD_SENDONLY: &str = include_str!("../../tests/data/sdp/hold-sendonly.sdp");
pub(crate) const HOLD_ZERO: &str = include_str!("../../tests/data/sdp/hold-zero.sdp");
pub(crate) const TRUNK_TE96: &str = include_str!("../../tests/data/sdp/trunk-answer-te96.sdp");
pub(crate) const IPV6: &str = include_str!("../../tests/data/sdp/ipv6.sdp");

const ALL: [&str; 10] = [
    SIPP,
    BARESIP,
    ASTERISK,
    FREESWITCH,
    CHROME,
    CHROME_AUDIO,
    HOLD_SENDONLY,
    HOLD_ZERO,
    TRUNK_TE96,
    IPV6,
];

fn parse(s: &str) -> Result<Sdp, ParseError> {
    Sdp::parse(s.as_bytes())
}

#[test]
fn parses_sipp_default() {
    let sdp = parse(SIPP).unwrap();
    assert_eq!(sdp.origin.username, "user1");
    assert_eq!(sdp.origin.session_version, "2353687637");
    assert_eq!(sdp.connection.as_ref().and_then(Connection::ip), Some([127, 0, 0, 1].into()));
    assert_eq!(sdp.media.len(), 1);
    let m = &sdp.media[0];
    assert_eq!((m.kind.as_str(), m.port, m.proto.as_str()), ("audio", 6000, "RTP/AVP"));
    assert_eq!(m.formats, ["0"]);
    assert_eq!(m.codec("0").map(|c| c.name), Some("PCMU".to_owned()));
}

#[test]
fn sample_sdps_write_back_byte_for_byte_when_crlf() {
    for text in ALL {
        let sdp = parse(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let out = sdp.to_string();
        assert_eq!(out, text.replace("\r\n", "\n").replace('\n', "\r\n"));
        assert!(!out.ends_with("\r\n\r\n"), "no trailing blank line");
        assert_eq!(parse(&out).as_ref(), Ok(&sdp));
    }
}

#[test]
fn lf_input_and_blank_lines_are_accepted() {
    let lf = BARESIP;
    assert!(!lf.contains('\r'));
    let sdp = parse(lf).unwrap();
    assert_eq!(sdp.media[0].formats, ["96", "97", "9", "0", "8", "101"]);
    assert_eq!(sdp.attribute("tool").and_then(|a| a.value.as_deref()), Some("baresip 3.10.1"));
    let with_blanks = format!("{SIPP}\r\n\r\n");
    assert_eq!(parse(&with_blanks), parse(SIPP));
    assert_eq!(parse(&SIPP.replace("\r\n", "\r\r\n")), parse(SIPP), "CR CR LF");
}

#[test]
fn codecs_from_rtpmap_and_static_table() {
    let sdp = parse(CHROME).unwrap();
    let audio = &sdp.media[0];
    let opus = audio.codec("111").unwrap();
    assert_eq!((opus.name.as_str(), opus.clock_rate, opus.channels), ("opus", 48000, Some(2)));
    assert!(audio.codec("126").unwrap().is_auxiliary());
    assert_eq!(audio.codec("999"), None);
    assert_eq!(audio.codec("abc"), None);
    let m = &parse(SIPP).unwrap().media[0];
    assert_eq!(m.codec("8").map(|c| c.name), Some("PCMA".into()), "static without rtpmap");
    assert_eq!(m.codec("9").map(|c| c.clock_rate), Some(8000), "G.722 clock is 8000");
    assert_eq!(m.codec("96"), None, "dynamic without rtpmap is unknown");
    assert!(Codec { name: "pcmu".into(), clock_rate: 8000, channels: Some(1) }.matches(&Codec {
        name: "PCMU".into(),
        clock_rate: 8000,
        channels: None
    }));
}

#[test]
fn direction_media_level_overrides_session_level() {
    let text = "v=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nc=IN IP4 1.2.3.4\nt=0 0\na=sendonly\n\
                m=audio 1000 RTP/AVP 0\nm=audio 1002 RTP/AVP 0\na=inactive\n";
    let sdp = parse(text).unwrap();
    assert_eq!(sdp.direction(0), Direction::SendOnly);
    assert_eq!(sdp.direction(1), Direction::Inactive);
    assert_eq!(parse(SIPP).unwrap().direction(0), Direction::SendRecv);
    assert!(parse(CHROME).unwrap().uses_ice(1));
}

#[test]
fn errors_carry_the_reason() {
    let base = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n";
    let cases: &[(&str, &str)] = &[
        ("hello", "not an SDP body"),
        ("", "not an SDP body"),
        ("v=1\r\n", "bad v= line"),
        ("v=0\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\n", "missing o= line"),
        ("v=0\r\no=- 1 IN IP4 1.2.3.4\r\n", "bad o= line"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN 1.2.3.4\r\n", "bad c= line"),
        ("v=0\r\nnonsense\r\n", "line is not type=value"),
        ("v=0\r\nX=1\r\n", "line is not type=value"),
        ("v=0\r\ny=1\r\n", "unknown SDP line type"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=a\rc=IN IP4 6.6.6.6\r\n", "control character in SDP"),
        ("v=0\r\nr=1 2 3\r\n", "r= line without t="),
        ("v=0\r\nb=AS\r\n", "bad b= line"),
        ("v=0\r\nt=0\r\n", "bad t= line"),
        ("v=0\r\na=\r\n", "bad a= line"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "duplicate SDP line"),
    ];
    for (text, reason) in cases {
        let got = parse(text).map(|_| ()).map_err(|e| e.reason());
        assert_eq!(got, Err(*reason), "{text:?}");
    }
    for (m, reason) in [
        ("m=audio\r\n", "bad m= line"),
        ("m=audio 70000 RTP/AVP 0\r\n", "bad m= line"),
        ("m=audio +5 RTP/AVP 0\r\n", "bad m= line"),
        ("m=audio 5/x RTP/AVP 0\r\n", "bad m= line"),
        ("m=audio 5 RTP/AVP 0\r\nt=0 0\r\n", "SDP line out of place"),
        ("m=audio 5 RTP/AVP 0\r\ni=a\r\ni=b\r\n", "duplicate SDP line"),
    ] {
        let got = parse(&format!("{base}{m}")).map(|_| ()).map_err(|e| e.reason());
        assert_eq!(got, Err(reason), "{m:?}");
    }
    let many: String =
        (0..=MAX_MEDIA).map(|i| format!("m=audio {} RTP/AVP 0\r\n", i * 2)).collect();
    assert_eq!(parse(&format!("{base}{many}")), Err(ParseError::TooManyMedia));
}

#[test]
fn lenient_where_user_agents_differ() {
    // No s=, no t=, a= before c=, an m= line without formats, port count, extra blanks.
    let text = "v=0\no=- 1 1  IN IP4 1.2.3.4\na=foo\nc=IN  IP4 1.2.3.4\nm=audio 0 RTP/AVP\n\
                m=audio 5000/2 RTP/AVP 0  8 \n";
    let sdp = parse(text).unwrap();
    assert_eq!(sdp.session_name, "-");
    assert_eq!(sdp.timings.len(), 1);
    assert!(sdp.media[0].formats.is_empty());
    assert_eq!(sdp.media[1].port_count, Some(2));
    assert_eq!(sdp.media[1].formats, ["0", "8"]);
    assert_eq!(parse(&sdp.to_string()), Ok(sdp));
    // Bytes that are not UTF-8 in free text do not make the description unusable.
    let mut latin1 = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=Caf\xe9\r\n".to_vec();
    latin1.extend_from_slice(b"c=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n");
    assert!(Sdp::parse(&latin1).is_ok());
}

#[test]
fn attributes_keep_order_and_flags() {
    let sdp = parse(CHROME).unwrap();
    let names: Vec<&str> = sdp.attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["group", "extmap-allow-mixed", "msid-semantic"]);
    assert_eq!(sdp.attributes[1].value, None);
    assert_eq!(
        sdp.attributes[2].value.as_deref(),
        Some(" WMS 3a6a9d1e-1c3e-4e3b-9c39-0f1f1b1a2b3c")
    );
    let empty = parse("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\na=x:\r\n").unwrap();
    assert_eq!(empty.attributes[0].value.as_deref(), Some(""));
    assert_eq!(empty.to_string().lines().last(), Some("a=x:"));
}

fn valid_samples() -> impl Strategy<Value = &'static str> {
    prop::sample::select(ALL.to_vec())
}

/// One edit of a valid description: delete, duplicate or overwrite a byte range, or splice bytes.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Overwrite(usize, Vec<u8>),
    DuplicateLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let bytes = prop::collection::vec(
        prop_oneof![any::<u8>(), prop::sample::select(b"\r\n =:/ 0123456789vomcatIPN".to_vec())],
        1..12,
    );
    prop_oneof![
        (any::<usize>(), 1..40usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), bytes.clone()).prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), bytes).prop_map(|(at, b)| Edit::Overwrite(at, b)),
        any::<usize>().prop_map(Edit::DuplicateLine),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> Vec<u8> {
    let mut data = text.as_bytes().to_vec();
    for e in edits {
        let len = data.len();
        match e {
            Edit::Delete(at, n) => {
                let at = at % (len + 1);
                let end = (at + n).min(len);
                data.drain(at..end);
            }
            Edit::Insert(at, bytes) => {
                let at = at % (len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Edit::Overwrite(at, bytes) => {
                let at = at % (len + 1);
                let end = (at + bytes.len()).min(len);
                data.splice(at..end, bytes.iter().copied());
            }
            Edit::DuplicateLine(n) => {
                let lines: Vec<Vec<u8>> =
                    data.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
                if !lines.is_empty() {
                    let i = n % lines.len();
                    let mut out = Vec::with_capacity(len * 2);
                    for (j, l) in lines.iter().enumerate() {
                        out.extend_from_slice(l);
                        if j == i {
                            out.extend_from_slice(l);
                        }
                    }
                    data = out;
                }
            }
        }
    }
    data
}

/// What the fuzz target checks too: parsing never panics, and what parses round-trips.
fn round_trips(data: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(sdp) = Sdp::parse(data) {
        let written = sdp.to_bytes();
        let again = Sdp::parse(&written);
        prop_assert_eq!(again.as_ref(), Ok(&sdp), "{:?}", String::from_utf8_lossy(&written));
        prop_assert_eq!(again.map(|s| s.to_bytes()), Ok(written), "writing is a fixed point");
    }
    Ok(())
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        round_trips(&data)?;
        let mut with_header = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n".to_vec();
        with_header.extend_from_slice(&data);
        round_trips(&with_header)?;
    }

    #[test]
    fn mutated_samples_never_panic_and_round_trip(
        text in valid_samples(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        round_trips(&apply(text, &edits))?;
    }
}
