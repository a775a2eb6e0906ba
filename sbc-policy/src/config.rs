//! The typed configuration of the policy.
//!
//! sbc-core maps its YAML onto [`PolicyConfig`]; this crate never reads files. `Default` is the
//! "no limits" policy that [`crate::Policy::new`] uses: nothing is denied, rate-limited, capped,
//! banned or challenged. Every field documents its default. [`crate::Policy::with_config`]
//! checks the values it cannot express in types and answers [`ConfigError`].

use std::fmt;
use std::time::Duration;

use ipnetwork::IpNetwork;

/// User-Agent substrings of well-known SIP scanners, for configs that want a starting list for
/// [`PolicyConfig::scanner_user_agents`] (it is not the default: the default detects nothing).
/// Only names no real phone sends: "PortSIP VoIP SDK", often seen in fraud attempts, is left out
/// because softphones built on that SDK send it too.
pub const KNOWN_SCANNERS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "sip-scan",
    "sundayddr",
    "iWar",
    "SIVuS",
    "Gulp",
];

/// Everything the policy decides with.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// Global source lists, asked after the listener's own lists. Default: empty.
    pub access: AccessLists,
    /// Per-listener settings, indexed by the listener index the shell passes in. A listener
    /// without an entry gets `ListenerPolicy::default()`. Default: empty.
    pub listeners: Vec<ListenerPolicy>,
    /// Per-trunk limits, indexed by trunk index. A trunk without an entry has no limits.
    /// Default: empty.
    pub trunks: Vec<TrunkLimits>,
    /// Messages per source (IPv4 address or IPv6 /64) checked before parsing. Exceeding it drops
    /// the packet and counts as [`crate::Offence::RateExceeded`]. Default: `None` (unlimited).
    pub source_message_rate: Option<Rate>,
    /// New calls (dialog-creating INVITEs) per source; trunks and allow-listed sources are
    /// exempt. Default: `None` (unlimited).
    pub source_call_rate: Option<Rate>,
    /// REGISTER requests per source; allow-listed sources are exempt. Default: `None`.
    pub source_register_rate: Option<Rate>,
    /// Cap on the sources each per-source rate limiter tracks (and on the sources whose
    /// concurrent calls are counted), so a flood of spoofed addresses cannot grow memory without
    /// bound. The tables are split in 16 stripes of an equal share; a source seen while its
    /// stripe is full shares that stripe's overflow bucket until
    /// [`PolicyConfig::cleanup_interval`] reclaims idle keys. Default: 100 000 (about 4 MiB per
    /// limiter).
    pub max_tracked_sources: usize,
    /// How often [`crate::Policy::handle_timeout`] drops idle rate-limiter keys and expired
    /// offence windows. Default: 10 s.
    pub cleanup_interval: Duration,
    /// Retry-After sent with a 503 for a full CAC (rate rejections compute theirs from the
    /// limiter). Default: 5 s.
    pub cac_retry_after: Duration,
    /// Request-URI user parts that bypass rate limits and CAC (e.g. "112", "911"), matched
    /// exactly. Default: empty.
    pub emergency_numbers: Vec<String>,
    /// User-Agent substrings (ASCII case-insensitive) that [`crate::Policy::is_scanner`]
    /// recognises. Default: empty; [`KNOWN_SCANNERS`] is a starting list.
    pub scanner_user_agents: Vec<String>,
    /// When offences turn into a ban. Default: every rule off.
    pub offences: OffenceRules,
    /// Ban durations, escalation and table sizes.
    pub bans: BanConfig,
    /// Queue every ban added or lifted for [`crate::Policy::poll_ban_change`] (kernel
    /// enforcement). Default: `false` (nothing is queued).
    pub queue_ban_changes: bool,
    /// Digest authentication realms, with their users. Default: empty (no authentication).
    pub realms: Vec<RealmConfig>,
    /// Algorithms offered in challenges, preferred first (RFC 8760 section 2.4 lists SHA-256
    /// before MD5). Default: `[Sha256, Md5]`.
    pub auth_algorithms: Vec<Algorithm>,
    /// How long a nonce is accepted; older ones answer `stale=true`. Default: 300 s.
    pub nonce_lifetime: Duration,
    /// Live nonces whose highest nonce count is remembered (replay detection), per realm.
    /// Default: [`crate::auth::DEFAULT_MAX_NONCES`] (200 000, about 12 MiB when full).
    pub max_nonces: usize,
    /// Key of the nonce HMAC. Must be set (at least 16 random bytes) when a realm is
    /// configured; all SBC instances and restarts that should accept each other's nonces share it.
    /// Default: empty.
    pub nonce_secret: Secret,
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            access: AccessLists::default(),
            listeners: Vec::new(),
            trunks: Vec::new(),
            source_message_rate: None,
            source_call_rate: None,
            source_register_rate: None,
            max_tracked_sources: 100_000,
            cleanup_interval: Duration::from_secs(10),
            cac_retry_after: Duration::from_secs(5),
            emergency_numbers: Vec::new(),
            scanner_user_agents: Vec::new(),
            offences: OffenceRules::default(),
            bans: BanConfig::default(),
            queue_ban_changes: false,
            realms: Vec::new(),
            auth_algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            nonce_lifetime: Duration::from_secs(300),
            max_nonces: crate::auth::DEFAULT_MAX_NONCES,
            nonce_secret: Secret::default(),
        }
    }
}

/// CIDR allow and deny lists. The longest matching prefix decides, so `deny: [0.0.0.0/0]` with
/// `allow: [192.0.2.0/24]` admits only that /24, and `allow: [10.0.0.0/8]` with
/// `deny: [10.6.6.6/32]` shuts out one host. A prefix in both lists is denied.
#[derive(Debug, Clone, Default)]
pub struct AccessLists {
    /// Trusted sources (trunks): never rate-limited per source, never banned. Default: empty.
    pub allow: Vec<IpNetwork>,
    /// Sources whose packets are dropped silently. Default: empty.
    pub deny: Vec<IpNetwork>,
}

/// What one listener adds to the global settings.
#[derive(Debug, Clone, Default)]
pub struct ListenerPolicy {
    /// Lists asked before the global ones. Default: empty.
    pub access: AccessLists,
    /// Accept only allow-listed sources (global or this listener's), e.g. on a trunk-only
    /// listener. Default: `false`.
    pub allow_only: bool,
    /// How rate and CAC rejections are answered on this listener. Default: 503 + Retry-After.
    pub reject: RejectMode,
    /// Concurrent calls per source address (access listeners). Default: `None` (unlimited).
    pub max_calls_per_source: Option<u32>,
    /// Realm whose users must authenticate on this listener (a name from
    /// [`PolicyConfig::realms`]). Default: `None` (no challenge).
    pub realm: Option<String>,
}

/// The answer to a request refused for rate or capacity. Policy refusals (denied, banned) are
/// always 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RejectMode {
    /// `503 Service Unavailable` with `Retry-After`: a well-behaved peer backs off and retries.
    #[default]
    ServiceUnavailable,
    /// `403 Forbidden`, no retry.
    Forbidden,
}

/// Limits of one trunk.
#[derive(Debug, Clone, Default)]
pub struct TrunkLimits {
    /// New calls per second from the trunk. Default: `None`.
    pub inbound_cps: Option<Rate>,
    /// New calls per second to the trunk. Default: `None`.
    pub outbound_cps: Option<Rate>,
    /// Concurrent calls from the trunk. Default: `None`.
    pub max_inbound: Option<u32>,
    /// Concurrent calls to the trunk. Default: `None`.
    pub max_outbound: Option<u32>,
    /// Concurrent calls in both directions. Default: `None`.
    pub max_total: Option<u32>,
}

/// A rate: `count` events per `per`, with bursts of up to `burst` (GCRA, as governor does it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events per period; must not be 0.
    pub count: u32,
    /// The period; must not be zero.
    pub per: Duration,
    /// Events allowed back to back after an idle period; 0 means `count`.
    pub burst: u32,
}

impl Rate {
    /// `count` per second, bursts of `count`.
    pub fn per_second(count: u32) -> Rate {
        Rate { count, per: Duration::from_secs(1), burst: 0 }
    }

    /// `count` per `per`, bursts of `count`.
    pub fn new(count: u32, per: Duration) -> Rate {
        Rate { count, per, burst: 0 }
    }

    /// The same rate with another burst size.
    pub fn with_burst(self, burst: u32) -> Rate {
        Rate { burst, ..self }
    }
}

/// Thresholds that turn offences into bans, one rule per [`crate::Offence`] kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct OffenceRules {
    /// Packets dropped or calls refused for exceeding a per-source rate. Default: off.
    pub rate_exceeded: Option<OffenceRule>,
    /// Failed digest authentications. Default: off.
    pub auth_failure: Option<OffenceRule>,
    /// Requests for unknown users or domains (404s). Default: off.
    pub unknown_user: Option<OffenceRule>,
    /// Unparsable messages. Default: off.
    pub malformed: Option<OffenceRule>,
    /// Requests whose User-Agent is a known scanner. Default: off (a threshold of 1 bans on the
    /// first request).
    pub scanner: Option<OffenceRule>,
}

/// Ban a source once it commits `threshold` offences of one kind within `window` (a fixed
/// window that starts at the first offence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffenceRule {
    /// Offences that trigger the ban; must not be 0.
    pub threshold: u32,
    /// The window they are counted in; must not be zero.
    pub window: Duration,
}

/// Ban durations and escalation: the n-th ban of a source within `memory` lasts
/// `duration * factor^(n-1)`, at most `max_duration`.
#[derive(Debug, Clone, Copy)]
pub struct BanConfig {
    /// First ban. Default: 10 min.
    pub duration: Duration,
    /// Escalation factor for each repeat. Default: 2.
    pub factor: u32,
    /// Longest ban. Default: 24 h.
    pub max_duration: Duration,
    /// How long after a ban ends a repeat still escalates. Default: 24 h.
    pub memory: Duration,
    /// Bans (active and remembered) kept at most; beyond it new bans are refused and counted.
    /// Default: 100 000.
    pub max_entries: usize,
    /// Sources whose offences are being counted at most; beyond it offences from new sources
    /// are ignored (and counted) until cleanup. Default: 100 000.
    pub max_offenders: usize,
}

impl Default for BanConfig {
    fn default() -> BanConfig {
        BanConfig {
            duration: Duration::from_secs(600),
            factor: 2,
            max_duration: Duration::from_secs(86_400),
            memory: Duration::from_secs(86_400),
            max_entries: 100_000,
            max_offenders: 100_000,
        }
    }
}

/// A digest authentication realm and its users.
#[derive(Debug, Clone)]
pub struct RealmConfig {
    /// The realm string sent in challenges (RFC 3261 section 22.1: usually the domain).
    pub realm: String,
    /// Its users.
    pub users: Vec<AuthUser>,
}

/// One user of a realm.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// The digest username.
    pub name: String,
    /// What the server knows of the secret.
    pub credential: Credential,
}

/// A user's secret, as configured.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The plain password: usable with every algorithm.
    Password(String),
    /// `H(username:realm:password)` in hex, for this algorithm only.
    Ha1 {
        /// The hash the HA1 was computed with.
        algorithm: Algorithm,
        /// Lowercase or uppercase hex.
        hex: String,
    },
}

impl fmt::Debug for Credential {
    // Secrets stay out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(..)"),
            Credential::Ha1 { algorithm, .. } => write!(f, "Ha1({algorithm:?}, ..)"),
        }
    }
}

/// Key material, kept out of `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }
}

impl From<&[u8]> for Secret {
    fn from(bytes: &[u8]) -> Secret {
        Secret(bytes.to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Digest algorithms (RFC 8760 section 2; the `-sess` variants are not supported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// MD5 (RFC 2617), still what most SIP phones speak.
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
}

impl Algorithm {
    /// The token used in the `algorithm` parameter.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }
}

/// A configuration the policy cannot run with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A rate with a zero count or period.
    InvalidRate {
        /// Which setting.
        what: &'static str,
    },
    /// An offence rule with a zero threshold or window.
    InvalidOffenceRule {
        /// Which offence.
        what: &'static str,
    },
    /// A zero ban duration, factor or table size.
    InvalidBans,
    /// A zero cleanup interval or tracked-sources cap.
    InvalidCleanup,
    /// A realm is configured but the nonce secret is shorter than 16 bytes.
    WeakNonceSecret,
    /// A zero nonce lifetime or an empty algorithm list.
    InvalidAuth,
    /// Two realms with the same name, or a listener naming a realm that does not exist.
    UnknownRealm(String),
    /// A user's HA1 is not hex of the algorithm's length.
    InvalidHa1 {
        /// The user.
        user: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidRate { what } => write!(f, "{what}: rate needs a count and period"),
            ConfigError::InvalidOffenceRule { what } => {
                write!(f, "offence {what}: threshold and window must not be zero")
            }
            ConfigError::InvalidBans => {
                f.write_str("bans: durations, factor and sizes must be > 0")
            }
            ConfigError::InvalidCleanup => f.write_str("cleanup interval and key cap must be > 0"),
            ConfigError::WeakNonceSecret => f.write_str("nonce secret must have >= 16 bytes"),
            ConfigError::InvalidAuth => f.write_str("auth: nonce lifetime and algorithms needed"),
            ConfigError::UnknownRealm(r) => write!(f, "realm {r:?} is duplicated or not defined"),
            ConfigError::InvalidHa1 { user } => write!(f, "user {user:?}: HA1 is not valid hex"),
        }
    }
}

impl std::error::Error for ConfigError {}
