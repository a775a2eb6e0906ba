//! Media transport profiles: what each leg speaks (plain RTP, SDES-SRTP, or WebRTC's ICE-lite +
//! DTLS-SRTP), and the conversion of SDP between them. Pure functions over the SDP model; the
//! per-call state lives in [`crate::MediaPlane`].
//!
//! The SBC terminates media security on each leg: it never passes `a=crypto`, `a=fingerprint`
//! or ICE credentials from one leg to the other. Instead it reads the peer's (RFC 4568
//! `a=crypto`, RFC 8122 `a=fingerprint`, RFC 5763 `a=setup`, RFC 8839 `a=ice-ufrag`/`a=ice-pwd`
//! and candidates) into a [`Security`] for the relay, and writes its own toward that peer:
//! - toward a [`MediaProfile::Rtp`] leg: `RTP/AVP`, and nothing WebRTC-only (`a=mid`, `a=extmap`,
//!   `a=ssrc`, `a=msid`, `a=rtcp-fb`, ...) when the other leg was WebRTC;
//! - toward a [`MediaProfile::Sdes`] leg: `RTP/SAVP` with the SBC's own `a=crypto` lines (a fresh
//!   master key and salt per call and side);
//! - toward a [`MediaProfile::Webrtc`] leg: `UDP/TLS/RTP/SAVPF`, session-level `a=ice-lite`, the
//!   SBC's ICE credentials and one host candidate, its certificate fingerprint, `a=setup`,
//!   `a=rtcp-mux`, and BUNDLE of the one audio stream (RFC 8843).
//!
//! A leg's profile says what the SBC offers toward it, and the least it accepts from it: an `sdes`
//! leg must offer or answer usable `a=crypto`, a `webrtc` leg DTLS. What a peer offers beyond its
//! profile (an SDES phone on an `rtp` listener, a browser on an `rtp` listener) is accepted when
//! the SBC can terminate it, and answered in kind (RFC 3264: the answer keeps the offer's
//! transport protocol).

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::Rng;

use crate::backend::{
    DtlsRole, DtlsSpec, Fingerprint, IceCredentials, SdesKeys, Security, SrtpProfile,
};
use crate::negotiate::NegotiateError;
use crate::sdp::{Attribute, Direction, Media, Sdp};

/// What a leg speaks (`media.profile` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MediaProfile {
    /// Plain RTP (`RTP/AVP`): SIP trunks and most phones.
    #[default]
    Rtp,
    /// SRTP keyed in the SDP (`RTP/SAVP` with `a=crypto`, RFC 4568).
    Sdes,
    /// Browsers: `UDP/TLS/RTP/SAVPF`, ICE-lite, DTLS-SRTP, rtcp-mux, BUNDLE of one audio stream.
    Webrtc,
}

impl MediaProfile {
    /// The profile named in the config (`rtp`, `sdes`, `webrtc`; case-insensitive).
    pub fn from_name(name: &str) -> Option<MediaProfile> {
        [MediaProfile::Rtp, MediaProfile::Sdes, MediaProfile::Webrtc]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaProfile::Rtp => "rtp",
            MediaProfile::Sdes => "sdes",
            MediaProfile::Webrtc => "webrtc",
        }
    }
}

/// The SDES suites offered when a leg's profile lists none, strongest first among those every SDES
/// phone knows (RFC 4568 §6.2).
pub const DEFAULT_SDES_SUITES: [SrtpProfile; 2] =
    [SrtpProfile::Aes128CmHmacSha1_80, SrtpProfile::Aes128CmHmacSha1_32];

/// The `a=crypto` name of a suite (RFC 4568 §6.2, RFC 7714 §14.2).
pub fn suite_name(suite: SrtpProfile) -> &'static str {
    match suite {
        SrtpProfile::Aes128CmHmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
        SrtpProfile::Aes128CmHmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        SrtpProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
        SrtpProfile::AeadAes256Gcm => "AEAD_AES_256_GCM",
    }
}

/// The suite an `a=crypto` name stands for (case-insensitive).
pub fn suite_from_name(name: &str) -> Option<SrtpProfile> {
    [
        SrtpProfile::Aes128CmHmacSha1_80,
        SrtpProfile::Aes128CmHmacSha1_32,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm,
    ]
    .into_iter()
    .find(|s| suite_name(*s).eq_ignore_ascii_case(name))
}

/// Master key plus master salt length of a suite, the size of the `inline:` value.
fn key_len(suite: SrtpProfile) -> usize {
    match suite {
        // 128-bit key, 112-bit salt (RFC 3711 §8.2).
        SrtpProfile::Aes128CmHmacSha1_80 | SrtpProfile::Aes128CmHmacSha1_32 => 30,
        // 96-bit salt for GCM (RFC 7714 §8.2).
        SrtpProfile::AeadAes128Gcm => 28,
        SrtpProfile::AeadAes256Gcm => 44,
    }
}

/// One usable `a=crypto` line.
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoLine {
    /// The tag the answer repeats.
    pub tag: u32,
    /// The suite.
    pub suite: SrtpProfile,
    /// Master key followed by master salt.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for CryptoLine {
    /// Key material never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoLine").field("tag", &self.tag).field("suite", &self.suite).finish()
    }
}

impl CryptoLine {
    /// A fresh line with a random key.
    pub fn generate(tag: u32, suite: SrtpProfile, rng: &mut impl Rng) -> CryptoLine {
        let mut key = vec![0u8; key_len(suite)];
        rng.fill(&mut key[..]);
        CryptoLine { tag, suite, key }
    }

    /// Parses an `a=crypto` value. Lines the relay cannot use give `None`: an unknown suite, a
    /// key of the wrong length, an MKI or several keys (RFC 4568 §6.1 key lists), session
    /// parameters such as `UNENCRYPTED_SRTP`.
    pub fn parse(value: &str) -> Option<CryptoLine> {
        let mut f = value.split_ascii_whitespace();
        let tag: u32 = f.next()?.parse().ok()?;
        let suite = suite_from_name(f.next()?)?;
        let params = f.next()?;
        if f.next().is_some() || params.contains(';') {
            return None;
        }
        let inline = params.strip_prefix("inline:")?;
        let mut parts = inline.split('|');
        let key = BASE64.decode(parts.next()?).ok()?;
        // A lifetime (`|2^31`) is harmless; an MKI (`|1:4`, with a colon) is not supported.
        if parts.any(|p| p.contains(':')) || key.len() != key_len(suite) {
            return None;
        }
        Some(CryptoLine { tag, suite, key })
    }

    /// The `a=crypto` attribute.
    pub fn attribute(&self) -> Attribute {
        let value =
            format!("{} {} inline:{}", self.tag, suite_name(self.suite), BASE64.encode(&self.key));
        Attribute::new("crypto", value)
    }
}

/// The DTLS setup role a description states (RFC 4145 §4, RFC 5763 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// `active`: the writer sends the ClientHello.
    Active,
    /// `passive`: the writer waits for it.
    Passive,
    /// `actpass`: either (offers only).
    ActPass,
    /// `holdconn`: no connection now.
    HoldConn,
}

impl Setup {
    fn parse(value: &str) -> Option<Setup> {
        match value.trim().to_ascii_lowercase().as_str() {
            "active" => Some(Setup::Active),
            "passive" => Some(Setup::Passive),
            "actpass" => Some(Setup::ActPass),
            "holdconn" => Some(Setup::HoldConn),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }
}

/// What a peer's description says about DTLS and ICE on one m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDtls {
    /// `a=setup` (RFC 4145 §4: `active` when absent).
    pub setup: Setup,
    /// The usable `a=fingerprint` lines, media level or else session level.
    pub fingerprints: Vec<Fingerprint>,
    /// `a=ice-ufrag` and `a=ice-pwd`, media level or else session level.
    pub ice: Option<(String, String)>,
    /// The first host UDP candidate of component 1 (where the peer most likely is; ICE decides).
    pub candidate: Option<SocketAddr>,
    /// `a=mid`.
    pub mid: Option<String>,
    /// The mid is in an `a=group:BUNDLE`.
    pub bundled: bool,
}

/// How a peer protects one m-line, as its SDP says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSecurity {
    /// Plain RTP.
    Plain,
    /// SDES: its usable `a=crypto` lines, in its order (may be empty: then nothing is usable).
    Sdes(Vec<CryptoLine>),
    /// DTLS-SRTP (with ICE if credentials are present).
    Dtls(PeerDtls),
}

/// Reads how the writer of `sdp` protects media `index`. DTLS when the protocol names TLS or a
/// fingerprint is present; SDES for a secure RTP profile (`SAVP`) or `a=crypto` lines (best-effort
/// SRTP phones offer `RTP/AVP` with `a=crypto`); else plain.
pub fn peer_security(sdp: &Sdp, index: usize) -> PeerSecurity {
    let Some(m) = sdp.media.get(index) else {
        return PeerSecurity::Plain;
    };
    // RFC 8839 §5.4, RFC 8122 §5: media level wins over session level.
    let level = |name: &'static str| -> Vec<&str> {
        let own: Vec<&str> = values(&m.attributes, name).collect();
        if own.is_empty() { values(&sdp.attributes, name).collect() } else { own }
    };
    let fingerprints: Vec<Fingerprint> =
        level("fingerprint").into_iter().filter_map(parse_fingerprint).collect();
    let dtls = m.proto.to_ascii_uppercase().contains("TLS") || !level("fingerprint").is_empty();
    if dtls {
        let setup = level("setup").first().and_then(|v| Setup::parse(v)).unwrap_or(Setup::Active);
        let ufrag = level("ice-ufrag").first().map(|v| v.trim().to_owned());
        let pwd = level("ice-pwd").first().map(|v| v.trim().to_owned());
        let ice = ufrag.zip(pwd).filter(|(u, p)| !u.is_empty() && !p.is_empty());
        let mid = m.attribute("mid").and_then(|a| a.value.as_deref()).map(|v| v.trim().to_owned());
        let bundled = mid.as_deref().is_some_and(|mid| {
            values(&sdp.attributes, "group").any(|g| {
                let mut f = g.split_ascii_whitespace();
                f.next().is_some_and(|s| s.eq_ignore_ascii_case("BUNDLE")) && f.any(|t| t == mid)
            })
        });
        let candidate = values(&m.attributes, "candidate").find_map(host_candidate);
        return PeerSecurity::Dtls(PeerDtls { setup, fingerprints, ice, candidate, mid, bundled });
    }
    let crypto: Vec<&str> = values(&m.attributes, "crypto").collect();
    if m.proto.to_ascii_uppercase().contains("SAVP") || !crypto.is_empty() {
        return PeerSecurity::Sdes(crypto.into_iter().filter_map(CryptoLine::parse).collect());
    }
    PeerSecurity::Plain
}

fn values<'a>(attributes: &'a [Attribute], name: &'static str) -> impl Iterator<Item = &'a str> {
    attributes.iter().filter(move |a| a.is(name)).filter_map(|a| a.value.as_deref())
}

/// `sha-256 AB:CD:...` (RFC 8122 §5); `None` when the digest is not hex pairs.
pub fn parse_fingerprint(value: &str) -> Option<Fingerprint> {
    let (algorithm, digest) = value.trim().split_once(' ')?;
    let digest = digest
        .trim()
        .split(':')
        .map(|pair| if pair.len() == 2 { u8::from_str_radix(pair, 16).ok() } else { None })
        .collect::<Option<Vec<u8>>>()?;
    if algorithm.is_empty() || digest.is_empty() {
        return None;
    }
    Some(Fingerprint { algorithm: algorithm.to_ascii_lowercase(), digest })
}

/// The address of an `a=candidate` value if it is a host UDP candidate of component 1 (RFC 8839
/// §5.1: `foundation component transport priority address port typ type ...`).
fn host_candidate(value: &str) -> Option<SocketAddr> {
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    let [_, component, transport, _, address, port, typ, kind, ..] = f[..] else {
        return None;
    };
    if component != "1" || !transport.eq_ignore_ascii_case("udp") || typ != "typ" || kind != "host"
    {
        return None;
    }
    let ip: IpAddr = address.parse().ok()?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    Some(SocketAddr::new(ip, port))
}

/// What the SBC uses toward one side, once negotiated (or decided for its answer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Wire {
    /// Plain RTP.
    #[default]
    Plain,
    /// SDES-SRTP; `tag` is the `a=crypto` tag of the agreed line.
    Sdes {
        /// The agreed line's tag.
        tag: u32,
        /// The keys of both directions.
        keys: SdesKeys,
    },
    /// DTLS-SRTP, with ICE-lite when `ice` is set.
    Dtls(DtlsSpec),
}

impl Wire {
    /// The relay's view of it.
    pub fn security(&self) -> Security {
        match self {
            Wire::Plain => Security::Plain,
            Wire::Sdes { keys, .. } => Security::Sdes(keys.clone()),
            Wire::Dtls(spec) => Security::Dtls(spec.clone()),
        }
    }

    /// Whether media toward this side is protected.
    pub fn is_secure(&self) -> bool {
        !matches!(self, Wire::Plain)
    }
}

/// The security state of one side of a call: what was agreed, and what the SBC keeps stable
/// across re-offers (RFC 8839 §4.4.1.1: the same ICE credentials unless ICE restarts; RFC 8842
/// §5: the same DTLS association unless the fingerprint changes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SideSecurity {
    /// What the SBC uses toward this side.
    pub wire: Wire,
    /// The SBC's ICE ufrag and password toward this side.
    pub local_ice: Option<(String, String)>,
    /// The SBC's `a=crypto` lines in its offers toward this side.
    pub offered_crypto: Vec<CryptoLine>,
    /// The mid and BUNDLE flag of the secured line, to echo in answers toward a WebRTC peer.
    pub mid: Option<(String, bool)>,
}

impl SideSecurity {
    /// The SBC's ICE credentials, made on first use: an 8-character ufrag and a 24-character
    /// password of `ice-char`s (RFC 8839 §5.4: at least 4 and 22).
    fn ice_credentials(&mut self, rng: &mut impl Rng) -> (String, String) {
        self.local_ice.get_or_insert_with(|| (ice_string(rng, 8), ice_string(rng, 24))).clone()
    }

    /// Decides how the SBC answers an offer from this side (`offer`'s m-line `index`) under the
    /// side's profile and returns the new state. `fingerprint` is the SBC's own
    /// (`backend.dtls_fingerprint()`). Errors: the offer does not meet the profile, or asks for
    /// what the SBC cannot do.
    pub fn for_offer(
        &self,
        offer: &Sdp,
        index: usize,
        profile: MediaProfile,
        suites: &[SrtpProfile],
        fingerprint: Option<&str>,
        rng: &mut impl Rng,
    ) -> Result<SideSecurity, NegotiateError> {
        let mut next = self.clone();
        match (peer_security(offer, index), profile) {
            (PeerSecurity::Dtls(peer), _) => {
                if fingerprint.is_none() {
                    return Err(NegotiateError::BadSdp("DTLS-SRTP not available"));
                }
                if peer.fingerprints.is_empty() {
                    return Err(NegotiateError::BadSdp("no usable a=fingerprint"));
                }
                let role = match peer.setup {
                    // RFC 5763 §5 lets the answerer to actpass take either role. An ICE-lite
                    // SBC never sends checks, so it cannot know the browser's address before the
                    // browser's first check: it takes the server role, and the browser sends its
                    // ClientHello right after that check (verified with Chrome, LAB-NOTES).
                    Setup::ActPass | Setup::Active => DtlsRole::Server,
                    Setup::Passive => DtlsRole::Client,
                    Setup::HoldConn => return Err(NegotiateError::BadSdp("a=setup:holdconn")),
                };
                let old = match &self.wire {
                    Wire::Dtls(old) => Some(old),
                    _ => None,
                };
                let old_remote_ufrag = old.and_then(|o| o.ice.as_ref()).map(|i| &i.remote_ufrag);
                let restart = peer.ice.as_ref().map(|(u, _)| u) != old_remote_ufrag;
                if restart && old.is_some() {
                    // ICE restart (RFC 8445 §9): new credentials on both ends.
                    next.local_ice = None;
                }
                // A re-offer on the same association keeps the agreed role (RFC 8842 §5.3).
                let same_association =
                    old.is_some_and(|o| o.remote_fingerprints == peer.fingerprints);
                let role = match old {
                    Some(o) if same_association && peer.setup == Setup::ActPass => o.role,
                    _ => role,
                };
                let ice = match &peer.ice {
                    Some((ufrag, pwd)) => {
                        let (local_ufrag, local_pwd) = next.ice_credentials(rng);
                        Some(IceCredentials {
                            local_ufrag,
                            local_pwd,
                            remote_ufrag: ufrag.clone(),
                            remote_pwd: pwd.clone(),
                        })
                    }
                    None => None,
                };
                next.mid = peer.mid.clone().map(|mid| (mid, peer.bundled));
                next.wire =
                    Wire::Dtls(DtlsSpec { role, remote_fingerprints: peer.fingerprints, ice });
            }
            (_, MediaProfile::Webrtc) => {
                return Err(NegotiateError::BadSdp("WebRTC leg without DTLS-SRTP"));
            }
            (PeerSecurity::Sdes(lines), _) => {
                let suites = if suites.is_empty() { &DEFAULT_SDES_SUITES[..] } else { suites };
                let Some(theirs) = lines.into_iter().find(|l| suites.contains(&l.suite)) else {
                    return Err(NegotiateError::BadSdp("no usable a=crypto"));
                };
                // A re-offer with the same suite keeps the SBC's key (RFC 4568 §7.1.4 allows a
                // new one; keeping it avoids a gap while the peer switches).
                let local = match &self.wire {
                    Wire::Sdes { keys, .. } if keys.profile == theirs.suite => keys.local.clone(),
                    _ => CryptoLine::generate(theirs.tag, theirs.suite, rng).key,
                };
                next.mid = None;
                next.wire = Wire::Sdes {
                    tag: theirs.tag,
                    keys: SdesKeys { profile: theirs.suite, local, remote: theirs.key },
                };
            }
            (PeerSecurity::Plain, MediaProfile::Sdes) => {
                return Err(NegotiateError::BadSdp("SRTP required (no a=crypto)"));
            }
            (PeerSecurity::Plain, MediaProfile::Rtp) => {
                next.mid = None;
                next.wire = Wire::Plain;
            }
        }
        Ok(next)
    }

    /// Prepares the SBC's offer toward this side: makes its ICE credentials or `a=crypto` lines
    /// (kept from earlier offers to the same peer).
    pub fn for_sending_offer(
        &self,
        profile: MediaProfile,
        suites: &[SrtpProfile],
        rng: &mut impl Rng,
    ) -> SideSecurity {
        let mut next = self.clone();
        match profile {
            MediaProfile::Rtp => {}
            MediaProfile::Sdes => {
                let suites = if suites.is_empty() { &DEFAULT_SDES_SUITES[..] } else { suites };
                let same = next.offered_crypto.iter().map(|l| l.suite).eq(suites.iter().copied());
                if !same {
                    next.offered_crypto = suites
                        .iter()
                        .zip(1u32..)
                        .map(|(suite, tag)| CryptoLine::generate(tag, *suite, rng))
                        .collect();
                }
            }
            MediaProfile::Webrtc => {
                next.ice_credentials(rng);
            }
        }
        next
    }

    /// Reads this side's answer to the SBC's offer (prepared by
    /// [`SideSecurity::for_sending_offer`]) and returns the agreed state.
    pub fn for_answer(
        &self,
        answer: &Sdp,
        index: usize,
        profile: MediaProfile,
    ) -> Result<SideSecurity, NegotiateError> {
        let mut next = self.clone();
        match (profile, peer_security(answer, index)) {
            (MediaProfile::Webrtc, PeerSecurity::Dtls(peer)) => {
                if peer.fingerprints.is_empty() {
                    return Err(NegotiateError::BadSdp("no usable a=fingerprint"));
                }
                let role = match peer.setup {
                    Setup::Active => DtlsRole::Server,
                    Setup::Passive => DtlsRole::Client,
                    Setup::ActPass | Setup::HoldConn => {
                        return Err(NegotiateError::BadSdp("a=setup in the answer"));
                    }
                };
                let ice = match (peer.ice, &self.local_ice) {
                    (Some((remote_ufrag, remote_pwd)), Some((local_ufrag, local_pwd))) => {
                        Some(IceCredentials {
                            local_ufrag: local_ufrag.clone(),
                            local_pwd: local_pwd.clone(),
                            remote_ufrag,
                            remote_pwd,
                        })
                    }
                    _ => None,
                };
                next.wire =
                    Wire::Dtls(DtlsSpec { role, remote_fingerprints: peer.fingerprints, ice });
            }
            (MediaProfile::Webrtc, _) => {
                return Err(NegotiateError::BadSdp("WebRTC answer without DTLS-SRTP"));
            }
            (MediaProfile::Sdes, PeerSecurity::Sdes(lines)) => {
                // RFC 4568 §6.1: one line, with the tag of the offered line it accepts.
                let agreed = lines.into_iter().find_map(|theirs| {
                    let ours = self
                        .offered_crypto
                        .iter()
                        .find(|o| o.tag == theirs.tag && o.suite == theirs.suite)?;
                    Some((ours.clone(), theirs))
                });
                let Some((ours, theirs)) = agreed else {
                    return Err(NegotiateError::BadSdp("no usable a=crypto"));
                };
                next.wire = Wire::Sdes {
                    tag: ours.tag,
                    keys: SdesKeys { profile: ours.suite, local: ours.key, remote: theirs.key },
                };
            }
            (MediaProfile::Sdes, _) => {
                return Err(NegotiateError::BadSdp("SRTP required (no a=crypto)"));
            }
            // The SBC offered plain RTP: whatever else the answer says is ignored.
            (MediaProfile::Rtp, _) => next.wire = Wire::Plain,
        }
        Ok(next)
    }
}

/// `len` random `ice-char`s (RFC 8839 §5.4: ALPHA / DIGIT / `+` / `/`).
fn ice_string(rng: &mut impl Rng, len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len).map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())])).collect()
}

/// What the SBC writes on one m-line toward a side.
#[derive(Debug, Clone, Copy)]
pub enum Toward<'a> {
    /// Plain RTP, with `proto` (`RTP/AVP` in offers, the offer's protocol in answers).
    Plain {
        /// The `m=` protocol.
        proto: &'a str,
    },
    /// SDES with these lines (several in offers, the agreed one in answers).
    Sdes {
        /// The `m=` protocol.
        proto: &'a str,
        /// The SBC's `a=crypto` lines.
        lines: &'a [CryptoLine],
    },
    /// DTLS-SRTP, with ICE-lite when `ice` is set.
    Dtls {
        /// The `m=` protocol.
        proto: &'a str,
        /// `a=setup` value.
        setup: Setup,
        /// The SBC's certificate fingerprint (`sha-256 AB:...`).
        fingerprint: &'a str,
        /// The SBC's ufrag and password.
        ice: Option<&'a (String, String)>,
        /// `a=mid` to write, and whether it is BUNDLEd.
        mid: Option<(&'a str, bool)>,
        /// The line's direction, written when the line has no direction attribute of its own
        /// (it may come from the session level, which a browser does not read the same way).
        direction: Direction,
    },
}

/// Attributes that describe one end's transport security or WebRTC stream signalling: they never
/// cross the SBC, which writes its own.
const SECURITY_ATTRIBUTES: &[&str] =
    &["crypto", "fingerprint", "setup", "tls-id", "connection", "ice-lite", "rtcp-mux-only"];
/// WebRTC stream signalling that means nothing to a plain SIP peer (RFC 8843 mid, RFC 8285
/// extmap, RFC 5576 ssrc, RFC 8830 msid, RFC 4585 feedback of AVPF).
const WEBRTC_ATTRIBUTES: &[&str] = &[
    "mid",
    "extmap",
    "extmap-allow-mixed",
    "msid",
    "msid-semantic",
    "ssrc",
    "ssrc-group",
    "rtcp-fb",
    "rtcp-rsize",
    "rid",
    "simulcast",
];

/// Whether a protocol is a WebRTC (feedback) one, whose attributes a plain peer does not need.
pub(crate) fn is_webrtc_proto(proto: &str) -> bool {
    let p = proto.to_ascii_uppercase();
    p.contains("TLS") || p.ends_with("AVPF")
}

/// An attribute of the other end's security, or (with `strip_webrtc`) of its WebRTC stream
/// signalling: not for the side the SBC writes to.
fn is_foreign(a: &Attribute, strip_webrtc: bool) -> bool {
    SECURITY_ATTRIBUTES.iter().any(|n| a.is(n))
        || (strip_webrtc && WEBRTC_ATTRIBUTES.iter().any(|n| a.is(n)))
}

/// Rewrites the session level of a description the SBC sends toward a side: the other end's
/// security attributes go; `a=ice-lite` and `a=group:BUNDLE` come when the side is WebRTC.
pub fn write_session(sdp: &mut Sdp, ice_lite: bool, bundle_mid: Option<&str>, strip_webrtc: bool) {
    sdp.attributes.retain(|a| {
        !is_foreign(a, strip_webrtc) && !(a.is("group") && (strip_webrtc || bundle_mid.is_some()))
    });
    if ice_lite {
        sdp.attributes.insert(0, Attribute::flag("ice-lite"));
    }
    if let Some(mid) = bundle_mid {
        sdp.attributes.insert(0, Attribute::new("group", format!("BUNDLE {mid}")));
    }
}

/// Rewrites one m-line the SBC sends toward a side (after [`crate::negotiate::localize`], so the
/// port is the SBC's): the protocol, the other end's security attributes replaced by the SBC's,
/// and WebRTC-only attributes removed when the line came from a WebRTC peer but goes elsewhere.
/// `candidate` is the SBC's address and port on this line.
pub fn write_media(m: &mut Media, toward: &Toward<'_>, candidate: SocketAddr) {
    let proto = match toward {
        Toward::Plain { proto } | Toward::Sdes { proto, .. } | Toward::Dtls { proto, .. } => *proto,
    };
    let strip_webrtc = is_webrtc_proto(&m.proto) && !is_webrtc_proto(proto);
    m.proto = proto.to_owned();
    let dtls = matches!(toward, Toward::Dtls { .. });
    m.attributes
        .retain(|a| !is_foreign(a, strip_webrtc) && !(dtls && (a.is("mid") || a.is("rtcp"))));
    if m.port == 0 {
        // A rejected line still names its mid toward a BUNDLE peer (RFC 8843 §7.3.3).
        return;
    }
    match toward {
        Toward::Plain { .. } => {}
        Toward::Sdes { lines, .. } => {
            let at = first_format_attribute(m);
            for (k, line) in lines.iter().enumerate() {
                m.attributes.insert(at + k, line.attribute());
            }
        }
        Toward::Dtls { setup, fingerprint, ice, mid, direction, .. } => {
            let mut head = Vec::new();
            if let Some((mid, _)) = mid {
                head.push(Attribute::new("mid", (*mid).to_owned()));
            }
            // With rtcp-mux the RTCP port is the RTP port (RFC 5761 §5.1.3).
            head.push(Attribute::new("rtcp", candidate.port().to_string()));
            if let Some((ufrag, pwd)) = ice {
                head.push(Attribute::new("ice-ufrag", ufrag.clone()));
                head.push(Attribute::new("ice-pwd", pwd.clone()));
            }
            head.push(Attribute::new("fingerprint", (*fingerprint).to_owned()));
            head.push(Attribute::new("setup", setup.as_str().to_owned()));
            head.push(Attribute::flag("rtcp-mux"));
            m.attributes.retain(|a| !a.is("rtcp-mux"));
            m.attributes.splice(0..0, head);
            // JSEP peers always state the direction; RFC 3264's default is sendrecv.
            if !m.attributes.iter().any(|a| a.value.is_none() && is_direction(&a.name)) {
                let at = first_format_attribute(m);
                m.attributes.insert(at, Attribute::flag(direction.as_str()));
            }
            if ice.is_some() {
                // ICE-lite: one host candidate, the SBC's own socket (RFC 8445 §5.1.1.4 priority
                // for a host candidate of component 1).
                let value =
                    format!("1 1 udp 2130706431 {} {} typ host", candidate.ip(), candidate.port());
                m.attributes.push(Attribute::new("candidate", value));
                m.attributes.push(Attribute::flag("end-of-candidates"));
            }
        }
    }
}

/// Where a rejected line toward a WebRTC peer keeps its mid.
pub fn write_rejected_mid(m: &mut Media, mid: Option<&str>) {
    if let Some(mid) = mid
        && m.attribute("mid").is_none()
    {
        m.attributes.insert(0, Attribute::new("mid", mid.to_owned()));
    }
}

fn is_direction(name: &str) -> bool {
    Direction::from_attribute(name).is_some()
}

/// Position of the first `rtpmap`/`fmtp`, where `a=crypto` reads well.
fn first_format_attribute(m: &Media) -> usize {
    m.attributes.iter().position(|a| a.is("rtpmap") || a.is("fmtp")).unwrap_or(m.attributes.len())
}

#[cfg(test)]
mod tests;
