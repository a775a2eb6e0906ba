use opusic_c::{Application, Channels, SampleRate};

use super::*;
use crate::backend::CodecSpec;

fn codec(name: &str, pt: u8, rate: u32, channels: u8) -> CodecSpec {
    CodecSpec { name: name.into(), payload_type: pt, clock_rate: rate, channels }
}

fn opus() -> CodecSpec {
    codec("opus", 111, 48000, 2)
}

fn pcmu() -> CodecSpec {
    codec("PCMU", 0, 8000, 1)
}

fn spec(from: CodecSpec, to: CodecSpec) -> Transcode {
    Transcode { from, to, dtmf_from: None, dtmf_to: None, fec_to: false }
}

fn transcoder(from: CodecSpec, to: CodecSpec) -> Transcoder {
    Transcoder::new(&spec(from, to), OpusSettings::default(), 0xC0FFEE, 7).unwrap()
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, (u8::from(marker) << 7) | pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A sine of `freq` Hz at `amplitude`, sampled at `rate`, from sample `start`.
fn sine(freq: f64, amplitude: f64, rate: u32, start: usize, n: usize) -> Vec<i16> {
    (start..start + n)
        .map(|i| {
            (amplitude * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as i16
        })
        .collect()
}

/// Goertzel power of `freq` in `x` (8 kHz), normalised by the length.
fn goertzel(x: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s0 = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64).powi(2)
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// The tone is at 1 kHz: far above its neighbours, and at about the expected level.
fn assert_tone(pcm: &[i16], amplitude: f64) {
    let tone = goertzel(pcm, 1000.0);
    for other in [400.0, 700.0, 1400.0, 2000.0, 3000.0] {
        let p = goertzel(pcm, other);
        assert!(tone > 100.0 * p, "1 kHz {tone} vs {other} Hz {p}");
    }
    let level = rms(pcm);
    let expected = amplitude / 2f64.sqrt();
    assert!(level > expected * 0.5 && level < expected * 1.5, "level {level}, expected {expected}");
}

fn ulaw_payload(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().map(|&s| g711::ulaw_encode(s)).collect()
}

fn ulaw_samples(payload: &[u8]) -> Vec<i16> {
    payload.iter().map(|&c| g711::ulaw_decode(c)).collect()
}

/// Header fields of an output packet.
fn header(p: &[u8]) -> (bool, u8, u16, u32, u32) {
    let r = Rtp::parse(p).unwrap();
    (r.marker, r.payload_type, r.seq, r.timestamp, r.ssrc)
}

/// Feeds `packets` through `t`, collecting every output packet.
fn run(t: &mut Transcoder, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Emitted::new();
    let mut all = Vec::new();
    for p in packets {
        out.clear();
        t.handle_rtp(p, &mut out);
        assert_eq!(out.overflow(), 0);
        all.extend(out.iter().map(<[u8]>::to_vec));
    }
    all
}

/// `count` PCMU packets of `ms` ms of a 1 kHz tone.
fn pcmu_tone(count: usize, ms: usize, amplitude: f64) -> Vec<Vec<u8>> {
    let n = 8 * ms;
    (0..count)
        .map(|i| {
            let pcm = sine(1000.0, amplitude, 8000, i * n, n);
            rtp(0, 100 + i as u16, 5000 + (i * n) as u32, 0x1234, i == 0, &ulaw_payload(&pcm))
        })
        .collect()
}

/// `count` Opus packets of 20 ms of a 1 kHz tone, encoded at 48 kHz as a browser would.
fn opus_tone(count: usize, amplitude: f64) -> Vec<Vec<u8>> {
    let mut enc =
        opusic_c::Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip).unwrap();
    enc.set_inband_fec(opusic_c::InbandFec::Mode1).unwrap();
    enc.set_packet_loss(10).unwrap();
    (0..count)
        .map(|i| {
            let pcm: Vec<u16> =
                sine(1000.0, amplitude, 48000, i * 960, 960).iter().map(|&s| s as u16).collect();
            let mut buf = [0u8; 400];
            let len = enc.encode_to_slice(&pcm, &mut buf).unwrap();
            rtp(111, 7 + i as u16, 90_000 + (i * 960) as u32, 0xBEEF, i == 0, &buf[..len])
        })
        .collect()
}

fn decode_opus_at_8k(packets: &[Vec<u8>]) -> Vec<i16> {
    let mut dec = opusic_c::Decoder::new(Channels::Mono, SampleRate::Hz8000).unwrap();
    let mut pcm = Vec::new();
    for p in packets {
        let r = Rtp::parse(p).unwrap();
        let mut buf = [0u16; 960];
        let n = dec.decode_to_slice(r.payload, &mut buf, false).unwrap();
        pcm.extend(buf[..n].iter().map(|&s| s as i16));
    }
    pcm
}

#[test]
fn tone_survives_pcmu_to_opus_to_pcmu() {
    let input = pcmu_tone(100, 20, 8000.0);
    let mut up = transcoder(pcmu(), opus());
    let mut down = transcoder(opus(), pcmu());
    let as_opus = run(&mut up, &input);
    assert_eq!(as_opus.len(), 100);
    // Opus really is Opus: a decoder at 8 kHz finds the tone in it too.
    assert_tone(&decode_opus_at_8k(&as_opus)[1600..], 8000.0);
    let back = run(&mut down, &as_opus);
    assert_eq!(back.len(), 100);
    let pcm: Vec<i16> =
        back.iter().flat_map(|p| ulaw_samples(Rtp::parse(p).unwrap().payload)).collect();
    // The first 200 ms hold the codecs' start-up.
    assert_tone(&pcm[1600..], 8000.0);
}

#[test]
fn browser_opus_tone_arrives_as_pcmu() {
    let input = opus_tone(100, 6000.0);
    let mut t = transcoder(opus(), pcmu());
    let out = run(&mut t, &input);
    assert_eq!(out.len(), 100);
    for p in &out {
        assert_eq!(Rtp::parse(p).unwrap().payload.len(), 160);
    }
    let pcm: Vec<i16> =
        out.iter().flat_map(|p| ulaw_samples(Rtp::parse(p).unwrap().payload)).collect();
    assert_tone(&pcm[1600..], 6000.0);
}

#[test]
fn output_headers_are_our_own_stream() {
    let mut t = transcoder(pcmu(), opus());
    let out = run(&mut t, &pcmu_tone(10, 20, 3000.0));
    assert_eq!(out.len(), 10);
    let (m0, pt0, seq0, ts0, ssrc0) = header(&out[0]);
    assert!(m0, "the first packet starts a talkspurt");
    assert_eq!((pt0, ssrc0), (111, 0xC0FFEE));
    for (i, p) in out.iter().enumerate() {
        let (m, pt, seq, ts, ssrc) = header(p);
        assert_eq!(m, i == 0);
        assert_eq!((pt, ssrc), (111, 0xC0FFEE));
        assert_eq!(seq, seq0.wrapping_add(i as u16));
        assert_eq!(ts, ts0.wrapping_add(960 * i as u32));
    }
    // The other way: +160 per packet, PT 0.
    let mut t = transcoder(opus(), pcmu());
    let out = run(&mut t, &opus_tone(5, 3000.0));
    let (_, _, seq0, ts0, _) = header(&out[0]);
    for (i, p) in out.iter().enumerate() {
        let (m, pt, seq, ts, _) = header(p);
        assert_eq!((m, pt), (i == 0, 0));
        assert_eq!(seq, seq0.wrapping_add(i as u16));
        assert_eq!(ts, ts0.wrapping_add(160 * i as u32));
    }
    // Two directions from different seeds start at different points.
    let other = Transcoder::new(&spec(pcmu(), opus()), OpusSettings::default(), 1, 8).unwrap();
    assert_ne!((other.seq, other.next_out_ts), (seq0, ts0));
}

#[test]
fn thirty_ms_g711_becomes_twenty_ms_opus() {
    let mut t = transcoder(pcmu(), opus());
    let input = pcmu_tone(6, 30, 5000.0);
    let mut out = Emitted::new();
    let mut counts = Vec::new();
    let mut all = Vec::new();
    for p in &input {
        out.clear();
        t.handle_rtp(p, &mut out);
        counts.push(out.len());
        all.extend(out.iter().map(<[u8]>::to_vec));
    }
    // 180 ms in: 240, 480 (2 frames), 720 (1 more: 80 + 240 = 320 -> 2)...
    assert_eq!(counts, [1, 2, 1, 2, 1, 2]);
    let (_, _, seq0, ts0, _) = header(&all[0]);
    for (i, p) in all.iter().enumerate() {
        let (_, _, seq, ts, _) = header(p);
        assert_eq!(seq, seq0.wrapping_add(i as u16));
        assert_eq!(ts, ts0.wrapping_add(960 * i as u32));
    }
    let pcm = decode_opus_at_8k(&all);
    assert_tone(&pcm[800..], 5000.0);
}

#[test]
fn a_lost_opus_packet_is_concealed() {
    let mut input = opus_tone(50, 6000.0);
    input.remove(20);
    input.remove(30);
    let mut t = transcoder(opus(), pcmu());
    let out = run(&mut t, &input);
    // One 20 ms packet out for every 20 ms of input, the lost ones included.
    assert_eq!(out.len(), 50);
    let (_, _, seq0, ts0, _) = header(&out[0]);
    for (i, p) in out.iter().enumerate() {
        let (m, _, seq, ts, _) = header(p);
        assert!(!m || i == 0, "no new talkspurt at a loss");
        assert_eq!(seq, seq0.wrapping_add(i as u16));
        assert_eq!(ts, ts0.wrapping_add(160 * i as u32));
    }
    // The concealed frames (with FEC from the next packet) still carry the tone.
    let concealed = ulaw_samples(Rtp::parse(&out[20]).unwrap().payload);
    assert!(goertzel(&concealed, 1000.0) > 10.0 * goertzel(&concealed, 2000.0));
    assert!(rms(&concealed) > 1000.0, "concealment is not silence: {}", rms(&concealed));
    // Both losses were rebuilt from the in-band FEC of the packet after them, and the packets
    // that carried FEC are counted.
    let with_fec = input.iter().filter(|p| opus_has_lbrr(Rtp::parse(p).unwrap().payload)).count();
    assert!(with_fec >= 20, "the browser-like encoder adds FEC: {with_fec}");
    assert_eq!(t.input_fec(), (with_fec as u64, 2));
}

#[test]
fn without_fec_in_the_stream_a_loss_is_concealed_not_recovered() {
    let mut input = opus_tone(30, 6000.0);
    // The same stream from an encoder told of no loss carries no FEC.
    let mut enc =
        opusic_c::Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip).unwrap();
    enc.set_inband_fec(opusic_c::InbandFec::Mode1).unwrap();
    for (i, p) in input.iter_mut().enumerate() {
        let pcm: Vec<u16> =
            sine(1000.0, 6000.0, 48000, i * 960, 960).iter().map(|&s| s as u16).collect();
        let mut buf = [0u8; 400];
        let len = enc.encode_to_slice(&pcm, &mut buf).unwrap();
        p.truncate(12);
        p.extend_from_slice(&buf[..len]);
    }
    input.remove(10);
    let mut t = transcoder(opus(), pcmu());
    assert_eq!(run(&mut t, &input).len(), 30);
    assert_eq!(t.input_fec(), (0, 0));
}

#[test]
fn a_lost_g711_packet_is_concealed() {
    let mut input = pcmu_tone(30, 20, 6000.0);
    input.remove(10);
    let mut t = transcoder(pcmu(), opus());
    let out = run(&mut t, &input);
    assert_eq!(out.len(), 30);
    let (_, _, seq0, ts0, _) = header(&out[0]);
    for (i, p) in out.iter().enumerate() {
        let (_, _, seq, ts, _) = header(p);
        assert_eq!(seq, seq0.wrapping_add(i as u16));
        assert_eq!(ts, ts0.wrapping_add(960 * i as u32));
    }
}

#[test]
fn opus_dtx_pauses_the_output_without_concealment() {
    let mut input = opus_tone(20, 3000.0);
    // After packet 9 the sender goes quiet for 400 ms (DTX): sequence continuous, timestamp on.
    for (k, p) in input.iter_mut().enumerate().skip(10) {
        let ts = 90_000 + (k as u32) * 960 + 20 * 960;
        p[4..8].copy_from_slice(&ts.to_be_bytes());
    }
    let mut t = transcoder(opus(), pcmu());
    let out = run(&mut t, &input);
    assert_eq!(out.len(), 20, "nothing invented for the pause");
    let (_, _, _, ts9, _) = header(&out[9]);
    let (m10, _, _, ts10, _) = header(&out[10]);
    assert!(m10, "talkspurt after DTX");
    assert_eq!(ts10.wrapping_sub(ts9), 160 + 20 * 160, "the pause keeps its length");
}

#[test]
fn comfort_noise_is_not_encoded() {
    let mut input = pcmu_tone(10, 20, 3000.0);
    // Packets 5 and 6 are CN (RFC 3389: a level byte).
    for k in [5usize, 6] {
        let ts = 5000 + 160 * k as u32;
        input[k] = rtp(13, 100 + k as u16, ts, 0x1234, false, &[40]);
    }
    let mut t = transcoder(pcmu(), opus());
    let mut out = Emitted::new();
    let mut dispositions = Vec::new();
    let mut all = Vec::new();
    for p in &input {
        out.clear();
        dispositions.push(t.handle_rtp(p, &mut out));
        all.extend(out.iter().map(<[u8]>::to_vec));
    }
    assert_eq!(dispositions[5], Disposition::ComfortNoise);
    assert_eq!(all.len(), 8);
    let (m, _, _, ts, _) = header(&all[5]);
    let (_, _, _, ts4, _) = header(&all[4]);
    assert!(m);
    assert_eq!(ts.wrapping_sub(ts4), 3 * 960);
}

#[test]
fn dtmf_is_rescaled_between_clocks() {
    let te8 = codec("telephone-event", 101, 8000, 1);
    let te48 = codec("telephone-event", 126, 48000, 1);
    let s = Transcode {
        from: pcmu(),
        to: opus(),
        dtmf_from: Some(te8.clone()),
        dtmf_to: Some(te48.clone()),
        fec_to: false,
    };
    let mut t = Transcoder::new(&s, OpusSettings::default(), 5, 1).unwrap();
    let mut input = pcmu_tone(5, 20, 3000.0);
    // Event '5' starting at the 6th frame's timestamp: 3 updates, then 3 end packets.
    let start = 5000 + 5 * 160;
    for (k, dur) in [160u16, 320, 480, 640, 640, 640].into_iter().enumerate() {
        let end = if k >= 3 { 0x80 } else { 0 };
        let body = [5, end | 10, (dur >> 8) as u8, dur as u8];
        input.push(rtp(101, 105 + k as u16, start, 0x1234, k == 0, &body));
    }
    let out = run(&mut t, &input);
    assert_eq!(out.len(), 11);
    let (_, _, seq4, ts4, _) = header(&out[4]);
    for (k, p) in out[5..].iter().enumerate() {
        let r = Rtp::parse(p).unwrap();
        assert_eq!(r.payload_type, 126);
        assert_eq!(r.marker, k == 0);
        assert_eq!(r.seq, seq4.wrapping_add(1 + k as u16));
        // The event starts where the next audio frame would have.
        assert_eq!(r.timestamp, ts4.wrapping_add(960));
        let dur = u16::from_be_bytes([r.payload[2], r.payload[3]]);
        assert_eq!(dur, [960, 1920, 2880, 3840, 3840, 3840][k]);
        assert_eq!(r.payload[0], 5);
        assert_eq!(r.payload[1] & 0x80 != 0, k >= 3);
    }

    // And back: 48000 -> 8000.
    let back = Transcode {
        from: opus(),
        to: pcmu(),
        dtmf_from: Some(te48),
        dtmf_to: Some(te8),
        fec_to: false,
    };
    let mut t = Transcoder::new(&back, OpusSettings::default(), 6, 2).unwrap();
    let mut input = opus_tone(3, 3000.0);
    input.push(rtp(126, 10, 90_000 + 3 * 960, 0xBEEF, true, &[11, 0x8a, 0x0f, 0x00]));
    let out = run(&mut t, &input);
    let (_, _, _, ts2, _) = header(&out[2]);
    let r = Rtp::parse(&out[3]).unwrap();
    assert_eq!((r.payload_type, r.marker, r.timestamp), (101, true, ts2.wrapping_add(160)));
    assert_eq!(r.payload, [11, 0x8a, 0x02, 0x80]);

    // Events toward a side that takes none are dropped, not turned into audio.
    let mut t = transcoder(opus(), pcmu());
    let mut out = Emitted::new();
    let ev = rtp(126, 1, 0, 1, true, &[1, 0, 0, 160]);
    assert_eq!(t.handle_rtp(&ev, &mut out), Disposition::Dropped(DropCause::UnknownPayloadType));
}

#[test]
fn late_duplicate_and_foreign_packets_are_dropped() {
    let input = pcmu_tone(5, 20, 3000.0);
    let mut t = transcoder(pcmu(), opus());
    let mut out = Emitted::new();
    for p in &input[..3] {
        assert_eq!(t.handle_rtp(p, &mut out), Disposition::Audio);
    }
    assert_eq!(t.handle_rtp(&input[2], &mut out), Disposition::Dropped(DropCause::Late));
    assert_eq!(t.handle_rtp(&input[1], &mut out), Disposition::Dropped(DropCause::Late));
    let red = rtp(63, 103, 5480, 0x1234, false, &[1, 2, 3]);
    assert_eq!(t.handle_rtp(&red, &mut out), Disposition::Dropped(DropCause::UnknownPayloadType));
    assert_eq!(t.handle_rtp(&[0x80, 0], &mut out), Disposition::Dropped(DropCause::Malformed));
    assert_eq!(t.handle_rtp(&input[3], &mut out), Disposition::Audio);
    assert_eq!(out.len(), 4);
}

#[test]
fn a_new_ssrc_continues_the_output_timeline() {
    let mut t = transcoder(pcmu(), opus());
    let mut input = pcmu_tone(5, 20, 3000.0);
    for (k, p) in pcmu_tone(5, 20, 3000.0).into_iter().enumerate() {
        // Another source: other SSRC, sequence and timestamps.
        let mut p = p;
        p[8..12].copy_from_slice(&0x9999u32.to_be_bytes());
        p[2..4].copy_from_slice(&(40_000 + k as u16).to_be_bytes());
        p[4..8].copy_from_slice(&(7_000_000 + 160 * k as u32).to_be_bytes());
        input.push(p);
    }
    let out = run(&mut t, &input);
    assert_eq!(out.len(), 10);
    let (_, _, seq4, ts4, _) = header(&out[4]);
    let (m5, _, seq5, ts5, ssrc5) = header(&out[5]);
    assert!(m5);
    assert_eq!((seq5, ts5, ssrc5), (seq4.wrapping_add(1), ts4.wrapping_add(960), 0xC0FFEE));
}

#[test]
fn unsupported_codecs_are_refused() {
    let g722 = codec("G722", 9, 8000, 1);
    assert!(matches!(
        Transcoder::new(&spec(g722, opus()), OpusSettings::default(), 1, 1),
        Err(TranscodeError::Unsupported(_))
    ));
    assert_eq!(Codec::from_rtpmap("OPUS", 48000), Some(Codec::Opus));
    assert_eq!(Codec::from_rtpmap("pcma", 8000), Some(Codec::Pcma));
    assert_eq!(Codec::from_rtpmap("PCMU", 16000), None);
}

#[test]
fn arbitrary_packets_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let te = codec("telephone-event", 101, 8000, 1);
    let specs = [
        spec(pcmu(), opus()),
        spec(opus(), pcmu()),
        Transcode {
            from: codec("PCMA", 8, 8000, 1),
            to: opus(),
            dtmf_from: Some(te.clone()),
            dtmf_to: Some(te),
            fec_to: true,
        },
    ];
    let mut out = Emitted::new();
    for s in &specs {
        let mut t = Transcoder::new(s, OpusSettings::default(), 1, 1).unwrap();
        for _ in 0..3000 {
            let len = (next() % 300) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = data.first_mut() {
                *b = 0x80 | (*b & 0x3f);
            }
            if let Some(b) = data.get_mut(1) {
                *b = [0u8, 8, 13, 101, 111][(next() % 5) as usize] | (*b & 0x80);
            }
            out.clear();
            let _ = t.handle_rtp(&data, &mut out);
            assert!(out.len() <= MAX_EMITTED);
        }
    }
}

#[test]
fn the_longest_packets_after_the_longest_loss_all_fit() {
    // 120 ms G.711 packets (960 samples, Opus's longest too), one lost: 120 ms concealed and
    // 120 ms decoded make 12 Opus frames from one input packet.
    let mut input = pcmu_tone(5, 120, 3000.0);
    input.remove(2);
    let mut t = transcoder(pcmu(), opus());
    let mut out = Emitted::new();
    let mut counts = Vec::new();
    for p in &input {
        out.clear();
        t.handle_rtp(p, &mut out);
        assert_eq!(out.overflow(), 0);
        counts.push(out.len());
    }
    assert_eq!(counts, [6, 6, 12, 6]);
}

/// Feeds 10 PCMU packets (a speech-band tone) and returns how many Opus outputs carry FEC.
fn lbrr_in_next(t: &mut Transcoder, first: usize) -> usize {
    let packets: Vec<Vec<u8>> = pcmu_tone(first + 10, 20, 8000.0).split_off(first);
    run(t, &packets).iter().filter(|p| opus_has_lbrr(Rtp::parse(p).unwrap().payload)).count()
}

#[test]
fn fec_follows_the_receivers_loss_reports() {
    let s = Transcode { fec_to: true, ..spec(pcmu(), opus()) };
    let mut t = Transcoder::new(&s, OpusSettings::default(), 0xC0FFEE, 7).unwrap();
    assert!(t.fec_receiver());
    // No report yet: no loss assumed, no FEC spent.
    assert_eq!(t.expected_loss(), 0);
    assert_eq!(lbrr_in_next(&mut t, 0), 0);
    assert_eq!(t.fec_frames(), 0);

    // 3 % loss (8/256) reported on our stream: FEC at the 1 % level.
    assert!(t.receiver_report(0xC0FFEE, 8));
    assert_eq!(t.expected_loss(), 1);
    assert!(lbrr_in_next(&mut t, 10) >= 8, "the frames after the report carry FEC");
    assert_eq!(t.fec_frames(), 10, "the 10 frames encoded at the 1 % level are counted");
    // Reports on other streams change nothing.
    assert!(!t.receiver_report(0x1234, 200));
    assert_eq!(t.expected_loss(), 1);

    // Up at once: 12 % -> 10; 30 % -> 20.
    assert!(t.receiver_report(0xC0FFEE, 31));
    assert_eq!(t.expected_loss(), 10);
    assert!(t.receiver_report(0xC0FFEE, 77));
    assert_eq!(t.expected_loss(), 20);
    // Down only a fifth below the level: 17 % stays at 20, 15 % goes to 10.
    assert!(!t.receiver_report(0xC0FFEE, 44));
    assert_eq!(t.expected_loss(), 20);
    assert!(t.receiver_report(0xC0FFEE, 39));
    assert_eq!(t.expected_loss(), 10);
    // Loss gone: back to 0, and the encoder stops spending on FEC.
    assert!(t.receiver_report(0xC0FFEE, 0));
    assert_eq!(t.expected_loss(), 0);
    // (A packet carries the FEC of the frame before it: the first one may still have some.)
    assert!(lbrr_in_next(&mut t, 20) <= 1);
    assert_eq!(t.fec_frames(), 10, "frames without FEC are not counted");
}

#[test]
fn no_fec_toward_a_receiver_that_does_not_decode_it() {
    // useinbandfec absent (0): reports are ignored and nothing carries FEC.
    let mut t = transcoder(pcmu(), opus());
    assert!(!t.fec_receiver());
    assert!(!t.receiver_report(0xC0FFEE, 128));
    assert_eq!(t.expected_loss(), 0);
    assert_eq!(lbrr_in_next(&mut t, 0), 0);
    assert_eq!(t.fec_frames(), 0);
    // Toward G.711 there is no encoder state to steer.
    let s = Transcode { fec_to: true, ..spec(opus(), pcmu()) };
    let mut t = Transcoder::new(&s, OpusSettings::default(), 0xC0FFEE, 7).unwrap();
    assert!(!t.receiver_report(0xC0FFEE, 128));
}

#[test]
fn opus_input_is_counted_by_coded_bandwidth() {
    let mut t = transcoder(opus(), pcmu());
    // A 48 kHz encoder at its default bitrate codes fullband (or super-wideband).
    run(&mut t, &opus_tone(10, 8000.0));
    let [nb, mb, wb, swb, fb] = t.input_bandwidths();
    assert_eq!((nb, mb, wb), (0, 0, 0));
    assert_eq!(swb + fb, 10);
    // Capped at narrowband, as a browser honouring maxplaybackrate=8000 sends.
    let mut enc =
        opusic_c::Encoder::new(Channels::Mono, SampleRate::Hz48000, Application::Voip).unwrap();
    enc.set_max_bandwidth(opusic_c::Bandwidth::Narrow).unwrap();
    let mut t = transcoder(opus(), pcmu());
    let packets: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            let pcm: Vec<u16> =
                sine(700.0, 8000.0, 48000, i * 960, 960).iter().map(|&s| s as u16).collect();
            let mut buf = [0u8; 400];
            let len = enc.encode_to_slice(&pcm, &mut buf).unwrap();
            rtp(111, 7 + i as u16, 90_000 + (i * 960) as u32, 0xBEEF, i == 0, &buf[..len])
        })
        .collect();
    run(&mut t, &packets);
    assert_eq!(t.input_bandwidths(), [10, 0, 0, 0, 0]);
    // G.711 input counts nothing.
    let mut t = transcoder(pcmu(), opus());
    run(&mut t, &pcmu_tone(5, 20, 8000.0));
    assert_eq!(t.input_bandwidths(), [0; 5]);
}

#[test]
fn injected_events_join_the_transcoded_stream() {
    use crate::dtmf::EventPacket;
    let mut t = transcoder(pcmu(), opus());
    let before = run(&mut t, &pcmu_tone(5, 20, 3000.0));
    let (_, _, seq_last, ts_last, ssrc) = header(&before[before.len() - 1]);
    let at = t.next_timestamp();
    assert_eq!(at, ts_last.wrapping_add(960), "the next frame's timestamp");
    let mut buf = [0u8; 64];
    let start =
        EventPacket { marker: true, payload_type: 101, timestamp: at, payload: [5, 10, 3, 192] };
    assert_eq!(t.inject_event(&start, &mut buf), Some(16));
    assert_eq!(header(&buf[..16]), (true, 101, seq_last.wrapping_add(1), at, ssrc));
    assert_eq!(&buf[12..16], &[5, 10, 3, 192]);
    assert_eq!(t.inject_event(&start, &mut [0u8; 10]), None, "too short: nothing written");
    let after = run(&mut t, &pcmu_tone(7, 20, 3000.0)[5..]);
    let (_, pt, seq, ts, ssrc_after) = header(&after[0]);
    assert_eq!((pt, ssrc_after), (111, ssrc));
    assert_eq!(seq, seq_last.wrapping_add(2), "frames continue after the injected packet");
    assert_eq!(ts, at);
}
