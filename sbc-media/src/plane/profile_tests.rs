//! Profile conversion through the plane: browser (WebRTC) and SDES legs against plain trunks.

use super::*;
use crate::VirtualBackend;
use crate::backend::{
    DtlsRole, DtlsSpec, Fingerprint, PairId, PairStats, SdesKeys, Security, SrtpProfile,
};
use crate::profile::CryptoLine;
use crate::sdp::Media;
use crate::sdp::tests::{CHROME, CHROME_AUDIO, SIPP};

const ID: MediaSessionId = MediaSessionId(9);
const SBC_FINGERPRINT: &str = "sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:\
                               AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";
const CHROME_FINGERPRINT: &str = "7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:\
                                  DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08";
/// What a trunk answers to the SBC's G.711 offer (made from Chrome's).
const TRUNK_ANSWER: &str = "v=0\r\no=- 5 5 IN IP4 203.0.113.50\r\ns=-\r\nc=IN IP4 203.0.113.50\r\n\
    t=0 0\r\nm=audio 20000 RTP/AVP 0 126\r\na=rtpmap:0 PCMU/8000\r\n\
    a=rtpmap:126 telephone-event/8000\r\na=sendrecv\r\nm=video 0 RTP/AVP 96\r\n";

struct Call {
    backend: Arc<VirtualBackend>,
    plane: MediaPlane,
    t0: Instant,
}

fn leg(profile: MediaProfile, advertise: &str) -> LegMedia {
    LegMedia {
        advertise: advertise.parse().unwrap(),
        bind: advertise.parse().unwrap(),
        codecs: Vec::new(),
        profile,
        ..LegMedia::default()
    }
}

impl Call {
    fn new(a: MediaProfile, b: MediaProfile) -> Call {
        let backend = Arc::new(VirtualBackend::new(40000..=40099));
        backend.set_dtls_fingerprint(Some(SBC_FINGERPRINT.to_owned()));
        let mut plane = MediaPlane::with_seed(backend.clone(), 3);
        plane.set_leg(ID, LegSide::A, leg(a, "198.51.100.1"));
        let mut b_leg = leg(b, "203.0.113.1");
        if b == MediaProfile::Rtp {
            b_leg.codecs = vec!["PCMU".into(), "PCMA".into(), "telephone-event/8000".into()];
        }
        plane.set_leg(ID, LegSide::B, b_leg);
        Call { backend, plane, t0: Instant::now() }
    }

    fn offer(&mut self, from: LegSide, sdp: &str) -> Result<Sdp, MediaError> {
        let out = self.plane.offer(ID, from, &Bytes::copy_from_slice(sdp.as_bytes()), self.t0)?;
        Ok(reparse(&out))
    }

    fn answer(&mut self, from: LegSide, sdp: &str) -> Result<Sdp, MediaError> {
        let out = self.plane.answer(ID, from, &Bytes::copy_from_slice(sdp.as_bytes()), self.t0)?;
        Ok(reparse(&out))
    }

    fn pair(&self) -> PairId {
        let pairs = self.backend.pair_ids();
        assert_eq!(pairs.len(), 1, "one pair expected");
        pairs[0]
    }

    fn remote(&self, side: LegSide) -> RemoteSpec {
        self.backend.remote(self.pair(), side).expect("configured")
    }

    fn port(&self, side: LegSide) -> u16 {
        let ports = self.backend.ports(self.pair()).unwrap();
        if side == LegSide::A { ports.a_rtp } else { ports.b_rtp }
    }
}

fn reparse(out: &Bytes) -> Sdp {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.ends_with("\r\n") && !text.ends_with("\r\n\r\n"), "no blank last line: {text:?}");
    Sdp::parse(out).unwrap()
}

fn lines(sdp: &Sdp) -> Vec<String> {
    sdp.to_string().lines().map(str::to_owned).collect()
}

fn has(sdp: &Sdp, line: &str) -> bool {
    lines(sdp).iter().any(|l| l == line)
}

fn value<'a>(m: &'a Media, name: &str) -> &'a str {
    m.attribute(name).and_then(|a| a.value.as_deref()).unwrap_or_else(|| panic!("a={name}"))
}

fn dtls(spec: &RemoteSpec) -> &DtlsSpec {
    match &spec.security {
        Security::Dtls(d) => d,
        other => panic!("DTLS expected, got {other:?}"),
    }
}

fn sdes(spec: &RemoteSpec) -> &SdesKeys {
    match &spec.security {
        Security::Sdes(k) => k,
        other => panic!("SDES expected, got {other:?}"),
    }
}

/// Words that belong to WebRTC or to the other leg's security, never toward a plain SIP peer.
const NOT_TOWARD_SIP: [&str; 16] = [
    "a=ice-",
    "a=candidate",
    "a=end-of-candidates",
    "a=fingerprint",
    "a=setup",
    "a=crypto",
    "a=group",
    "a=mid",
    "a=extmap",
    "a=ssrc",
    "a=msid",
    "a=rtcp-fb",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "SAVP",
    "0.0.0.0",
];

fn assert_plain_sip(sdp: &Sdp) {
    let text = sdp.to_string();
    for word in NOT_TOWARD_SIP {
        assert!(!text.contains(word), "{word} toward a SIP leg:\n{text}");
    }
}

#[test]
fn browser_to_trunk_offer_and_answer() {
    let mut call = Call::new(MediaProfile::Webrtc, MediaProfile::Rtp);
    let offer = call.offer(LegSide::A, CHROME).unwrap();
    assert_plain_sip(&offer);
    assert_eq!(offer.media[0].proto, "RTP/AVP");
    assert_eq!(offer.media[0].formats, ["0", "8", "126"]);
    assert_eq!((offer.media[1].port, offer.media[1].proto.as_str()), (0, "RTP/AVP"));
    assert_eq!(call.backend.open_pairs(), 1);

    // The browser's side is set up at once, so the relay answers its first STUN check.
    let a = call.remote(LegSide::A);
    let d = dtls(&a);
    assert_eq!(d.role, DtlsRole::Server, "browser offered actpass: the SBC is the server");
    let digest: Vec<u8> =
        CHROME_FINGERPRINT.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    assert_eq!(d.remote_fingerprints, [Fingerprint { algorithm: "sha-256".into(), digest }]);
    let ice = d.ice.as_ref().unwrap();
    assert_eq!(
        (ice.remote_ufrag.as_str(), ice.remote_pwd.as_str()),
        ("Kx3b", "0hUc1eF3zQ6vYwB8nK2mPq4r")
    );
    assert!(ice.local_ufrag.len() >= 4 && ice.local_pwd.len() >= 22);
    assert!(a.rtcp_mux);
    assert_eq!(a.rtp, Some("192.168.1.7:46243".parse().unwrap()));

    let answer = call.answer(LegSide::B, TRUNK_ANSWER).unwrap();
    let port = call.port(LegSide::A);
    let m = &answer.media[0];
    assert_eq!((m.port, m.proto.as_str()), (port, "UDP/TLS/RTP/SAVPF"));
    assert_eq!(m.formats, ["0", "126"]);
    for line in [
        "a=ice-lite".to_owned(),
        "a=group:BUNDLE 0".to_owned(),
        "c=IN IP4 198.51.100.1".to_owned(),
        "a=mid:0".to_owned(),
        format!("a=ice-ufrag:{}", ice.local_ufrag),
        format!("a=ice-pwd:{}", ice.local_pwd),
        format!("a=candidate:1 1 udp 2130706431 198.51.100.1 {port} typ host"),
        "a=end-of-candidates".to_owned(),
        format!("a=fingerprint:{SBC_FINGERPRINT}"),
        "a=setup:passive".to_owned(),
        "a=rtcp-mux".to_owned(),
        format!("a=rtcp:{port}"),
        "a=sendrecv".to_owned(),
    ] {
        assert!(has(&answer, &line), "{line} missing:\n{answer}");
    }
    let text = answer.to_string();
    assert!(!text.contains("a=crypto") && !text.contains("a=setup:actpass"), "{text}");
    assert!(answer.attribute("ice-lite").is_some(), "ice-lite at session level");
    let video = &answer.media[1];
    assert_eq!((video.port, video.proto.as_str()), (0, "UDP/TLS/RTP/SAVPF"));
    assert_eq!(value(video, "mid"), "1", "a refused line keeps its mid");
    assert!(video.attribute("candidate").is_none());

    assert_eq!(call.remote(LegSide::B).security, Security::Plain);
    assert_eq!(call.remote(LegSide::B).rtp, Some("203.0.113.50:20000".parse().unwrap()));
    assert_eq!(dtls(&call.remote(LegSide::A)).role, DtlsRole::Server);
}

#[test]
fn browser_offering_passive_makes_the_sbc_the_client() {
    let mut call = Call::new(MediaProfile::Webrtc, MediaProfile::Rtp);
    call.offer(LegSide::A, &CHROME.replace("a=setup:actpass", "a=setup:passive")).unwrap();
    assert_eq!(dtls(&call.remote(LegSide::A)).role, DtlsRole::Client);
    let answer = call.answer(LegSide::B, TRUNK_ANSWER).unwrap();
    assert!(has(&answer, "a=setup:active"), "{answer}");
}

/// A browser's answer to the SBC's offer (Chrome's shape: it is always the DTLS client).
fn chrome_answer(setup: &str, ufrag: &str, formats: &str) -> String {
    format!(
        "v=0\r\no=- 77 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
         a=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF {formats}\r\nc=IN IP4 0.0.0.0\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=candidate:1 1 udp 2122260223 127.0.0.1 50123 typ host generation 0\r\n\
         a=ice-ufrag:{ufrag}\r\na=ice-pwd:ZZZZZZZZZZZZZZZZZZZZZZZZ\r\na=ice-options:trickle\r\n\
         a=fingerprint:sha-256 {CHROME_FINGERPRINT}\r\na=setup:{setup}\r\na=mid:0\r\n\
         a=sendrecv\r\na=msid:- 1f2e\r\na=rtcp-mux\r\na=rtpmap:0 PCMU/8000\r\n\
         a=ssrc:42 cname:abc\r\n"
    )
}

#[test]
fn trunk_to_browser_offer_and_answer() {
    let mut call = Call::new(MediaProfile::Rtp, MediaProfile::Webrtc);
    let offer = call.offer(LegSide::A, SIPP).unwrap();
    let port = call.port(LegSide::B);
    let m = &offer.media[0];
    assert_eq!((m.port, m.proto.as_str()), (port, "UDP/TLS/RTP/SAVPF"));
    for line in [
        "a=ice-lite".to_owned(),
        "a=group:BUNDLE 0".to_owned(),
        "a=mid:0".to_owned(),
        "a=setup:actpass".to_owned(),
        format!("a=fingerprint:{SBC_FINGERPRINT}"),
        "a=rtcp-mux".to_owned(),
        format!("a=rtcp:{port}"),
        format!("a=candidate:1 1 udp 2130706431 203.0.113.1 {port} typ host"),
        "a=end-of-candidates".to_owned(),
    ] {
        assert!(has(&offer, &line), "{line} missing:\n{offer}");
    }
    let (ufrag, pwd) = (value(m, "ice-ufrag").to_owned(), value(m, "ice-pwd").to_owned());
    assert!(ufrag.len() >= 4 && pwd.len() >= 22);
    assert!(!offer.to_string().contains("a=crypto"));

    let answer = call.answer(LegSide::B, &chrome_answer("active", "brws", "0")).unwrap();
    assert_plain_sip(&answer);
    assert_eq!(answer.media[0].proto, "RTP/AVP");
    let b = call.remote(LegSide::B);
    let d = dtls(&b);
    assert_eq!(d.role, DtlsRole::Server, "browser answered active");
    let ice = d.ice.as_ref().unwrap();
    assert_eq!((ice.local_ufrag.as_str(), ice.local_pwd.as_str()), (ufrag.as_str(), pwd.as_str()));
    assert_eq!(ice.remote_ufrag, "brws");
    assert!(b.rtcp_mux);
    assert_eq!(b.rtp, Some("127.0.0.1:50123".parse().unwrap()));
    assert_eq!(call.remote(LegSide::A).security, Security::Plain);

    // A passive browser makes the SBC the client (an early answer replaced by the final one).
    call.answer(LegSide::B, &chrome_answer("passive", "brws", "0")).unwrap();
    assert_eq!(dtls(&call.remote(LegSide::B)).role, DtlsRole::Client);
    // An answer must pick a role, and carry a fingerprint.
    let actpass = chrome_answer("actpass", "brws", "0");
    assert_eq!(call.answer(LegSide::B, &actpass), Err(MediaError::BadSdp("a=setup in the answer")));
    let no_fp = chrome_answer("active", "brws", "0").replace("a=fingerprint", "a=x-fingerprint");
    assert!(call.answer(LegSide::B, &no_fp).is_err());
    assert_eq!(
        dtls(&call.remote(LegSide::B)).role,
        DtlsRole::Client,
        "refused answers change nothing"
    );
}

#[test]
fn re_offers_keep_credentials_until_an_ice_restart() {
    let mut call = Call::new(MediaProfile::Webrtc, MediaProfile::Rtp);
    call.offer(LegSide::A, CHROME).unwrap();
    call.answer(LegSide::B, TRUNK_ANSWER).unwrap();
    let first = dtls(&call.remote(LegSide::A)).ice.clone().unwrap();

    // Same ufrag: same SBC credentials, same role, in the answer too.
    call.offer(LegSide::A, CHROME).unwrap();
    let again = call.answer(LegSide::B, TRUNK_ANSWER).unwrap();
    let kept = dtls(&call.remote(LegSide::A)).ice.clone().unwrap();
    assert_eq!(kept, first);
    assert_eq!(value(&again.media[0], "ice-ufrag"), first.local_ufrag);

    // A new ufrag and password: ICE restart, new SBC credentials (RFC 8839 §4.4.1.1.1).
    let restart = CHROME
        .replace("Kx3b", "Nw9q")
        .replace("0hUc1eF3zQ6vYwB8nK2mPq4r", "PqPqPqPqPqPqPqPqPqPqPqPq");
    call.offer(LegSide::A, &restart).unwrap();
    let answer = call.answer(LegSide::B, TRUNK_ANSWER).unwrap();
    let fresh = dtls(&call.remote(LegSide::A)).ice.clone().unwrap();
    assert_eq!(fresh.remote_ufrag, "Nw9q");
    assert_ne!(fresh.local_ufrag, first.local_ufrag);
    assert_ne!(fresh.local_pwd, first.local_pwd);
    assert_eq!(value(&answer.media[0], "ice-pwd"), fresh.local_pwd);

    // A trunk re-offer toward the browser keeps the SBC's credentials (no restart from our side).
    let reoffer = call.offer(LegSide::B, TRUNK_ANSWER).unwrap();
    assert_eq!(value(&reoffer.media[0], "ice-ufrag"), fresh.local_ufrag);
    assert!(has(&reoffer, "a=setup:actpass"));
}

#[test]
fn browser_re_offer_with_a_new_certificate_renegotiates_the_role() {
    let mut call = Call::new(MediaProfile::Webrtc, MediaProfile::Rtp);
    call.offer(LegSide::A, &CHROME.replace("a=setup:actpass", "a=setup:passive")).unwrap();
    call.answer(LegSide::B, TRUNK_ANSWER).unwrap();
    assert_eq!(dtls(&call.remote(LegSide::A)).role, DtlsRole::Client);
    // Same certificate, actpass: the association and its roles stay (RFC 8842 §5.3).
    call.offer(LegSide::A, CHROME).unwrap();
    assert_eq!(dtls(&call.remote(LegSide::A)).role, DtlsRole::Client);
    // New certificate: a new association, roles chosen afresh.
    call.offer(LegSide::A, &CHROME.replace("7B:8B", "00:01")).unwrap();
    let d = dtls(&call.remote(LegSide::A)).clone();
    assert_eq!(d.role, DtlsRole::Server);
    assert_eq!(d.remote_fingerprints[0].digest[..2], [0, 1]);
}

fn sdes_offer(proto: &str, crypto: &[CryptoLine]) -> String {
    let mut text = format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
         m=audio 4000 {proto} 0 101\r\n"
    );
    for line in crypto {
        text.push_str(&format!("{}", line.attribute()));
    }
    text.push_str("a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n");
    text
}

fn key(byte: u8, len: usize) -> Vec<u8> {
    vec![byte; len]
}

#[test]
fn sdes_phone_to_plain_trunk() {
    let mut call = Call::new(MediaProfile::Sdes, MediaProfile::Rtp);
    let theirs = [
        CryptoLine { tag: 1, suite: SrtpProfile::AeadAes256Gcm, key: key(9, 44) },
        CryptoLine { tag: 2, suite: SrtpProfile::Aes128CmHmacSha1_32, key: key(7, 30) },
        CryptoLine { tag: 3, suite: SrtpProfile::Aes128CmHmacSha1_80, key: key(5, 30) },
    ];
    let offer = call.offer(LegSide::A, &sdes_offer("RTP/SAVP", &theirs)).unwrap();
    assert_plain_sip(&offer);
    assert_eq!(offer.media[0].proto, "RTP/AVP");

    let answer = call.answer(LegSide::B, SIPP).unwrap();
    assert_eq!(answer.media[0].proto, "RTP/SAVP");
    let crypto: Vec<&str> = answer.media[0]
        .attributes
        .iter()
        .filter(|a| a.is("crypto"))
        .filter_map(|a| a.value.as_deref())
        .collect();
    assert_eq!(crypto.len(), 1, "one line, with the tag of the offer's first usable suite");
    assert!(crypto[0].starts_with("2 AES_CM_128_HMAC_SHA1_32 inline:"), "{crypto:?}");
    let ours = CryptoLine::parse(crypto[0]).unwrap();

    let keys = sdes(&call.remote(LegSide::A)).clone();
    assert_eq!(keys.profile, SrtpProfile::Aes128CmHmacSha1_32);
    assert_eq!(keys.remote, key(7, 30));
    assert_eq!(keys.local, ours.key);
    assert_ne!(keys.local, keys.remote);
    assert_eq!(call.remote(LegSide::B).security, Security::Plain);

    // A re-offer with the same suite keeps the SBC's key.
    call.offer(LegSide::A, &sdes_offer("RTP/SAVP", &theirs)).unwrap();
    call.answer(LegSide::B, SIPP).unwrap();
    assert_eq!(sdes(&call.remote(LegSide::A)).local, ours.key);
}

#[test]
fn sdes_leg_without_usable_crypto_is_refused() {
    // GCM is not among the default suites; an MKI is not supported.
    let gcm = CryptoLine { tag: 1, suite: SrtpProfile::AeadAes128Gcm, key: key(1, 28) };
    let mki = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}|2^20|1:4", "A".repeat(40));
    for offer in [
        SIPP.to_owned(),
        sdes_offer("RTP/SAVP", &[]),
        sdes_offer("RTP/SAVP", std::slice::from_ref(&gcm)),
        sdes_offer("RTP/SAVP", &[]).replace("a=rtpmap:101", &format!("{mki}\r\na=rtpmap:101")),
    ] {
        let mut call = Call::new(MediaProfile::Sdes, MediaProfile::Rtp);
        let err = call.offer(LegSide::A, &offer).unwrap_err();
        assert_eq!(err.status_code(), 488, "{err}: {offer}");
        assert_eq!(call.backend.open_pairs(), 0);
    }
    // The suites a leg accepts are configurable: GCM allowed, it is chosen.
    let mut call = Call::new(MediaProfile::Sdes, MediaProfile::Rtp);
    let mut a = leg(MediaProfile::Sdes, "198.51.100.1");
    a.srtp_suites = vec![SrtpProfile::AeadAes128Gcm];
    call.plane.set_leg(ID, LegSide::A, a);
    let gcm = CryptoLine { tag: 4, suite: SrtpProfile::AeadAes128Gcm, key: key(1, 28) };
    call.offer(LegSide::A, &sdes_offer("RTP/SAVP", &[gcm])).unwrap();
    assert_eq!(sdes(&call.remote(LegSide::A)).profile, SrtpProfile::AeadAes128Gcm);
}

#[test]
fn best_effort_srtp_on_a_plain_leg_is_answered_in_kind() {
    // RTP/AVP with a=crypto on an rtp leg: the SBC terminates SRTP and answers with its key.
    let mut call = Call::new(MediaProfile::Rtp, MediaProfile::Rtp);
    let theirs = [CryptoLine { tag: 1, suite: SrtpProfile::Aes128CmHmacSha1_80, key: key(3, 30) }];
    call.offer(LegSide::A, &sdes_offer("RTP/AVP", &theirs)).unwrap();
    let answer = call.answer(LegSide::B, SIPP).unwrap();
    assert_eq!(answer.media[0].proto, "RTP/AVP");
    assert!(value(&answer.media[0], "crypto").starts_with("1 AES_CM_128_HMAC_SHA1_80 inline:"));
    assert_eq!(sdes(&call.remote(LegSide::A)).remote, key(3, 30));
}

#[test]
fn trunk_to_sdes_phone() {
    let mut call = Call::new(MediaProfile::Rtp, MediaProfile::Sdes);
    let offer = call.offer(LegSide::A, SIPP).unwrap();
    let m = &offer.media[0];
    assert_eq!(m.proto, "RTP/SAVP");
    let ours: Vec<CryptoLine> = m
        .attributes
        .iter()
        .filter(|a| a.is("crypto"))
        .filter_map(|a| CryptoLine::parse(a.value.as_deref()?))
        .collect();
    let suites: Vec<SrtpProfile> = ours.iter().map(|l| l.suite).collect();
    assert_eq!(suites, crate::profile::DEFAULT_SDES_SUITES);
    assert_eq!(ours.iter().map(|l| l.tag).collect::<Vec<_>>(), [1, 2]);
    assert_ne!(ours[0].key, ours[1].key);

    // The phone picks tag 2 with its own key.
    let phone = CryptoLine { tag: 2, suite: SrtpProfile::Aes128CmHmacSha1_32, key: key(8, 30) };
    let wrong_tag = CryptoLine { tag: 3, ..phone.clone() };
    let refused = call.answer(LegSide::B, &sdes_offer("RTP/SAVP", &[wrong_tag]));
    assert_eq!(refused, Err(MediaError::BadSdp("no usable a=crypto")));
    let plain = call.answer(LegSide::B, &sdes_offer("RTP/AVP", &[]));
    assert_eq!(plain, Err(MediaError::BadSdp("SRTP required (no a=crypto)")));

    let answer = call.answer(LegSide::B, &sdes_offer("RTP/SAVP", &[phone])).unwrap();
    assert_plain_sip(&answer);
    let keys = sdes(&call.remote(LegSide::B)).clone();
    assert_eq!(keys.profile, SrtpProfile::Aes128CmHmacSha1_32);
    assert_eq!((keys.local, keys.remote), (ours[1].key.clone(), key(8, 30)));
    assert_eq!(call.remote(LegSide::A).security, Security::Plain);

    // Re-offers toward the phone keep the SBC's keys.
    let again = call.offer(LegSide::A, SIPP).unwrap();
    assert_eq!(value(&again.media[0], "crypto"), ours[0].attribute().value.unwrap());
}

#[test]
fn browser_to_browser_re_keys_each_leg() {
    let mut call = Call::new(MediaProfile::Webrtc, MediaProfile::Webrtc);
    let offer = call.offer(LegSide::A, CHROME).unwrap();
    let m = &offer.media[0];
    assert_eq!(m.proto, "UDP/TLS/RTP/SAVPF");
    assert_eq!(m.formats, CHROME_AUDIO_FORMATS);
    assert_ne!(value(m, "ice-ufrag"), "Kx3b", "the SBC's own credentials");
    assert!(has(&offer, &format!("a=fingerprint:{SBC_FINGERPRINT}")));
    assert!(!offer.to_string().contains(CHROME_FINGERPRINT));
    assert_eq!(offer.media[1].port, 0, "video is not carried");
    let formats = CHROME_AUDIO_FORMATS.join(" ");
    let video = "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
    let answer = format!("{}{video}", chrome_answer("active", "bbbb", &formats));
    let back = call.answer(LegSide::A, &answer);
    assert_eq!(back, Err(MediaError::NoOffer), "A made the offer");
    let back = call.answer(LegSide::B, &answer).unwrap();
    assert_eq!(back.media[0].proto, "UDP/TLS/RTP/SAVPF");
    assert!(has(&back, "a=setup:passive") && has(&back, "a=group:BUNDLE 0"), "{back}");
    // The relay re-keys but keeps SSRCs: B's stream signalling stays true for A.
    assert!(has(&back, "a=ssrc:42 cname:abc") && has(&back, "a=msid:- 1f2e"), "{back}");
    let (a, b) = (dtls(&call.remote(LegSide::A)).clone(), dtls(&call.remote(LegSide::B)).clone());
    assert_eq!((a.role, b.role), (DtlsRole::Server, DtlsRole::Server));
    assert_ne!(a.ice.unwrap().local_ufrag, b.ice.unwrap().local_ufrag);
}

const CHROME_AUDIO_FORMATS: [&str; 8] = ["111", "63", "9", "0", "8", "13", "110", "126"];

#[test]
fn media_failures_are_reported() {
    let mut call = Call::new(MediaProfile::Webrtc, MediaProfile::Rtp);
    assert!(!call.plane.can_fail(ID));
    call.offer(LegSide::A, CHROME).unwrap();
    call.answer(LegSide::B, TRUNK_ANSWER).unwrap();
    assert!(call.plane.can_fail(ID));
    assert_eq!(call.plane.failure(ID), None);
    let failed = PairStats {
        failure: Some(MediaFailure::FingerprintMismatch(LegSide::A)),
        ..PairStats::default()
    };
    assert!(call.backend.set_stats(call.pair(), failed));
    assert_eq!(call.plane.failure(ID), Some(MediaFailure::FingerprintMismatch(LegSide::A)));
    assert_eq!(call.plane.failure(MediaSessionId(1234)), None);

    let mut plain = Call::new(MediaProfile::Rtp, MediaProfile::Rtp);
    plain.offer(LegSide::A, SIPP).unwrap();
    plain.answer(LegSide::B, SIPP).unwrap();
    assert!(!plain.plane.can_fail(ID), "plain RTP has no DTLS or ICE to fail");
}

#[test]
fn webrtc_leg_needs_dtls() {
    let mut call = Call::new(MediaProfile::Webrtc, MediaProfile::Rtp);
    assert_eq!(
        call.offer(LegSide::A, SIPP),
        Err(MediaError::BadSdp("WebRTC leg without DTLS-SRTP"))
    );
    let mut call = Call::new(MediaProfile::Rtp, MediaProfile::Webrtc);
    call.backend.set_dtls_fingerprint(None);
    assert_eq!(call.offer(LegSide::A, SIPP), Err(MediaError::BadSdp("DTLS-SRTP not available")));
    assert_eq!(call.backend.open_pairs(), 0);
}

/// The whole exchange for an audio-only browser call to a G.711 trunk, line by line: what the
/// trunk gets, and what the browser gets back.
#[test]
fn audio_only_browser_call_golden() {
    let mut call = Call::new(MediaProfile::Webrtc, MediaProfile::Rtp);
    let offer = call.offer(LegSide::A, CHROME_AUDIO).unwrap();
    let b_port = call.port(LegSide::B);
    let origin = offer.origin.session_id.clone();
    let expected = format!(
        "v=0\r\no=- {origin} 1 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\n\
         m=audio {b_port} RTP/AVP 0 8 126\r\na=rtcp:{} IN IP4 203.0.113.1\r\na=sendrecv\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:126 telephone-event/8000\r\n",
        b_port + 1
    );
    assert_eq!(offer.to_string(), expected);

    let trunk = "v=0\r\no=- 9 9 IN IP4 203.0.113.50\r\ns=-\r\nc=IN IP4 203.0.113.50\r\nt=0 0\r\n\
        m=audio 20000 RTP/AVP 0 126\r\na=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:126 telephone-event/8000\r\na=fmtp:126 0-16\r\na=ptime:20\r\n";
    let answer = call.answer(LegSide::B, trunk).unwrap();
    let a_port = call.port(LegSide::A);
    let ice = dtls(&call.remote(LegSide::A)).ice.clone().unwrap();
    let (ufrag, pwd) = (ice.local_ufrag, ice.local_pwd);
    let origin = answer.origin.session_id.clone();
    let expected = format!(
        "v=0\r\no=- {origin} 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\n\
         t=0 0\r\na=group:BUNDLE 0\r\na=ice-lite\r\n\
         m=audio {a_port} UDP/TLS/RTP/SAVPF 0 126\r\na=mid:0\r\na=rtcp:{a_port}\r\n\
         a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=fingerprint:{SBC_FINGERPRINT}\r\n\
         a=setup:passive\r\na=rtcp-mux\r\na=sendrecv\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:126 telephone-event/8000\r\na=fmtp:126 0-16\r\na=ptime:20\r\n\
         a=candidate:1 1 udp 2130706431 198.51.100.1 {a_port} typ host\r\na=end-of-candidates\r\n"
    );
    assert_eq!(answer.to_string(), expected);
    let a = call.remote(LegSide::A);
    assert_eq!(a.rtp, Some("127.0.0.1:38651".parse().unwrap()));
    assert_eq!((a.rtcp_mux, a.rtcp), (true, a.rtp));
}

#[test]
fn refused_sdes_re_key_brings_the_old_keys_back() {
    let mut call = Call::new(MediaProfile::Sdes, MediaProfile::Rtp);
    let old = [CryptoLine { tag: 1, suite: SrtpProfile::Aes128CmHmacSha1_80, key: key(5, 30) }];
    call.offer(LegSide::A, &sdes_offer("RTP/SAVP", &old)).unwrap();
    let answer = call.answer(LegSide::B, SIPP).unwrap();
    let keys = sdes(&call.remote(LegSide::A)).clone();
    assert_eq!(keys.remote, key(5, 30));

    // The phone re-keys; the relay takes the new key at once; the trunk says 488.
    let new = [CryptoLine { key: key(6, 30), ..old[0].clone() }];
    call.offer(LegSide::A, &sdes_offer("RTP/SAVP", &new)).unwrap();
    assert_eq!(sdes(&call.remote(LegSide::A)).remote, key(6, 30));
    assert!(call.plane.offer_refused(ID, LegSide::A, call.t0));
    // The phone falls back to the old session: so does the relay, with both old keys, and it is
    // told to restore (the worker then brings back the old SRTP contexts themselves).
    assert_eq!(sdes(&call.remote(LegSide::A)), &keys);
    assert_eq!(call.backend.restore_count(call.pair(), LegSide::A), 1);
    // The answer in force (repeated) still carries the SBC's old key.
    assert_eq!(call.answer(LegSide::B, SIPP).unwrap(), answer);
}

#[test]
fn refused_ice_restart_keeps_the_old_credentials() {
    let mut call = Call::new(MediaProfile::Webrtc, MediaProfile::Rtp);
    call.offer(LegSide::A, CHROME).unwrap();
    call.answer(LegSide::B, TRUNK_ANSWER).unwrap();
    let before = dtls(&call.remote(LegSide::A)).clone();
    let restart = CHROME
        .replace("Kx3b", "Nw9q")
        .replace("0hUc1eF3zQ6vYwB8nK2mPq4r", "PqPqPqPqPqPqPqPqPqPqPqPq")
        .replace("7B:8B", "00:01");
    call.offer(LegSide::A, &restart).unwrap();
    assert_ne!(dtls(&call.remote(LegSide::A)), &before);
    assert!(call.plane.offer_refused(ID, LegSide::A, call.t0));
    assert_eq!(dtls(&call.remote(LegSide::A)), &before, "old association and credentials");
    // The SBC's own credentials came back too: a re-offer without a restart keeps them.
    call.offer(LegSide::A, CHROME).unwrap();
    let answer = call.answer(LegSide::B, TRUNK_ANSWER).unwrap();
    let ice = before.ice.unwrap();
    assert_eq!(value(&answer.media[0], "ice-ufrag"), ice.local_ufrag);
    assert_eq!(value(&answer.media[0], "ice-pwd"), ice.local_pwd);
}
