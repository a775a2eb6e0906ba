//! `rtpload`: the load generator of the media relay benchmark (`lab/bench/relay/run.sh`).
//!
//! For N calls it opens "caller" and "callee" UDP sockets, gets each call set up through the
//! relay under test, sends G.711 RTP both ways (one 172-byte packet per 20 ms per direction),
//! and measures loss, latency and the relay's CPU over a window of steady state. See
//! `docs/benchmarks.md` ("Media relay") for the method.
//!
//! Control modes:
//! - `--direct`: no relay; each caller socket sends straight to its callee socket and back. The
//!   generator's own latency, subtracted from the relay figures to give the added latency.
//! - `--ng ADDR`: rtpengine, through its ng control protocol (offer, answer, delete).
//! - `--sip ADDR`: an SBC, through SIP: our UAC calls ADDR, our UAS (`--uas`) is the SBC's
//!   trunk target, and RTP goes where the SDP each side received says.
//!
//! With a relay, the addresses from the SDP must be the relay's: if any of them is one of the
//! generator's own sockets (an SBC that passes SDP through), the run is reported with
//! `anchored=no` and, with `--require-anchored`, ends with status 3 before sending RTP.
//!
//! The result is printed as `key=value` lines on stdout (read by run.sh) and as a summary on
//! stderr.

mod ng;
mod rtp;
mod sdp;
mod sip;
mod sys;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ng::{NgClient, Value};
use rtp::{Hist, Params, StreamSpec};

const USAGE: &str = "\
usage: rtpload --calls N (--direct | --ng IP:PORT | --sip IP:PORT [--uac IP:PORT] [--uas IP:PORT])
               [--local IP] [--rtp-port PORT] [--sockets K] [--warmup S] [--duration S]
               [--drain-ms MS] [--batch B] [--tick-us US] [--watch-pid PID]...
               [--setup-rate CPS] [--require-anchored] [--no-teardown]
  --sockets K   RTP sockets per side (caller, callee) shared by the calls; 0 = one per leg
                (default 16)
  --batch B     most packets per sendmmsg (default 1: exact send stamps)";

enum Control {
    Direct,
    Ng(SocketAddrV4),
    Sip(SocketAddrV4),
}

struct Args {
    calls: usize,
    control: Control,
    local: Ipv4Addr,
    rtp_port: u16,
    sockets: usize,
    warmup_s: f64,
    duration_s: f64,
    drain_ms: u64,
    batch: usize,
    tick_us: u64,
    watch: Vec<u32>,
    setup_rate: u32,
    uac: SocketAddrV4,
    uas: SocketAddrV4,
    require_anchored: bool,
    teardown: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        calls: 0,
        control: Control::Direct,
        local: Ipv4Addr::LOCALHOST,
        rtp_port: 10_000,
        sockets: 16,
        warmup_s: 2.0,
        duration_s: 10.0,
        drain_ms: 500,
        // One packet per sendmmsg: the send stamp is written just before the call, and the kernel
        // delivers a batch one packet after the other (waking the relay each time), so later
        // packets of a batch would carry stamps taken before their delivery began. Measured
        // through the SBC at 1,000 calls: p50 34 us with batches of 8, 22 us with 1, for the same
        // generator CPU (delivery costs far more than the system call).
        batch: 1,
        tick_us: 100,
        watch: Vec::new(),
        setup_rate: 1000,
        uac: "127.0.0.1:5061".parse().expect("literal"),
        uas: "127.0.0.1:5080".parse().expect("literal"),
        require_anchored: false,
        teardown: true,
    };
    let mut control = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{k} needs a value"));
        fn num<T: std::str::FromStr>(k: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{k}: bad value '{v}'"))
        }
        match k.as_str() {
            "--calls" => a.calls = num(&k, val()?)?,
            "--direct" => control = Some(Control::Direct),
            "--ng" => control = Some(Control::Ng(num(&k, val()?)?)),
            "--sip" => control = Some(Control::Sip(num(&k, val()?)?)),
            "--uac" => a.uac = num(&k, val()?)?,
            "--uas" => a.uas = num(&k, val()?)?,
            "--local" => a.local = num(&k, val()?)?,
            "--rtp-port" => a.rtp_port = num(&k, val()?)?,
            "--sockets" => a.sockets = num(&k, val()?)?,
            "--warmup" => a.warmup_s = num(&k, val()?)?,
            "--duration" => a.duration_s = num(&k, val()?)?,
            "--drain-ms" => a.drain_ms = num(&k, val()?)?,
            "--batch" => a.batch = num(&k, val()?)?,
            "--tick-us" => a.tick_us = num(&k, val()?)?,
            "--watch-pid" => a.watch.push(num(&k, val()?)?),
            "--setup-rate" => a.setup_rate = num(&k, val()?)?,
            "--require-anchored" => a.require_anchored = true,
            "--no-teardown" => a.teardown = false,
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    a.control = control.ok_or("one of --direct, --ng, --sip is required")?;
    if a.calls == 0 {
        return Err("--calls N (N > 0) is required".into());
    }
    if a.duration_s < 0.02 {
        return Err("--duration must be at least one packet interval".into());
    }
    a.batch = a.batch.clamp(1, sys::BATCH_MAX);
    a.tick_us = a.tick_us.max(10);
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("rtpload: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rtpload: {e}");
            println!("error={}", e.to_string().replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

fn run(a: &Args) -> Result<ExitCode, String> {
    sys::raise_nofile_limit();
    sys::set_min_timer_slack();
    let n = a.calls;
    let k = if a.sockets == 0 { n } else { a.sockets.min(n) };
    // Caller sockets on even ports from --rtp-port, callee sockets after them; 8 MB buffers so
    // that our own queues never drop (checked after the run in /proc/net/udp).
    let mut socks = Vec::with_capacity(2 * k);
    for i in 0..2 * k {
        let port = a.rtp_port as usize + 2 * i;
        let port = u16::try_from(port).map_err(|_| format!("RTP port {port} out of range"))?;
        let addr = SocketAddrV4::new(a.local, port);
        socks.push(sys::bind_udp(addr, 8 << 20).map_err(|e| format!("bind {addr}: {e}"))?);
    }
    let sock_addr = |i: usize| SocketAddrV4::new(a.local, a.rtp_port + 2 * i as u16);
    // Calls are spread over the sockets in contiguous blocks (see rtp.rs: send order).
    let a_sock = |c: usize| c * k / n;
    let b_sock = |c: usize| k + c * k / n;
    let legs: Vec<(SocketAddrV4, SocketAddrV4)> =
        (0..n).map(|c| (sock_addr(a_sock(c)), sock_addr(b_sock(c)))).collect();

    let t_setup = Instant::now();
    let mut sip_peer = None;
    let mut ng_client = None;
    let (mode, dests): (&str, Vec<(SocketAddrV4, SocketAddrV4)>) = match a.control {
        // Direct: the caller sends to the callee's socket and the other way round.
        Control::Direct => ("direct", legs.iter().map(|&(x, y)| (y, x)).collect()),
        Control::Ng(server) => {
            let mut cl = NgClient::new(a.local, server).map_err(|e| format!("ng socket: {e}"))?;
            let d = ng_setup(&mut cl, &legs).map_err(|e| format!("ng setup: {e}"))?;
            ng_client = Some(cl);
            ("ng", d)
        }
        Control::Sip(sbc) => {
            let mut p =
                sip::SipPeer::new(a.uac, a.uas, sbc).map_err(|e| format!("sip sockets: {e}"))?;
            let deadline = Duration::from_secs_f64(10.0 + n as f64 / a.setup_rate as f64 * 2.0);
            let d = p
                .setup(&legs, a.setup_rate, 500, deadline)
                .map_err(|e| format!("sip setup: {e}"))?;
            sip_peer = Some(p);
            ("sip", d)
        }
    };
    let setup_s = t_setup.elapsed().as_secs_f64();

    // Anchoring check: with a relay, no address from the SDP may be one of our own sockets.
    let own: std::collections::HashSet<SocketAddrV4> = (0..2 * k).map(sock_addr).collect();
    let own_dests = dests.iter().filter(|(x, y)| own.contains(x) || own.contains(y)).count();
    let anchored = match a.control {
        Control::Direct => "direct",
        _ if own_dests == 0 => "yes",
        _ if own_dests == n => "no",
        _ => "partly",
    };
    println!("mode={mode}");
    println!("calls={n}");
    println!("sockets_per_side={k}");
    println!("anchored={anchored}");
    println!("setup_s={setup_s:.3}");
    if anchored != "yes" && anchored != "direct" {
        eprintln!(
            "rtpload: {own_dests} of {n} calls have SDP pointing at the generator's own sockets: \
             the relay under test does not anchor media"
        );
        if a.require_anchored {
            return Ok(ExitCode::from(3));
        }
    }

    let streams: Vec<StreamSpec> = (0..n)
        .flat_map(|c| {
            let (a_dest, b_dest) = dests[c];
            [
                // caller -> relay (a_dest) -> callee; the relay sends from its callee-side port
                StreamSpec {
                    tx_sock: a_sock(c),
                    dest: a_dest,
                    rx_sock: b_sock(c),
                    expect_from: b_dest,
                    dir: 0,
                },
                StreamSpec {
                    tx_sock: b_sock(c),
                    dest: b_dest,
                    rx_sock: a_sock(c),
                    expect_from: a_dest,
                    dir: 1,
                },
            ]
        })
        .collect();
    let p = Params {
        warmup_cycles: (a.warmup_s * 50.0).round() as u64,
        measure_cycles: ((a.duration_s * 50.0).round() as u64).max(1),
        drain_ms: a.drain_ms,
        batch: a.batch,
        tick_ns: a.tick_us * 1000,
        watch_pids: a.watch.clone(),
    };
    let o = rtp::run(&socks, &streams, &p).map_err(|e| format!("rtp: {e}"))?;

    let t_down = Instant::now();
    let mut teardown_ok = n;
    if a.teardown {
        if let Some(cl) = ng_client.as_mut() {
            ng_teardown(cl, n).map_err(|e| format!("ng delete: {e}"))?;
        }
        if let Some(pp) = sip_peer.as_mut() {
            let deadline = Duration::from_secs_f64(10.0 + n as f64 / a.setup_rate as f64 * 2.0);
            teardown_ok =
                pp.teardown(a.setup_rate, deadline).map_err(|e| format!("sip teardown: {e}"))?;
        }
    }
    report(&o, n, &p, t_down.elapsed().as_secs_f64(), teardown_ok, sip_peer.as_ref());
    Ok(ExitCode::SUCCESS)
}

/// Offer (caller's SDP) and answer (callee's SDP) for every call. rtpengine's offer reply is the
/// SDP for the callee, so it says where the callee sends; the answer reply says where the caller
/// sends.
fn ng_setup(
    cl: &mut NgClient,
    legs: &[(SocketAddrV4, SocketAddrV4)],
) -> std::io::Result<Vec<(SocketAddrV4, SocketAddrV4)>> {
    let pid = std::process::id();
    let cid = |c: usize| Value::str(&format!("rlb-{pid}-{c}"));
    let common = |c: usize, cmd: &str, sdp_text: String| {
        vec![
            ("command", Value::str(cmd)),
            ("call-id", cid(c)),
            ("from-tag", Value::str(&format!("a{c}"))),
            ("sdp", Value::str(&sdp_text)),
            ("replace", Value::List(vec![Value::str("origin"), Value::str("session-connection")])),
            ("ICE", Value::str("remove")),
        ]
    };
    let offers: Vec<Value> = legs
        .iter()
        .enumerate()
        .map(|(c, &(a_rtp, _))| Value::dict(common(c, "offer", sdp::build(a_rtp, c as u64 + 1))))
        .collect();
    let offer_replies = cl.request_all(&offers)?;
    let answers: Vec<Value> = legs
        .iter()
        .enumerate()
        .map(|(c, &(_, b_rtp))| {
            let mut d = common(c, "answer", sdp::build(b_rtp, c as u64 + 1_000_000));
            d.push(("to-tag", Value::str(&format!("b{c}"))));
            Value::dict(d)
        })
        .collect();
    let answer_replies = cl.request_all(&answers)?;
    let media = |r: &Value, what: &str, c: usize| -> std::io::Result<SocketAddrV4> {
        if r.get("result").and_then(Value::as_str) != Some("ok") {
            let why = r.get("error-reason").and_then(Value::as_str).unwrap_or("?");
            return Err(std::io::Error::other(format!("{what} of call {c}: {why}")));
        }
        r.get("sdp")
            .and_then(Value::as_str)
            .and_then(sdp::media_addr)
            .ok_or_else(|| std::io::Error::other(format!("{what} of call {c}: no usable SDP")))
    };
    (0..legs.len())
        .map(|c| {
            Ok((media(&answer_replies[c], "answer", c)?, media(&offer_replies[c], "offer", c)?))
        })
        .collect()
}

fn ng_teardown(cl: &mut NgClient, n: usize) -> std::io::Result<()> {
    let pid = std::process::id();
    let dels: Vec<Value> = (0..n)
        .map(|c| {
            Value::dict(vec![
                ("command", Value::str("delete")),
                ("call-id", Value::str(&format!("rlb-{pid}-{c}"))),
                ("from-tag", Value::str(&format!("a{c}"))),
            ])
        })
        .collect();
    cl.request_all(&dels).map(|_| ())
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn report(
    o: &rtp::Outcome,
    n: usize,
    p: &Params,
    teardown_s: f64,
    teardown_ok: usize,
    sip: Option<&sip::SipPeer>,
) {
    let mut all = Hist::default();
    o.dirs.iter().for_each(|d| all.merge(&d.lat));
    let sent: u64 = o.dirs.iter().map(|d| d.sent).sum();
    let received: u64 = o.dirs.iter().map(|d| d.received).sum();
    let lost = sent - received.min(sent);
    let win_s = o.window_ns as f64 / 1e9;
    let kv = |k: &str, v: String| println!("{k}={v}");
    kv("window_s", format!("{win_s:.3}"));
    kv("offered_pps", format!("{:.0}", sent as f64 / (p.measure_cycles as f64 * 0.02)));
    kv("sent", sent.to_string());
    kv("received", received.to_string());
    kv("lost", lost.to_string());
    for (i, name) in ["ab", "ba"].iter().enumerate() {
        let d = &o.dirs[i];
        kv(&format!("lost_{name}"), (d.sent - d.received.min(d.sent)).to_string());
        kv(&format!("p50_us_{name}"), us(d.lat.quantile(0.5)));
        kv(&format!("p99_us_{name}"), us(d.lat.quantile(0.99)));
    }
    kv("duplicates", o.duplicates.to_string());
    kv("misrouted", o.misrouted.to_string());
    kv("unexpected_source", o.unexpected_source.to_string());
    kv("foreign", o.foreign.to_string());
    kv("warm_sent", o.warm_sent.to_string());
    kv("warm_received", o.warm_received.to_string());
    kv("send_errors", o.send_errors.to_string());
    kv("no_kernel_ts", o.no_kernel_ts.to_string());
    kv("lat_samples", all.count().to_string());
    kv("p50_us", us(all.quantile(0.5)));
    kv("p90_us", us(all.quantile(0.9)));
    kv("p99_us", us(all.quantile(0.99)));
    kv("p999_us", us(all.quantile(0.999)));
    kv("max_us", us(all.max()));
    kv("mean_us", us(all.mean()));
    kv("lag_p99_us", us(o.send_lag.quantile(0.99)));
    kv("lag_max_us", us(o.send_lag.max()));
    let cores = |ns: u64| format!("{:.3}", ns as f64 / o.window_ns.max(1) as f64);
    kv("relay_cpu_s", format!("{:.3}", o.watched_cpu_ns as f64 / 1e9));
    kv("relay_cores", cores(o.watched_cpu_ns));
    kv("relay_rss_kib", o.watched_rss_kib.to_string());
    kv("relay_top_thread_cores", cores(o.watched_top_thread_ns));
    // CPU per packet relayed: relay CPU over the window / window packets that came out of it.
    let per_pkt =
        if received > 0 { o.watched_cpu_ns as f64 / 1000.0 / received as f64 } else { 0.0 };
    kv("relay_us_per_pkt", format!("{per_pkt:.3}"));
    kv("gen_cores", cores(o.self_cpu_ns));
    let others = o.machine_cpu_ns.saturating_sub(o.watched_cpu_ns + o.self_cpu_ns);
    kv("others_cores", cores(others));
    kv("machine_cores", cores(o.machine_cpu_ns));
    kv("drops_generator", o.drops_generator.to_string());
    kv("drops_relay", o.drops_others.to_string());
    kv("no_ports", o.no_ports.to_string());
    kv("teardown_s", format!("{teardown_s:.3}"));
    kv("teardown_ok", teardown_ok.to_string());
    if let Some(s) = sip {
        kv("sip_retransmissions", s.retransmissions.to_string());
        kv("sip_uas_other_requests", s.uas_other_requests.to_string());
    }
    eprintln!(
        "rtpload: {n} calls, {sent} packets in {win_s:.1} s window, lost {lost}, \
         latency p50 {} p99 {} max {} us, relay {} us/pkt ({} cores), generator {} cores, \
         send lag p99 {} us",
        us(all.quantile(0.5)),
        us(all.quantile(0.99)),
        us(all.max()),
        format_args!("{per_pkt:.2}"),
        cores(o.watched_cpu_ns),
        cores(o.self_cpu_ns),
        us(o.send_lag.quantile(0.99)),
    );
}
