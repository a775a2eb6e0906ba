//! G.711 (ITU-T Recommendation G.711, 1988): μ-law (PCMU) and A-law (PCMA) companding between
//! 16-bit linear PCM and 8-bit codes.
//!
//! Decoding is a 256-entry table per law; encoding is one table lookup on the linear sample's
//! top 14 (μ-law) or 13 (A-law) bits, the resolution G.711 itself works at. The tables are built
//! at compile time from the classic segment algorithm (the one of the Sun reference `g711.c`
//! that ITU-T G.191's tools reproduce), so the two directions cannot disagree.

/// μ-law code of a linear sample.
pub fn ulaw_encode(sample: i16) -> u8 {
    // Invariant: (sample >> 2) + 8192 lies in 0..16384, the table's length.
    ULAW_ENCODE[((sample >> 2) as i32 + 8192) as usize]
}

/// Linear sample of a μ-law code.
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_DECODE[usize::from(code)]
}

/// A-law code of a linear sample.
pub fn alaw_encode(sample: i16) -> u8 {
    // Invariant: (sample >> 3) + 4096 lies in 0..8192, the table's length.
    ALAW_ENCODE[((sample >> 3) as i32 + 4096) as usize]
}

/// Linear sample of an A-law code.
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_DECODE[usize::from(code)]
}

static ULAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_to_linear(i as u8);
        i += 1;
    }
    t
};

static ALAW_DECODE: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_to_linear(i as u8);
        i += 1;
    }
    t
};

static ULAW_ENCODE: [u8; 16384] = {
    let mut t = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        t[i] = linear14_to_ulaw(i as i32 - 8192);
        i += 1;
    }
    t
};

static ALAW_ENCODE: [u8; 8192] = {
    let mut t = [0u8; 8192];
    let mut i = 0;
    while i < 8192 {
        t[i] = linear13_to_alaw(i as i32 - 4096);
        i += 1;
    }
    t
};

/// μ-law bias (G.711 Table 2a: the segment end points are offset by 33 in 14-bit units).
const ULAW_BIAS: i32 = 0x84;

/// Segment of a biased magnitude: the first `ends[seg]` it does not exceed; 8 if above all.
const fn segment(value: i32, ends: &[i32; 8]) -> i32 {
    let mut seg = 0;
    while seg < 8 {
        if value <= ends[seg] {
            return seg as i32;
        }
        seg += 1;
    }
    8
}

/// A 14-bit sample (-8192..=8191) to μ-law.
const fn linear14_to_ulaw(sample: i32) -> u8 {
    const ENDS: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
    const CLIP: i32 = 8159;
    let (mut mag, mask) = if sample < 0 { (-sample, 0x7F) } else { (sample, 0xFF) };
    if mag > CLIP {
        mag = CLIP;
    }
    mag += ULAW_BIAS >> 2;
    let seg = segment(mag, &ENDS);
    let code = if seg >= 8 { 0x7F } else { (seg << 4) | ((mag >> (seg + 1)) & 0xF) };
    (code ^ mask) as u8
}

const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code as i32;
    let mut t = ((u & 0x0F) << 3) + ULAW_BIAS;
    t <<= (u & 0x70) >> 4;
    (if u & 0x80 != 0 { ULAW_BIAS - t } else { t - ULAW_BIAS }) as i16
}

/// A 13-bit sample (-4096..=4095) to A-law; even bits are inverted (the 0x55 mask).
const fn linear13_to_alaw(sample: i32) -> u8 {
    const ENDS: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let (mag, mask) = if sample >= 0 { (sample, 0xD5) } else { (-sample - 1, 0x55) };
    let seg = segment(mag, &ENDS);
    let code = if seg >= 8 {
        0x7F
    } else if seg < 2 {
        (seg << 4) | ((mag >> 1) & 0xF)
    } else {
        (seg << 4) | ((mag >> seg) & 0xF)
    };
    (code ^ mask) as u8
}

const fn alaw_to_linear(code: u8) -> i16 {
    let a = (code ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ulaw_values() {
        // Silence is 0xFF (positive zero); full scale is 0x80 / 0x00 (G.711 Table 2a).
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        // First segment: steps of 8 (in 16-bit units, 2 in 14-bit) around zero.
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_encode(1000), 0xCE);
        assert_eq!(ulaw_decode(0xCE), 988);
    }

    #[test]
    fn known_alaw_values() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_encode(1000), 0xFA);
        assert_eq!(alaw_decode(0xFA), 1008);
    }

    #[test]
    fn every_code_round_trips() {
        for code in 0..=255u8 {
            // μ-law has two zeros (0x7F and 0xFF); both decode to 0, which encodes as 0xFF.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(ulaw_encode(ulaw_decode(code)), expected, "μ-law {code:#04x}");
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
        }
    }

    #[test]
    fn quantization_error_is_within_half_a_step() {
        // Each law's error is bounded by half its local step: about 1/32 of the magnitude plus
        // the smallest step near zero.
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let m = i32::from(s).abs();
            let u = i32::from(ulaw_decode(ulaw_encode(s)));
            let a = i32::from(alaw_decode(alaw_encode(s)));
            assert!((u - i32::from(s)).abs() <= m / 32 + 132 / 2 + 4, "μ-law {s} -> {u}");
            assert!((a - i32::from(s)).abs() <= m / 32 + 16, "A-law {s} -> {a}");
            assert!(u.signum() * i32::from(s).signum() >= 0, "μ-law sign of {s}");
        }
    }
}
