use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::sdp::tests::{ASTERISK, BARESIP, CHROME, FREESWITCH, SIPP};
use crate::{LegMedia, LegSide, MediaPlane, MediaSessionId, VirtualBackend};

fn sdp(text: &str) -> Sdp {
    Sdp::parse(text.as_bytes()).unwrap()
}

#[test]
fn crypto_lines_parse_and_write_back() {
    let mut rng = StdRng::seed_from_u64(1);
    for suite in [
        SrtpProfile::Aes128CmHmacSha1_80,
        SrtpProfile::Aes128CmHmacSha1_32,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ] {
        let line = CryptoLine::generate(7, suite, &mut rng);
        assert_eq!(line.key.len(), key_len(suite));
        let text = line.attribute().value.unwrap();
        assert!(text.starts_with(&format!("7 {} inline:", suite_name(suite))), "{text}");
        assert_eq!(CryptoLine::parse(&text), Some(line));
    }
    let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"; // 30 bytes
    let ok = CryptoLine::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20")).unwrap();
    assert_eq!((ok.tag, ok.suite, ok.key.len()), (1, SrtpProfile::Aes128CmHmacSha1_80, 30));
    let lower = CryptoLine::parse(&format!("1 aes_cm_128_hmac_sha1_80 inline:{key}"));
    assert!(lower.is_some(), "suite names are case-insensitive");
    for bad in [
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4"), // MKI
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key};inline:{key}"), // key list
        format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key} UNENCRYPTED_SRTP"),
        format!("1 F8_128_HMAC_SHA1_80 inline:{key}"),
        format!("x AES_CM_128_HMAC_SHA1_80 inline:{key}"),
        "1 AES_CM_128_HMAC_SHA1_80 inline:AAAA".to_owned(), // too short
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!".to_owned(),
        format!("1 AES_CM_128_HMAC_SHA1_80 {key}"),
        "1".to_owned(),
        String::new(),
    ] {
        assert_eq!(CryptoLine::parse(&bad), None, "{bad}");
    }
    assert!(!format!("{:?}", ok).contains("key"), "no key material in logs");
}

#[test]
fn fingerprints_and_candidates() {
    let fp = parse_fingerprint("SHA-256 0A:ff:10").unwrap();
    assert_eq!((fp.algorithm.as_str(), fp.digest.as_slice()), ("sha-256", &[10u8, 255, 16][..]));
    for bad in ["sha-256", "sha-256 0A:G1", "sha-256 0A::10", "sha-256 0AB", " 0A"] {
        assert_eq!(parse_fingerprint(bad), None, "{bad}");
    }
    let host = "1 1 udp 2122260223 192.0.2.7 46243 typ host generation 0";
    assert_eq!(host_candidate(host), Some("192.0.2.7:46243".parse().unwrap()));
    for other in [
        "1 2 udp 2122260223 192.0.2.7 46243 typ host",
        "1 1 tcp 1518280447 192.0.2.7 9 typ host tcptype active",
        "1 1 udp 1686052607 198.51.100.9 5000 typ srflx raddr 192.0.2.7 rport 46243",
        "1 1 udp 2122260223 abcd.local 46243 typ host",
        "1 1 udp 2122260223 192.0.2.7 0 typ host",
        "1 1 udp",
    ] {
        assert_eq!(host_candidate(other), None, "{other}");
    }
}

#[test]
fn peer_security_of_real_offers() {
    let chrome = sdp(CHROME);
    let PeerSecurity::Dtls(peer) = peer_security(&chrome, 0) else { panic!("DTLS") };
    assert_eq!(peer.setup, Setup::ActPass);
    assert_eq!(peer.fingerprints.len(), 1);
    assert_eq!(peer.fingerprints[0].digest.len(), 32);
    assert_eq!(peer.ice, Some(("Kx3b".into(), "0hUc1eF3zQ6vYwB8nK2mPq4r".into())));
    assert_eq!(peer.candidate, Some("192.168.1.7:46243".parse().unwrap()));
    assert_eq!((peer.mid.as_deref(), peer.bundled), (Some("0"), true));
    for plain in [SIPP, ASTERISK, FREESWITCH, BARESIP] {
        assert_eq!(peer_security(&sdp(plain), 0), PeerSecurity::Plain);
    }
    assert_eq!(peer_security(&sdp(SIPP), 5), PeerSecurity::Plain, "no such line");
    let savp = sdp(&SIPP.replace("RTP/AVP", "RTP/SAVP"));
    assert_eq!(peer_security(&savp, 0), PeerSecurity::Sdes(Vec::new()));
    // Session-level DTLS attributes apply to every line; no a=setup means active (RFC 4145).
    let session_level = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
        a=fingerprint:sha-256 01:02\r\nm=audio 5000 UDP/TLS/RTP/SAVP 0\r\n";
    let PeerSecurity::Dtls(peer) = peer_security(&sdp(session_level), 0) else { panic!("DTLS") };
    assert_eq!((peer.setup, peer.fingerprints.len(), peer.ice), (Setup::Active, 1, None));
}

#[test]
fn profile_names_and_ice_strings() {
    for p in [MediaProfile::Rtp, MediaProfile::Sdes, MediaProfile::Webrtc] {
        assert_eq!(MediaProfile::from_name(p.as_str()), Some(p));
    }
    assert_eq!(MediaProfile::from_name("WebRTC"), Some(MediaProfile::Webrtc));
    assert_eq!(MediaProfile::from_name("srtp"), None);
    assert_eq!(suite_from_name("aead_aes_256_gcm"), Some(SrtpProfile::AeadAes256Gcm));
    let mut rng = StdRng::seed_from_u64(2);
    let s = ice_string(&mut rng, 64);
    assert_eq!(s.len(), 64);
    assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
    let mut side = SideSecurity::default();
    let first = side.ice_credentials(&mut rng);
    assert_eq!(side.ice_credentials(&mut rng), first, "made once");
    assert!(first.0.len() >= 4 && first.1.len() >= 22);
}

#[test]
fn session_level_conversion() {
    let mut chrome = sdp(CHROME);
    write_session(&mut chrome, false, None, true);
    let text = chrome.to_string();
    for gone in ["a=group", "a=extmap-allow-mixed", "a=msid-semantic"] {
        assert!(!text.lines().take(8).any(|l| l.starts_with(gone)), "{gone}:\n{text}");
    }
    let mut sipp = sdp(SIPP);
    write_session(&mut sipp, true, Some("0"), false);
    assert_eq!(sipp.attributes[0], Attribute::new("group", "BUNDLE 0".into()));
    assert_eq!(sipp.attributes[1], Attribute::flag("ice-lite"));
}

/// Profiles and offers to throw at the plane.
fn profiles() -> impl Strategy<Value = MediaProfile> {
    prop_oneof![Just(MediaProfile::Rtp), Just(MediaProfile::Sdes), Just(MediaProfile::Webrtc)]
}

/// Real offers with security and WebRTC lines mixed in or broken.
fn offers() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just(CHROME.to_owned()),
        Just(SIPP.to_owned()),
        Just(ASTERISK.to_owned()),
        Just(SIPP.replace(
            "a=rtpmap:0 PCMU/8000",
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
        )),
    ];
    let extra = prop::collection::vec(
        prop_oneof![
            Just("a=setup:holdconn"),
            Just("a=setup:passive"),
            Just("a=fingerprint:sha-256 zz"),
            Just("a=crypto:9 AES_CM_128_HMAC_SHA1_32 inline:short"),
            Just("a=ice-ufrag:"),
            Just("a=candidate:1 1 udp 1 ::1 9 typ host"),
            Just("a=group:BUNDLE"),
            Just("a=mid:"),
        ],
        0..4,
    );
    (base, extra, any::<bool>()).prop_map(|(base, extra, savp)| {
        let mut text = base;
        for line in extra {
            text.push_str(line);
            text.push_str("\r\n");
        }
        if savp { text.replacen("RTP/AVP", "RTP/SAVP", 1) } else { text }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn conversion_never_breaks_the_plane(
        a in profiles(), b in profiles(), offer in offers(), answer in offers()
    ) {
        let backend = Arc::new(VirtualBackend::new(40000..=40099));
        backend.set_dtls_fingerprint(Some("sha-256 01:02:03".into()));
        let mut plane = MediaPlane::with_seed(backend.clone(), 5);
        let id = MediaSessionId(1);
        plane.set_leg(id, LegSide::A, LegMedia { profile: a, ..LegMedia::default() });
        plane.set_leg(id, LegSide::B, LegMedia { profile: b, ..LegMedia::default() });
        let now = Instant::now();
        if let Ok(sent) = plane.offer(id, LegSide::A, &Bytes::from(offer.clone()), now) {
            let text = std::str::from_utf8(&sent).unwrap();
            prop_assert!(!text.ends_with("\r\n\r\n"));
            let sent = Sdp::parse(&sent).unwrap();
            prop_assert_eq!(sent.media.len(), sdp(&offer).media.len());
            if b == MediaProfile::Rtp {
                prop_assert!(!text.contains("a=crypto") && !text.contains("a=fingerprint"));
                prop_assert!(!text.contains("a=ice-ufrag"));
            }
            for reply in [answer.as_str(), text] {
                let reply = Bytes::from(reply.to_owned());
                if let Ok(back) = plane.answer(id, LegSide::B, &reply, now) {
                    let back = Sdp::parse(&back).unwrap();
                    prop_assert_eq!(back.media.len(), sdp(&offer).media.len());
                }
            }
        }
        plane.release(id);
        prop_assert_eq!(backend.open_pairs(), 0);
    }
}
