//! DTLS-SRTP of one side (RFC 5763, RFC 5764) over rtc-dtls's sans-IO endpoint, and the SBC's
//! DTLS identity.
//!
//! The identity is one self-signed ECDSA P-256 certificate made at relay start and shared by all
//! workers (its fingerprint goes into every `a=fingerprint` the SBC writes), with the two
//! handshake configurations built from it once: server and client. The peer's certificate is not
//! checked by a CA chain (WebRTC certificates are self-signed) but, once the handshake is
//! complete, against the `a=fingerprint` of its SDP; only then are SRTP keys exported. A
//! mismatch leaves the side without keys, so no media passes at all.
//!
//! rtc-dtls keys its associations by remote address; a side has exactly one association, and
//! ICE may move the peer to another address, so the endpoint always sees one fixed placeholder
//! address and the side decides where datagrams really go.

use std::collections::VecDeque;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::crypto_provider::RTCCryptoProvider;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::srtp::SrtpPair;
use crate::backend::{DtlsRole, Fingerprint, SrtpProfile};

/// How long a handshake may take from its start (first ClientHello sent or received) before
/// the side gives up. rtc-dtls gives up on its own after 7 retransmissions (1 s, doubling).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// RFC 5764 §4.2 exporter label.
const EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// The address rtc-dtls is told the peer has (TEST-NET-1, RFC 5737): see the module docs.
const PLACEHOLDER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 9);

/// Why the SBC's DTLS identity could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError(String);

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DTLS identity: {}", self.0)
    }
}

impl std::error::Error for IdentityError {}

/// The SBC's DTLS certificate and handshake configurations. Shared (`Arc`) by all workers.
pub struct DtlsIdentity {
    provider: Arc<dyn RTCCryptoProvider>,
    fingerprint: String,
    server: Arc<HandshakeConfig>,
    client: Arc<HandshakeConfig>,
}

impl DtlsIdentity {
    /// Generates a fresh self-signed ECDSA P-256 certificate (rcgen's default key type).
    pub fn generate() -> Result<DtlsIdentity, IdentityError> {
        let err = |e: &dyn fmt::Display| IdentityError(e.to_string());
        let provider = rtc_dtls::crypto_provider::default_provider().map_err(|e| err(&e))?;
        let cert = Certificate::generate_self_signed(vec!["sbc".to_owned()], provider.crypto())
            .map_err(|e| err(&e))?;
        let der = cert.certificate.first().ok_or_else(|| IdentityError("no certificate".into()))?;
        let fingerprint = format!("sha-256 {}", hex_colon(&Sha256::digest(der.as_ref())));
        let config = |is_client: bool| -> Result<Arc<HandshakeConfig>, IdentityError> {
            let builder = ConfigBuilder::default()
                .with_crypto_provider(Arc::clone(&provider))
                .with_certificates(vec![cert.clone()])
                // Chrome offers these three (LAB-NOTES); _32 for SIP endpoints that prefer it.
                .with_srtp_protection_profiles(vec![
                    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
                    SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                    SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
                    SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32,
                ])
                .with_extended_master_secret(ExtendedMasterSecretType::Request)
                // Certificates are self-signed: the fingerprint check replaces the CA chain
                // (RFC 5763 §5), and the server requires the client's certificate for it.
                .with_insecure_skip_verify(true)
                // Only the client side uses it (SNI; nothing checks it in DTLS-SRTP). Without it
                // rtc-dtls warns at every start and picks "localhost" itself: same value, said once.
                .with_server_name("localhost".to_owned())
                .with_client_auth(if is_client {
                    ClientAuthType::NoClientCert
                } else {
                    ClientAuthType::RequireAnyClientCert
                });
            Ok(Arc::new(builder.build(is_client, None).map_err(|e| err(&e))?))
        };
        Ok(DtlsIdentity { server: config(false)?, client: config(true)?, fingerprint, provider })
    }

    /// The certificate's fingerprint as written in `a=fingerprint`: `sha-256 AB:CD:...`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The crypto provider the certificate and all contexts use.
    pub fn provider(&self) -> &Arc<dyn RTCCryptoProvider> {
        &self.provider
    }
}

impl fmt::Debug for DtlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// What became of a DTLS datagram or a timer.
#[derive(Debug, PartialEq, Eq)]
pub enum DtlsProgress {
    /// Still handshaking (or connected and nothing new).
    Pending,
    /// The handshake completed and the peer's certificate matched: these are the side's keys.
    Keys(SrtpProfileKeys),
    /// The peer's certificate matched no fingerprint.
    FingerprintMismatch,
    /// The handshake failed (the reason is short static text).
    Failed(&'static str),
}

/// The profile and exported key material of a completed handshake.
#[derive(PartialEq, Eq)]
pub struct SrtpProfileKeys {
    /// The profile negotiated through `use_srtp`.
    pub profile: SrtpProfile,
    /// Key || salt the SBC protects with.
    pub local: Vec<u8>,
    /// Key || salt the peer protects with.
    pub remote: Vec<u8>,
}

impl fmt::Debug for SrtpProfileKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpProfileKeys").field("profile", &self.profile).finish_non_exhaustive()
    }
}

impl SrtpProfileKeys {
    /// The SRTP contexts for these keys.
    pub fn contexts(&self, identity: &DtlsIdentity) -> Option<SrtpPair> {
        SrtpPair::new(self.profile, &self.local, &self.remote, identity.provider.crypto())
    }
}

/// Handshake messages remembered per agent to recognise a peer's retransmission; a handshake
/// has fewer than a dozen messages, more only from a misbehaving peer.
const SEEN_MESSAGES: usize = 32;

/// How many times the agent repeats a flight for repeated messages, as rtc-dtls bounds its
/// own repeats after completion: a peer (ICE-checked, but unauthenticated until the handshake
/// ends) cannot make it send flights without limit.
const MAX_REPEATS: u8 = 7;

/// The DTLS association of one side. Owned by the media worker of its pair.
///
/// Retransmission repair. rtc-dtls 0.21 answers a peer's repeated flight only once its own
/// handshake is complete. Before that, a handshake record that does not complete the flight it
/// waits for (such as the ClientHello a browser repeats because the SBC's ServerHello flight
/// was lost) disarms its retransmission timer and is answered with nothing: both ends then
/// wait for each other until the handshake times out, and the call has no media. One lost
/// datagram in the wrong place was enough (seen with Chrome and 10 % loss). So the agent keeps
/// its last flight, and when a handshake message it has already received arrives again and the
/// endpoint sends nothing, it sends that flight again itself (RFC 6347 §4.2.4).
pub struct DtlsAgent {
    endpoint: Endpoint,
    role: DtlsRole,
    remote_fingerprints: Vec<Fingerprint>,
    /// When the handshake started; `None` before.
    started: Option<Instant>,
    done: bool,
    /// Datagrams to send, taken from the endpoint (or repeated from `last_flight`).
    queue: VecDeque<BytesMut>,
    /// The datagrams of the latest flight the endpoint sent.
    last_flight: Vec<BytesMut>,
    /// Handshake messages received (type, message_seq, fragment offset).
    seen: Vec<(u8, u16, u32)>,
    /// Flights repeated so far for repeated messages.
    repeats: u8,
}

impl DtlsAgent {
    /// An agent in `role` that will accept a peer certificate matching `remote_fingerprints`.
    pub fn new(
        identity: &DtlsIdentity,
        role: DtlsRole,
        remote_fingerprints: &[Fingerprint],
    ) -> DtlsAgent {
        let server = match role {
            DtlsRole::Server => Some(Arc::clone(&identity.server)),
            DtlsRole::Client => None,
        };
        DtlsAgent {
            endpoint: Endpoint::new(PLACEHOLDER, TransportProtocol::UDP, server),
            role,
            remote_fingerprints: remote_fingerprints.to_vec(),
            started: None,
            done: false,
            queue: VecDeque::new(),
            last_flight: Vec::new(),
            seen: Vec::new(),
            repeats: 0,
        }
    }

    /// The SBC's role.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// Has the handshake started (or finished)?
    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    /// Client role: sends the ClientHello (drain [`DtlsAgent::poll_transmit`]). No-op for a
    /// server or once started.
    pub fn connect(&mut self, now: Instant, identity: &DtlsIdentity) -> DtlsProgress {
        if self.role != DtlsRole::Client || self.started.is_some() {
            return DtlsProgress::Pending;
        }
        self.started = Some(now);
        let started = self.endpoint.connect(now, PLACEHOLDER, Arc::clone(&identity.client), None);
        self.take_transmits();
        match started {
            Ok(()) => DtlsProgress::Pending,
            Err(_) => DtlsProgress::Failed("cannot start the handshake"),
        }
    }

    /// Feeds one DTLS datagram from the peer.
    pub fn handle_datagram(&mut self, now: Instant, data: &[u8]) -> DtlsProgress {
        if self.role == DtlsRole::Client && self.started.is_none() {
            // A client that has not sent its ClientHello expects nothing.
            return DtlsProgress::Pending;
        }
        self.started.get_or_insert(now);
        let repeated = self.note_handshake_message(data);
        let read = self.endpoint.read(now, PLACEHOLDER, None, BytesMut::from(data));
        let answered = self.take_transmits();
        if repeated && !answered && !self.done && self.repeats < MAX_REPEATS {
            // See the type docs: the peer repeats its flight because ours was lost.
            self.repeats += 1;
            self.queue.extend(self.last_flight.iter().cloned());
        }
        let events = match read {
            Ok(events) => events,
            // A record that does not parse or authenticate is dropped (RFC 6347 §4.1.2.7);
            // a fatal handshake error shows up as the retransmission timer giving up.
            Err(_) => return DtlsProgress::Pending,
        };
        let completed = events.iter().any(|e| matches!(e, EndpointEvent::HandshakeComplete));
        if completed && !self.done {
            self.done = true;
            return self.keys();
        }
        DtlsProgress::Pending
    }

    /// When [`DtlsAgent::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let retransmit = self.endpoint.poll_timeout(&PLACEHOLDER);
        let give_up = self.started.map(|t| t + HANDSHAKE_TIMEOUT);
        match (retransmit, give_up) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Retransmits a flight when due; fails the handshake when it took too long.
    pub fn handle_timeout(&mut self, now: Instant) -> DtlsProgress {
        if self.done {
            return DtlsProgress::Pending;
        }
        if self.started.is_some_and(|t| now >= t + HANDSHAKE_TIMEOUT) {
            return DtlsProgress::Failed("handshake timed out");
        }
        let result = self.endpoint.handle_timeout(PLACEHOLDER, now);
        self.take_transmits();
        match result {
            // No association yet (a server before its ClientHello): nothing to retransmit.
            Ok(()) | Err(rtc_shared::error::Error::InvalidRemoteAddress(_)) => {
                DtlsProgress::Pending
            }
            Err(_) => DtlsProgress::Failed("handshake retransmissions exhausted"),
        }
    }

    /// The next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<BytesMut> {
        self.take_transmits();
        self.queue.pop_front()
    }

    /// Moves what the endpoint has to send into the queue; what it sent in one go is the
    /// latest flight. Returns whether there was anything.
    fn take_transmits(&mut self) -> bool {
        let mut flight = Vec::new();
        while let Some(t) = self.endpoint.poll_transmit() {
            flight.push(t.message);
        }
        if flight.is_empty() {
            return false;
        }
        if !self.done {
            self.last_flight = flight.clone();
        }
        self.queue.extend(flight);
        true
    }

    /// Remembers the handshake message that starts `data` (plaintext epoch-0 handshake records
    /// only; later ones are encrypted) and tells whether it was received before.
    fn note_handshake_message(&mut self, data: &[u8]) -> bool {
        let Some(key) = handshake_message_key(data) else { return false };
        if self.seen.contains(&key) {
            return true;
        }
        if self.seen.len() < SEEN_MESSAGES {
            self.seen.push(key);
        }
        false
    }

    /// After the handshake: the fingerprint check, then the key export (RFC 5764 §4.2).
    fn keys(&self) -> DtlsProgress {
        let Some(state) = self.endpoint.get_connection_state(PLACEHOLDER) else {
            return DtlsProgress::Failed("no DTLS state");
        };
        let Some(cert) = state.peer_certificates.first() else {
            return DtlsProgress::FingerprintMismatch;
        };
        if !self.remote_fingerprints.iter().any(|f| matches_fingerprint(f, cert)) {
            return DtlsProgress::FingerprintMismatch;
        }
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => SrtpProfile::Aes128CmHmacSha1_80,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_32 => SrtpProfile::Aes128CmHmacSha1_32,
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => SrtpProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => SrtpProfile::AeadAes256Gcm,
            _ => return DtlsProgress::Failed("no SRTP profile"),
        };
        let p = super::srtp::protection_profile(profile);
        let (key, salt) = (p.key_len(), p.salt_len());
        let Ok(material) = state.export_keying_material(EXPORTER_LABEL, &[], 2 * (key + salt))
        else {
            return DtlsProgress::Failed("key export failed");
        };
        let m: &[u8] = material.as_ref();
        // RFC 5764 §4.2: client key, server key, client salt, server salt.
        let (Some(ck), Some(sk), Some(cs), Some(ss)) = (
            m.get(..key),
            m.get(key..2 * key),
            m.get(2 * key..2 * key + salt),
            m.get(2 * key + salt..2 * (key + salt)),
        ) else {
            return DtlsProgress::Failed("key export failed");
        };
        let client = [ck, cs].concat();
        let server = [sk, ss].concat();
        let (local, remote) = match self.role {
            DtlsRole::Client => (client, server),
            DtlsRole::Server => (server, client),
        };
        DtlsProgress::Keys(SrtpProfileKeys { profile, local, remote })
    }
}

/// The first record of a datagram, when it is a plaintext (epoch 0) handshake fragment (RFC 6347
/// §4.1, §4.2.2): its message type, message_seq and fragment offset, which a retransmission
/// repeats (the record sequence number does not).
fn handshake_message_key(data: &[u8]) -> Option<(u8, u16, u32)> {
    const HANDSHAKE: u8 = 22;
    let header = data.get(..25)?;
    if header[0] != HANDSHAKE || header[3..5] != [0, 0] {
        return None;
    }
    let offset = u32::from_be_bytes([0, header[19], header[20], header[21]]);
    Some((header[13], u16::from_be_bytes([header[17], header[18]]), offset))
}

/// Does `cert` (DER) hash to `f`? sha-256, sha-384 and sha-512 are known (RFC 8122 §5 names
/// sha-256 as the one to support); other algorithms never match.
pub fn matches_fingerprint(f: &Fingerprint, cert: &[u8]) -> bool {
    match f.algorithm.to_ascii_lowercase().as_str() {
        "sha-256" => Sha256::digest(cert).as_slice() == f.digest.as_slice(),
        "sha-384" => Sha384::digest(cert).as_slice() == f.digest.as_slice(),
        "sha-512" => Sha512::digest(cert).as_slice() == f.digest.as_slice(),
        _ => false,
    }
}

/// `AB:CD:...`, upper case, as in `a=fingerprint` (RFC 8122 §5).
pub fn hex_colon(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}
