//! RFC 4733 telephone events for SIP INFO interworking, sans-IO.
//!
//! A trunk whose far end wants DTMF as SIP INFO (`dtmf: info`) is the *INFO leg* of a call; the
//! other leg is the *4733 leg*. The relay side facing the 4733 leg's peer gets
//! [`crate::backend::RemoteSpec::telephone_events`]; then
//! - [`EventDetector`] folds the telephone-event packets from that peer (start, updates, the
//!   redundant end packets, all with one RTP timestamp) into one [`DtmfEvent`] per key press,
//!   reported at its end with its measured duration; the packets themselves are not relayed;
//! - [`Injector`] turns a digit the engine got by INFO into the RFC 4733 packet sequence toward
//!   that peer (§2.5: a start packet with the marker bit, an update every
//!   [`UPDATE_INTERVAL`], three end packets), and [`OutStream`] slots them into the stream the
//!   peer already receives (same SSRC, sequence numbers continuing, later relayed packets shifted).
//!
//! Events are reported at their end, not their start: the INFO then carries the real duration
//! (the far end may regenerate the tone for as long as it was pressed), and a key press costs
//! one INFO whatever the redundancy of the packets. The price is latency: the digit arrives
//! one key-press later (typically 100-250 ms), which no IVR notices.
//!
//! Nothing here reads a clock or allocates per packet: the injector is fed `now`, and its
//! queue is bounded ([`QUEUE`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::sdp::{Attribute, Media};

#[cfg(test)]
mod tests;

/// Duration of a digit whose INFO names none (and the duration the brief's peers expect).
pub const DEFAULT_DURATION_MS: u32 = 250;
/// Shortest digit the SBC generates: ITU-T Q.24 asks receivers to accept 40 ms.
pub const MIN_DURATION_MS: u32 = 40;
/// Longest digit the SBC generates from one INFO; a longer one is cut (a stuck key).
pub const MAX_DURATION_MS: u32 = 5000;
/// Interval between the packets of a generated event (RFC 4733 §2.5.1.2 suggests the audio
/// packetization interval; 50 ms is the commonly used update rate).
pub const UPDATE_INTERVAL: Duration = Duration::from_millis(50);
/// Silence kept between two queued digits, so the receiver sees two key presses.
pub const INTER_DIGIT_GAP: Duration = Duration::from_millis(100);
/// Digits queued for injection while one plays; more are refused (an INFO burst cannot grow
/// the worker's memory).
pub const QUEUE: usize = 16;
/// End packets sent per event (RFC 4733 §2.5.1.4: the end is sent three times).
const END_PACKETS: u8 = 3;

/// One key press, as the engine sends or receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// RFC 4733 event code: 0-9, 10 = `*`, 11 = `#`, 12-15 = A-D.
    pub event: u8,
    /// How long the key was pressed, in milliseconds.
    pub duration_ms: u32,
}

impl DtmfEvent {
    /// The digit as written in an INFO (`0`-`9`, `*`, `#`, `A`-`D`).
    pub fn digit(self) -> Option<char> {
        digit_of(self.event)
    }
}

/// The digit of an RFC 4733 event code; `None` for anything but the 16 DTMF events.
pub fn digit_of(event: u8) -> Option<char> {
    match event {
        0..=9 => char::from_digit(u32::from(event), 10),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + (event - 12))),
        _ => None,
    }
}

/// The RFC 4733 event code of a digit (case-insensitive for A-D).
pub fn event_of(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => digit.to_digit(10).map(|d| d as u8),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// Clamps a requested duration to what the SBC generates.
pub fn clamp_duration(ms: u32) -> u32 {
    ms.clamp(MIN_DURATION_MS, MAX_DURATION_MS)
}

/// The payload type and clock of telephone events on one side, from that side's SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvents {
    /// Payload type of the events the peer sends (the number in the SDP the SBC sent it).
    pub from_peer: u8,
    /// Payload type of the events the SBC sends the peer (the number in the peer's SDP).
    pub to_peer: u8,
    /// RTP clock rate of the events (that of the audio codec: 8000, or 48000 with Opus).
    pub clock_rate: u32,
}

/// Folds received telephone-event packets into key presses (see the module docs).
///
/// A key press is the set of packets with one RTP timestamp. It is reported once: at its first
/// end packet, or, when all end packets were lost, when a packet of a later event arrives or
/// [`END_TIMEOUT`] after its last packet, whichever comes first.
/// Late packets of an event already reported (the redundant ends, reordered updates) and
/// packets older than the current event are ignored. Events other than the 16 DTMF digits
/// (flash, tones) are followed for de-duplication but never reported.
#[derive(Debug)]
pub struct EventDetector {
    current: Option<Current>,
    /// Timestamps of the last events reported, newest first, for the late packets.
    reported: [Option<u32>; 4],
    out: VecDeque<DtmfEvent>,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    event: u8,
    /// Longest duration seen, in clock units.
    duration: u16,
    /// When its last packet arrived.
    last_at: Instant,
}

/// A key press whose packets stopped this long ago without an end packet has ended (its end
/// packets were lost): a sender updates a running event every 50 ms (RFC 4733 §2.5.1.3), so
/// ten missed updates in a row are not jitter.
pub const END_TIMEOUT: Duration = Duration::from_millis(500);

impl Default for EventDetector {
    fn default() -> EventDetector {
        EventDetector::new()
    }
}

impl EventDetector {
    /// A detector that has seen nothing.
    pub fn new() -> EventDetector {
        // At most two events come out of one packet (a lost end, then an end): never grows.
        EventDetector { current: None, reported: [None; 4], out: VecDeque::with_capacity(2) }
    }

    /// One telephone-event packet, arrived at `now`: its RTP `timestamp` and `payload` (after
    /// the RTP header), with the events' `clock_rate`. A payload shorter than 4 bytes is ignored.
    pub fn handle(&mut self, now: Instant, timestamp: u32, payload: &[u8], clock_rate: u32) {
        let &[event, flags, d0, d1, ..] = payload else { return };
        let end = flags & 0x80 != 0;
        let duration = u16::from_be_bytes([d0, d1]);
        if self.reported.contains(&Some(timestamp)) {
            return;
        }
        match self.current {
            Some(cur) if cur.timestamp == timestamp => {
                let duration = duration.max(cur.duration);
                self.current = Some(Current { duration, last_at: now, ..cur });
            }
            // RFC 3550 serial arithmetic: an older timestamp is a reordered packet of an event
            // already superseded.
            Some(cur) if (timestamp.wrapping_sub(cur.timestamp) as i32) < 0 => return,
            Some(cur) => {
                // A new key press while the last one never ended: its end packets were lost.
                self.report(cur, clock_rate);
                self.current = Some(Current { timestamp, event, duration, last_at: now });
            }
            None => self.current = Some(Current { timestamp, event, duration, last_at: now }),
        }
        if end && let Some(cur) = self.current.take() {
            self.report(cur, clock_rate);
        }
    }

    /// When a key press without an end packet is to be taken as ended, if one is running.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.map(|c| c.last_at + END_TIMEOUT)
    }

    /// Reports the running key press if its packets stopped [`END_TIMEOUT`] ago (all its end
    /// packets lost, and no later key press to tell), with the longest duration seen.
    pub fn handle_timeout(&mut self, now: Instant, clock_rate: u32) {
        if let Some(cur) = self.current
            && now >= cur.last_at + END_TIMEOUT
        {
            self.current = None;
            self.report(cur, clock_rate);
        }
    }

    /// The next key press detected, oldest first.
    pub fn poll_event(&mut self) -> Option<DtmfEvent> {
        self.out.pop_front()
    }

    fn report(&mut self, cur: Current, clock_rate: u32) {
        self.reported.rotate_right(1);
        self.reported[0] = Some(cur.timestamp);
        if digit_of(cur.event).is_none() || clock_rate == 0 {
            return;
        }
        let duration_ms = (u64::from(cur.duration) * 1000 / u64::from(clock_rate)) as u32;
        if self.out.len() < self.out.capacity() {
            self.out.push_back(DtmfEvent { event: cur.event, duration_ms });
        }
    }
}

/// One RFC 4733 packet the injector wants sent: the RTP header fields that are its own (the
/// SSRC and sequence number belong to the stream it joins, see [`OutStream`]) and the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// Marker bit: set on the first packet of an event (RFC 4733 §2.5.1.1).
    pub marker: bool,
    /// The telephone-event payload type toward the peer.
    pub payload_type: u8,
    /// RTP timestamp: the media time of the event's start, the same in all its packets.
    pub timestamp: u32,
    /// Event, E bit and volume (10, i.e. -10 dBm0), duration in clock units.
    pub payload: [u8; 4],
}

/// Generates the packets of the digits the engine queued, one digit at a time (see the module
/// docs). Fed `now`; asks to be polled at [`Injector::poll_timeout`].
#[derive(Debug)]
pub struct Injector {
    queue: VecDeque<DtmfEvent>,
    playing: Option<Playing>,
    /// No new event starts before this: when the first digit was queued, or the end of the
    /// gap after the last event.
    ready_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Playing {
    event: u8,
    payload_type: u8,
    timestamp: u32,
    clock_rate: u32,
    start: Instant,
    /// The whole event, in clock units (capped at the 16-bit duration field).
    total: u16,
    /// When the next packet is due.
    next: Instant,
    /// Packets sent so far.
    sent: u32,
    /// End packets still to send (all at the end instant).
    ends_left: u8,
}

impl Default for Injector {
    fn default() -> Injector {
        Injector::new()
    }
}

impl Injector {
    /// An idle injector.
    pub fn new() -> Injector {
        Injector { queue: VecDeque::with_capacity(QUEUE), playing: None, ready_at: None }
    }

    /// Queues a digit; `false` (and nothing queued) when [`QUEUE`] digits already wait. The
    /// duration is clamped to [`MIN_DURATION_MS`]..=[`MAX_DURATION_MS`].
    pub fn queue(&mut self, now: Instant, event: DtmfEvent) -> bool {
        if self.queue.len() >= QUEUE {
            return false;
        }
        if self.ready_at.is_none_or(|r| r < now) && self.playing.is_none() {
            self.ready_at = Some(now);
        }
        self.queue.push_back(DtmfEvent { duration_ms: clamp_duration(event.duration_ms), ..event });
        true
    }

    /// Whether an event plays or waits.
    pub fn is_idle(&self) -> bool {
        self.playing.is_none() && self.queue.is_empty()
    }

    /// When [`Injector::poll_packet`] has something to send next; `None` when idle.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.playing {
            Some(p) => Some(p.next),
            None if self.queue.is_empty() => None,
            None => self.ready_at,
        }
    }

    /// The next packet due at `now`, if any; call until `None`. `media_timestamp` gives the RTP
    /// timestamp of the stream toward the peer at `now` (asked only when an event starts; `None`
    /// when the stream is unknown: the event is then dropped). `payload_type` and `clock_rate`
    /// are the side's telephone events.
    pub fn poll_packet(
        &mut self,
        now: Instant,
        payload_type: u8,
        clock_rate: u32,
        media_timestamp: impl FnOnce(Instant, u32) -> Option<u32>,
    ) -> Option<EventPacket> {
        if self.playing.is_none() {
            if self.ready_at.is_some_and(|r| now < r) {
                return None;
            }
            let next = self.queue.pop_front()?;
            let Some(timestamp) = media_timestamp(now, clock_rate) else {
                // No stream to join yet: the digit cannot be placed, drop it.
                self.queue.clear();
                return None;
            };
            let units = u64::from(next.duration_ms) * u64::from(clock_rate) / 1000;
            self.playing = Some(Playing {
                event: next.event,
                payload_type,
                timestamp,
                clock_rate,
                start: now,
                total: units.min(u64::from(u16::MAX)) as u16,
                next: now,
                sent: 0,
                ends_left: END_PACKETS,
            });
        }
        let p = self.playing.as_mut()?;
        if now < p.next {
            return None;
        }
        let (start, clock, total) = (p.start, u64::from(p.clock_rate.max(1)), p.total);
        let end_at = start + Duration::from_micros(u64::from(total) * 1_000_000 / clock);
        let (end, duration) = if p.next >= end_at {
            (true, total)
        } else {
            // Each packet covers the update interval it starts (an audio packet's way), so the
            // start packet already says one interval.
            let covered = (p.next + UPDATE_INTERVAL).saturating_duration_since(start);
            let units = covered.as_micros() * u128::from(clock) / 1_000_000;
            (false, units.min(u128::from(total)).max(1) as u16)
        };
        let d = duration.to_be_bytes();
        let packet = EventPacket {
            marker: p.sent == 0,
            payload_type: p.payload_type,
            timestamp: p.timestamp,
            payload: [p.event, if end { 0x80 } else { 0 } | 10, d[0], d[1]],
        };
        p.sent += 1;
        if end {
            p.ends_left -= 1;
            if p.ends_left == 0 {
                self.playing = None;
                self.ready_at = Some(now + INTER_DIGIT_GAP);
            }
        } else {
            p.next = (p.next + UPDATE_INTERVAL).min(end_at);
        }
        Some(packet)
    }
}

/// The RTP stream the relay sends toward one peer, as far as injected packets need it: the
/// SSRC, sequence number and timestamp of the last relayed packet, and the shift applied to the
/// sequence numbers of relayed packets (+1 per packet injected, -1 per packet consumed by the
/// detector), so the peer sees one gapless stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutStream {
    last: Option<Last>,
    offset: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Last {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    at: Instant,
}

impl OutStream {
    /// Whether relayed packets are rewritten (something was injected or consumed).
    pub fn shifted(&self) -> bool {
        self.offset != 0
    }

    /// A relayed RTP packet on its way to the peer: shifts its sequence number when needed and
    /// remembers it. A new SSRC is a new stream: the shift starts again at zero. Packets shorter
    /// than an RTP header are left alone.
    pub fn relay(&mut self, packet: &mut [u8], now: Instant) {
        let Some(h) = packet.get_mut(..12) else { return };
        let seq = u16::from_be_bytes([h[2], h[3]]);
        let timestamp = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let ssrc = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        if self.last.is_some_and(|l| l.ssrc != ssrc) {
            self.offset = 0;
        }
        let seq = seq.wrapping_add(self.offset);
        h[2..4].copy_from_slice(&seq.to_be_bytes());
        self.last = Some(Last { ssrc, seq, timestamp, at: now });
    }

    /// A packet of the stream was consumed instead of relayed: later ones close the gap.
    pub fn consumed(&mut self) {
        self.offset = self.offset.wrapping_sub(1);
    }

    /// The stream's RTP timestamp at `now`: the last relayed packet's, plus the time since at
    /// `clock_rate`. `None` before any packet was relayed.
    pub fn timestamp_at(&self, now: Instant, clock_rate: u32) -> Option<u32> {
        let last = self.last?;
        let elapsed = now.saturating_duration_since(last.at);
        let units = elapsed.as_micros() * u128::from(clock_rate) / 1_000_000;
        Some(last.timestamp.wrapping_add(units as u32))
    }

    /// Writes `packet` as the stream's next RTP packet into `buf` (16 bytes used): the stream's
    /// SSRC, the next sequence number (later relayed packets shift by one more). `None` when no
    /// packet was relayed yet (no SSRC to join) or `buf` is too short.
    pub fn inject(&mut self, packet: &EventPacket, buf: &mut [u8]) -> Option<usize> {
        let last = self.last?;
        let out = buf.get_mut(..16)?;
        let seq = last.seq.wrapping_add(1);
        out[0] = 0x80;
        out[1] = (u8::from(packet.marker) << 7) | (packet.payload_type & 0x7f);
        out[2..4].copy_from_slice(&seq.to_be_bytes());
        out[4..8].copy_from_slice(&packet.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&last.ssrc.to_be_bytes());
        out[12..16].copy_from_slice(&packet.payload);
        self.offset = self.offset.wrapping_add(1);
        // The stream's clock keeps following the relayed audio, not the event's start time.
        self.last = Some(Last { seq, ..last });
        Some(16)
    }
}

/// How a leg carries DTMF (`trunks[].dtmf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtmfMode {
    /// RFC 4733 telephone events in the media, relayed as they are; INFO relayed as any request.
    #[default]
    Rfc4733,
    /// SIP INFO (`application/dtmf-relay`): when the other leg uses RFC 4733, the SBC converts
    /// both ways and this leg is never offered telephone-event.
    Info,
}

/// The telephone-event format of an RTP media line: its payload type and clock rate (the first
/// one when a line has several, e.g. /48000 and /8000 from a browser).
pub fn telephone_event(m: &Media) -> Option<(u8, u32)> {
    m.formats.iter().find_map(|f| {
        let c = m.codec(f)?;
        let pt = f.parse::<u8>().ok().filter(|pt| *pt < 128)?;
        c.name.eq_ignore_ascii_case("telephone-event").then_some((pt, c.clock_rate))
    })
}

/// Removes every telephone-event format from a media line, with its `rtpmap` and `fmtp`.
/// A line left without formats keeps them (never an empty `m=`; the peer then refuses it).
pub fn strip_telephone_events(m: &mut Media) {
    let events: Vec<String> = m
        .formats
        .iter()
        .filter(|f| m.codec(f).is_some_and(|c| c.name.eq_ignore_ascii_case("telephone-event")))
        .cloned()
        .collect();
    if events.is_empty() || events.len() == m.formats.len() {
        return;
    }
    m.formats.retain(|f| !events.contains(f));
    m.attributes.retain(|a| {
        let pt = ["rtpmap", "fmtp"].iter().find_map(|n| a.payload_value(n)).map(|(pt, _)| pt);
        !pt.is_some_and(|pt| events.iter().any(|e| e.parse::<u8>().ok() == Some(pt)))
    });
}

/// Adds telephone-event (events 0-15) to an RTP audio line that has none, at the clock rate of
/// its first codec, with payload type 101 or, when that is taken, the first free dynamic one.
/// Returns the payload type added; `None` when the line had events already or no type is free.
pub fn add_telephone_event(m: &mut Media) -> Option<u8> {
    if telephone_event(m).is_some() {
        return None;
    }
    let rate = m
        .formats
        .iter()
        .filter_map(|f| m.codec(f))
        .find(|c| !c.is_auxiliary())
        .map_or(8000, |c| c.clock_rate);
    let taken = |pt: u8| {
        m.formats.iter().any(|f| f.parse::<u8>().ok() == Some(pt))
            || m.attributes.iter().any(|a| a.payload_value("rtpmap").is_some_and(|(n, _)| n == pt))
    };
    let pt = std::iter::once(101).chain(96..=127).find(|pt| !taken(*pt))?;
    m.formats.push(pt.to_string());
    m.attributes.push(Attribute::new("rtpmap", format!("{pt} telephone-event/{rate}")));
    m.attributes.push(Attribute::new("fmtp", format!("{pt} 0-15")));
    Some(pt)
}
