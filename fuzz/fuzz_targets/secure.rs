//! The secure side of a relay leg (STUN, DTLS, SRTP demultiplexing and parsing) on arbitrary
//! datagrams (see `sbc_fuzz::secure`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sbc_fuzz::secure(data));
