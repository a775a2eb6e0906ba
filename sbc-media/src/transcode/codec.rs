//! The audio codecs a transcoder joins, behind one 8 kHz PCM interface.
//!
//! Every codec decodes to and encodes from 16-bit mono PCM at 8 kHz: libopus decodes straight
//! to 8 kHz and encodes from it (RFC 7587 §4.1: the RTP clock stays 48 kHz whatever the audio
//! bandwidth), so the Opus <-> G.711 path needs no resampler. Opus instances are created once
//! per direction; decoding and encoding then work in caller buffers without allocating.

use opusic_c::{Application, Bitrate, Channels, FrameDuration, InbandFec, SampleRate};

use super::g711;

/// Samples of one 20 ms frame at 8 kHz.
pub(crate) const FRAME: usize = 160;

/// The most samples one packet can carry: 120 ms, Opus's longest packet (RFC 6716 §3.2.5).
pub(crate) const MAX_PACKET_SAMPLES: usize = 960;

/// The codecs the SBC can transcode between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Opus (RFC 6716, RTP mapping RFC 7587): 48 kHz RTP clock.
    Opus,
    /// G.711 μ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
}

impl Codec {
    /// The codec an `a=rtpmap` encoding name and clock rate describe, if the SBC transcodes it.
    pub fn from_rtpmap(name: &str, clock_rate: u32) -> Option<Codec> {
        match clock_rate {
            48000 if name.eq_ignore_ascii_case("opus") => Some(Codec::Opus),
            8000 if name.eq_ignore_ascii_case("PCMU") => Some(Codec::Pcmu),
            8000 if name.eq_ignore_ascii_case("PCMA") => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// RTP clock units per PCM sample: 6 for Opus (48 kHz clock), 1 for G.711.
    pub(crate) fn units_per_sample(self) -> u32 {
        match self {
            Codec::Opus => 6,
            Codec::Pcmu | Codec::Pcma => 1,
        }
    }
}

/// Encoder settings for the Opus side of a transcoded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// libopus complexity, 0..=10. 5 is the default: at 8 kHz input it costs about half of
    /// complexity 10 and keeps the quality of narrowband speech.
    pub complexity: u8,
    /// Target bitrate in bit/s. 8 kHz input makes the encoder narrowband (SILK), where 20 kbit/s
    /// holds the speech and the in-band FEC copy.
    pub bitrate: u32,
    /// Loss in percent assumed until the receiver's RTCP reports say otherwise. The encoder
    /// spends bits and CPU on in-band FEC (LBRR, a second SILK encode of each frame: some 30 %
    /// more encoder time) only while the loss is above 0 and the receiver decodes FEC, so the
    /// default 0 pays for FEC only on calls whose receiver reports loss (as libwebrtc does).
    pub expected_loss: u8,
}

impl Default for OpusSettings {
    fn default() -> OpusSettings {
        OpusSettings { complexity: 5, bitrate: 20_000, expected_loss: 0 }
    }
}

/// Why a codec could not be set up or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// libopus refused the settings or the packet (its error code).
    Opus(i32),
    /// The packet holds more audio than [`MAX_PACKET_SAMPLES`], or the output did not fit.
    TooLong,
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Opus(code) => write!(f, "libopus error {code}"),
            CodecError::TooLong => f.write_str("packet too long"),
        }
    }
}

impl std::error::Error for CodecError {}

fn opus_err(e: opusic_c::ErrorCode) -> CodecError {
    CodecError::Opus(e as i32)
}

/// Decoder of one direction's incoming codec.
pub(crate) enum Decoder {
    Opus(Box<opusic_c::Decoder>),
    Pcmu,
    Pcma,
}

impl Decoder {
    pub(crate) fn new(codec: Codec) -> Result<Decoder, CodecError> {
        Ok(match codec {
            // Mono output: libopus downmixes a stereo stream (RFC 7587 §3.4 lets any receiver
            // decode a stereo stream as mono).
            Codec::Opus => Decoder::Opus(Box::new(
                opusic_c::Decoder::new(Channels::Mono, SampleRate::Hz8000).map_err(opus_err)?,
            )),
            Codec::Pcmu => Decoder::Pcmu,
            Codec::Pcma => Decoder::Pcma,
        })
    }

    /// Decodes `payload` into `pcm`; returns the samples written.
    pub(crate) fn decode(&mut self, payload: &[u8], pcm: &mut [u16]) -> Result<usize, CodecError> {
        match self {
            Decoder::Opus(d) => {
                if payload.is_empty() {
                    // An empty payload would read as "lost" to libopus; it carries nothing.
                    return Ok(0);
                }
                let n = opusic_c::utils::get_nb_samples(payload, SampleRate::Hz8000)
                    .map_err(opus_err)?;
                let out = pcm.get_mut(..n).ok_or(CodecError::TooLong)?;
                d.decode_to_slice(payload, out, false).map_err(opus_err)
            }
            Decoder::Pcmu | Decoder::Pcma => {
                let out = pcm.get_mut(..payload.len()).ok_or(CodecError::TooLong)?;
                let law: fn(u8) -> i16 = if matches!(self, Decoder::Pcmu) {
                    g711::ulaw_decode
                } else {
                    g711::alaw_decode
                };
                for (s, &c) in out.iter_mut().zip(payload) {
                    *s = law(c) as u16;
                }
                Ok(payload.len())
            }
        }
    }

    /// Fills `pcm` (its whole length, a multiple of 2.5 ms) with audio for lost packets. Opus
    /// uses the in-band FEC of `next` (the packet after the gap) for the end of the gap when it
    /// carries one, and its own concealment for the rest; G.711 has no state here and returns
    /// `false`, leaving the caller's concealment in charge.
    pub(crate) fn conceal(&mut self, next: &[u8], pcm: &mut [u16]) -> Result<bool, CodecError> {
        match self {
            Decoder::Opus(d) => {
                // With decode_fec, libopus conceals all but the last frame of the gap and
                // rebuilds that one from the LBRR data of `next` (plain concealment if absent).
                d.decode_to_slice(next, pcm, true).map_err(opus_err)?;
                Ok(true)
            }
            Decoder::Pcmu | Decoder::Pcma => Ok(false),
        }
    }
}

/// Encoder of one direction's outgoing codec: 20 ms frames.
pub(crate) enum Encoder {
    Opus(Box<opusic_c::Encoder>),
    Pcmu,
    Pcma,
}

impl Encoder {
    /// `fec`: the receiver decodes in-band FEC (without it no FEC is ever encoded).
    pub(crate) fn new(
        codec: Codec,
        settings: OpusSettings,
        fec: bool,
    ) -> Result<Encoder, CodecError> {
        Ok(match codec {
            Codec::Opus => {
                let mut e =
                    opusic_c::Encoder::new(Channels::Mono, SampleRate::Hz8000, Application::Voip)
                        .map_err(opus_err)?;
                e.set_complexity(settings.complexity.min(10)).map_err(opus_err)?;
                e.set_bitrate(Bitrate::Value(settings.bitrate)).map_err(opus_err)?;
                e.set_frame_duration(FrameDuration::Size20).map_err(opus_err)?;
                e.set_inband_fec(if fec { InbandFec::Mode1 } else { InbandFec::Off })
                    .map_err(opus_err)?;
                e.set_packet_loss(settings.expected_loss.min(100)).map_err(opus_err)?;
                Encoder::Opus(Box::new(e))
            }
            Codec::Pcmu => Encoder::Pcmu,
            Codec::Pcma => Encoder::Pcma,
        })
    }

    /// Tells the Opus encoder the loss its receiver sees, in percent (G.711 has no use for it).
    pub(crate) fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        match self {
            Encoder::Opus(e) => e.set_packet_loss(percent.min(100)).map_err(opus_err),
            Encoder::Pcmu | Encoder::Pcma => Ok(()),
        }
    }

    /// Encodes one frame of [`FRAME`] samples into `out`; returns the payload length.
    pub(crate) fn encode(&mut self, pcm: &[u16], out: &mut [u8]) -> Result<usize, CodecError> {
        match self {
            Encoder::Opus(e) => e.encode_to_slice(pcm, out).map_err(opus_err),
            Encoder::Pcmu | Encoder::Pcma => {
                let out = out.get_mut(..pcm.len()).ok_or(CodecError::TooLong)?;
                let law: fn(i16) -> u8 = if matches!(self, Encoder::Pcmu) {
                    g711::ulaw_encode
                } else {
                    g711::alaw_encode
                };
                for (c, &s) in out.iter_mut().zip(pcm) {
                    *c = law(s as i16);
                }
                Ok(pcm.len())
            }
        }
    }
}
