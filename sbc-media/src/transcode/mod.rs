//! Opus <-> G.711 transcoding of one RTP direction, sans-IO.
//!
//! A [`Transcoder`] turns the RTP stream one side's peer sends (already decrypted) into the RTP
//! stream the other side's peer receives, in another codec: it is fed one packet at a time
//! ([`Transcoder::handle_rtp`]) and writes zero or more packets into a caller-provided
//! [`Emitted`]. It owns no socket and reads no clock, and allocates nothing per packet: the
//! codec states, the sample FIFO and the output arena are allocated once, at setup.
//!
//! The pipeline, per direction:
//! - decode to 16-bit mono PCM at 8 kHz (libopus decodes straight to 8 kHz; G.711 is 8 kHz);
//! - queue the samples in a FIFO and encode every full 20 ms frame (160 samples): input packets
//!   of any size (30 ms G.711 from SIPp's pcap, 60 ms Opus) become 20 ms output packets;
//! - write each frame as RTP with the direction's own SSRC, a sequence number that goes up by
//!   one per packet sent, and a timestamp in the target clock (+960 per frame for Opus, whose RTP
//!   clock is 48 kHz whatever the audio bandwidth, RFC 7587 §4.1; +160 for G.711), with the
//!   marker bit on the first packet of each talkspurt (RFC 3551 §4.1).
//!
//! Timing. Output timestamps derive from input timestamps through one anchor (an input
//! timestamp and the output timestamp it maps to), so gaps keep their length across the codec
//! change and RFC 4733 events land at the right place among the audio frames.
//!
//! Gaps. Loss is told from silence by the sequence number (RFC 3550 §5.1):
//! - missing sequence numbers with a timestamp gap of at most 120 ms: packets were lost. The gap
//!   is concealed when the next packet arrives (no timer): Opus with libopus's concealment and,
//!   for the end of the gap, the in-band FEC (LBRR) of the packet that arrived, when it has one;
//!   G.711 by repeating the last 20 ms with a fading gain. The output stays continuous (one
//!   packet per 20 ms, no sequence or timestamp hole).
//! - a timestamp gap without missing sequence numbers: the sender stopped on purpose (Opus DTX,
//!   RFC 7587 §3.3, or G.711 silence suppression). Nothing is invented for it: the output pauses
//!   for as long, the next packet carries the marker bit, and the far end's jitter buffer plays
//!   its comfort noise.
//! - comfort noise packets (RFC 3389, payload type 13) from the G.711 side are never fed to the
//!   encoder: they end the talkspurt.
//! - a new SSRC, or a jump of thousands of sequence numbers or of more than a minute: a new
//!   source; the output timeline goes on from where it was, with the marker bit.
//!
//! Late or duplicated packets (sequence number not after the last one) are dropped: their time
//! has been concealed already.
//!
//! DTMF (RFC 4733): telephone events from the input are sent on with the output's event payload
//! type, timestamp mapped to the output clock, and duration rescaled between the clocks
//! (48000 <-> 8000), every packet of an event (including the repeated end packets) kept.

mod codec;
pub mod g711;

#[cfg(test)]
mod tests;

use std::fmt;

pub use self::codec::{Codec, CodecError, OpusSettings};
use self::codec::{Decoder, Encoder, FRAME, MAX_PACKET_SAMPLES};
use crate::backend::Transcode;

/// Packets one input packet can produce at most: 120 ms of Opus is 6 frames, plus up to 6
/// concealed frames and a padded partial one.
pub const MAX_EMITTED: usize = 16;

/// Bytes available for the packets of one input packet: [`MAX_EMITTED`] packets of the largest
/// size a packet may take before it is written (an Opus frame's header and `MAX_OPUS_PAYLOAD`).
pub const EMITTED_BYTES: usize = MAX_EMITTED * (RTP_HEADER + MAX_OPUS_PAYLOAD);

/// Largest Opus payload the encoder may write for one 20 ms frame (libopus's `max_data_bytes`);
/// at the configured bitrate a frame is some 60 bytes.
const MAX_OPUS_PAYLOAD: usize = 400;

/// RTP fixed header (no CSRC, no extension).
const RTP_HEADER: usize = 12;

/// The static payload type of comfort noise (RFC 3551 §6, RFC 3389).
const CN_PAYLOAD_TYPE: u8 = 13;

/// Longest loss concealed, in PCM samples (120 ms): beyond it a gap is a discontinuity.
const MAX_CONCEAL: usize = MAX_PACKET_SAMPLES;

/// A timestamp gap longer than this (in seconds) is a new source rather than a pause.
const MAX_PAUSE_SECONDS: u32 = 60;

/// A sequence jump larger than this (either way) is a new source rather than loss or reordering.
const MAX_SEQ_JUMP: i16 = 3000;

/// FIFO capacity: a partial frame, a concealed gap and a packet of the longest duration.
const FIFO: usize = FRAME + MAX_CONCEAL + MAX_PACKET_SAMPLES;

/// Why a transcoder cannot be built for a [`Transcode`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TranscodeError {
    /// A codec of the pair is not one the SBC transcodes (Opus, PCMU, PCMA).
    Unsupported(String),
    /// libopus refused the settings.
    Codec(CodecError),
}

impl fmt::Display for TranscodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranscodeError::Unsupported(name) => write!(f, "cannot transcode {name}"),
            TranscodeError::Codec(e) => write!(f, "codec setup: {e}"),
        }
    }
}

impl std::error::Error for TranscodeError {}

/// What became of one input packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Audio, decoded into the FIFO (the packets it completed are in the [`Emitted`]).
    Audio,
    /// A telephone event, sent on.
    Event,
    /// Comfort noise: ends the talkspurt, nothing sent.
    ComfortNoise,
    /// Not used; the reason says why.
    Dropped(DropCause),
}

/// Why an input packet was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// Not a parsable RTP packet.
    Malformed,
    /// A payload type that is neither the codec, nor its telephone events, nor comfort noise.
    UnknownPayloadType,
    /// Telephone events, but the other side accepts none.
    NoEventsOut,
    /// Older than (or a copy of) a packet already used.
    Late,
    /// The codec could not decode it.
    Undecodable,
}

/// The packets produced by one [`Transcoder::handle_rtp`] call, in an arena allocated once.
pub struct Emitted {
    buf: Box<[u8; EMITTED_BYTES]>,
    /// (start, length) in `buf` of each packet.
    spans: [(u16, u16); MAX_EMITTED],
    count: usize,
    /// Packets that did not fit since the last [`Emitted::clear`].
    overflow: u32,
}

impl Default for Emitted {
    fn default() -> Emitted {
        Emitted::new()
    }
}

impl fmt::Debug for Emitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitted").field("count", &self.count).finish_non_exhaustive()
    }
}

impl Emitted {
    /// An empty arena (allocates once).
    pub fn new() -> Emitted {
        Emitted {
            buf: Box::new([0; EMITTED_BYTES]),
            spans: [(0, 0); MAX_EMITTED],
            count: 0,
            overflow: 0,
        }
    }

    /// Forgets the packets (keeps the memory).
    pub fn clear(&mut self) {
        self.count = 0;
        self.overflow = 0;
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no packet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Packets that did not fit in the arena (dropped).
    pub fn overflow(&self) -> u32 {
        self.overflow
    }

    /// Packet `i`.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let &(start, len) = self.spans.get(..self.count)?.get(i)?;
        self.buf.get(usize::from(start)..usize::from(start) + usize::from(len))
    }

    /// The packets in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.count).filter_map(|i| self.get(i))
    }

    /// Appends a packet of at most `max` bytes that `write` fills (returning its length); `false`
    /// when it does not fit or `write` fails.
    fn push(&mut self, max: usize, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let start = self
            .count
            .checked_sub(1)
            .and_then(|i| self.spans.get(i))
            .map_or(0, |&(s, l)| usize::from(s) + usize::from(l));
        let room = (start + max).min(EMITTED_BYTES);
        let written = match self.buf.get_mut(start..room) {
            Some(slot) if self.count < MAX_EMITTED && slot.len() == max => write(slot),
            _ => None,
        };
        match written {
            Some(len) if len <= max => {
                // Invariant: start + len <= EMITTED_BYTES (6,592) fits in u16.
                self.spans[self.count] = (start as u16, len as u16);
                self.count += 1;
                true
            }
            _ => {
                self.overflow += 1;
                false
            }
        }
    }
}

/// A parsed RTP packet (RFC 3550 §5.1): header fields and the payload without padding.
#[derive(Debug, Clone, Copy)]
struct Rtp<'a> {
    marker: bool,
    payload_type: u8,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    payload: &'a [u8],
}

impl<'a> Rtp<'a> {
    fn parse(data: &'a [u8]) -> Option<Rtp<'a>> {
        let h: &[u8; RTP_HEADER] = data.get(..RTP_HEADER)?.try_into().ok()?;
        if h[0] >> 6 != 2 {
            return None;
        }
        let mut start = RTP_HEADER + 4 * usize::from(h[0] & 0x0f);
        if h[0] & 0x10 != 0 {
            // Header extension (§5.3.1): 4 bytes, then its length in 32-bit words.
            let words = data.get(start + 2..start + 4)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
        }
        let mut end = data.len();
        if h[0] & 0x20 != 0 {
            // Padding: the last byte counts the padding bytes, itself included.
            let pad = usize::from(*data.last()?);
            end = end.checked_sub(pad).filter(|_| pad > 0)?;
        }
        Some(Rtp {
            marker: h[1] & 0x80 != 0,
            payload_type: h[1] & 0x7f,
            seq: u16::from_be_bytes([h[2], h[3]]),
            timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            payload: data.get(start..end)?,
        })
    }
}

fn write_header(out: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) -> Option<()> {
    let h = out.get_mut(..RTP_HEADER)?;
    h[0] = 0x80;
    h[1] = (u8::from(marker) << 7) | (pt & 0x7f);
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&ts.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Some(())
}

/// One input payload type and its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Format {
    pt: u8,
    clock_rate: u32,
}

/// How the input stream continues at a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continuity {
    /// First packet, a new SSRC, or a jump too large to be loss.
    NewSource,
    /// The next sequence number, or `lost` packets were skipped.
    Next { lost: u16 },
}

/// The per-direction transcoder (see the module docs). Owned by the media worker of its pair.
pub struct Transcoder {
    from: Codec,
    to: Codec,
    audio_in: Format,
    audio_out: Format,
    events_in: Option<Format>,
    events_out: Option<Format>,
    decoder: Decoder,
    encoder: Encoder,
    /// The receiver of the output decodes in-band FEC: its loss reports steer the encoder.
    fec_to: bool,
    /// The loss level (percent) the encoder was last told.
    loss_level: u8,
    /// Opus packets decoded, by coded audio bandwidth (NB, MB, WB, SWB, FB).
    bandwidths: [u64; 5],
    /// Opus frames encoded while the encoder assumed loss (with in-band FEC).
    fec_frames: u64,
    /// Opus packets received that carried in-band FEC of the frame before them, and losses
    /// whose last frame was rebuilt from it.
    lbrr_in: u64,
    fec_recovered: u64,

    // Input tracking.
    /// SSRC and sequence number of the last packet used.
    input: Option<(u32, u16)>,
    /// Input timestamp right after the last decoded audio; `None` before the first audio.
    next_in_ts: Option<u32>,

    // The timeline: `anchor.0` (input clock) maps to `anchor.1` (output clock).
    anchor: Option<(u32, u32)>,

    // Output.
    ssrc: u32,
    seq: u16,
    /// Output timestamp right after the last frame sent (where a new source continues).
    next_out_ts: u32,
    /// The next audio frame starts a talkspurt (marker bit).
    talkspurt: bool,

    // Audio between decoder and encoder (PCM at 8 kHz as libopus's u16 bit patterns).
    fifo: Box<[u16; FIFO]>,
    fifo_len: usize,
    /// Input timestamp of `fifo[0]`.
    fifo_ts: u32,
    /// The last 20 ms decoded, for G.711 concealment.
    last_frame: Box<[u16; FRAME]>,
    pcm: Box<[u16; MAX_PACKET_SAMPLES]>,
}

impl fmt::Debug for Transcoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transcoder")
            .field("from", &self.from)
            .field("to", &self.to)
            .field("ssrc", &self.ssrc)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Transcoder {
    /// A transcoder for `spec`, sending with SSRC `ssrc`; `seed` picks the random first sequence
    /// number and timestamp (RFC 3550 §5.1).
    pub fn new(
        spec: &Transcode,
        opus: OpusSettings,
        ssrc: u32,
        seed: u64,
    ) -> Result<Transcoder, TranscodeError> {
        let codec = |c: &crate::backend::CodecSpec| {
            Codec::from_rtpmap(&c.name, c.clock_rate)
                .ok_or_else(|| TranscodeError::Unsupported(format!("{}/{}", c.name, c.clock_rate)))
        };
        let from = codec(&spec.from)?;
        let to = codec(&spec.to)?;
        let format = |c: &crate::backend::CodecSpec| Format {
            pt: c.payload_type & 0x7f,
            clock_rate: c.clock_rate.max(1),
        };
        let mixed = splitmix64(seed);
        Ok(Transcoder {
            from,
            to,
            audio_in: format(&spec.from),
            audio_out: format(&spec.to),
            events_in: spec.dtmf_from.as_ref().map(format),
            events_out: spec.dtmf_to.as_ref().map(format),
            decoder: Decoder::new(from).map_err(TranscodeError::Codec)?,
            encoder: Encoder::new(to, opus, spec.fec_to).map_err(TranscodeError::Codec)?,
            fec_to: spec.fec_to,
            loss_level: opus.expected_loss,
            bandwidths: [0; 5],
            fec_frames: 0,
            lbrr_in: 0,
            fec_recovered: 0,
            input: None,
            next_in_ts: None,
            anchor: None,
            ssrc,
            seq: mixed as u16,
            next_out_ts: (mixed >> 32) as u32,
            talkspurt: true,
            fifo: Box::new([0; FIFO]),
            fifo_len: 0,
            fifo_ts: 0,
            last_frame: Box::new([0; FRAME]),
            pcm: Box::new([0; MAX_PACKET_SAMPLES]),
        })
    }

    /// The SSRC of the output stream.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The RTP clock rate of the output stream (48000 for Opus, RFC 7587 §4.1; 8000 for G.711).
    pub fn output_clock_rate(&self) -> u32 {
        self.audio_out.clock_rate
    }

    /// Opus packets decoded so far by the bandwidth their sender coded: narrowband, mediumband,
    /// wideband, super-wideband, fullband (RFC 6716 §3.1). Zero for a G.711 input.
    pub fn input_bandwidths(&self) -> [u64; 5] {
        self.bandwidths
    }

    /// The loss level (percent) the Opus encoder currently assumes; above 0 it adds in-band FEC.
    pub fn expected_loss(&self) -> u8 {
        self.loss_level
    }

    /// Whether the output is Opus toward a receiver that decodes in-band FEC (`useinbandfec=1`):
    /// the transcoders whose FEC the receiver's reports steer.
    pub fn fec_receiver(&self) -> bool {
        self.fec_to && self.to == Codec::Opus
    }

    /// Opus frames encoded so far while the encoder assumed loss, that is with in-band FEC.
    pub fn fec_frames(&self) -> u64 {
        self.fec_frames
    }

    /// Opus packets decoded so far that carried in-band FEC (their sender heard of loss, from
    /// the SBC's own reports on a transcoded call, and protects its stream), and losses whose
    /// last frame libopus rebuilt from such a packet rather than concealed.
    pub fn input_fec(&self) -> (u64, u64) {
        (self.lbrr_in, self.fec_recovered)
    }

    /// A report block of the output's receiver (RFC 3550 §6.4.1): `fraction_lost` of the
    /// stream `ssrc`, in 1/256. For this transcoder's own SSRC, toward an Opus receiver that
    /// decodes FEC, it moves the encoder's expected loss between the levels 0, 1, 5, 10 and 20 %:
    /// up at once, down only when the loss falls a fifth below the level (so a loss hovering
    /// around a level does not reconfigure the encoder at every report). Returns whether the
    /// level changed.
    pub fn receiver_report(&mut self, ssrc: u32, fraction_lost: u8) -> bool {
        const LEVELS: [u8; 5] = [0, 1, 5, 10, 20];
        if ssrc != self.ssrc || !self.fec_to || self.to != Codec::Opus {
            return false;
        }
        // Percent times 10, to compare with the hysteresis without floats.
        let permille = u32::from(fraction_lost) * 1000 / 256;
        let target =
            LEVELS.iter().rev().copied().find(|&l| permille >= u32::from(l) * 10).unwrap_or(0);
        let current = self.loss_level;
        let level = if target >= current || permille * 5 < u32::from(current) * 40 {
            target
        } else {
            current
        };
        if level == current || self.encoder.set_expected_loss(level).is_err() {
            return false;
        }
        self.loss_level = level;
        true
    }

    /// The output timestamp the next audio frame will carry: where an event injected now
    /// starts (SIP INFO interworking, see [`crate::dtmf`]).
    pub fn next_timestamp(&self) -> u32 {
        self.next_out_ts
    }

    /// Writes an RFC 4733 packet made by the SBC (a digit received by SIP INFO) into `buf` as
    /// the output stream's next packet: its SSRC and sequence number (the transcoder owns that
    /// stream, so later frames continue after it). Returns the length (16), `None` when `buf`
    /// is too short.
    pub fn inject_event(
        &mut self,
        packet: &crate::dtmf::EventPacket,
        buf: &mut [u8],
    ) -> Option<usize> {
        write_header(
            buf,
            packet.marker,
            packet.payload_type,
            self.seq,
            packet.timestamp,
            self.ssrc,
        )?;
        buf.get_mut(RTP_HEADER..RTP_HEADER + 4)?.copy_from_slice(&packet.payload);
        self.seq = self.seq.wrapping_add(1);
        Some(RTP_HEADER + 4)
    }

    /// Transcodes one RTP packet from the input side; the packets to send toward the other side
    /// are appended to `out` (which the caller clears between calls or not, as it likes).
    pub fn handle_rtp(&mut self, packet: &[u8], out: &mut Emitted) -> Disposition {
        let Some(p) = Rtp::parse(packet) else {
            return Disposition::Dropped(DropCause::Malformed);
        };
        let is_event = self.events_in.is_some_and(|e| e.pt == p.payload_type);
        let is_audio = p.payload_type == self.audio_in.pt;
        let is_cn = p.payload_type == CN_PAYLOAD_TYPE && !is_audio;
        if !is_event && !is_audio && !is_cn {
            return Disposition::Dropped(DropCause::UnknownPayloadType);
        }
        let continuity = match self.input {
            Some((ssrc, last)) if ssrc == p.ssrc => {
                let delta = p.seq.wrapping_sub(last) as i16;
                if delta <= 0 && delta > -MAX_SEQ_JUMP {
                    return Disposition::Dropped(DropCause::Late);
                }
                if delta > MAX_SEQ_JUMP || delta <= -MAX_SEQ_JUMP {
                    Continuity::NewSource
                } else {
                    Continuity::Next { lost: (delta - 1) as u16 }
                }
            }
            _ => Continuity::NewSource,
        };
        if continuity == Continuity::NewSource {
            self.new_source(out, p.timestamp);
        }
        let disposition = if is_audio {
            self.audio(out, &p, continuity)
        } else if is_event {
            self.event(out, &p)
        } else {
            // Comfort noise is never decoded as audio: the talkspurt is over.
            self.end_talkspurt(out);
            Disposition::ComfortNoise
        };
        if !matches!(disposition, Disposition::Dropped(DropCause::Undecodable)) {
            self.input = Some((p.ssrc, p.seq));
        }
        disposition
    }

    /// A new input source: whatever was queued goes out, and the output timeline continues
    /// from where it stands, the next audio starting a talkspurt.
    fn new_source(&mut self, out: &mut Emitted, in_ts: u32) {
        self.end_talkspurt(out);
        self.anchor = Some((in_ts, self.next_out_ts));
        self.next_in_ts = None;
    }

    /// Sends the partial frame in the FIFO, padded with silence, and marks the next audio as a
    /// talkspurt start.
    fn end_talkspurt(&mut self, out: &mut Emitted) {
        if self.fifo_len > 0 {
            self.fifo[self.fifo_len..FRAME.max(self.fifo_len)].fill(0);
            self.fifo_len = FRAME.max(self.fifo_len);
            self.drain(out);
        }
        self.fifo_len = 0;
        self.talkspurt = true;
    }

    fn audio(&mut self, out: &mut Emitted, p: &Rtp<'_>, continuity: Continuity) -> Disposition {
        let ups = self.from.units_per_sample();
        if let (Some(expected), Continuity::Next { lost }) = (self.next_in_ts, continuity) {
            let gap = p.timestamp.wrapping_sub(expected) as i32;
            let samples = usize::try_from(gap).unwrap_or(0) / ups as usize;
            if gap == 0 {
                // Contiguous: the common case.
            } else if gap > 0 && lost > 0 && samples <= MAX_CONCEAL {
                self.conceal(out, p.payload, samples);
            } else if gap > 0 && (gap as u32) <= MAX_PAUSE_SECONDS * self.audio_in.clock_rate {
                // DTX or silence suppression (or a loss too long to conceal): a pause.
                self.end_talkspurt(out);
            } else {
                // Backwards or far ahead: a restarted source.
                self.new_source(out, p.timestamp);
            }
        }
        if self.next_in_ts.is_none() || self.fifo_len == 0 {
            self.fifo_ts = p.timestamp;
        }
        if self.anchor.is_none() {
            self.anchor = Some((p.timestamp, self.next_out_ts));
        }
        let n = match self.decoder.decode(p.payload, &mut self.pcm[..]) {
            Ok(n) => n,
            Err(_) => return Disposition::Dropped(DropCause::Undecodable),
        };
        if self.from == Codec::Opus
            && let Some(&toc) = p.payload.first()
        {
            self.bandwidths[opus_bandwidth(toc)] += 1;
            self.lbrr_in += u64::from(opus_has_lbrr(p.payload));
        }
        self.push_pcm(out, n);
        self.next_in_ts = Some(p.timestamp.wrapping_add(n as u32 * ups));
        Disposition::Audio
    }

    /// Conceals `samples` of lost audio before the packet whose payload is `next`.
    fn conceal(&mut self, out: &mut Emitted, next: &[u8], samples: usize) {
        // Opus conceals in steps of 2.5 ms (20 samples at 8 kHz); the rest stays silent.
        let opus_len = samples - samples % 20;
        let concealed = match self.pcm.get_mut(..opus_len) {
            Some(pcm) if !pcm.is_empty() => self.decoder.conceal(next, pcm).unwrap_or(false),
            _ => false,
        };
        if concealed {
            self.fec_recovered += u64::from(opus_has_lbrr(next));
            self.push_pcm(out, opus_len);
            self.pcm[..samples - opus_len].fill(0);
            self.push_pcm(out, samples - opus_len);
            return;
        }
        // G.711 (or a failed Opus concealment): the last 20 ms again, fading out over 60 ms so
        // that a long gap turns into silence instead of a buzz.
        const FADE: usize = 3 * FRAME;
        for (k, s) in self.pcm[..samples].iter_mut().enumerate() {
            let gain = FADE.saturating_sub(k) as i32;
            let v = i32::from(self.last_frame[k % FRAME] as i16) * gain / FADE as i32;
            *s = v as i16 as u16;
        }
        self.push_pcm(out, samples);
    }

    /// Appends `pcm[..n]` to the FIFO and sends every complete frame.
    fn push_pcm(&mut self, out: &mut Emitted, n: usize) {
        let mut at = 0;
        while at < n {
            let take = (n - at).min(FIFO - self.fifo_len);
            self.fifo[self.fifo_len..self.fifo_len + take]
                .copy_from_slice(&self.pcm[at..at + take]);
            self.fifo_len += take;
            at += take;
            self.drain(out);
            if take == 0 {
                // Invariant: drain leaves fewer than FRAME samples, so take > 0; never loops.
                break;
            }
        }
    }

    /// Encodes and sends every complete frame of the FIFO.
    fn drain(&mut self, out: &mut Emitted) {
        let mut start = 0;
        while self.fifo_len - start >= FRAME {
            let mut frame = [0u16; FRAME];
            frame.copy_from_slice(&self.fifo[start..start + FRAME]);
            self.send_frame(out, &frame);
            self.last_frame.copy_from_slice(&frame);
            start += FRAME;
            self.fifo_ts = self.fifo_ts.wrapping_add(FRAME as u32 * self.from.units_per_sample());
        }
        self.fifo.copy_within(start..self.fifo_len, 0);
        self.fifo_len -= start;
    }

    fn send_frame(&mut self, out: &mut Emitted, frame: &[u16; FRAME]) {
        let ts = self.map(self.fifo_ts);
        let marker = std::mem::take(&mut self.talkspurt);
        let (pt, ssrc, seq) = (self.audio_out.pt, self.ssrc, self.seq);
        let max = match self.to {
            Codec::Opus => RTP_HEADER + MAX_OPUS_PAYLOAD,
            Codec::Pcmu | Codec::Pcma => RTP_HEADER + FRAME,
        };
        let encoder = &mut self.encoder;
        let sent = out.push(max, |buf| {
            write_header(buf, marker, pt, seq, ts, ssrc)?;
            let len = encoder.encode(frame, buf.get_mut(RTP_HEADER..)?).ok()?;
            Some(RTP_HEADER + len)
        });
        // A frame that did not fit still advances the stream: the receiver sees it as lost.
        if sent && self.loss_level > 0 && self.to == Codec::Opus {
            self.fec_frames += 1;
        }
        self.seq = self.seq.wrapping_add(1);
        self.next_out_ts = ts.wrapping_add(FRAME as u32 * self.to.units_per_sample());
    }

    fn event(&mut self, out: &mut Emitted, p: &Rtp<'_>) -> Disposition {
        let (Some(from), Some(to)) = (self.events_in, self.events_out) else {
            return Disposition::Dropped(DropCause::NoEventsOut);
        };
        let Some(event) = p.payload.get(..4) else {
            return Disposition::Dropped(DropCause::Malformed);
        };
        if self.anchor.is_none() {
            self.anchor = Some((p.timestamp, self.next_out_ts));
        }
        let ts = self.map(p.timestamp);
        // RFC 4733 §2.5.1.3: the duration counts in the event clock; rescale it to the target's.
        let duration = u64::from(u16::from_be_bytes([event[2], event[3]]))
            * u64::from(to.clock_rate)
            / u64::from(from.clock_rate);
        let duration = duration.min(u64::from(u16::MAX)) as u16;
        let (code, flags, seq, ssrc) = (event[0], event[1], self.seq, self.ssrc);
        out.push(RTP_HEADER + 4, |buf| {
            write_header(buf, p.marker, to.pt, seq, ts, ssrc)?;
            let body = buf.get_mut(RTP_HEADER..RTP_HEADER + 4)?;
            body[0] = code;
            body[1] = flags;
            body[2..4].copy_from_slice(&duration.to_be_bytes());
            Some(RTP_HEADER + 4)
        });
        self.seq = self.seq.wrapping_add(1);
        Disposition::Event
    }

    /// The output timestamp of input timestamp `in_ts`, through the anchor.
    fn map(&mut self, in_ts: u32) -> u32 {
        let (a_in, a_out) = *self.anchor.get_or_insert((in_ts, self.next_out_ts));
        let diff = i64::from(in_ts.wrapping_sub(a_in) as i32);
        let units =
            diff * i64::from(self.to.units_per_sample()) / i64::from(self.from.units_per_sample());
        let out = a_out.wrapping_add(units as u32);
        // Move the anchor along before the i32 difference could overflow (hours of audio).
        if diff.abs() > 1 << 30 {
            self.anchor = Some((in_ts, out));
        }
        out
    }
}

/// SplitMix64's finalizer: spreads the seed over the initial sequence number and timestamp.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The coded bandwidth of an Opus packet from its TOC byte (RFC 6716 §3.1), as an index into
/// [`Transcoder::input_bandwidths`].
fn opus_bandwidth(toc: u8) -> usize {
    match toc >> 3 {
        0..=3 | 16..=19 => 0,
        4..=7 => 1,
        8..=11 | 20..=23 => 2,
        12..=13 | 24..=27 => 3,
        _ => 4,
    }
}

/// Whether an Opus payload carries in-band FEC (LBRR) of the frame before it: libopus's own
/// parser (opusic-c does not wrap it), which reads the first bits of the SILK layer only.
pub(crate) fn opus_has_lbrr(payload: &[u8]) -> bool {
    let len = i32::try_from(payload.len()).unwrap_or(i32::MAX);
    // SAFETY: libopus reads at most `len` bytes from the pointer, all of them the slice's.
    unsafe { opusic_sys::opus_packet_has_lbrr(payload.as_ptr(), len) > 0 }
}
