//! Transcoding benchmark tool (see lab/bench/transcode/run.sh and docs/benchmarks.md).
//!
//! Options of both: `--complexity C`, `--bitrate B`, `--loss L` (the encoder's expected loss in
//! percent: in-band FEC is produced only when it is above 0, as when the browser's RTCP reports
//! loss), defaults those of the SBC; `--fullband`: the browser's packets are fullband at
//! 32 kbit/s (a browser that ignores the SBC's Opus parameters) instead of narrowband at
//! 20 kbit/s; `--signal S`: the audio both sides carry, `recorded` (default: the recorded speech of SIPp's `g711a.pcap`, from
//! Debian's sip-tester), `speech` (a synthetic, always voiced speech-like signal) or `tone` (a
//! steady 1 kHz sine, like the lab's test tones). libopus's SILK encoder costs differ by signal: a tone
//! is the cheapest, voiced speech the dearest.
//!
//! `tcbench codec [--seconds S]`: the raw cost of libopus on the SBC's path,
//! per 20 ms frame: one decode of a browser's Opus packet straight to 8 kHz, and one encode of
//! 8 kHz PCM at the SBC's settings (VOIP, 20 kbit/s, in-band FEC). Both are what one Opus <-> PCMU
//! call costs every 20 ms, so 20 ms / (decode + encode) is the codec bound in calls per core.
//! Also times the SBC's `Transcoder` (both directions of one call, no sockets), alone and with 200
//! calls in turn, each at its own place in the signal (cold codec states, as in the relay).
//!
//! `tcbench rtpengine --calls N --pid PID [--ng-port P] [--warmup S] [--duration S]`: the same
//! calls through an rtpengine already running (its ng port on loopback, PID for its CPU),
//! set up with ng offer/answer so that it transcodes: the browser side offers Opus, the offer
//! toward the trunk masks it and adds PCMU (`codec: {mask: [all], transcode: [PCMU]}`), the
//! trunk answers PCMU.
//!
//! `tcbench relay --calls N [--warmup S] [--duration S] [--relay-core C] [--gen-core C]
//! `: N calls through the SBC's relay (`sbc_media::relay::Relay`, one media
//! worker, the code the `sbc` binary runs), each a browser side sending Opus (20 ms, 48 kHz
//! clock) and a trunk side sending PCMU, every 20 ms each, transcoded both ways. Prints
//! key=value lines: packets sent and received in the window, loss, latency percentiles, the
//! worker's CPU per call.

// rtpload's ng (bencode over UDP) client, shared with the relay benchmark.
#[path = "../../../relay/rtpload/src/ng.rs"]
#[allow(dead_code)]
mod ng;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opusic_c::{Application, Channels, InbandFec, SampleRate};
use sbc_media::LegSide;
use sbc_media::backend::{CodecSpec, PairSpec, RelayBackend, RemoteSpec, Transcode};
use sbc_media::relay::{Relay, RelayConfig};
use sbc_media::transcode::{Emitted, OpusSettings, Transcoder, g711};

const PTIME: Duration = Duration::from_millis(20);
/// Distinct canned frames (5 s of signal), looped.
const CANNED: usize = 250;
/// Calls whose transcoders `tcbench codec` runs in turn, for the cost with cold codec states.
const INTERLEAVED: usize = 200;
/// Frames between one call's place in the canned signal and the next call's: prime to
/// [`CANNED`], so that calls spread over all of it.
const CALL_STRIDE: usize = 37;
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// `--fullband`: see the module docs.
static FULLBAND: AtomicBool = AtomicBool::new(false);
/// `--signal`: see the module docs.
static SIGNAL: OnceLock<Signal> = OnceLock::new();
/// Where Debian's sip-tester puts the recorded speech of `--signal recorded`.
const RECORDED_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Speech,
    Tone,
    Recorded,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Speech => "speech",
            Signal::Tone => "tone",
            Signal::Recorded => "recorded",
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: f64| -> f64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let defaults = OpusSettings::default();
    FULLBAND.store(args.iter().any(|a| a == "--fullband"), Ordering::Relaxed);
    let signal = match args.iter().position(|a| a == "--signal").and_then(|i| args.get(i + 1)) {
        None => Signal::Recorded,
        Some(name) => match [Signal::Speech, Signal::Tone, Signal::Recorded]
            .into_iter()
            .find(|s| s.name() == name)
        {
            Some(s) => s,
            None => {
                eprintln!("--signal: speech, tone or recorded");
                return ExitCode::from(64);
            }
        },
    };
    let _ = SIGNAL.set(signal);
    let settings = OpusSettings {
        complexity: opt("--complexity", f64::from(defaults.complexity)) as u8,
        bitrate: opt("--bitrate", f64::from(defaults.bitrate)) as u32,
        expected_loss: opt("--loss", f64::from(defaults.expected_loss)) as u8,
    };
    match args.first().map(String::as_str) {
        Some("codec") => {
            codec(settings, opt("--seconds", 3.0));
            ExitCode::SUCCESS
        }
        Some("relay") => relay(
            opt("--calls", 100.0) as usize,
            opt("--warmup", 2.0),
            opt("--duration", 10.0),
            opt("--relay-core", 0.0) as usize,
            opt("--gen-core", 1.0) as usize,
            settings,
        ),
        Some("rtpengine") => rtpengine(
            opt("--calls", 100.0) as usize,
            opt("--warmup", 2.0),
            opt("--duration", 10.0),
            opt("--ng-port", 2223.0) as u16,
            opt("--pid", 0.0) as u32,
        ),
        _ => {
            eprintln!("usage: tcbench codec|relay|rtpengine [options] (see src/main.rs)");
            ExitCode::from(64)
        }
    }
}

/// A speech-like test signal: a voiced harmonic series (f0 gliding 100..200 Hz, falling
/// spectrum), a 4 Hz syllable envelope, and some noise: cheap to make, and it keeps the encoder
/// out of its silence shortcuts.
fn synthetic_speech(rate: u32, n: usize) -> Vec<i16> {
    let mut seed = 0x1234_5678u32;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            let f0 = 150.0 + 50.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            let mut v = 0.0;
            for h in 1..=20 {
                let f = f0 * f64::from(h);
                if f > f64::from(rate) / 2.2 {
                    break;
                }
                v += (2.0 * std::f64::consts::PI * f * t).sin() / f64::from(h);
            }
            let env = 0.3 + 0.7 * (0.5 + 0.5 * (2.0 * std::f64::consts::PI * 4.0 * t).sin());
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from((seed >> 16) as i16) / 32768.0 * 0.05;
            ((v * 0.25 * env + noise) * 12000.0).clamp(-32000.0, 32000.0) as i16
        })
        .collect()
}

/// `n` samples at `rate` (8000 or 48000) of the `--signal` chosen, looped if need be.
fn signal(rate: u32, n: usize) -> Vec<i16> {
    match SIGNAL.get().copied().unwrap_or(Signal::Recorded) {
        Signal::Speech => synthetic_speech(rate, n),
        Signal::Tone => (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                ((2.0 * std::f64::consts::PI * 1000.0 * t).sin() * 8000.0) as i16
            })
            .collect(),
        Signal::Recorded => {
            let pcm8 = recorded_speech();
            let up = (rate / 8000) as usize;
            // Linear interpolation to 48 kHz: the browser's encoder is narrowband here, so
            // the images above 4 kHz that a cruder upsampler leaves would not matter either.
            (0..n)
                .map(|i| {
                    let (k, frac) = ((i / up) % pcm8.len(), (i % up) as f64 / up as f64);
                    let (a, b) = (f64::from(pcm8[k]), f64::from(pcm8[(k + 1) % pcm8.len()]));
                    (a + (b - a) * frac) as i16
                })
                .collect()
        }
    }
}

/// The A-law payloads of every RTP packet in SIPp's `g711a.pcap` (Ethernet, IPv4, UDP), decoded.
fn recorded_speech() -> Vec<i16> {
    let bytes = std::fs::read(RECORDED_PCAP).unwrap_or_else(|e| {
        panic!("--signal recorded reads {RECORDED_PCAP} (apt-get install sip-tester): {e}")
    });
    const HEADERS: usize = 14 + 20 + 8 + 12;
    let mut pcm = Vec::new();
    let mut at = 24;
    while let Some(record) = bytes.get(at..at + 16) {
        let len = u32::from_le_bytes([record[8], record[9], record[10], record[11]]) as usize;
        let Some(frame) = bytes.get(at + 16..at + 16 + len) else { break };
        // RTP version 2, payload type 8 (PCMA): skip anything else the capture holds.
        let pcma = frame
            .get(HEADERS - 12..HEADERS - 10)
            .is_some_and(|h| h[0] >> 6 == 2 && h[1] & 0x7f == 8);
        if let Some(payload) = frame.get(HEADERS..).filter(|_| pcma) {
            pcm.extend(payload.iter().map(|&c| g711::alaw_decode(c)));
        }
        at += 16 + len;
    }
    assert!(pcm.len() >= 8000, "{RECORDED_PCAP}: no audio found");
    pcm
}

/// Opus packets as a browser sends them to the SBC: 48 kHz mono input, VOIP, narrowband at
/// 20 kbit/s, as the SBC's `maxplaybackrate=8000;maxaveragebitrate=20000` asks (Chrome caps its
/// encoder by both: the lab's webrtc tests see only narrowband packets, ~45 bytes each), with
/// FEC allowed but no loss reported, so none in the packets (Chrome adds it only when the SBC's
/// reports show loss: webrtc_opus_fec). With `--fullband`, what Chrome sends without those
/// parameters: fullband at 32 kbit/s (libwebrtc's default).
fn browser_opus() -> Vec<Vec<u8>> {
    let pcm = signal(48000, 960 * CANNED);
    let mut enc =
        opusic_c::Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip).unwrap();
    enc.set_inband_fec(InbandFec::Mode1).unwrap();
    enc.set_packet_loss(0).unwrap();
    enc.set_complexity(9).unwrap();
    if FULLBAND.load(Ordering::Relaxed) {
        enc.set_bitrate(opusic_c::Bitrate::Value(32_000)).unwrap();
    } else {
        enc.set_max_bandwidth(opusic_c::Bandwidth::Narrow).unwrap();
        enc.set_bitrate(opusic_c::Bitrate::Value(20_000)).unwrap();
    }
    pcm.chunks(960)
        .map(|c| {
            let c: Vec<u16> = c.iter().map(|&s| s as u16).collect();
            let mut buf = [0u8; 1500];
            let n = enc.encode_to_slice(&c, &mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

fn trunk_pcmu() -> Vec<Vec<u8>> {
    signal(8000, 160 * CANNED)
        .chunks(160)
        .map(|c| c.iter().map(|&s| g711::ulaw_encode(s)).collect())
        .collect()
}

/// CPU time of the calling thread: the codec figures are per CPU second, not per wall second,
/// so other tenants of a shared machine slow the run down but do not change them.
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime writes one timespec into `ts`, on this stack frame.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn codec(settings: OpusSettings, seconds: f64) {
    let complexity = settings.complexity;
    let opus = browser_opus();
    let pcm8: Vec<u16> = signal(8000, 160 * CANNED).iter().map(|&s| s as u16).collect();
    let mut dec = opusic_c::Decoder::new(Channels::Mono, SampleRate::Hz8000).unwrap();
    let mut enc =
        opusic_c::Encoder::new(Channels::Mono, SampleRate::Hz8000, Application::Voip).unwrap();
    let s = settings;
    enc.set_complexity(s.complexity).unwrap();
    enc.set_bitrate(opusic_c::Bitrate::Value(s.bitrate)).unwrap();
    enc.set_inband_fec(InbandFec::Mode1).unwrap();
    enc.set_packet_loss(s.expected_loss).unwrap();
    let mut out = [0u16; 960];
    let mut buf = [0u8; 400];
    let budget = Duration::from_secs_f64(seconds);

    let (mut n, t0) = (0usize, thread_cpu());
    while thread_cpu() - t0 < budget {
        for p in &opus {
            std::hint::black_box(dec.decode_to_slice(p, &mut out, false).unwrap());
        }
        n += opus.len();
    }
    let decode_ns = (thread_cpu() - t0).as_nanos() as f64 / n as f64;

    let (mut n, t0) = (0usize, thread_cpu());
    while thread_cpu() - t0 < budget {
        for f in pcm8.chunks(160) {
            std::hint::black_box(enc.encode_to_slice(f, &mut buf).unwrap());
        }
        n += CANNED;
    }
    let encode_ns = (thread_cpu() - t0).as_nanos() as f64 / n as f64;

    // The SBC's transcoders, both directions of one call, on RTP packets.
    let (spec_a, spec_b) = specs();
    let mut ta = Transcoder::new(&spec_a, s, 1, 1).unwrap();
    let mut tb = Transcoder::new(&spec_b, s, 2, 2).unwrap();
    let pcmu = trunk_pcmu();
    let mut emitted = Emitted::new();
    let (mut n, mut seq, t0) = (0usize, 0u16, thread_cpu());
    while thread_cpu() - t0 < budget {
        for k in 0..CANNED {
            feed_call(&mut ta, &mut tb, seq, &opus[k], &pcmu[k], &mut emitted);
            seq = seq.wrapping_add(1);
        }
        n += CANNED;
    }
    let call_ns = (thread_cpu() - t0).as_nanos() as f64 / n as f64;

    // The same for INTERLEAVED calls in turn, each at its own place in the signal (as the relay
    // runs them): every codec state and code path is cold again when its call's turn comes.
    let mut calls: Vec<(Transcoder, Transcoder)> = (0..INTERLEAVED as u32)
        .map(|c| {
            let a = Transcoder::new(&spec_a, s, 10 + 2 * c, u64::from(10 + 2 * c)).unwrap();
            let b = Transcoder::new(&spec_b, s, 11 + 2 * c, u64::from(11 + 2 * c)).unwrap();
            (a, b)
        })
        .collect();
    let (mut n, mut cycle, t0) = (0usize, 0usize, thread_cpu());
    while thread_cpu() - t0 < budget {
        let seq = cycle as u16;
        for (c, (ta, tb)) in calls.iter_mut().enumerate() {
            let k = (cycle + c * CALL_STRIDE) % CANNED;
            feed_call(ta, tb, seq, &opus[k], &pcmu[k], &mut emitted);
        }
        n += INTERLEAVED;
        cycle += 1;
    }
    let interleaved_ns = (thread_cpu() - t0).as_nanos() as f64 / n as f64;

    let frame_ns = PTIME.as_nanos() as f64;
    println!("libopus={}", opusic_c::version());
    println!(
        "browser_bandwidth={}",
        if FULLBAND.load(Ordering::Relaxed) { "fullband" } else { "narrowband" }
    );
    let opus_bytes = opus.iter().map(Vec::len).sum::<usize>() as f64 / opus.len() as f64;
    println!("browser_packet_bytes={opus_bytes:.1}");
    println!("signal={}", SIGNAL.get().copied().unwrap_or(Signal::Recorded).name());
    println!("complexity={complexity}");
    println!("bitrate={}", s.bitrate);
    println!("expected_loss={}", s.expected_loss);
    println!("decode_ns={decode_ns:.0}");
    println!("encode_ns={encode_ns:.0}");
    println!("codec_bound_calls_per_core={:.0}", frame_ns / (decode_ns + encode_ns));
    println!("transcoder_call_ns={call_ns:.0}");
    println!("transcoder_bound_calls_per_core={:.0}", frame_ns / call_ns);
    println!("interleaved_calls={INTERLEAVED}");
    println!("interleaved_call_ns={interleaved_ns:.0}");
    println!("interleaved_bound_calls_per_core={:.0}", frame_ns / interleaved_ns);
}

/// One 20 ms cycle of one call through its two transcoders: the browser's Opus packet and the
/// trunk's PCMU packet with sequence number `seq`.
fn feed_call(
    ta: &mut Transcoder,
    tb: &mut Transcoder,
    seq: u16,
    opus: &[u8],
    pcmu: &[u8],
    emitted: &mut Emitted,
) {
    let ts = u32::from(seq);
    emitted.clear();
    ta.handle_rtp(&rtp(111, seq, ts.wrapping_mul(960), 0xA, opus), emitted);
    emitted.clear();
    tb.handle_rtp(&rtp(0, seq, ts.wrapping_mul(160), 0xB, pcmu), emitted);
}

fn codec_spec(name: &str, pt: u8, rate: u32, ch: u8) -> CodecSpec {
    CodecSpec { name: name.into(), payload_type: pt, clock_rate: rate, channels: ch }
}

/// (browser side A: Opus -> PCMU, trunk side B: PCMU -> Opus).
fn specs() -> (Transcode, Transcode) {
    let opus = codec_spec("opus", 111, 48000, 2);
    let pcmu = codec_spec("PCMU", 0, 8000, 1);
    let te48 = codec_spec("telephone-event", 110, 48000, 1);
    let te8 = codec_spec("telephone-event", 101, 8000, 1);
    (
        Transcode {
            from: opus.clone(),
            to: pcmu.clone(),
            dtmf_from: Some(te48.clone()),
            dtmf_to: Some(te8.clone()),
            fec_to: false,
        },
        // The browser decodes FEC (useinbandfec=1): the encoder adds it when `--loss` is above
        // 0, as when the browser reports loss.
        Transcode { from: pcmu, to: opus, dtmf_from: Some(te8), dtmf_to: Some(te48), fec_to: true },
    )
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.extend_from_slice(&[0x80, pt]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn pin(core: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it; sched_setaffinity(0) applies to
    // the calling thread only and reads the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("cannot pin to core {core}: {}", std::io::Error::last_os_error());
        }
    }
}

fn set_buffers(sock: &UdpSocket, bytes: i32) {
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt reads one c_int from the pointer we pass, with its size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&raw const bytes).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }
}

/// utime + stime of this process's thread named `name`, in clock ticks.
fn thread_ticks(name: &str) -> Option<u64> {
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = entry.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        return Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?);
    }
    None
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory effects.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// One direction of one call as the generator sees it.
struct Stream {
    /// Where the generator sends it (the relay's port on the sending side).
    to: SocketAddr,
    /// Send instants by cycle (ring).
    sent_at: Vec<Option<Instant>>,
    /// Sequence number of the first packet out of X, and the cycle it belongs to (the last one
    /// sent when it arrived: X may hold a first frame back).
    first: Option<(u16, u64)>,
    /// Packets sent so far.
    sent: u64,
    received_in_window: u64,
}

const RING: usize = 512;

fn relay(
    calls: usize,
    warmup: f64,
    duration: f64,
    relay_core: usize,
    gen_core: usize,
    opus_settings: OpusSettings,
) -> ExitCode {
    let complexity = opus_settings.complexity;
    // The relay's worker inherits the affinity of the thread that starts it.
    pin(relay_core);
    let config = RelayConfig { port_min: 30000, port_max: 59999, workers: 1, dscp: None };
    let relay = Relay::start_with_opus(config, opus_settings).expect("relay");
    pin(gen_core);

    let browser = UdpSocket::bind((LOCAL, 0)).unwrap();
    let trunk = UdpSocket::bind((LOCAL, 0)).unwrap();
    for s in [&browser, &trunk] {
        s.set_nonblocking(true).unwrap();
        set_buffers(s, 8 << 20);
    }
    let (spec_a, spec_b) = specs();
    // streams[2 * call + 0]: browser -> relay A side -> trunk; [2 * call + 1]: the other way.
    let mut streams = Vec::with_capacity(2 * calls);
    // Source port of the relay -> stream index of what arrives from it.
    let mut by_port: HashMap<u16, usize> = HashMap::new();
    let mut pairs = Vec::new();
    for c in 0..calls {
        let ports = relay.open(PairSpec { local_a: LOCAL, local_b: LOCAL }).expect("ports");
        pairs.push(ports.id);
        let a = RemoteSpec {
            rtp: Some(browser.local_addr().unwrap()),
            transcode: Some(spec_a.clone()),
            clock_rate: 48000,
            ..RemoteSpec::default()
        };
        let b = RemoteSpec {
            rtp: Some(trunk.local_addr().unwrap()),
            transcode: Some(spec_b.clone()),
            ..RemoteSpec::default()
        };
        relay.configure(ports.id, LegSide::A, &a);
        relay.configure(ports.id, LegSide::B, &b);
        let at_a = SocketAddr::new(LOCAL, ports.a_rtp);
        let at_b = SocketAddr::new(LOCAL, ports.b_rtp);
        for to in [at_a, at_b] {
            streams.push(Stream {
                to,
                sent_at: vec![None; RING],
                first: None,
                sent: 0,
                received_in_window: 0,
            });
        }
        // Browser's packets come out on B (toward the trunk); the trunk's on A.
        by_port.insert(ports.b_rtp, 2 * c);
        by_port.insert(ports.a_rtp, 2 * c + 1);
    }

    let result = generate(&browser, &trunk, &mut streams, &by_port, warmup, duration, &|| {
        thread_ticks("media-0")
    });
    let mut forwarded = 0u64;
    let mut dropped = 0u64;
    for id in &pairs {
        if let Some(s) = relay.stats(*id) {
            forwarded += s.from_a.forwarded + s.from_b.forwarded;
            dropped += s.from_a.dropped + s.from_b.dropped;
        }
    }
    relay.shutdown();
    println!("x=sbc");
    println!("signal={}", SIGNAL.get().copied().unwrap_or(Signal::Recorded).name());
    println!("complexity={complexity}");
    println!("expected_loss={}", opus_settings.expected_loss);
    println!("relay_forwarded={forwarded}");
    println!("relay_dropped={dropped}");
    result.report(calls)
}

/// What one generator run measured.
struct Outcome {
    window: f64,
    expected: u64,
    received: u64,
    misrouted: u64,
    send_errors: u64,
    latencies: Vec<u32>,
    cpu_s: f64,
}

impl Outcome {
    fn report(mut self, calls: usize) -> ExitCode {
        self.latencies.sort_unstable();
        let q = |p: f64| -> u32 {
            if self.latencies.is_empty() {
                return 0;
            }
            self.latencies[((self.latencies.len() - 1) as f64 * p) as usize]
        };
        let lost = self.expected.saturating_sub(self.received);
        let pass = lost == 0 && self.misrouted == 0 && self.send_errors == 0 && q(0.99) < 20_000;
        let window = self.window.max(0.001);
        println!("calls={calls}");
        println!("window_s={:.2}", self.window);
        println!("expected={}", self.expected);
        println!("received={}", self.received);
        println!("lost={lost}");
        println!("misrouted={}", self.misrouted);
        println!("send_errors={}", self.send_errors);
        println!("p50_us={}", q(0.5));
        println!("p99_us={}", q(0.99));
        println!("max_us={}", q(1.0));
        println!("x_cpu_s={:.2}", self.cpu_s);
        println!("x_core_share={:.3}", self.cpu_s / window);
        println!("cpu_per_call_pct={:.3}", 100.0 * self.cpu_s / window / calls as f64);
        println!("pass={}", u8::from(pass));
        if pass { ExitCode::SUCCESS } else { ExitCode::from(1) }
    }
}

/// Paces both sides of every call (one packet per side per 20 ms, phases spread over the
/// cycle) toward X, and accounts what comes back; `cpu` reads X's CPU ticks.
fn generate(
    browser: &UdpSocket,
    trunk: &UdpSocket,
    streams: &mut [Stream],
    by_port: &HashMap<u16, usize>,
    warmup: f64,
    duration: f64,
    cpu: &dyn Fn() -> Option<u64>,
) -> Outcome {
    let calls = streams.len() / 2;
    let opus = browser_opus();
    let pcmu = trunk_pcmu();
    let warm_cycles = (warmup * 50.0) as u64;
    let window_cycles = (duration * 50.0) as u64;
    let total_cycles = warm_cycles + window_cycles;
    let mut latencies: Vec<u32> = Vec::with_capacity((window_cycles as usize) * 2 * calls);
    let mut misrouted = 0u64;
    let mut send_errors = 0u64;
    let mut buf = [0u8; 2048];
    let t0 = Instant::now() + Duration::from_millis(50);
    let slot = PTIME / calls.max(1) as u32;
    let mut next = 0u64; // packet slot index: cycle * calls + call
    let mut cpu_start = None;
    let mut window_start = None;
    let end = t0 + PTIME * (total_cycles as u32) + Duration::from_millis(500);
    loop {
        let now = Instant::now();
        // Send everything due.
        while next < total_cycles * calls as u64 {
            let cycle = next / calls as u64;
            let call = (next % calls as u64) as usize;
            let due = t0 + PTIME * (cycle as u32) + slot * (call as u32);
            if due > now {
                break;
            }
            if cycle == warm_cycles && call == 0 {
                cpu_start = cpu();
                window_start = Some(Instant::now());
            }
            // Each call at its own place in the signal: real calls do not speak in unison, and
            // frames that cost the encoder more (voiced ones) would otherwise load the relay in
            // bursts, every call at once.
            let k = (cycle as usize + call * CALL_STRIDE) % CANNED;
            let seq = cycle as u16;
            let a = rtp(111, seq, (cycle as u32).wrapping_mul(960), 0xA000 + call as u32, &opus[k]);
            let b = rtp(0, seq, (cycle as u32).wrapping_mul(160), 0xB000 + call as u32, &pcmu[k]);
            for (dir, sock, packet) in [(0, &browser, &a), (1, &trunk, &b)] {
                let s = &mut streams[2 * call + dir];
                s.sent_at[(cycle as usize) % RING] = Some(Instant::now());
                s.sent += 1;
                if sock.send_to(packet, s.to).is_err() {
                    send_errors += 1;
                }
            }
            next += 1;
        }
        // Drain what came back.
        let mut got = false;
        for (sock, expect_dir) in [(&trunk, 0usize), (&browser, 1usize)] {
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        got = true;
                        let arrived = Instant::now();
                        let Some(&si) = by_port.get(&from.port()) else {
                            misrouted += 1;
                            continue;
                        };
                        if si % 2 != expect_dir || n < 12 {
                            misrouted += 1;
                            continue;
                        }
                        let seq = u16::from_be_bytes([buf[2], buf[3]]);
                        let s = &mut streams[si];
                        let sent = s.sent;
                        let (first, first_cycle) =
                            *s.first.get_or_insert((seq, sent.saturating_sub(1)));
                        // One 20 ms packet out per 20 ms packet in.
                        let cycle = first_cycle + u64::from(seq.wrapping_sub(first));
                        if cycle >= warm_cycles && cycle < total_cycles {
                            s.received_in_window += 1;
                            if let Some(at) = s.sent_at[(cycle as usize) % RING] {
                                latencies
                                    .push(arrived.saturating_duration_since(at).as_micros() as u32);
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
        if now > end {
            break;
        }
        if !got {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let cpu_end = cpu();
    let window = window_start.map_or(0.0, |w| w.elapsed().as_secs_f64() - 0.5);
    let expected = window_cycles * 2 * calls as u64;
    let received: u64 = streams.iter().map(|s| s.received_in_window).sum();
    let cpu_s = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / clk_tck(),
        _ => f64::NAN,
    };
    Outcome { window, expected, received, misrouted, send_errors, latencies, cpu_s }
}

fn sdp(port: u16, session: u64, opus: bool) -> String {
    let (fmt, rtpmap) = if opus {
        ("111", "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n")
    } else {
        ("0", "a=rtpmap:0 PCMU/8000\r\n")
    };
    format!(
        "v=0\r\no=- {session} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {fmt}\r\n{rtpmap}a=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The port of the first `m=audio` line.
fn audio_port(sdp: &str) -> Option<u16> {
    sdp.lines().find_map(|l| l.strip_prefix("m=audio ")?.split_whitespace().next()?.parse().ok())
}

/// utime + stime of process `pid`, in clock ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rtpengine(calls: usize, warmup: f64, duration: f64, ng_port: u16, pid: u32) -> ExitCode {
    use ng::{NgClient, Value};
    let browser = UdpSocket::bind((LOCAL, 0)).unwrap();
    let trunk = UdpSocket::bind((LOCAL, 0)).unwrap();
    for s in [&browser, &trunk] {
        s.set_nonblocking(true).unwrap();
        set_buffers(s, 8 << 20);
    }
    let (bport, tport) = (browser.local_addr().unwrap().port(), trunk.local_addr().unwrap().port());
    let server = std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, ng_port);
    let mut cl = NgClient::new(Ipv4Addr::LOCALHOST, server).expect("ng client");
    let me = std::process::id();
    let common = |c: usize, cmd: &str, body: String| {
        vec![
            ("command", Value::str(cmd)),
            ("call-id", Value::str(&format!("tc-{me}-{c}"))),
            ("from-tag", Value::str(&format!("a{c}"))),
            ("sdp", Value::str(&body)),
            ("replace", Value::List(vec![Value::str("origin"), Value::str("session-connection")])),
            ("ICE", Value::str("remove")),
        ]
    };
    let offers: Vec<Value> = (0..calls)
        .map(|c| {
            let mut d = common(c, "offer", sdp(bport, c as u64 + 1, true));
            d.push((
                "codec",
                Value::dict(vec![
                    ("mask", Value::List(vec![Value::str("all")])),
                    ("transcode", Value::List(vec![Value::str("PCMU")])),
                ]),
            ));
            Value::dict(d)
        })
        .collect();
    let offer_replies = match cl.request_all(&offers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ng offer: {e}");
            return ExitCode::from(2);
        }
    };
    let answers: Vec<Value> = (0..calls)
        .map(|c| {
            let mut d = common(c, "answer", sdp(tport, c as u64 + 1_000_000, false));
            d.push(("to-tag", Value::str(&format!("b{c}"))));
            Value::dict(d)
        })
        .collect();
    let answer_replies = match cl.request_all(&answers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ng answer: {e}");
            return ExitCode::from(2);
        }
    };
    let port_of = |r: &Value, what: &str, c: usize| -> Option<u16> {
        let body = r.get("sdp").and_then(Value::as_str);
        if c == 0 {
            eprintln!(
                "{what} toward {}:\n{}",
                if what == "offer" { "trunk" } else { "browser" },
                body.unwrap_or("-")
            );
        }
        body.and_then(audio_port)
    };
    let mut streams = Vec::with_capacity(2 * calls);
    let mut by_port = HashMap::new();
    for c in 0..calls {
        let (Some(at_a), Some(at_b)) =
            (port_of(&answer_replies[c], "answer", c), port_of(&offer_replies[c], "offer", c))
        else {
            eprintln!("call {c}: rtpengine refused: {:?}", offer_replies[c].get("error-reason"));
            return ExitCode::from(2);
        };
        for port in [at_a, at_b] {
            streams.push(Stream {
                to: SocketAddr::new(LOCAL, port),
                sent_at: vec![None; RING],
                first: None,
                sent: 0,
                received_in_window: 0,
            });
        }
        by_port.insert(at_b, 2 * c);
        by_port.insert(at_a, 2 * c + 1);
    }
    let result = generate(&browser, &trunk, &mut streams, &by_port, warmup, duration, &|| {
        process_ticks(pid)
    });
    let deletes: Vec<Value> = (0..calls)
        .map(|c| {
            Value::dict(vec![
                ("command", Value::str("delete")),
                ("call-id", Value::str(&format!("tc-{me}-{c}"))),
                ("from-tag", Value::str(&format!("a{c}"))),
            ])
        })
        .collect();
    let _ = cl.request_all(&deletes);
    println!("x=rtpengine");
    result.report(calls)
}
