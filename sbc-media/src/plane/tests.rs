use std::net::SocketAddr;

use super::*;
use crate::VirtualBackend;
use crate::backend::{PairId, PairStats};
use crate::sdp::Direction;
use crate::sdp::tests::{
    ASTERISK, BARESIP, CHROME, FREESWITCH, HOLD_SENDONLY, HOLD_ZERO, SIPP, TRUNK_TE96,
};

const ID: MediaSessionId = MediaSessionId(7);
const FREE: usize = 50; // RTP ports in 40000..=40099

struct Call {
    backend: Arc<VirtualBackend>,
    plane: MediaPlane,
    t0: Instant,
}

fn leg_a() -> LegMedia {
    LegMedia {
        advertise: "198.51.100.1".parse().unwrap(),
        bind: "10.0.0.1".parse().unwrap(),
        codecs: Vec::new(),
        nat: true,
        inactivity_timeout: Some(Duration::from_secs(60)),
        ..LegMedia::default()
    }
}

fn leg_b() -> LegMedia {
    LegMedia {
        advertise: "203.0.113.1".parse().unwrap(),
        bind: "10.0.1.1".parse().unwrap(),
        codecs: vec!["PCMU".into(), "PCMA".into(), "telephone-event".into()],
        nat: false,
        inactivity_timeout: Some(Duration::from_secs(30)),
        ..LegMedia::default()
    }
}

impl Call {
    fn new() -> Call {
        Call::with_ports(40000..=40099)
    }

    fn with_ports(range: std::ops::RangeInclusive<u16>) -> Call {
        let backend = Arc::new(VirtualBackend::new(range));
        let mut plane = MediaPlane::with_seed(backend.clone(), 42);
        plane.set_leg(ID, LegSide::A, leg_a());
        plane.set_leg(ID, LegSide::B, leg_b());
        Call { backend, plane, t0: Instant::now() }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn offer(&mut self, from: LegSide, sdp: &str) -> Result<Sdp, MediaError> {
        let now = self.t0;
        self.offer_at(from, sdp, now)
    }

    fn offer_at(&mut self, from: LegSide, sdp: &str, now: Instant) -> Result<Sdp, MediaError> {
        let out = self.plane.offer(ID, from, &Bytes::copy_from_slice(sdp.as_bytes()), now)?;
        Ok(reparse(&out))
    }

    fn answer(&mut self, from: LegSide, sdp: &str) -> Result<Sdp, MediaError> {
        let now = self.t0;
        self.answer_at(from, sdp, now)
    }

    fn answer_at(&mut self, from: LegSide, sdp: &str, now: Instant) -> Result<Sdp, MediaError> {
        let out = self.plane.answer(ID, from, &Bytes::copy_from_slice(sdp.as_bytes()), now)?;
        Ok(reparse(&out))
    }

    fn pairs(&self) -> Vec<PairId> {
        self.backend.pair_ids()
    }

    fn pair(&self) -> PairId {
        let pairs = self.pairs();
        assert_eq!(pairs.len(), 1, "one pair expected");
        pairs[0]
    }

    fn remote(&self, side: LegSide) -> RemoteSpec {
        self.backend.remote(self.pair(), side).expect("configured")
    }
}

fn reparse(out: &Bytes) -> Sdp {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.ends_with("\r\n") && !text.ends_with("\r\n\r\n"), "{text:?}");
    assert!(!text.replace("\r\n", "").contains('\n'), "CRLF only: {text:?}");
    Sdp::parse(out).unwrap()
}

fn sock(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn line(sdp: &Sdp, prefix: &str) -> Vec<String> {
    sdp.to_string().lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
}

/// SIPp's offer from A, answered by a trunk that says PCMU too.
fn basic_call(call: &mut Call) -> (Sdp, Sdp) {
    let offer = call.offer(LegSide::A, SIPP).unwrap();
    let answer = call.answer(LegSide::B, &TRUNK_TE96.replace("RTP/AVP 0 96", "RTP/AVP 0")).unwrap();
    (offer, answer)
}

#[test]
fn offer_and_answer_carry_the_sbc_addresses_and_ports() {
    let mut call = Call::new();
    let (offer, answer) = basic_call(&mut call);
    let ports = call.backend.ports(call.pair()).unwrap();

    // Toward B: B's advertise address and B-side port.
    assert_eq!(line(&offer, "c="), ["c=IN IP4 203.0.113.1"]);
    assert_eq!(offer.media[0].port, ports.b_rtp);
    assert_eq!(offer.origin.address, "203.0.113.1");
    assert_eq!(offer.origin.username, "-");
    // Toward A: A's advertise address and A-side port.
    assert_eq!(line(&answer, "c="), ["c=IN IP4 198.51.100.1"]);
    assert_eq!(answer.media[0].port, ports.a_rtp);
    assert_eq!(answer.origin.address, "198.51.100.1");
    assert_ne!(answer.origin.session_id, offer.origin.session_id, "one o= per leg");

    // The pair is bound on each leg's bind address.
    let spec = call.backend.spec(call.pair()).unwrap();
    assert_eq!((spec.local_a, spec.local_b), (leg_a().bind, leg_b().bind));

    // The relay knows both peers.
    let a = call.remote(LegSide::A);
    assert_eq!((a.rtp, a.rtcp), (sock("127.0.0.1:6000"), sock("127.0.0.1:6001")));
    assert_eq!(a.latch, Latch::Nat, "leg A is behind NAT");
    assert!(a.forward && !a.rtcp_mux);
    let b = call.remote(LegSide::B);
    assert_eq!((b.rtp, b.rtcp), (sock("192.0.2.50:30000"), sock("192.0.2.50:30001")));
    assert_eq!(b.latch, Latch::Strict);
    assert!(b.forward);
    assert_eq!(call.plane.len(), 1);
    let summary = call.plane.summary(ID).unwrap();
    assert_eq!(summary.leg(LegSide::A).codec.as_deref(), Some("PCMU"));
    assert_eq!(summary.b.codec.as_deref(), Some("PCMU"));
}

#[test]
fn late_offer_from_b_works_the_other_way_round() {
    let mut call = Call::new();
    let offer = call.offer(LegSide::B, FREESWITCH).unwrap();
    let ports = call.backend.ports(call.pair()).unwrap();
    // Toward A (empty profile): all of FreeSWITCH's codecs, A's address, A's port, a=rtcp kept.
    assert_eq!(offer.media[0].formats, ["102", "9", "0", "8", "101", "13"]);
    assert_eq!(line(&offer, "c="), ["c=IN IP4 198.51.100.1"]);
    assert_eq!(offer.media[0].port, ports.a_rtp);
    assert_eq!(
        line(&offer, "a=rtcp:"),
        [format!("a=rtcp:{} IN IP4 198.51.100.1", ports.a_rtp + 1)]
    );
    assert_eq!(call.answer(LegSide::B, SIPP), Err(MediaError::NoOffer), "B cannot answer itself");
    let answer = call.answer(LegSide::A, &SIPP.replace("RTP/AVP 0", "RTP/AVP 0 101")).unwrap();
    assert_eq!(line(&answer, "c="), ["c=IN IP4 203.0.113.1"]);
    assert_eq!(answer.media[0].port, ports.b_rtp);
    assert_eq!(answer.media[0].formats, ["0", "101"], "101 without rtpmap: the offer's 101");
    let b = call.remote(LegSide::B);
    assert_eq!(b.rtcp, sock("198.51.100.7:24587"), "a=rtcp of the offerer");
    assert_eq!(call.remote(LegSide::A).rtp, sock("127.0.0.1:6000"));
}

#[test]
fn ipv6_leg_out_of_ipv4_leg() {
    let mut call = Call::new();
    let mut b = leg_b();
    b.advertise = "2001:db8::1".parse().unwrap();
    b.bind = "2001:db8::1".parse().unwrap();
    call.plane.set_leg(ID, LegSide::B, b);
    let offer = call.offer(LegSide::A, FREESWITCH).unwrap();
    assert_eq!(line(&offer, "c="), ["c=IN IP6 2001:db8::1"]);
    assert_eq!(
        line(&offer, "o=")[0].split(' ').skip(4).collect::<Vec<_>>(),
        ["IP6", "2001:db8::1"]
    );
    let port = offer.media[0].port;
    assert_eq!(line(&offer, "a=rtcp:"), [format!("a=rtcp:{} IN IP6 2001:db8::1", port + 1)]);
    let answer = call
        .answer(
            LegSide::B,
            "v=0\r\no=x 1 1 IN IP6 2001:db8::99\r\nc=IN IP6 2001:db8::99\r\n\
             m=audio 7000 RTP/AVP 0\r\n",
        )
        .unwrap();
    assert_eq!(line(&answer, "c="), ["c=IN IP4 198.51.100.1"]);
    assert_eq!(call.remote(LegSide::B).rtp, sock("[2001:db8::99]:7000"));
    let spec = call.backend.spec(call.pair()).unwrap();
    assert_eq!(spec.local_b, "2001:db8::1".parse::<IpAddr>().unwrap());
}

#[test]
fn chrome_offer_reaches_a_sip_trunk_without_ice_or_bundle() {
    // A relay without DTLS cannot terminate the browser's media: refused, nothing opened.
    let mut call = Call::new();
    assert_eq!(call.offer(LegSide::A, CHROME), Err(MediaError::BadSdp("DTLS-SRTP not available")));
    assert_eq!(call.backend.open_pairs(), 0);

    call.backend.set_dtls_fingerprint(Some("sha-256 01:02:03".into()));
    let offer = call.offer(LegSide::A, CHROME).unwrap();
    let text = offer.to_string();
    for gone in ["a=candidate", "a=ice-", "BUNDLE", "0.0.0.0", "a=fingerprint", "a=setup"] {
        assert!(!text.contains(gone), "{gone}:\n{text}");
    }
    assert_eq!(offer.media[0].formats, ["0", "8", "110", "126"], "B's profile: G.711, DTMF");
    assert_eq!(offer.media[0].proto, "RTP/AVP");
    assert_eq!(call.pairs().len(), 1, "only the audio line is carried; video is refused");
    assert_eq!(offer.media[1].port, 0);
    let a = call.remote(LegSide::A);
    assert_eq!(a.rtp, sock("192.168.1.7:46243"), "the first host candidate until ICE decides");
    assert!(a.rtcp_mux);
    assert!(a.forward, "c=0.0.0.0 with ICE is no hold");
}

#[test]
fn no_common_codec_opens_nothing() {
    let mut call = Call::new();
    let mut b = leg_b();
    b.codecs = vec!["G729".into()];
    call.plane.set_leg(ID, LegSide::B, b);
    assert_eq!(call.offer(LegSide::A, ASTERISK), Err(MediaError::NoCommonCodec));
    assert_eq!(call.backend.open_pairs(), 0);
    assert_eq!(MediaError::NoCommonCodec.status_code(), 488);

    let mut fresh = MediaPlane::with_seed(call.backend.clone(), 1);
    let bad = Bytes::from_static(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n");
    assert_eq!(fresh.offer(ID, LegSide::A, &bad, call.t0), Err(MediaError::BadSdp("bad m= line")));
    assert!(fresh.is_empty(), "a failed first offer leaves no session");
    assert_eq!(
        fresh.offer(ID, LegSide::A, &Bytes::from_static(b"hello"), call.t0),
        Err(MediaError::NotSdp)
    );
}

#[test]
fn telephone_event_101_vs_96_is_mapped_per_direction() {
    let mut call = Call::new();
    call.offer(LegSide::A, ASTERISK).unwrap();
    let answer = call.answer(LegSide::B, TRUNK_TE96).unwrap();
    assert_eq!(answer.media[0].formats, ["0", "101"], "A sees its own numbers");
    assert_eq!(line(&answer, "a=rtpmap:101"), ["a=rtpmap:101 telephone-event/8000"]);
    let from_a = call.remote(LegSide::A).pt_map;
    let from_b = call.remote(LegSide::B).pt_map;
    assert_eq!((from_a[101], from_a[0], from_a[8]), (96, 0, 8));
    assert_eq!((from_b[96], from_b[0]), (101, 0));
}

#[test]
fn hold_and_resume_with_sendonly() {
    let mut call = Call::new();
    basic_call(&mut call);
    let ports = call.backend.ports(call.pair()).unwrap();
    // A puts B on hold (re-INVITE, a=sendonly).
    let hold = call.offer(LegSide::A, &format!("{SIPP}a=sendonly\r\n")).unwrap();
    assert_eq!(hold.direction(0), Direction::SendOnly);
    assert_eq!(hold.media[0].port, ports.b_rtp, "a re-offer keeps the ports");
    assert!(call.remote(LegSide::A).forward, "music on hold flows A -> B");
    assert!(!call.remote(LegSide::B).forward, "A does not receive any more");
    let answer = call.answer(LegSide::B, &TRUNK_TE96.replace("a=ptime:20", "a=recvonly")).unwrap();
    assert_eq!(answer.direction(0), Direction::RecvOnly);
    assert!(call.remote(LegSide::A).forward && !call.remote(LegSide::B).forward);
    assert_eq!(call.backend.ports(call.pair()), Some(ports));

    // Resume.
    call.offer(LegSide::A, SIPP).unwrap();
    call.answer(LegSide::B, TRUNK_TE96).unwrap();
    assert!(call.remote(LegSide::A).forward && call.remote(LegSide::B).forward);

    // Both inactive: nothing forwarded.
    call.offer(LegSide::B, &format!("{TRUNK_TE96}a=inactive\r\n")).unwrap();
    call.answer(LegSide::A, &format!("{SIPP}a=inactive\r\n")).unwrap();
    assert!(!call.remote(LegSide::A).forward && !call.remote(LegSide::B).forward);
}

#[test]
fn old_style_hold_with_zero_address() {
    let mut call = Call::new();
    basic_call(&mut call);
    let hold = call.offer(LegSide::A, HOLD_ZERO).unwrap();
    assert_eq!(hold.direction(0), Direction::SendOnly, "written as a=sendonly toward B");
    assert_eq!(line(&hold, "c="), ["c=IN IP4 203.0.113.1"], "with the SBC's real address");
    let a = call.remote(LegSide::A);
    assert_eq!(a.rtp, None, "nothing is sent to 0.0.0.0");
    assert!(!call.remote(LegSide::B).forward);
    call.answer(LegSide::B, &TRUNK_TE96.replace("a=ptime:20", "a=recvonly")).unwrap();
    assert!(!call.remote(LegSide::B).forward);

    // Modern hold from the callee side.
    let offer = call.offer(LegSide::B, HOLD_SENDONLY).unwrap();
    assert_eq!(offer.direction(0), Direction::SendOnly);
    assert!(!call.remote(LegSide::A).forward);
}

#[test]
fn rtcp_mux_on_one_leg_only() {
    let mut call = Call::new();
    // baresip offers rtcp-mux; B's profile keeps PCMU/PCMA/DTMF.
    let offer = call.offer(LegSide::A, BARESIP).unwrap();
    assert!(offer.media[0].attribute("rtcp-mux").is_some(), "offered on because A offered it");
    assert!(call.remote(LegSide::A).rtcp_mux, "the SBC accepts A's mux");
    let answer = call.answer(LegSide::B, ASTERISK).unwrap();
    assert!(answer.media[0].attribute("rtcp-mux").is_some(), "A gets its mux accepted");
    assert!(call.remote(LegSide::A).rtcp_mux);
    assert!(!call.remote(LegSide::B).rtcp_mux, "B declined: RTCP on RTP + 1 there");

    // B accepts too.
    call.offer(LegSide::A, BARESIP).unwrap();
    call.answer(LegSide::B, &format!("{ASTERISK}a=rtcp-mux\r\n")).unwrap();
    assert!(call.remote(LegSide::A).rtcp_mux && call.remote(LegSide::B).rtcp_mux);

    // Offer without mux: B's a=rtcp-mux in the answer is not passed to A, and A does not mux.
    let mut plain = Call::new();
    plain.offer(LegSide::A, ASTERISK).unwrap();
    let answer = plain.answer(LegSide::B, &format!("{SIPP}a=rtcp-mux\r\n")).unwrap();
    assert!(answer.media[0].attribute("rtcp-mux").is_none());
    assert!(!plain.remote(LegSide::A).rtcp_mux);
}

#[test]
fn rtcp_attribute_is_rewritten_only_when_present() {
    let mut call = Call::new();
    let offer = call.offer(LegSide::A, FREESWITCH).unwrap();
    let port = offer.media[0].port;
    assert_eq!(line(&offer, "a=rtcp:"), [format!("a=rtcp:{} IN IP4 203.0.113.1", port + 1)]);
    let answer = call.answer(LegSide::B, SIPP).unwrap();
    assert!(line(&answer, "a=rtcp:").is_empty(), "SIPp's answer has none, so none is added");
    let answer = call.answer(LegSide::B, &format!("{SIPP}a=rtcp:7001\r\n")).unwrap();
    assert_eq!(line(&answer, "a=rtcp:"), [format!("a=rtcp:{}", answer.media[0].port + 1)]);
    assert_eq!(call.remote(LegSide::B).rtcp, sock("127.0.0.1:7001"));
}

#[test]
fn port_zero_streams_and_stream_changes_in_re_offers() {
    let mut call = Call::new();
    let with_video = format!("{SIPP}m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
    let offer = call.offer(LegSide::A, &with_video).unwrap();
    assert_eq!(offer.media[1].port, 0, "disabled stays disabled");
    assert_eq!(call.pairs().len(), 1, "no pair for a disabled stream");
    call.answer(LegSide::B, &format!("{SIPP}m=video 0 RTP/AVP 96\r\n")).unwrap();
    let audio_pair = call.pair();

    // Re-offer enabling the video stream: a new pair, the audio one kept.
    let enabled = with_video.replace("m=video 0", "m=video 6002");
    let offer = call.offer(LegSide::A, &enabled).unwrap();
    assert_ne!(offer.media[1].port, 0);
    let pairs = call.pairs();
    assert_eq!((pairs.len(), pairs[0]), (2, audio_pair));
    // B rejects video: its pair closes, the answer to A says port 0.
    let answer = call.answer(LegSide::B, &format!("{SIPP}m=video 0 RTP/AVP 96\r\n")).unwrap();
    assert_eq!(answer.media[1].port, 0);
    assert_eq!(call.pairs(), [audio_pair]);

    // Re-offer with a third stream added: a new pair; then audio disabled: its pair closes.
    let three = format!("{enabled}m=audio 6004 RTP/AVP 0\r\n");
    call.offer(LegSide::A, &three).unwrap();
    assert_eq!(call.pairs().len(), 3);
    let audio_off = three.replacen("m=audio 6000", "m=audio 0", 1);
    let offer = call.offer(LegSide::A, &audio_off).unwrap();
    assert_eq!(offer.media.iter().map(|m| m.port == 0).collect::<Vec<_>>(), [true, false, false]);
    // The disabled stream's pair stays open until the answer (a refusal would bring it back).
    assert_eq!(call.pairs().len(), 3);
    assert!(call.pairs().contains(&audio_pair));
    call.answer(LegSide::B, &audio_off).unwrap();
    assert_eq!(call.pairs().len(), 2);
    assert!(!call.pairs().contains(&audio_pair));
    assert_eq!(call.backend.free_ports(), FREE - 4);
}

#[test]
fn answer_must_have_the_offers_m_lines() {
    let mut call = Call::new();
    call.offer(LegSide::A, &format!("{SIPP}m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"))
        .unwrap();
    let before = (call.pairs(), call.backend.remote(call.pairs()[0], LegSide::B));
    let err = call.answer(LegSide::B, SIPP);
    assert_eq!(err, Err(MediaError::BadSdp("answer m= lines do not match the offer")));
    assert_eq!((call.pairs(), call.backend.remote(call.pairs()[0], LegSide::B)), before);
    // The offer is still open: a proper answer is taken.
    call.answer(LegSide::B, &format!("{SIPP}m=video 0 RTP/AVP 96\r\n")).unwrap();
}

#[test]
fn re_offer_keeps_ports_and_reconfigures_the_offerer() {
    let mut call = Call::new();
    basic_call(&mut call);
    let pair = call.pair();
    let ports = call.backend.ports(pair);
    let a_count = call.backend.configure_count(pair, LegSide::A);
    let b_count = call.backend.configure_count(pair, LegSide::B);
    // A moved (new address in the re-INVITE).
    let moved = SIPP.replace("127.0.0.1", "127.0.0.2");
    call.offer(LegSide::A, &moved).unwrap();
    assert_eq!((call.pair(), call.backend.ports(pair)), (pair, ports));
    assert_eq!(call.remote(LegSide::A).rtp, sock("127.0.0.2:6000"));
    assert_eq!(call.backend.configure_count(pair, LegSide::A), a_count + 1, "re-latch on A");
    assert_eq!(call.backend.configure_count(pair, LegSide::B), b_count, "B unchanged");
    // Re-INVITE from B, symmetric.
    let offer = call.offer(LegSide::B, TRUNK_TE96).unwrap();
    assert_eq!(offer.media[0].port, ports.unwrap().a_rtp);
    assert_eq!(call.backend.configure_count(pair, LegSide::B), b_count + 1);
    call.answer(LegSide::A, &moved).unwrap();
    assert_eq!(call.pairs(), [pair]);
}

#[test]
fn bad_re_offer_leaves_the_session_unchanged() {
    let mut call = Call::new();
    let (_, answer) = basic_call(&mut call);
    let pair = call.pair();
    let (a, b) = (call.remote(LegSide::A), call.remote(LegSide::B));
    let counts = (
        call.backend.configure_count(pair, LegSide::A),
        call.backend.configure_count(pair, LegSide::B),
    );
    assert!(matches!(call.offer(LegSide::A, "v=0\r\no=broken\r\n"), Err(MediaError::BadSdp(_))));
    let mut b_g729 = leg_b();
    b_g729.codecs = vec!["G729".into()];
    call.plane.sessions.get_mut(&ID).unwrap().legs[1] = b_g729;
    assert_eq!(call.offer(LegSide::A, SIPP), Err(MediaError::NoCommonCodec));
    assert_eq!((call.remote(LegSide::A), call.remote(LegSide::B)), (a, b));
    assert_eq!(
        (
            call.backend.configure_count(pair, LegSide::A),
            call.backend.configure_count(pair, LegSide::B)
        ),
        counts
    );
    // The last offer/answer is still the one in force: a repeated answer gives the same SDP.
    let again = call.answer(LegSide::B, &TRUNK_TE96.replace("RTP/AVP 0 96", "RTP/AVP 0")).unwrap();
    assert_eq!(again, answer, "same answer, same o= version");
}

#[test]
fn failover_replaces_the_unanswered_offer_without_leaking() {
    let mut call = Call::new();
    call.offer(LegSide::A, BARESIP).unwrap();
    // The first target sends early media (183 with SDP), then fails.
    call.answer(LegSide::B, SIPP).unwrap();
    let pair = call.pair();
    assert!(call.remote(LegSide::B).rtp.is_some());
    // Next target, same trunk profile: same pair, B's old peer forgotten at once.
    call.plane.set_leg(ID, LegSide::B, leg_b());
    assert_eq!(call.remote(LegSide::B).rtp, None);
    assert!(!call.remote(LegSide::B).forward);
    let second = call.offer(LegSide::A, BARESIP).unwrap();
    assert_eq!(call.pairs(), [pair]);
    assert_eq!(second.origin.session_version, "1", "a new dialog gets a fresh o=");
    call.answer(LegSide::B, FREESWITCH).unwrap();
    assert_eq!(call.remote(LegSide::B).rtp, sock("198.51.100.7:24586"));

    // A target on another trunk with another bind address: reopened, the old pair closed.
    let mut other = leg_b();
    other.bind = "10.0.2.1".parse().unwrap();
    call.plane.set_leg(ID, LegSide::B, other);
    call.offer(LegSide::A, BARESIP).unwrap();
    let new_pair = call.pair();
    assert_ne!(new_pair, pair);
    assert_eq!(call.backend.spec(new_pair).unwrap().local_b, "10.0.2.1".parse::<IpAddr>().unwrap());
    assert_eq!(call.backend.free_ports(), FREE - 2);
    call.plane.release(ID);
    assert_eq!(call.backend.free_ports(), FREE);
}

#[test]
fn a_new_peer_cannot_be_answered_for_the_old_ones_offer() {
    let mut call = Call::new();
    call.offer(LegSide::B, FREESWITCH).unwrap();
    call.plane.set_leg(ID, LegSide::B, leg_b());
    assert_eq!(call.answer(LegSide::A, SIPP), Err(MediaError::NoOffer));
    // A's own offer survives a new B (that is failover).
    call.offer(LegSide::A, SIPP).unwrap();
    call.plane.set_leg(ID, LegSide::B, leg_b());
    assert!(call.answer(LegSide::B, SIPP).is_ok());
}

#[test]
fn no_ports_leaks_nothing() {
    // Room for one pair (two RTP ports).
    let mut call = Call::with_ports(40000..=40003);
    let two = format!("{SIPP}m=audio 6002 RTP/AVP 0\r\n");
    assert_eq!(call.offer(LegSide::A, &two), Err(MediaError::NoPorts));
    assert_eq!((call.backend.open_pairs(), call.backend.free_ports()), (0, 2));
    assert_eq!(MediaError::NoPorts.status_code(), 503);
    // One stream fits; a re-offer adding a second fails and keeps the first.
    basic_call(&mut call);
    let pair = call.pair();
    assert_eq!(call.offer(LegSide::A, &two), Err(MediaError::NoPorts));
    assert_eq!(call.pairs(), [pair]);
    // And the old session still answers.
    call.answer(LegSide::B, SIPP).unwrap();
    assert_eq!(call.plane.release(ID).map(|s| s.a.codec), Some(Some("PCMU".into())));
    assert_eq!(call.backend.free_ports(), 2);
}

#[test]
fn origin_version_goes_up_only_when_the_sdp_changes() {
    let mut call = Call::new();
    let (offer1, answer1) = basic_call(&mut call);
    assert_eq!(
        (offer1.origin.session_version.as_str(), answer1.origin.session_version.as_str()),
        ("1", "1")
    );
    // Session refresh: same SDP, same version on both legs.
    let offer2 = call.offer(LegSide::A, SIPP).unwrap();
    let answer2 =
        call.answer(LegSide::B, &TRUNK_TE96.replace("RTP/AVP 0 96", "RTP/AVP 0")).unwrap();
    assert_eq!((offer2, answer2.clone()), (offer1.clone(), answer1.clone()));
    // Hold changes what B gets: version 2 toward B; A's answer unchanged apart from direction.
    let hold = call.offer(LegSide::A, &format!("{SIPP}a=sendonly\r\n")).unwrap();
    assert_eq!(hold.origin.session_version, "2");
    assert_eq!(hold.origin.session_id, offer1.origin.session_id, "the id never changes");
    let answer3 = call.answer(LegSide::B, &format!("{SIPP}a=recvonly\r\n")).unwrap();
    assert_eq!(answer3.origin.session_version, "2");
    // An offer from B on leg A continues A's sequence.
    let from_b = call.offer(LegSide::B, SIPP).unwrap();
    assert_eq!(from_b.origin.session_id, answer1.origin.session_id);
    assert_eq!(from_b.origin.session_version, "3");
    // o= of the peer never crosses; s= is ours.
    assert!(!hold.to_string().contains("user1"));
    assert_eq!(hold.session_name, "-");
}

#[test]
fn inactivity_deadline_arithmetic() {
    let mut call = Call::new();
    assert_eq!(call.plane.inactivity_deadline(ID), None, "no pairs yet");
    let t10 = call.at(10);
    call.offer_at(LegSide::A, SIPP, t10).unwrap();
    // The smaller timeout of the two legs (A: 60 s, B: 30 s) after the last change.
    assert_eq!(call.plane.inactivity_deadline(ID), Some(call.at(40)));
    let t20 = call.at(20);
    call.answer_at(LegSide::B, SIPP, t20).unwrap();
    assert_eq!(call.plane.inactivity_deadline(ID), Some(call.at(50)));
    // A packet after the answer moves it.
    call.backend.set_last_packet(call.pair(), call.at(100));
    assert_eq!(call.plane.inactivity_deadline(ID), Some(call.at(130)));
    // A packet older than the last change does not.
    call.backend.set_last_packet(call.pair(), call.at(5));
    assert_eq!(call.plane.inactivity_deadline(ID), Some(call.at(50)));
    // Both directions inactive: no deadline.
    let t200 = call.at(200);
    call.offer_at(LegSide::A, &format!("{SIPP}a=inactive\r\n"), t200).unwrap();
    call.answer_at(LegSide::B, &format!("{SIPP}a=inactive\r\n"), t200).unwrap();
    assert_eq!(call.plane.inactivity_deadline(ID), None);
    // One-way hold still has one: the held side's silence is expected, the other's is not.
    call.offer_at(LegSide::A, &format!("{SIPP}a=sendonly\r\n"), t200).unwrap();
    call.answer_at(LegSide::B, &format!("{SIPP}a=recvonly\r\n"), t200).unwrap();
    assert_eq!(call.plane.inactivity_deadline(ID), Some(call.at(230)));
    // Only one leg with a timeout: that one.
    let mut a = leg_a();
    a.inactivity_timeout = None;
    call.plane.sessions.get_mut(&ID).unwrap().legs[1].inactivity_timeout = None;
    call.plane.sessions.get_mut(&ID).unwrap().legs[0] =
        LegMedia { inactivity_timeout: Some(Duration::from_secs(90)), ..a };
    assert_eq!(call.plane.inactivity_deadline(ID), Some(call.at(290)));
    call.plane.sessions.get_mut(&ID).unwrap().legs[0].inactivity_timeout = None;
    assert_eq!(call.plane.inactivity_deadline(ID), None, "no timeout configured");
    assert_eq!(call.plane.inactivity_deadline(MediaSessionId(999)), None);
}

#[test]
fn summary_and_release_return_figures_and_ports() {
    let mut call = Call::new();
    let two = format!("{SIPP}m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
    call.offer(LegSide::A, &two).unwrap();
    call.answer(LegSide::B, &two).unwrap();
    let pairs = call.pairs();
    assert_eq!(call.backend.free_ports(), FREE - 4);
    let stats = |packets, jitter_ms| PairStats {
        from_a: DirectionStats { packets, jitter_ms, ..DirectionStats::default() },
        from_b: DirectionStats { packets: packets * 2, ..DirectionStats::default() },
        last_packet: None,
        failure: None,
    };
    call.backend.set_stats(pairs[0], stats(100, 3.0));
    call.backend.set_stats(pairs[1], stats(50, 7.5));
    let summary = call.plane.summary(ID).unwrap();
    assert_eq!(summary.a.received.packets, 150);
    assert_eq!(summary.a.received.jitter_ms, 7.5);
    assert_eq!(summary.b.received.packets, 300);
    assert_eq!(summary.a.codec.as_deref(), Some("PCMU"), "the audio stream's codec");
    // Video disabled by a re-offer: its figures stay in the summary, before the answer (the
    // pair is still open) and after it (closed).
    let no_video = two.replace("m=video 6002", "m=video 0");
    call.offer(LegSide::A, &no_video).unwrap();
    assert_eq!(call.pairs(), pairs);
    assert_eq!(call.plane.summary(ID).unwrap().a.received.packets, 150);
    call.answer(LegSide::B, &no_video).unwrap();
    assert_eq!(call.pairs(), [pairs[0]]);
    assert_eq!(call.plane.summary(ID).unwrap().a.received.packets, 150);
    let last = call.plane.release(ID).unwrap();
    assert_eq!(last, summary);
    assert_eq!((call.backend.open_pairs(), call.backend.free_ports()), (0, FREE));
    assert!(call.plane.is_empty());
    assert_eq!(call.plane.release(ID), None);
    assert_eq!(call.plane.summary(ID), None);
}

#[test]
fn early_answer_then_final_answer() {
    let mut call = Call::new();
    call.offer(LegSide::A, ASTERISK).unwrap();
    let early = call.answer(LegSide::B, SIPP).unwrap();
    assert_eq!(call.remote(LegSide::B).rtp, sock("127.0.0.1:6000"));
    // The 200 carries a different answer (unreliable 183): it replaces the early one.
    let last = call.answer(LegSide::B, TRUNK_TE96).unwrap();
    assert_eq!(call.remote(LegSide::B).rtp, sock("192.0.2.50:30000"));
    assert_eq!(last.origin.session_version, "2", "a different answer toward A");
    assert_eq!(early.origin.session_id, last.origin.session_id);
}

#[test]
fn answers_without_an_offer() {
    let backend = Arc::new(VirtualBackend::new(40000..=40099));
    let mut plane = MediaPlane::with_seed(backend, 1);
    let sdp = Bytes::from_static(SIPP.as_bytes());
    assert_eq!(plane.answer(ID, LegSide::B, &sdp, Instant::now()), Err(MediaError::NoOffer));
    plane.set_leg(ID, LegSide::A, LegMedia::default());
    assert_eq!(plane.answer(ID, LegSide::B, &sdp, Instant::now()), Err(MediaError::NoOffer));
    plane.offer(ID, LegSide::A, &sdp, Instant::now()).unwrap();
    assert_eq!(plane.answer(ID, LegSide::A, &sdp, Instant::now()), Err(MediaError::NoOffer));
    assert!(plane.answer(ID, LegSide::B, &sdp, Instant::now()).is_ok());
}

#[test]
fn default_legs_when_never_set() {
    let backend = Arc::new(VirtualBackend::new(40000..=40099));
    let mut plane = MediaPlane::new(backend.clone());
    let out = plane
        .offer(ID, LegSide::A, &Bytes::from_static(ASTERISK.as_bytes()), Instant::now())
        .unwrap();
    let out = reparse(&out);
    assert_eq!(line(&out, "c="), ["c=IN IP4 127.0.0.1"]);
    assert_eq!(out.media[0].formats, ["8", "0", "3", "101"], "empty profile keeps all");
    let pair = backend.pair_ids()[0];
    assert_eq!(backend.remote(pair, LegSide::A).unwrap().latch, Latch::Strict);
    assert_eq!(plane.inactivity_deadline(ID), None);
    assert_eq!(format!("{plane:?}"), "MediaPlane { sessions: 1, .. }");
}

#[test]
fn clock_rate_follows_the_negotiated_codec() {
    let mut call = Call::new();
    let mut b = leg_b();
    b.codecs = vec!["opus".into(), "PCMU".into()];
    call.plane.set_leg(ID, LegSide::B, b);
    call.offer(LegSide::A, BARESIP).unwrap();
    assert_eq!(call.remote(LegSide::A).clock_rate, 48000, "offered opus first");
    call.answer(LegSide::B, &SIPP.replace("RTP/AVP 0", "RTP/AVP 0 96\r\na=rtpmap:96 opus/48000/2"))
        .unwrap();
    assert_eq!(call.remote(LegSide::A).clock_rate, 8000, "answered PCMU first");
    assert_eq!(call.remote(LegSide::B).clock_rate, 8000);
}

/// A browser listener's profile (Opus only) and a trunk's (G.711).
fn browser_leg(leg: LegMedia) -> LegMedia {
    LegMedia {
        codecs: vec!["opus".into(), "telephone-event".into()],
        profile: MediaProfile::Webrtc,
        ..leg
    }
}

/// Chrome's offer, audio only.
fn chrome_audio() -> String {
    let cut = CHROME.find("m=video").unwrap();
    CHROME[..cut].replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0")
}

fn codec_spec(name: &str, pt: u8, rate: u32, channels: u8) -> crate::backend::CodecSpec {
    crate::backend::CodecSpec { name: name.into(), payload_type: pt, clock_rate: rate, channels }
}

#[test]
fn browser_opus_to_a_g711_trunk_is_transcoded() {
    use crate::backend::Transcode;
    let mut call = Call::new();
    call.backend.set_dtls_fingerprint(Some(VirtualBackend::FINGERPRINT.to_owned()));
    call.plane.set_leg(ID, LegSide::A, browser_leg(leg_a()));
    let offer = call.offer(LegSide::A, &chrome_audio()).unwrap();
    // Toward the trunk: its own codecs (G.711, events at 8000), nothing of the browser's.
    let m = &offer.media[0];
    assert_eq!(m.formats, ["0", "8", "101"]);
    assert_eq!(
        line(&offer, "a=rtpmap:"),
        ["a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000"]
    );
    assert!(line(&offer, "a=ssrc").is_empty() && line(&offer, "a=rtcp-fb").is_empty());
    assert_eq!(line(&offer, "a=ptime"), ["a=ptime:20"]);
    // Before the answer the browser's side already knows its clock.
    assert_eq!(call.remote(LegSide::A).clock_rate, 48000);

    // baresip answers PCMU with events.
    let baresip = BARESIP
        .replace("RTP/AVP 96 97 9 0 8 101", "RTP/AVP 0 101")
        .replace("a=rtpmap:96 opus/48000/2\r\n", "")
        .replace("a=fmtp:96 stereo=1;sprop-stereo=1;maxaveragebitrate=28000\r\n", "")
        .replace("a=rtpmap:97 L16/48000/2\r\n", "");
    let answer = call.answer(LegSide::B, &baresip).unwrap();
    // Toward the browser: its own Opus and 48 kHz events, with its numbers and fmtp.
    assert_eq!(answer.media[0].formats, ["111", "110"]);
    assert_eq!(
        line(&answer, "a=rtpmap:"),
        ["a=rtpmap:111 opus/48000/2", "a=rtpmap:110 telephone-event/48000"]
    );
    // Its fmtp with what the SBC receives: narrowband (the trunk is G.711), in-band FEC.
    assert_eq!(
        line(&answer, "a=fmtp:"),
        [
            "a=fmtp:111 minptime=10;maxplaybackrate=8000;sprop-maxcapturerate=8000;maxaveragebitrate=20000;useinbandfec=1"
        ]
    );
    assert!(line(&answer, "a=ssrc").is_empty());

    let opus = codec_spec("opus", 111, 48000, 2);
    let pcmu = codec_spec("PCMU", 0, 8000, 1);
    let te48 = codec_spec("telephone-event", 110, 48000, 1);
    let te8 = codec_spec("telephone-event", 101, 8000, 1);
    let a = call.remote(LegSide::A);
    assert_eq!(
        a.transcode,
        Some(Transcode {
            from: opus.clone(),
            to: pcmu.clone(),
            dtmf_from: Some(te48.clone()),
            dtmf_to: Some(te8.clone()),
            fec_to: false,
        })
    );
    assert_eq!((a.clock_rate, a.pt_map), (48000, RemoteSpec::IDENTITY_PT_MAP));
    let b = call.remote(LegSide::B);
    assert_eq!(
        b.transcode,
        Some(Transcode {
            from: pcmu,
            to: opus,
            dtmf_from: Some(te8),
            dtmf_to: Some(te48),
            fec_to: true,
        }),
        "Chrome offered useinbandfec=1"
    );
    assert_eq!(b.clock_rate, 8000);
    let summary = call.plane.summary(ID).unwrap();
    assert_eq!(summary.a.codec.as_deref(), Some("opus"));
    assert_eq!(summary.b.codec.as_deref(), Some("PCMU"));

    // A re-offer from the browser keeps transcoding until the new answer says otherwise.
    call.offer(LegSide::A, &chrome_audio()).unwrap();
    assert!(call.remote(LegSide::A).transcode.is_some());
    assert!(call.remote(LegSide::B).transcode.is_some());
}

#[test]
fn g711_trunk_to_a_browser_is_offered_opus() {
    use crate::backend::Transcode;
    let mut call = Call::new();
    call.backend.set_dtls_fingerprint(Some(VirtualBackend::FINGERPRINT.to_owned()));
    // A is the trunk (SIPp, PCMU only), B the browser.
    call.plane.set_leg(ID, LegSide::A, LegMedia { codecs: leg_b().codecs, ..leg_a() });
    call.plane.set_leg(ID, LegSide::B, browser_leg(leg_b()));
    let offer = call.offer(LegSide::A, SIPP).unwrap();
    assert_eq!(offer.media[0].formats, ["111"], "no events: SIPp offered none");
    assert_eq!(line(&offer, "a=rtpmap:"), ["a=rtpmap:111 opus/48000/2"]);
    assert_eq!(
        line(&offer, "a=fmtp:"),
        [
            "a=fmtp:111 maxplaybackrate=8000;sprop-maxcapturerate=8000;maxaveragebitrate=20000;useinbandfec=1"
        ]
    );

    let chrome_answer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 192.0.2.77\r\nt=0 0\r\n\
                         m=audio 5004 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                         a=fmtp:111 minptime=10;useinbandfec=1\r\na=sendrecv\r\n\
                         a=ice-ufrag:brws\r\na=ice-pwd:browser-password-0123456789\r\n\
                         a=fingerprint:sha-256 0A:0B:0C\r\na=setup:active\r\na=mid:0\r\n\
                         a=rtcp-mux\r\n";
    let answer = call.answer(LegSide::B, chrome_answer).unwrap();
    assert_eq!(answer.media[0].formats, ["0"]);
    assert_eq!(line(&answer, "a=rtpmap:"), ["a=rtpmap:0 PCMU/8000"]);
    assert!(line(&answer, "a=fmtp:").is_empty());
    let opus = codec_spec("opus", 111, 48000, 2);
    let pcmu = codec_spec("PCMU", 0, 8000, 1);
    let a = call.remote(LegSide::A);
    assert_eq!(
        a.transcode,
        Some(Transcode {
            from: pcmu.clone(),
            to: opus.clone(),
            dtmf_from: None,
            dtmf_to: None,
            fec_to: true,
        })
    );
    assert_eq!(a.clock_rate, 8000);
    let b = call.remote(LegSide::B);
    assert_eq!(
        b.transcode,
        Some(Transcode { from: opus, to: pcmu, dtmf_from: None, dtmf_to: None, fec_to: false })
    );
    assert_eq!(b.clock_rate, 48000);
}

#[test]
fn a_shared_codec_means_no_transcoding() {
    let mut call = Call::new();
    call.backend.set_dtls_fingerprint(Some(VirtualBackend::FINGERPRINT.to_owned()));
    // The browser profile allows PCMU too: Chrome's PCMU reaches the trunk as is.
    let mut a = browser_leg(leg_a());
    a.codecs.push("PCMU".into());
    call.plane.set_leg(ID, LegSide::A, a);
    let offer = call.offer(LegSide::A, &chrome_audio()).unwrap();
    assert_eq!(offer.media[0].formats, ["0", "8", "110", "126"]);
    call.answer(LegSide::B, &TRUNK_TE96.replace("RTP/AVP 0 96", "RTP/AVP 0")).unwrap();
    assert_eq!(call.remote(LegSide::A).transcode, None);
    assert_eq!(call.remote(LegSide::B).transcode, None);
    // A trunk whose codecs the SBC cannot transcode still gets 488.
    let mut call = Call::new();
    call.backend.set_dtls_fingerprint(Some(VirtualBackend::FINGERPRINT.to_owned()));
    call.plane.set_leg(ID, LegSide::A, browser_leg(leg_a()));
    call.plane.set_leg(ID, LegSide::B, LegMedia { codecs: vec!["G729".into()], ..leg_b() });
    assert_eq!(call.offer(LegSide::A, &chrome_audio()), Err(MediaError::NoCommonCodec));
}

/// Both sides of every open pair as the relay has them, with the pair's ports.
fn relay_state(call: &Call) -> Vec<(Option<PairPorts>, Option<RemoteSpec>, Option<RemoteSpec>)> {
    let b = &call.backend;
    b.pair_ids()
        .into_iter()
        .map(|p| (b.ports(p), b.remote(p, LegSide::A), b.remote(p, LegSide::B)))
        .collect()
}

#[test]
fn refused_re_offer_puts_the_old_address_back() {
    let mut call = Call::new();
    let (_, answer) = basic_call(&mut call);
    let pair = call.pair();
    let before = relay_state(&call);
    let b_count = call.backend.configure_count(pair, LegSide::B);

    // A moves; the relay follows at once (the offerer may already send from there).
    call.offer(LegSide::A, &SIPP.replace("127.0.0.1", "127.0.0.2")).unwrap();
    assert_eq!(call.remote(LegSide::A).rtp, sock("127.0.0.2:6000"));
    // B says 488: A stays where the old session has it (RFC 3264 §8).
    assert!(call.plane.offer_refused(ID, LegSide::A, call.at(1)));
    assert_eq!(relay_state(&call), before);
    assert_eq!(call.remote(LegSide::A).rtp, sock("127.0.0.1:6000"));
    assert_eq!(call.backend.restore_count(pair, LegSide::A), 1);
    assert_eq!(call.backend.configure_count(pair, LegSide::B), b_count, "B never changed");
    // The offer in force is the answered one again: answering it again gives the same answer.
    let again = call.answer(LegSide::B, &TRUNK_TE96.replace("RTP/AVP 0 96", "RTP/AVP 0")).unwrap();
    assert_eq!(again, answer);
    // Nothing left to refuse.
    assert!(!call.plane.offer_refused(ID, LegSide::A, call.at(2)));
    assert_eq!(call.backend.restore_count(pair, LegSide::A), 1);
}

#[test]
fn refused_hold_restores_forwarding_on_both_sides() {
    let mut call = Call::new();
    basic_call(&mut call);
    let before = relay_state(&call);
    call.offer(LegSide::A, &format!("{SIPP}a=sendonly\r\n")).unwrap();
    assert!(!call.remote(LegSide::B).forward, "a hold stops B -> A at once");
    assert!(call.plane.offer_refused(ID, LegSide::A, call.at(1)));
    assert_eq!(relay_state(&call), before);
    assert!(call.remote(LegSide::B).forward);
    assert_eq!(call.backend.restore_count(call.pair(), LegSide::B), 1);
    // The next hold is computed against the restored session: it stops B again.
    call.offer(LegSide::A, &format!("{SIPP}a=sendonly\r\n")).unwrap();
    assert!(!call.remote(LegSide::B).forward);
}

#[test]
fn refused_re_offer_disabling_a_stream_keeps_its_pair_and_ports() {
    let mut call = Call::new();
    let two = format!("{SIPP}m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
    let first = call.offer(LegSide::A, &two).unwrap();
    call.answer(LegSide::B, &two).unwrap();
    let before = relay_state(&call);
    assert_eq!(before.len(), 2);

    let no_video = two.replace("m=video 6002", "m=video 0");
    let offer = call.offer(LegSide::A, &no_video).unwrap();
    assert_eq!(offer.media[1].port, 0);
    assert_eq!(relay_state(&call), before, "kept open and untouched until the answer");
    assert!(call.plane.offer_refused(ID, LegSide::A, call.at(1)));
    assert_eq!(relay_state(&call), before, "same pairs, same ports, same configuration");
    assert_eq!(call.backend.free_ports(), FREE - 4);

    // The video stream is back in the session: a later re-offer carries it on the same ports.
    let again = call.offer(LegSide::A, &two).unwrap();
    assert_eq!(
        again.media.iter().map(|m| m.port).collect::<Vec<_>>(),
        first.media.iter().map(|m| m.port).collect::<Vec<_>>()
    );
    // Accepted this time: disabled, then closed by the answer.
    call.offer(LegSide::A, &no_video).unwrap();
    call.answer(LegSide::B, &no_video).unwrap();
    assert_eq!(call.pairs().len(), 1);
    assert!(!call.plane.offer_refused(ID, LegSide::A, call.at(2)), "answered: nothing to undo");
    assert_eq!(call.pairs().len(), 1);
}

#[test]
fn refused_re_offer_adding_a_stream_closes_the_new_pair() {
    let mut call = Call::new();
    basic_call(&mut call);
    let before = relay_state(&call);
    let added = format!("{SIPP}m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
    call.offer(LegSide::A, &added).unwrap();
    assert_eq!(call.pairs().len(), 2);
    assert!(call.plane.offer_refused(ID, LegSide::A, call.at(1)));
    assert_eq!(relay_state(&call), before);
    assert_eq!(call.backend.free_ports(), FREE - 2);
    // One stream again: a re-offer of the old session's single m-line is fine, same ports.
    let offer = call.offer(LegSide::A, SIPP).unwrap();
    assert_eq!(offer.media.len(), 1);
    assert_eq!(relay_state(&call)[0].0, before[0].0);
    call.plane.release(ID);
    assert_eq!(call.backend.free_ports(), FREE);
}

#[test]
fn refusal_with_nothing_to_undo_is_a_no_op() {
    let mut call = Call::new();
    assert!(!call.plane.offer_refused(MediaSessionId(99), LegSide::A, call.t0), "no session");
    basic_call(&mut call);
    let pair = call.pair();
    let before = relay_state(&call);
    let counts = [LegSide::A, LegSide::B].map(|s| call.backend.configure_count(pair, s));
    // The offer was answered (2xx): both directions are no-ops.
    assert!(!call.plane.offer_refused(ID, LegSide::A, call.at(1)));
    assert!(!call.plane.offer_refused(ID, LegSide::B, call.at(1)));
    assert_eq!(relay_state(&call), before);
    assert_eq!([LegSide::A, LegSide::B].map(|s| call.backend.configure_count(pair, s)), counts);
    // Glare: B's offer is pending; a refusal of A's (the SBC's own 491) must leave it alone.
    call.offer(LegSide::B, TRUNK_TE96).unwrap();
    let during = relay_state(&call);
    assert!(!call.plane.offer_refused(ID, LegSide::A, call.at(2)));
    assert_eq!(relay_state(&call), during);
    assert!(call.answer(LegSide::A, SIPP).is_ok(), "B's offer is still there to answer");
    assert!(!call.plane.offer_refused(ID, LegSide::B, call.at(3)));
    let restores = [LegSide::A, LegSide::B].map(|s| call.backend.restore_count(pair, s));
    assert_eq!(restores, [0, 0]);
}

#[test]
fn refused_initial_offer_leaves_nothing_open() {
    let mut call = Call::new();
    call.offer(LegSide::A, &format!("{SIPP}m=audio 6002 RTP/AVP 0\r\n")).unwrap();
    assert_eq!(call.pairs().len(), 2);
    assert!(call.plane.offer_refused(ID, LegSide::A, call.at(1)));
    assert_eq!((call.backend.open_pairs(), call.backend.free_ports()), (0, FREE));
    assert_eq!(call.answer(LegSide::B, SIPP), Err(MediaError::NoOffer));
    // The engine then ends the call; release finds an empty session.
    assert!(call.plane.release(ID).is_some());
    assert!(call.plane.is_empty());
}

#[test]
fn pairs_kept_for_an_unanswered_offer_are_freed_on_every_path() {
    let two = format!("{SIPP}m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
    let no_video = two.replace("m=video 6002", "m=video 0");
    let setup = || {
        let mut call = Call::new();
        call.offer(LegSide::A, &two).unwrap();
        call.answer(LegSide::B, &two).unwrap();
        call.offer(LegSide::A, &no_video).unwrap();
        assert_eq!(call.pairs().len(), 2);
        call
    };
    // The call ends while the re-offer is pending.
    let mut call = setup();
    call.plane.release(ID);
    assert_eq!((call.backend.open_pairs(), call.backend.free_ports()), (0, FREE));
    // A new offer supersedes the unanswered one (and disables the stream again).
    let mut call = setup();
    call.offer(LegSide::A, &no_video).unwrap();
    assert_eq!(call.pairs().len(), 1);
    call.answer(LegSide::B, &no_video).unwrap();
    assert_eq!((call.pairs().len(), call.backend.free_ports()), (1, FREE - 2));
    // A new peer on a leg: the old session cannot come back.
    let mut call = setup();
    call.plane.set_leg(ID, LegSide::B, leg_b());
    assert_eq!(call.pairs().len(), 1);
    assert!(!call.plane.offer_refused(ID, LegSide::A, call.at(1)));
    call.plane.release(ID);
    assert_eq!(call.backend.free_ports(), FREE);
}
