//! Typed runtime configuration.
//!
//! The YAML file is read by [`file`](mod@file) into `FileConfig` structs that mirror the file, validated with
//! errors that name the file, line and column, then converted into the types below. The engine and
//! the shells only ever see these types: units live in the types, references between sections are
//! resolved into indices, and every value has already been checked.

pub mod file;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::IpNetwork;
use regex::Regex;
use sbc_media::MediaProfile;
use sbc_media::backend::SrtpProfile;
pub use sbc_media::dtmf::DtmfMode;
use sbc_policy::PolicyConfig;

pub use file::{ConfigError, load, load_str};

/// The whole, validated configuration of one SBC process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Transaction timers (RFC 3261 section 17).
    pub timers: TimerConfig,
    /// Number of signalling engine shards; already resolved (never 0).
    pub shards: usize,
    /// Largest SIP message accepted, in bytes.
    pub max_message_size: usize,
    /// Largest number of header fields accepted in one message.
    pub max_headers: usize,
    /// How long a draining SBC lets calls end naturally before sending BYE.
    pub drain_grace: Duration,
    /// Connection-oriented transport limits.
    pub tcp: TcpConfig,
    /// Listeners, indexed by [`ListenerId`].
    pub listeners: Vec<ListenerConfig>,
    /// Trunks, indexed by [`TrunkId`].
    pub trunks: Vec<TrunkConfig>,
    /// Routes, tried in order; the first that matches wins.
    pub routes: Vec<RouteConfig>,
    /// Media relay settings (`media:`).
    pub media: MediaConfig,
    /// Where Prometheus scrapes `/metrics`, if anywhere (`admin.metrics`).
    pub metrics: Option<SocketAddr>,
    /// PCAP captures and lawful intercept (`capture:`). Its target list prints as a count only.
    pub capture: sbc_cdr::capture::CaptureConfig,
    /// CDR files and their journal (`records:`); without it, records are only logged.
    pub records: Option<sbc_cdr::sink::SinkConfig>,
    /// Edge policy (`policy`, `listeners[].policy`, `trunks[].limits`).
    pub policy: PolicySettings,
    /// Registrations from access listeners (`registrars:`), at most one per listener.
    pub registrars: Vec<RegistrarConfig>,
}

impl Config {
    /// The rules the policy runs with: [`PolicySettings::rules`] with every trunk's sources and
    /// targets added to the global allow list. Trunks are trusted peers: they are never
    /// rate-limited per source nor banned, and a deny list's broader prefix does not shut them
    /// out (the longest prefix decides).
    pub fn policy_rules(&self) -> PolicyConfig {
        let mut rules = self.policy.rules.clone();
        for t in &self.trunks {
            let targets = t.targets.iter().map(|t| IpNetwork::from(t.addr.ip()));
            for net in t.sources.iter().copied().chain(targets) {
                if !rules.access.allow.contains(&net) {
                    rules.access.allow.push(net);
                }
            }
        }
        rules
    }

    /// Connection limits of a listener: its own, else the global `sip.tcp` ones.
    pub fn limits(&self, listener: ListenerId) -> TcpConfig {
        self.listeners.get(listener.0).and_then(|l| l.limits).unwrap_or(self.tcp)
    }

    /// The registrar serving REGISTER on `listener`, if any: its `registrars` entry, else, on
    /// an access listener with a digest realm, a local registrar of the realm's users (domain:
    /// the realm; registrations of up to [`DEFAULT_LOCAL_EXPIRES`]).
    pub fn registrar(&self, listener: ListenerId) -> Option<RegistrarConfig> {
        if let Some(r) = self.registrars.iter().find(|r| r.listener == listener) {
            return Some(r.clone());
        }
        let realm = self.policy.rules.listeners.get(listener.0)?.realm.clone()?;
        let access = self.listeners.get(listener.0)?.side == Side::Access;
        access.then_some(RegistrarConfig {
            listener,
            mode: RegistrarMode::Local { domain: realm },
            client_expires: DEFAULT_LOCAL_EXPIRES,
        })
    }
}

/// Longest registration of the implicit local registrar (see [`Config::registrar`]).
pub const DEFAULT_LOCAL_EXPIRES: Duration = Duration::from_secs(3600);

/// Registrations from one access listener (`registrars[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// The access listener whose REGISTERs this serves.
    pub listener: ListenerId,
    /// Relay to an upstream registrar, or keep the bindings locally.
    pub mode: RegistrarMode,
    /// Longest registration granted to a client: it refreshes at least this often, which keeps
    /// its NAT binding open and lets the SBC see a dead client soon.
    pub client_expires: Duration,
}

/// Where the registrations of a listener go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrarMode {
    /// Each binding is registered upstream with the SBC's own Contact; client refreshes are
    /// answered locally while the upstream registration lasts.
    Relay {
        /// The registrar trunk.
        trunk: TrunkId,
        /// Expiry asked of the upstream registrar.
        upstream_expires: Duration,
    },
    /// The SBC is the registrar: the users of the listener's digest realm, in `domain`.
    Local {
        /// The domain of the addresses of record (`user@domain`).
        domain: String,
    },
}

/// The edge policy: what sbc-policy decides with, and what the shell does around it.
///
/// `Default` is the admit-everything policy of [`PolicyConfig::default`] with no state file and
/// no kernel enforcement (what configs built in code get); the YAML layer fills in its own
/// protective defaults (see `docs/configuration.md`).
#[derive(Debug, Clone, Default)]
pub struct PolicySettings {
    /// The decisions: lists, rates, CAC, offences, bans, digest realms. Listener entries are
    /// indexed like [`Config::listeners`], trunk entries like [`Config::trunks`].
    pub rules: PolicyConfig,
    /// Where the bans are kept across restarts (`policy.bans.state_file`), if anywhere.
    pub ban_file: Option<PathBuf>,
    /// Kernel enforcement of bans (`policy.nftables`), when enabled.
    pub nftables: Option<NftablesConfig>,
}

/// Where bans are pushed in the kernel: an nftables table of family `inet`, holding the set
/// `set` (IPv4 addresses), `set` + `6` (IPv6 /64 prefixes) and a chain dropping their packets
/// to the SBC's SIP ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftablesConfig {
    /// Table name.
    pub table: String,
    /// Base name of the sets.
    pub set: String,
}

/// RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, default 500 ms (RFC 3261 17.1.1.1).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, default 4 s.
    pub t2: Duration,
    /// Maximum duration a message remains in the network, default 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Limits of accepted connections (TCP, TLS, WS, WSS): globally in `sip.tcp`, per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Accepted connections per listener beyond which new ones are refused.
    pub max_connections: usize,
}

/// Index of a listener in [`Config::listeners`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub usize);

/// Index of a trunk in [`Config::trunks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrunkId(pub usize);

/// Which side of the network a listener faces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Untrusted access: phones, browsers.
    Access,
    /// Carriers and PBXs: requests are accepted only from a trunk's `sources`.
    Trunk,
}

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// RFC 3261 over UDP.
    Udp,
    /// RFC 3261 over TCP, framed by Content-Length.
    Tcp,
    /// RFC 3261 over TLS (section 26.2), framed like TCP.
    Tls,
    /// RFC 7118 over WebSocket: one SIP message per WebSocket message.
    Ws,
    /// RFC 7118 over secure WebSocket (WebSocket over TLS).
    Wss,
}

impl Transport {
    /// The transport token of a Via header (RFC 3261 section 20.42, RFC 7118 section 5.2).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The `transport` URI parameter value (RFC 3261 section 19.1.1, RFC 7118 section 5.3), in
    /// the lower case used by the config file and the metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Whether the transport runs over its own TCP listening socket (all but UDP). A listener
    /// serves at most one of these on its port, as they cannot be told apart before reading.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Whether the transport runs over TLS and needs a certificate on a listener.
    pub fn is_secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }
}

/// A certificate chain and its private key, PEM files re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub certificate: PathBuf,
    /// The private key of the leaf (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

/// How the SBC checks a trunk's TLS server (outbound `;transport=tls` targets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrunkTls {
    /// CA certificates (PEM) the trunk's certificate must chain to; `None`: the Mozilla roots
    /// compiled into the binary (webpki-roots).
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and checked in the certificate; `None`: the target's IP address
    /// (checked against the certificate's IP SANs, no SNI sent, RFC 6066 section 3).
    pub server_name: Option<String>,
}

/// One listening address, serving one or more transports on the same port.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Name used by trunks and routes.
    pub name: String,
    /// Access or trunk side.
    pub side: Side,
    /// Local address and port bound.
    pub addr: SocketAddr,
    /// Address written into Via, Contact and SDP (defaults to `addr`'s IP); for NAT splits.
    pub advertise: IpAddr,
    /// Transports served on `addr`.
    pub transports: Vec<Transport>,
    /// Local address of the media sockets of legs on this listener (`media.address`; defaults to
    /// `addr`'s IP).
    pub media_bind: IpAddr,
    /// Address written into SDP for legs on this listener (`media.advertise`; defaults to
    /// `advertise`).
    pub media_advertise: IpAddr,
    /// Media options of legs on this listener; a trunk's own options take precedence.
    pub media: MediaOptions,
    /// Certificate and key, required when `transports` has `tls` or `wss`.
    pub tls: Option<TlsFiles>,
    /// Connection limits of this listener's stream transport; `None`: [`Config::tcp`].
    pub limits: Option<TcpConfig>,
}

/// The `media:` section: the relay as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// First port of the RTP/RTCP range (even).
    pub port_min: u16,
    /// Last port of the range.
    pub port_max: u16,
    /// Media worker threads; 0 = one per core.
    pub workers: usize,
    /// DSCP written on media packets (46 = EF); `None` leaves the kernel default.
    pub dscp: Option<u8>,
    /// libopus encoder complexity (0..=10) of transcoded calls' Opus side.
    pub opus_complexity: u8,
    /// Default media options of every leg.
    pub defaults: MediaOptions,
}

impl Default for MediaConfig {
    fn default() -> MediaConfig {
        MediaConfig {
            port_min: 30_000,
            port_max: 39_999,
            workers: 0,
            dscp: Some(46),
            opus_complexity: sbc_media::transcode::OpusSettings::default().complexity,
            defaults: MediaOptions {
                nat: Some(false),
                codecs: Some(Vec::new()),
                inactivity_timeout: Some(Some(Duration::from_secs(60))),
                profile: Some(MediaProfile::Rtp),
                srtp_suites: Some(Vec::new()),
            },
        }
    }
}

/// Media options that a trunk, a listener or the `media:` section may set; unset values fall back
/// in that order (trunk, then listener, then `media:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaOptions {
    /// The peer may be behind NAT: allow RTP latching to the first source seen.
    pub nat: Option<bool>,
    /// Codecs offered to this side, in order (empty: whatever the other side offered).
    pub codecs: Option<Vec<String>>,
    /// A call whose RTP stops for this long is ended (`Some(None)`: never).
    pub inactivity_timeout: Option<Option<Duration>>,
    /// What the side speaks: plain RTP, SDES-SRTP or WebRTC (`profile: rtp | sdes | webrtc`).
    pub profile: Option<MediaProfile>,
    /// SDES suites offered and accepted, in order (empty: `AES_CM_128_HMAC_SHA1_80`, then `_32`).
    pub srtp_suites: Option<Vec<SrtpProfile>>,
}

impl MediaOptions {
    /// `self`, with unset values taken from `fallback`.
    pub fn or(&self, fallback: &MediaOptions) -> MediaOptions {
        MediaOptions {
            nat: self.nat.or(fallback.nat),
            codecs: self.codecs.clone().or_else(|| fallback.codecs.clone()),
            inactivity_timeout: self.inactivity_timeout.or(fallback.inactivity_timeout),
            profile: self.profile.or(fallback.profile),
            srtp_suites: self.srtp_suites.clone().or_else(|| fallback.srtp_suites.clone()),
        }
    }
}

/// A next hop: where leg B is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Address of the peer.
    pub addr: SocketAddr,
    /// Transport to reach it.
    pub transport: Transport,
}

/// A carrier, PBX or UA group the SBC talks to.
#[derive(Debug, Clone)]
pub struct TrunkConfig {
    /// Name used by routes.
    pub name: String,
    /// Listener through which requests to this trunk leave.
    pub listener: ListenerId,
    /// Targets in failover order.
    pub targets: Vec<Target>,
    /// Source networks recognised as this trunk on a trunk-side listener.
    pub sources: Vec<IpNetwork>,
    /// OPTIONS keep-alive, if enabled.
    pub options: Option<KeepAliveConfig>,
    /// Number rewriting applied to the Request-URI and To user part sent to this trunk.
    pub rewrite: RewriteConfig,
    /// Which headers of the other leg may cross into requests sent to this trunk.
    pub headers: HeaderPolicy,
    /// Media options of legs toward or from this trunk.
    pub media: MediaOptions,
    /// Verification of the trunk's TLS targets; `None`: the defaults of [`TrunkTls`].
    pub tls: Option<TrunkTls>,
    /// How the trunk's far end carries DTMF (`dtmf: rfc4733 | info`); with `info`, calls whose
    /// other leg uses RFC 4733 are converted both ways (see `sbc_media::dtmf`).
    pub dtmf: DtmfMode,
}

/// OPTIONS keep-alive toward a trunk's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAliveConfig {
    /// Time between probes of one target.
    pub interval: Duration,
    /// Consecutive failures after which the target is marked down.
    pub down_after: u32,
    /// Consecutive successes after which a down target is marked up.
    pub up_after: u32,
}

/// Number rewriting on the user part, applied in this order: strip, prepend, regex.
#[derive(Debug, Clone, Default)]
pub struct RewriteConfig {
    /// Leading characters removed.
    pub strip: usize,
    /// Prefix added after stripping.
    pub prepend: String,
    /// Regex replacement (`$1` style captures) applied last.
    pub regex: Option<(Regex, String)>,
}

/// Header normalisation for requests sent toward a trunk.
#[derive(Debug, Clone, Default)]
pub struct HeaderPolicy {
    /// Header names (case-insensitive, full form) copied from the other leg.
    pub allow: Vec<String>,
    /// Header names removed after copying (wins over `allow`).
    pub remove: Vec<String>,
    /// Headers added as `(name, value)`, replacing copied ones of the same name.
    pub add: Vec<(String, String)>,
    /// Regex rewrites of copied header values, applied after `remove` and before `add`.
    pub rewrite: Vec<HeaderRewrite>,
}

/// A rewrite of one header's value (normalisation), e.g. an internal domain in
/// P-Asserted-Identity replaced by the public one.
#[derive(Debug, Clone)]
pub struct HeaderRewrite {
    /// Header name (full form, case-insensitive).
    pub name: String,
    /// Pattern searched in the value; the first match is replaced.
    pub pattern: Regex,
    /// Replacement, with `$1` / `${name}` captures.
    pub replace: String,
}

/// An ordered route: which inbound calls go to which trunks.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Name for logs and records.
    pub name: String,
    /// Conditions, all of which must hold.
    pub matcher: RouteMatch,
    /// Outbound trunks, tried in order (failover).
    pub trunks: Vec<TrunkId>,
    /// A call not answered within this time is cancelled (408 toward the caller).
    pub ring_timeout: Duration,
}

/// Conditions of a route; an absent condition matches anything.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// Inbound listener.
    pub listener: Option<ListenerId>,
    /// Inbound trunk (recognised by source address on a trunk-side listener).
    pub trunk: Option<TrunkId>,
    /// Request-URI user part prefix.
    pub prefix: Option<String>,
    /// Request-URI user part regex.
    pub user_regex: Option<Regex>,
    /// Request-URI host, compared case-insensitively.
    pub domain: Option<String>,
}
