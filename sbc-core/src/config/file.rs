//! The YAML file layer: parse, validate with located errors, convert to [`super::Config`].
//!
//! serde-saphyr reads the text into private `File*` structs that mirror the file
//! (`deny_unknown_fields`). Every value that can be wrong is wrapped in [`Spanned`], which records
//! the 1-based line and column of its YAML node, so that semantic errors point at the value. A
//! syntax or type error stops parsing and is reported alone, where serde-saphyr locates it;
//! semantic errors are all collected and sorted by position. `docs/configuration.md` describes
//! the format.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use regex::Regex;
use sbc_cdr::capture::{
    CaptureConfig, CaptureMode, InterceptConfig, Retention, SignallingCapture, TargetRules,
};
use sbc_cdr::record::Format;
use sbc_cdr::sink::SinkConfig;
use sbc_cdr::writer::WriterConfig;
use sbc_media::MediaProfile;
use sbc_media::backend::SrtpProfile;
use sbc_media::dtmf::DtmfMode;
use sbc_policy::{
    AccessLists, Algorithm, AuthUser, BanConfig, Credential, KNOWN_SCANNERS, ListenerPolicy,
    OffenceRule, OffenceRules, PolicyConfig, Rate, RealmConfig, RejectMode, TrunkLimits,
};
use serde::Deserialize;
use serde_saphyr::{Location, MessageFormatter, Spanned, UserMessageFormatter};

use super::{
    Config, HeaderPolicy, HeaderRewrite, KeepAliveConfig, ListenerConfig, ListenerId, MediaConfig,
    MediaOptions, NftablesConfig, PolicySettings, RegistrarConfig, RegistrarMode, RewriteConfig,
    RouteConfig, RouteMatch, Side, Target, TcpConfig, TimerConfig, TlsFiles, Transport,
    TrunkConfig, TrunkId, TrunkTls,
};

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name as given.
    pub file: String,
    /// 1-based line (0 when the problem has no position, e.g. the file cannot be read).
    pub line: usize,
    /// 1-based column (0 when the problem has no position).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ConfigError { file, line, column, message } = self;
        write!(f, "{file}:{line}:{column}: {message}")
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&name, &text),
        Err(e) => {
            let mut cx = Ctx::new(&name);
            cx.at(Location::UNKNOWN, e.to_string());
            Err(cx.errors)
        }
    }
}

/// Validates config text; `name` is used in error locations.
pub fn load_str(name: &str, text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut cx = Ctx::new(name);
    let options = serde_saphyr::options! { with_snippet: false };
    let config = match serde_saphyr::from_str_with_options::<S<FileConfig>>(text, options) {
        Ok(file) => convert(&mut cx, &file),
        Err(e) => {
            // The formatter gives the bare message (sanitised); the location is kept apart.
            let message = UserMessageFormatter.format_message(e.without_snippet());
            let at = e.location().unwrap_or(Location::UNKNOWN);
            cx.at(at, message.into_owned());
            None
        }
    };
    match config {
        Some(config) if cx.errors.is_empty() => Ok(config),
        _ => {
            debug_assert!(!cx.errors.is_empty(), "config rejected without an error");
            cx.errors.sort_by_key(|e| (e.line, e.column));
            Err(cx.errors)
        }
    }
}

type S<T> = Spanned<T>;
type List<T = String> = S<Vec<S<T>>>;
type Str = Option<S<String>>;
type Num = Option<S<u64>>;
type Bool = Option<S<bool>>;

/// Declares the structs that mirror the file: unknown keys are errors; absent keys are `None` or
/// empty. Required keys are `Option`s too, checked by [`Ctx::need`]: serde-saphyr would stop at
/// the first missing one and place it at the mapping's last key.
macro_rules! file_structs {
    ($($name:ident { $($(#[$attr:meta])* $field:ident: $ty:ty),* $(,)? })*) => {$(
        #[derive(Deserialize, Default)]
        #[serde(default, deny_unknown_fields)]
        struct $name { $($(#[$attr])* $field: $ty),* }
    )*};
}

file_structs! {
    FileConfig { sip: Option<FileSip>, listeners: Option<List<FileListener>>,
        trunks: Option<Vec<S<FileTrunk>>>, routes: Option<Vec<S<FileRoute>>>,
        admin: Option<FileAdmin>, media: Option<S<FileMedia>>, policy: Option<S<FilePolicy>>,
        capture: Option<S<FileCapture>>, records: Option<S<FileRecords>>,
        registrars: Option<Vec<S<FileRegistrar>>> }
    FileRegistrar { listener: Str, mode: Str, trunk: Str, client_expires: Str,
        upstream_expires: Str, domain: Str }
    FileCapture { mode: Str, dir: Str, max_files: Num, max_age: Str, queue: Num,
        flush_interval: Str, max_open: Num, intercept: Option<S<FileIntercept>>,
        signalling: Option<S<FileSignalling>> }
    FileIntercept { dir: Str, max_files: Num, max_age: Str, targets: Option<Vec<S<FileTarget>>> }
    FileTarget { caller: Str, callee: Str, trunk: Str }
    FileSignalling { dir: Str, rotate_size: Num, rotate_interval: Str, keep: Num }
    FileRecords { format: Str, dir: Str, pickup_dir: Str, prefix: Str, rotate: Option<FileRotate>,
        retention: Option<FileRetention>, journal: Str, journal_max_bytes: Num, queue: Num }
    FileRotate { interval: Str, max_bytes: Num }
    FileRetention { max_age: Str, max_files: Num }
    FileMedia { ports: Str, workers: Num, dscp: Num, nat: Option<S<bool>>, codecs: Option<List>,
        inactivity_timeout: Str, profile: Str, srtp_suites: Option<List>, opus_complexity: Num }
    FileLegMedia { address: Str, advertise: Str, nat: Option<S<bool>>, codecs: Option<List>,
        inactivity_timeout: Str, profile: Str, srtp_suites: Option<List> }
    FileAdmin { metrics: Str }
    FileSip { timers: Option<FileTimers>, shards: Num, max_message_size: Num, max_headers: Num,
        drain_grace: Str, tcp: Option<FileTcp> }
    FileTimers { t1: Str, t2: Str, t4: Str }
    FileTcp { idle_timeout: Str, max_connections: Num }
    FileListener { name: Str, side: Str, address: Str, port: Num, advertise: Str,
        transports: Option<List>, media: Option<S<FileLegMedia>>,
        policy: Option<S<FileListenerPolicy>>, tls: Option<S<FileTls>>, max_connections: Num,
        idle_timeout: Str }
    FileTls { certificate: Str, private_key: Str }
    FileTrunkTls { ca: Str, server_name: Str }
    FileTrunk { name: Str, listener: Str, targets: Option<List>, sources: Option<List>,
        options: Option<FileKeepAlive>, rewrite: Option<FileRewrite>, headers: Option<FileHeaders>,
        media: Option<S<FileLegMedia>>, limits: Option<FileTrunkLimits>,
        tls: Option<S<FileTrunkTls>>, dtmf: Str }
    FileKeepAlive { interval: Str, down_after: Num, up_after: Num }
    FileRewrite { strip: Num, prepend: Str, regex: Option<S<FileRegex>> }
    FileRegex { #[serde(rename = "match")] pattern: Str, replace: Str }
    FileHeaders { allow: Option<List>, remove: Option<List>, add: Option<Vec<S<FileHeader>>>,
        rewrite: Option<Vec<S<FileHeaderRewrite>>> }
    FileHeader { name: Str, value: Str }
    FileHeaderRewrite { name: Str, #[serde(rename = "match")] pattern: Str, replace: Str }
    FileRoute { name: Str, #[serde(rename = "match")] matcher: Option<FileMatch>,
        trunks: Option<List>, ring_timeout: Str }
    FileMatch { listener: Str, trunk: Str, prefix: Str, user_regex: Str, domain: Str }
    FilePolicy { allow: Option<List>, deny: Option<List>, source_message_rate: Str,
        source_call_rate: Str, source_register_rate: Str, max_tracked_sources: Num,
        cleanup_interval: Str, cac_retry_after: Str, emergency_numbers: Option<List>,
        scanner_user_agents: Option<List>, offences: Option<FileOffences>,
        bans: Option<FileBans>, nftables: Option<S<FileNftables>>, auth: Option<S<FileAuth>> }
    FileOffences { rate_exceeded: Str, auth_failure: Str, unknown_user: Str, malformed: Str,
        scanner: Str }
    FileBans { duration: Str, factor: Num, max_duration: Str, memory: Str, max_entries: Num,
        max_offenders: Num, state_file: Str }
    FileNftables { enabled: Bool, table: Str, set: Str }
    FileAuth { nonce_secret: Str, nonce_lifetime: Str, algorithms: Option<List>,
        max_nonces: Num, realms: Option<Vec<S<FileRealm>>> }
    FileRealm { realm: Str, users: Option<Vec<S<FileUser>>> }
    FileUser { name: Str, password: Str, ha1: Str, algorithm: Str }
    FileListenerPolicy { allow: Option<List>, deny: Option<List>, allow_only: Bool, reject: Num,
        max_calls_per_source: Num, realm: Str }
    FileTrunkLimits { inbound_cps: Str, outbound_cps: Str, max_inbound: Num, max_outbound: Num,
        max_total: Num }
}

/// Collects located errors. Converters return best-effort values and record every problem;
/// `None` is returned only where no value can be made, and always after recording an error.
struct Ctx<'a> {
    file: &'a str,
    errors: Vec<ConfigError>,
}

/// The result of parsing one value; the error is the message.
type Parsed<T> = Result<T, String>;

impl<'a> Ctx<'a> {
    fn new(file: &'a str) -> Self {
        let errors = Vec::new();
        Ctx { file, errors }
    }

    fn at(&mut self, at: Location, message: String) {
        let (file, line, column) = (self.file.into(), at.line() as usize, at.column() as usize);
        self.errors.push(ConfigError { file, line, column, message });
    }

    /// A required field of the mapping that starts at `at`.
    fn need<'v, T>(&mut self, at: Location, key: &str, v: &'v Option<S<T>>) -> Option<&'v S<T>> {
        if v.is_none() {
            self.at(at, format!("missing field `{key}`"));
        }
        v.as_ref()
    }

    fn check<T, B, U>(&mut self, v: &S<T>, f: impl FnOnce(&B) -> Parsed<U>) -> Option<U>
    where
        T: Borrow<B>,
        B: ?Sized,
    {
        let parsed = f(v.value.borrow());
        parsed.map_err(|m| self.at(v.referenced, m)).ok()
    }

    /// Checks an optional value: absent is `d`, bad is recorded and `None`.
    fn or<T, B, U>(&mut self, v: &Option<S<T>>, d: U, f: impl FnOnce(&B) -> Parsed<U>) -> Option<U>
    where
        T: Borrow<B>,
        B: ?Sized,
    {
        v.as_ref().map_or(Some(d), |v| self.check(v, f))
    }

    /// Parses every entry of a list, reporting bad and repeated entries.
    fn each<T: PartialEq>(
        &mut self,
        what: &str,
        list: Option<&List>,
        required: bool,
        parse: impl Fn(&str) -> Parsed<T>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        let items = list.map_or(&[][..], |l| &l.value);
        if let Some(l) = list.filter(|_| required && items.is_empty()) {
            self.at(l.referenced, format!("at least one {what} is required"));
        }
        for item in items {
            match self.check(item, &parse) {
                Some(v) if out.contains(&v) => {
                    let msg = format!("{what} {:?} is listed twice", item.value);
                    self.at(item.referenced, msg);
                }
                Some(v) => out.push(v),
                None => {}
            }
        }
        out
    }
}

/// Named sections of one kind (listeners, trunks or routes), in file order.
struct Table<'f, T> {
    kind: &'static str,
    ids: HashMap<&'f str, (usize, u64)>,
    items: Vec<Option<T>>,
}

impl<'f, T> Table<'f, T> {
    fn build<F>(
        cx: &mut Ctx,
        kind: &'static str,
        entries: &'f [S<F>],
        name: impl Fn(&'f F) -> &'f Str,
        mut convert: impl FnMut(&mut Ctx, &'f S<F>) -> Option<T>,
    ) -> Self {
        let (mut ids, mut items) = (HashMap::new(), Vec::new());
        for entry in entries {
            if let Some(n) = cx.need(entry.referenced, "name", name(&entry.value)) {
                if let Some((_, line)) = ids.get(n.value.as_str()) {
                    let msg = format!("duplicate {kind} name {:?} (first at line {line})", n.value);
                    cx.at(n.referenced, msg);
                } else if cx.check(n, valid_name).is_some() {
                    ids.insert(n.value.as_str(), (items.len(), n.referenced.line()));
                }
            }
            items.push(convert(cx, entry));
        }
        Table { kind, ids, items }
    }

    fn resolve(&self, name: &str) -> Parsed<usize> {
        let id = self.ids.get(name).map(|&(id, _)| id);
        id.ok_or_else(|| format!("unknown {} {name:?}", self.kind))
    }

    fn get(&self, id: usize) -> Option<&T> {
        self.items.get(id).and_then(Option::as_ref)
    }
}

fn convert(cx: &mut Ctx, f: &S<FileConfig>) -> Option<Config> {
    let (no_sip, no_timers, no_tcp) = Default::default();
    let sip: &FileSip = f.value.sip.as_ref().unwrap_or(&no_sip);
    let timers = timers(cx, sip.timers.as_ref().unwrap_or(&no_timers));
    let shards = cx.or(&sip.shards, 0, within("shards", 0, 1024));
    let size = within("max_message_size", 1024, 1 << 20);
    let size = cx.or(&sip.max_message_size, 65_535, size);
    let headers = cx.or(&sip.max_headers, 128, within("max_headers", 16, 1024));
    let drain_grace = cx.or(&sip.drain_grace, Duration::from_secs(30), duration);
    let tcp: &FileTcp = sip.tcp.as_ref().unwrap_or(&no_tcp);
    let idle = cx.or(&tcp.idle_timeout, Duration::from_secs(120), positive);
    let conns = within("max_connections", 1, 1_000_000);
    let conns = cx.or(&tcp.max_connections, 4096, conns);

    let listeners = cx.need(f.referenced, "listeners", &f.value.listeners);
    if let Some(l) = listeners.filter(|l| l.value.is_empty()) {
        cx.at(l.referenced, "at least one listener is required".into());
    }
    let entries = listeners.map_or(&[][..], |l| &l.value);
    // The listeners' own limits fall back to these (a bad global value: its default).
    let global = TcpConfig {
        idle_timeout: idle.unwrap_or(Duration::from_secs(120)),
        max_connections: conns.unwrap_or(4096) as usize,
    };
    let ls = Table::build(cx, "listener", entries, |l| &l.name, |c, l| listener(c, l, global));
    let mut bound = HashMap::new();
    for (fl, l) in entries.iter().zip(&ls.items) {
        let (Some(l), Some(port)) = (l, &fl.value.port) else {
            continue;
        };
        // Every stream transport binds a TCP socket: two on one address would clash.
        for &t in &l.transports {
            let first = *bound.entry((l.addr, t.is_stream())).or_insert((&l.name, t));
            // Two stream transports of one listener: `listener` already said so.
            if let (other, o) = first
                && other != &l.name
            {
                let (same, t, o, addr) = (o == t, tname(t), tname(o), l.addr);
                let msg = match same {
                    true => format!("{t} {addr} is already used by listener {other}"),
                    false => {
                        format!("{t} {addr}: the port is already used by {o} of listener {other}")
                    }
                };
                cx.at(port.referenced, msg);
            }
        }
    }
    let ft = f.value.trunks.as_deref().unwrap_or_default();
    let fr = f.value.routes.as_deref().unwrap_or_default();
    let ts = Table::build(cx, "trunk", ft, |t| &t.name, |c, t| trunk(c, t, &ls));
    let rs = Table::build(cx, "route", fr, |r| &r.name, |c, r| route(c, r, &ls, &ts));
    let no_admin = FileAdmin::default();
    let admin = f.value.admin.as_ref().unwrap_or(&no_admin);
    let metrics = admin.metrics.as_ref().map(|m| cx.check(m, socket_addr));
    let policy = policy(cx, f, entries, ft, &ls, &ts);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let media = f.value.media.as_ref().map_or(Some(MediaConfig::default()), |m| media(cx, m));
    let capture =
        f.value.capture.as_ref().map_or(Some(CaptureConfig::default()), |c| capture(cx, c, &ts));
    let records = f.value.records.as_ref().map(|r| records(cx, r));
    let fg = f.value.registrars.as_deref().unwrap_or_default();
    let registrars = registrars(cx, fg, entries, &ls, &ts);
    Some(Config {
        registrars,
        capture: capture?,
        records: records.map_or(Some(None), |r| r.map(Some))?,
        media: media?,
        policy: policy?,
        metrics: metrics.map_or(Some(None), |m| m.map(Some))?,
        timers: timers?,
        shards: shards.map(|n| if n == 0 { cores } else { n as usize })?,
        max_message_size: size? as usize,
        max_headers: headers? as usize,
        drain_grace: drain_grace?,
        tcp: TcpConfig { idle_timeout: idle?, max_connections: conns? as usize },
        listeners: ls.items.into_iter().collect::<Option<_>>()?,
        trunks: ts.items.into_iter().collect::<Option<_>>()?,
        routes: rs.items.into_iter().collect::<Option<_>>()?,
    })
}

/// The `registrars:` section: one entry per access listener that serves REGISTER.
fn registrars(
    cx: &mut Ctx,
    entries: &[S<FileRegistrar>],
    listeners: &[S<FileListener>],
    ls: &Table<ListenerConfig>,
    ts: &Table<TrunkConfig>,
) -> Vec<RegistrarConfig> {
    let (mut out, mut seen): (Vec<RegistrarConfig>, Vec<usize>) = Default::default();
    for e in entries {
        let (at, r) = (e.referenced, &e.value);
        let listener = cx.need(at, "listener", &r.listener).and_then(|n| {
            cx.check(n, |s: &str| {
                let id = ls.resolve(s)?;
                match ls.get(id).map(|l| l.side) {
                    Some(Side::Trunk) => Err(format!("listener {s} is not an access listener")),
                    _ if seen.contains(&id) => Err(format!("listener {s} already has a registrar")),
                    _ => {
                        seen.push(id);
                        Ok(ListenerId(id))
                    }
                }
            })
        });
        let client_expires = cx.or(&r.client_expires, Duration::from_secs(60), seconds);
        let mode = cx.need(at, "mode", &r.mode).and_then(|m| {
            cx.check(m, |s: &str| match s {
                "relay" | "local" => Ok(s == "relay"),
                _ => Err(format!("unknown registrar mode {s:?} (expected relay or local)")),
            })
        });
        let mode = match mode {
            Some(true) => {
                let trunk = cx.need(at, "trunk", &r.trunk);
                let trunk = trunk.and_then(|t| cx.check(t, |s: &str| ts.resolve(s)));
                let upstream = cx.or(&r.upstream_expires, Duration::from_secs(600), seconds);
                if let Some(d) = &r.domain {
                    cx.at(d.referenced, "domain goes with mode local".into());
                }
                match (trunk, upstream) {
                    (Some(t), Some(u)) => {
                        Some(RegistrarMode::Relay { trunk: TrunkId(t), upstream_expires: u })
                    }
                    _ => None,
                }
            }
            Some(false) => {
                for (key, v) in [("trunk", &r.trunk), ("upstream_expires", &r.upstream_expires)] {
                    if let Some(v) = v {
                        cx.at(v.referenced, format!("{key} goes with mode relay"));
                    }
                }
                // The users are the digest users of the listener's realm.
                let realm = listener.and_then(|l| listeners.get(l.0)).and_then(|l| {
                    let p = l.value.policy.as_ref()?;
                    p.value.realm.as_ref().map(|r| r.value.clone())
                });
                if listener.is_some() && realm.is_none() {
                    let at = r.mode.as_ref().map_or(at, |m| m.referenced);
                    cx.at(at, "mode local needs a realm on the listener (policy.realm)".into());
                }
                match &r.domain {
                    Some(d) => cx.check(d, domain),
                    None => realm.map(|r| r.to_ascii_lowercase()),
                }
                .map(|domain| RegistrarMode::Local { domain })
            }
            None => None,
        };
        if let (Some(listener), Some(mode), Some(client_expires)) = (listener, mode, client_expires)
        {
            out.push(RegistrarConfig { listener, mode, client_expires });
        }
    }
    out
}

/// A registration lifetime: whole seconds, at least 10 (RFC 3261 section 10.2.1.1 lets a
/// registrar refuse shorter ones; shorter would only load the network).
fn seconds(s: &str) -> Parsed<Duration> {
    let d = duration(s)?;
    match d.subsec_millis() == 0 && d.as_secs() >= 10 && d.as_secs() <= 86_400 {
        true => Ok(d),
        false => Err(format!("registration lifetime {s:?} must be whole seconds in 10s..=24h")),
    }
}

/// A registrar domain: a host name or IP literal, no scheme, port or user.
fn domain(s: &str) -> Parsed<String> {
    match only(s, "-.:[]") {
        true => Ok(s.to_ascii_lowercase()),
        false => Err(format!("invalid domain {s:?} (e.g. example.com)")),
    }
}

/// The `records:` section: CDR files, their rotation and retention, the journal.
fn records(cx: &mut Ctx, fr: &S<FileRecords>) -> Option<SinkConfig> {
    let (at, r) = (fr.referenced, &fr.value);
    let (no_rotate, no_retention) = Default::default();
    let rotate: &FileRotate = r.rotate.as_ref().unwrap_or(&no_rotate);
    let retention: &FileRetention = r.retention.as_ref().unwrap_or(&no_retention);
    let format = cx.need(at, "format", &r.format).and_then(|v| cx.check(v, record_format));
    let dir = cx.need(at, "dir", &r.dir).and_then(|v| cx.check(v, path));
    let pickup = r.pickup_dir.as_ref().map(|v| cx.check(v, path));
    let prefix = cx.or(&r.prefix, (), valid_name);
    let interval = cx.or(&rotate.interval, Duration::from_secs(900), positive);
    let max_bytes = within("max_bytes", 1024, 1 << 40);
    let max_bytes = cx.or(&rotate.max_bytes, 64 << 20, max_bytes);
    let max_age = retention.max_age.as_ref().map(|v| cx.check(v, positive));
    let max_files = within("max_files", 1, 1_000_000);
    let max_files = retention.max_files.as_ref().map(|v| cx.check(v, max_files));
    let journal = r.journal.as_ref().map(|v| cx.check(v, path));
    let journal_max = within("journal_max_bytes", 4096, 1 << 40);
    let journal_max = cx.or(&r.journal_max_bytes, 16 << 20, journal_max);
    let queue = cx.or(&r.queue, 100_000, within("queue", 1, 10_000_000));
    let dir = dir?;
    prefix?;
    let pickup_dir = match pickup {
        Some(p) => p?,
        None => dir.clone(),
    };
    let journal = match journal {
        Some(j) => j?,
        None => dir.join(".journal"),
    };
    Some(SinkConfig {
        writer: WriterConfig {
            format: format?,
            dir,
            pickup_dir,
            prefix: r.prefix.as_ref().map_or_else(|| "cdr".to_owned(), |p| p.value.clone()),
            rotate_interval: interval?,
            rotate_bytes: max_bytes?,
            max_age: max_age.map_or(Some(None), |a| a.map(Some))?,
            max_files: max_files.map_or(Some(None), |m| m.map(|m| Some(m as usize)))?,
            queue: queue? as usize,
        },
        journal: Some(journal),
        journal_max_bytes: journal_max?,
        // Events in flight between the shards and the CDR thread: a few seconds of a busy SBC.
        channel: 65_536,
    })
}

fn record_format(s: &str) -> Parsed<Format> {
    match s {
        "csv" => Ok(Format::Csv),
        "jsonl" => Ok(Format::Jsonl),
        _ => Err(format!("unknown record format {s:?} (expected csv or jsonl)")),
    }
}

fn path(s: &str) -> Parsed<PathBuf> {
    match s.is_empty() {
        true => Err("path must not be empty".into()),
        false => Ok(PathBuf::from(s)),
    }
}

fn timers(cx: &mut Ctx, t: &FileTimers) -> Option<TimerConfig> {
    let d = TimerConfig::default();
    let t1 = cx.or(&t.t1, d.t1, positive);
    let t2 = cx.or(&t.t2, d.t2, positive);
    let t4 = cx.or(&t.t4, d.t4, positive);
    let (t1, t2, t4) = (t1?, t2?, t4?);
    // The defaults are in order, so t2 or t1 is set.
    if let Some(at) = t.t2.as_ref().or(t.t1.as_ref()).filter(|_| t2 < t1) {
        let msg = format!("t2 ({t2:?}) is less than t1 ({t1:?})");
        cx.at(at.referenced, msg);
    }
    Some(TimerConfig { t1, t2, t4 })
}

fn listener(cx: &mut Ctx, fl: &S<FileListener>, global: TcpConfig) -> Option<ListenerConfig> {
    let (at, l) = (fl.referenced, &fl.value);
    let side = cx.need(at, "side", &l.side).and_then(|v| cx.check(v, side));
    let address = cx.need(at, "address", &l.address);
    let ip = address.and_then(|v| cx.check(v, ip));
    let port = cx.need(at, "port", &l.port).and_then(|v| cx.check(v, port));
    let advertise = match (&l.advertise, ip, address) {
        (Some(a), _, _) => cx.check(a, advertise),
        (None, Some(ip), Some(a)) if ip.is_unspecified() => {
            cx.at(a.referenced, format!("{ip} needs an advertise address"));
            None
        }
        (None, ip, _) => ip,
    };
    let transports = match &l.transports {
        Some(ts) => cx.each("transport", Some(ts), true, transport),
        None => vec![Transport::Udp],
    };
    // The stream transports each need their own port: they cannot be told apart on one socket
    // before the first bytes (and WS and WSS before the HTTP upgrade).
    let mut stream = None;
    for item in l.transports.iter().flat_map(|ts| &ts.value) {
        // Unknown and repeated entries were reported by `each`.
        let Ok(t) = transport(&item.value) else { continue };
        let t = &t;
        match stream {
            Some(first) if t.is_stream() && first != *t => {
                let msg = format!(
                    "{} and {} cannot share port {}: use another listener for {}",
                    tname(first),
                    tname(*t),
                    l.port.as_ref().map_or(0, |p| p.value),
                    tname(*t)
                );
                cx.at(item.referenced, msg);
            }
            None if t.is_stream() => stream = Some(*t),
            _ => {}
        }
    }
    let secure = transports.iter().find(|t| t.is_secure()).copied();
    let tls = match (&l.tls, secure) {
        (Some(ft), Some(_)) => {
            let cert = cx.need(ft.referenced, "certificate", &ft.value.certificate);
            let key = cx.need(ft.referenced, "private_key", &ft.value.private_key);
            let cert = cert.and_then(|v| cx.check(v, path));
            let key = key.and_then(|v| cx.check(v, path));
            match (cert, key) {
                (Some(certificate), Some(private_key)) => {
                    Some(Some(TlsFiles { certificate, private_key }))
                }
                _ => None,
            }
        }
        // Recorded, but the listener is still made so that later checks run on it.
        (Some(ft), None) => {
            cx.at(ft.referenced, "tls is set but the listener serves neither tls nor wss".into());
            Some(None)
        }
        (None, Some(t)) => {
            let msg = format!("{} needs `tls: {{certificate, private_key}}`", tname(t));
            cx.at(at, msg);
            Some(None)
        }
        (None, None) => Some(None),
    };
    // Per-listener limits override the global `sip.tcp` ones, key by key.
    let conns =
        l.max_connections.as_ref().map(|v| cx.check(v, within("max_connections", 1, 1_000_000)));
    let idle = l.idle_timeout.as_ref().map(|v| cx.check(v, positive));
    let set = l.max_connections.as_ref().map(|v| v.referenced);
    if let Some(at) = set.or(l.idle_timeout.as_ref().map(|v| v.referenced))
        && !transports.iter().any(|t| t.is_stream())
    {
        cx.at(at, "connection limits need a tcp, tls, ws or wss transport".into());
    }
    let limits = match (conns, idle) {
        (None, None) => Some(None),
        (Some(None), _) | (_, Some(None)) => None,
        (conns, idle) => Some(Some(TcpConfig {
            max_connections: conns.flatten().map_or(global.max_connections, |c| c as usize),
            idle_timeout: idle.flatten().unwrap_or(global.idle_timeout),
        })),
    };
    let no_media = S { value: FileLegMedia::default(), referenced: at, defined: at };
    let fm = l.media.as_ref().unwrap_or(&no_media);
    let media = leg_media(cx, fm);
    let media_bind = fm.value.address.as_ref().map(|a| cx.check(a, self::ip));
    let media_advertise = fm.value.advertise.as_ref().map(|a| cx.check(a, self::advertise));
    let (name, addr) = (l.name.as_ref()?.value.clone(), SocketAddr::new(ip?, port?));
    let (side, advertise) = (side?, advertise?);
    let media_bind = media_bind.unwrap_or(Some(addr.ip()))?;
    let media_advertise = match media_advertise {
        Some(a) => a?,
        None if media_bind.is_unspecified() => advertise,
        None => media_bind,
    };
    if media_bind.is_ipv4() != media_advertise.is_ipv4() && !media_bind.is_unspecified() {
        let msg =
            format!("media address {media_bind} and advertise {media_advertise} differ in family");
        cx.at(fm.referenced, msg);
    }
    let media = media?;
    Some(ListenerConfig {
        name,
        side,
        addr,
        advertise,
        transports,
        media_bind,
        media_advertise,
        media,
        tls: tls?,
        limits: limits?,
    })
}

fn trunk(cx: &mut Ctx, ft: &S<FileTrunk>, ls: &Table<ListenerConfig>) -> Option<TrunkConfig> {
    let (at, t) = (ft.referenced, &ft.value);
    let listener = cx.need(at, "listener", &t.listener);
    let listener = listener.and_then(|v| cx.check(v, |s: &str| ls.resolve(s)));
    let via = listener.and_then(|id| ls.get(id));
    let targets = cx.need(at, "targets", &t.targets);
    let targets = cx.each("target", targets, true, |s| {
        let target = target(s)?;
        via.map_or(Ok(target), |l| reachable(l, &target).map(|()| target))
    });
    let sources = cx.each("source", t.sources.as_ref(), false, cidr);
    let options = t.options.as_ref().map(|o| {
        let (down, up) = (within("down_after", 1, 100), within("up_after", 1, 100));
        let interval = cx.or(&o.interval, Duration::from_secs(30), positive);
        let (down, up) = (cx.or(&o.down_after, 3, down), cx.or(&o.up_after, 2, up));
        let (down_after, up_after) = (down.unwrap_or(1) as u32, up.unwrap_or(1) as u32);
        KeepAliveConfig { interval: interval.unwrap_or_default(), down_after, up_after }
    });
    let rewrite = t.rewrite.as_ref().map(|r| RewriteConfig {
        strip: cx.or(&r.strip, 0, within("strip", 0, 32)).unwrap_or(0) as usize,
        prepend: cx.or(&r.prepend, String::new(), user_part).unwrap_or_default(),
        regex: r.regex.as_ref().and_then(|x| {
            let pattern = cx.need(x.referenced, "match", &x.value.pattern);
            let pattern = pattern.and_then(|p| cx.check(p, regex));
            let replace = cx.need(x.referenced, "replace", &x.value.replace);
            Some((pattern?, replace?.value.clone()))
        }),
    });
    let headers = t.headers.as_ref().map(|h| HeaderPolicy {
        allow: cx.each("header", h.allow.as_ref(), false, header_name),
        remove: cx.each("header", h.remove.as_ref(), false, header_name),
        add: h.add.iter().flatten().filter_map(|a| header_add(cx, a)).collect(),
        rewrite: h.rewrite.iter().flatten().filter_map(|r| header_rewrite(cx, r)).collect(),
    });
    let media = match &t.media {
        Some(m) => {
            for (key, v) in [("address", &m.value.address), ("advertise", &m.value.advertise)] {
                if let Some(v) = v {
                    let msg = format!("media {key} is set on the trunk's listener, not the trunk");
                    cx.at(v.referenced, msg);
                }
            }
            leg_media(cx, m)
        }
        None => Some(MediaOptions::default()),
    };
    let tls = match &t.tls {
        Some(ft) => {
            let raw = t.targets.iter().flat_map(|l| &l.value);
            if !raw.into_iter().any(|t| t.value.ends_with(";transport=tls")) {
                let msg = "tls is set but no target has ;transport=tls".into();
                cx.at(ft.referenced, msg);
            }
            let ca = ft.value.ca.as_ref().map(|v| cx.check(v, path));
            let server_name = ft.value.server_name.as_ref().map(|v| cx.check(v, server_name));
            Some(TrunkTls {
                ca: ca.map_or(Some(None), |c| c.map(Some))?,
                server_name: server_name.map_or(Some(None), |n| n.map(Some))?,
            })
        }
        None => None,
    };
    let (name, listener) = (t.name.as_ref()?.value.clone(), ListenerId(listener?));
    let (rewrite, headers) = (rewrite.unwrap_or_default(), headers.unwrap_or_default());
    let media = media?;
    let dtmf = cx.or(&t.dtmf, DtmfMode::Rfc4733, dtmf_mode).unwrap_or_default();
    Some(TrunkConfig {
        name,
        listener,
        targets,
        sources,
        options,
        rewrite,
        headers,
        media,
        tls,
        dtmf,
    })
}

fn media(cx: &mut Ctx, fm: &S<FileMedia>) -> Option<MediaConfig> {
    let (m, d) = (&fm.value, MediaConfig::default());
    let ports = cx.or(&m.ports, (d.port_min, d.port_max), port_range);
    let workers = cx.or(&m.workers, 0, within("workers", 0, 256));
    let dscp = cx.or(&m.dscp, 46, within("dscp", 0, 63));
    let opus_complexity =
        cx.or(&m.opus_complexity, d.opus_complexity.into(), within("opus_complexity", 0, 10));
    let options = leg_media(
        cx,
        &S {
            value: FileLegMedia {
                nat: m.nat.clone(),
                codecs: m.codecs.clone(),
                inactivity_timeout: m.inactivity_timeout.clone(),
                profile: m.profile.clone(),
                srtp_suites: m.srtp_suites.clone(),
                ..FileLegMedia::default()
            },
            referenced: fm.referenced,
            defined: fm.defined,
        },
    );
    let (port_min, port_max) = ports?;
    Some(MediaConfig {
        port_min,
        port_max,
        workers: workers? as usize,
        // DSCP 0 is the kernel's default: nothing to set.
        dscp: dscp.map(|v| u8::try_from(v).ok().filter(|&v| v != 0))?,
        // Invariant: within 0..=10, checked above.
        opus_complexity: opus_complexity? as u8,
        defaults: options?.or(&d.defaults),
    })
}

/// The `capture:` section. No message about an intercept target names its content: the target
/// list must not reach a log (a config error is logged).
fn capture(cx: &mut Ctx, fc: &S<FileCapture>, ts: &Table<TrunkConfig>) -> Option<CaptureConfig> {
    let (c, d) = (&fc.value, CaptureConfig::default());
    let mode = cx.or(&c.mode, CaptureMode::None, capture_mode);
    let dir = c.dir.as_ref().map(|v| PathBuf::from(&v.value));
    let max_files = c.max_files.as_ref().map(|n| cx.check(n, within("max_files", 1, 10_000_000)));
    let max_age = c.max_age.as_ref().map(|a| cx.check(a, positive));
    let queue = cx.or(&c.queue, d.queue as u64, within("queue", 16, 1 << 20));
    let flush = cx.or(&c.flush_interval, d.flush_interval, positive);
    let max_open = cx.or(&c.max_open, d.max_open as u64, within("max_open", 1, 1 << 20));
    let intercept = c.intercept.as_ref().map(|i| intercept(cx, i, ts));
    let signalling = c.signalling.as_ref().map(|s| signalling(cx, s));
    if let Some(m) = &c.mode {
        if mode == Some(CaptureMode::All) && dir.is_none() {
            cx.at(m.referenced, "capture mode all needs `dir`".into());
        }
        if mode == Some(CaptureMode::Targets) && c.intercept.is_none() {
            cx.at(m.referenced, "capture mode targets needs an `intercept` section".into());
        }
    }
    let (intercept, intercept_retention) = match intercept {
        Some(i) => {
            let (i, r) = i?;
            (Some(i), r)
        }
        None => (None, d.intercept_retention),
    };
    Some(CaptureConfig {
        mode: mode?,
        dir,
        retention: Retention {
            max_files: match max_files {
                Some(n) => Some(n? as usize),
                None => d.retention.max_files,
            },
            max_age: max_age.map_or(Some(None), |a| a.map(Some))?,
        },
        intercept,
        intercept_retention,
        signalling: signalling.map_or(Some(None), |s| s.map(Some))?,
        queue: queue? as usize,
        flush_interval: flush?,
        max_open: max_open? as usize,
    })
}

fn capture_mode(s: &str) -> Parsed<CaptureMode> {
    match s {
        "none" => Ok(CaptureMode::None),
        "targets" => Ok(CaptureMode::Targets),
        "all" => Ok(CaptureMode::All),
        _ => Err(format!("invalid capture mode {s:?} (none, targets or all)")),
    }
}

/// Says what is wrong with a target regex without repeating it.
const BAD_RE: &str = "is not a valid regular expression";

fn intercept(
    cx: &mut Ctx,
    fi: &S<FileIntercept>,
    ts: &Table<TrunkConfig>,
) -> Option<(InterceptConfig, Retention)> {
    let i = &fi.value;
    let dir = cx.need(fi.referenced, "dir", &i.dir).map(|d| PathBuf::from(&d.value));
    let max_files = i.max_files.as_ref().map(|n| cx.check(n, within("max_files", 1, 10_000_000)));
    let max_age = i.max_age.as_ref().map(|a| cx.check(a, positive));
    // Every target is checked, also after a bad one; only then is the list refused.
    let (mut rules, mut valid) = (TargetRules::new(), true);
    for (index, t) in i.targets.as_deref().unwrap_or_default().iter().enumerate() {
        let v = &t.value;
        let given = [v.caller.is_some(), v.callee.is_some(), v.trunk.is_some()];
        let added = match (&v.caller, &v.callee, &v.trunk) {
            _ if given.iter().filter(|&&g| g).count() != 1 => {
                Err((t.referenced, "needs exactly one of caller, callee, trunk"))
            }
            (Some(re), _, _) => {
                rules.clone().caller(&re.value).map_err(|_| (re.referenced, BAD_RE))
            }
            (_, Some(re), _) => {
                rules.clone().callee(&re.value).map_err(|_| (re.referenced, BAD_RE))
            }
            (_, _, Some(name)) if ts.resolve(&name.value).is_err() => {
                Err((name.referenced, "does not name a defined trunk"))
            }
            (_, _, Some(name)) => Ok(rules.clone().trunk(&name.value)),
            (None, None, None) => continue,
        };
        match added {
            Ok(more) => rules = more,
            Err((at, what)) => {
                cx.at(at, format!("intercept target {index} {what}"));
                valid = false;
            }
        }
    }
    let targets = valid.then_some(rules);
    let retention = Retention {
        max_files: max_files.map_or(Some(None), |n| n.map(|n| Some(n as usize)))?,
        max_age: max_age.map_or(Some(None), |a| a.map(Some))?,
    };
    Some((InterceptConfig { dir: dir?, targets: targets? }, retention))
}

fn signalling(cx: &mut Ctx, fs: &S<FileSignalling>) -> Option<SignallingCapture> {
    let s = &fs.value;
    let dir = cx.need(fs.referenced, "dir", &s.dir).map(|d| PathBuf::from(&d.value));
    let size = cx.or(&s.rotate_size, 100 << 20, within("rotate_size", 4096, 1 << 40));
    let interval = cx.or(&s.rotate_interval, Duration::from_secs(3600), positive);
    let keep = cx.or(&s.keep, 24, within("keep", 1, 1_000_000));
    Some(SignallingCapture {
        dir: dir?,
        rotate_bytes: size?,
        rotate_interval: interval?,
        keep: keep? as usize,
    })
}

/// `MIN-MAX`: an even first port and room for at least one RTP/RTCP pair.
fn port_range(s: &str) -> Parsed<(u16, u16)> {
    let bad = || format!("invalid port range {s:?} (e.g. 30000-39999)");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo < 1024 || !lo.is_multiple_of(2) || hi <= lo {
        return Err(format!(
            "port range {s:?} must start at an even port >= 1024 and end above it"
        ));
    }
    Ok((lo, hi))
}

fn leg_media(cx: &mut Ctx, fm: &S<FileLegMedia>) -> Option<MediaOptions> {
    let m = &fm.value;
    let codecs = m.codecs.as_ref().map(|c| cx.each("codec", Some(c), false, codec));
    let timeout = m
        .inactivity_timeout
        .as_ref()
        .map(|t| cx.check(t, |s: &str| if s == "off" { Ok(None) } else { positive(s).map(Some) }));
    let profile = m.profile.as_ref().map(|p| cx.check(p, media_profile));
    let suites = m.srtp_suites.as_ref().map(|l| cx.each("SRTP suite", Some(l), true, srtp_suite));
    Some(MediaOptions {
        nat: m.nat.as_ref().map(|n| n.value),
        codecs,
        inactivity_timeout: match timeout {
            Some(t) => Some(t?),
            None => None,
        },
        profile: match profile {
            Some(p) => Some(p?),
            None => None,
        },
        srtp_suites: suites,
    })
}

/// `rfc4733` or `info`.
fn dtmf_mode(s: &str) -> Parsed<DtmfMode> {
    match s {
        "rfc4733" => Ok(DtmfMode::Rfc4733),
        "info" => Ok(DtmfMode::Info),
        _ => Err(format!("invalid dtmf {s:?} (rfc4733 or info)")),
    }
}

/// `rtp`, `sdes` or `webrtc`.
fn media_profile(s: &str) -> Parsed<MediaProfile> {
    MediaProfile::from_name(s)
        .ok_or_else(|| format!("invalid media profile {s:?} (rtp, sdes or webrtc)"))
}

/// An SDES crypto suite as in `a=crypto` (RFC 4568 §6.2, RFC 7714 §14.2).
fn srtp_suite(s: &str) -> Parsed<SrtpProfile> {
    sbc_media::profile::suite_from_name(s).ok_or_else(|| {
        format!(
            "invalid SRTP suite {s:?} (AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, \
             AEAD_AES_128_GCM, AEAD_AES_256_GCM)"
        )
    })
}

/// An RTP encoding name as in `a=rtpmap` (`PCMU`, `telephone-event`, `opus`).
fn codec(s: &str) -> Parsed<String> {
    match !s.is_empty() && only(s, "-_.") {
        true => Ok(s.to_owned()),
        false => Err(format!("invalid codec name {s:?} (e.g. PCMU, PCMA, telephone-event)")),
    }
}

fn header_add(cx: &mut Ctx, a: &S<FileHeader>) -> Option<(String, String)> {
    let name = cx.need(a.referenced, "name", &a.value.name);
    let name = name.and_then(|n| cx.check(n, header_name));
    let value = cx.need(a.referenced, "value", &a.value.value);
    Some((name?, value.and_then(|v| cx.check(v, header_value))?))
}

fn header_rewrite(cx: &mut Ctx, r: &S<FileHeaderRewrite>) -> Option<HeaderRewrite> {
    let name = cx.need(r.referenced, "name", &r.value.name);
    let name = name.and_then(|n| cx.check(n, header_name));
    let pattern = cx.need(r.referenced, "match", &r.value.pattern);
    let pattern = pattern.and_then(|p| cx.check(p, regex));
    let replace = cx.need(r.referenced, "replace", &r.value.replace);
    let replace = replace.and_then(|v| cx.check(v, header_value));
    Some(HeaderRewrite { name: name?, pattern: pattern?, replace: replace? })
}

fn route(
    cx: &mut Ctx,
    fr: &S<FileRoute>,
    ls: &Table<ListenerConfig>,
    ts: &Table<TrunkConfig>,
) -> Option<RouteConfig> {
    let (at, r) = (fr.referenced, &fr.value);
    let mut matcher = RouteMatch::default();
    if let Some(m) = &r.matcher {
        let listener = m.listener.as_ref();
        let listener = listener.and_then(|n| cx.check(n, |s: &str| ls.resolve(s)));
        let trunk = m.trunk.as_ref();
        let trunk = trunk.and_then(|n| cx.check(n, |s| recognisable(s, ls, ts)));
        matcher.trunk = trunk.map(TrunkId);
        matcher.listener = listener.map(ListenerId);
        matcher.prefix = m.prefix.as_ref().and_then(|p| cx.check(p, user_part));
        matcher.user_regex = m.user_regex.as_ref().and_then(|p| cx.check(p, regex));
        matcher.domain = m.domain.as_ref().map(|d| d.value.clone());
    }
    let names = cx.need(at, "trunks", &r.trunks);
    let out = cx.each("trunk", names, true, |s| ts.resolve(s).map(TrunkId));
    let ring_timeout = cx.or(&r.ring_timeout, Duration::from_secs(120), positive);
    let (name, ring_timeout) = (r.name.as_ref()?.value.clone(), ring_timeout?);
    Some(RouteConfig { name, matcher, trunks: out, ring_timeout })
}

/// Resolves a route's `match.trunk`: only a trunk recognised by source address can match.
fn recognisable(name: &str, ls: &Table<ListenerConfig>, ts: &Table<TrunkConfig>) -> Parsed<usize> {
    let id = ts.resolve(name)?;
    // A trunk or listener that did not convert already has its own errors.
    let Some(t) = ts.get(id) else { return Ok(id) };
    let trunk_side = ls.get(t.listener.0).is_none_or(|l| l.side == Side::Trunk);
    let why = match (t.sources.is_empty(), trunk_side) {
        (false, true) => return Ok(id),
        (true, true) => "no sources",
        (false, false) => "not on a trunk-side listener",
        (true, false) => "no sources, not on a trunk-side listener",
    };
    Err(format!("trunk {name} can never be recognised as a call source ({why})"))
}

/// The defaults of the `policy` section (also when it is absent): what an SBC on the public
/// internet needs out of the box without limiting legitimate load. Per-source message rate:
/// 1000/s with bursts of 2000, an order of magnitude above a busy office behind one NAT (a phone
/// sends one or two messages a second); trunk sources and targets are exempt. Scanners
/// (`KNOWN_SCANNERS`) are banned on their first request; 200 rate drops in 10 s, 10 failed
/// authentications, 20 requests for unknown users or 20 malformed messages in a minute ban a
/// source for 10 min, doubling on each repeat within a day, up to a day.
fn default_rules() -> PolicyConfig {
    let rule = |threshold, window| Some(OffenceRule { threshold, window });
    PolicyConfig {
        source_message_rate: Some(Rate::per_second(1000).with_burst(2000)),
        scanner_user_agents: KNOWN_SCANNERS.iter().map(|s| s.to_string()).collect(),
        offences: OffenceRules {
            rate_exceeded: rule(200, Duration::from_secs(10)),
            auth_failure: rule(10, Duration::from_secs(60)),
            unknown_user: rule(20, Duration::from_secs(60)),
            malformed: rule(20, Duration::from_secs(60)),
            scanner: rule(1, Duration::from_secs(60)),
        },
        ..PolicyConfig::default()
    }
}

fn policy(
    cx: &mut Ctx,
    f: &S<FileConfig>,
    listeners: &[S<FileListener>],
    trunks: &[S<FileTrunk>],
    ls: &Table<ListenerConfig>,
    ts: &Table<TrunkConfig>,
) -> Option<PolicySettings> {
    let no_policy =
        S { value: FilePolicy::default(), referenced: f.referenced, defined: f.defined };
    let fp = f.value.policy.as_ref().unwrap_or(&no_policy);
    let (at, p) = (fp.referenced, &fp.value);
    let d = default_rules();
    let mut rules = PolicyConfig {
        access: AccessLists {
            allow: cx.each("network", p.allow.as_ref(), false, cidr),
            deny: cx.each("network", p.deny.as_ref(), false, cidr),
        },
        ..d.clone()
    };
    rules.source_message_rate =
        cx.or(&p.source_message_rate, d.source_message_rate, rate).unwrap_or_default();
    rules.source_call_rate = cx.or(&p.source_call_rate, None, rate).unwrap_or_default();
    rules.source_register_rate = cx.or(&p.source_register_rate, None, rate).unwrap_or_default();
    let tracked = within("max_tracked_sources", 16, 100_000_000);
    rules.max_tracked_sources =
        cx.or(&p.max_tracked_sources, 100_000, tracked).unwrap_or_default() as usize;
    rules.cleanup_interval =
        cx.or(&p.cleanup_interval, d.cleanup_interval, positive).unwrap_or_default();
    rules.cac_retry_after =
        cx.or(&p.cac_retry_after, d.cac_retry_after, positive).unwrap_or_default();
    if p.emergency_numbers.is_some() {
        rules.emergency_numbers = cx.each("number", p.emergency_numbers.as_ref(), false, number);
    }
    if p.scanner_user_agents.is_some() {
        let ua = p.scanner_user_agents.as_ref();
        rules.scanner_user_agents = cx.each("user agent", ua, false, header_value);
    }
    let no_offences = FileOffences::default();
    let o = p.offences.as_ref().unwrap_or(&no_offences);
    let r = d.offences;
    rules.offences = OffenceRules {
        rate_exceeded: cx.or(&o.rate_exceeded, r.rate_exceeded, offence_rule).unwrap_or_default(),
        auth_failure: cx.or(&o.auth_failure, r.auth_failure, offence_rule).unwrap_or_default(),
        unknown_user: cx.or(&o.unknown_user, r.unknown_user, offence_rule).unwrap_or_default(),
        malformed: cx.or(&o.malformed, r.malformed, offence_rule).unwrap_or_default(),
        scanner: cx.or(&o.scanner, r.scanner, offence_rule).unwrap_or_default(),
    };
    let no_bans = FileBans::default();
    let b = p.bans.as_ref().unwrap_or(&no_bans);
    let db = BanConfig::default();
    let sizes = |key| within(key, 1, 100_000_000);
    let bans = BanConfig {
        duration: cx.or(&b.duration, db.duration, positive).unwrap_or_default(),
        factor: cx.or(&b.factor, u64::from(db.factor), within("factor", 1, 100)).unwrap_or_default()
            as u32,
        max_duration: cx.or(&b.max_duration, db.max_duration, positive).unwrap_or_default(),
        memory: cx.or(&b.memory, db.memory, duration).unwrap_or_default(),
        max_entries: cx
            .or(&b.max_entries, db.max_entries as u64, sizes("max_entries"))
            .unwrap_or_default() as usize,
        max_offenders: cx.or(&b.max_offenders, 100_000, sizes("max_offenders")).unwrap_or_default()
            as usize,
    };
    if let (Some(max), true) = (&b.max_duration, bans.max_duration < bans.duration) {
        cx.at(max.referenced, "max_duration is less than duration".into());
    }
    rules.bans = bans;
    let ban_file = b.state_file.as_ref().and_then(|v| cx.check(v, state_file));
    let nftables = p.nftables.as_ref().and_then(|n| nftables(cx, n));
    rules.queue_ban_changes = nftables.is_some();
    let realm_names = match &p.auth {
        Some(a) => auth(cx, a, &mut rules),
        None => Vec::new(),
    };
    rules.listeners = listeners
        .iter()
        .zip(&ls.items)
        .map(|(fl, l)| listener_policy(cx, fl, l.as_ref(), &realm_names))
        .collect();
    rules.trunks = trunks.iter().map(|t| trunk_limits(cx, &t.value)).collect();
    let trusted = ts.items.iter().flatten().flat_map(|t| {
        let targets = t.targets.iter().map(|t| IpNetwork::from(t.addr.ip()));
        t.sources.iter().copied().chain(targets)
    });
    let mut checked = rules.clone();
    checked.access.allow.extend(trusted);
    if cx.errors.is_empty()
        && let Err(e) = sbc_policy::Policy::with_config(checked)
    {
        // The checks above cover what the policy refuses; this catches a mismatch.
        cx.at(at, format!("policy: {e}"));
    }
    Some(PolicySettings { rules, ban_file, nftables })
}

fn nftables(cx: &mut Ctx, n: &S<FileNftables>) -> Option<NftablesConfig> {
    let v = &n.value;
    let enabled = v.enabled.as_ref().is_some_and(|e| e.value);
    let table = cx.or(&v.table, "sbc".to_owned(), nft_name);
    let set = cx.or(&v.set, "banned".to_owned(), nft_name);
    let (table, set) = (table?, set?);
    enabled.then_some(NftablesConfig { table, set })
}

/// Reads `policy.auth` into `rules`; returns the realm names (for `listeners[].policy.realm`).
fn auth(cx: &mut Ctx, a: &S<FileAuth>, rules: &mut PolicyConfig) -> Vec<String> {
    let v = &a.value;
    rules.nonce_lifetime =
        cx.or(&v.nonce_lifetime, rules.nonce_lifetime, positive).unwrap_or_default();
    let nonces = within("max_nonces", 16, 100_000_000);
    rules.max_nonces =
        cx.or(&v.max_nonces, rules.max_nonces as u64, nonces).unwrap_or_default() as usize;
    if v.algorithms.is_some() {
        rules.auth_algorithms = cx.each("algorithm", v.algorithms.as_ref(), true, algorithm);
    }
    rules.nonce_secret = match &v.nonce_secret {
        Some(secret) => cx.check(secret, nonce_secret).unwrap_or_default().into_bytes().into(),
        // Random per start: nonces then do not survive a restart, and clients holding one are
        // told `stale=true` and re-authenticate without asking the user.
        None => rand::random::<[u8; 32]>().to_vec().into(),
    };
    let mut names: Vec<String> = Vec::new();
    for r in v.realms.iter().flatten() {
        let name = cx.need(r.referenced, "realm", &r.value.realm);
        let name = name.and_then(|n| {
            let parsed = cx.check(n, realm_name)?;
            if names.contains(&parsed) {
                cx.at(n.referenced, format!("realm {parsed:?} is defined twice"));
                return None;
            }
            Some(parsed)
        });
        let mut users: Vec<AuthUser> = Vec::new();
        for u in r.value.users.iter().flatten() {
            if let Some(user) = auth_user(cx, u) {
                if users.iter().any(|x| x.name == user.name) {
                    let at = u.value.name.as_ref().map_or(u.referenced, |n| n.referenced);
                    cx.at(at, format!("user {:?} is listed twice", user.name));
                } else {
                    users.push(user);
                }
            }
        }
        if let Some(name) = name {
            names.push(name.clone());
            rules.realms.push(RealmConfig { realm: name, users });
        }
    }
    names
}

fn auth_user(cx: &mut Ctx, u: &S<FileUser>) -> Option<AuthUser> {
    let v = &u.value;
    let name = cx.need(u.referenced, "name", &v.name).and_then(|n| cx.check(n, digest_name));
    let credential = match (&v.password, &v.ha1) {
        (Some(pw), None) => {
            if let Some(alg) = &v.algorithm {
                cx.at(alg.referenced, "algorithm goes with ha1, not with password".into());
            }
            cx.check(pw, |s: &str| match s.is_empty() {
                true => Err("password must not be empty".into()),
                false => Ok(Credential::Password(s.to_owned())),
            })
        }
        (None, Some(ha1)) => {
            let alg = cx.or(&v.algorithm, Algorithm::Md5, algorithm).unwrap_or(Algorithm::Md5);
            cx.check(ha1, |s: &str| ha1_hex(alg, s))
        }
        (Some(pw), Some(_)) => {
            cx.at(pw.referenced, "give either password or ha1, not both".into());
            None
        }
        (None, None) => {
            cx.at(u.referenced, "missing field `password` or `ha1`".into());
            None
        }
    };
    Some(AuthUser { name: name?, credential: credential? })
}

fn listener_policy(
    cx: &mut Ctx,
    fl: &S<FileListener>,
    l: Option<&ListenerConfig>,
    realms: &[String],
) -> ListenerPolicy {
    let Some(fp) = &fl.value.policy else {
        return ListenerPolicy::default();
    };
    let p = &fp.value;
    let reject = cx.or(&p.reject, RejectMode::ServiceUnavailable, |&n: &u64| match n {
        503 => Ok(RejectMode::ServiceUnavailable),
        403 => Ok(RejectMode::Forbidden),
        _ => Err(format!("reject must be 503 or 403, got {n}")),
    });
    let max = within("max_calls_per_source", 1, 1_000_000);
    let per_source = p.max_calls_per_source.as_ref().and_then(|v| cx.check(v, max));
    let realm = p.realm.as_ref().and_then(|r| {
        cx.check(r, |name: &str| {
            if !realms.iter().any(|n| n == name) {
                return Err(format!("unknown realm {name:?} (define it in policy.auth.realms)"));
            }
            match l.map(|l| l.side) {
                Some(Side::Trunk) => Err("realm applies to access listeners only".into()),
                _ => Ok(name.to_owned()),
            }
        })
    });
    ListenerPolicy {
        access: AccessLists {
            allow: cx.each("network", p.allow.as_ref(), false, cidr),
            deny: cx.each("network", p.deny.as_ref(), false, cidr),
        },
        allow_only: p.allow_only.as_ref().is_some_and(|b| b.value),
        reject: reject.unwrap_or_default(),
        max_calls_per_source: per_source.map(|n| n as u32),
        realm,
    }
}

fn trunk_limits(cx: &mut Ctx, t: &FileTrunk) -> TrunkLimits {
    let Some(l) = &t.limits else {
        return TrunkLimits::default();
    };
    let count = |key| within(key, 1, 10_000_000);
    let max = |cx: &mut Ctx, v: &Num, key| v.as_ref().and_then(|v| cx.check(v, count(key)));
    TrunkLimits {
        inbound_cps: cx.or(&l.inbound_cps, None, rate).unwrap_or_default(),
        outbound_cps: cx.or(&l.outbound_cps, None, rate).unwrap_or_default(),
        max_inbound: max(cx, &l.max_inbound, "max_inbound").map(|n| n as u32),
        max_outbound: max(cx, &l.max_outbound, "max_outbound").map(|n| n as u32),
        max_total: max(cx, &l.max_total, "max_total").map(|n| n as u32),
    }
}

/// `N/s`, `N/m`, `N/h` or `N/DURATION` (`30/2s`), optionally followed by ` burst M`; or `off`.
fn rate(s: &str) -> Parsed<Option<Rate>> {
    if s == "off" {
        return Ok(None);
    }
    let bad = || format!("invalid rate {s:?} (e.g. 50/s, 300/m, 30/2s burst 60, off)");
    let (rate, burst) = match s.split_once(" burst ") {
        Some((r, b)) => (r.trim(), Some(b.trim())),
        None => (s, None),
    };
    let (count, per) = rate.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    let per = match per.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        d => duration(d).map_err(|_| bad())?,
    };
    if count == 0 || per.is_zero() {
        return Err(format!("rate {s:?} must allow at least 1 per non-zero period"));
    }
    let burst = match burst {
        Some(b) => match b.parse::<u32>() {
            Ok(b) if b > 0 => b,
            _ => return Err(bad()),
        },
        None => 0,
    };
    Ok(Some(Rate::new(count, per).with_burst(burst)))
}

/// `N in DURATION` (`10 in 1m`): ban after N offences of a kind within the window; or `off`.
fn offence_rule(s: &str) -> Parsed<Option<OffenceRule>> {
    if s == "off" {
        return Ok(None);
    }
    let bad = || format!("invalid offence rule {s:?} (e.g. 10 in 1m, or off)");
    let (n, window) = s.split_once(" in ").ok_or_else(bad)?;
    let threshold: u32 = n.trim().parse().map_err(|_| bad())?;
    let window = duration(window.trim())?;
    if threshold == 0 || window.is_zero() {
        return Err(format!("offence rule {s:?}: threshold and window must be > 0"));
    }
    Ok(Some(OffenceRule { threshold, window }))
}

/// An emergency number: a Request-URI user part, matched exactly.
fn number(s: &str) -> Parsed<String> {
    match only(s, "+*#") {
        true => Ok(s.to_owned()),
        false => Err(format!("invalid emergency number {s:?} (digits, +, *, #)")),
    }
}

fn state_file(s: &str) -> Parsed<PathBuf> {
    match s.is_empty() {
        true => Err("state_file must not be empty".into()),
        false => Ok(PathBuf::from(s)),
    }
}

/// An nftables identifier (`nft` accepts letters, digits and `_`, starting with a letter).
fn nft_name(s: &str) -> Parsed<String> {
    let starts = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    match starts && only(s, "_") && s.len() <= 32 {
        true => Ok(s.to_owned()),
        false => Err(format!("invalid nftables name {s:?} (a letter, then letters, digits, _)")),
    }
}

fn algorithm(s: &str) -> Parsed<Algorithm> {
    match s.to_ascii_uppercase().as_str() {
        "SHA-256" => Ok(Algorithm::Sha256),
        "MD5" => Ok(Algorithm::Md5),
        _ => Err(format!("unknown algorithm {s:?} (expected SHA-256 or MD5)")),
    }
}

fn nonce_secret(s: &str) -> Parsed<String> {
    match s.len() >= 16 {
        true => Ok(s.to_owned()),
        false => Err("nonce_secret must have at least 16 characters".into()),
    }
}

/// A realm string: printable, no quote or backslash (it goes into a quoted-string).
fn realm_name(s: &str) -> Parsed<String> {
    let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    match ok {
        true => Ok(s.to_owned()),
        false => Err(format!("invalid realm {s:?} (printable ASCII, no quotes, no spaces)")),
    }
}

/// A digest username: what a `user` part may hold, no quote or backslash.
fn digest_name(s: &str) -> Parsed<String> {
    match only(s, "-_.!~*'()&=+$,;?/@") {
        true => Ok(s.to_owned()),
        false => Err(format!("invalid user name {s:?}")),
    }
}

fn ha1_hex(alg: Algorithm, s: &str) -> Parsed<Credential> {
    let len = match alg {
        Algorithm::Md5 => 32,
        Algorithm::Sha256 => 64,
    };
    match s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        true => Ok(Credential::Ha1 { algorithm: alg, hex: s.to_owned() }),
        false => Err(format!("ha1 must be {len} hex digits for {}", alg.token())),
    }
}

/// Whether `s` is not empty and made of ASCII letters, digits and `extra`.
fn only(s: &str, extra: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// The name of a listener, trunk or route: used in references, logs and records.
fn valid_name(s: &str) -> Parsed<()> {
    match only(s, "-_.") {
        true => Ok(()),
        false => Err(format!("invalid name {s:?} (use letters, digits, -, _, .)")),
    }
}

/// `500ms`, `4s`, `2m`, `1h`: an unsigned integer and a unit, nothing else.
fn duration(s: &str) -> Parsed<Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" if !n.is_empty() => return Err(format!("duration {s:?} needs a unit: ms, s, m or h")),
        _ => 0,
    };
    match n.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)) {
        Some(ms) if scale > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(format!("invalid duration {s:?} (e.g. 500ms, 4s, 2m)")),
    }
}

fn positive(s: &str) -> Parsed<Duration> {
    match duration(s)? {
        d if d.is_zero() => Err("duration must be greater than 0".into()),
        d => Ok(d),
    }
}

fn within(key: &'static str, lo: u64, hi: u64) -> impl Fn(&u64) -> Parsed<u64> {
    move |&n| match (lo..=hi).contains(&n) {
        true => Ok(n),
        false => Err(format!("{key} must be in {lo}..={hi}, got {n}")),
    }
}

fn side(s: &str) -> Parsed<Side> {
    match s {
        "access" => Ok(Side::Access),
        "trunk" => Ok(Side::Trunk),
        _ => Err(format!("unknown side {s:?} (expected access or trunk)")),
    }
}

fn socket_addr(s: &str) -> Parsed<SocketAddr> {
    s.parse().map_err(|_| format!("invalid address {s:?} (expected IP:PORT or [IPv6]:PORT)"))
}

fn ip(s: &str) -> Parsed<IpAddr> {
    s.parse().map_err(|_| format!("invalid IP address {s:?}"))
}

fn port(p: &u64) -> Parsed<u16> {
    let port = u16::try_from(*p).ok().filter(|&p| p != 0);
    port.ok_or_else(|| format!("port must be in 1..=65535, got {p}"))
}

fn advertise(s: &str) -> Parsed<IpAddr> {
    match ip(s)? {
        ip if ip.is_unspecified() => Err(format!("advertise must not be {ip}")),
        ip => Ok(ip),
    }
}

fn tname(t: Transport) -> &'static str {
    t.name()
}

fn transport(s: &str) -> Parsed<Transport> {
    match s {
        "udp" => Ok(Transport::Udp),
        "tcp" => Ok(Transport::Tcp),
        "tls" => Ok(Transport::Tls),
        "ws" => Ok(Transport::Ws),
        "wss" => Ok(Transport::Wss),
        _ => Err(format!("unknown transport {s:?} (expected udp, tcp, tls, ws or wss)")),
    }
}

/// `HOST:PORT[;transport=udp|tcp|tls]`, HOST an IPv4 literal or a bracketed IPv6 literal.
fn target(s: &str) -> Parsed<Target> {
    let (hostport, param) = s.split_once(';').map_or((s, None), |(a, p)| (a, Some(p)));
    let transport = match param.map(|p| p.strip_prefix("transport=").ok_or(p)) {
        None => Transport::Udp,
        // WebSocket clients connect to us (RFC 7118 section 3); the SBC opens none.
        Some(Ok("ws" | "wss")) => {
            return Err("ws and wss are served to clients only, not used toward targets".into());
        }
        Some(Ok(t)) => transport(t)?,
        Some(Err(p)) => return Err(format!("unknown target parameter {p:?}")),
    };
    match hostport.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 && !a.ip().is_unspecified() => Ok(Target { addr: a, transport }),
        _ => Err(format!("invalid target {s:?} (expected IPv4:PORT or [IPv6]:PORT)")),
    }
}

/// Leg B toward `t` leaves through `l`: it must serve the transport and the address family.
fn reachable(l: &ListenerConfig, t: &Target) -> Parsed<()> {
    let dual_stack = l.addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    if !l.transports.contains(&t.transport) {
        Err(format!("listener {} does not serve {}", l.name, tname(t.transport)))
    } else if !dual_stack && l.addr.is_ipv4() != t.addr.is_ipv4() {
        Err(format!("listener {} cannot reach {}", l.name, t.addr))
    } else {
        Ok(())
    }
}

/// A DNS name for SNI and certificate checks (RFC 6066 section 3: no IP literal, no trailing dot).
fn server_name(s: &str) -> Parsed<String> {
    let labels_ok =
        s.split('.').all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && only(l, "-"));
    match labels_ok && s.len() <= 253 && s.parse::<IpAddr>().is_err() {
        true => Ok(s.to_ascii_lowercase()),
        false => Err(format!("invalid server name {s:?} (a DNS name, e.g. sip.example.com)")),
    }
}

fn cidr(s: &str) -> Parsed<IpNetwork> {
    match s.parse::<IpNetwork>() {
        Ok(net) if net.ip() == net.network() => Ok(net),
        Ok(net) => Err(format!("{s:?} has host bits set: use {}/{}", net.network(), net.prefix())),
        Err(_) => Err(format!("invalid network {s:?} (e.g. 10.0.0.0/8)")),
    }
}

fn regex(s: &str) -> Parsed<Regex> {
    // Syntax errors are multi-line drawings of the pattern; their last line says what is wrong.
    Regex::new(s).map_err(|e| {
        let e = e.to_string();
        let why = e.lines().last().unwrap_or_default();
        format!("invalid regex: {}", why.trim_start_matches("error: "))
    })
}

/// An RFC 3261 (25.1) `user`, without escapes.
fn user_part(s: &str) -> Parsed<String> {
    match s.is_empty() || only(s, "-_.!~*'()&=+$,;?/") {
        true => Ok(s.to_owned()),
        false => Err(format!("{s:?} is not a valid SIP user part")),
    }
}

/// An RFC 3261 `token`, full form (the compact forms are one letter).
fn header_name(s: &str) -> Parsed<String> {
    match (only(s, "-.!%*_+`'~"), s.len()) {
        (true, 1) => Err(format!("{s:?} is a compact header name: use the full form")),
        (true, _) => Ok(s.to_owned()),
        (false, _) => Err(format!("invalid header name {s:?}")),
    }
}

fn header_value(s: &str) -> Parsed<String> {
    match s.chars().any(|c| c.is_control() && c != '\t') {
        true => Err("header value must not contain control characters".into()),
        false => Ok(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formatted errors for `text`, which must be rejected.
    fn errors(text: &str) -> Vec<String> {
        let errors = load_str("t.yaml", text).err().unwrap_or_default();
        assert!(!errors.is_empty(), "accepted:\n{text}");
        errors.iter().map(ToString::to_string).collect()
    }

    /// Every field of `c`, a few per line.
    fn summary(c: &Config) -> String {
        let mut out = format!("{:?} {:?}\n", c.timers, c.tcp);
        let sip = (c.shards, c.max_message_size, c.max_headers, c.drain_grace);
        out += &format!("{sip:?}\n");
        for l in &c.listeners {
            out += &format!("{:?}\n", (&l.name, l.side, l.addr, l.advertise, &l.transports));
        }
        for t in &c.trunks {
            let targets: Vec<_> = t.targets.iter().map(|t| (t.addr, t.transport)).collect();
            let sources: Vec<_> = t.sources.iter().map(ToString::to_string).collect();
            let o = t.options.map(|o| (o.interval, o.down_after, o.up_after));
            out += &format!("{} {} {targets:?} {sources:?} {o:?}\n", t.name, t.listener.0);
            out += &format!("  {:?}\n  {:?}\n", t.rewrite, t.headers);
        }
        for r in &c.routes {
            let m = &r.matcher;
            let m = (m.listener, m.trunk, &m.prefix, &m.user_regex, &m.domain);
            out += &format!("{} {m:?} {:?} {:?}\n", r.name, r.trunks, r.ring_timeout);
        }
        out
    }

    #[test]
    fn default_config() {
        let c = load_str("sbc.yaml", include_str!("../../../configs/sbc.yaml")).expect("valid");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let expected = r#"TimerConfig { t1: 500ms, t2: 4s, t4: 5s } TcpConfig { idle_timeout: 120s, max_connections: 4096 }
(CORES, 65535, 128, 30s)
("access", Access, 127.0.0.1:5060, 127.0.0.1, [Udp, Tcp])
("trunk", Trunk, 127.0.0.1:5070, 127.0.0.1, [Udp])
carrier 1 [(127.0.0.1:5080, Udp)] ["127.0.0.1/32"] None
  RewriteConfig { strip: 0, prepend: "", regex: None }
  HeaderPolicy { allow: ["P-Asserted-Identity", "Privacy", "Diversion"], remove: [], add: [], rewrite: [] }
pbx 0 [(127.0.0.1:5090, Udp)] [] None
  RewriteConfig { strip: 0, prepend: "", regex: None }
  HeaderPolicy { allow: [], remove: [], add: [], rewrite: [] }
access-to-carrier (Some(ListenerId(0)), None, None, None, None) [TrunkId(0)] 120s
carrier-to-pbx (None, Some(TrunkId(0)), None, None, None) [TrunkId(1)] 120s
"#;
        assert_eq!(summary(&c), expected.replace("CORES", &cores.to_string()));
    }

    #[test]
    fn optional_keys() {
        let text = r#"
sip: {timers: {t1: 1s}, shards: 3, max_headers: 64, tcp: {max_connections: 10}}
listeners:
  - {name: a, side: access, address: "::", port: 5060, advertise: "2001:db8::2"}
  - {name: t, side: trunk, address: 127.0.0.1, port: 5070, transports: [udp, tcp]}
trunks:
  - name: c
    listener: t
    targets: ["127.0.0.1:5080;transport=tcp"]
    options: {}
    rewrite: {strip: 1, prepend: "+49", regex: {match: '^(\d+)$', replace: '${1}9'}}
    headers: {remove: [X-Foo], add: [{name: X-Via, value: sbc}], rewrite: [{name: P-Asserted-Identity, match: '@internal', replace: '@public.example'}]}
  - {name: v6, listener: a, targets: ["[2001:db8::1]:5060"], sources: ["2001:db8::/32"]}
routes:
  - name: r
    match: {prefix: "00", user_regex: "^0", domain: a.example}
    trunks: [c, v6]
    ring_timeout: 3m
"#;
        let expected = r#"TimerConfig { t1: 1s, t2: 4s, t4: 5s } TcpConfig { idle_timeout: 120s, max_connections: 10 }
(3, 65535, 64, 30s)
("a", Access, [::]:5060, 2001:db8::2, [Udp])
("t", Trunk, 127.0.0.1:5070, 127.0.0.1, [Udp, Tcp])
c 1 [(127.0.0.1:5080, Tcp)] [] Some((30s, 3, 2))
  RewriteConfig { strip: 1, prepend: "+49", regex: Some((Regex("^(\\d+)$"), "${1}9")) }
  HeaderPolicy { allow: [], remove: ["X-Foo"], add: [("X-Via", "sbc")], rewrite: [HeaderRewrite { name: "P-Asserted-Identity", pattern: Regex("@internal"), replace: "@public.example" }] }
v6 0 [([2001:db8::1]:5060, Udp)] ["2001:db8::/32"] None
  RewriteConfig { strip: 0, prepend: "", regex: None }
  HeaderPolicy { allow: [], remove: [], add: [], rewrite: [] }
r (None, None, Some("00"), Some(Regex("^0")), Some("a.example")) [TrunkId(0), TrunkId(1)] 180s
"#;
        assert_eq!(summary(&load_str("t.yaml", text).expect("valid")), expected);
        let empty =
            "listeners: [{name: a, side: access, address: 127.0.0.1, port: 1}]\ntrunks:\nroutes:";
        assert!(load_str("t.yaml", empty).is_ok(), "null lists are empty");
    }

    #[test]
    fn parse_errors_are_located() {
        let unknown = "unknown field `bogus`, expected one of name, side, address, port, advertise";
        let cases = [
            ("listeners: [\n", "1:12: unclosed bracket '['"),
            ("sip: {}\n", "1:1: missing field `listeners`"),
            (
                "listeners:\n- name: a\n  bogus: 1\n",
                &format!(
                    "3:3: {unknown}, transports, media, policy, tls, max_connections, idle_timeout"
                ),
            ),
            ("listeners:\n  - {name: a, port: -1}\n", "2:21: invalid u64"),
            ("listeners: {a: 1}\n", "1:12: expected sequence start"),
        ];
        for (text, expected) in cases {
            assert_eq!(errors(text), [format!("t.yaml:{expected}")]);
        }
        let text = "listeners:\n  - name: a\n    address: ::1\n    port: 5060\n  - {name: b}\n";
        let missing = ["2:5: side", "5:5: side", "5:5: address", "5:5: port"];
        let missing = missing.map(|m| m.replace(": ", ": missing field `") + "`");
        assert_eq!(errors(text), missing.map(|m| format!("t.yaml:{m}")));
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let text = r#"
listeners:
  - {name: a, side: access, address: 127.0.0.1, port: 5060, transports: [udp, sctp]}
  - {name: t, side: trunk, address: 127.0.0.1, port: 5060}
trunks:
  - {name: c, listener: t, targets: ["[::1]:5080;transport=tcp"], sources: [10.0.0.1/8]}
routes:
  - {name: r, match: {listener: b, trunk: a}, trunks: [c, c], ring_timeout: 30}
"#;
        let expected = r#"t.yaml:3:79: unknown transport "sctp" (expected udp, tcp, tls, ws or wss)
t.yaml:4:54: udp 127.0.0.1:5060 is already used by listener a
t.yaml:6:38: listener t does not serve tcp
t.yaml:6:77: "10.0.0.1/8" has host bits set: use 10.0.0.0/8
t.yaml:8:33: unknown listener "b"
t.yaml:8:43: unknown trunk "a"
t.yaml:8:59: trunk "c" is listed twice
t.yaml:8:77: duration "30" needs a unit: ms, s, m or h"#;
        assert_eq!(errors(text), expected.lines().collect::<Vec<_>>());
    }

    #[test]
    fn secure_transports_and_connection_limits() {
        let text = r#"
sip: {tcp: {max_connections: 100, idle_timeout: 60s}}
listeners:
  - {name: a, side: access, address: 127.0.0.1, port: 5060, transports: [udp, tcp], idle_timeout: 30s}
  - name: wss
    side: access
    address: 127.0.0.1
    port: 8443
    transports: [wss]
    tls: {certificate: /etc/sbc/cert.pem, private_key: /etc/sbc/key.pem}
    max_connections: 5
  - {name: ws, side: access, address: 127.0.0.1, port: 8080, transports: [ws]}
  - name: t
    side: trunk
    address: 127.0.0.1
    port: 5061
    transports: [tls]
    tls: {certificate: /etc/sbc/t.pem, private_key: /etc/sbc/t.key}
trunks:
  - name: c
    listener: t
    targets: ["192.0.2.1:5061;transport=tls"]
    tls: {ca: /etc/sbc/carrier-ca.pem, server_name: SIP.Carrier.example}
"#;
        let c = load_str("t.yaml", text).expect("valid");
        let ts: Vec<_> = c.listeners.iter().map(|l| l.transports.clone()).collect();
        use Transport::*;
        assert_eq!(ts, [vec![Udp, Tcp], vec![Wss], vec![Ws], vec![Tls]]);
        let limits: Vec<_> = (0..4).map(|i| c.limits(ListenerId(i))).collect();
        let tcp = |n, s| TcpConfig { max_connections: n, idle_timeout: Duration::from_secs(s) };
        assert_eq!(limits, [tcp(100, 30), tcp(5, 60), tcp(100, 60), tcp(100, 60)]);
        let files = c.listeners[1].tls.as_ref().expect("wss has tls");
        assert_eq!(files.certificate, Path::new("/etc/sbc/cert.pem"));
        assert_eq!(files.private_key, Path::new("/etc/sbc/key.pem"));
        assert!(c.listeners[0].tls.is_none() && c.listeners[2].tls.is_none());
        assert_eq!(c.trunks[0].targets[0].transport, Tls);
        let tls = c.trunks[0].tls.as_ref().expect("trunk tls");
        assert_eq!(tls.ca.as_deref(), Some(Path::new("/etc/sbc/carrier-ca.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("sip.carrier.example"));
        assert_eq!((Wss.via_name(), Ws.name(), Tls.via_name()), ("WSS", "ws", "TLS"));
    }

    #[test]
    fn secure_transport_errors() {
        let text = r#"
listeners:
  - {name: a, side: access, address: 127.0.0.1, port: 5060, transports: [udp, tcp, ws]}
  - {name: b, side: access, address: 127.0.0.1, port: 5061, transports: [tls, sctp, tls, wss]}
  - {name: c, side: access, address: 127.0.0.1, port: 5062, tls: {certificate: c.pem}}
  - {name: d, side: access, address: 127.0.0.1, port: 5060, transports: [wss], tls: {certificate: c.pem, private_key: k.pem}}
  - {name: e, side: trunk, address: 127.0.0.1, port: 5070, max_connections: 0, idle_timeout: 0s}
  - {name: f, side: trunk, address: 127.0.0.1, port: 5071, transports: [udp, tcp]}
trunks:
  - {name: w, listener: f, targets: ["192.0.2.1:80;transport=ws"]}
  - {name: x, listener: f, targets: ["192.0.2.1:5061;transport=tls"], tls: {server_name: "1.2.3.4"}}
  - {name: y, listener: f, targets: ["192.0.2.1:5060"], tls: {ca: ca.pem}}
"#;
        let expected = r#"t.yaml:3:84: tcp and ws cannot share port 5060: use another listener for ws
t.yaml:4:5: tls needs `tls: {certificate, private_key}`
t.yaml:4:79: unknown transport "sctp" (expected udp, tcp, tls, ws or wss)
t.yaml:4:85: transport "tls" is listed twice
t.yaml:4:90: tls and wss cannot share port 5061: use another listener for wss
t.yaml:5:66: tls is set but the listener serves neither tls nor wss
t.yaml:6:55: wss 127.0.0.1:5060: the port is already used by tcp of listener a
t.yaml:7:77: max_connections must be in 1..=1000000, got 0
t.yaml:7:77: connection limits need a tcp, tls, ws or wss transport
t.yaml:7:94: duration must be greater than 0
t.yaml:10:38: ws and wss are served to clients only, not used toward targets
t.yaml:11:38: listener f does not serve tls
t.yaml:11:90: invalid server name "1.2.3.4" (a DNS name, e.g. sip.example.com)
t.yaml:12:62: tls is set but no target has ;transport=tls"#;
        assert_eq!(errors(text), expected.lines().collect::<Vec<_>>());
    }

    #[test]
    fn durations() {
        let ms = |n| Ok(Duration::from_millis(n));
        let good = ["500ms", "0s", "4s", "2m", "1h"].map(duration);
        assert_eq!(good, [ms(500), ms(0), ms(4_000), ms(120_000), ms(3_600_000)]);
        for bad in ",s,1.5s,-1s,1 s,1d,4S,1ms5,99999999999999999999h".split(',') {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
    }

    const BASE: &str = "listeners:
  - {name: a, side: access, address: 127.0.0.1, port: 5060}
  - {name: t, side: trunk, address: 127.0.0.1, port: 5070}
trunks:
  - {name: c, listener: t, targets: [\"192.0.2.1:5060\"], sources: [198.51.100.0/24]}
";

    #[test]
    fn policy_defaults_protect_without_limiting_trunks() {
        let c = load_str("t.yaml", BASE).expect("valid");
        let r = &c.policy_rules();
        assert_eq!(r.source_message_rate, Some(Rate::per_second(1000).with_burst(2000)));
        assert_eq!((r.source_call_rate, r.source_register_rate), (None, None));
        let nets: Vec<String> = r.access.allow.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["198.51.100.0/24", "192.0.2.1/32"], "trunk sources and targets");
        assert!(r.scanner_user_agents.iter().any(|s| s == "friendly-scanner"));
        assert_eq!(r.offences.scanner.map(|o| o.threshold), Some(1));
        assert_eq!(r.offences.auth_failure.map(|o| o.threshold), Some(10));
        assert!(r.realms.is_empty() && r.emergency_numbers.is_empty());
        assert_eq!(r.listeners.len(), 2);
        assert_eq!(r.trunks.len(), 1);
        assert!(c.policy.ban_file.is_none() && c.policy.nftables.is_none());
        assert!(!r.queue_ban_changes);
    }

    #[test]
    fn policy_section_maps_every_key() {
        let text = format!(
            "{}policy:
  allow: [10.0.0.0/8]
  deny: [0.0.0.0/0]
  source_message_rate: 30/2s burst 60
  source_call_rate: 5/s
  source_register_rate: off
  max_tracked_sources: 5000
  cleanup_interval: 5s
  cac_retry_after: 7s
  emergency_numbers: [\"112\", \"911\"]
  scanner_user_agents: [evil-scan]
  offences: {{rate_exceeded: off, auth_failure: 3 in 1m, unknown_user: 5 in 30s, malformed: 2 in 10s, scanner: 1 in 1h}}
  bans: {{duration: 1m, factor: 3, max_duration: 1h, memory: 2h, max_entries: 50, max_offenders: 60, state_file: /tmp/bans.txt}}
  nftables: {{enabled: true, table: sbc_lab, set: bad}}
  auth:
    nonce_secret: 0123456789abcdef
    nonce_lifetime: 60s
    algorithms: [MD5]
    max_nonces: 1000
    realms:
      - realm: lab.example
        users:
          - {{name: \"1001\", password: secret}}
          - {{name: bob, ha1: 0123456789abcdef0123456789ABCDEF}}
",
            BASE.replace(
                "port: 5060}",
                "port: 5060, policy: {allow: [192.0.2.0/24], deny: [192.0.2.66/32], \
                 allow_only: true, reject: 403, max_calls_per_source: 4, realm: lab.example}}",
            )
            .replace(
                "sources: [198.51.100.0/24]}",
                "sources: [198.51.100.0/24], limits: {inbound_cps: 10/s, outbound_cps: 20/s, \
                 max_inbound: 10, max_outbound: 11, max_total: 12}}",
            )
        );
        let c = load_str("t.yaml", &text).expect("valid");
        let r = &c.policy.rules;
        assert_eq!(r.access.deny.len(), 1);
        assert_eq!(r.access.allow.len(), 1);
        assert_eq!(c.policy_rules().access.allow.len(), 3);
        assert_eq!(
            r.source_message_rate,
            Some(Rate::new(30, Duration::from_secs(2)).with_burst(60))
        );
        assert_eq!(r.source_call_rate, Some(Rate::per_second(5)));
        assert_eq!(r.source_register_rate, None);
        assert_eq!((r.max_tracked_sources, r.cleanup_interval), (5000, Duration::from_secs(5)));
        assert_eq!(r.cac_retry_after, Duration::from_secs(7));
        assert_eq!(r.emergency_numbers, ["112", "911"]);
        assert_eq!(r.scanner_user_agents, ["evil-scan"]);
        assert_eq!(r.offences.rate_exceeded, None);
        let rule = |n, s| Some(OffenceRule { threshold: n, window: Duration::from_secs(s) });
        assert_eq!(r.offences.auth_failure, rule(3, 60));
        assert_eq!(r.offences.unknown_user, rule(5, 30));
        assert_eq!(r.offences.malformed, rule(2, 10));
        assert_eq!(r.offences.scanner, rule(1, 3600));
        let b = r.bans;
        assert_eq!(
            (b.duration, b.factor, b.max_duration),
            (Duration::from_secs(60), 3, Duration::from_secs(3600))
        );
        assert_eq!((b.memory, b.max_entries, b.max_offenders), (Duration::from_secs(7200), 50, 60));
        assert_eq!(c.policy.ban_file, Some(PathBuf::from("/tmp/bans.txt")));
        let nft = NftablesConfig { table: "sbc_lab".into(), set: "bad".into() };
        assert_eq!(c.policy.nftables, Some(nft));
        assert!(r.queue_ban_changes);
        assert_eq!(r.nonce_secret.as_bytes(), b"0123456789abcdef");
        assert_eq!((r.nonce_lifetime, r.max_nonces), (Duration::from_secs(60), 1000));
        assert_eq!(r.auth_algorithms, [Algorithm::Md5]);
        assert_eq!(r.realms.len(), 1);
        assert_eq!(r.realms[0].users[0].credential, Credential::Password("secret".into()));
        assert!(matches!(
            r.realms[0].users[1].credential,
            Credential::Ha1 { algorithm: Algorithm::Md5, .. }
        ));
        let l = &r.listeners[0];
        assert_eq!(
            (l.allow_only, l.reject, l.max_calls_per_source),
            (true, RejectMode::Forbidden, Some(4))
        );
        assert_eq!(l.realm.as_deref(), Some("lab.example"));
        assert_eq!((l.access.allow.len(), l.access.deny.len()), (1, 1));
        let t = &r.trunks[0];
        assert_eq!(
            (t.inbound_cps, t.outbound_cps),
            (Some(Rate::per_second(10)), Some(Rate::per_second(20)))
        );
        assert_eq!((t.max_inbound, t.max_outbound, t.max_total), (Some(10), Some(11), Some(12)));
        // A random secret when none is given.
        let c =
            load_str("t.yaml", &format!("{BASE}policy: {{auth: {{realms: [{{realm: r}}]}}}}\n"));
        assert_eq!(c.expect("valid").policy.rules.nonce_secret.as_bytes().len(), 32);
    }

    #[test]
    fn registrars_relay_and_local() {
        let text = format!(
            "{}  - {{name: kam, listener: t, targets: [\"192.0.2.9:5060;transport=udp\"], \
             sources: [192.0.2.9/32]}}
  - {{name: u, listener: a, targets: [\"192.0.2.10:5060\"]}}
registrars:
  - {{listener: a, mode: relay, trunk: kam, client_expires: 30s, upstream_expires: 1h}}
  - {{listener: b, mode: local}}
  - {{listener: c, mode: local, domain: Lab.Example, client_expires: 2m}}
policy: {{auth: {{realms: [{{realm: r1}}]}}}}
",
            BASE.replace(
                "port: 5070}",
                "port: 5070}\n  - {name: b, side: access, address: 127.0.0.1, port: 5062, \
                 policy: {realm: r1}}\n  - {name: c, side: access, address: 127.0.0.1, \
                 port: 5064, policy: {realm: r1}}",
            )
        );
        let c = load_str("t.yaml", &text).expect("valid");
        let secs = Duration::from_secs;
        let relay = RegistrarMode::Relay { trunk: TrunkId(1), upstream_expires: secs(3600) };
        assert_eq!(
            c.registrars,
            [
                RegistrarConfig { listener: ListenerId(0), mode: relay, client_expires: secs(30) },
                RegistrarConfig {
                    listener: ListenerId(2),
                    mode: RegistrarMode::Local { domain: "r1".into() },
                    client_expires: secs(60),
                },
                RegistrarConfig {
                    listener: ListenerId(3),
                    mode: RegistrarMode::Local { domain: "lab.example".into() },
                    client_expires: secs(120),
                },
            ]
        );
        assert_eq!(c.registrar(ListenerId(1)), None, "a trunk listener has none");
        // Without an entry, an access listener with a realm is an implicit local registrar.
        let mut c = c;
        c.registrars.pop();
        let implicit = c.registrar(ListenerId(3)).expect("implicit");
        assert_eq!(implicit.mode, RegistrarMode::Local { domain: "r1".into() });
        assert_eq!(implicit.client_expires, crate::config::DEFAULT_LOCAL_EXPIRES);
    }

    #[test]
    fn registrar_errors_are_located() {
        let text = format!(
            "{BASE}registrars:
  - {{listener: t, mode: relay, trunk: c}}
  - {{listener: a, mode: relay, trunk: nope, client_expires: 5s, domain: x}}
  - {{listener: a, mode: local, upstream_expires: 10m}}
  - {{listener: a, mode: push}}
"
        );
        let expected = r#"t.yaml:7:16: listener t is not an access listener
t.yaml:8:39: unknown trunk "nope"
t.yaml:8:61: registration lifetime "5s" must be whole seconds in 10s..=24h
t.yaml:8:73: domain goes with mode local
t.yaml:9:16: listener a already has a registrar
t.yaml:9:50: upstream_expires goes with mode relay
t.yaml:10:16: listener a already has a registrar
t.yaml:10:25: unknown registrar mode "push" (expected relay or local)"#;
        assert_eq!(errors(&text), expected.lines().collect::<Vec<_>>());
        let text = format!("{BASE}registrars: [{{listener: a, mode: local}}]\n");
        let expected = "t.yaml:6:34: mode local needs a realm on the listener (policy.realm)";
        assert_eq!(errors(&text), [expected]);
    }

    #[test]
    fn policy_errors_are_located() {
        let text = format!(
            "{}policy:
  source_message_rate: 10 per second
  source_call_rate: 0/s
  offences: {{auth_failure: ten in 1m, scanner: 0 in 1m}}
  bans: {{duration: 1h, max_duration: 1m, state_file: \"\"}}
  nftables: {{enabled: true, table: 9x}}
  auth:
    nonce_secret: short
    algorithms: [SHA-512]
    realms:
      - realm: r
        users: [{{name: a, password: x, ha1: ab}}, {{name: b}}, {{name: c, ha1: abc}}, {{name: c, password: y, algorithm: MD5}}]
",
            BASE.replace("port: 5060}", "port: 5060, policy: {reject: 486, realm: nope}}")
                .replace("port: 5070}", "port: 5070, policy: {realm: r}}")
        );
        let expected = r#"t.yaml:2:78: reject must be 503 or 403, got 486
t.yaml:2:90: unknown realm "nope" (define it in policy.auth.realms)
t.yaml:3:76: realm applies to access listeners only
t.yaml:7:24: invalid rate "10 per second" (e.g. 50/s, 300/m, 30/2s burst 60, off)
t.yaml:8:21: rate "0/s" must allow at least 1 per non-zero period
t.yaml:9:28: invalid offence rule "ten in 1m" (e.g. 10 in 1m, or off)
t.yaml:9:48: offence rule "0 in 1m": threshold and window must be > 0
t.yaml:10:38: max_duration is less than duration
t.yaml:10:54: state_file must not be empty
t.yaml:11:36: invalid nftables name "9x" (a letter, then letters, digits, _)
t.yaml:13:19: nonce_secret must have at least 16 characters
t.yaml:14:18: unknown algorithm "SHA-512" (expected SHA-256 or MD5)
t.yaml:17:37: give either password or ha1, not both
t.yaml:17:50: missing field `password` or `ha1`
t.yaml:17:76: ha1 must be 32 hex digits for MD5
t.yaml:17:116: algorithm goes with ha1, not with password"#;
        assert_eq!(errors(&text), expected.lines().collect::<Vec<_>>());
    }

    #[test]
    fn media_profiles_fall_back_from_trunk_to_listener_to_media() {
        let text = r#"
media: {profile: sdes, srtp_suites: [AES_CM_128_HMAC_SHA1_32]}
listeners:
  - {name: web, side: access, address: 127.0.0.1, port: 5060, media: {profile: WebRTC}}
  - {name: t, side: trunk, address: 127.0.0.1, port: 5070}
trunks:
  - {name: plain, listener: t, targets: ["127.0.0.1:5080"], media: {profile: rtp}}
  - {name: srtp, listener: t, targets: ["127.0.0.1:5090"],
     media: {srtp_suites: [AEAD_AES_256_GCM, AES_CM_128_HMAC_SHA1_80]}}
"#;
        let c = load_str("t.yaml", text).expect("valid");
        let resolved = |listener: usize, trunk: Option<usize>| {
            let l = c.listeners[listener].media.or(&c.media.defaults);
            trunk.map_or(l.clone(), |t| c.trunks[t].media.or(&l))
        };
        let web = resolved(0, None);
        assert_eq!(web.profile, Some(MediaProfile::Webrtc));
        assert_eq!(web.srtp_suites, Some(vec![SrtpProfile::Aes128CmHmacSha1_32]));
        assert_eq!(resolved(1, Some(0)).profile, Some(MediaProfile::Rtp));
        let srtp = resolved(1, Some(1));
        assert_eq!(srtp.profile, Some(MediaProfile::Sdes), "from media:");
        assert_eq!(
            srtp.srtp_suites,
            Some(vec![SrtpProfile::AeadAes256Gcm, SrtpProfile::Aes128CmHmacSha1_80])
        );
        let plain =
            load_str("t.yaml", "listeners: [{name: a, side: access, address: 127.0.0.1, port: 1}]")
                .expect("valid");
        let options = plain.listeners[0].media.or(&plain.media.defaults);
        assert_eq!((options.profile, options.srtp_suites), (Some(MediaProfile::Rtp), Some(vec![])));
    }

    #[test]
    fn trunk_dtmf_is_rfc4733_by_default_or_info() {
        let text = r#"
listeners:
  - {name: t, side: trunk, address: 127.0.0.1, port: 5070}
trunks:
  - {name: plain, listener: t, targets: ["127.0.0.1:5080"]}
  - {name: info, listener: t, targets: ["127.0.0.1:5090"], dtmf: info}
  - {name: explicit, listener: t, targets: ["127.0.0.1:5091"], dtmf: rfc4733}
"#;
        let c = load_str("t.yaml", text).expect("valid");
        let modes: Vec<DtmfMode> = c.trunks.iter().map(|t| t.dtmf).collect();
        assert_eq!(modes, vec![DtmfMode::Rfc4733, DtmfMode::Info, DtmfMode::Rfc4733]);
        let bad = text.replace("dtmf: info", "dtmf: inband");
        let errors = load_str("t.yaml", &bad).expect_err("invalid");
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = errors[0].to_string();
        assert!(
            e.contains("invalid dtmf \"inband\" (rfc4733 or info)") && e.contains("t.yaml:6"),
            "{e}"
        );
    }
}
