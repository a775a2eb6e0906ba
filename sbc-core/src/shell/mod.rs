//! The tokio shells: sockets, timers and the wiring of the sans-IO engine shards.
//!
//! Receive tasks (one per UDP socket, one per TCP, TLS, WS or WSS connection) parse each message
//! once and hand it to the shard that owns its call: responses by the shard encoded in our Via
//! branch, requests by the shard encoded in our leg-B Call-ID or by a hash of a foreign Call-ID.
//! Each shard task owns one [`Engine`] and is the only thing that touches it, so no lock guards call state. Shard inputs
//! are bounded channels: when a shard is saturated, datagrams are dropped and counted (UDP peers
//! retransmit), never queued without limit.
//!
//! Before anything is parsed or copied, each datagram, accepted connection and TCP frame is
//! checked against the edge policy ([`Policy::check_source`]): a banned, denied or over-rate
//! source is dropped silently and counted. The one [`Policy`] is shared by all receive tasks and
//! shards; a policy task owns its timers, its ban log, the nftables push and the state file.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use metrics::Counter;
use sbc_cdr::sink::CdrSink;
use sbc_cdr::{CallEvent, CallEventKind, Disposition, Recorder};
use sbc_media::backend::RelayBackend;
use sbc_media::relay::{Relay, RelayConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use sbc_policy::{DropReason, Offence, Policy, SourceVerdict};

use self::capture::ShardTap;
use crate::b2bua::bindings::{Bindings, DEFAULT_MAX_BINDINGS};
use crate::b2bua::health::TrunkHealth;
use crate::b2bua::{Engine, Event, ids};
use crate::config::{Config, ListenerId, Transport};
use crate::sip::{self, HeaderName, Limits, Message, stream};
use crate::transaction::shard_of_branch;
use crate::transport::{Flow, Transmit};

mod capture;
#[cfg(feature = "nftables")]
mod nft;
mod policy;
mod tls;
mod ws;

pub use tls::TlsError;

/// Depth of each shard's input queue; beyond it datagrams are dropped (and counted).
const SHARD_QUEUE: usize = 65_536;
/// Depth of each TCP connection's output queue; a peer that does not read is disconnected.
const CONN_QUEUE: usize = 4_096;
/// UDP socket buffers: large enough for bursts of thousands of calls per second.
const UDP_BUFFER: usize = 8 << 20;

/// Why the shell could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// Transport.
        transport: &'static str,
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: io::Error,
    },
    /// The media relay could not start (its worker threads or wake-up channels).
    #[error("cannot start the media relay: {0}")]
    Media(io::Error),
    /// The capture thread or its directories could not be set up.
    #[error("cannot start captures: {0}")]
    Capture(io::Error),
    /// The CDR journal could not be read, or the CDR thread could not start.
    #[error("cannot start the CDR writer: {0}")]
    Records(io::Error),
    /// The policy settings were refused (a config built in code; files are checked at load).
    #[error("invalid policy: {0}")]
    Policy(sbc_policy::ConfigError),
    /// A listener's certificate or key, or a trunk's CA file, could not be used.
    #[error("TLS: {0}")]
    Tls(TlsError),
}

// Messages dominate the queue; boxing them would add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum ShardInput {
    /// A parsed message, with its arrival time and bytes when captures are enabled.
    Message(Flow, Message, Option<(SystemTime, Bytes)>),
    FlowFailed(Flow),
    Drain,
    Terminate,
}

/// Counters of the shell, exported through the `metrics` recorder (Prometheus at `admin.metrics`).
/// Handles are made once: counting is then one atomic add, no lookup.
#[derive(Debug, Clone)]
pub struct ShellStats {
    /// Messages received, per transport.
    pub received_udp: Counter,
    /// Messages received over TCP.
    pub received_tcp: Counter,
    /// Messages received over TLS.
    pub received_tls: Counter,
    /// Messages received over WebSocket.
    pub received_ws: Counter,
    /// Messages received over secure WebSocket.
    pub received_wss: Counter,
    /// Messages that failed to parse.
    pub malformed: Counter,
    /// Messages dropped because a shard queue was full.
    pub dropped_overload: Counter,
    /// Connections (TCP, TLS, WS, WSS) refused over a listener's limit.
    pub refused_connections: Counter,
}

/// Messages received, labelled by transport.
const RECEIVED: &str = "sbc_sip_messages_received_total";

impl ShellStats {
    fn new() -> ShellStats {
        ShellStats {
            received_udp: metrics::counter!(RECEIVED, "transport" => "udp"),
            received_tcp: metrics::counter!(RECEIVED, "transport" => "tcp"),
            received_tls: metrics::counter!(RECEIVED, "transport" => "tls"),
            received_ws: metrics::counter!(RECEIVED, "transport" => "ws"),
            received_wss: metrics::counter!(RECEIVED, "transport" => "wss"),
            malformed: metrics::counter!("sbc_sip_malformed_total"),
            dropped_overload: metrics::counter!("sbc_sip_dropped_overload_total"),
            refused_connections: metrics::counter!("sbc_tcp_connections_refused_total"),
        }
    }

    fn received_for(&self, transport: Transport) -> &Counter {
        match transport {
            Transport::Udp => &self.received_udp,
            Transport::Tcp => &self.received_tcp,
            Transport::Tls => &self.received_tls,
            Transport::Ws => &self.received_ws,
            Transport::Wss => &self.received_wss,
        }
    }
}

/// Where outgoing bytes go: UDP sockets per listener and the connection table (TCP, TLS, WS,
/// WSS; a listener serves one of these, so listener and remote address name a connection).
struct Output {
    udp: Vec<Option<Arc<UdpSocket>>>,
    conns: Mutex<HashMap<(ListenerId, SocketAddr), mpsc::Sender<Bytes>>>,
    /// How to open TLS toward each trunk target with `;transport=tls`; a TLS flow to any other
    /// address (a client whose connection is gone) cannot be reopened.
    tls_targets: HashMap<(ListenerId, SocketAddr), tls::Outbound>,
}

/// The running SBC.
pub struct Sbc {
    config: Arc<Config>,
    policy: Arc<Policy>,
    shards: Vec<mpsc::Sender<ShardInput>>,
    calls: Arc<Vec<AtomicUsize>>,
    stats: Arc<ShellStats>,
    done: Vec<tokio::task::JoinHandle<()>>,
    /// Kept so that the media workers live as long as the SBC; dropped after the shards.
    relay: Arc<Relay>,
    /// The capture thread, stopped last so that every capture is complete on disk.
    capture: Option<sbc_cdr::capture::CaptureThread>,
    /// The CDR thread, when `records:` is configured; stopped last, after the shards' final
    /// events.
    records: Option<Arc<CdrSink>>,
}

/// Context shared by the receive tasks.
#[derive(Clone)]
struct Router {
    shards: Arc<Vec<mpsc::Sender<ShardInput>>>,
    hasher: Arc<RandomState>,
    limits: Limits,
    stats: Arc<ShellStats>,
    output: Arc<Output>,
    config: Arc<Config>,
    /// Keep the bytes and arrival time of each message for the capture tap.
    capture: bool,
    policy: Arc<Policy>,
}

impl Sbc {
    /// Binds every listener and starts the shards. Must run inside a tokio runtime.
    pub async fn start(config: Arc<Config>) -> Result<Sbc, StartError> {
        // Every ban change is queued: the policy task logs it and, with nftables, pushes it.
        let mut rules = config.policy_rules();
        rules.queue_ban_changes = true;
        let policy = Arc::new(Policy::with_config(rules).map_err(StartError::Policy)?);
        if let Some(path) = &config.policy.ban_file {
            policy::load_bans(&policy, path);
        }
        tls::install_provider();
        let mut udp = vec![None; config.listeners.len()];
        let mut tcp = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            for &t in &l.transports {
                match t {
                    Transport::Udp => {
                        let sock = bind_udp(l.addr).map_err(|source| StartError::Bind {
                            transport: "udp",
                            addr: l.addr,
                            source,
                        })?;
                        udp[i] = Some(Arc::new(sock));
                    }
                    Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => {
                        // The config requires `tls:` for tls and wss; a config built in code
                        // without it gets a clear error rather than a listener without TLS.
                        let certs = match (&l.tls, t.is_secure()) {
                            (Some(files), true) => Some(Arc::new(
                                tls::CertStore::load(files).map_err(StartError::Tls)?,
                            )),
                            (None, true) => {
                                return Err(StartError::Tls(TlsError::File {
                                    path: l.name.clone(),
                                    why: format!("{} needs a certificate", t.name()),
                                }));
                            }
                            (_, false) => None,
                        };
                        let sock = TcpListener::bind(l.addr).await.map_err(|source| {
                            StartError::Bind { transport: t.name(), addr: l.addr, source }
                        })?;
                        tcp.push((ListenerId(i), t, sock, certs));
                    }
                }
            }
        }
        let tls_targets = tls::outbound(&config).map_err(StartError::Tls)?;
        let output = Arc::new(Output { udp, conns: Mutex::new(HashMap::new()), tls_targets });
        let stats = Arc::new(ShellStats::new());
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..config.shards).map(|_| mpsc::channel(SHARD_QUEUE)).unzip();
        let router = Router {
            shards: Arc::new(senders.clone()),
            hasher: Arc::new(RandomState::new()),
            limits: Limits { max_size: config.max_message_size, max_headers: config.max_headers },
            stats: Arc::clone(&stats),
            output: Arc::clone(&output),
            config: Arc::clone(&config),
            capture: config.capture.is_enabled(),
            policy: Arc::clone(&policy),
        };
        let calls = Arc::new((0..config.shards).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
        let seed_base: u64 = rand::random();
        let mut done = Vec::new();
        let health = Arc::new(TrunkHealth::new(&config));
        // Registrations are process-wide: a REGISTER and the INVITE to its user may land on
        // different shards.
        let bindings = Arc::new(Bindings::new(DEFAULT_MAX_BINDINGS));
        let registrars =
            (0..config.listeners.len()).any(|l| config.registrar(ListenerId(l)).is_some());
        let m = &config.media;
        let relay_config = RelayConfig {
            port_min: m.port_min,
            port_max: m.port_max,
            workers: m.workers,
            dscp: m.dscp,
        };
        let opus = sbc_media::transcode::OpusSettings {
            complexity: m.opus_complexity,
            ..Default::default()
        };
        let relay =
            Arc::new(Relay::start_with_opus(relay_config, opus).map_err(StartError::Media)?);
        tracing::info!(
            ports = %format_args!("{}-{}", m.port_min, m.port_max),
            workers = relay.workers(),
            "media relay started"
        );
        // The capture thread, when anything is captured; each shard feeds it SIP, each tapped
        // relay pair RTP. The target list is not logged, only how many targets there are.
        let (capture, capture_thread) = if config.capture.is_enabled() {
            let (handle, thread) = sbc_cdr::capture::CaptureHandle::start(config.capture.clone())
                .map_err(StartError::Capture)?;
            tracing::info!(
                mode = ?config.capture.mode,
                targets = config.capture.intercept.as_ref().map_or(0, |i| i.targets.len()),
                signalling = config.capture.signalling.is_some(),
                "captures enabled"
            );
            (Some(handle), Some(thread))
        } else {
            (None, None)
        };
        // Before any call: the previous run's unfinished records are written first.
        let records = match &config.records {
            Some(rc) => {
                let (sink, report) =
                    CdrSink::start(rc.clone(), SystemTime::now()).map_err(StartError::Records)?;
                tracing::info!(
                    dir = %rc.writer.pickup_dir.display(),
                    recovered = report.recovered,
                    interrupted = report.interrupted,
                    ended = report.ended,
                    "CDR writer started"
                );
                Some(Arc::new(sink))
            }
            None => None,
        };
        for (shard, rx) in receivers.into_iter().enumerate() {
            let backend: Arc<dyn RelayBackend> = Arc::clone(&relay) as Arc<dyn RelayBackend>;
            let mut engine = Engine::with_relay(
                Arc::clone(&config),
                shard as u16,
                seed_base.wrapping_add(shard as u64),
                backend,
            );
            // One shard probes trunks with OPTIONS; all read the result.
            engine.set_health(Instant::now(), Arc::clone(&health), shard == 0);
            let tap = capture.clone().map(|h| ShardTap::new(h, Arc::clone(&config), &mut engine));
            engine.set_policy(Arc::clone(&policy));
            // One shard sweeps expired bindings (and unregisters them upstream).
            engine.set_bindings(Instant::now(), Arc::clone(&bindings), registrars && shard == 0);
            done.push(tokio::spawn(run_shard(
                engine,
                tap,
                rx,
                router.clone(),
                Arc::clone(&calls),
                shard,
                records.clone(),
            )));
        }
        for (i, sock) in output.udp.iter().enumerate() {
            if let Some(sock) = sock {
                tokio::spawn(udp_receive(ListenerId(i), Arc::clone(sock), router.clone()));
            }
        }
        for (id, transport, listener, certs) in tcp {
            if let Some(certs) = &certs {
                let name = config.listeners[id.0].name.clone();
                done.push(tokio::spawn(tls::reload_task(name, Arc::clone(certs))));
            }
            tokio::spawn(stream_accept(id, transport, listener, certs, router.clone()));
        }
        for l in &config.listeners {
            tracing::info!(name = %l.name, addr = %l.addr, transports = ?l.transports, "listening");
        }
        let mut ports: Vec<u16> = config.listeners.iter().map(|l| l.addr.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        done.push(policy::spawn(Arc::clone(&policy), &config.policy, ports));
        Ok(Sbc {
            config,
            policy,
            shards: senders,
            calls,
            stats,
            done,
            relay,
            capture: capture_thread,
            records,
        })
    }

    /// The edge policy shared by every receive task and shard.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Calls in progress across all shards.
    pub fn active_calls(&self) -> usize {
        self.calls.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Shell counters.
    pub fn stats(&self) -> &ShellStats {
        &self.stats
    }

    /// Graceful stop: refuse new calls, let calls end for `drain_grace`, then BYE the rest.
    pub async fn drain(self) {
        for s in &self.shards {
            let _ = s.send(ShardInput::Drain).await;
        }
        let deadline = tokio::time::Instant::now() + self.config.drain_grace;
        while self.active_calls() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = self.active_calls();
        if left > 0 {
            tracing::info!(calls = left, "drain grace over; ending remaining calls");
        }
        for s in &self.shards {
            let _ = s.send(ShardInput::Terminate).await;
        }
        // Give the BYEs a moment to leave and be answered (and a lost one to be retransmitted
        // once at T1) before the shards stop.
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.active_calls() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if left > 0 {
            tokio::time::sleep(self.config.timers.t1 * 2).await;
        }
        drop(self.shards);
        for d in self.done {
            d.abort();
        }
        // The shards are gone, so no call holds media any more: stop the workers.
        self.relay.shutdown();
        if let Some(capture) = self.capture {
            // Joins the capture thread: off the runtime's worker threads.
            let _ = tokio::task::spawn_blocking(move || capture.stop()).await;
        }
        if let Some(path) = &self.config.policy.ban_file {
            policy::save_bans(&self.policy, path);
        }
        // Every shard's last events are in the CDR channel: write them, complete the file.
        if let Some(records) = self.records {
            let _ = tokio::task::spawn_blocking(move || records.stop()).await;
        }
    }
}

/// A call's media figures in a log line: per leg, packets received from that leg's peer, lost,
/// jitter and MOS.
struct MediaFigures<'a>(Option<&'a (sbc_cdr::MediaLegStats, sbc_cdr::MediaLegStats)>);

impl std::fmt::Display for MediaFigures<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some((a, b)) = self.0 else { return f.write_str("none") };
        for (name, leg) in [("a", a), ("b", b)] {
            write!(
                f,
                "{name}:{} rx={} lost={} jitter_us={} mos={}.{:02} ",
                if leg.codec.is_empty() { "-" } else { &leg.codec },
                leg.packets,
                leg.lost,
                leg.jitter_us,
                leg.mos_x100 / 100,
                leg.mos_x100 % 100
            )?;
        }
        Ok(())
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.*mem_max.
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

async fn run_shard(
    mut engine: Engine,
    mut tap: Option<ShardTap>,
    mut rx: mpsc::Receiver<ShardInput>,
    router: Router,
    calls: Arc<Vec<AtomicUsize>>,
    shard: usize,
    records: Option<Arc<CdrSink>>,
) {
    let mut recorder = Recorder::new();
    let calls_started = metrics::counter!("sbc_calls_started_total");
    let dropped_banned = metrics::counter!("sbc_sip_requests_dropped_banned_total");
    let registers = metrics::counter!("sbc_registrations_answered_total");
    let relayed = metrics::counter!("sbc_registrations_relayed_total");
    let dtmf = metrics::counter!("sbc_dtmf_interworked_total");
    let bindings_active = metrics::gauge!("sbc_registrations_active");
    let mut seen = engine.stats();
    let calls_active = metrics::gauge!("sbc_calls_active", "shard" => shard.to_string());
    loop {
        let deadline = engine.poll_timeout();
        let input = match deadline {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                tokio::select! {
                    biased;
                    m = rx.recv() => Some(m),
                    _ = tokio::time::sleep_until(at) => None,
                }
            }
            None => Some(rx.recv().await),
        };
        let now = Instant::now();
        // A timer or a lost connection may have removed bindings (see the gauge below).
        let bindings_touched = matches!(input, None | Some(Some(ShardInput::FlowFailed(_))));
        // Records the message for the capture tap (when there is one), then hands it over.
        let mut handle_message = |engine: &mut Engine, flow: Flow, msg: Message, raw| {
            if let (Some(tap), Some((at, data))) = (&mut tap, raw) {
                tap.incoming(at, &flow, msg.call_id().cloned(), data);
            }
            engine.handle_message(now, flow, msg);
        };
        engine.set_wall_clock(now, SystemTime::now());
        match input {
            Some(Some(ShardInput::Message(flow, msg, raw))) => {
                handle_message(&mut engine, flow, msg, raw);
                // Take whatever else is queued before flushing: amortises the wake-up.
                for _ in 0..64 {
                    match rx.try_recv() {
                        Ok(ShardInput::Message(flow, msg, raw)) => {
                            handle_message(&mut engine, flow, msg, raw)
                        }
                        Ok(ShardInput::FlowFailed(flow)) => engine.handle_flow_error(now, flow),
                        Ok(ShardInput::Drain) => engine.start_drain(),
                        Ok(ShardInput::Terminate) => engine.terminate_all(now),
                        Err(_) => break,
                    }
                }
            }
            Some(Some(ShardInput::FlowFailed(flow))) => engine.handle_flow_error(now, flow),
            Some(Some(ShardInput::Drain)) => engine.start_drain(),
            Some(Some(ShardInput::Terminate)) => engine.terminate_all(now),
            Some(None) => return,
            None => engine.handle_timeout(now),
        }
        while let Some(t) = engine.poll_transmit() {
            if let Some(tap) = &mut tap {
                tap.outgoing(SystemTime::now(), &t);
            }
            send(&router, t).await;
        }
        while let Some(ev) = engine.poll_event() {
            let Event::Call { call, kind } = ev;
            if let Some(tap) = &mut tap {
                tap.event(&mut engine, SystemTime::now(), call, &kind);
            }
            match &kind {
                CallEventKind::Started { .. } => calls_started.increment(1),
                CallEventKind::Ended { disposition, .. } => {
                    metrics::counter!("sbc_calls_ended_total", "disposition" => disposition.label())
                        .increment(1)
                }
                CallEventKind::Rejected { .. } => {
                    let d = Disposition::Rejected.label();
                    metrics::counter!("sbc_calls_ended_total", "disposition" => d).increment(1)
                }
                _ => {}
            }
            // One wall-clock reading per event, shared by the log and the CDR thread.
            let event = CallEvent { call, at: SystemTime::now(), kind };
            if let Some(r) = &records {
                r.record(event.clone());
            }
            if let Some(record) = recorder.handle(event) {
                tracing::info!(
                    call = record.call.0,
                    disposition = ?record.disposition,
                    status = record.status,
                    billable_ms = record.billable().as_millis() as u64,
                    released_by = ?record.released_by,
                    reason = record.reason.as_deref().unwrap_or(""),
                    media = %MediaFigures(record.media.as_ref()),
                    "call ended"
                );
            }
        }
        if let Some(tap) = &mut tap {
            while let Some(leg) = engine.poll_leg_id() {
                tap.leg(leg);
            }
            tap.finish();
        }
        calls[shard].store(engine.call_count(), Ordering::Relaxed);
        calls_active.set(engine.call_count() as f64);
        let stats = engine.stats();
        dropped_banned.increment(stats.dropped_banned - seen.dropped_banned);
        registers.increment(stats.registers_accepted - seen.registers_accepted);
        relayed.increment(stats.registers_relayed - seen.registers_relayed);
        dtmf.increment(stats.dtmf_interworked - seen.dtmf_interworked);
        // The bindings are shared: any shard that may have changed them refreshes the gauge
        // (a REGISTER's answer, a relayed one, a lost connection, the sweep).
        let touched = stats.registers_accepted != seen.registers_accepted
            || stats.registers_relayed != seen.registers_relayed
            || bindings_touched;
        if touched {
            bindings_active.set(engine.bindings().len() as f64);
        }
        seen = stats;
    }
}

async fn send(router: &Router, t: Transmit) {
    let output = &router.output;
    if t.flow.transport == Transport::Udp {
        let Some(Some(sock)) = output.udp.get(t.flow.listener.0) else {
            return;
        };
        match sock.try_send_to(&t.data, t.flow.remote) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = sock.send_to(&t.data, t.flow.remote).await;
            }
            Err(e) => tracing::debug!(remote = %t.flow.remote, error = %e, "udp send failed"),
        }
        return;
    }
    let key = (t.flow.listener, t.flow.remote);
    let existing = output.conns.lock().ok().and_then(|c| c.get(&key).cloned());
    if let Some(tx) = existing {
        if tx.try_send(t.data).is_err() {
            tracing::debug!(remote = %t.flow.remote, "connection queue full or closed");
        }
        return;
    }
    // No connection on this flow. TCP, and TLS toward a configured trunk target, open one (RFC
    // 3261 section 18.1.1). A client's TLS or WebSocket connection that is gone cannot be
    // reopened (its address is an ephemeral port, its Via and Contact often `.invalid`, RFC
    // 7118 section 5): the flow has failed, and the transactions on it fail at once.
    let reopen = match t.flow.transport {
        Transport::Tcp => true,
        Transport::Tls => output.tls_targets.contains_key(&key),
        Transport::Udp | Transport::Ws | Transport::Wss => false,
    };
    match reopen {
        true => {
            let (tx, rx) = mpsc::channel(CONN_QUEUE);
            let _ = tx.try_send(t.data);
            if let Ok(mut c) = output.conns.lock() {
                c.insert(key, tx.clone());
            }
            tokio::spawn(stream_connect(t.flow, tx, rx, router.clone()));
        }
        false => {
            tracing::debug!(
                remote = %t.flow.remote,
                transport = t.flow.transport.name(),
                "no connection on this flow"
            );
            router.flow_failed(t.flow);
        }
    }
}

async fn udp_receive(listener: ListenerId, sock: Arc<UdpSocket>, router: Router) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, remote) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors surface here on Linux; they are not fatal for a listener. A short
                // pause keeps a persistent error (ENOMEM, a closed socket) from spinning a core.
                tracing::trace!(error = %e, "udp receive error");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        // Before anything is copied or parsed: a banned or denied flood costs a lookup.
        if router.policy.check_source(Instant::now(), remote.ip(), listener.0)
            != SourceVerdict::Allow
        {
            continue;
        }
        if n == 0 || buf[..n].iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
            continue; // keep-alive
        }
        let data = Bytes::copy_from_slice(&buf[..n]);
        let flow = Flow { listener, transport: Transport::Udp, remote };
        router.dispatch(flow, data, |resp| {
            let _ = sock.try_send_to(&resp, remote);
        });
    }
}

impl Router {
    /// Parses and routes one message; `reply` sends a stateless error response.
    fn dispatch(&self, flow: Flow, data: Bytes, reply: impl FnOnce(Bytes)) {
        self.stats.received_for(flow.transport).increment(1);
        let msg = match sip::parse_with(data.clone(), &self.limits) {
            Ok(m) => m,
            Err(err) => {
                self.stats.malformed.increment(1);
                self.policy.record(Instant::now(), flow.remote.ip(), Offence::Malformed);
                tracing::debug!(remote = %flow.remote, %err, "malformed message");
                if let Some(resp) = sip::error_response(&data, &err) {
                    reply(resp);
                }
                return;
            }
        };
        let shard = self.shard_for(&msg);
        let raw = self.capture.then(|| (SystemTime::now(), data));
        if let Some(tx) = self.shards.get(shard)
            && tx.try_send(ShardInput::Message(flow, msg, raw)).is_err()
        {
            self.stats.dropped_overload.increment(1);
        }
    }

    /// Whatever was pending on a flow will not be answered on it; its transactions may live on
    /// any shard.
    fn flow_failed(&self, flow: Flow) {
        for shard in self.shards.iter() {
            let _ = shard.try_send(ShardInput::FlowFailed(flow));
        }
    }

    fn shard_for(&self, msg: &Message) -> usize {
        let n = self.shards.len() as u16;
        if n <= 1 {
            return 0;
        }
        if !msg.is_request()
            && let Some(shard) =
                msg.top_via().ok().and_then(|v| v.branch()).and_then(|b| shard_of_branch(&b))
            && shard < n
        {
            return shard as usize;
        }
        let call_id = msg.header(&HeaderName::CallId).map(|c| &c[..]).unwrap_or(b"");
        ids::shard_for_call_id(call_id, n, &*self.hasher) as usize
    }
}

/// Accepts the connections of one stream listener (TCP, TLS, WS or WSS) within its limit.
async fn stream_accept(
    listener: ListenerId,
    transport: Transport,
    sock: TcpListener,
    certs: Option<Arc<tls::CertStore>>,
    router: Router,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let max = router.config.limits(listener).max_connections;
    loop {
        let (stream, remote) = match sock.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= max {
            router.stats.refused_connections.increment(1);
            tracing::debug!(%remote, transport = transport.name(), "connection over the limit");
            drop(stream);
            continue;
        }
        // A banned or denied source is closed at once, before a task or buffer exists for it.
        if let SourceVerdict::Drop(reason) =
            router.policy.check_source(Instant::now(), remote.ip(), listener.0)
            && reason != DropReason::RateLimited
        {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        // Counted from the accept: a handshake in progress holds a slot, so a flood of
        // handshakes cannot exceed the limit either.
        open.fetch_add(1, Ordering::Relaxed);
        let flow = Flow { listener, transport, remote };
        let acceptor = certs.as_ref().and_then(|c| c.acceptor());
        let router = router.clone();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            serve_accepted(stream, flow, acceptor, &router).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Runs the TLS and WebSocket handshakes an accepted connection needs, then serves it. The
/// connection enters the table (becomes a flow the engine can send on) only once they passed.
async fn serve_accepted(
    stream: TcpStream,
    flow: Flow,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: &Router,
) {
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    let key = (flow.listener, flow.remote);
    let register = || {
        if let Ok(mut c) = router.output.conns.lock() {
            c.insert(key, tx.clone());
        }
    };
    match flow.transport {
        Transport::Udp => return,
        Transport::Tcp => {
            register();
            serve_connection(stream, flow, tx.clone(), rx, router).await;
        }
        Transport::Ws => {
            let Some(socket) = ws::handshake(stream, router).await else { return };
            register();
            ws::serve(socket, flow, tx.clone(), rx, router).await;
        }
        Transport::Tls | Transport::Wss => {
            let Some(acceptor) = acceptor else { return };
            let stream =
                match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(remote = %flow.remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(remote = %flow.remote, "TLS handshake timed out");
                        return;
                    }
                };
            if flow.transport == Transport::Tls {
                register();
                serve_connection(stream, flow, tx.clone(), rx, router).await;
            } else {
                let Some(socket) = ws::handshake(stream, router).await else { return };
                register();
                ws::serve(socket, flow, tx.clone(), rx, router).await;
            }
        }
    }
    if let Ok(mut c) = router.output.conns.lock() {
        c.remove(&key);
    }
    router.flow_failed(flow);
}

/// An outbound connection (TCP, or TLS toward a trunk target) opened because the engine sent
/// to a flow with none.
async fn stream_connect(
    flow: Flow,
    tx: mpsc::Sender<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    router: Router,
) {
    let key = (flow.listener, flow.remote);
    let connect =
        tokio::time::timeout(router.config.timers.t1 * 64, TcpStream::connect(flow.remote)).await;
    match connect {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            match (flow.transport, router.output.tls_targets.get(&key)) {
                (Transport::Tls, Some(out)) => {
                    let handshake = out.connector.connect(out.name.clone(), stream);
                    match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(s)) => serve_connection(s, flow, tx, rx, &router).await,
                        Ok(Err(e)) => {
                            tracing::warn!(remote = %flow.remote, error = %e, "TLS to trunk failed")
                        }
                        Err(_) => tracing::warn!(remote = %flow.remote, "TLS to trunk timed out"),
                    }
                }
                (Transport::Tls, None) => {}
                _ => serve_connection(stream, flow, tx, rx, &router).await,
            }
        }
        Ok(Err(e)) => tracing::debug!(remote = %flow.remote, error = %e, "connect failed"),
        Err(_) => tracing::debug!(remote = %flow.remote, "connect timed out"),
    }
    if let Ok(mut c) = router.output.conns.lock() {
        c.remove(&key);
    }
    router.flow_failed(flow);
}

/// Reads and frames one TCP or TLS connection; `reply` feeds the connection's own writer
/// (stateless error responses and pongs go straight back without a shard).
async fn serve_connection<S>(
    stream: S,
    flow: Flow,
    reply: mpsc::Sender<Bytes>,
    mut out: mpsc::Receiver<Bytes>,
    router: &Router,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        while let Some(data) = out.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        // A TLS close_notify (or a TCP FIN) when the connection is let go.
        let _ = wr.shutdown().await;
    });
    let idle = router.config.limits(flow.listener).idle_timeout;
    let mut buf = BytesMut::with_capacity(8192);
    'conn: loop {
        match tokio::time::timeout(idle, rd.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
        loop {
            match stream::next_frame(&mut buf, &router.limits) {
                Ok(Some(stream::Frame::Message(data))) => {
                    match router.policy.check_source(
                        Instant::now(),
                        flow.remote.ip(),
                        flow.listener.0,
                    ) {
                        SourceVerdict::Allow => router.dispatch(flow, data, |resp| {
                            let _ = reply.try_send(resp);
                        }),
                        // Over its rate: this message is dropped, the connection stays.
                        SourceVerdict::Drop(DropReason::RateLimited) => {}
                        // Banned meanwhile (or denied): the connection goes.
                        SourceVerdict::Drop(_) => break 'conn,
                    }
                }
                Ok(Some(stream::Frame::Ping)) => {
                    // RFC 5626 section 3.5.1: a CRLF pong.
                    let _ = reply.try_send(Bytes::from_static(b"\r\n"));
                }
                Ok(None) => break,
                Err(err) => {
                    // The stream cannot be re-synchronised: close it (RFC 3261 section 18.3).
                    tracing::debug!(remote = %flow.remote, %err, "closing unframeable tcp stream");
                    router.stats.malformed.increment(1);
                    router.policy.record(Instant::now(), flow.remote.ip(), Offence::Malformed);
                    break 'conn;
                }
            }
        }
    }
    writer.abort();
}
