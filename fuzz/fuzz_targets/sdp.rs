//! `Sdp::parse` on arbitrary bytes; what parses must round-trip and survive the media plane
//! (see `sbc_fuzz::sdp`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sbc_fuzz::sdp(data));
