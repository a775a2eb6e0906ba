//! The RTP/RTCP relay: the data plane behind [`RelayBackend`].
//!
//! [`Relay::start`] spawns media worker threads (`media-0`, `media-1`, …), one per core by
//! default. Each stream pair is placed on the least loaded worker, both of its sides on the same
//! one, and that worker alone reads and writes its four sockets from then on. The backend calls
//! come from signalling threads and take the control path: a lock on the pair table (per call
//! event, never per packet), then a command on the worker's bounded channel and a wake-up of its
//! event loop. Statistics come back without a lock: each worker publishes a pair's figures
//! after every receive batch through atomics (see `publish`).
//!
//! Per packet, a worker applies the rules of `packet` (source check and NAT latching, RFC 5761
//! demultiplexing, header checks, hold) and forwards through the other side's socket, rewriting
//! only the payload type byte; RTP from a side whose `RemoteSpec::transcode` is set goes through
//! that side's [`crate::transcode::Transcoder`] instead, on the same worker. It reads with `recvmmsg` and writes with `sendmmsg`, up to 32
//! datagrams per call, and reads the clock once per batch.
//!
//! Sockets are non-blocking UDP, bound on the pair's local addresses (IPv4 or IPv6 per side;
//! IPv6 sockets are IPv6-only so IPv4 peers never appear as mapped addresses), with
//! [`SOCKET_BUFFER`] of receive and send buffer and the configured DSCP.
//!
//! Ordering guarantee: a `configure` applies to every packet the worker reads after the call
//! returned, because the worker applies all pending commands after each wait and before it
//! reads any socket. `close` waits until the worker has closed the sockets and returned the
//! ports, so they can be leased again at once.
//!
//! Secure sides: a side configured with [`crate::backend::Security::Sdes`] or
//! [`crate::backend::Security::Dtls`] gets a [`crate::secure::SecureSide`] on its worker, which
//! answers ICE checks and DTLS on the side's RTP socket and (un)protects its SRTP; DTLS sides
//! are always rtcp-muxed. All sides share one DTLS identity made at start
//! ([`RelayBackend::dtls_fingerprint`]). A side that fails (fingerprint mismatch, handshake
//! failure, consent expired) reports it in [`PairStats::failure`] and passes nothing more;
//! the pair's other side and the other pairs are not affected.
//!
//! Linux only: the batch calls and epoll are Linux interfaces. The only `unsafe` code is in
//! `sys` (the batch calls); the rest of the relay denies it.
//!
//! ```no_run
//! use sbc_media::LegSide;
//! use sbc_media::backend::{PairSpec, RelayBackend, RemoteSpec};
//! use sbc_media::relay::{Relay, RelayConfig};
//!
//! let config = RelayConfig { port_min: 30000, port_max: 39999, workers: 0, dscp: Some(46) };
//! let relay = Relay::start(config)?;
//! let local = "192.0.2.10".parse().unwrap();
//! let pair = relay.open(PairSpec { local_a: local, local_b: local })?;
//! // From the offer (leg A) and the answer (leg B):
//! let a = RemoteSpec { rtp: Some("198.51.100.7:4000".parse().unwrap()), ..RemoteSpec::default() };
//! relay.configure(pair.id, LegSide::A, &a);
//! // ... at the end of the call:
//! let figures = relay.close(pair.id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_code)]

mod packet;
mod publish;
mod sys;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use self::publish::SharedStats;
use self::worker::{Command, WAKER, Worker};
use crate::LegSide;
use crate::backend::{
    PacketTap, PairId, PairPorts, PairSpec, PairStats, RelayBackend, RelayError, RemoteSpec,
};
use crate::dtmf::DtmfEvent;
use crate::ports::{Leased, PortPool};
use crate::secure::dtls::DtlsIdentity;
use crate::transcode::OpusSettings;

/// Receive and send buffer requested for every media socket (the kernel doubles it and caps
/// it at `net.core.rmem_max` / `wmem_max`). 256 KiB holds seconds of a voice stream, or about
/// 100 ms of a 20 Mbit/s video stream, when a worker is late; the kernel charges only what is
/// queued, so idle sockets cost nothing.
pub const SOCKET_BUFFER: usize = 256 * 1024;

/// Commands queued per worker before a signalling thread waits (backpressure). A worker takes
/// all pending commands on every wake-up, so the queue only fills if a worker is stuck.
const COMMAND_QUEUE: usize = 1024;

/// How long `close` waits for the worker to confirm. Only a stuck worker makes it wait that
/// long; the final figures are then the last ones published.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How the relay is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Lowest port of the media range (inclusive).
    pub port_min: u16,
    /// Highest port of the media range (inclusive).
    pub port_max: u16,
    /// Media worker threads; 0: one per available core.
    pub workers: usize,
    /// DSCP (0..=63) marked on the packets sent (IP_TOS / IPV6_TCLASS = dscp << 2), e.g. 46
    /// (EF, RFC 3246) for voice; `None` leaves the system default.
    pub dscp: Option<u8>,
}

/// The multi-threaded RTP/RTCP relay. Shared by all signalling shards (it is `Sync`); stops its
/// workers when dropped.
pub struct Relay {
    pool: PortPool,
    dscp: Option<u8>,
    /// Time origin of the published `last_packet` instants.
    epoch: Instant,
    workers: Vec<WorkerHandle>,
    /// LOCK: signalling threads on open, configure, stats and close; workers never take it.
    control: Mutex<Control>,
    next_id: AtomicU64,
    /// LOCK: taken by `shutdown` only.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The DTLS certificate of every secure side, made at start; shared with the workers.
    identity: Arc<DtlsIdentity>,
}

struct WorkerHandle {
    commands: SyncSender<Command>,
    waker: Waker,
    /// Dies with the worker thread; lets tests see that shutdown really ended it.
    #[cfg_attr(not(test), allow(dead_code))]
    alive: Weak<()>,
}

#[derive(Default)]
struct Control {
    pairs: HashMap<PairId, PairEntry>,
    /// Open pairs per worker, to place new ones.
    load: Vec<usize>,
}

struct PairEntry {
    worker: usize,
    shared: Arc<SharedStats>,
}

impl Relay {
    /// Checks the config, then starts the workers; transcoded calls get the default Opus
    /// encoder settings.
    pub fn start(config: RelayConfig) -> io::Result<Relay> {
        Relay::start_with_opus(config, OpusSettings::default())
    }

    /// [`Relay::start`] with the Opus encoder settings of transcoded calls (complexity,
    /// bitrate).
    pub fn start_with_opus(config: RelayConfig, opus: OpusSettings) -> io::Result<Relay> {
        let pool = PortPool::new(config.port_min, config.port_max)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if config.dscp.is_some_and(|d| d > 63) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "DSCP is a 6-bit value"));
        }
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let epoch = Instant::now();
        // One identity per relay: every `a=fingerprint` the SBC writes names it.
        let identity = Arc::new(DtlsIdentity::generate().map_err(io::Error::other)?);
        let mut relay = Relay {
            pool,
            dscp: config.dscp,
            epoch,
            workers: Vec::with_capacity(workers),
            control: Mutex::new(Control { pairs: HashMap::new(), load: vec![0; workers] }),
            next_id: AtomicU64::new(1),
            threads: Mutex::new(Vec::with_capacity(workers)),
            identity,
        };
        // On an error below, dropping `relay` stops the workers already started.
        for i in 0..workers {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            let (commands, rx) = mpsc::sync_channel(COMMAND_QUEUE);
            let alive = Arc::new(());
            let identity = Arc::clone(&relay.identity);
            let handle = WorkerHandle { commands, waker, alive: Arc::downgrade(&alive) };
            let thread =
                std::thread::Builder::new().name(format!("media-{i}")).spawn(move || {
                    let _alive = alive;
                    Worker::new(poll, rx, epoch, identity, opus).run();
                })?;
            relay.workers.push(handle);
            relay.threads().push(thread);
        }
        Ok(relay)
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Number of open pairs.
    pub fn pairs(&self) -> usize {
        self.control().pairs.len()
    }

    /// Stops the workers and waits for them; open pairs are closed and their ports returned.
    /// Idempotent; also done on drop. Afterwards `open` fails and `stats` returns the last
    /// figures.
    pub fn shutdown(&self) {
        for w in &self.workers {
            // An error means the worker is already gone.
            if w.commands.send(Command::Shutdown).is_ok() {
                let _ = w.waker.wake();
            }
        }
        let threads = std::mem::take(&mut *self.threads());
        for t in threads {
            if t.join().is_err() {
                tracing::error!("media worker panicked");
            }
        }
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        // The table is updated in single statements; a panic on another signalling thread
        // cannot leave it half-written.
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn threads(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `cmd` for worker `w` and wakes it; `false` (and the command dropped, with any
    /// sockets and leases in it) if the worker is gone.
    fn send(&self, w: usize, cmd: Command) -> bool {
        let handle = &self.workers[w];
        if handle.commands.send(cmd).is_err() {
            return false;
        }
        // Fails only if the eventfd is broken; the worker then also fails its next poll.
        let _ = handle.waker.wake();
        true
    }

    /// [`RelayBackend::configure`] or, with `restore`, [`RelayBackend::restore`].
    fn configure_side(&self, pair: PairId, side: LegSide, remote: &RemoteSpec, restore: bool) {
        let Some(worker) = self.control().pairs.get(&pair).map(|e| e.worker) else { return };
        let remote = Box::new(remote.clone());
        // A stopped worker has closed the pair already: nothing left to configure.
        self.send(worker, Command::Configure { id: pair, side, remote, restore });
    }

    fn lease(&self, ip: std::net::IpAddr) -> Result<Leased<mio::net::UdpSocket>, RelayError> {
        let dscp = self.dscp;
        self.pool.lease(ip, |addr| bind_socket(addr, dscp).map(mio::net::UdpSocket::from_std))
    }
}

impl RelayBackend for Relay {
    fn open(&self, spec: PairSpec) -> Result<PairPorts, RelayError> {
        let a = self.lease(spec.local_a)?;
        let b = self.lease(spec.local_b)?;
        let ports = PairPorts {
            id: PairId(self.next_id.fetch_add(1, Ordering::Relaxed)),
            a_rtp: a.lease.rtp_port(),
            b_rtp: b.lease.rtp_port(),
        };
        let shared = Arc::new(SharedStats::default());
        let worker = {
            let mut control = self.control();
            let Some(w) = (0..control.load.len()).min_by_key(|&w| control.load[w]) else {
                return Err(RelayError::Io("relay has no media workers".into()));
            };
            control.load[w] += 1;
            control.pairs.insert(ports.id, PairEntry { worker: w, shared: Arc::clone(&shared) });
            w
        };
        let v6 = [spec.local_a.is_ipv6(), spec.local_b.is_ipv6()];
        let cmd = Command::Open { id: ports.id, sides: [a, b], v6, shared };
        if !self.send(worker, cmd) {
            // The refused command was dropped with its sockets and leases.
            let mut control = self.control();
            control.pairs.remove(&ports.id);
            control.load[worker] -= 1;
            return Err(RelayError::Io("media worker stopped".into()));
        }
        Ok(ports)
    }

    fn dtls_fingerprint(&self) -> Option<String> {
        Some(self.identity.fingerprint().to_owned())
    }

    fn configure(&self, pair: PairId, side: LegSide, remote: &RemoteSpec) {
        self.configure_side(pair, side, remote, false);
    }

    fn restore(&self, pair: PairId, side: LegSide, remote: &RemoteSpec) {
        self.configure_side(pair, side, remote, true);
    }

    fn tap(&self, pair: PairId, tap: Option<Arc<dyn PacketTap>>) {
        let Some(worker) = self.control().pairs.get(&pair).map(|e| e.worker) else { return };
        // Like `configure`: applies to every packet the worker reads after this returned.
        self.send(worker, Command::Tap { id: pair, tap });
    }

    fn send_dtmf(&self, pair: PairId, toward: LegSide, event: DtmfEvent) {
        let Some(worker) = self.control().pairs.get(&pair).map(|e| e.worker) else { return };
        self.send(worker, Command::Dtmf { id: pair, toward, event });
    }

    fn poll_dtmf(&self, pair: PairId) -> Option<(LegSide, DtmfEvent)> {
        let shared = Arc::clone(&self.control().pairs.get(&pair)?.shared);
        shared.pop_dtmf()
    }

    fn stats(&self, pair: PairId) -> Option<PairStats> {
        let shared = Arc::clone(&self.control().pairs.get(&pair)?.shared);
        Some(shared.snapshot(self.epoch))
    }

    fn close(&self, pair: PairId) -> Option<PairStats> {
        let entry = {
            let mut control = self.control();
            let entry = control.pairs.remove(&pair)?;
            control.load[entry.worker] -= 1;
            entry
        };
        let (done, wait) = mpsc::sync_channel(1);
        if self.send(entry.worker, Command::Close { id: pair, done }) {
            // The worker answers after publishing the final figures and returning the ports.
            // Disconnected: the worker stopped (shutdown) and closed the pair on its way out.
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(CLOSE_WAIT) {
                tracing::warn!(pair = pair.0, "media worker did not confirm a close in time");
            }
        }
        Some(entry.shared.snapshot(self.epoch))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("workers", &self.workers.len())
            .field("ports", &self.pool)
            .field("dscp", &self.dscp)
            .finish_non_exhaustive()
    }
}

/// A non-blocking UDP socket bound on `addr`, with the relay's buffer sizes and DSCP.
fn bind_socket(addr: SocketAddr, dscp: Option<u8>) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    // Best effort: a smaller buffer than asked for is not a reason to refuse a call.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    if let Some(dscp) = dscp {
        // The DSCP is the upper six bits of the TOS / traffic class octet (RFC 2474 §3).
        let tos = u32::from(dscp) << 2;
        if addr.is_ipv6() { socket.set_tclass_v6(tos)? } else { socket.set_tos_v4(tos)? }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
