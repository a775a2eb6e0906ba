//! `sip::parse` on arbitrary bytes; what parses must round-trip (see `sbc_fuzz::sip_parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sbc_fuzz::sip_parse(data));
