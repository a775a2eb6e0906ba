use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;
use crate::sdp::tests::{
    ASTERISK, BARESIP, CHROME, FREESWITCH, HOLD_SENDONLY, HOLD_ZERO, IPV6, SIPP, TRUNK_TE96,
};

const ADV4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const ADV6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));

fn sdp(text: &str) -> Sdp {
    Sdp::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn list(codecs: &[&str]) -> Vec<String> {
    codecs.iter().map(|c| (*c).to_owned()).collect()
}

fn names(m: &Media) -> Vec<String> {
    m.attributes.iter().map(|a| a.to_string().trim_end().to_owned()).collect()
}

/// The description without its o= line.
fn body(sdp: &Sdp) -> String {
    sdp.to_string().lines().filter(|l| !l.starts_with("o=")).collect::<Vec<_>>().join("\n")
}

fn has_line(sdp: &Sdp, line: &str) -> bool {
    sdp.to_string().lines().any(|l| l == line)
}

/// An offer as the SBC sends it on: prepared and localized on ports 30000, 30002, ...
fn sent(offer: &Sdp, codecs: &[&str]) -> Sdp {
    let mut out = prepare_offer(offer, &list(codecs)).unwrap();
    let ports: Vec<Option<u16>> =
        (0..out.media.len()).map(|i| Some(30000 + 2 * i as u16)).collect();
    localize(&mut out, ADV4, &ports, &[]);
    out
}

#[test]
fn sipp_offer_gets_the_sbc_address_and_port() {
    let offer = sdp(SIPP);
    let out = sent(&offer, &[]);
    assert_eq!(out.connection, Some(Connection::for_ip(ADV4)));
    assert_eq!(out.media[0].port, 30000);
    assert_eq!(out.media[0].formats, ["0"]);
    assert_eq!(out.media[0].attributes, offer.media[0].attributes);
    // o= is the caller's to stamp (the plane keeps one per leg).
    assert!(!body(&out).contains("127.0.0.1"), "{out}");
}

#[test]
fn peer_identity_lines_are_dropped() {
    let identity = "s=Alice's phone\r\ni=secret\r\nu=http://a.example\r\n\
                    e=alice@a.example\r\np=+1 555 0100\r\n";
    let text = SIPP.replace("s=-\r\n", identity);
    let out = prepare_offer(&sdp(&text), &[]).unwrap();
    assert_eq!(out.session_name, "-");
    assert_eq!((out.information, out.uri), (None, None));
    assert!(out.emails.is_empty() && out.phones.is_empty());
}

#[test]
fn ipv6_advertise_out_of_ipv4_offer_and_back() {
    let mut out = prepare_offer(&sdp(FREESWITCH), &[]).unwrap();
    localize(&mut out, ADV6, &[Some(40000)], &[]);
    let text = out.to_string();
    assert!(text.contains("c=IN IP6 2001:db8::1\r\n"), "{text}");
    assert!(text.contains("a=rtcp:40001 IN IP6 2001:db8::1\r\n"), "{text}");
    assert!(!body(&out).contains("IP4"), "{text}");

    let mut back = prepare_offer(&sdp(IPV6), &[]).unwrap();
    localize(&mut back, ADV4, &[Some(30000)], &[]);
    let text = back.to_string();
    assert!(text.contains("c=IN IP4 192.0.2.1\r\n"), "{text}");
    assert!(text.contains("a=rtcp:30001\r\n"), "a=rtcp without address stays so: {text}");
}

#[test]
fn chrome_offer_loses_ice_and_bundle_keeps_dtls_and_mux() {
    let offer = sdp(CHROME);
    let out = sent(&offer, &[]);
    let text = out.to_string();
    for gone in ["candidate", "ice-ufrag", "ice-pwd", "ice-options", "group:BUNDLE", "0.0.0.0"] {
        assert!(!text.contains(gone), "{gone} must go:\n{text}");
    }
    for kept in
        ["a=fingerprint:sha-256 7B:8B", "a=setup:actpass", "a=rtcp-mux", "a=mid:0", "a=mid:1"]
    {
        assert!(text.contains(kept), "{kept} must stay:\n{text}");
    }
    assert!(has_line(&out, "a=extmap-allow-mixed"));
    assert!(has_line(&out, "a=rtcp:30001 IN IP4 192.0.2.1"), "{text}");
    assert!(has_line(&out, "a=rtcp:30003 IN IP4 192.0.2.1"), "{text}");
    assert_eq!(out.media[0].formats, offer.media[0].formats, "empty profile keeps all");
    assert_eq!(out.media[0].proto, "UDP/TLS/RTP/SAVPF", "SRTP passes through opaque");
    // With ICE, c=0.0.0.0 is not a hold: the direction stays.
    assert_eq!(effective_direction(&offer, 0), Direction::SendRecv);
    assert_eq!(remote_addresses(&offer, 0), (None, None), "address only in candidates");
}

#[test]
fn codecs_filtered_and_ordered_by_the_outgoing_profile() {
    let out = sent(&sdp(ASTERISK), &["PCMU", "PCMA", "telephone-event"]);
    let m = &out.media[0];
    assert_eq!(m.formats, ["0", "8", "101"]);
    assert!(!names(m).iter().any(|a| a.contains("GSM")));
    assert!(names(m).contains(&"a=fmtp:101 0-16".to_owned()));
    assert!(
        names(m).contains(&"a=ptime:20".to_owned())
            && names(m).contains(&"a=maxptime:150".to_owned())
    );

    let chrome = sent(&sdp(CHROME), &["pcma", "PCMU", "telephone-event"]);
    let audio = &chrome.media[0];
    assert_eq!(audio.formats, ["8", "0", "110", "126"], "case-insensitive, profile order");
    let lines = names(audio);
    for gone in [
        "a=rtpmap:111",
        "a=rtcp-fb:111",
        "a=fmtp:111",
        "a=rtpmap:63",
        "a=fmtp:63",
        "a=rtpmap:9 ",
        "a=rtpmap:13",
    ] {
        assert!(!lines.iter().any(|l| l.starts_with(gone)), "{gone} must go: {lines:?}");
    }
    assert_eq!(chrome.media[1].formats, ["96", "97", "102", "103"], "video is not filtered");
    assert!(names(&chrome.media[1]).contains(&"a=rtcp-fb:96 nack pli".to_owned()));

    let pinned = sent(&sdp(CHROME), &["PCMU", "telephone-event/8000"]);
    assert_eq!(pinned.media[0].formats, ["0", "126"], "name/rate pins the clock rate");

    let opus = sent(&sdp(BARESIP), &["opus", "G722"]);
    assert_eq!(opus.media[0].formats, ["96", "9"]);
    assert!(
        names(&opus.media[0])
            .contains(&"a=fmtp:96 stereo=1;sprop-stereo=1;maxaveragebitrate=28000".to_owned())
    );
}

#[test]
fn static_payload_types_match_without_rtpmap() {
    let text = SIPP.replace(
        "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        "m=audio 6000 RTP/AVP 18 0 8 9 3 13\r\n",
    );
    let out = prepare_offer(&sdp(&text), &list(&["G729", "GSM", "G722", "CN"])).unwrap();
    assert_eq!(out.media[0].formats, ["18", "3", "9", "13"]);
}

#[test]
fn no_common_codec() {
    assert_eq!(prepare_offer(&sdp(SIPP), &list(&["G729"])), Err(NegotiateError::NoCommonCodec));
    // telephone-event alone is no codec.
    assert_eq!(
        prepare_offer(&sdp(ASTERISK), &list(&["telephone-event", "CN"])),
        Err(NegotiateError::NoCommonCodec)
    );
    // A video line is never filtered, so a profile without video codecs keeps it.
    assert!(prepare_offer(&sdp(CHROME), &list(&["opus"])).is_ok());
    let no_media = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n";
    assert_eq!(prepare_offer(&sdp(no_media), &[]), Err(NegotiateError::BadSdp("no media")));
}

#[test]
fn disabled_and_tcp_streams_stay_or_become_port_zero() {
    let text = format!(
        "{SIPP}m=video 0 RTP/AVP 31\r\n\
         m=message 7394 TCP/MSRP *\r\na=path:msrp://a.example:7394/x;tcp\r\n"
    );
    let mut out = prepare_offer(&sdp(&text), &list(&["PCMU"])).unwrap();
    assert_eq!(out.media.iter().map(|m| m.port).collect::<Vec<_>>(), [6000, 0, 0]);
    assert_eq!(out.media[1].formats, ["31"], "disabled line keeps its formats");
    localize(&mut out, ADV4, &[Some(30000), None, None], &[]);
    assert_eq!(out.media.iter().map(|m| m.port).collect::<Vec<_>>(), [30000, 0, 0]);
}

#[test]
fn old_style_hold_becomes_a_direction() {
    let offer = sdp(HOLD_ZERO);
    assert_eq!(effective_direction(&offer, 0), Direction::SendOnly);
    assert_eq!(remote_addresses(&offer, 0), (None, None));
    let out = sent(&offer, &[]);
    assert!(has_line(&out, "a=sendonly"), "{out}");
    assert!(has_line(&out, "c=IN IP4 192.0.2.1"));

    let recvonly = HOLD_ZERO.replace("a=fmtp:101 0-15\r\n", "a=fmtp:101 0-15\r\na=recvonly\r\n");
    let out = sent(&sdp(&recvonly), &[]);
    assert!(has_line(&out, "a=inactive") && !has_line(&out, "a=recvonly"), "{out}");

    let v6 = HOLD_ZERO.replace("c=IN IP4 0.0.0.0", "c=IN IP6 ::");
    assert_eq!(effective_direction(&sdp(&v6), 0), Direction::SendOnly);

    let modern = sdp(HOLD_SENDONLY);
    assert_eq!(effective_direction(&modern, 0), Direction::SendOnly);
    assert!(has_line(&sent(&modern, &[]), "a=sendonly"));
}

#[test]
fn remote_addresses_from_c_m_and_rtcp() {
    let fs = sdp(FREESWITCH);
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    assert_eq!(
        remote_addresses(&fs, 0),
        (Some(SocketAddr::new(ip, 24586)), Some(SocketAddr::new(ip, 24587)))
    );
    let other =
        FREESWITCH.replace("a=rtcp:24587 IN IP4 198.51.100.7", "a=rtcp:5000 IN IP4 203.0.113.9");
    assert_eq!(remote_addresses(&sdp(&other), 0).1, Some("203.0.113.9:5000".parse().unwrap()));
    let sipp = sdp(SIPP);
    assert_eq!(
        remote_addresses(&sipp, 0),
        (Some("127.0.0.1:6000".parse().unwrap()), Some("127.0.0.1:6001".parse().unwrap()))
    );
    let v6 = sdp(IPV6);
    assert_eq!(remote_addresses(&v6, 0).1, Some("[2001:db8::10]:40001".parse().unwrap()));
    let media_level = SIPP
        .replace("m=audio 6000 RTP/AVP 0\r\n", "m=audio 6000 RTP/AVP 0\r\nc=IN IP4 10.1.1.1\r\n");
    assert_eq!(remote_addresses(&sdp(&media_level), 0).0, Some("10.1.1.1:6000".parse().unwrap()));
    let host = SIPP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 media.example");
    assert_eq!(remote_addresses(&sdp(&host), 0), (None, None));
    assert_eq!(remote_addresses(&sipp, 5), (None, None));
}

#[test]
fn clock_rate_of_the_first_real_codec() {
    assert_eq!(clock_rate(&sdp(BARESIP).media[0]), 48000);
    assert_eq!(clock_rate(&sdp(SIPP).media[0]), 8000);
    let te_first =
        SIPP.replace("RTP/AVP 0\r\n", "RTP/AVP 101 9\r\na=rtpmap:101 telephone-event/16000\r\n");
    assert_eq!(clock_rate(&sdp(&te_first).media[0]), 8000, "G.722 after telephone-event");
    assert_eq!(main_codec(&sdp(&te_first).media[0]).map(|c| c.name), Some("G722".into()));
}

#[test]
fn answer_is_renumbered_to_the_offerers_payload_types() {
    // The offerer uses 101 for telephone-event, the answerer 96.
    let offer = sdp(&SIPP.replace(
        "RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        "RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
    ));
    let offer_sent = sent(&offer, &[]);
    let answer = sdp(TRUNK_TE96);
    let prepared = prepare_answer(&answer, &offer_sent, &offer).unwrap();
    let m = &prepared.sdp.media[0];
    assert_eq!(m.formats, ["0", "101"]);
    assert_eq!(
        names(m),
        [
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20"
        ]
    );
    let maps = &prepared.pt_maps[0];
    assert_eq!(maps.from_offerer[101], 96, "offerer's DTMF reaches the answerer as 96");
    assert_eq!(maps.from_answerer[96], 101, "answerer's DTMF reaches the offerer as 101");
    assert_eq!((maps.from_offerer[0], maps.from_answerer[0]), (0, 0));
    assert_eq!(maps.from_answerer[101], 101, "an answerer that sends the offer's numbers passes");

    // Same numbers both ways: identity maps.
    let same = prepare_answer(&sdp(SIPP), &sent(&sdp(SIPP), &[]), &sdp(SIPP)).unwrap();
    assert_eq!(same.pt_maps, vec![PtMaps::default()]);
}

#[test]
fn answer_formats_the_offer_did_not_have_are_dropped() {
    let offer = sdp(SIPP);
    let answer = sdp(&SIPP.replace("RTP/AVP 0\r\n", "RTP/AVP 8 0 97\r\na=rtpmap:97 iLBC/8000\r\n"));
    let prepared = prepare_answer(&answer, &sent(&offer, &[]), &offer).unwrap();
    assert_eq!(prepared.sdp.media[0].formats, ["0"]);
    assert!(!prepared.sdp.to_string().contains("iLBC"));
    let nothing = sdp(&SIPP.replace("RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", "RTP/AVP 8\r\n"));
    assert_eq!(
        prepare_answer(&nothing, &sent(&offer, &[]), &offer),
        Err(NegotiateError::NoCommonCodec)
    );
}

#[test]
fn answer_must_mirror_the_offers_m_lines() {
    let offer = sdp(&format!("{SIPP}m=video 6002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"));
    let offer_sent = sent(&offer, &[]);
    let bad = NegotiateError::BadSdp("answer m= lines do not match the offer");
    assert_eq!(prepare_answer(&sdp(SIPP), &offer_sent, &offer), Err(bad));
    let swapped = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\n\
                   m=video 0 RTP/AVP 96\r\nm=audio 5000 RTP/AVP 0\r\n";
    assert_eq!(prepare_answer(&sdp(swapped), &offer_sent, &offer), Err(bad));
    // Rejecting the video stream is fine: port 0 toward the offerer.
    let reject = format!("{SIPP}m=video 0 RTP/AVP 96\r\n");
    let prepared = prepare_answer(&sdp(&reject), &offer_sent, &offer).unwrap();
    assert_eq!(prepared.sdp.media[1].port, 0);
}

#[test]
fn video_answer_renumbering_follows_rtx() {
    let offer = sdp(CHROME);
    let offer_sent = sent(&offer, &["PCMU"]);
    // The answerer numbers VP8 100 and its RTX 101.
    let answer = sdp("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\n\
         m=audio 5000 UDP/TLS/RTP/SAVPF 0\r\n\
         m=video 5002 UDP/TLS/RTP/SAVPF 100 101\r\na=rtpmap:100 VP8/90000\r\na=rtcp-fb:100 nack\r\n\
         a=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\n");
    let prepared = prepare_answer(&answer, &offer_sent, &offer).unwrap();
    let video = &prepared.sdp.media[1];
    assert_eq!(video.formats, ["96", "97"]);
    assert_eq!(
        names(video)[..4],
        ["a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 nack", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96"]
    );
    assert_eq!(prepared.pt_maps[1].from_answerer[100], 96);
    // A video answer with nothing in common is a rejected stream, not an error.
    let nothing =
        answer.to_string().replace("VP8/90000", "AV1/90000").replace("rtx/90000", "ulpfec/90000");
    let prepared = prepare_answer(&sdp(&nothing), &offer_sent, &offer).unwrap();
    assert_eq!(prepared.sdp.media[1].port, 0);
}

#[test]
fn rtcp_mux_in_the_answer_follows_the_offerer() {
    let baresip = sdp(BARESIP); // offers rtcp-mux
    let offer_sent = sent(&baresip, &[]);
    assert!(has_rtcp_mux(&offer_sent.media[0]), "offered on iff the offerer offered it");
    let plain = sdp(&ASTERISK.replace("RTP/AVP 8 0 3 101", "RTP/AVP 0"));
    let prepared = prepare_answer(&plain, &offer_sent, &baresip).unwrap();
    assert!(has_rtcp_mux(&prepared.sdp.media[0]), "the SBC accepts mux toward its offerer");

    let sipp = sdp(SIPP);
    let muxing_answer = sdp(&format!("{SIPP}a=rtcp-mux\r\n"));
    let prepared = prepare_answer(&muxing_answer, &sent(&sipp, &[]), &sipp).unwrap();
    assert!(!has_rtcp_mux(&prepared.sdp.media[0]), "never answered mux that was not offered");

    // a=rtcp in an answer toward a muxing offerer points at the RTP port.
    let with_rtcp = sdp(&format!("{SIPP}a=rtcp:6001\r\n"));
    let mut out = prepare_answer(&with_rtcp, &offer_sent, &baresip).unwrap().sdp;
    localize(&mut out, ADV4, &[Some(30000)], &[true]);
    assert!(has_line(&out, "a=rtcp:30000"), "{out}");
}

#[test]
fn answer_with_old_style_hold() {
    let offer = sdp(SIPP);
    let answer = sdp(&SIPP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"));
    let prepared = prepare_answer(&answer, &sent(&offer, &[]), &offer).unwrap();
    assert!(has_line(&prepared.sdp, "a=sendonly"));
}

#[test]
fn chrome_offer_is_planned_for_transcoding_toward_a_g711_trunk() {
    let offer = sdp(CHROME);
    let p = prepare_offer_transcoding(
        &offer,
        &list(&["opus", "telephone-event"]),
        &list(&["PCMA", "PCMU", "telephone-event/8000", "G729"]),
    )
    .unwrap();
    let plan = p.transcode[0].as_ref().expect("audio is transcoded");
    assert_eq!(plan.codec.0, 111);
    assert_eq!(plan.codec.1.name, "opus");
    assert_eq!(plan.events.as_ref().map(|e| (e.0, e.1.clock_rate)), Some((110, 48000)));
    // The trunk's order, its static numbers, events at its rate.
    assert_eq!(p.sdp.media[0].formats, ["8", "0", "101"]);
    // Video is not transcoded.
    assert_eq!(p.transcode[1], None);
    // Without events in the trunk profile, none are offered.
    let p = prepare_offer_transcoding(&offer, &list(&["opus"]), &list(&["PCMU"])).unwrap();
    assert_eq!(p.sdp.media[0].formats, ["0"]);
    // Without a profile on either side nothing is transcoded.
    let p = prepare_offer_transcoding(&offer, &[], &[]).unwrap();
    assert_eq!(p.transcode, [None, None]);
}

#[test]
fn opus_fmtp_toward_the_offerer_of_a_transcoded_line() {
    // baresip's parameters: its stereo preference goes (the SBC sends mono), its own receiving
    // bitrate cap is not the SBC's, which is declared with the rest of the SBC's receiving side.
    assert_eq!(
        opus_fmtp_answer("stereo=1;sprop-stereo=1;maxaveragebitrate=28000;usedtx=1"),
        "usedtx=1;maxplaybackrate=8000;sprop-maxcapturerate=8000;maxaveragebitrate=20000;\
         useinbandfec=1"
    );
    // Chrome's, with a conflicting playback rate of its own: ours wins.
    assert_eq!(
        opus_fmtp_answer("minptime=10; useinbandfec=0;MaxPlaybackRate=48000"),
        "minptime=10;maxplaybackrate=8000;sprop-maxcapturerate=8000;maxaveragebitrate=20000;\
         useinbandfec=1"
    );
    assert_eq!(opus_fmtp_answer(""), OPUS_FMTP);
}
