#!/usr/bin/env bash
# Runs every fuzz target for SECONDS in all (split evenly between the targets) and exits non-zero
# if one crashes. Needs only stable Rust, a C++ compiler (libfuzzer-sys builds libFuzzer) and
# crates.io: no nightly, no cargo-fuzz. It builds the targets with the coverage instrumentation
# that `cargo fuzz build --sanitizer=none` uses (plain -C flags, stable) and runs the libFuzzer
# binaries directly. With nightly and cargo-fuzz, `cargo fuzz run sip_parse` adds AddressSanitizer.
#
#   fuzz/run.sh 60          # CI: one minute in all
#   fuzz/run.sh 600         # ten minutes
#
# Corpora are seeded from sbc-core/tests/data (the RFC 4475 and RFC 5118 messages) and, for the
# sdp target, sbc-media/tests/data/sdp, and for the transcode target a few crafted packets, into
# fuzz/corpus/<target>/ (not committed); crashes land
# in fuzz/artifacts/<target>/. To replay one:
#   fuzz/target/<host>/release/sip_parse fuzz/artifacts/sip_parse/crash-...
set -euo pipefail

seconds=${1:?usage: fuzz/run.sh SECONDS}
case $seconds in '' | *[!0-9]*) echo "SECONDS must be a number, got '$seconds'" >&2; exit 64 ;; esac
cd "$(dirname "$0")"

targets=(sip_parse sip_stream sdp secure transcode)
per_target=$(( seconds / ${#targets[@]} ))
(( per_target > 0 )) || per_target=1

host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Ccodegen-units=1"
# --target keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does.
# Not --locked: this lock file follows sbc-core, whose dependencies change in its own Cargo.toml.
cargo build --release --target "$host" --bins

data=../sbc-core/tests/data
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
done
for t in sip_parse sip_stream; do
    cp "$data"/rfc4475/*.dat "$data"/rfc5118/*.dat "corpus/$t/"
done
# The SDP target starts from real-world offers and answers (SIPp, baresip, Asterisk, FreeSWITCH,
# Chrome, holds, IPv6).
cp ../sbc-media/tests/data/sdp/*.sdp corpus/sdp/
# Streams of several messages for the framing target: a 0 byte (no cuts) and then the messages.
msgs=("$data"/rfc4475/{wsinv,esc01,mpart01,unreason,dblreq}.dat)
{ printf '\0'; cat "${msgs[@]}"; } > corpus/sip_stream/seed-pipeline
{ printf '\0\r\n\r\n'; cat "${msgs[0]}"; printf '\r\n'; cat "${msgs[1]}"; } > corpus/sip_stream/seed-pings

# The transcode target's datagrams each follow a one-byte length: a PCMU packet (PT 0), an Opus
# one (PT 111, TOC 0x08: SILK narrowband, 20 ms), an RFC 4733 event (PT 101), a receiver report.
{
    printf '\x1c\x80\x00\x00\x01\x00\x00\x00\xa0\x00\x00\x0b\x0b'; printf '\xff%.0s' $(seq 16)
    printf '\x1c\x80\x6f\x00\x02\x00\x00\x03\xc0\x00\x00\x0a\x0a\x08'; printf '\x5a%.0s' $(seq 15)
    printf '\x10\x80\x65\x00\x03\x00\x00\x03\xc0\x00\x00\x0a\x0a\x01\x8a\x03\x20'
    printf '\x20\x81\xc9\x00\x07\x00\x00\x0a\x0a\x00\x00\x05\xbc\x1a'; printf '\x00%.0s' $(seq 19)
} > corpus/transcode/seed-packets

status=0
for t in "${targets[@]}"; do
    echo "== $t: ${per_target}s"
    if ! "target/$host/release/$t" "corpus/$t" \
        -artifact_prefix="artifacts/$t/" \
        -max_total_time="$per_target" \
        -max_len=8192 \
        -timeout=10 \
        -print_final_stats=1; then
        echo "== $t found a crash: see fuzz/artifacts/$t/" >&2
        status=1
    fi
done
exit $status
