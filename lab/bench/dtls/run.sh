#!/usr/bin/env bash
# DTLS-SRTP handshake benchmark: the SBC's secure side (ICE-lite + DTLS server + SRTP key export)
# against an rtc-dtls client, in memory on one thread (no sockets: the cost of the handshake
# itself, which is what a media worker pays per WebRTC call). Three runs; the median is kept.
#
# usage: lab/bench/dtls/run.sh [handshakes]    (default 2000 per run)
# Environment: CORE (default 0): the core the benchmark is pinned to (taskset).
# Output: a summary on stdout and in lab/out/bench-dtls.txt; every run in lab/out/bench-dtls.log.
# Method and figures: docs/benchmarks.md, "DTLS-SRTP handshakes".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
n=${1:-2000}
core=${CORE:-0}
out="$root/lab/out"
mkdir -p "$out"
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
bin="$here/target/release/dtlsbench"
: >"$out/bench-dtls.log"
runs=()
for i in 1 2 3; do
    r=$(taskset -c "$core" "$bin" "$n")
    echo "# run $i" >>"$out/bench-dtls.log"
    echo "$r" >>"$out/bench-dtls.log"
    runs+=("$(echo "$r" | sed -n 's/^server_handshakes_per_core_s=//p') \
$(echo "$r" | sed -n 's/^server_cpu_us_per_handshake=//p') \
$(echo "$r" | sed -n 's/^both_ends_handshakes_per_core_s=//p')")
done
median=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p)
read -r hs us both <<<"$median"
{
    echo "DTLS-SRTP handshakes, server side (SBC), one core, $n per run, median of 3:"
    echo "  server: ${hs} handshakes/s/core (${us} us CPU each)   target >= 2000"
    echo "  both ends in one thread (server + rtc-dtls client): ${both} handshakes/s"
    printf '  runs (server/s, us, both/s):'; printf ' [%s]' "${runs[@]}"; echo
} | tee "$out/bench-dtls.txt"
