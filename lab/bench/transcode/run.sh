#!/usr/bin/env bash
# Transcoding benchmark: Opus <-> PCMU calls per core with zero loss, and the CPU per call, for
#   X = the SBC's relay (sbc_media::relay::Relay, one media worker: the code the sbc binary runs,
#       driven in-process by tcbench, without SIP), and
#   X = rtpengine 10.5 (userspace, table = -1, one media thread), set up through ng;
# beside the raw cost of libopus decode + encode per 20 ms frame on this machine.
#
# A call: the "browser" side sends Opus (48 kHz RTP clock, 20 ms, made by a 48 kHz libopus
# encoder from the signal: recorded speech by default) and the "trunk" side sends PCMU (20 ms) of
# the same signal, each call from its own place in it; X transcodes both ways. X is pinned to RELAY_CORE, the generator to GEN_CORE, both under
# SCHED_FIFO (chrt -f FIFO_PRIO) so that other tenants of this shared machine cannot starve them.
# Everything runs in a network namespace of its own, on loopback.
#
# usage: lab/bench/transcode/run.sh [--quick] [--only LIST] [--signal S]
#   --quick      5 s windows and one bisection
#   --only LIST  comma-separated subset of: codec,sbc,rtpengine (default: all)
#   --signal S   the audio both sides carry: recorded (default: SIPp's recorded speech),
#                speech (synthetic, always voiced: the dearest to encode) or tone (1 kHz: the
#                cheapest); see tcbench's docs
# Environment: RELAY_CORE (0), GEN_CORE (1), FIFO_PRIO (50), COMPLEXITY (5), SBC_START (100),
#   RTPE_START (20).
#
# Output: a table on stdout and in lab/out/bench-transcode.txt; each step's key=value output
# in lab/out/bench-transcode/.
#
# Method (docs/benchmarks.md, "Transcoding"): a step runs N calls for 2 s of warm-up and a
# window; it passes when every packet of the window came back (one 20 ms packet out per 20 ms
# packet in, exact count per stream), none misrouted, and the p99 latency through X is below
# 20 ms. The search doubles N from the start value until a step fails, then bisects (2 rounds,
# 1 with --quick). CPU per call = X's CPU time over the window (the worker thread for the SBC,
# the whole process for rtpengine) / window / N, at the highest passing N.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=$ROOT/lab/out
RAW=$OUT/bench-transcode
TABLE=$OUT/bench-transcode.txt

QUICK=0
ONLY="codec,sbc,rtpengine"
SIGNAL=recorded
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--only) ONLY=$2; shift ;;
	--signal) SIGNAL=$2; shift ;;
	-h | --help) sed -n '2,33p' "$0"; exit 0 ;;
	*) echo "unknown argument: $1" >&2; exit 64 ;;
	esac
	shift
done
if [ "$QUICK" = 1 ]; then WINDOW_S=5; BISECT=1; else WINDOW_S=10; BISECT=2; fi
WARM_S=2
RELAY_CORE=${RELAY_CORE:-0}
GEN_CORE=${GEN_CORE:-1}
FIFO_PRIO=${FIFO_PRIO:-50}
COMPLEXITY=${COMPLEXITY:-5}
SBC_START=${SBC_START:-100}
RTPE_START=${RTPE_START:-20}
NG_PORT=2224
if [ "$FIFO_PRIO" -gt 0 ]; then SCHED=(chrt -f "$FIFO_PRIO"); else SCHED=(); fi
TCBENCH=$HERE/tcbench/target/release/tcbench
has() { [[ ",$ONLY," == *",$1,"* ]]; }

# ---- dependencies ---------------------------------------------------------------------------
need=()
command -v cmake >/dev/null || need+=(cmake) # libopus is built from opusic-sys's bundled source
if has rtpengine; then command -v rtpengine >/dev/null || need+=(rtpengine-daemon); fi
command -v ip >/dev/null || need+=(iproute2)
command -v taskset >/dev/null || need+=(util-linux)
[ "$SIGNAL" != recorded ] || [ -f /usr/share/sip-tester/g711a.pcap ] || need+=(sip-tester)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing: ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
(cd "$HERE/tcbench" && cargo build --release --quiet)
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 cores (X and the generator pinned apart)" >&2; exit 1; fi
mkdir -p "$RAW"
rm -f "$RAW"/*

NS=sbctc-$$
RTPE_PID=
cleanup() {
	if [ -n "$RTPE_PID" ]; then kill "$RTPE_PID" 2>/dev/null || true; wait "$RTPE_PID" 2>/dev/null || true; fi
	ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
nsx() { ip netns exec "$NS" "$@"; }
kv() { awk -F= -v k="$2" '$1 == k { v = substr($0, length(k) + 2) } END { print (v == "") ? "-" : v }' "$1"; }

# ---- codec ----------------------------------------------------------------------------------
lines=()
if has codec; then
	for loss in 10 0; do
		f=$RAW/codec-loss$loss.txt
		"${SCHED[@]}" taskset -c "$RELAY_CORE" "$TCBENCH" codec --complexity "$COMPLEXITY" \
			--loss "$loss" --signal "$SIGNAL" --seconds 3 >"$f"
		lines+=("$(printf 'libopus %s, complexity %s, FEC %-3s decode %6.1f us + encode %6.1f us per 20 ms -> codec bound %s calls/core (SBC transcoder, both directions: %6.1f us -> %s; %s calls in turn: %6.1f us -> %s)' \
			"$(kv "$f" libopus | sed 's/libopus //')" "$(kv "$f" complexity)" \
			"$([ "$loss" = 0 ] && echo off || echo on)" \
			"$(awk -v v="$(kv "$f" decode_ns)" 'BEGIN { print v / 1000 }')" \
			"$(awk -v v="$(kv "$f" encode_ns)" 'BEGIN { print v / 1000 }')" \
			"$(kv "$f" codec_bound_calls_per_core)" \
			"$(awk -v v="$(kv "$f" transcoder_call_ns)" 'BEGIN { print v / 1000 }')" \
			"$(kv "$f" transcoder_bound_calls_per_core)" "$(kv "$f" interleaved_calls)" \
			"$(awk -v v="$(kv "$f" interleaved_call_ns)" 'BEGIN { print v / 1000 }')" \
			"$(kv "$f" interleaved_bound_calls_per_core)")")
		echo "${lines[-1]}"
	done
fi

# ---- steps ----------------------------------------------------------------------------------
# step X N -> STEP_PASS, STEP_FILE
STEP_NO=0
step() {
	local x=$1 n=$2 rc=0
	STEP_NO=$((STEP_NO + 1))
	STEP_FILE=$RAW/$(printf '%03d-%s-%s' "$STEP_NO" "$x" "$n").txt
	case "$x" in
	sbc)
		nsx "${SCHED[@]}" timeout 120 "$TCBENCH" relay --calls "$n" --warmup "$WARM_S" \
			--duration "$WINDOW_S" --relay-core "$RELAY_CORE" --gen-core "$GEN_CORE" \
			--complexity "$COMPLEXITY" --signal "$SIGNAL" >"$STEP_FILE" 2>&1 || rc=$?
		;;
	rtpengine)
		# Not through nsx (a function: $! would be a subshell): ip netns exec, chrt and taskset
		# each exec the next, so $! is rtpengine itself, whose CPU is measured.
		ip netns exec "$NS" "${SCHED[@]}" taskset -c "$RELAY_CORE" rtpengine \
			--config-file="$HERE/rtpengine.conf" >"$STEP_FILE.rtpengine.log" 2>&1 &
		RTPE_PID=$!
		local i
		for i in $(seq 50); do
			[ -n "$(nsx ss -Hlun "sport = :$NG_PORT")" ] && break
			sleep 0.1
		done
		nsx "${SCHED[@]}" taskset -c "$GEN_CORE" timeout 120 "$TCBENCH" rtpengine --calls "$n" \
			--warmup "$WARM_S" --duration "$WINDOW_S" --ng-port "$NG_PORT" --pid "$RTPE_PID" --signal "$SIGNAL" \
			>"$STEP_FILE" 2>"$STEP_FILE.err" || rc=$?
		kill "$RTPE_PID" 2>/dev/null || true
		wait "$RTPE_PID" 2>/dev/null || true
		RTPE_PID=
		;;
	esac
	STEP_PASS=$([ "$(kv "$STEP_FILE" pass)" = 1 ] && echo 1 || echo 0)
	printf '  %-9s %5s calls: %s  lost=%s p99=%sus X=%s cores, %s%% of a core per call\n' "$x" "$n" \
		"$([ "$STEP_PASS" = 1 ] && echo pass || echo FAIL)" "$(kv "$STEP_FILE" lost)" \
		"$(kv "$STEP_FILE" p99_us)" "$(kv "$STEP_FILE" x_core_share)" "$(kv "$STEP_FILE" cpu_per_call_pct)"
}

# search X START -> BEST_N, BEST_FILE
search() {
	local x=$1 n=$2 lo=0 hi=0 r
	BEST_N=0
	BEST_FILE=
	while :; do
		step "$x" "$n"
		if [ "$STEP_PASS" = 1 ]; then
			lo=$n BEST_N=$n BEST_FILE=$STEP_FILE
			n=$((n * 2))
		else
			hi=$n
			break
		fi
		[ "$n" -le 4000 ] || break
	done
	[ "$hi" -gt 0 ] || return 0
	for ((r = 0; r < BISECT; r++)); do
		n=$(((lo + hi) / 2))
		[ "$n" -gt "$lo" ] && [ "$n" -lt "$hi" ] || break
		step "$x" "$n"
		if [ "$STEP_PASS" = 1 ]; then lo=$n BEST_N=$n BEST_FILE=$STEP_FILE; else hi=$n; fi
	done
	[ "$BEST_N" -gt 0 ] || BEST_FILE=$STEP_FILE
}

for x in sbc rtpengine; do
	has "$x" || continue
	echo "==== $x"
	start=$SBC_START
	[ "$x" = rtpengine ] && start=$RTPE_START
	search "$x" "$start"
	if [ "$BEST_N" -gt 0 ]; then
		lines+=("$(printf '%-9s %5s calls/core with zero loss (p99 %s us); %s%% of a core per call (both directions) -> %s calls/core at full load' \
			"$x" "$BEST_N" "$(kv "$BEST_FILE" p99_us)" "$(kv "$BEST_FILE" cpu_per_call_pct)" \
			"$(awk -v p="$(kv "$BEST_FILE" cpu_per_call_pct)" 'BEGIN { if (p > 0) printf "%.0f", 100 / p; else print "-" }')")")
	else
		lines+=("$(printf '%-9s no passing step (first: %s calls); see %s' "$x" "$start" "$BEST_FILE")")
	fi
done

{
	echo "Transcoding benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
	echo "window ${WINDOW_S} s, signal ${SIGNAL}, Opus complexity ${COMPLEXITY}, X on core ${RELAY_CORE}, generator on core ${GEN_CORE}"
	printf '%s\n' "${lines[@]}"
} | tee "$TABLE"
