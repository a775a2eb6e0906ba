//! Sans-IO tests of the secure side with a fake clock: the peer is built from the rtc-* crates
//! directly (an rtc-dtls endpoint, rtc-srtp contexts, rtc-stun messages), so both ends of each
//! exchange are independent implementations of the RFCs.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_dtls::config::{ConfigBuilder, HandshakeConfig};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;
use rtc_stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, Setter, TransactionId};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;
use sha2::{Digest, Sha256};

use super::*;
use crate::backend::{DtlsSpec, Fingerprint, IceCredentials, SrtpProfile};

const BROWSER: &str = "198.51.100.7:50000";
const OTHER: &str = "198.51.100.8:50000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(crate) fn identity() -> Arc<DtlsIdentity> {
    // Key generation is the slow part; one identity serves every test, as one serves the relay.
    static ID: OnceLock<Arc<DtlsIdentity>> = OnceLock::new();
    Arc::clone(ID.get_or_init(|| Arc::new(DtlsIdentity::generate().unwrap())))
}

pub(crate) fn creds() -> IceCredentials {
    IceCredentials {
        local_ufrag: "sbcU".into(),
        local_pwd: "sbc-password-0123456789".into(),
        remote_ufrag: "brwsr".into(),
        remote_pwd: "browser-password-98765".into(),
    }
}

/// A STUN Binding request as a browser sends it toward the SBC.
pub(crate) fn check(username: &str, pwd: &str, nominate: bool) -> Vec<u8> {
    struct UseCandidate;
    impl Setter for UseCandidate {
        fn add_to(&self, m: &mut Message) -> rtc_shared::error::Result<()> {
            m.add(ATTR_USE_CANDIDATE, &[]);
            Ok(())
        }
    }
    let provider = rtc_stun::crypto::default_provider().unwrap();
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(TransactionId::new()),
        Box::new(BINDING_REQUEST),
        Box::new(TextAttribute::new(ATTR_USERNAME, username.into())),
    ];
    if nominate {
        setters.push(Box::new(UseCandidate));
    }
    setters.push(Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
        pwd.into(),
        provider.crypto(),
    )));
    setters.push(Box::new(FINGERPRINT));
    m.build(&setters).unwrap();
    m.raw
}

fn ice_side(now: Instant, role: DtlsRole, fingerprints: Vec<Fingerprint>) -> SecureSide {
    let spec = DtlsSpec { role, remote_fingerprints: fingerprints, ice: Some(creds()) };
    SecureSide::new(now, LegSide::A, &Security::Dtls(spec), &identity(), None).unwrap()
}

fn drain(side: &mut SecureSide) -> Vec<Transmit> {
    std::iter::from_fn(|| side.poll_transmit()).collect()
}

pub(crate) fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend(seq.to_be_bytes());
    p.extend((u32::from(seq) * 160).to_be_bytes());
    p.extend(0x1234_5678u32.to_be_bytes());
    p.extend([0xd5; 160]);
    p
}

#[test]
fn a_valid_check_is_answered_and_selects_its_source() {
    let now = Instant::now();
    let mut side = ice_side(now, DtlsRole::Server, vec![]);
    let mut req = check("sbcU:brwsr", "sbc-password-0123456789", false);
    assert_eq!(side.handle(now, addr(BROWSER), &mut req), Received::Control);
    let out = drain(&mut side);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, addr(BROWSER));
    // The response: success, same transaction, our source as XOR-MAPPED-ADDRESS, signed with
    // the SBC's password, with a valid FINGERPRINT.
    let mut resp = Message::new();
    resp.raw = out[0].data.clone();
    resp.decode().unwrap();
    assert_eq!(resp.typ, BINDING_SUCCESS);
    let mut sent = Message::new();
    sent.raw = req.clone();
    sent.decode().unwrap();
    assert_eq!(resp.transaction_id, sent.transaction_id);
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&resp).unwrap();
    assert_eq!(SocketAddr::new(mapped.ip, mapped.port), addr(BROWSER));
    FINGERPRINT.check(&resp).unwrap();
    let provider = rtc_stun::crypto::default_provider().unwrap();
    MessageIntegrity::check(&mut resp, b"sbc-password-0123456789", provider.crypto()).unwrap();
    assert!(MessageIntegrity::check(&mut resp, b"other", provider.crypto()).is_err());
    assert_eq!(side.peer(), Some(addr(BROWSER)));
    assert!(side.ice_path().unwrap().is_validated(addr(BROWSER)));
    assert_eq!(side.counters().checks, 1);
}

#[test]
fn a_wrong_password_or_ufrag_is_dropped_without_a_state_change() {
    let now = Instant::now();
    let mut side = ice_side(now, DtlsRole::Server, vec![]);
    for (user, pwd, why) in [
        ("sbcU:brwsr", "wrong-password", StunReject::Integrity),
        ("sbcU:other", "sbc-password-0123456789", StunReject::Username),
        ("other:brwsr", "sbc-password-0123456789", StunReject::Username),
        // Signed with the browser's own password, as for the other direction.
        ("sbcU:brwsr", "browser-password-98765", StunReject::Integrity),
    ] {
        let mut req = check(user, pwd, true);
        assert_eq!(
            side.handle(now, addr(BROWSER), &mut req),
            Received::Drop(SecureDrop::Stun(why)),
            "{user} {pwd}"
        );
    }
    assert!(drain(&mut side).is_empty());
    assert_eq!(side.peer(), None);
    assert_eq!(side.ice_path(), Some(IcePath::default()));
    assert_eq!(side.poll_timeout(), None, "no consent timer without a valid check");
    assert_eq!(side.counters().stun_rejected, 4);
    // A tampered valid check (one byte of the username changed after signing) fails too.
    let mut req = check("sbcU:brwsr", "sbc-password-0123456789", false);
    let pos = req.windows(5).position(|w| w == b"brwsr").unwrap();
    req[pos] = b'B';
    assert!(matches!(side.handle(now, addr(BROWSER), &mut req), Received::Drop(_)));
}

#[test]
fn nomination_moves_the_selected_address_and_later_checks_do_not() {
    let now = Instant::now();
    let mut side = ice_side(now, DtlsRole::Server, vec![]);
    let ok = |nominate| check("sbcU:brwsr", "sbc-password-0123456789", nominate);
    side.handle(now, addr(BROWSER), &mut ok(false));
    side.handle(now, addr(OTHER), &mut ok(true));
    assert_eq!(side.peer(), Some(addr(OTHER)));
    side.handle(now, addr(BROWSER), &mut ok(false));
    assert_eq!(side.peer(), Some(addr(OTHER)), "a check without USE-CANDIDATE keeps the nominated");
    let path = side.ice_path().unwrap();
    assert!(path.is_validated(addr(BROWSER)) && path.is_validated(addr(OTHER)));
}

#[test]
fn consent_expires_thirty_seconds_after_the_last_valid_check() {
    let t0 = Instant::now();
    let mut side = ice_side(t0, DtlsRole::Server, vec![]);
    let ok = || check("sbcU:brwsr", "sbc-password-0123456789", true);
    side.handle(t0, addr(BROWSER), &mut ok());
    // A server with no ClientHello yet has only the consent timer.
    assert_eq!(side.poll_timeout(), Some(t0 + Duration::from_secs(30)));
    let t1 = t0 + Duration::from_secs(20);
    side.handle(t1, addr(BROWSER), &mut ok());
    side.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(side.failure(), None, "refreshed at t1");
    // Wrong-password checks do not refresh consent.
    side.handle(t1 + Duration::from_secs(10), addr(BROWSER), &mut check("sbcU:brwsr", "x", true));
    assert_eq!(side.poll_timeout(), Some(t1 + Duration::from_secs(30)));
    side.handle_timeout(t1 + Duration::from_secs(30));
    assert_eq!(side.failure(), Some(MediaFailure::ConsentExpired(LegSide::A)));
    assert!(matches!(
        side.handle(t1, addr(BROWSER), &mut ok()),
        Received::Drop(SecureDrop::Failed)
    ));
}

/// A browser-like DTLS peer: its own certificate, an rtc-dtls endpoint.
pub(crate) struct Peer {
    pub(crate) endpoint: Endpoint,
    pub(crate) config: Arc<HandshakeConfig>,
    pub(crate) fingerprint: Fingerprint,
    /// The SBC's address, as the peer's endpoint knows it.
    pub(crate) sbc: SocketAddr,
}

impl Peer {
    pub(crate) fn new(is_client: bool) -> Peer {
        let provider = rtc_dtls::crypto_provider::default_provider().unwrap();
        let cert =
            Certificate::generate_self_signed(vec!["peer".into()], provider.crypto()).unwrap();
        let digest = Sha256::digest(cert.certificate[0].as_ref()).to_vec();
        let config = ConfigBuilder::default()
            .with_crypto_provider(provider)
            .with_certificates(vec![cert])
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
                SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            ])
            .with_insecure_skip_verify(true)
            .build(is_client, None)
            .unwrap();
        let config = Arc::new(config);
        let server = (!is_client).then(|| Arc::clone(&config));
        Peer {
            endpoint: Endpoint::new(addr(BROWSER), TransportProtocol::UDP, server),
            config,
            fingerprint: Fingerprint { algorithm: "sha-256".into(), digest },
            sbc: addr("192.0.2.10:40000"),
        }
    }

    /// Delivers what the peer sends to `side`; true when the peer completed its handshake.
    fn exchange(&mut self, now: Instant, side: &mut SecureSide) -> bool {
        let mut done = false;
        for _ in 0..16 {
            let mut moved = false;
            while let Some(t) = self.endpoint.poll_transmit() {
                moved = true;
                let mut d = t.message.to_vec();
                side.handle(now, addr(BROWSER), &mut d);
            }
            for t in drain(side) {
                moved = true;
                assert_eq!(t.to, addr(BROWSER));
                let events =
                    self.endpoint.read(now, self.sbc, None, BytesMut::from(&t.data[..])).unwrap();
                done |= events.iter().any(|e| matches!(e, EndpointEvent::HandshakeComplete));
            }
            if !moved {
                break;
            }
        }
        done
    }

    /// The peer's SRTP contexts from its side of the handshake.
    pub(crate) fn srtp(&self, is_client: bool) -> (SrtpPair, SrtpProfile) {
        let state = self.endpoint.get_connection_state(self.sbc).unwrap();
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => SrtpProfile::Aes128CmHmacSha1_80,
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => SrtpProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => SrtpProfile::AeadAes256Gcm,
            other => panic!("unexpected profile {other:?}"),
        };
        let p = srtp::protection_profile(profile);
        let (k, s) = (p.key_len(), p.salt_len());
        let m = state.export_keying_material("EXTRACTOR-dtls_srtp", &[], 2 * (k + s)).unwrap();
        let m: &[u8] = m.as_ref();
        let client = [&m[..k], &m[2 * k..2 * k + s]].concat();
        let server = [&m[k..2 * k], &m[2 * k + s..]].concat();
        let (local, remote) = if is_client { (client, server) } else { (server, client) };
        let provider = rtc_dtls::crypto_provider::default_provider().unwrap();
        (SrtpPair::new(profile, &local, &remote, provider.crypto()).unwrap(), profile)
    }
}

/// A server side with ICE, a browser peer that checked and completed DTLS as client.
fn connected_server() -> (SecureSide, Peer, SrtpPair, Instant) {
    let now = Instant::now();
    let mut peer = Peer::new(true);
    let mut side = ice_side(now, DtlsRole::Server, vec![peer.fingerprint.clone()]);
    side.handle(now, addr(BROWSER), &mut check("sbcU:brwsr", "sbc-password-0123456789", false));
    drain(&mut side);
    peer.endpoint.connect(now, peer.sbc, Arc::clone(&peer.config), None).unwrap();
    assert!(peer.exchange(now, &mut side), "the browser completes the handshake");
    assert!(side.is_ready(), "the SBC has keys: {:?}", side.failure());
    let (srtp, profile) = peer.srtp(true);
    // Chrome's first preference, which the SBC also prefers.
    assert_eq!(profile, SrtpProfile::Aes128CmHmacSha1_80);
    (side, peer, srtp, now)
}

#[test]
fn dtls_server_handshake_gives_keys_that_agree_both_ways() {
    let (mut side, _peer, mut browser, now) = connected_server();
    // Browser -> SBC.
    let plain = rtp(1);
    let mut buf = plain.clone();
    buf.resize(2048, 0);
    let n = browser.protect(false, &mut buf, plain.len()).unwrap();
    assert_ne!(&buf[..plain.len()], &plain[..], "the payload is encrypted");
    let mut wire = buf[..n].to_vec();
    assert_eq!(
        side.handle(now, addr(BROWSER), &mut wire),
        Received::Media { rtcp: false, len: plain.len() }
    );
    assert_eq!(&wire[..plain.len()], &plain[..]);
    // SBC -> browser, RTP and RTCP.
    let mut buf = rtp(7);
    let len = buf.len();
    buf.resize(2048, 0);
    let n = side.protect(false, &mut buf, len).unwrap();
    let mut wire = buf[..n].to_vec();
    assert_eq!(browser.unprotect(false, &mut wire), Ok(len));
    assert_eq!(&wire[..len], &rtp(7)[..]);
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 9];
    let mut buf = rr.to_vec();
    buf.resize(2048, 0);
    let n = side.protect(true, &mut buf, rr.len()).unwrap();
    let mut wire = buf[..n].to_vec();
    assert_eq!(browser.unprotect(true, &mut wire), Ok(rr.len()));
    assert_eq!(&wire[..rr.len()], &rr);
    // SRTCP from the browser is recognised as RTCP.
    let mut buf = rr.to_vec();
    buf.resize(2048, 0);
    let n = browser.protect(true, &mut buf, rr.len()).unwrap();
    let mut wire = buf[..n].to_vec();
    assert_eq!(side.handle(now, addr(BROWSER), &mut wire), Received::Media { rtcp: true, len: 8 });
    assert_eq!(side.poll_timeout().map(|t| t > now + Duration::from_secs(29)), Some(true));
}

#[test]
fn srtp_with_a_flipped_tag_byte_or_replayed_is_dropped_and_counted() {
    let (mut side, _peer, mut browser, now) = connected_server();
    let mut buf = rtp(1);
    let len = buf.len();
    buf.resize(2048, 0);
    let n = browser.protect(false, &mut buf, len).unwrap();
    let good = buf[..n].to_vec();
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0x01;
    assert_eq!(
        side.handle(now, addr(BROWSER), &mut bad),
        Received::Drop(SecureDrop::Unauthenticated)
    );
    assert_eq!(side.counters().auth_failures, 1);
    // The genuine packet still passes (the forgery did not move the replay window)...
    assert!(matches!(side.handle(now, addr(BROWSER), &mut good.clone()), Received::Media { .. }));
    // ... once.
    assert_eq!(
        side.handle(now, addr(BROWSER), &mut good.clone()),
        Received::Drop(SecureDrop::Unauthenticated)
    );
    assert_eq!(side.counters().auth_failures, 2);
}

#[test]
fn a_fingerprint_mismatch_gives_no_keys_and_reports_it() {
    let now = Instant::now();
    let mut peer = Peer::new(true);
    let mut wrong = peer.fingerprint.clone();
    wrong.digest[0] ^= 0xff;
    let mut side = ice_side(now, DtlsRole::Server, vec![wrong]);
    side.handle(now, addr(BROWSER), &mut check("sbcU:brwsr", "sbc-password-0123456789", true));
    drain(&mut side);
    peer.endpoint.connect(now, peer.sbc, Arc::clone(&peer.config), None).unwrap();
    peer.exchange(now, &mut side);
    assert_eq!(side.failure(), Some(MediaFailure::FingerprintMismatch(LegSide::A)));
    assert!(!side.is_ready());
    let mut buf = rtp(1);
    let len = buf.len();
    buf.resize(2048, 0);
    assert_eq!(side.protect(false, &mut buf, len), None, "nothing is sent to that peer");
    let mut junk = rtp(2);
    assert_eq!(side.handle(now, addr(BROWSER), &mut junk), Received::Drop(SecureDrop::Failed));
    assert_eq!(side.poll_timeout(), None);
}

#[test]
fn dtls_from_an_unchecked_address_is_dropped() {
    let now = Instant::now();
    let mut peer = Peer::new(true);
    let mut side = ice_side(now, DtlsRole::Server, vec![peer.fingerprint.clone()]);
    peer.endpoint.connect(now, peer.sbc, Arc::clone(&peer.config), None).unwrap();
    let hello = peer.endpoint.poll_transmit().unwrap().message.to_vec();
    assert_eq!(
        side.handle(now, addr(BROWSER), &mut hello.clone()),
        Received::Drop(SecureDrop::Dtls)
    );
    side.handle(now, addr(OTHER), &mut check("sbcU:brwsr", "sbc-password-0123456789", true));
    drain(&mut side);
    assert_eq!(
        side.handle(now, addr(BROWSER), &mut hello.clone()),
        Received::Drop(SecureDrop::Dtls)
    );
    assert_eq!(side.handle(now, addr(OTHER), &mut hello.clone()), Received::Control);
}

#[test]
fn a_silent_client_fails_the_handshake_on_the_timer() {
    let t0 = Instant::now();
    let mut peer = Peer::new(true);
    let mut side = ice_side(t0, DtlsRole::Server, vec![peer.fingerprint.clone()]);
    let ok = || check("sbcU:brwsr", "sbc-password-0123456789", true);
    side.handle(t0, addr(BROWSER), &mut ok());
    peer.endpoint.connect(t0, peer.sbc, Arc::clone(&peer.config), None).unwrap();
    // One round: ClientHello, HelloVerifyRequest, ClientHello with the cookie; the server
    // answers with its flight (ServerHello .. ServerHelloDone), which it must retransmit.
    let hello = peer.endpoint.poll_transmit().unwrap().message.to_vec();
    side.handle(t0, addr(BROWSER), &mut hello.clone());
    for t in drain(&mut side).into_iter().filter(|t| t.data[0] == 22) {
        peer.endpoint.read(t0, peer.sbc, None, BytesMut::from(&t.data[..])).unwrap();
    }
    while let Some(t) = peer.endpoint.poll_transmit() {
        side.handle(t0, addr(BROWSER), &mut t.message.to_vec());
    }
    assert!(!drain(&mut side).is_empty(), "the server flight");
    // The browser goes silent but keeps consent alive; the SBC retransmits, then gives up.
    let mut now = t0;
    let mut retransmits = 0;
    while side.failure().is_none() {
        let next = side.poll_timeout().expect("a timer while handshaking");
        assert!(next >= now, "deadlines move forward");
        now = next;
        side.handle(now, addr(BROWSER), &mut ok());
        side.handle_timeout(now);
        retransmits += drain(&mut side).iter().filter(|t| t.data[0] == 22).count();
        assert!(now < t0 + Duration::from_secs(60), "no failure after a minute");
    }
    assert!(retransmits >= 2, "the server flight was retransmitted ({retransmits})");
    assert!(matches!(side.failure(), Some(MediaFailure::DtlsFailed(LegSide::A, _))));
}

#[test]
fn dtls_client_role_against_an_rtc_dtls_server() {
    let now = Instant::now();
    let mut peer = Peer::new(false);
    let spec = DtlsSpec {
        role: DtlsRole::Client,
        remote_fingerprints: vec![peer.fingerprint.clone()],
        ice: None,
    };
    // Without ICE the client starts at once toward the SDP address.
    let mut side =
        SecureSide::new(now, LegSide::B, &Security::Dtls(spec), &identity(), Some(addr(BROWSER)))
            .unwrap();
    let hello = drain(&mut side);
    assert!(!hello.is_empty() && hello.iter().all(|t| t.to == addr(BROWSER) && t.data[0] == 22));
    for t in hello {
        peer.endpoint.read(now, peer.sbc, None, BytesMut::from(&t.data[..])).unwrap();
    }
    peer.exchange(now, &mut side);
    assert!(side.is_ready(), "client keys: {:?}", side.failure());
    let (mut server, _) = peer.srtp(false);
    let mut buf = rtp(3);
    let len = buf.len();
    buf.resize(2048, 0);
    let n = side.protect(false, &mut buf, len).unwrap();
    let mut wire = buf[..n].to_vec();
    assert_eq!(server.unprotect(false, &mut wire), Ok(len));
    let mut buf = rtp(4);
    buf.resize(2048, 0);
    let n = server.protect(false, &mut buf, len).unwrap();
    let mut wire = buf[..n].to_vec();
    assert_eq!(side.handle(now, addr(BROWSER), &mut wire), Received::Media { rtcp: false, len });
    assert_eq!(&wire[..len], &rtp(4)[..]);
}

#[test]
fn dtls_client_with_ice_waits_for_the_first_valid_check() {
    let now = Instant::now();
    let mut side = ice_side(now, DtlsRole::Client, vec![]);
    assert!(drain(&mut side).is_empty(), "no ClientHello before the peer is known");
    side.handle(now, addr(BROWSER), &mut check("sbcU:brwsr", "sbc-password-0123456789", false));
    let out = drain(&mut side);
    assert_eq!(out.len(), 2, "STUN response, then the ClientHello");
    assert_eq!(out[0].data[0] >> 6, 0, "STUN first");
    assert_eq!(out[1].data[0], 22, "a DTLS handshake record");
}

fn sdes(local: &[u8], remote: &[u8], profile: SrtpProfile) -> SecureSide {
    let keys = SdesKeys { profile, local: local.to_vec(), remote: remote.to_vec() };
    SecureSide::new(Instant::now(), LegSide::B, &Security::Sdes(keys), &identity(), None).unwrap()
}

#[test]
fn sdes_round_trip_for_the_sha1_suites() {
    let now = Instant::now();
    let k1: Vec<u8> = (0..30).collect();
    let k2: Vec<u8> = (100..130).collect();
    for profile in [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::Aes128CmHmacSha1_32] {
        let mut phone = sdes(&k1, &k2, profile);
        let mut sbc = sdes(&k2, &k1, profile);
        assert!(sbc.is_ready() && drain(&mut sbc).is_empty() && sbc.poll_timeout().is_none());
        let mut buf = rtp(9);
        let len = buf.len();
        buf.resize(2048, 0);
        let n = phone.protect(false, &mut buf, len).unwrap();
        let tag = if profile == SrtpProfile::Aes128CmHmacSha1_80 { 10 } else { 4 };
        assert_eq!(n, len + tag);
        let mut wire = buf[..n].to_vec();
        assert_eq!(sbc.handle(now, addr(BROWSER), &mut wire), Received::Media { rtcp: false, len });
        assert_eq!(&wire[..len], &rtp(9)[..]);
        // Keyed the wrong way round: nothing authenticates.
        let mut mirror = sdes(&k1, &k2, profile);
        let mut buf = rtp(10);
        buf.resize(2048, 0);
        let n = phone.protect(false, &mut buf, len).unwrap();
        assert_eq!(
            mirror.handle(now, addr(BROWSER), &mut buf[..n].to_vec()),
            Received::Drop(SecureDrop::Unauthenticated)
        );
        // STUN and DTLS have no place on an SDES side.
        assert!(matches!(
            sbc.handle(now, addr(BROWSER), &mut check("a:b", "c", false)),
            Received::Drop(_)
        ));
    }
}

#[test]
fn sdes_keys_of_the_wrong_length_fail_the_side() {
    let side = sdes(&[1; 29], &[2; 30], SrtpProfile::Aes128CmHmacSha1_80);
    assert_eq!(side.failure(), Some(MediaFailure::BadKeys(LegSide::B)));
    assert!(!side.is_ready());
}

#[test]
fn the_identity_fingerprint_is_a_sha256_of_colon_hex() {
    let id = identity();
    let fp = id.fingerprint();
    let hex = fp.strip_prefix("sha-256 ").unwrap();
    assert_eq!(hex.len(), 32 * 3 - 1);
    assert!(hex.split(':').all(
        |b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    ));
}

#[test]
fn arbitrary_datagrams_never_panic() {
    let now = Instant::now();
    let (mut side, _peer, _browser, _) = connected_server();
    let mut ice = ice_side(now, DtlsRole::Server, vec![]);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = check("sbcU:brwsr", "sbc-password-0123456789", true);
    for i in 0..5_000 {
        // Mutations of a valid check, then random bytes behind each protocol's first byte.
        let mut d = if i % 2 == 0 {
            let mut d = valid.clone();
            let pos = (next() as usize) % d.len();
            d[pos] = next() as u8;
            d.truncate((next() as usize) % (d.len() + 1));
            d
        } else {
            let len = (next() % 200) as usize;
            (0..len).map(|_| next() as u8).collect()
        };
        if let Some(b) = d.first_mut()
            && i % 3 == 0
        {
            *b = [0, 1, 22, 23, 128, 129][(next() % 6) as usize];
        }
        let _ = side.handle(now, addr(BROWSER), &mut d.clone());
        let _ = ice.handle(now, addr(BROWSER), &mut d);
    }
}

#[test]
fn header_extensions_protect_when_well_formed_and_are_refused_when_not() {
    let now = Instant::now();
    let k1: Vec<u8> = (0..30).collect();
    let k2: Vec<u8> = (100..130).collect();
    let mut sbc = sdes(&k1, &k2, SrtpProfile::Aes128CmHmacSha1_80);
    let mut phone = sdes(&k2, &k1, SrtpProfile::Aes128CmHmacSha1_80);
    // RFC 8285 one-byte header: audio level (id 1, one byte), then two bytes of padding.
    let mut plain = vec![0x90, 0, 0, 5, 0, 0, 3, 32, 0, 0, 0, 9];
    plain.extend([0xbe, 0xde, 0, 1, 0x10, 0x80, 0, 0]);
    plain.extend([0xd5; 160]);
    let len = plain.len();
    let mut buf = plain.clone();
    buf.resize(2048, 0);
    let n = sbc.protect(false, &mut buf, len).expect("a well-formed extension");
    assert_eq!(&buf[..20], &plain[..20], "the header stays in the clear");
    let mut wire = buf[..n].to_vec();
    assert_eq!(phone.handle(now, addr(BROWSER), &mut wire), Received::Media { rtcp: false, len });
    assert_eq!(&wire[..len], &plain[..]);
    // An element (id 1, 14 bytes) running past its one-word block to the end of a 31-byte
    // packet: rtc-srtp alone panics on it (it encrypts from 32, its idea of the header size;
    // a fuzzer found it). Refused, no panic, and so is every cut of it.
    let mut bad = vec![0x90, 0, 0, 6, 0, 0, 3, 32, 0, 0, 0, 9];
    bad.extend([0xbe, 0xde, 0, 1, 0x1d, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    for cut in 12..bad.len() {
        let mut buf = bad[..cut].to_vec();
        buf.resize(2048, 0);
        let _ = sbc.protect(false, &mut buf, cut);
    }
    let mut buf = bad.clone();
    buf.resize(2048, 0);
    assert_eq!(sbc.protect(false, &mut buf, bad.len()), None);
}

/// A server side whose browser passed an ICE check (nominated) and has started its handshake
/// (its ClientHello waits in its endpoint).
fn server_and_connecting_client(now: Instant) -> (SecureSide, Peer) {
    let mut peer = Peer::new(true);
    let mut side = ice_side(now, DtlsRole::Server, vec![peer.fingerprint.clone()]);
    side.handle(now, addr(BROWSER), &mut check("sbcU:brwsr", "sbc-password-0123456789", true));
    drain(&mut side);
    peer.endpoint.connect(now, peer.sbc, Arc::clone(&peer.config), None).unwrap();
    (side, peer)
}

/// RFC 6347 §4.2.4: a server whose last flight (ChangeCipherSpec, Finished) was lost learns it
/// from the client's retransmitted flight, and must send its own again; the client (Chrome)
/// otherwise never completes, while the server thinks the handshake is done.
#[test]
fn a_lost_last_server_flight_is_sent_again_when_the_client_retransmits() {
    let t0 = Instant::now();
    let (mut side, mut peer) = server_and_connecting_client(t0);
    // Run the handshake, losing the server's datagrams that start with a ChangeCipherSpec
    // record (content type 20): its last flight.
    let mut lost = 0;
    let mut peer_done = false;
    for _ in 0..16 {
        while let Some(t) = peer.endpoint.poll_transmit() {
            side.handle(t0, addr(BROWSER), &mut t.message.to_vec());
        }
        let out = drain(&mut side);
        if out.is_empty() {
            break;
        }
        for t in out {
            if t.data[0] == 20 {
                lost += 1;
                continue;
            }
            let events = peer.endpoint.read(t0, peer.sbc, None, BytesMut::from(&t.data[..]));
            peer_done |=
                events.unwrap().iter().any(|e| matches!(e, EndpointEvent::HandshakeComplete));
        }
    }
    assert_eq!(lost, 1, "the server's last flight was sent once, and lost");
    assert!(side.is_ready(), "the SBC completed on the client's Finished");
    assert!(!peer_done, "the client has not");

    // The client's retransmission timer fires: it sends its last flight again, and the SBC
    // must answer with its own.
    let mut now = t0;
    for _ in 0..6 {
        now += Duration::from_secs(2);
        let _ = peer.endpoint.handle_timeout(peer.sbc, now);
        let mut again = 0;
        while let Some(t) = peer.endpoint.poll_transmit() {
            again += 1;
            side.handle(now, addr(BROWSER), &mut t.message.to_vec());
        }
        for t in drain(&mut side) {
            let events = peer.endpoint.read(now, peer.sbc, None, BytesMut::from(&t.data[..]));
            peer_done |=
                events.unwrap().iter().any(|e| matches!(e, EndpointEvent::HandshakeComplete));
        }
        if peer_done || again == 0 {
            break;
        }
    }
    assert!(peer_done, "the client completed after its retransmission");
    assert!(side.is_ready());
}

/// A lost server flight (ServerHello .. ServerHelloDone) is sent again when the client's
/// retransmitted ClientHello arrives, and the handshake completes.
#[test]
fn a_lost_server_hello_flight_is_sent_again_when_the_client_retransmits() {
    let t0 = Instant::now();
    let (mut side, mut peer) = server_and_connecting_client(t0);
    // The server flight carries the certificate: the first large handshake datagram (a
    // HelloVerifyRequest is some 60 bytes) is lost.
    let mut lost = 0;
    let mut peer_done = false;
    let mut now = t0;
    for round in 0..24 {
        if round > 0 && !peer_done {
            now += Duration::from_secs(1);
            let _ = peer.endpoint.handle_timeout(peer.sbc, now);
        }
        while let Some(t) = peer.endpoint.poll_transmit() {
            side.handle(now, addr(BROWSER), &mut t.message.to_vec());
        }
        side.handle_timeout(now);
        for t in drain(&mut side) {
            if t.data[0] == 22 && t.data.len() > 300 && lost == 0 {
                lost += 1;
                continue;
            }
            let events = peer.endpoint.read(now, peer.sbc, None, BytesMut::from(&t.data[..]));
            peer_done |=
                events.unwrap().iter().any(|e| matches!(e, EndpointEvent::HandshakeComplete));
        }
        if peer_done && side.is_ready() {
            break;
        }
    }
    assert_eq!(lost, 1, "the server flight was lost once");
    assert!(peer_done, "the client completed after retransmitting its ClientHello");
    assert!(side.is_ready(), "the SBC completed: {:?}", side.failure());
}

/// A peer that keeps repeating a handshake message gets a bounded number of flights back.
#[test]
fn repeated_client_hellos_get_a_bounded_number_of_flights() {
    let t0 = Instant::now();
    let (mut side, mut peer) = server_and_connecting_client(t0);
    // Cookie exchange, then the ClientHello that gets the server flight.
    let hello = peer.endpoint.poll_transmit().unwrap().message.to_vec();
    side.handle(t0, addr(BROWSER), &mut hello.clone());
    for t in drain(&mut side) {
        peer.endpoint.read(t0, peer.sbc, None, BytesMut::from(&t.data[..])).unwrap();
    }
    let with_cookie: Vec<Vec<u8>> =
        std::iter::from_fn(|| peer.endpoint.poll_transmit()).map(|t| t.message.to_vec()).collect();
    for d in &with_cookie {
        side.handle(t0, addr(BROWSER), &mut d.clone());
    }
    assert!(drain(&mut side).iter().any(|t| t.data.len() > 300), "the server flight");
    let mut flights = 0;
    for _ in 0..50 {
        side.handle(t0, addr(BROWSER), &mut with_cookie[with_cookie.len() - 1].clone());
        flights += drain(&mut side).iter().filter(|t| t.data.len() > 300).count();
    }
    assert_eq!(flights, 7, "one flight per repeat, up to the budget");
}
