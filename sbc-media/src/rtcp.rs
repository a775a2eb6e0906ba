//! RTCP reports the SBC sends itself, on the streams it originates (RFC 3550 §6.4), sans-IO.
//!
//! On a relayed pair each peer's RTCP goes through to the other peer, which sees the same
//! stream. On a transcoded pair it cannot: the stream each peer receives is the SBC's own (its
//! SSRC, sequence numbers and timestamps), and the stream each peer sends ends at the SBC. So
//! the SBC reports itself, toward each peer of a transcoded pair, as any RTP endpoint would:
//! - a sender report (SR, §6.4.1) on the stream the SBC sends that peer: packets and octets
//!   sent, and an NTP timestamp with the RTP timestamp of the same instant;
//! - in it, one report block on the stream the SBC receives from that peer: loss since the last
//!   report and in total, the extended highest sequence number, the interarrival jitter, and
//!   the LSR/DLSR pair that lets the peer measure the round trip (§6.4.1, A.3);
//! - an SDES CNAME (§6.5.1), which every compound packet must carry (§6.1).
//!
//! Without them a browser on the Opus side never hears of loss on its uplink, so its encoder
//! never adds in-band FEC there, and neither peer can measure the round-trip time; some trunks
//! also take a silent RTCP port for a dead call.
//!
//! Timing (§6.2, §6.3.1, §6.3.5): one report per 5 s (the minimum interval, which libwebrtc also
//! uses for audio) times a random factor in [0.5, 1.5], the first after half of that, so that
//! the reports of many calls set up together spread out. A [`Reporter`] reads no clock: the
//! worker passes `now` (and the wall clock for the NTP timestamp) and asks
//! [`Reporter::poll_timeout`] when to call again.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::stats::RtpReceiveStats;

/// §6.2: the minimum report interval, before randomization.
const INTERVAL: Duration = Duration::from_secs(5);

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Packet types (§12.1).
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
/// SDES item CNAME (§6.5.1).
const SDES_CNAME: u8 = 1;

/// Bytes of the CNAME: "sbc-" and 16 hex digits, random per reporter (RFC 7022 §4.2 asks for a
/// random CNAME that reveals nothing of the host).
const CNAME_LEN: usize = 20;

/// Longest compound packet a [`Reporter`] writes: SR with one report block (52), SDES with the
/// CNAME (8 + 2 + 20 + 2 padded to 32 bytes) and, the last time, a BYE (8).
pub const MAX_REPORT: usize = 52 + 32 + 8;

/// The stream the SBC sends toward the peer, as counted for its sender report.
#[derive(Debug, Clone, Copy)]
struct Sent {
    ssrc: u32,
    clock_rate: u32,
    /// Packets and payload octets sent (§6.4.1; they wrap at 2^32, as on the wire).
    packets: u32,
    octets: u32,
    /// The RTP timestamp of the latest packet sent, and when it was sent.
    last_timestamp: u32,
    last_at: Instant,
}

/// The RTCP reports toward one peer of a transcoded pair (see the module docs).
#[derive(Debug, Clone)]
pub struct Reporter {
    /// The SSRC of a receiver-only report, before the SBC sent the peer anything.
    own_ssrc: u32,
    cname: [u8; CNAME_LEN],
    rng: u64,
    due: Instant,
    sent: Option<Sent>,
    /// The middle 32 bits of the NTP timestamp of the peer's latest SR, and when it arrived.
    peer_sr: Option<(u32, Instant)>,
    /// A.3 `expected_prior` and `received_prior`: the totals at the last report.
    prior: (u64, u64),
}

impl Reporter {
    /// A reporter whose first report is due 1.25-3.75 s after `now`; `seed` picks that delay,
    /// the later intervals and the CNAME.
    pub fn new(now: Instant, seed: u64) -> Reporter {
        // Mixed first: nearby seeds must not give nearby report times.
        let mut rng = crate::transcode::splitmix64(seed) | 1;
        let own_ssrc = next_random(&mut rng) as u32;
        let mut cname = *b"sbc-0000000000000000";
        let digits = next_random(&mut rng);
        for (i, c) in cname[4..].iter_mut().enumerate() {
            *c = b"0123456789abcdef"[((digits >> (4 * i)) & 0xf) as usize];
        }
        let mut r =
            Reporter { own_ssrc, cname, rng, due: now, sent: None, peer_sr: None, prior: (0, 0) };
        r.due = now + r.randomized(INTERVAL / 2);
        r
    }

    /// When [`Reporter::poll_report`] has a report to write.
    pub fn poll_timeout(&self) -> Instant {
        self.due
    }

    /// The SBC sent the peer an RTP packet of stream `ssrc` (clock `clock_rate` Hz) with
    /// `timestamp` and `payload_len` bytes of payload. A new SSRC (the stream was rebuilt for
    /// another codec) starts its counts again.
    pub fn on_sent(
        &mut self,
        now: Instant,
        ssrc: u32,
        clock_rate: u32,
        timestamp: u32,
        payload_len: usize,
    ) {
        let s = match &mut self.sent {
            Some(s) if s.ssrc == ssrc => s,
            _ => self.sent.insert(Sent {
                ssrc,
                clock_rate,
                packets: 0,
                octets: 0,
                last_timestamp: timestamp,
                last_at: now,
            }),
        };
        s.clock_rate = clock_rate;
        s.packets = s.packets.wrapping_add(1);
        s.octets = s.octets.wrapping_add(payload_len as u32);
        s.last_timestamp = timestamp;
        s.last_at = now;
    }

    /// A (plain, compound) RTCP packet from the peer: its sender report, if any, is what the
    /// next report's LSR and DLSR answer. Anything unparsable is ignored.
    pub fn on_peer_rtcp(&mut self, now: Instant, data: &[u8]) {
        for (packet_type, _, packet) in compound(data) {
            if packet_type == PT_SR
                && let Some(ntp) = packet.get(8..16)
            {
                // LSR: the middle 32 bits of the 64-bit NTP timestamp (§6.4.1).
                let middle = u32::from_be_bytes([ntp[2], ntp[3], ntp[4], ntp[5]]);
                self.peer_sr = Some((middle, now));
            }
        }
    }

    /// When a report is due at `now`: writes it into `buf` (at least [`MAX_REPORT`] bytes),
    /// with `received` the statistics of the stream the SBC receives from the peer and `wall`
    /// the wall clock of `now`, and returns its length; schedules the next one. `None` when no
    /// report is due or `buf` is too short.
    pub fn poll_report(
        &mut self,
        now: Instant,
        wall: SystemTime,
        received: &RtpReceiveStats,
        buf: &mut [u8],
    ) -> Option<usize> {
        if now < self.due {
            return None;
        }
        // Rescheduled first: a short buffer loses this report, not the timer.
        self.due = now + self.randomized(INTERVAL);
        self.write(now, wall, received, buf, false)
    }

    /// The SBC's stream toward the peer ends (the pair closes): a last report, as
    /// [`Reporter::poll_report`] writes them whenever it is called, with an RTCP BYE for that
    /// stream (§6.6; §6.3.7 lets a session of fewer than 50 members send it at once). `None`
    /// when `buf` is too short.
    pub fn bye(
        &mut self,
        now: Instant,
        wall: SystemTime,
        received: &RtpReceiveStats,
        buf: &mut [u8],
    ) -> Option<usize> {
        self.write(now, wall, received, buf, true)
    }

    fn write(
        &mut self,
        now: Instant,
        wall: SystemTime,
        received: &RtpReceiveStats,
        buf: &mut [u8],
        bye: bool,
    ) -> Option<usize> {
        if buf.len() < MAX_REPORT {
            return None;
        }
        let block = self.report_block(now, received);
        let count = u8::from(block.is_some());
        let mut w = Writer { buf, at: 0 };
        match self.sent {
            Some(s) => {
                w.header(count, PT_SR, 6 + 6 * usize::from(count));
                w.u32(s.ssrc);
                let (msw, lsw) = ntp(wall);
                w.u32(msw);
                w.u32(lsw);
                // The RTP timestamp of this same instant, extrapolated from the last packet.
                let elapsed = now.saturating_duration_since(s.last_at);
                let units = elapsed.as_micros() * u128::from(s.clock_rate) / 1_000_000;
                w.u32(s.last_timestamp.wrapping_add(units as u32));
                w.u32(s.packets);
                w.u32(s.octets);
            }
            None => {
                w.header(count, PT_RR, 1 + 6 * usize::from(count));
                w.u32(self.own_ssrc);
            }
        }
        if let Some(b) = block {
            w.bytes(&b);
        }
        // SDES: one chunk (our SSRC, the CNAME, the end item), padded to a 32-bit boundary.
        let chunk = 4 + 2 + CNAME_LEN + 1;
        let padded = chunk.div_ceil(4) * 4;
        w.header(1, PT_SDES, padded / 4);
        w.u32(self.sent.map_or(self.own_ssrc, |s| s.ssrc));
        w.bytes(&[SDES_CNAME, CNAME_LEN as u8]);
        w.bytes(&self.cname);
        w.bytes(&[0; 4][..1 + padded - chunk]);
        if bye {
            w.header(1, PT_BYE, 1);
            w.u32(self.sent.map_or(self.own_ssrc, |s| s.ssrc));
        }
        Some(w.at)
    }

    /// The report block on the peer's stream (§6.4.1), when packets came from it since the last
    /// report; moves the A.3 priors on.
    fn report_block(&mut self, now: Instant, received: &RtpReceiveStats) -> Option<[u8; 24]> {
        let ssrc = received.ssrc()?;
        let (expected, got) = (received.expected(), received.received());
        let (expected_prior, received_prior) = std::mem::replace(&mut self.prior, (expected, got));
        if got <= received_prior {
            return None;
        }
        // A.3: the fraction of the packets expected in the interval that did not come, in 1/256.
        let expected_interval = expected.saturating_sub(expected_prior);
        let lost_interval = expected_interval.saturating_sub(got - received_prior);
        let fraction =
            (lost_interval << 8).checked_div(expected_interval).map_or(0, |f| f.min(255) as u8);
        // Cumulative loss: a signed 24-bit field; ours is never negative (stats clamp it).
        let lost = received.lost().min(0x7f_ffff) as u32;
        let (lsr, dlsr) = match self.peer_sr {
            Some((lsr, at)) => {
                // DLSR in units of 1/65536 s.
                let delay = now.saturating_duration_since(at).as_micros() * 65_536 / 1_000_000;
                (lsr, delay.min(u128::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&ssrc.to_be_bytes());
        b[4] = fraction;
        b[5..8].copy_from_slice(&lost.to_be_bytes()[1..]);
        b[8..12].copy_from_slice(&received.extended_max_seq().unwrap_or(0).to_be_bytes());
        b[12..16]
            .copy_from_slice(&(received.jitter().min(f64::from(u32::MAX)) as u32).to_be_bytes());
        b[16..20].copy_from_slice(&lsr.to_be_bytes());
        b[20..24].copy_from_slice(&dlsr.to_be_bytes());
        Some(b)
    }

    /// `base` times a random factor in [0.5, 1.5) (§6.3.1).
    fn randomized(&mut self, base: Duration) -> Duration {
        let unit = (next_random(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(0.5 + unit)
    }
}

/// The packets of a compound RTCP packet (§6.1) as (packet type, the header's count field, the
/// packet with its header). The walk ends at the first packet whose version or length field
/// does not fit.
pub(crate) fn compound(data: &[u8]) -> impl Iterator<Item = (u8, u8, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let &[first, packet_type, len_hi, len_lo] = rest.get(..4)? else { return None };
        if first >> 6 != 2 {
            return None;
        }
        let len = (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1) * 4;
        let packet = rest.get(..len)?;
        rest = rest.get(len..).unwrap_or(&[]);
        Some((packet_type, first & 0x1f, packet))
    })
}

/// The 64-bit NTP timestamp of `wall` as (seconds since 1900, fraction in 1/2^32 s).
fn ntp(wall: SystemTime) -> (u32, u32) {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs().wrapping_add(NTP_UNIX_OFFSET) as u32;
    let fraction = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    (secs, fraction as u32)
}

/// xorshift64*: enough to spread report times and make a CNAME; nothing secret depends on it.
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Appends to a buffer the caller checked is long enough ([`MAX_REPORT`]).
struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    /// A packet header: version 2, `count` in the low 5 bits, the type, and the length in
    /// 32-bit words minus one (`words_after`: the words that follow the header).
    fn header(&mut self, count: u8, packet_type: u8, words_after: usize) {
        self.bytes(&[0x80 | (count & 0x1f), packet_type]);
        self.bytes(&(words_after as u16).to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
