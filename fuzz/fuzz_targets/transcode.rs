//! The transcoders and the RTCP reporter of a transcoded pair on arbitrary datagrams (see
//! `sbc_fuzz::transcode`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sbc_fuzz::transcode(data));
