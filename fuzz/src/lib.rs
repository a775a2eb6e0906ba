//! The oracles behind the fuzz targets, kept in a library so that a test or a replay tool can call
//! them too. Each panics when the codec breaks a property; a panic is what the fuzzer reports.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use sbc_core::sip::stream::{Frame, next_frame};
use sbc_core::sip::{HeaderName, Limits, Message, NameAddr, ParseError, Via, parse, parse_with};
use sbc_media::sdp::Sdp;
use sbc_media::{LegMedia, LegSide, MediaPlane, MediaProfile, MediaSessionId, VirtualBackend};

/// Limits that do not get in the way of a round trip: serializing can lengthen a message (full
/// header names, an added Content-Length) past the limits the first parse was held to.
const UNLIMITED: Limits = Limits { max_size: usize::MAX, max_headers: usize::MAX };

/// `parse` must not panic. If it accepts `data`: every typed accessor must not panic; the
/// serialization must parse to an equal message (Content-Length aside, which the serializer adds
/// when missing); serializing that again must give the same bytes; and a response built for a
/// request must itself parse.
pub fn sip_parse(data: &[u8]) {
    let Ok(first) = parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    touch(&first);
    let once = first.to_bytes();
    let second = match parse_with(once.clone(), &UNLIMITED) {
        Ok(m) => m,
        Err(e) => panic!("serialization of a parsed message refused: {e:?}\n{once:?}"),
    };
    assert_eq!(
        without_length(&first),
        without_length(&second),
        "round trip changed the message:\n{once:?}"
    );
    assert_eq!(second.to_bytes(), once, "serialization is not a fixed point");

    if first.is_request() {
        let response = first.response_to(200, "OK", Some("fuzz"));
        let wire = response.to_bytes();
        let parsed = match parse_with(wire.clone(), &UNLIMITED) {
            Ok(m) => m,
            Err(e) => panic!("response to a parsed request refused: {e:?}\n{wire:?}"),
        };
        if first.to().is_ok_and(|t| t.tag().is_none()) {
            assert_eq!(parsed.to().ok().and_then(|t| t.tag()).as_deref(), Some(&b"fuzz"[..]));
        }
    }
}

fn without_length(m: &Message) -> Message {
    let mut m = m.clone();
    m.remove(&HeaderName::ContentLength);
    m
}

/// Calls every typed view the engine uses; none may panic on a message that parsed.
fn touch(m: &Message) {
    let _ = (m.method(), m.request_uri(), m.code(), m.call_id(), m.content_type());
    let _ = (m.cseq(), m.from(), m.to(), m.contact(), m.record_route());
    let _ = (m.max_forwards(), m.expires(), m.rseq(), m.rack(), m.session_expires());
    let _ = m.via_count();
    for v in m.values(&HeaderName::Via) {
        if let Ok(via) = Via::parse(&v) {
            let _ = (via.branch(), via.received(), via.is_rfc3261(), via.param("rport"));
        }
    }
    for name in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Contact] {
        for v in m.values(&name) {
            if let Ok(na) = NameAddr::parse(&v) {
                let _ = (na.tag(), na.uri.param("lr"), na.uri.user_str());
            }
        }
    }
    let _ = m.has_token(&HeaderName::Require, "100rel");
}

/// Frames `chunks` fed one after another: the frames, and the error that ended framing if any.
pub fn frame_all<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<Frame>, Option<ParseError>) {
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

/// The input is `[n, (hi, lo) * (n % 8), stream...]`: up to seven cut points, then the bytes of
/// a TCP stream. Framing the stream in pieces must give what framing it whole gives, and a framed
/// message that parses must have the body the framer counted (the two must agree on
/// Content-Length, or a peer could smuggle a request past one of them).
pub fn sip_stream(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len() / 2);
    let (cuts, stream) = rest.split_at(2 * n);
    let mut points: Vec<usize> = cuts
        .chunks(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    points.sort_unstable();

    let whole = frame_all([stream]);
    let mut pieces = Vec::new();
    let mut last = 0;
    for p in points {
        pieces.push(&stream[last..p]);
        last = p;
    }
    pieces.push(&stream[last..]);
    assert_eq!(frame_all(pieces), whole, "framing depends on where the stream was cut");

    for frame in &whole.0 {
        let Frame::Message(bytes) = frame else {
            continue;
        };
        if let Ok(m) = parse(bytes.clone()) {
            let body_start = head_end(bytes).unwrap_or(bytes.len());
            assert_eq!(
                m.body.len(),
                bytes.len() - body_start,
                "parser and framer disagree on the body of {bytes:?}"
            );
        }
    }
}

/// Where the body of a framed message starts: after the first empty line, as the framer finds it.
fn head_end(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = data[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        match (data.get(nl + 1), data.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// `Sdp::parse` must not panic. If it accepts `data`: the written form must parse to an equal
/// description and writing that again must give the same bytes; and the media plane must take
/// the body as an offer and as an answer from either leg without panicking and without leaving a
/// relay pair open after `release`.
pub fn sdp(data: &[u8]) {
    let Ok(first) = Sdp::parse(data) else {
        return;
    };
    let once = first.to_bytes();
    let second = match Sdp::parse(&once) {
        Ok(s) => s,
        Err(e) => panic!("written SDP refused: {e}\n{once:?}"),
    };
    assert_eq!(first, second, "round trip changed the SDP:\n{once:?}");
    assert_eq!(second.to_bytes(), once, "writing is not a fixed point");

    // Every pair of leg profiles: the conversion between plain RTP, SDES and WebRTC must hold
    // the same properties as the plain rewrite.
    let profiles = [MediaProfile::Rtp, MediaProfile::Sdes, MediaProfile::Webrtc];
    for (a, b) in profiles.iter().flat_map(|a| profiles.iter().map(move |b| (*a, *b))) {
        plane_round(data, &first, a, b);
    }
}

/// One offer/answer exchange of `data` through a plane whose legs speak `a` and `b`.
fn plane_round(data: &[u8], first: &Sdp, a: MediaProfile, b: MediaProfile) {
    let backend = Arc::new(VirtualBackend::new(40000..=40999));
    backend.set_dtls_fingerprint(Some("sha-256 01:02:03".into()));
    let mut plane = MediaPlane::with_seed(backend.clone(), 1);
    let id = MediaSessionId(1);
    plane.set_leg(id, LegSide::A, LegMedia { profile: a, ..LegMedia::default() });
    let leg = LegMedia {
        codecs: vec!["PCMU".into(), "opus".into(), "telephone-event".into()],
        profile: b,
        ..LegMedia::default()
    };
    plane.set_leg(id, LegSide::B, leg);
    let body = Bytes::copy_from_slice(data);
    let now = Instant::now();
    for (offerer, answerer) in [(LegSide::A, LegSide::B), (LegSide::B, LegSide::A)] {
        if let Ok(offer) = plane.offer(id, offerer, &body, now) {
            assert!(!offer.ends_with(b"\r\n\r\n"), "blank last line");
            let sent = Sdp::parse(&offer).expect("the plane writes SDP it can parse");
            assert_eq!(sent.media.len(), first.media.len(), "m-lines added or removed");
            let _ = plane.answer(id, answerer, &body, now);
            let _ = plane.answer(id, answerer, &offer, now);
        }
    }
    let _ = (plane.summary(id), plane.inactivity_deadline(id), plane.failure(id));
    plane.release(id);
    assert_eq!(backend.open_pairs(), 0, "release left pairs open");
}

/// The secure side of a relay leg on arbitrary datagrams: `data` is a sequence of datagrams,
/// each a length byte and that many bytes. They go to three sides (ICE-lite + DTLS server that
/// has already seen a valid check, so DTLS from the source is parsed; a DTLS client without ICE;
/// an SDES side), each datagram followed by a timer step and a `protect` of the same bytes.
/// Nothing may panic, and the secure sides must never hand back media longer than what came in.
pub fn secure(data: &[u8]) {
    use std::net::SocketAddr;
    use std::sync::OnceLock;
    use std::time::Duration;

    use sbc_media::backend::{
        DtlsRole, DtlsSpec, Fingerprint, IceCredentials, SdesKeys, Security, SrtpProfile,
    };
    use sbc_media::secure::dtls::DtlsIdentity;
    use sbc_media::secure::{Received, SecureSide};

    // Key generation would dominate every run: one identity, as the relay has.
    static IDENTITY: OnceLock<Arc<DtlsIdentity>> = OnceLock::new();
    let identity = IDENTITY.get_or_init(|| Arc::new(DtlsIdentity::generate().expect("identity")));
    let from: SocketAddr = "198.51.100.7:50000".parse().expect("address");
    let fp = Fingerprint { algorithm: "sha-256".into(), digest: vec![0; 32] };
    let creds = IceCredentials {
        local_ufrag: "u".into(),
        local_pwd: "p".into(),
        remote_ufrag: "r".into(),
        remote_pwd: "q".into(),
    };
    let server = Security::Dtls(DtlsSpec {
        role: DtlsRole::Server,
        remote_fingerprints: vec![fp.clone()],
        ice: Some(creds),
    });
    let client = Security::Dtls(DtlsSpec {
        role: DtlsRole::Client,
        remote_fingerprints: vec![fp],
        ice: None,
    });
    let sdes = Security::Sdes(SdesKeys {
        profile: SrtpProfile::Aes128CmHmacSha1_80,
        local: vec![1; 30],
        remote: vec![2; 30],
    });
    let mut now = Instant::now();
    let mut sides: Vec<SecureSide> = [server, client, sdes]
        .iter()
        .filter_map(|s| SecureSide::new(now, LegSide::A, s, identity, Some(from)))
        .collect();
    // A valid check first, so the server side parses the DTLS that follows from `from`.
    static CHECK: OnceLock<Vec<u8>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        use rtc_stun::attributes::ATTR_USERNAME;
        use rtc_stun::fingerprint::FINGERPRINT;
        use rtc_stun::integrity::MessageIntegrity;
        use rtc_stun::message::{BINDING_REQUEST, Message, TransactionId};
        use rtc_stun::textattrs::TextAttribute;
        let provider = rtc_stun::crypto::default_provider().expect("crypto provider");
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(BINDING_REQUEST),
            Box::new(TextAttribute::new(ATTR_USERNAME, "u:r".into())),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                "p".into(),
                provider.crypto(),
            )),
            Box::new(FINGERPRINT),
        ])
        .expect("a valid check");
        m.raw
    });
    if let Some(server) = sides.first_mut() {
        let answered = server.handle(now, from, &mut check.clone());
        assert_eq!(answered, Received::Control, "the valid check is answered");
        while server.poll_transmit().is_some() {}
    }
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (datagram, tail) = tail.split_at(take);
        rest = tail;
        now += Duration::from_millis(u64::from(len) * 10);
        for side in &mut sides {
            let mut buf = datagram.to_vec();
            if let Received::Media { len, .. } = side.handle(now, from, &mut buf) {
                assert!(len <= datagram.len(), "media grew when unprotected");
            }
            while side.poll_transmit().is_some() {}
            side.handle_timeout(now);
            while side.poll_transmit().is_some() {}
            let mut out = datagram.to_vec();
            out.resize(datagram.len() + 64, 0);
            if let Some(n) = side.protect(
                datagram.get(1).is_some_and(|b| b & 0x7f >= 64),
                &mut out,
                datagram.len(),
            ) {
                assert!(n <= out.len());
            }
            let _ = side.poll_timeout();
        }
    }
}

/// The media worker's own parsers of what peers send on a transcoded pair: the transcoders
/// (Opus -> PCMU and PCMU -> Opus, telephone events both ways) and the RTCP reporter, each fed
/// the same datagrams (`data` cut by one-byte lengths), must not panic; every packet a
/// transcoder emits is well-formed RTP, and every report is a well-formed compound packet.
pub fn transcode(data: &[u8]) {
    use std::time::{Duration, SystemTime};

    use sbc_media::backend::{CodecSpec, Transcode};
    use sbc_media::rtcp::{MAX_REPORT, Reporter};
    use sbc_media::stats::RtpReceiveStats;
    use sbc_media::transcode::{Emitted, OpusSettings, Transcoder};

    let codec = |name: &str, payload_type, clock_rate| CodecSpec {
        name: name.into(),
        payload_type,
        clock_rate,
        channels: 1,
    };
    let opus = codec("opus", 111, 48_000);
    let pcmu = codec("PCMU", 0, 8000);
    let spec = |from: &CodecSpec, to: &CodecSpec, ev_from: u32, ev_to: u32| Transcode {
        from: from.clone(),
        to: to.clone(),
        dtmf_from: Some(codec("telephone-event", 101, ev_from)),
        dtmf_to: Some(codec("telephone-event", 101, ev_to)),
        fec_to: true,
    };
    let specs = [spec(&opus, &pcmu, 48_000, 8000), spec(&pcmu, &opus, 8000, 48_000)];
    let mut transcoders: Vec<Transcoder> = specs
        .iter()
        .filter_map(|s| Transcoder::new(s, OpusSettings::default(), 0x5bc, 1).ok())
        .collect();
    assert_eq!(transcoders.len(), 2, "both transcoders build");
    let mut now = Instant::now();
    let mut reporter = Reporter::new(now, 7);
    let mut rx = RtpReceiveStats::new();
    let mut out = Emitted::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (datagram, tail) = tail.split_at(take);
        rest = tail;
        now += Duration::from_millis(u64::from(len));
        for t in &mut transcoders {
            out.clear();
            t.handle_rtp(datagram, &mut out);
            for p in out.iter() {
                assert!(p.len() >= 12 && p[0] >> 6 == 2, "emitted RTP is RTP: {p:02x?}");
                assert_eq!(&p[8..12], &0x5bc_u32.to_be_bytes(), "in the transcoder's SSRC");
            }
        }
        reporter.on_peer_rtcp(now, datagram);
        if let Some(h) = datagram.get(..12) {
            let seq = u16::from_be_bytes([h[2], h[3]]);
            let ts = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            rx.handle_rtp(u32::from_be_bytes([h[8], h[9], h[10], h[11]]), seq, ts, ts);
            reporter.on_sent(now, 0x5bc, 8000, ts, datagram.len());
        }
        let mut report = [0u8; MAX_REPORT];
        let mut last = [0u8; MAX_REPORT];
        let written = [
            reporter.poll_report(now, SystemTime::now(), &rx, &mut report).map(|n| (report, n)),
            reporter.bye(now, SystemTime::now(), &rx, &mut last).map(|n| (last, n)),
        ];
        for (buf, len) in written.into_iter().flatten() {
            // A compound packet: its packets' length fields add up to the datagram.
            let mut walked = 0;
            while let Some(h) = buf.get(walked..walked + 4).filter(|_| walked < len) {
                assert_eq!(h[0] >> 6, 2, "version 2");
                walked += (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
            }
            assert_eq!(walked, len, "the lengths add up");
        }
    }
}
