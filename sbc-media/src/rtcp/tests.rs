use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;
use crate::stats::RtpReceiveStats;

/// A compound packet as a receiver reads it: (type, count, the packet's bytes).
fn packets(data: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 4 {
        assert_eq!(rest[0] >> 6, 2, "version 2");
        assert_eq!(rest[0] & 0x20, 0, "no padding");
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        assert!(len <= rest.len(), "length field within the datagram");
        out.push((rest[1], rest[0] & 0x1f, rest[..len].to_vec()));
        rest = &rest[len..];
    }
    assert!(rest.is_empty(), "the lengths add up to the datagram");
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// The receive figures of `seqs` (one SSRC, 20 ms of 8 kHz apart, no jitter).
fn received(seqs: impl IntoIterator<Item = u16>) -> RtpReceiveStats {
    let mut rx = RtpReceiveStats::new();
    feed(&mut rx, seqs);
    rx
}

fn feed(rx: &mut RtpReceiveStats, seqs: impl IntoIterator<Item = u16>) {
    for seq in seqs {
        let ts = u32::from(seq) * 160;
        rx.handle_rtp(0xfeed_0001, seq, ts, ts + 4000);
    }
}

/// Polls until the report comes (at its due time), returning it and when it came.
fn next_report(r: &mut Reporter, rx: &RtpReceiveStats, wall: SystemTime) -> (Vec<u8>, Instant) {
    let at = r.poll_timeout();
    let mut buf = [0u8; 256];
    let len = r.poll_report(at, wall, rx, &mut buf).expect("a report at its due time");
    (buf[..len].to_vec(), at)
}

#[test]
fn reports_come_at_randomized_intervals_of_five_seconds_the_first_after_half() {
    for seed in 0..200 {
        let t0 = Instant::now();
        let mut r = Reporter::new(t0, seed);
        let first = r.poll_timeout() - t0;
        assert!(first >= Duration::from_millis(1250) && first < Duration::from_millis(3750));
        let rx = RtpReceiveStats::new();
        let mut buf = [0u8; MAX_REPORT];
        let early = r.poll_timeout() - Duration::from_millis(1);
        assert_eq!(r.poll_report(early, SystemTime::now(), &rx, &mut buf), None, "not before");
        let (_, at) = next_report(&mut r, &rx, SystemTime::now());
        let gap = r.poll_timeout() - at;
        assert!(gap >= Duration::from_millis(2500) && gap < Duration::from_millis(7500));
    }
    // Different seeds spread the calls' reports.
    let t0 = Instant::now();
    let firsts: std::collections::HashSet<_> =
        (0..50).map(|s| Reporter::new(t0, s).poll_timeout()).collect();
    assert!(firsts.len() > 40);
}

#[test]
fn a_sender_report_counts_the_stream_sent_and_dates_it_in_ntp_and_rtp_time() {
    let t0 = Instant::now();
    let mut r = Reporter::new(t0, 7);
    // 50 Opus packets of 60 bytes, 20 ms apart, timestamps +960.
    for i in 0..50u32 {
        r.on_sent(
            t0 + Duration::from_millis(20 * u64::from(i)),
            0xabcd_0001,
            48_000,
            1000 + 960 * i,
            60,
        );
    }
    let last_at = t0 + Duration::from_millis(20 * 49);
    let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
    let (data, at) = next_report(&mut r, &received(1..=100), wall);
    let p = packets(&data);
    assert_eq!(p.len(), 2, "SR then SDES");
    let (pt, count, sr) = &p[0];
    assert_eq!((*pt, *count, sr.len()), (200, 1, 28 + 24));
    assert_eq!(u32_at(sr, 4), 0xabcd_0001, "the SSRC of the stream sent");
    assert_eq!(u32_at(sr, 8), 1_700_000_000 + 2_208_988_800, "NTP seconds since 1900");
    assert_eq!(u32_at(sr, 12), 1 << 31, "half a second");
    let elapsed = (at - last_at).as_micros() as u64;
    let rtp = (1000 + 960 * 49 + elapsed * 48_000 / 1_000_000) as u32;
    assert_eq!(u32_at(sr, 16), rtp, "the RTP time of the same instant");
    assert_eq!((u32_at(sr, 20), u32_at(sr, 24)), (50, 3000), "packets and payload octets");
    let (pt, count, sdes) = &p[1];
    assert_eq!((*pt, *count), (202, 1));
    assert_eq!(u32_at(sdes, 4), 0xabcd_0001, "the CNAME belongs to the sender");
    assert_eq!(sdes[8], 1, "CNAME item");
    let cname = &sdes[10..10 + usize::from(sdes[9])];
    assert!(cname.starts_with(b"sbc-") && cname.len() == 20, "{cname:?}");
    assert_eq!(sdes[10 + cname.len()], 0, "the end item");
}

#[test]
fn a_new_stream_ssrc_starts_its_counts_again() {
    let t0 = Instant::now();
    let mut r = Reporter::new(t0, 7);
    for i in 0..10 {
        r.on_sent(t0, 1, 8000, 160 * i, 160);
    }
    r.on_sent(t0, 2, 48_000, 5, 40);
    let (data, _) = next_report(&mut r, &RtpReceiveStats::new(), SystemTime::now());
    let sr = &packets(&data)[0].2;
    assert_eq!((u32_at(sr, 4), u32_at(sr, 20), u32_at(sr, 24)), (2, 1, 40));
}

#[test]
fn the_report_block_gives_the_loss_of_each_interval_and_in_total() {
    let t0 = Instant::now();
    let mut r = Reporter::new(t0, 3);
    r.on_sent(t0, 9, 8000, 0, 160);
    // 1..=99 expected, the 9 multiples of 10 lost.
    let mut rx = received((1..100).filter(|s| s % 10 != 0));
    let (data, _) = next_report(&mut r, &rx, SystemTime::now());
    let block = &packets(&data)[0].2[28..];
    assert_eq!(u32_at(block, 0), 0xfeed_0001, "the peer's SSRC");
    assert_eq!(u32::from(block[4]), 9 * 256 / 99, "9 of 99 in 1/256 (A.3)");
    assert_eq!(u32_at(block, 4) & 0xff_ffff, 9, "cumulative");
    assert_eq!(u32_at(block, 8), 99, "extended highest sequence number");
    assert_eq!(u32_at(block, 12), 0, "no jitter");
    // The next interval loses 5 of 50: its own fraction, the total grows by 5.
    feed(&mut rx, (100..150).filter(|s| s % 10 != 5));
    let (data, _) = next_report(&mut r, &rx, SystemTime::now());
    let block = &packets(&data)[0].2[28..];
    assert_eq!(u32::from(block[4]), 5 * 256 / 50);
    assert_eq!(u32_at(block, 4) & 0xff_ffff, 14);
    assert_eq!(u32_at(block, 8), 149);
    // And the one after loses nothing.
    feed(&mut rx, 150..200);
    let (data, _) = next_report(&mut r, &rx, SystemTime::now());
    let block = &packets(&data)[0].2[28..];
    assert_eq!((block[4], u32_at(block, 4) & 0xff_ffff), (0, 14));
}

#[test]
fn no_report_block_when_nothing_came_since_the_last_report() {
    let t0 = Instant::now();
    let mut r = Reporter::new(t0, 3);
    r.on_sent(t0, 9, 8000, 0, 160);
    let rx = received(1..=50);
    let (data, _) = next_report(&mut r, &rx, SystemTime::now());
    assert_eq!(packets(&data)[0].1, 1);
    let (data, _) = next_report(&mut r, &rx, SystemTime::now());
    let (pt, count, sr) = &packets(&data)[0];
    assert_eq!((*pt, *count, sr.len()), (200, 0, 28), "a sender report without blocks");
}

#[test]
fn lsr_and_dlsr_echo_the_peers_last_sender_report() {
    let t0 = Instant::now();
    let mut r = Reporter::new(t0, 11);
    // The peer's compound packet: an SR (NTP 0x11223344.55667788) and an SDES.
    let mut peer = vec![0x80, 200, 0, 6, 0, 0, 0, 1];
    peer.extend_from_slice(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    peer.extend_from_slice(&[0; 12]);
    peer.extend_from_slice(&[0x81, 202, 0, 2, 0, 0, 0, 1, 1, 1, b'x', 0]);
    let sr_at = r.poll_timeout() - Duration::from_millis(1500);
    r.on_peer_rtcp(sr_at, &peer);
    let (data, _) = next_report(&mut r, &received(1..=10), SystemTime::now());
    let block = &packets(&data)[0].2[8..];
    assert_eq!(u32_at(block, 16), 0x3344_5566, "LSR: the middle 32 bits");
    assert_eq!(u32_at(block, 20), 98_304, "DLSR: 1.5 s in 1/65536 s");
}

#[test]
fn before_sending_anything_a_receiver_report_with_its_own_ssrc() {
    let t0 = Instant::now();
    let mut r = Reporter::new(t0, 5);
    let (data, _) = next_report(&mut r, &received(1..=10), SystemTime::now());
    let p = packets(&data);
    let (pt, count, rr) = &p[0];
    assert_eq!((*pt, *count, rr.len()), (201, 1, 8 + 24));
    assert_eq!(u32_at(&p[1].2, 4), u32_at(rr, 4), "the CNAME's SSRC is the reporter's");
    assert_eq!(u32_at(rr, 8), 0xfeed_0001);
}

#[test]
fn a_short_buffer_loses_the_report_not_the_timer() {
    let t0 = Instant::now();
    let mut r = Reporter::new(t0, 5);
    let due = r.poll_timeout();
    let mut small = [0u8; MAX_REPORT - 1];
    assert_eq!(r.poll_report(due, SystemTime::now(), &RtpReceiveStats::new(), &mut small), None);
    assert!(r.poll_timeout() > due);
}

#[test]
fn the_last_report_says_bye_for_the_sbcs_stream() {
    let t0 = Instant::now();
    let mut r = Reporter::new(t0, 5);
    r.on_sent(t0, 0x5eed, 8000, 160, 160);
    let mut buf = [0u8; MAX_REPORT];
    // Whenever it is asked, not at the report time.
    let len = r.bye(t0, SystemTime::now(), &received(1..=10), &mut buf).unwrap();
    let p = packets(&buf[..len]);
    let kinds: Vec<u8> = p.iter().map(|(pt, ..)| *pt).collect();
    assert_eq!(kinds, [200, 202, 203], "SR, SDES, then BYE (RFC 3550 §6.6)");
    let (_, count, bye) = &p[2];
    assert_eq!((*count, bye.len(), u32_at(bye, 4)), (1, 8, 0x5eed));
    assert_eq!(r.bye(t0, SystemTime::now(), &RtpReceiveStats::new(), &mut [0u8; 10]), None);
}

proptest! {
    /// Whatever the peer sends as RTCP, nothing panics and a report still comes out whole.
    #[test]
    fn any_peer_rtcp_is_survived(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let t0 = Instant::now();
        let mut r = Reporter::new(t0, 1);
        r.on_peer_rtcp(t0, &data);
        let mut sr = data.clone();
        if sr.len() >= 4 {
            sr[0] = 0x80;
            sr[1] = 200;
        }
        r.on_peer_rtcp(t0, &sr);
        let (report, _) = next_report(&mut r, &received(1..=5), SystemTime::now());
        prop_assert!(report.len() <= MAX_REPORT);
        packets(&report);
    }
}
