//! Receive statistics of one RTP direction: loss, interarrival jitter and a MOS estimate.
//!
//! Pure arithmetic with no clock and no I/O: the relay feeds [`RtpReceiveStats::handle_rtp`] the
//! header fields of every accepted RTP packet together with its arrival time, already converted
//! to the stream's RTP clock units, and reads the figures when it publishes them.
//!
//! # Sequence numbers and loss (RFC 3550 A.1, A.3)
//!
//! The 16-bit sequence number is extended with a cycle count so the highest sequence number
//! seen survives wrap-around at 65535. `expected = extended_max - base + 1` and
//! `lost = expected - received`, clamped at 0 because duplicates make `received` overshoot
//! (A.3 allows a negative count; the figure we report is "packets lost", so we clamp).
//! Reordered packets (up to `MAX_MISORDER` behind) and duplicates are counted as received
//! without moving the maximum; a jump of more than `MAX_DROPOUT` ahead is believed only when
//! the next packet follows it (the A.1 `bad_seq` rule), and then tracking restarts there.
//!
//! Deviation from A.1: there is no probation (`MIN_SEQUENTIAL` = 0). Probation exists to keep
//! junk from a new, unauthenticated SSRC out of the figures; the relay only counts packets that
//! already passed its source-address check, so the first packet is trusted. A change of SSRC
//! (a re-INVITE to another media server, a transfer) restarts tracking for the new source; the
//! figures of the previous source are carried so the totals never go backwards.
//!
//! # Jitter (RFC 3550 A.8)
//!
//! For each packet, `transit = arrival - timestamp` (both in RTP clock units, wrapping), and
//! `J += (|transit - previous transit| - J) / 16`, in arrival order as §6.4.1 defines it.
//! [`RtpReceiveStats::jitter_ms`] converts J with the stream's clock rate.
//!
//! # R-factor and MOS (simplified ITU-T G.107 E-model, G.711 assumed)
//!
//! ```text
//! R      = 93.2 - Id - Ie_eff                             clamped to 0..=100
//! Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl + Bpl)             Ie = 0, Bpl = 4.3, Ppl = loss in %
//! Id     = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)        d in ms, H = step function
//! d      = 20 ms + 2 * jitter_ms
//! MOS    = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)        clamped to 1.0..=4.5
//! ```
//!
//! * `Ie = 0` and `Bpl = 4.3` are the ITU-T G.113 Appendix I values for G.711 *without* packet
//!   loss concealment under random loss. We do not know whether the endpoints conceal loss, so
//!   we take the pessimistic figure (with PLC, G.113 gives `Bpl = 25.1`).
//! * `Id` is the Cole-Rosenbluth linearisation of the G.107 delay impairment. A relay does not
//!   know the network's one-way delay, so `d` counts only what the media itself forces: one
//!   20 ms G.711 packet of packetisation delay and a receiver jitter buffer sized to twice the
//!   measured jitter. The estimate is therefore an upper bound on the quality the user heard.
//! * With no loss and no jitter, R = 92.7 and MOS = 4.40, the usual ceiling for G.711.

#![forbid(unsafe_code)]

use crate::backend::DirectionStats;

/// A.1: a jump of fewer packets than this ahead is believed at once.
const MAX_DROPOUT: u16 = 3000;
/// A.1: a packet up to this many behind the maximum is a late or duplicate packet.
const MAX_MISORDER: u16 = 100;
/// A.1: `RTP_SEQ_MOD`, the size of the 16-bit sequence space.
const SEQ_MOD: u64 = 1 << 16;

/// Sequence and jitter tracking for the RTP packets received from one peer.
#[derive(Debug, Clone, Default)]
pub struct RtpReceiveStats {
    /// The stream being tracked; `None` until the first packet.
    source: Option<Source>,
    /// Expected and received packets of sources tracked before the current one (SSRC changes
    /// and A.1 restarts), so totals stay monotone.
    carried_expected: u64,
    carried_received: u64,
    /// Interarrival jitter in RTP clock units (A.8 `jitter`, kept as a float instead of the
    /// integer-times-16 of the reference code).
    jitter: f64,
    /// A.8 `transit` of the previous packet; `None` after a source change, because transit times
    /// of two sources with different timestamp bases must not be subtracted.
    transit: Option<u32>,
}

/// A.1 `source` state of the current SSRC.
#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    /// Highest sequence number seen (A.1 `max_seq`).
    max_seq: u16,
    /// Shifted count of sequence number cycles (A.1 `cycles`, a multiple of 2^16).
    cycles: u64,
    /// First sequence number counted (A.1 `base_seq`).
    base_seq: u16,
    /// Last "bad" sequence number + 1 (A.1 `bad_seq`); out of the 16-bit range when unset.
    bad_seq: u32,
    /// Packets received since `base_seq`, duplicates included (A.1 `received`).
    received: u64,
}

impl Source {
    /// A.1 `init_seq`: restart counting at `seq`, which is counted.
    fn new(ssrc: u32, seq: u16) -> Source {
        Source {
            ssrc,
            max_seq: seq,
            cycles: 0,
            base_seq: seq,
            bad_seq: SEQ_MOD as u32 + 1,
            received: 1,
        }
    }

    fn extended_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    fn expected(&self) -> u64 {
        self.extended_max() + 1 - u64::from(self.base_seq)
    }
}

impl RtpReceiveStats {
    /// No packets seen yet.
    pub fn new() -> RtpReceiveStats {
        RtpReceiveStats::default()
    }

    /// One accepted RTP packet. `arrival` is the arrival time in the stream's RTP clock units,
    /// from any origin (only differences matter, and they wrap like RTP timestamps).
    pub fn handle_rtp(&mut self, ssrc: u32, seq: u16, timestamp: u32, arrival: u32) {
        self.update_seq(ssrc, seq);
        self.update_jitter(timestamp, arrival);
    }

    fn update_seq(&mut self, ssrc: u32, seq: u16) {
        let src = match &mut self.source {
            Some(src) if src.ssrc == ssrc => src,
            _ => {
                self.restart(ssrc, seq);
                return;
            }
        };
        let udelta = seq.wrapping_sub(src.max_seq);
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < src.max_seq {
                src.cycles += SEQ_MOD;
            }
            src.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER + 1 {
            // A very large jump. Believe it only when the next packet follows it: the sender
            // restarted its sequence without changing SSRC (A.1).
            if u32::from(seq) == src.bad_seq {
                self.restart(ssrc, seq);
                return;
            }
            src.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD as u32 - 1);
            return;
        }
        // else: duplicate or reordered packet; counted, maximum unchanged.
        src.received += 1;
    }

    /// Starts tracking a (new) source at `seq`, carrying the old one's totals.
    fn restart(&mut self, ssrc: u32, seq: u16) {
        if let Some(old) = self.source.take() {
            self.carried_expected += old.expected();
            self.carried_received += old.received;
            if old.ssrc != ssrc {
                self.transit = None;
            }
        }
        self.source = Some(Source::new(ssrc, seq));
    }

    fn update_jitter(&mut self, timestamp: u32, arrival: u32) {
        let transit = arrival.wrapping_sub(timestamp);
        if let Some(prev) = self.transit {
            // Reinterpreting the wrapped difference as signed gives the true difference as long
            // as it is below 2^31 clock units (6.6 hours at 90 kHz).
            let d = f64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// Packets received, duplicates included (A.1 `received`, over all sources).
    pub fn received(&self) -> u64 {
        self.carried_received + self.source.map_or(0, |s| s.received)
    }

    /// Packets expected from the sequence numbers (A.3 `expected`, over all sources).
    pub fn expected(&self) -> u64 {
        self.carried_expected + self.source.map_or(0, |s| s.expected())
    }

    /// Packets lost: expected - received, not below 0 (A.3).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received())
    }

    /// The SSRC of the current source, if any packet was seen.
    pub fn ssrc(&self) -> Option<u32> {
        self.source.map(|s| s.ssrc)
    }

    /// Extended highest sequence number of the current source (A.1), if any packet was seen.
    pub fn extended_max_seq(&self) -> Option<u32> {
        // The RTCP field is 32 bits wide: after 2^16 cycles it wraps, as it does on the wire.
        self.source.map(|s| s.extended_max() as u32)
    }

    /// Interarrival jitter in RTP clock units (A.8).
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Interarrival jitter in milliseconds for a stream of `clock_rate` Hz (0 for a rate of 0).
    pub fn jitter_ms(&self, clock_rate: u32) -> f64 {
        if clock_rate == 0 { 0.0 } else { self.jitter * 1000.0 / f64::from(clock_rate) }
    }
}

/// G.113 Appendix I: equipment impairment of G.711.
const IE_G711: f64 = 0.0;
/// G.113 Appendix I: packet-loss robustness of G.711 without PLC, random loss.
const BPL_G711_NO_PLC: f64 = 4.3;
/// Packetisation delay assumed in the delay term: one 20 ms G.711 packet.
const PACKETIZATION_MS: f64 = 20.0;

/// R-factor (0..=100) for a G.711 stream with `loss_percent` random loss and `jitter_ms`
/// interarrival jitter; see the module docs for the formula and its assumptions.
pub fn r_factor(loss_percent: f64, jitter_ms: f64) -> f64 {
    // NaN from a caller's 0/0 counts as the worst case rather than poisoning the result.
    let ppl = if loss_percent.is_nan() { 100.0 } else { loss_percent.clamp(0.0, 100.0) };
    let jitter_ms = if jitter_ms.is_nan() { 0.0 } else { jitter_ms.max(0.0) };
    let ie_eff = IE_G711 + (95.0 - IE_G711) * ppl / (ppl + BPL_G711_NO_PLC);
    let d = PACKETIZATION_MS + 2.0 * jitter_ms;
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    (93.2 - id - ie_eff).clamp(0.0, 100.0)
}

/// Mean opinion score (1.0..=4.5) for an R-factor (ITU-T G.107 Annex B).
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    // The cubic dips slightly below 1 for R under ~6.5; the scale starts at 1.
    (1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
}

/// MOS estimate for a G.711 stream with `loss_percent` loss and `jitter_ms` jitter.
pub fn mos_estimate(loss_percent: f64, jitter_ms: f64) -> f64 {
    mos_from_r(r_factor(loss_percent, jitter_ms))
}

impl DirectionStats {
    /// MOS estimate of this direction from its loss and jitter (see [`crate::stats`]).
    pub fn mos_estimate(&self) -> f64 {
        mos_estimate(self.loss_percent(), self.jitter_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds packets `seqs` of one SSRC, 160 clock units apart in timestamp and arrival.
    fn feed(stats: &mut RtpReceiveStats, seqs: impl IntoIterator<Item = u16>) {
        for seq in seqs {
            let ts = u32::from(seq).wrapping_mul(160);
            stats.handle_rtp(0x1234, seq, ts, ts.wrapping_add(7));
        }
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut s = RtpReceiveStats::new();
        feed(&mut s, 100..1100);
        assert_eq!(s.received(), 1000);
        assert_eq!(s.expected(), 1000);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.extended_max_seq(), Some(1099));
    }

    #[test]
    fn sequence_wraps_at_65535() {
        let mut s = RtpReceiveStats::new();
        feed(&mut s, (65530..=65535).chain(0..10));
        assert_eq!(s.received(), 16);
        assert_eq!(s.expected(), 16);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.extended_max_seq(), Some(65536 + 9));
        // A second wrap adds another cycle.
        feed(&mut s, (10..=65535).step_by(1000).chain([65535, 0, 1]));
        assert_eq!(s.extended_max_seq(), Some(2 * 65536 + 1));
    }

    #[test]
    fn gaps_count_as_loss_across_a_wrap() {
        let mut s = RtpReceiveStats::new();
        // 65533..=65535, 0..=4 with 65535 and 2 missing: 8 expected, 6 received.
        feed(&mut s, [65533, 65534, 0, 1, 3, 4]);
        assert_eq!(s.expected(), 8);
        assert_eq!(s.received(), 6);
        assert_eq!(s.lost(), 2);
    }

    #[test]
    fn late_packet_fills_its_gap() {
        let mut s = RtpReceiveStats::new();
        feed(&mut s, [1, 2, 4, 5, 3]);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.extended_max_seq(), Some(5));
    }

    #[test]
    fn duplicates_do_not_make_loss_negative() {
        let mut s = RtpReceiveStats::new();
        feed(&mut s, [1, 2, 2, 2, 3, 3]);
        assert_eq!(s.expected(), 3);
        assert_eq!(s.received(), 6);
        assert_eq!(s.lost(), 0);
        // Duplicates hide real loss as A.3 says; a later gap shows once it outgrows them.
        feed(&mut s, [10]);
        assert_eq!(s.lost(), 3);
    }

    #[test]
    fn big_jump_is_believed_only_when_followed() {
        let mut s = RtpReceiveStats::new();
        feed(&mut s, 1..=10);
        // One stray packet far ahead: ignored.
        feed(&mut s, [30000]);
        feed(&mut s, 11..=20);
        assert_eq!(s.extended_max_seq(), Some(20));
        assert_eq!(s.lost(), 0);
        // The sender restarts its numbering at 40000: believed on the second packet.
        feed(&mut s, 40000..40010);
        assert_eq!(s.extended_max_seq(), Some(40009));
        // The first packet of the restart is dropped, as in A.1; 20 + 9 counted, none lost.
        assert_eq!(s.received(), 29);
        assert_eq!(s.lost(), 0);
    }

    #[test]
    fn ssrc_change_restarts_tracking_and_keeps_totals() {
        let mut s = RtpReceiveStats::new();
        feed(&mut s, [1, 2, 4]); // one lost
        for seq in [5000u16, 5001, 5002] {
            s.handle_rtp(0x9999, seq, u32::from(seq) * 160, 0);
        }
        assert_eq!(s.received(), 6);
        assert_eq!(s.lost(), 1);
        assert_eq!(s.extended_max_seq(), Some(5002));
    }

    #[test]
    fn constant_delay_has_zero_jitter() {
        let mut s = RtpReceiveStats::new();
        for i in 0..500u32 {
            // Timestamp base near the wrap, arrival clock with another origin.
            let ts = 0xffff_ff00u32.wrapping_add(i * 160);
            s.handle_rtp(1, i as u16, ts, i * 160 + 123_456);
        }
        assert_eq!(s.jitter(), 0.0);
        assert_eq!(s.jitter_ms(8000), 0.0);
    }

    #[test]
    fn alternating_delay_converges_to_its_step() {
        // Every other packet is 80 units (10 ms at 8 kHz) late: |D| = 80 for every pair, so the
        // A.8 filter converges to 80.
        let mut s = RtpReceiveStats::new();
        for i in 0..400u32 {
            let ts = i * 160;
            let delay = if i % 2 == 0 { 0 } else { 80 };
            s.handle_rtp(1, i as u16, ts, ts + 1000 + delay);
        }
        assert!((s.jitter() - 80.0).abs() < 0.01, "jitter {}", s.jitter());
        assert!((s.jitter_ms(8000) - 10.0).abs() < 0.01);
        // The filter's time constant is 16 packets: after 16 it is at 1 - (15/16)^16 = 64 %.
        let mut early = RtpReceiveStats::new();
        for i in 0..17u32 {
            let delay = if i % 2 == 0 { 0 } else { 80 };
            early.handle_rtp(1, i as u16, i * 160, i * 160 + delay);
        }
        let expect = 80.0 * (1.0 - (15.0f64 / 16.0).powi(16));
        assert!((early.jitter() - expect).abs() < 1e-9);
    }

    #[test]
    fn mos_without_loss_is_about_4_4() {
        let mos = mos_estimate(0.0, 0.0);
        assert!((mos - 4.4).abs() < 0.02, "mos {mos}");
        assert!((r_factor(0.0, 0.0) - 92.72).abs() < 1e-9);
    }

    #[test]
    fn mos_falls_with_loss_and_jitter() {
        let mut prev = f64::INFINITY;
        for tenth in 0..=1000 {
            let mos = mos_estimate(f64::from(tenth) / 10.0, 0.0);
            assert!(mos <= prev, "not monotone at {tenth}");
            assert!((1.0..=4.5).contains(&mos));
            prev = mos;
        }
        assert!(mos_estimate(1.0, 0.0) < 4.0, "1 % loss without PLC is audible");
        assert_eq!(mos_estimate(100.0, 0.0), 1.0);
        assert!(mos_estimate(0.0, 100.0) < mos_estimate(0.0, 10.0));
        assert_eq!(mos_estimate(f64::NAN, f64::NAN), 1.0);
        assert_eq!(mos_from_r(150.0), 4.5);
    }

    #[test]
    fn direction_stats_mos() {
        let d = DirectionStats { packets: 99, lost: 1, ..DirectionStats::default() };
        assert!((d.mos_estimate() - mos_estimate(1.0, 0.0)).abs() < 1e-12);
    }
}
