#!/usr/bin/env bash
# Profiles the SBC under a fixed SIPp load (the scenarios of run.sh), in a network namespace of its
# own on loopback: `perf stat` (software events and syscall counts) on one run, `perf record`
# (cpu-clock samples with DWARF call graphs) on a second, and the RSS of the SBC at the end of each.
#
# usage: lab/bench/cps/profile-sbc.sh [--shards N] [--rate CPS] [--seconds S] [--hold MS]
#   defaults: 1 shard, 8000 calls/s, 10 s of calls, zero-length calls (--hold 10000 for 10 s calls)
# Output: lab/out/profile-sbc/{stat.txt,perf.data,report-self.txt,report-children.txt,rss.txt}
# perf has no hardware counters in some VMs; cpu-clock sampling works everywhere.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=$ROOT/lab/out/profile-sbc
SHARDS=1 RATE=8000 SECONDS_=10 HOLD=0
while [ $# -gt 0 ]; do
	case "$1" in
	--shards) SHARDS=$2; shift ;;
	--rate) RATE=$2; shift ;;
	--seconds) SECONDS_=$2; shift ;;
	--hold) HOLD=$2; shift ;;
	*) echo "unknown argument: $1" >&2; exit 64 ;;
	esac
	shift
done
case "$SHARDS" in 1 | 2) ;; *) echo "--shards: 1 or 2" >&2; exit 64 ;; esac

need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v perf >/dev/null || need+=(linux-perf)
if [ ${#need[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
SBC_BIN=${SBC_BIN:-$ROOT/target/release/sbc}
[ -x "$SBC_BIN" ] || (cd "$ROOT" && cargo build --release -p sbc-core)

mkdir -p "$OUT"
rm -f "$OUT"/*
NS=sbcbench-$$
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up

N=$((RATE * SECONDS_))
HOLD_S=$((HOLD / 1000))
LIMIT=$((RATE * (HOLD_S + 3) + 1000))

# One load run with `perf ARGS... -p SBC` attached. $1 = label, rest = perf arguments.
load() {
	local label=$1
	shift
	RUST_LOG=warn ip netns exec "$NS" "$SBC_BIN" --config "$HERE/sbc-shards$SHARDS.yaml" \
		>"$OUT/$label.sbc.log" 2>&1 &
	local sbc=$!
	PIDS+=("$sbc")
	ip netns exec "$NS" sipp -sf "$HERE/uas.xml" -i 127.0.0.1 -p 5080 -nostdin -buff_size 4194304 \
		>/dev/null 2>&1 &
	local uas=$!
	PIDS+=("$uas")
	sleep 1
	perf "$@" -p "$sbc" &
	local pp=$!
	sleep 0.3
	ip netns exec "$NS" timeout $((SECONDS_ + HOLD_S + 30)) sipp -sf "$HERE/uac.xml" -i 127.0.0.1 \
		-p 5061 -nostdin -buff_size 4194304 -r "$RATE" -m "$N" -l "$LIMIT" -d "$HOLD" \
		-recv_timeout 8000 -trace_stat -stf "$OUT/$label.uac.csv" -fd 1 127.0.0.1:5060 \
		>/dev/null 2>&1 || echo "$label: sipp exit status $? (some calls failed)"
	echo "$label: $(grep -E 'VmRSS|VmHWM' /proc/$sbc/status | tr -s ' \n' ' ')" | tee -a "$OUT/rss.txt"
	kill -INT "$pp"
	wait "$pp" || true
	kill "$uas" "$sbc"
	wait "$uas" "$sbc" 2>/dev/null || true
	PIDS=()
}

echo "SBC, $SHARDS shard(s): $N calls at $RATE calls/s, hold $HOLD ms"
load stat stat -o "$OUT/stat.txt" -e task-clock,context-switches,cpu-migrations,page-faults,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex
load record record -q -o "$OUT/perf.data" -e cpu-clock -F 999 --call-graph dwarf,32768
perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null \
	| grep '%' >"$OUT/report-self.txt" || true
perf report -i "$OUT/perf.data" --children --sort sym --stdio -g none 2>/dev/null \
	| grep '%' | grep -E 'sbc_core|sendto|recvfrom|epoll_wait|page_fault' >"$OUT/report-children.txt" || true
echo
sed -n '/Performance counter stats/,$p' "$OUT/stat.txt"
echo "per call: divide by $N"
echo
echo "-- self time, top 25 ($OUT/report-self.txt)"
head -25 "$OUT/report-self.txt"
echo
echo "-- inclusive, SBC functions and syscalls, top 30 ($OUT/report-children.txt)"
head -30 "$OUT/report-children.txt"
