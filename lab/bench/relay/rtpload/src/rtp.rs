//! The RTP load: paced G.711 streams out, measured streams in, on one thread.
//!
//! Every stream sends one 172-byte packet (12-byte RTP header, 160 bytes of PCMU) per 20 ms
//! cycle. The streams' phases are spread evenly over the cycle, so the offered load is smooth:
//! the g-th packet of the whole run is due at `t0 + g * 20 ms / streams`. A periodic timerfd
//! wakes the loop every tick (100 us by default), which sends everything due (one `sendmmsg`
//! per packet by default, see `--batch`) and then drains the sockets that have input with
//! `recvmmsg` batches.
//!
//! The thread sleeps only on the timer, never on the sockets: a packet arriving does not wake it.
//! Woken per packet (as with a blocking epoll over the sockets), and under SCHED_FIFO, the
//! generator and the relay ping-pong one packet per wake-up and the generator's cost per packet
//! more than doubles; polling once per tick reads whole batches. Latency is unaffected, as it
//! comes from the kernel's receive timestamps, not from when we read.
//!
//! Each packet carries, at the start of its payload, a magic number, its stream and cycle, and
//! its send time (`CLOCK_REALTIME`, stamped just before it is handed to the kernel). The
//! latency of a packet is the kernel's receive timestamp (`SO_TIMESTAMPNS`, taken when the packet
//! is queued on our socket, i.e. when the relay sent it on loopback) minus that send time; so the
//! time our own thread takes to get around to reading a packet is not counted against the relay.
//!
//! Cycles `[0, warmup)` are sent but not measured (latching, first-packet paths, page faults);
//! cycles `[warmup, warmup + measure)` form the window in which loss (exact, from a bitmap per
//! stream), duplicates, latency and the relay's CPU are measured.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

use crate::sys::{self, Epoll, RecvBatch, SendBatch, TickTimer};

/// 20 ms: the G.711 packet interval (50 packets/s per stream).
pub const PTIME_NS: u64 = 20_000_000;
const RTP_HEADER: usize = 12;
/// 8000 Hz x 20 ms of PCMU.
const PAYLOAD: usize = 160;
const MAGIC: &[u8; 4] = b"RLB1";
/// PCMU silence: the payload bytes after our stamp.
const PCMU_SILENCE: u8 = 0xff;

/// One direction of one call.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Index of the generator socket that sends it.
    pub tx_sock: usize,
    /// Where it is sent (the relay's port for this leg, or the peer socket in direct mode).
    pub dest: SocketAddrV4,
    /// Index of the generator socket where it must arrive.
    pub rx_sock: usize,
    /// The source it should arrive from (the relay's port on the receiving side, for a
    /// symmetric relay); a mismatch is counted, not treated as loss.
    pub expect_from: SocketAddrV4,
    /// 0 = caller to callee, 1 = callee to caller.
    pub dir: usize,
}

/// How long and how to run.
pub struct Params {
    /// Cycles sent before the window.
    pub warmup_cycles: u64,
    /// Cycles in the measurement window.
    pub measure_cycles: u64,
    /// After the last packet: how long to keep receiving late packets.
    pub drain_ms: u64,
    /// Most packets per `sendmmsg`.
    pub batch: usize,
    /// Period of the pacing timer.
    pub tick_ns: u64,
    /// Processes whose CPU is measured over the window (the relay).
    pub watch_pids: Vec<u32>,
}

/// Counters and distributions of one direction (or both).
#[derive(Default, Clone)]
pub struct DirStats {
    /// Packets sent in the window.
    pub sent: u64,
    /// Distinct packets of the window received.
    pub received: u64,
    /// Latency of the received window packets.
    pub lat: Hist,
}

/// What a run measured.
pub struct Outcome {
    /// Per direction: caller->callee, callee->caller.
    pub dirs: [DirStats; 2],
    /// Window packets received more than once.
    pub duplicates: u64,
    /// Packets that arrived on another socket than their stream's.
    pub misrouted: u64,
    /// Packets from an unexpected source address (not the relay's port of that leg).
    pub unexpected_source: u64,
    /// Datagrams that are not ours (too short, wrong magic, unknown stream).
    pub foreign: u64,
    /// Warm-up packets sent and received (not part of the verdict).
    pub warm_sent: u64,
    /// Warm-up packets received.
    pub warm_received: u64,
    /// Packets the kernel refused at send time.
    pub send_errors: u64,
    /// Packets received without a kernel timestamp (latency then uses our own clock).
    pub no_kernel_ts: u64,
    /// Lateness of our sends against the schedule (the generator's own health).
    pub send_lag: Hist,
    /// Wall time of the window, ns.
    pub window_ns: u64,
    /// CPU of the watched processes over the window, ns (summed over their threads).
    pub watched_cpu_ns: u64,
    /// Resident memory of the watched processes at the end of the window (every call up), KiB.
    pub watched_rss_kib: u64,
    /// CPU of the busiest single thread of the watched processes over the window, ns.
    pub watched_top_thread_ns: u64,
    /// Our own CPU over the window, ns.
    pub self_cpu_ns: u64,
    /// CPU used over the window by all processes of the machine alive at its end, ns (for the
    /// noise figure; processes that ended during the window escape it).
    pub machine_cpu_ns: u64,
    /// UDP datagrams dropped by our sockets' receive queues during the run (/proc/net/udp).
    pub drops_generator: u64,
    /// UDP datagrams dropped by every other socket of the network namespace (the relay's).
    pub drops_others: u64,
    /// Datagrams sent to a closed port in the namespace during the run (/proc/net/snmp).
    pub no_ports: u64,
}

/// A histogram of durations with 100 ns buckets below 1 ms, 10 us buckets below 100 ms, and
/// one overflow bucket (with the exact maximum kept aside).
#[derive(Clone)]
pub struct Hist {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    over: u64,
    n: u64,
    max: u64,
    sum: u128,
}

impl Default for Hist {
    fn default() -> Hist {
        Hist { fine: vec![0; 10_000], coarse: vec![0; 10_000], over: 0, n: 0, max: 0, sum: 0 }
    }
}

impl Hist {
    /// Records one value in ns.
    pub fn add(&mut self, ns: u64) {
        if ns < 1_000_000 {
            self.fine[(ns / 100) as usize] += 1;
        } else if ns < 100_000_000 {
            self.coarse[(ns / 10_000) as usize] += 1;
        } else {
            self.over += 1;
        }
        self.n += 1;
        self.max = self.max.max(ns);
        self.sum += ns as u128;
    }

    /// Adds another histogram into this one.
    pub fn merge(&mut self, o: &Hist) {
        self.fine.iter_mut().zip(&o.fine).for_each(|(a, b)| *a += b);
        self.coarse.iter_mut().zip(&o.coarse).for_each(|(a, b)| *a += b);
        self.over += o.over;
        self.n += o.n;
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Largest value, ns.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean, ns.
    pub fn mean(&self) -> u64 {
        if self.n == 0 { 0 } else { (self.sum / self.n as u128) as u64 }
    }

    /// The q-quantile (0..=1), ns: the upper edge of the bucket holding it.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.fine.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return ((i as u64 + 1) * 100).min(self.max);
            }
        }
        for (i, c) in self.coarse.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return ((i as u64 + 1) * 10_000).min(self.max);
            }
        }
        self.max
    }
}

/// Writes packet `cycle` of stream `id` into `buf`; returns its length.
fn write_packet(buf: &mut [u8], id: u32, cycle: u64) -> usize {
    let seq = (id.wrapping_mul(7919).wrapping_add(cycle as u32)) as u16;
    let ts = id.wrapping_mul(104_729).wrapping_add((cycle as u32).wrapping_mul(PAYLOAD as u32));
    let ssrc = 0x5242_0000u32 ^ id.wrapping_mul(2_654_435_761);
    buf[0] = 0x80; // V=2, no padding, no extension, no CSRC
    buf[1] = 0; // M=0, PT=0 (PCMU)
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let p = &mut buf[RTP_HEADER..RTP_HEADER + PAYLOAD];
    p[0..4].copy_from_slice(MAGIC);
    p[4..8].copy_from_slice(&id.to_be_bytes());
    p[8..16].copy_from_slice(&cycle.to_be_bytes());
    p[24..].fill(PCMU_SILENCE);
    // The stamp last, as close to the send as we can get it.
    p[16..24].copy_from_slice(&sys::real_ns().to_be_bytes());
    RTP_HEADER + PAYLOAD
}

/// Runs the load over `socks` (already bound) for `streams`, and measures it.
pub fn run(socks: &[UdpSocket], streams: &[StreamSpec], p: &Params) -> io::Result<Outcome> {
    let s = streams.len() as u64;
    assert!(s > 0 && p.measure_cycles > 0, "run() needs streams and a window");
    let total_cycles = p.warmup_cycles + p.measure_cycles;
    let g_end = s * total_cycles;
    let warm_g = s * p.warmup_cycles;
    let window_len = p.measure_cycles as usize;

    // Send order: grouped by sending socket, so that consecutive due packets share one sendmmsg.
    let mut order: Vec<u32> = (0..s as u32).collect();
    order.sort_by_key(|&i| (streams[i as usize].tx_sock, i));

    let mut epoll = Epoll::new(socks.len())?;
    for (i, sk) in socks.iter().enumerate() {
        epoll.add(sk.as_raw_fd(), i as u64)?;
    }
    let timer = TickTimer::new(p.tick_ns)?;

    let mut seen = vec![0u64; (s as usize * window_len).div_ceil(64)];
    let mut out = Outcome {
        dirs: Default::default(),
        duplicates: 0,
        misrouted: 0,
        unexpected_source: 0,
        foreign: 0,
        warm_sent: 0,
        warm_received: 0,
        send_errors: 0,
        no_kernel_ts: 0,
        send_lag: Hist::default(),
        window_ns: 0,
        watched_cpu_ns: 0,
        watched_rss_kib: 0,
        watched_top_thread_ns: 0,
        self_cpu_ns: 0,
        machine_cpu_ns: 0,
        drops_generator: 0,
        drops_others: 0,
        no_ports: 0,
    };
    let my_ports: Vec<u16> =
        socks.iter().filter_map(|sk| sk.local_addr().ok()).map(|a| a.port()).collect();
    let drops0 = udp_drops(&my_ports);
    let noports0 = snmp_udp("NoPorts");

    let mut sb = SendBatch::new();
    let mut rb = RecvBatch::new();
    let mut ready = Vec::with_capacity(socks.len() + 1);
    let mut batch_sock = usize::MAX;
    let t0 = sys::mono_ns() + 20_000_000;
    let due = |g: u64| t0 + g * PTIME_NS / s;
    let mut g = 0u64;
    let mut snap0: Option<Snapshot> = None;
    let mut snap1: Option<Snapshot> = None;
    let mut end_snap_at = u64::MAX;
    let mut drain_end = u64::MAX;

    loop {
        let now = sys::mono_ns();
        // Send everything due, but at most 1024 packets before looking at the sockets again,
        // so that a late generator does not let its receive queues overflow.
        let mut budget = 1024;
        while g < g_end && due(g) <= now && budget > 0 {
            if g == warm_g && snap0.is_none() {
                out.send_errors += flush(&mut sb, socks, batch_sock);
                snap0 = Some(Snapshot::take(&p.watch_pids));
            }
            let id = order[(g % s) as usize];
            let st = &streams[id as usize];
            if sb.len() > 0 && (st.tx_sock != batch_sock || sb.len() >= p.batch || sb.is_full()) {
                out.send_errors += flush(&mut sb, socks, batch_sock);
            }
            batch_sock = st.tx_sock;
            let cycle = g / s;
            sb.push(st.dest, |buf| write_packet(buf, id, cycle));
            out.send_lag.add(now - due(g));
            if g >= warm_g {
                out.dirs[st.dir].sent += 1;
            } else {
                out.warm_sent += 1;
            }
            g += 1;
            budget -= 1;
        }
        out.send_errors += flush(&mut sb, socks, batch_sock);
        if g == g_end && end_snap_at == u64::MAX {
            // The relay still has the last packets in hand: close the CPU window one packet
            // interval later (idle relay time in it is negligible against a 10 s window).
            end_snap_at = sys::mono_ns() + PTIME_NS;
            drain_end = end_snap_at + p.drain_ms * 1_000_000;
        }
        if snap1.is_none() && sys::mono_ns() >= end_snap_at {
            snap1 = Some(Snapshot::take(&p.watch_pids));
        }
        if sys::mono_ns() >= drain_end {
            break;
        }

        // Read what has arrived (which sockets have input: epoll without blocking), then sleep
        // until the next tick unless packets are already due (we are behind).
        epoll.wait(0, &mut ready)?;
        for &tok in &ready {
            let si = tok as usize;
            // At most 4 batches per socket per round: the schedule has priority.
            for _ in 0..4 {
                let n = rb.recv(socks[si].as_raw_fd())?;
                for k in 0..n {
                    let r = rb.get(k);
                    account(&mut out, &mut seen, streams, p, window_len, si, &r);
                }
                if n < sys::BATCH_MAX {
                    break;
                }
            }
        }
        if !(g < g_end && due(g) <= sys::mono_ns()) {
            timer.wait();
        }
    }

    let (Some(a), Some(b)) = (snap0, snap1) else {
        return Err(io::Error::other("measurement window never opened"));
    };
    out.window_ns = b.mono - a.mono;
    out.watched_cpu_ns = b.watched_total.saturating_sub(a.watched_total);
    out.watched_rss_kib = b.watched_rss_kib;
    out.watched_top_thread_ns = b
        .watched_threads
        .iter()
        .map(|(tid, t)| t.saturating_sub(*a.watched_threads.get(tid).unwrap_or(&0)))
        .max()
        .unwrap_or(0);
    out.self_cpu_ns = b.self_cpu - a.self_cpu;
    out.machine_cpu_ns =
        b.procs.iter().map(|(pid, t)| t.saturating_sub(*a.procs.get(pid).unwrap_or(&0))).sum();

    let drops1 = udp_drops(&my_ports);
    out.drops_generator = drops1.0.saturating_sub(drops0.0);
    out.drops_others = drops1.1.saturating_sub(drops0.1);
    out.no_ports = snmp_udp("NoPorts").saturating_sub(noports0);
    Ok(out)
}

fn flush(sb: &mut SendBatch, socks: &[UdpSocket], sock: usize) -> u64 {
    let n = sb.len();
    if n == 0 {
        return 0;
    }
    (n - sb.flush(socks[sock].as_raw_fd())) as u64
}

/// Books one received datagram.
fn account(
    out: &mut Outcome,
    seen: &mut [u64],
    streams: &[StreamSpec],
    p: &Params,
    window_len: usize,
    sock: usize,
    r: &sys::Received<'_>,
) {
    let d = r.data;
    if d.len() < RTP_HEADER + 24 || &d[RTP_HEADER..RTP_HEADER + 4] != MAGIC {
        out.foreign += 1;
        return;
    }
    let pl = &d[RTP_HEADER..];
    let id = u32::from_be_bytes(pl[4..8].try_into().expect("4 bytes")) as usize;
    let cycle = u64::from_be_bytes(pl[8..16].try_into().expect("8 bytes"));
    let sent = u64::from_be_bytes(pl[16..24].try_into().expect("8 bytes"));
    let Some(st) = streams.get(id) else {
        out.foreign += 1;
        return;
    };
    if st.rx_sock != sock {
        out.misrouted += 1;
        return;
    }
    if r.from != st.expect_from {
        out.unexpected_source += 1;
    }
    if cycle < p.warmup_cycles {
        out.warm_received += 1;
        return;
    }
    let k = (cycle - p.warmup_cycles) as usize;
    if k >= window_len {
        out.foreign += 1;
        return;
    }
    let bit = id * window_len + k;
    if seen[bit / 64] & (1 << (bit % 64)) != 0 {
        out.duplicates += 1;
        return;
    }
    seen[bit / 64] |= 1 << (bit % 64);
    let rx = match r.kernel_ts {
        Some(t) => t,
        None => {
            out.no_kernel_ts += 1;
            sys::real_ns()
        }
    };
    let ds = &mut out.dirs[st.dir];
    ds.received += 1;
    ds.lat.add(rx.saturating_sub(sent));
}

/// CPU counters at one instant.
struct Snapshot {
    mono: u64,
    watched_total: u64,
    watched_threads: HashMap<u32, u64>,
    watched_rss_kib: u64,
    self_cpu: u64,
    /// utime + stime of every process, by pid.
    procs: HashMap<u32, u64>,
}

impl Snapshot {
    fn take(pids: &[u32]) -> Snapshot {
        let tck = sys::clk_tck();
        let to_ns = |ticks: u64| ticks * 1_000_000_000 / tck;
        let mut watched_total = 0;
        let mut watched_threads = HashMap::new();
        for &pid in pids {
            watched_total += to_ns(stat_ticks(&format!("/proc/{pid}/stat")).unwrap_or(0));
            if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for e in rd.flatten() {
                    let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else {
                        continue;
                    };
                    let t = stat_ticks(&format!("/proc/{pid}/task/{tid}/stat")).unwrap_or(0);
                    watched_threads.insert(tid, to_ns(t));
                }
            }
        }
        let watched_rss_kib = pids.iter().filter_map(|pid| rss_kib(*pid)).sum();
        Snapshot {
            mono: sys::mono_ns(),
            watched_total,
            watched_threads,
            watched_rss_kib,
            self_cpu: sys::self_cpu_ns(),
            procs: all_procs_ticks().into_iter().map(|(p, t)| (p, to_ns(t))).collect(),
        }
    }
}

/// VmRSS of a process, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a `/proc/.../stat` file.
fn stat_ticks(path: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    // Fields after "pid (comm) ": comm may hold spaces, so split after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// utime + stime of every process on the machine (not only this namespace: the pid namespace
/// is shared), by pid. Per-process times are precise (scheduler runtime); the per-CPU lines of
/// /proc/stat are tick samples, which undercount threads that sleep every 100 us.
fn all_procs_ticks() -> HashMap<u32, u64> {
    let mut m = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return m };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(t) = stat_ticks(&format!("/proc/{pid}/stat")) {
            m.insert(pid, t);
        }
    }
    m
}

/// UDP receive-queue drops in this network namespace: (our sockets, every other socket).
fn udp_drops(ours: &[u16]) -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string("/proc/net/udp") else { return (0, 0) };
    let mut mine = 0;
    let mut others = 0;
    for line in s.lines().skip(1) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let (Some(local), Some(drops)) = (f.get(1), f.last()) else { continue };
        let port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
        let drops: u64 = drops.parse().unwrap_or(0);
        if port.is_some_and(|p| ours.contains(&p)) {
            mine += drops;
        } else {
            others += drops;
        }
    }
    (mine, others)
}

/// A counter of the "Udp:" lines of /proc/net/snmp (this network namespace).
fn snmp_udp(name: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/net/snmp") else { return 0 };
    let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else { return 0 };
    h.split_ascii_whitespace()
        .zip(v.split_ascii_whitespace())
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for us in 1..=100 {
            h.add(us * 1000);
        }
        // upper edges of the 100 ns buckets
        assert_eq!(h.quantile(0.5), 50_100);
        assert_eq!(h.quantile(0.99), 99_100);
        assert_eq!(h.max(), 100_000);
        h.add(5_000_000);
        assert_eq!(h.quantile(1.0), 5_000_000);
    }

    #[test]
    fn packet_layout() {
        let mut b = [0u8; 200];
        assert_eq!(write_packet(&mut b, 3, 9), 172);
        assert_eq!(&b[12..16], MAGIC);
        assert_eq!(u64::from_be_bytes(b[20..28].try_into().unwrap()), 9);
    }
}
