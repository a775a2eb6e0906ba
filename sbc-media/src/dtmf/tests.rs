use std::time::{Duration, Instant};

use super::*;

/// A telephone-event payload: event, E bit, volume 10, duration.
fn te(event: u8, end: bool, duration: u16) -> [u8; 4] {
    let d = duration.to_be_bytes();
    [event, if end { 0x8a } else { 0x0a }, d[0], d[1]]
}

fn events(d: &mut EventDetector) -> Vec<DtmfEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

#[test]
fn digits_map_both_ways() {
    let all = "0123456789*#ABCD";
    for (code, c) in all.chars().enumerate() {
        assert_eq!(digit_of(code as u8), Some(c));
        assert_eq!(event_of(c), Some(code as u8));
    }
    assert_eq!(event_of('b'), Some(13));
    assert_eq!(digit_of(16), None, "flash is no digit");
    assert_eq!(event_of('E'), None);
    assert_eq!(clamp_duration(5), MIN_DURATION_MS);
    assert_eq!(clamp_duration(60_000), MAX_DURATION_MS);
    assert_eq!(clamp_duration(200), 200);
}

#[test]
fn start_updates_and_redundant_ends_are_one_event() {
    let mut d = EventDetector::new();
    let t0 = Instant::now();
    d.handle(t0, 1000, &te(1, false, 160), 8000);
    d.handle(t0, 1000, &te(1, false, 320), 8000);
    d.handle(t0, 1000, &te(1, false, 480), 8000);
    assert!(events(&mut d).is_empty(), "reported at its end, not before");
    d.handle(t0, 1000, &te(1, true, 800), 8000);
    assert_eq!(events(&mut d), vec![DtmfEvent { event: 1, duration_ms: 100 }]);
    // The two redundant ends and a late update change nothing.
    d.handle(t0, 1000, &te(1, true, 800), 8000);
    d.handle(t0, 1000, &te(1, true, 800), 8000);
    d.handle(t0, 1000, &te(1, false, 480), 8000);
    assert!(events(&mut d).is_empty());
}

#[test]
fn a_new_timestamp_is_a_new_event_even_for_the_same_digit() {
    let mut d = EventDetector::new();
    let t0 = Instant::now();
    d.handle(t0, 1000, &te(5, true, 400), 8000);
    d.handle(t0, 3000, &te(5, false, 160), 8000);
    d.handle(t0, 3000, &te(5, true, 1600), 8000);
    assert_eq!(
        events(&mut d),
        vec![DtmfEvent { event: 5, duration_ms: 50 }, DtmfEvent { event: 5, duration_ms: 200 }]
    );
}

#[test]
fn reordered_packets_keep_the_longest_duration_and_old_events_are_ignored() {
    let mut d = EventDetector::new();
    let t0 = Instant::now();
    d.handle(t0, 8000, &te(9, false, 320), 8000);
    // An update overtaken by a later one.
    d.handle(t0, 8000, &te(9, false, 160), 8000);
    // A straggler of an older event, never seen before.
    d.handle(t0, 4000, &te(3, true, 800), 8000);
    d.handle(t0, 8000, &te(9, true, 480), 8000);
    assert_eq!(events(&mut d), vec![DtmfEvent { event: 9, duration_ms: 60 }]);
}

#[test]
fn an_event_whose_ends_were_lost_is_reported_when_the_next_starts() {
    let mut d = EventDetector::new();
    let t0 = Instant::now();
    d.handle(t0, 100, &te(11, false, 960), 8000);
    d.handle(t0, 5000, &te(2, false, 160), 8000);
    assert_eq!(events(&mut d), vec![DtmfEvent { event: 11, duration_ms: 120 }]);
    d.handle(t0, 5000, &te(2, true, 400), 8000);
    assert_eq!(events(&mut d), vec![DtmfEvent { event: 2, duration_ms: 50 }]);
}

#[test]
fn an_event_whose_ends_were_lost_is_reported_after_the_timeout() {
    let mut d = EventDetector::new();
    let t0 = Instant::now();
    assert_eq!(d.poll_timeout(), None, "nothing running, nothing to wait for");
    d.handle(t0, 4000, &te(7, false, 160), 8000);
    let update = t0 + Duration::from_millis(50);
    d.handle(update, 4000, &te(7, false, 800), 8000);
    // The deadline follows the last packet.
    assert_eq!(d.poll_timeout(), Some(update + END_TIMEOUT));
    d.handle_timeout(update + END_TIMEOUT - Duration::from_millis(1), 8000);
    assert!(events(&mut d).is_empty(), "not yet: a late update may still come");
    d.handle_timeout(update + END_TIMEOUT, 8000);
    assert_eq!(events(&mut d), [DtmfEvent { event: 7, duration_ms: 100 }]);
    assert_eq!(d.poll_timeout(), None);
    // Its end packets arriving after all are late copies: not a second key press.
    d.handle(update + END_TIMEOUT * 2, 4000, &te(7, true, 960), 8000);
    assert!(events(&mut d).is_empty());
    assert_eq!(d.poll_timeout(), None);
}

#[test]
fn timestamps_wrap_and_48k_durations_scale() {
    let mut d = EventDetector::new();
    let t0 = Instant::now();
    d.handle(t0, u32::MAX - 10, &te(7, true, 4800), 48000);
    d.handle(t0, 20, &te(8, true, 9600), 48000);
    assert_eq!(
        events(&mut d),
        vec![DtmfEvent { event: 7, duration_ms: 100 }, DtmfEvent { event: 8, duration_ms: 200 }]
    );
}

#[test]
fn non_digit_events_and_short_payloads_are_not_reported() {
    let mut d = EventDetector::new();
    let t0 = Instant::now();
    d.handle(t0, 10, &te(16, true, 800), 8000);
    d.handle(t0, 20, &[1, 0x80], 8000);
    d.handle(t0, 30, &[], 8000);
    assert!(events(&mut d).is_empty());
}

/// Drains the injector as a worker would, with `clock` ms between polls, for `ms` ms; returns
/// (ms since start, packet) for each packet.
fn run(inj: &mut Injector, t0: Instant, ms: u64) -> Vec<(u64, EventPacket)> {
    let mut out = Vec::new();
    for at in 0..=ms {
        let now = t0 + Duration::from_millis(at);
        if inj.poll_timeout().is_none_or(|t| t > now) {
            continue;
        }
        while let Some(p) = inj.poll_packet(now, 101, 8000, |n, rate| {
            // The stream was at timestamp 16000 at t0.
            let d = n.saturating_duration_since(t0);
            Some(16000 + (d.as_millis() as u32) * rate / 1000)
        }) {
            out.push((at, p));
        }
    }
    out
}

#[test]
fn the_injector_plays_start_updates_and_three_ends() {
    let t0 = Instant::now();
    let mut inj = Injector::new();
    assert_eq!(inj.poll_timeout(), None);
    assert!(inj.queue(t0, DtmfEvent { event: 5, duration_ms: 200 }));
    assert_eq!(inj.poll_timeout(), Some(t0));
    let packets = run(&mut inj, t0, 1000);
    let summary: Vec<(u64, bool, bool, u16)> = packets
        .iter()
        .map(|(at, p)| {
            (
                *at,
                p.marker,
                p.payload[1] & 0x80 != 0,
                u16::from_be_bytes([p.payload[2], p.payload[3]]),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, true, false, 400),
            (50, false, false, 800),
            (100, false, false, 1200),
            (150, false, false, 1600),
            (200, false, true, 1600),
            (200, false, true, 1600),
            (200, false, true, 1600),
        ]
    );
    for (_, p) in &packets {
        assert_eq!(p.timestamp, 16000, "one timestamp: the event's start");
        assert_eq!(p.payload_type, 101);
        assert_eq!(p.payload[0], 5);
        assert_eq!(p.payload[1] & 0x3f, 10);
    }
    assert!(inj.is_idle());
    assert_eq!(inj.poll_timeout(), None);
}

#[test]
fn queued_digits_follow_after_a_gap_and_the_queue_is_bounded() {
    let t0 = Instant::now();
    let mut inj = Injector::new();
    assert!(inj.queue(t0, DtmfEvent { event: 1, duration_ms: 10 }));
    assert!(inj.queue(t0, DtmfEvent { event: 2, duration_ms: 100 }));
    let packets = run(&mut inj, t0, 1000);
    let starts: Vec<(u64, u8, u32)> = packets
        .iter()
        .filter(|(_, p)| p.marker)
        .map(|(at, p)| (*at, p.payload[0], p.timestamp))
        .collect();
    // The first is clamped to 40 ms; the second starts 100 ms after its end, with its own
    // timestamp.
    assert_eq!(starts, vec![(0, 1, 16000), (140, 2, 16000 + 140 * 8)]);
    let ends = packets.iter().filter(|(_, p)| p.payload[1] & 0x80 != 0).count();
    assert_eq!(ends, 6);
    for i in 0..QUEUE {
        assert!(inj.queue(t0, DtmfEvent { event: (i % 16) as u8, duration_ms: 100 }));
    }
    assert!(!inj.queue(t0, DtmfEvent { event: 1, duration_ms: 100 }));
}

#[test]
fn the_injector_drops_digits_when_there_is_no_stream() {
    let t0 = Instant::now();
    let mut inj = Injector::new();
    inj.queue(t0, DtmfEvent { event: 1, duration_ms: 100 });
    assert_eq!(inj.poll_packet(t0, 101, 8000, |_, _| None), None);
    assert!(inj.is_idle());
}

#[test]
fn long_events_at_48k_cap_the_duration_field() {
    let t0 = Instant::now();
    let mut inj = Injector::new();
    inj.queue(t0, DtmfEvent { event: 0, duration_ms: 5000 });
    let mut last = None;
    let mut at = t0;
    while let Some(t) = inj.poll_timeout() {
        at = t.max(at);
        while let Some(p) = inj.poll_packet(at, 101, 48000, |_, _| Some(0)) {
            last = Some(p);
        }
    }
    let p = last.unwrap();
    assert_eq!(u16::from_be_bytes([p.payload[2], p.payload[3]]), u16::MAX);
    assert!(at - t0 < Duration::from_millis(1400), "ends when the field is full");
}

fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xff; 160]);
    p
}

fn seq(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

#[test]
fn the_stream_shifts_relayed_sequence_numbers_around_injected_packets() {
    let t0 = Instant::now();
    let mut s = OutStream::default();
    let mut buf = [0u8; 64];
    let ev =
        EventPacket { marker: true, payload_type: 101, timestamp: 0, payload: [1, 10, 0, 160] };
    assert_eq!(s.inject(&ev, &mut buf), None, "no stream to join yet");
    assert_eq!(s.timestamp_at(t0, 8000), None);
    let mut p = rtp(65534, 1000, 0xabc);
    s.relay(&mut p, t0);
    assert_eq!(seq(&p), 65534);
    assert!(!s.shifted());
    // 30 ms later the stream is at 1000 + 240.
    assert_eq!(s.timestamp_at(t0 + Duration::from_millis(30), 8000), Some(1240));
    let ev = EventPacket { timestamp: 1240, ..ev };
    assert_eq!(s.inject(&ev, &mut buf), Some(16));
    assert_eq!(
        &buf[..16],
        &[0x80, 0x80 | 101, 0xff, 0xff, 0, 0, 4, 0xd8, 0, 0, 0x0a, 0xbc, 1, 10, 0, 160]
    );
    s.inject(&EventPacket { marker: false, ..ev }, &mut buf);
    assert_eq!(seq(&buf), 0);
    assert_eq!(buf[1], 101);
    // The next relayed packet (65535 from its sender) follows the two injected ones.
    let mut p = rtp(65535, 1160, 0xabc);
    s.relay(&mut p, t0 + Duration::from_millis(40));
    assert_eq!(seq(&p), 1);
    assert!(s.shifted());
    // A consumed packet closes its gap.
    s.consumed();
    let mut p = rtp(1, 1480, 0xabc);
    s.relay(&mut p, t0 + Duration::from_millis(80));
    assert_eq!(seq(&p), 2);
    // A new SSRC is a new stream: no shift.
    let mut p = rtp(500, 9, 0xdef);
    s.relay(&mut p, t0 + Duration::from_millis(100));
    assert_eq!(seq(&p), 500);
    assert!(!s.shifted());
    // Too short to be RTP: untouched.
    let mut short = [0x80u8, 0, 1];
    s.relay(&mut short, t0);
    assert_eq!(short, [0x80, 0, 1]);
}
