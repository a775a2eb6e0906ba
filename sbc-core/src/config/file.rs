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
use sbc_cdr::record::Format;
use sbc_cdr::sink::SinkConfig;
use sbc_cdr::writer::WriterConfig;
use serde::Deserialize;
use serde_saphyr::{Location, MessageFormatter, Spanned, UserMessageFormatter};

use super::{
    Config, HeaderPolicy, HeaderRewrite, KeepAliveConfig, ListenerConfig, ListenerId, MediaConfig,
    MediaOptions, RewriteConfig, RouteConfig, RouteMatch, Side, Target, TcpConfig, TimerConfig,
    Transport, TrunkConfig, TrunkId,
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
        admin: Option<FileAdmin>, media: Option<S<FileMedia>>, records: Option<S<FileRecords>> }
    FileRecords { format: Str, dir: Str, pickup_dir: Str, prefix: Str, rotate: Option<FileRotate>,
        retention: Option<FileRetention>, journal: Str, journal_max_bytes: Num, queue: Num }
    FileRotate { interval: Str, max_bytes: Num }
    FileRetention { max_age: Str, max_files: Num }
    FileMedia { ports: Str, workers: Num, dscp: Num, nat: Option<S<bool>>, codecs: Option<List>,
        inactivity_timeout: Str }
    FileLegMedia { address: Str, advertise: Str, nat: Option<S<bool>>, codecs: Option<List>,
        inactivity_timeout: Str }
    FileAdmin { metrics: Str }
    FileSip { timers: Option<FileTimers>, shards: Num, max_message_size: Num, max_headers: Num,
        drain_grace: Str, tcp: Option<FileTcp> }
    FileTimers { t1: Str, t2: Str, t4: Str }
    FileTcp { idle_timeout: Str, max_connections: Num }
    FileListener { name: Str, side: Str, address: Str, port: Num, advertise: Str,
        transports: Option<List>, media: Option<S<FileLegMedia>> }
    FileTrunk { name: Str, listener: Str, targets: Option<List>, sources: Option<List>,
        options: Option<FileKeepAlive>, rewrite: Option<FileRewrite>, headers: Option<FileHeaders>,
        media: Option<S<FileLegMedia>> }
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
    let ls = Table::build(cx, "listener", entries, |l| &l.name, listener);
    let mut bound = HashMap::new();
    for (fl, l) in entries.iter().zip(&ls.items) {
        let (Some(l), Some(port)) = (l, &fl.value.port) else {
            continue;
        };
        for &t in &l.transports {
            if let Some(other) = bound.insert((l.addr, t), &l.name) {
                let (t, addr) = (tname(t), l.addr);
                let msg = format!("{t} {addr} is already used by listener {other}");
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let media = f.value.media.as_ref().map_or(Some(MediaConfig::default()), |m| media(cx, m));
    let records = f.value.records.as_ref().map(|r| records(cx, r));
    Some(Config {
        records: records.map_or(Some(None), |r| r.map(Some))?,
        media: media?,
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

fn listener(cx: &mut Ctx, fl: &S<FileListener>) -> Option<ListenerConfig> {
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
    let (name, listener) = (t.name.as_ref()?.value.clone(), ListenerId(listener?));
    let (rewrite, headers) = (rewrite.unwrap_or_default(), headers.unwrap_or_default());
    let media = media?;
    Some(TrunkConfig { name, listener, targets, sources, options, rewrite, headers, media })
}

fn media(cx: &mut Ctx, fm: &S<FileMedia>) -> Option<MediaConfig> {
    let (m, d) = (&fm.value, MediaConfig::default());
    let ports = cx.or(&m.ports, (d.port_min, d.port_max), port_range);
    let workers = cx.or(&m.workers, 0, within("workers", 0, 256));
    let dscp = cx.or(&m.dscp, 46, within("dscp", 0, 63));
    let options = leg_media(
        cx,
        &S {
            value: FileLegMedia {
                nat: m.nat.clone(),
                codecs: m.codecs.clone(),
                inactivity_timeout: m.inactivity_timeout.clone(),
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
        defaults: options?.or(&d.defaults),
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
    Some(MediaOptions {
        nat: m.nat.as_ref().map(|n| n.value),
        codecs,
        inactivity_timeout: match timeout {
            Some(t) => Some(t?),
            None => None,
        },
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
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    }
}

fn transport(s: &str) -> Parsed<Transport> {
    match s {
        "udp" => Ok(Transport::Udp),
        "tcp" => Ok(Transport::Tcp),
        "tls" | "ws" | "wss" => Err(format!("transport {s} is not supported yet")),
        _ => Err(format!("unknown transport {s:?} (expected udp or tcp)")),
    }
}

/// `HOST:PORT[;transport=udp|tcp]`, HOST an IPv4 literal or a bracketed IPv6 literal.
fn target(s: &str) -> Parsed<Target> {
    let (hostport, param) = s.split_once(';').map_or((s, None), |(a, p)| (a, Some(p)));
    let transport = match param.map(|p| p.strip_prefix("transport=").ok_or(p)) {
        None => Transport::Udp,
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
            ("listeners:\n- name: a\n  bogus: 1\n", &format!("3:3: {unknown}, transports, media")),
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
  - {name: a, side: access, address: 127.0.0.1, port: 5060, transports: [udp, tls]}
  - {name: t, side: trunk, address: 127.0.0.1, port: 5060}
trunks:
  - {name: c, listener: t, targets: ["[::1]:5080;transport=tcp"], sources: [10.0.0.1/8]}
routes:
  - {name: r, match: {listener: b, trunk: a}, trunks: [c, c], ring_timeout: 30}
"#;
        let expected = r#"t.yaml:3:79: transport tls is not supported yet
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
    fn durations() {
        let ms = |n| Ok(Duration::from_millis(n));
        let good = ["500ms", "0s", "4s", "2m", "1h"].map(duration);
        assert_eq!(good, [ms(500), ms(0), ms(4_000), ms(120_000), ms(3_600_000)]);
        for bad in ",s,1.5s,-1s,1 s,1d,4S,1ms5,99999999999999999999h".split(',') {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
    }
}
