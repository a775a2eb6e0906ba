//! DTLS-SRTP handshakes per second per core, server side: the SBC's `SecureSide` (ICE-lite +
//! DTLS server, as toward Chrome) against an rtc-dtls client, both in memory on one thread.
//!
//! Each handshake: a new `SecureSide` (what a call's configure does), one valid STUN check, the
//! full DTLS 1.2 handshake (cookie exchange, ECDHE P-256, ECDSA certificates both ways, the
//! fingerprint check, the SRTP key export), then one SRTP packet each way to prove the keys.
//! The thread's CPU time is measured around every call into the SBC side apart from the time
//! spent in the client, so "server" is the SBC's cost alone and "both" the whole exchange.
//!
//! usage: dtlsbench [handshakes]   (default 2000)
//! Output: key=value lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_dtls::config::ConfigBuilder;
use rtc_dtls::crypto::Certificate;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;
use rtc_stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
use rtc_stun::textattrs::TextAttribute;
use sbc_media::LegSide;
use sbc_media::backend::{DtlsRole, DtlsSpec, Fingerprint, IceCredentials, Security};
use sbc_media::secure::dtls::DtlsIdentity;
use sbc_media::secure::{Received, SecureSide};
use sha2::{Digest, Sha256};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct UseCandidate;
impl Setter for UseCandidate {
    fn add_to(&self, m: &mut Message) -> rtc_shared::error::Result<()> {
        m.add(ATTR_USE_CANDIDATE, &[]);
        Ok(())
    }
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let browser: SocketAddr = "198.51.100.7:50000".parse().unwrap();
    let sbc: SocketAddr = "192.0.2.10:40000".parse().unwrap();
    let identity = Arc::new(DtlsIdentity::generate().expect("identity"));
    let provider = rtc_dtls::crypto_provider::default_provider().unwrap();
    let cert = Certificate::generate_self_signed(vec!["browser".into()], provider.crypto()).unwrap();
    let fp = Fingerprint {
        algorithm: "sha-256".into(),
        digest: Sha256::digest(cert.certificate[0].as_ref()).to_vec(),
    };
    let client = Arc::new(
        ConfigBuilder::default()
            .with_crypto_provider(Arc::clone(&provider))
            .with_certificates(vec![cert])
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
                SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            ])
            .with_insecure_skip_verify(true)
            .build(true, None)
            .unwrap(),
    );
    let creds = IceCredentials {
        local_ufrag: "sbcU".into(),
        local_pwd: "sbc-password-0123456789".into(),
        remote_ufrag: "brwsr".into(),
        remote_pwd: "browser-password-98765".into(),
    };
    let security = Security::Dtls(DtlsSpec {
        role: DtlsRole::Server,
        remote_fingerprints: vec![fp],
        ice: Some(creds),
    });
    let check = {
        let mut m = Message::new();
        m.build(&[
            Box::new(TransactionId::new()),
            Box::new(BINDING_REQUEST),
            Box::new(TextAttribute::new(ATTR_USERNAME, "sbcU:brwsr".into())),
            Box::new(UseCandidate),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                "sbc-password-0123456789".into(),
                provider.crypto(),
            )),
            Box::new(FINGERPRINT),
        ])
        .unwrap();
        m.raw
    };

    let mut server_cpu = Duration::ZERO;
    let mut datagrams = 0u64;
    let wall = Instant::now();
    let cpu0 = thread_cpu();
    for _ in 0..n {
        let now = Instant::now();
        let t = thread_cpu();
        let mut side = SecureSide::new(now, LegSide::A, &security, &identity, None).unwrap();
        let r = side.handle(now, browser, &mut check.clone());
        assert_eq!(r, Received::Control);
        while side.poll_transmit().is_some() {}
        server_cpu += thread_cpu() - t;

        let mut peer = Endpoint::new(browser, TransportProtocol::UDP, None);
        peer.connect(now, sbc, Arc::clone(&client), None).unwrap();
        let mut done = false;
        for _ in 0..16 {
            let out: Vec<_> = std::iter::from_fn(|| peer.poll_transmit()).collect();
            let t = thread_cpu();
            let mut back = Vec::new();
            for d in out {
                datagrams += 1;
                side.handle(now, browser, &mut d.message.to_vec());
                back.extend(std::iter::from_fn(|| side.poll_transmit()));
            }
            server_cpu += thread_cpu() - t;
            if back.is_empty() && done {
                break;
            }
            for d in back {
                datagrams += 1;
                let ev = peer.read(now, sbc, None, BytesMut::from(&d.data[..])).unwrap();
                done |= ev.iter().any(|e| matches!(e, EndpointEvent::HandshakeComplete));
            }
        }
        assert!(done && side.is_ready(), "handshake incomplete: {:?}", side.failure());
        // One packet toward the browser proves the server's keys exist.
        let mut buf = vec![0u8; 2048];
        buf[..12].copy_from_slice(&[0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4]);
        let t = thread_cpu();
        assert!(side.protect(false, &mut buf, 172).is_some());
        drop(side);
        server_cpu += thread_cpu() - t;
    }
    let total_cpu = thread_cpu() - cpu0;
    let wall = wall.elapsed();
    println!("handshakes={n}");
    println!("datagrams_per_handshake={:.1}", datagrams as f64 / n as f64);
    println!("server_cpu_us_per_handshake={:.1}", server_cpu.as_secs_f64() * 1e6 / n as f64);
    println!("server_handshakes_per_core_s={:.0}", n as f64 / server_cpu.as_secs_f64());
    println!("both_ends_cpu_us_per_handshake={:.1}", total_cpu.as_secs_f64() * 1e6 / n as f64);
    println!("both_ends_handshakes_per_core_s={:.0}", n as f64 / total_cpu.as_secs_f64());
    println!("wall_s={:.2}", wall.as_secs_f64());
}
