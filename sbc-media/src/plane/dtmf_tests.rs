//! DTMF interworking in the plane: SDP toward each leg, the relay's telephone events, and the
//! digits passed to and from the backend.

use super::*;
use crate::VirtualBackend;
use crate::backend::PairId;
use crate::sdp::tests::{ASTERISK, SIPP, TRUNK_TE96};

const ID: MediaSessionId = MediaSessionId(9);

fn plane(a: DtmfMode, b: DtmfMode) -> (Arc<VirtualBackend>, MediaPlane) {
    let backend = Arc::new(VirtualBackend::new(40000..=40099));
    let mut plane = MediaPlane::with_seed(backend.clone(), 42);
    plane.set_leg(ID, LegSide::A, LegMedia { dtmf: a, ..LegMedia::default() });
    plane.set_leg(ID, LegSide::B, LegMedia { dtmf: b, ..LegMedia::default() });
    (backend, plane)
}

fn sdp(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn events_of(body: &Bytes) -> Option<(u8, u32)> {
    telephone_event(Sdp::parse(body).unwrap().media.first().unwrap())
}

fn pair(backend: &VirtualBackend) -> PairId {
    backend.pair_ids()[0]
}

#[test]
fn a_4733_caller_toward_an_info_trunk() {
    let (backend, mut plane) = plane(DtmfMode::Rfc4733, DtmfMode::Info);
    let now = Instant::now();
    assert_eq!(plane.dtmf_info_leg(ID), Some(LegSide::B));
    let offer = plane.offer(ID, LegSide::A, &sdp(ASTERISK), now).unwrap();
    assert_eq!(events_of(&offer), None, "the INFO leg is offered no telephone-event");
    let text = String::from_utf8_lossy(&offer).into_owned();
    assert!(!text.contains("telephone-event") && !text.contains("fmtp:101"), "{text}");
    let answer = plane.answer(ID, LegSide::B, &sdp(SIPP), now).unwrap();
    assert_eq!(events_of(&answer), Some((101, 8000)), "the caller keeps its events");
    let p = pair(&backend);
    let events = backend.remote(p, LegSide::A).unwrap().telephone_events;
    assert_eq!(events, Some(TelephoneEvents { from_peer: 101, to_peer: 101, clock_rate: 8000 }));
    assert_eq!(backend.remote(p, LegSide::B).unwrap().telephone_events, None);

    let digit = DtmfEvent { event: 5, duration_ms: 200 };
    assert!(plane.send_dtmf(ID, LegSide::A, digit));
    assert!(!plane.send_dtmf(ID, LegSide::B, digit), "the INFO leg has no events");
    assert_eq!(backend.sent_dtmf(p), vec![(LegSide::A, digit)]);
    assert_eq!(plane.poll_dtmf(ID), None);
    backend.detect_dtmf(p, LegSide::A, DtmfEvent { event: 1, duration_ms: 100 });
    assert_eq!(plane.poll_dtmf(ID), Some((LegSide::A, DtmfEvent { event: 1, duration_ms: 100 })));
    assert_eq!(plane.poll_dtmf(ID), None);
}

#[test]
fn an_info_caller_toward_a_4733_trunk_with_its_own_numbers() {
    let (backend, mut plane) = plane(DtmfMode::Info, DtmfMode::Rfc4733);
    let now = Instant::now();
    assert_eq!(plane.dtmf_info_leg(ID), Some(LegSide::A));
    // The caller offers no events; the trunk is offered them anyway.
    let offer = plane.offer(ID, LegSide::A, &sdp(SIPP), now).unwrap();
    assert_eq!(events_of(&offer), Some((101, 8000)));
    // The trunk answers with telephone-event on 96.
    let answer = plane.answer(ID, LegSide::B, &sdp(TRUNK_TE96), now).unwrap();
    assert_eq!(events_of(&answer), None, "the INFO leg gets no telephone-event");
    let p = pair(&backend);
    let events = backend.remote(p, LegSide::B).unwrap().telephone_events;
    assert_eq!(events, Some(TelephoneEvents { from_peer: 101, to_peer: 96, clock_rate: 8000 }));
    assert_eq!(backend.remote(p, LegSide::A).unwrap().telephone_events, None);
    assert!(plane.send_dtmf(ID, LegSide::B, DtmfEvent { event: 11, duration_ms: 250 }));
}

#[test]
fn the_offered_events_take_a_free_payload_type() {
    let mut m = Sdp::parse(SIPP.as_bytes()).unwrap().media.remove(0);
    m.formats.push("101".into());
    m.attributes.push(Attribute::new("rtpmap", "101 G729/8000".into()));
    assert_eq!(add_telephone_event(&mut m), Some(96));
    assert_eq!(telephone_event(&m), Some((96, 8000)));
    assert_eq!(add_telephone_event(&mut m), None, "once");
    strip_telephone_events(&mut m);
    assert_eq!(telephone_event(&m), None);
    assert_eq!(m.formats, vec!["0", "101"]);
    assert!(!m.attributes.iter().any(|a| a.payload_value("fmtp").is_some()));
}

#[test]
fn legs_of_one_mode_relay_events_as_they_are() {
    for mode in [DtmfMode::Rfc4733, DtmfMode::Info] {
        let (backend, mut plane) = plane(mode, mode);
        let now = Instant::now();
        assert_eq!(plane.dtmf_info_leg(ID), None);
        let offer = plane.offer(ID, LegSide::A, &sdp(ASTERISK), now).unwrap();
        assert_eq!(events_of(&offer), Some((101, 8000)));
        plane.answer(ID, LegSide::B, &sdp(TRUNK_TE96), now).unwrap();
        let p = pair(&backend);
        for side in [LegSide::A, LegSide::B] {
            assert_eq!(backend.remote(p, side).unwrap().telephone_events, None);
        }
        assert!(!plane.send_dtmf(ID, LegSide::A, DtmfEvent { event: 1, duration_ms: 100 }));
    }
}

#[test]
fn events_offered_next_to_opus_run_at_48k() {
    let text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 5000 RTP/AVP 111 0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n";
    let mut m = Sdp::parse(text.as_bytes()).unwrap().media.remove(0);
    assert_eq!(add_telephone_event(&mut m), Some(101));
    assert_eq!(telephone_event(&m), Some((101, 48000)));
    assert!(m.attributes.iter().any(|a| a.value.as_deref() == Some("101 0-15")));
}
