//! `sip::stream::next_frame` on a stream cut at fuzzed points (see `sbc_fuzz::sip_stream`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sbc_fuzz::sip_stream(data));
