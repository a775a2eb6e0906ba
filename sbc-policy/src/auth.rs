//! Digest authentication of access users (RFC 3261 section 22; RFC 2617, RFC 7616 and RFC 8760
//! for MD5 and SHA-256).
//!
//! The core asks [`Authenticator::verify`] with the `Authorization` (REGISTER, answered 401 with
//! `WWW-Authenticate`) or `Proxy-Authorization` (INVITE, answered 407 with
//! `Proxy-Authenticate`) header value, and builds a challenge with
//! [`Authenticator::challenges`] when the outcome is not [`AuthOutcome::Ok`].
//!
//! **Nonces are stateless to issue**: `hex(timestamp) || hex(salt) || hex(HMAC-SHA256(secret,
//! timestamp || salt || source IP || realm))[..32]`, the salt a per-process counter so that no
//! two challenges carry the same nonce. Any thread that shares the secret can check one; a nonce
//! expires after the configured lifetime (the client is then told `stale=true` and retries
//! without asking the user) and is bound to the source address, so a nonce sniffed or obtained
//! elsewhere is worthless.
//!
//! **Replays are refused**: the digest `uri` must be the Request-URI (RFC 3261 section 22.4), and
//! the highest nonce count (`nc`) accepted per nonce is remembered until the nonce expires; a
//! request whose `nc` is not above it (or a second use of a nonce without `qop`) is
//! [`AuthOutcome::Replayed`] and gets a fresh challenge. Only requests whose response matched are
//! remembered, so the table grows only with the credentials of real users; it is capped, and
//! when full of live nonces new ones are accepted untracked (counted), not refused: locking every
//! user out is worse than losing replay detection for a moment.
//!
//! **No user enumeration**: an unknown user is checked against a dummy HA1 with the same work as
//! a known one and fails with the same [`AuthFailure::BadCredentials`]. A right response with a
//! nonce that is not (or no longer) ours, e.g. issued before a restart with another secret, is
//! [`AuthOutcome::Stale`]: the user knows the password, only the nonce must be renewed.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::config::{Algorithm, AuthUser, ConfigError, Credential};
use crate::shard::{Sharded, share};

/// Longest credentials header value looked at; longer ones are malformed.
const MAX_CREDENTIALS_LEN: usize = 4096;
/// Most auth-params in one credentials value.
const MAX_PARAMS: usize = 32;
/// How far in the future a nonce timestamp may lie (clocks of SBCs sharing a secret).
const NONCE_SKEW_SECS: u64 = 60;
/// Hex characters of the truncated HMAC in a nonce (128 bits).
const NONCE_MAC_HEX: usize = 32;
/// Hex characters of a nonce: timestamp, salt, MAC.
const NONCE_HEX: usize = 16 + 16 + NONCE_MAC_HEX;
/// Nonces whose highest `nc` is remembered, by default (see [`Authenticator::with_max_nonces`]).
pub const DEFAULT_MAX_NONCES: usize = 200_000;

/// The result of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are right and fresh.
    Ok {
        /// The authenticated username.
        user: String,
    },
    /// The credentials are right but the nonce expired or is not ours (another source, another
    /// secret): challenge again with `stale=true`.
    Stale,
    /// The credentials are right but were used before with this nonce and nonce count: a
    /// replayed request. Challenge again with `stale=true` (a confused client recovers, a replay
    /// cannot answer); not an offence, as a client may legitimately resend.
    Replayed,
    /// The credentials are wrong: challenge again and record [`crate::Offence::AuthFailure`].
    Failed(AuthFailure),
    /// No credentials for this realm: challenge (not an offence).
    Missing,
}

/// Why credentials failed. An unknown user and a wrong password give the same reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The header value does not parse, lacks a required parameter, or has a wrong `opaque`.
    Malformed,
    /// An algorithm or `qop` this realm does not offer.
    UnsupportedAlgorithm,
    /// A nonce we did not issue, or issued to another source, with a response that does not
    /// match either.
    BadNonce,
    /// The response does not match: unknown user or wrong password.
    BadCredentials,
    /// The digest `uri` is not the Request-URI (RFC 3261 section 22.4): credentials computed for
    /// another request.
    UriMismatch,
}

/// Checks digest credentials of one realm and builds its challenges. Shared by every thread:
/// issuing and checking take no lock; the nonce-count table is striped.
pub struct Authenticator {
    realm: String,
    users: HashMap<String, Ha1s>,
    /// Checked by an unknown user, so it costs what a known one costs.
    dummy: Ha1s,
    /// Keyed once; cloned per nonce.
    mac: Hmac<Sha256>,
    nonce_lifetime: u64,
    algorithms: Vec<Algorithm>,
    opaque: Option<String>,
    /// Makes every nonce unique (two challenges to one source in one second differ).
    salt: AtomicU64,
    /// Highest `nc` accepted per (timestamp, salt) of a live nonce.
    uses: Sharded<Mutex<NonceUses>>,
    /// Nonces accepted without tracking because their stripe was full of live ones.
    untracked: AtomicU64,
}

/// One stripe of the nonce-count table.
#[derive(Debug, Default)]
struct NonceUses {
    /// (timestamp, salt) -> highest nc accepted.
    map: HashMap<(u64, u64), u32>,
    cap: usize,
}

/// A user's HA1 (lowercase hex) per algorithm.
#[derive(Clone, Default)]
struct Ha1s {
    md5: Option<String>,
    sha256: Option<String>,
}

impl Ha1s {
    fn get(&self, algorithm: Algorithm) -> Option<&str> {
        match algorithm {
            Algorithm::Md5 => self.md5.as_deref(),
            Algorithm::Sha256 => self.sha256.as_deref(),
        }
    }
}

impl fmt::Debug for Authenticator {
    // Users, HA1s and the secret stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator for `realm`, offering SHA-256 then MD5. `secret` keys the nonce HMAC
    /// (at least 16 bytes); nonces older than `nonce_lifetime` are stale.
    pub fn new(
        users: &[AuthUser],
        realm: &str,
        secret: &[u8],
        nonce_lifetime: Duration,
    ) -> Result<Authenticator, ConfigError> {
        if secret.len() < 16 {
            return Err(ConfigError::WeakNonceSecret);
        }
        if nonce_lifetime.as_secs() == 0 {
            return Err(ConfigError::InvalidAuth);
        }
        let mac =
            Hmac::<Sha256>::new_from_slice(secret).map_err(|_| ConfigError::WeakNonceSecret)?;
        let mut map = HashMap::with_capacity(users.len());
        for user in users {
            map.insert(user.name.clone(), ha1s(user, realm)?);
        }
        let seed = mac.clone().chain_update(b"dummy user").finalize().into_bytes();
        let dummy = Ha1s {
            md5: Some(hash_hex(Algorithm::Md5, &[&seed])),
            sha256: Some(hash_hex(Algorithm::Sha256, &[&seed])),
        };
        Ok(Authenticator {
            realm: realm.to_owned(),
            users: map,
            dummy,
            mac,
            nonce_lifetime: nonce_lifetime.as_secs(),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            opaque: None,
            salt: AtomicU64::new(0),
            uses: nonce_table(DEFAULT_MAX_NONCES),
            untracked: AtomicU64::new(0),
        })
    }

    /// The same authenticator remembering the nonce count of at most `max` live nonces (at
    /// least 16).
    pub fn with_max_nonces(mut self, max: usize) -> Self {
        self.uses = nonce_table(max.max(crate::shard::SHARDS));
        self
    }

    /// Nonces accepted without replay tracking because the table was full.
    pub fn untracked_nonces(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// The same authenticator offering `algorithms`, preferred first (RFC 8760 section 2.4).
    /// An empty list is refused.
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> Result<Self, ConfigError> {
        if algorithms.is_empty() {
            return Err(ConfigError::InvalidAuth);
        }
        self.algorithms = algorithms.to_vec();
        Ok(self)
    }

    /// The same authenticator sending `opaque` in challenges and requiring it back.
    pub fn with_opaque(mut self, opaque: &str) -> Self {
        self.opaque = Some(opaque.to_owned());
        self
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A challenge header value for the preferred algorithm, e.g. `Digest realm="example.com",
    /// nonce="…", algorithm=SHA-256, qop="auth"`.
    pub fn challenge(&self, now_unix: u64, source: IpAddr, stale: bool) -> String {
        let preferred = self.algorithms.first().copied().unwrap_or(Algorithm::Md5);
        self.challenge_for(preferred, now_unix, source, stale)
    }

    /// One challenge header value per offered algorithm, preferred first: send each as its own
    /// `WWW-Authenticate` / `Proxy-Authenticate` header (RFC 8760 section 2.4), so MD5-only
    /// phones pick the one they know.
    pub fn challenges(&self, now_unix: u64, source: IpAddr, stale: bool) -> Vec<String> {
        self.algorithms.iter().map(|&a| self.challenge_for(a, now_unix, source, stale)).collect()
    }

    fn challenge_for(&self, alg: Algorithm, now_unix: u64, source: IpAddr, stale: bool) -> String {
        let mut v = String::with_capacity(160);
        v.push_str("Digest realm=");
        push_quoted(&mut v, &self.realm);
        let nonce = self.nonce(now_unix, source);
        let _ = write!(v, ", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"", alg.token());
        if let Some(opaque) = &self.opaque {
            v.push_str(", opaque=");
            push_quoted(&mut v, opaque);
        }
        if stale {
            v.push_str(", stale=true");
        }
        v
    }

    /// Checks an `Authorization` / `Proxy-Authorization` value from `source` for a request of
    /// `method` to `request_uri` (None when the request has none). Never panics on wire input.
    pub fn verify(
        &self,
        now_unix: u64,
        source: IpAddr,
        method: &str,
        request_uri: &str,
        authorization: Option<&[u8]>,
    ) -> AuthOutcome {
        let Some(value) = authorization else {
            return AuthOutcome::Missing;
        };
        let creds = match Credentials::parse(value) {
            Some(c) => c,
            None => return AuthOutcome::Failed(AuthFailure::Malformed),
        };
        if creds.realm != self.realm {
            // Credentials for another realm (another hop's): as if there were none.
            return AuthOutcome::Missing;
        }
        let Some(algorithm) = creds.algorithm.filter(|a| self.algorithms.contains(a)) else {
            return AuthOutcome::Failed(AuthFailure::UnsupportedAlgorithm);
        };
        if self.opaque.is_some() && creds.opaque != self.opaque {
            return AuthOutcome::Failed(AuthFailure::Malformed);
        }
        // RFC 3261 section 22.4 / RFC 2617 section 3.2.2.5: the digest covers this request's
        // URI; credentials made for another request do not authorise this one.
        if creds.uri != request_uri {
            return AuthOutcome::Failed(AuthFailure::UriMismatch);
        }
        // Same work for known and unknown users, valid or invalid nonces: one HA1 lookup, two
        // hashes, one comparison, then the nonce MAC.
        let known = self.users.get(&creds.username).and_then(|h| h.get(algorithm));
        let ha1 = known.or(self.dummy.get(algorithm)).unwrap_or_default();
        let expected = response(algorithm, ha1, &creds, method);
        let matches = ct_eq(expected.as_bytes(), creds.response.to_ascii_lowercase().as_bytes());
        let nonce = self
            .check_nonce(&creds.nonce, source)
            .filter(|(issued, _)| *issued <= now_unix + NONCE_SKEW_SECS);
        if !matches || known.is_none() {
            let why =
                if nonce.is_some() { AuthFailure::BadCredentials } else { AuthFailure::BadNonce };
            return AuthOutcome::Failed(why);
        }
        let Some((issued, salt)) = nonce else {
            return AuthOutcome::Stale;
        };
        let expires = issued.saturating_add(self.nonce_lifetime);
        if now_unix >= expires {
            return AuthOutcome::Stale;
        }
        // Without qop there is no nonce count: such a nonce is good for one request.
        let nc = match creds.qop {
            Some(_) => u32::from_str_radix(&creds.nc, 16).unwrap_or(0),
            None => 1,
        };
        if !self.remember_use((issued, salt), nc, now_unix) {
            return AuthOutcome::Replayed;
        }
        AuthOutcome::Ok { user: creds.username }
    }

    /// Records `nc` for a live nonce; `false` if it is not above the highest one seen.
    fn remember_use(&self, nonce: (u64, u64), nc: u32, now_unix: u64) -> bool {
        let mut uses = self.uses.of(&nonce).lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(highest) = uses.map.get_mut(&nonce) {
            if nc <= *highest {
                return false;
            }
            *highest = nc;
            return true;
        }
        if uses.map.len() >= uses.cap {
            // Rare: only when the stripe is full. Expired nonces are answered stale anyway.
            let lifetime = self.nonce_lifetime;
            uses.map.retain(|(issued, _), _| now_unix < issued.saturating_add(lifetime));
            if uses.map.len() >= uses.cap {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        uses.map.insert(nonce, nc);
        true
    }

    fn nonce(&self, now_unix: u64, source: IpAddr) -> String {
        let salt = self.salt.fetch_add(1, Ordering::Relaxed);
        let mut nonce = format!("{now_unix:016x}{salt:016x}");
        nonce.push_str(&self.nonce_mac(now_unix, salt, source)[..NONCE_MAC_HEX]);
        nonce
    }

    fn nonce_mac(&self, ts: u64, salt: u64, source: IpAddr) -> String {
        let mut mac = self.mac.clone();
        mac.update(&ts.to_be_bytes());
        mac.update(&salt.to_be_bytes());
        match source.to_canonical() {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac.update(self.realm.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// The timestamp and salt of a nonce we issued to `source`.
    fn check_nonce(&self, nonce: &str, source: IpAddr) -> Option<(u64, u64)> {
        if nonce.len() != NONCE_HEX || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let (ts_hex, rest) = nonce.split_at(16);
        let (salt_hex, mac_hex) = rest.split_at(16);
        let ts = u64::from_str_radix(ts_hex, 16).ok()?;
        let salt = u64::from_str_radix(salt_hex, 16).ok()?;
        let expected = self.nonce_mac(ts, salt, source);
        let given = mac_hex.to_ascii_lowercase();
        ct_eq(&expected.as_bytes()[..NONCE_MAC_HEX], given.as_bytes()).then_some((ts, salt))
    }
}

fn nonce_table(max: usize) -> Sharded<Mutex<NonceUses>> {
    Sharded::new(|i| Mutex::new(NonceUses { map: HashMap::new(), cap: share(max, i) }))
}

fn ha1s(user: &AuthUser, realm: &str) -> Result<Ha1s, ConfigError> {
    Ok(match &user.credential {
        Credential::Password(pw) => {
            let parts: [&[u8]; 3] = [user.name.as_bytes(), realm.as_bytes(), pw.as_bytes()];
            Ha1s {
                md5: Some(hash_hex(Algorithm::Md5, &parts)),
                sha256: Some(hash_hex(Algorithm::Sha256, &parts)),
            }
        }
        Credential::Ha1 { algorithm, hex } => {
            let len = match algorithm {
                Algorithm::Md5 => 32,
                Algorithm::Sha256 => 64,
            };
            if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::InvalidHa1 { user: user.name.clone() });
            }
            let hex = Some(hex.to_ascii_lowercase());
            match algorithm {
                Algorithm::Md5 => Ha1s { md5: hex, sha256: None },
                Algorithm::Sha256 => Ha1s { md5: None, sha256: hex },
            }
        }
    })
}

/// The request-digest of RFC 7616 section 3.4.1 (RFC 2617 section 3.2.2.1 without `qop`).
fn response(alg: Algorithm, ha1: &str, c: &Credentials, method: &str) -> String {
    let ha2 = hash_hex(alg, &[method.as_bytes(), c.uri.as_bytes()]);
    match &c.qop {
        Some(qop) => hash_hex(
            alg,
            &[
                ha1.as_bytes(),
                c.nonce.as_bytes(),
                c.nc.as_bytes(),
                c.cnonce.as_bytes(),
                qop.as_bytes(),
                ha2.as_bytes(),
            ],
        ),
        None => hash_hex(alg, &[ha1.as_bytes(), c.nonce.as_bytes(), ha2.as_bytes()]),
    }
}

/// Lowercase hex of `H(parts joined by ':')`.
fn hash_hex(alg: Algorithm, parts: &[&[u8]]) -> String {
    fn run<D: Digest>(parts: &[&[u8]]) -> String {
        let mut d = D::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                d.update(b":");
            }
            d.update(part);
        }
        hex(&d.finalize())
    }
    match alg {
        Algorithm::Md5 => run::<Md5>(parts),
        Algorithm::Sha256 => run::<Sha256>(parts),
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Equality whose time depends on the length only.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// The parameters of a `Digest` credentials value (RFC 3261 section 25.1 `digest-response`).
#[derive(Debug, Default)]
struct Credentials {
    username: String,
    realm: String,
    nonce: String,
    uri: String,
    response: String,
    /// `None` for an algorithm we do not know; absent means MD5.
    algorithm: Option<Algorithm>,
    cnonce: String,
    nc: String,
    /// Only `auth` is accepted (`auth-int` is refused as malformed input for this realm).
    qop: Option<String>,
    opaque: Option<String>,
}

impl Credentials {
    fn parse(value: &[u8]) -> Option<Credentials> {
        if value.len() > MAX_CREDENTIALS_LEN {
            return None;
        }
        let text = std::str::from_utf8(value).ok()?.trim();
        let (scheme, mut rest) = text.split_once([' ', '\t'])?;
        if !scheme.eq_ignore_ascii_case("digest") {
            return None;
        }
        let mut c = Credentials { algorithm: Some(Algorithm::Md5), ..Credentials::default() };
        let mut seen = 0u32;
        for _ in 0..MAX_PARAMS {
            rest = rest.trim_start_matches([' ', '\t', '\r', '\n', ',']);
            if rest.is_empty() {
                return c.complete(seen);
            }
            let (name, value, tail) = param(rest)?;
            rest = tail;
            let bit = match name.to_ascii_lowercase().as_str() {
                "username" => 1,
                "realm" => 2,
                "nonce" => 4,
                "uri" => 8,
                "response" => 16,
                "cnonce" => 32,
                "nc" => 64,
                "qop" => 128,
                "algorithm" => 256,
                "opaque" => 512,
                // Other auth-params (userhash, extensions) are ignored.
                _ => continue,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match bit {
                1 => c.username = value,
                2 => c.realm = value,
                4 => c.nonce = value,
                8 => c.uri = value,
                16 => c.response = value,
                32 => c.cnonce = value,
                64 => c.nc = value,
                128 => c.qop = Some(value),
                256 => {
                    c.algorithm = match value.to_ascii_uppercase().as_str() {
                        "MD5" => Some(Algorithm::Md5),
                        "SHA-256" => Some(Algorithm::Sha256),
                        _ => None,
                    }
                }
                _ => c.opaque = Some(value),
            }
        }
        None
    }

    /// Checks the required parameters are there (RFC 7616 section 3.4).
    fn complete(self, seen: u32) -> Option<Credentials> {
        if seen & 31 != 31 {
            return None;
        }
        match self.qop.as_deref() {
            None => Some(self),
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                let nc_ok = self.nc.len() == 8 && self.nc.bytes().all(|b| b.is_ascii_hexdigit());
                (nc_ok && !self.cnonce.is_empty()).then_some(self)
            }
            Some(_) => None,
        }
    }
}

/// One `name=value` or `name="quoted value"`, and the text after it.
fn param(s: &str) -> Option<(&str, String, &str)> {
    let (name, rest) = s.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return None;
    }
    let rest = rest.trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '"' => return Some((name, value, after_value(&quoted[i + 1..])?)),
                '\\' => value.push(chars.next()?.1),
                _ => value.push(ch),
            }
        }
        None
    } else {
        let end = rest.find([',', ' ', '\t', '\r', '\n']).unwrap_or(rest.len());
        let value = &rest[..end];
        if value.is_empty() {
            return None;
        }
        Some((name, value.to_owned(), after_value(&rest[end..])?))
    }
}

/// What follows a value must be a separator or the end.
fn after_value(s: &str) -> Option<&str> {
    let t = s.trim_start();
    (t.is_empty() || t.starts_with(',')).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;
    /// The Request-URI the test requests carry (and their digest `uri`).
    const URI: &str = "sip:bob@sbc.example";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn auth() -> Authenticator {
        let users = [
            AuthUser { name: "alice".into(), credential: Credential::Password("s3cret".into()) },
            AuthUser {
                name: "bob".into(),
                credential: Credential::Ha1 {
                    algorithm: Algorithm::Md5,
                    hex: hash_hex(Algorithm::Md5, &[b"bob", b"sbc.example", b"hunter2"])
                        .to_ascii_uppercase(),
                },
            },
        ];
        Authenticator::new(&users, "sbc.example", SECRET, Duration::from_secs(300)).unwrap()
    }

    fn param_of<'a>(challenge: &'a str, name: &str) -> &'a str {
        let start = challenge.find(&format!("{name}=")).unwrap() + name.len() + 1;
        let v = &challenge[start..];
        let v = v.strip_prefix('"').map_or(v, |q| &q[..q.find('"').unwrap()]);
        v.split(',').next().unwrap()
    }

    /// What a UA answers to `challenge`.
    fn answer(challenge: &str, user: &str, password: &str, method: &str) -> String {
        answer_nc(challenge, user, password, method, 1)
    }

    /// What a UA answers to `challenge` with nonce count `nc`.
    fn answer_nc(challenge: &str, user: &str, password: &str, method: &str, nc: u32) -> String {
        let alg = if param_of(challenge, "algorithm") == "MD5" {
            Algorithm::Md5
        } else {
            Algorithm::Sha256
        };
        let nonce = param_of(challenge, "nonce");
        let realm = param_of(challenge, "realm");
        let c = Credentials {
            username: user.into(),
            realm: realm.into(),
            nonce: nonce.into(),
            uri: "sip:bob@sbc.example".into(),
            cnonce: "0a4f113b".into(),
            nc: format!("{nc:08x}"),
            qop: Some("auth".into()),
            ..Credentials::default()
        };
        let ha1 = hash_hex(alg, &[user.as_bytes(), realm.as_bytes(), password.as_bytes()]);
        let resp = response(alg, &ha1, &c, method);
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", \
             uri=\"sip:bob@sbc.example\", response=\"{resp}\", algorithm={}, cnonce=\"0a4f113b\", \
             nc={nc:08x}, qop=auth",
            alg.token()
        )
    }

    #[test]
    fn rfc2617_md5_vector() {
        let value = br#"Digest username="Mufasa", realm="testrealm@host.com",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth,
            nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1",
            opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = Credentials::parse(value).unwrap();
        assert_eq!(c.algorithm, Some(Algorithm::Md5));
        let ha1 = hash_hex(Algorithm::Md5, &[b"Mufasa", b"testrealm@host.com", b"Circle Of Life"]);
        assert_eq!(response(Algorithm::Md5, &ha1, &c, "GET"), c.response);
        assert_eq!(c.response, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_sha256_and_md5_vectors() {
        let c = |alg: &str, resp: &str| {
            let v = format!(
                "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
                 uri=\"/dir/index.html\", algorithm={alg}, \
                 nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, \
                 cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, \
                 response=\"{resp}\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            );
            Credentials::parse(v.as_bytes()).unwrap()
        };
        let parts: [&[u8]; 3] = [b"Mufasa", b"http-auth@example.org", b"Circle of Life"];
        let sha = c("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
        let ha1 = hash_hex(Algorithm::Sha256, &parts);
        assert_eq!(response(Algorithm::Sha256, &ha1, &sha, "GET"), sha.response);
        let md5 = c("MD5", "8ca523f5e9506fed4657c9700eebdbec");
        let ha1 = hash_hex(Algorithm::Md5, &parts);
        assert_eq!(response(Algorithm::Md5, &ha1, &md5, "GET"), md5.response);
    }

    #[test]
    fn right_credentials_pass_with_both_algorithms() {
        let a = auth();
        let src = ip("192.0.2.10");
        let challenges = a.challenges(NOW, src, false);
        assert_eq!(challenges.len(), 2);
        assert!(challenges[0].contains("algorithm=SHA-256"));
        assert!(challenges[1].contains("algorithm=MD5"));
        assert!(challenges[0].starts_with("Digest realm=\"sbc.example\", nonce=\""));
        assert!(challenges[0].ends_with("qop=\"auth\""));
        for ch in &challenges {
            let value = answer(ch, "alice", "s3cret", "REGISTER");
            let out = a.verify(NOW + 10, src, "REGISTER", URI, Some(value.as_bytes()));
            assert_eq!(out, AuthOutcome::Ok { user: "alice".into() });
            // The method is part of the digest.
            let out = a.verify(NOW + 10, src, "INVITE", URI, Some(value.as_bytes()));
            assert_eq!(out, AuthOutcome::Failed(AuthFailure::BadCredentials));
        }
    }

    #[test]
    fn ha1_users_authenticate_with_their_algorithm_only() {
        let a = auth();
        let src = ip("192.0.2.10");
        let [sha, md5] = <[String; 2]>::try_from(a.challenges(NOW, src, false)).unwrap();
        let ok = answer(&md5, "bob", "hunter2", "INVITE");
        assert_eq!(
            a.verify(NOW, src, "INVITE", URI, Some(ok.as_bytes())),
            AuthOutcome::Ok { user: "bob".into() }
        );
        let other = answer(&sha, "bob", "hunter2", "INVITE");
        assert_eq!(
            a.verify(NOW, src, "INVITE", URI, Some(other.as_bytes())),
            AuthOutcome::Failed(AuthFailure::BadCredentials)
        );
    }

    #[test]
    fn wrong_password_and_unknown_user_are_indistinguishable() {
        let a = auth();
        let src = ip("192.0.2.10");
        let ch = a.challenge(NOW, src, false);
        let wrong = answer(&ch, "alice", "guess", "REGISTER");
        let unknown = answer(&ch, "mallory", "guess", "REGISTER");
        let w = a.verify(NOW, src, "REGISTER", URI, Some(wrong.as_bytes()));
        let u = a.verify(NOW, src, "REGISTER", URI, Some(unknown.as_bytes()));
        assert_eq!(w, AuthOutcome::Failed(AuthFailure::BadCredentials));
        assert_eq!(w, u);
        // The next challenge does not depend on who asked: only the nonce differs, and every
        // nonce is new.
        let (c1, c2) = (a.challenges(NOW, src, false), a.challenges(NOW, src, false));
        let mask = |v: &[String]| -> Vec<String> {
            v.iter().map(|c| c.replace(param_of(c, "nonce"), "N")).collect()
        };
        assert_eq!(mask(&c1), mask(&c2));
        assert_ne!(param_of(&c1[0], "nonce"), param_of(&c2[0], "nonce"));
        // Even an unknown user guessing the dummy cannot get in: there is no such user.
        let expired = a.verify(NOW + 1000, src, "REGISTER", URI, Some(unknown.as_bytes()));
        assert_eq!(expired, AuthOutcome::Failed(AuthFailure::BadCredentials));
    }

    #[test]
    fn nonce_is_bound_to_the_source() {
        let a = auth();
        let ch = a.challenge(NOW, ip("192.0.2.10"), false);
        let value = answer(&ch, "alice", "s3cret", "REGISTER");
        // From another address the nonce is not valid: the right password only renews it.
        assert_eq!(
            a.verify(NOW, ip("192.0.2.11"), "REGISTER", URI, Some(value.as_bytes())),
            AuthOutcome::Stale
        );
        let wrong = answer(&ch, "alice", "guess", "REGISTER");
        assert_eq!(
            a.verify(NOW, ip("192.0.2.11"), "REGISTER", URI, Some(wrong.as_bytes())),
            AuthOutcome::Failed(AuthFailure::BadNonce)
        );
        // The same address seen through a dual-stack socket is the same source.
        assert!(matches!(
            a.verify(NOW, ip("::ffff:192.0.2.10"), "REGISTER", URI, Some(value.as_bytes())),
            AuthOutcome::Ok { .. }
        ));
        // Another secret does not accept our nonces.
        let other = Authenticator::new(&[], "sbc.example", &[7; 16], Duration::from_secs(300));
        let other = other.unwrap();
        assert_eq!(
            other.verify(NOW, ip("192.0.2.10"), "REGISTER", URI, Some(value.as_bytes())),
            AuthOutcome::Failed(AuthFailure::BadNonce)
        );
    }

    #[test]
    fn expired_nonce_is_stale_only_with_the_right_password() {
        let a = auth();
        let src = ip("2001:db8::10");
        let ch = a.challenge(NOW, src, false);
        let value = answer(&ch, "alice", "s3cret", "REGISTER");
        let at = |t| a.verify(t, src, "REGISTER", URI, Some(value.as_bytes()));
        assert!(matches!(at(NOW + 299), AuthOutcome::Ok { .. }));
        assert_eq!(at(NOW + 300), AuthOutcome::Stale);
        let wrong = answer(&ch, "alice", "nope", "REGISTER");
        assert_eq!(
            a.verify(NOW + 300, src, "REGISTER", URI, Some(wrong.as_bytes())),
            AuthOutcome::Failed(AuthFailure::BadCredentials)
        );
        // A nonce from the future was not issued by a sane clock: renewed.
        assert_eq!(at(NOW - NONCE_SKEW_SECS - 1), AuthOutcome::Stale);
        assert!(a.challenge(NOW, src, true).ends_with(", stale=true"));
    }

    #[test]
    fn tampered_nonce_fails() {
        let a = auth();
        let src = ip("192.0.2.10");
        let ch = a.challenge(NOW, src, false);
        let value = answer(&ch, "alice", "s3cret", "REGISTER");
        let nonce = param_of(&ch, "nonce");
        // Moving the timestamp forward (to dodge expiry) breaks the MAC.
        let later = format!("{:016x}{}", NOW + 1000, &nonce[16..]);
        let forged = value.replace(nonce, &later);
        assert_eq!(
            a.verify(NOW, src, "REGISTER", URI, Some(forged.as_bytes())),
            AuthOutcome::Failed(AuthFailure::BadNonce)
        );
    }

    #[test]
    fn missing_other_realm_and_unsupported() {
        let a = auth().with_algorithms(&[Algorithm::Sha256]).unwrap();
        let src = ip("192.0.2.10");
        assert_eq!(a.verify(NOW, src, "INVITE", URI, None), AuthOutcome::Missing);
        let ch = a.challenge(NOW, src, false);
        let value = answer(&ch, "alice", "s3cret", "INVITE");
        let other = value.replace("realm=\"sbc.example\"", "realm=\"elsewhere\"");
        assert_eq!(a.verify(NOW, src, "INVITE", URI, Some(other.as_bytes())), AuthOutcome::Missing);
        let md5 = value.replace("algorithm=SHA-256", "algorithm=MD5");
        let unsupported = AuthOutcome::Failed(AuthFailure::UnsupportedAlgorithm);
        assert_eq!(a.verify(NOW, src, "INVITE", URI, Some(md5.as_bytes())), unsupported);
        let sess = value.replace("algorithm=SHA-256", "algorithm=SHA-256-sess");
        assert_eq!(a.verify(NOW, src, "INVITE", URI, Some(sess.as_bytes())), unsupported);
        assert!(auth().with_algorithms(&[]).is_err());
    }

    #[test]
    fn opaque_is_sent_and_required() {
        let a = auth().with_opaque("op\"aque");
        let src = ip("192.0.2.10");
        let ch = a.challenge(NOW, src, false);
        assert!(ch.contains(", opaque=\"op\\\"aque\""));
        let value = answer(&ch, "alice", "s3cret", "REGISTER");
        let malformed = AuthOutcome::Failed(AuthFailure::Malformed);
        assert_eq!(a.verify(NOW, src, "REGISTER", URI, Some(value.as_bytes())), malformed);
        let with = format!("{value}, opaque=\"op\\\"aque\"");
        assert!(matches!(
            a.verify(NOW, src, "REGISTER", URI, Some(with.as_bytes())),
            AuthOutcome::Ok { .. }
        ));
    }

    #[test]
    fn rfc2069_response_without_qop_is_accepted() {
        let a = auth();
        let src = ip("192.0.2.10");
        let ch = a.challenge(NOW, src, false);
        let nonce = param_of(&ch, "nonce");
        let c = Credentials {
            nonce: nonce.into(),
            uri: "sip:sbc.example".into(),
            ..Credentials::default()
        };
        let ha1 = hash_hex(Algorithm::Sha256, &[b"alice", b"sbc.example", b"s3cret"]);
        let resp = response(Algorithm::Sha256, &ha1, &c, "REGISTER");
        let value = format!(
            "Digest username=\"alice\",realm=\"sbc.example\",nonce=\"{nonce}\",\
             uri=\"sip:sbc.example\",response=\"{}\",algorithm=sha-256",
            resp.to_ascii_uppercase()
        );
        assert!(matches!(
            a.verify(NOW, src, "REGISTER", "sip:sbc.example", Some(value.as_bytes())),
            AuthOutcome::Ok { .. }
        ));
    }

    #[test]
    fn hostile_values_fail_without_panicking() {
        let a = auth();
        let src = ip("192.0.2.10");
        let long = format!("Digest username=\"{}\"", "a".repeat(5000));
        let many = format!("Digest {}", "x=1, ".repeat(40));
        let cases: &[&[u8]] = &[
            b"",
            b"Digest",
            b"Basic dXNlcjpwYXNz",
            b"Digest username",
            b"Digest username=",
            b"Digest username=\"unterminated",
            b"Digest username=\"a\\",
            b"Digest username=a b=c",
            b"Digest username=\"a\"x, realm=b",
            b"Digest username=\"a\", username=\"b\", realm=\"sbc.example\", nonce=\"n\", \
              uri=\"u\", response=\"r\"",
            b"Digest username=\"a\", realm=\"sbc.example\", nonce=\"n\", uri=\"u\"",
            b"Digest username=\"a\", realm=\"sbc.example\", nonce=\"n\", uri=\"u\", \
              response=\"r\", qop=auth",
            b"Digest username=\"a\", realm=\"sbc.example\", nonce=\"n\", uri=\"u\", \
              response=\"r\", qop=auth-int, nc=00000001, cnonce=\"c\"",
            b"Digest username=\"a\", realm=\"sbc.example\", nonce=\"n\", uri=\"u\", \
              response=\"r\", qop=auth, nc=1, cnonce=\"c\"",
            b"Digest \xff\xfe=\"x\"",
            "Digest username=\"\u{e9}\u{301}\", realm=\"sbc.example\", nonce=\"\u{1F600}\", \
             uri=\"u\", response=\"r\""
                .as_bytes(),
            long.as_bytes(),
            many.as_bytes(),
        ];
        for case in cases {
            match a.verify(NOW, src, "REGISTER", URI, Some(case)) {
                AuthOutcome::Failed(_) => {}
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(case)),
            }
        }
    }

    #[test]
    fn digest_uri_must_be_the_request_uri() {
        let a = auth();
        let src = ip("192.0.2.10");
        let ch = a.challenge(NOW, src, false);
        let value = answer(&ch, "alice", "s3cret", "INVITE");
        assert_eq!(
            a.verify(NOW, src, "INVITE", "sip:carol@sbc.example", Some(value.as_bytes())),
            AuthOutcome::Failed(AuthFailure::UriMismatch)
        );
        assert!(matches!(
            a.verify(NOW, src, "INVITE", URI, Some(value.as_bytes())),
            AuthOutcome::Ok { .. }
        ));
    }

    #[test]
    fn replays_are_refused_and_nonce_counts_must_grow() {
        let a = auth();
        let src = ip("192.0.2.10");
        let ch = a.challenge(NOW, src, false);
        let first = answer(&ch, "alice", "s3cret", "REGISTER");
        let check = |v: &str| a.verify(NOW + 1, src, "REGISTER", URI, Some(v.as_bytes()));
        assert!(matches!(check(&first), AuthOutcome::Ok { .. }));
        assert_eq!(check(&first), AuthOutcome::Replayed);
        // The same nonce with the next count (a client reusing its nonce) is fine, once.
        let second = answer_nc(&ch, "alice", "s3cret", "REGISTER", 2);
        assert!(matches!(check(&second), AuthOutcome::Ok { .. }));
        assert_eq!(check(&second), AuthOutcome::Replayed);
        assert_eq!(check(&first), AuthOutcome::Replayed);
        // A replay with a wrong password is a plain failure (an offence), not a replay.
        let wrong = answer_nc(&ch, "alice", "guess", "REGISTER", 2);
        assert_eq!(check(&wrong), AuthOutcome::Failed(AuthFailure::BadCredentials));
        // Two challenges in the same second carry different nonces, each good on its own.
        let other = answer(&a.challenge(NOW, src, false), "alice", "s3cret", "REGISTER");
        assert!(matches!(check(&other), AuthOutcome::Ok { .. }));
    }

    #[test]
    fn a_nonce_without_qop_is_good_for_one_request() {
        let a = auth();
        let src = ip("192.0.2.10");
        let nonce = a.nonce(NOW, src);
        let c = Credentials { nonce: nonce.clone(), uri: URI.into(), ..Credentials::default() };
        let ha1 = hash_hex(Algorithm::Md5, &[b"alice", b"sbc.example", b"s3cret"]);
        let resp = response(Algorithm::Md5, &ha1, &c, "REGISTER");
        let value = format!(
            "Digest username=\"alice\", realm=\"sbc.example\", nonce=\"{nonce}\", \
             uri=\"{URI}\", response=\"{resp}\""
        );
        let check = || a.verify(NOW, src, "REGISTER", URI, Some(value.as_bytes()));
        assert!(matches!(check(), AuthOutcome::Ok { .. }));
        assert_eq!(check(), AuthOutcome::Replayed);
    }

    #[test]
    fn a_full_nonce_table_accepts_untracked_and_expired_nonces_make_room() {
        let a = auth().with_max_nonces(16);
        let src = ip("192.0.2.10");
        let mut accepted = 0;
        for _ in 0..200 {
            let value = answer(&a.challenge(NOW, src, false), "alice", "s3cret", "REGISTER");
            if matches!(
                a.verify(NOW, src, "REGISTER", URI, Some(value.as_bytes())),
                AuthOutcome::Ok { .. }
            ) {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 200);
        assert!(a.untracked_nonces() >= 200 - 16);
        // Once the tracked nonces expired, a new one is tracked again (its stripe, of room 1,
        // only held expired ones).
        let before = a.untracked_nonces();
        let later = NOW + 301;
        let value = answer(&a.challenge(later, src, false), "alice", "s3cret", "REGISTER");
        let check = || a.verify(later, src, "REGISTER", URI, Some(value.as_bytes()));
        assert!(matches!(check(), AuthOutcome::Ok { .. }));
        assert_eq!(check(), AuthOutcome::Replayed);
        assert_eq!(a.untracked_nonces(), before);
    }

    #[test]
    fn config_errors() {
        let lifetime = Duration::from_secs(300);
        assert_eq!(
            Authenticator::new(&[], "r", b"short", lifetime).unwrap_err(),
            ConfigError::WeakNonceSecret
        );
        assert_eq!(
            Authenticator::new(&[], "r", SECRET, Duration::ZERO).unwrap_err(),
            ConfigError::InvalidAuth
        );
        let bad = AuthUser {
            name: "x".into(),
            credential: Credential::Ha1 { algorithm: Algorithm::Sha256, hex: "abcd".into() },
        };
        assert_eq!(
            Authenticator::new(&[bad], "r", SECRET, lifetime).unwrap_err(),
            ConfigError::InvalidHa1 { user: "x".into() }
        );
        // Secrets do not leak through Debug.
        assert!(!format!("{:?}", auth()).contains("s3cret"));
        let pw = Credential::Password("s3cret".into());
        assert_eq!(format!("{pw:?}"), "Password(..)");
    }
}
