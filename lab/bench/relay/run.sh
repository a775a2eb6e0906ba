#!/usr/bin/env bash
# Media relay benchmark: rtpload (caller and callee sockets) -> X -> rtpload, G.711 both ways
# (one 172-byte RTP packet per 20 ms per direction per call), for
#   X = nothing (rtpload to itself: the generator's own latency, subtracted to give "added"),
#       rtpengine 10.5, userspace only (table = -1), one worker thread, set up through ng,
#       the SBC (target/release/sbc, media.workers = 1), set up through SIP by rtpload's UAC/UAS.
# X is pinned to one core (RELAY_CORE) with taskset, rtpload to the other (GEN_CORE), both under
# SCHED_FIFO priority 50 (chrt; the same for every X) so that other tenants of this shared machine
# cannot delay them: nice does not help against them, as autogroup scheduling puts every session
# in its own group. For each X
# it searches the highest number of concurrent calls relayed with zero loss and p99 latency under
# one packet interval, and records per step the loss, p50/p99 latency and X's CPU per packet.
# Everything runs in a network namespace of its own, on loopback only.
#
# usage: lab/bench/relay/run.sh [--quick] [--only LIST] [--steps LIST]
#   --quick        5 s windows, one bisection (~4 minutes instead of ~8-10)
#   --only LIST    comma-separated subset of: rtpengine,sbc (default: both; "nothing" always runs)
#   --steps LIST   call counts of the coarse search (default 500,750,1000,1250,1500,2000,2500,3000)
# Environment: SBC_BIN (default target/release/sbc, built if missing), RELAY_CORE (0), GEN_CORE (1),
#   FIFO_PRIO (50; 0 = normal scheduling), NOISE_MAX (0.15): a relay step during which other
#   processes used more cores than this is repeated, at most NOISE_RETRIES (1; 0 with --quick)
#   times; the quietest attempt is kept, flagged with * if it was still noisy.
#
# Output: a table on stdout and in lab/out/bench-relay.txt; every step in lab/out/bench-relay.log;
# rtpload's key=value results and the logs of X in lab/out/bench-relay/.
#
# Method (see docs/benchmarks.md, "Media relay"):
# - A step = fresh X, then one rtpload run: set up N calls (ng offer/answer, or SIP INVITE/200/ACK
#   through the SBC), 2 s of warm-up RTP, a measurement window (10 s; 5 s with --quick and for
#   nothing in between), 0.5 s to drain, teardown (ng delete, or BYE). Fresh X per step, so no
#   step inherits a failed one's state.
# - The step passes when, over the window: no packet lost (every sequence of every stream, exact),
#   none misrouted, p99 latency below 20 ms (beyond one packet interval X is not keeping up and
#   only its socket buffers hide the loss in a short window), rtpload's own sockets dropped
#   nothing and it kept its schedule (p99 send lag < 2 ms; else the step says GEN, not X).
# - Search: the coarse steps in order until one fails, then bisections between the last pass and
#   the first failure (2, or 1 with --quick), rounded to 25 calls.
# - Latency: kernel receive timestamp (SO_TIMESTAMPNS, i.e. when X's packet reached rtpload's
#   socket) minus the send time written in the packet. "Added" = X's p50/p99 minus those of the
#   step with nothing in between at the same N.
# - CPU: utime + stime of X's whole process (all threads) from /proc/PID/stat over the window,
#   per packet that came out of X. Loopback delivery runs in the sender's context, so X's figure
#   includes handing its packets to rtpload's sockets, and rtpload's includes handing them to X.
# - SBC: rtpload refuses to report SBC figures unless the SDP each side got points at ports that
#   are not rtpload's own (media anchored). With an SBC that passes SDP through, one harness check
#   step runs anyway (rtpload then talks to itself through the SBC's signalling only) and the SBC
#   search is skipped.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=$ROOT/lab/out
RAW=$OUT/bench-relay
TABLE=$OUT/bench-relay.txt
LOG=$OUT/bench-relay.log

QUICK=0
ONLY="rtpengine,sbc"
STEPS="500,750,1000,1250,1500,2000,2500,3000"
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--only) ONLY=$2; shift ;;
	--steps) STEPS=$2; shift ;;
	-h | --help) sed -n '2,20p' "$0"; exit 0 ;;
	*) echo "unknown argument: $1" >&2; exit 64 ;;
	esac
	shift
done

# ---- parameters -----------------------------------------------------------------------------
WARM_S=2
if [ "$QUICK" = 1 ]; then WINDOW_S=5; BISECT=1; else WINDOW_S=10; BISECT=2; fi
BASE_WINDOW_S=5         # the generator alone: stable, a shorter window is enough
MAX_P99_US=20000        # one packet interval
MAX_LAG_P99_US=2000     # rtpload's own schedule
RELAY_CORE=${RELAY_CORE:-0}
GEN_CORE=${GEN_CORE:-1}
SBC_BIN=${SBC_BIN:-$ROOT/target/release/sbc}
RTPLOAD_DIR=$HERE/rtpload
RTPLOAD=$RTPLOAD_DIR/target/release/rtpload
NG_PORT=2223
SBC_PORT=5060
UAC_ADDR=127.0.0.1:5061
UAS_ADDR=127.0.0.1:5080
NOISE_MAX=${NOISE_MAX:-0.15}
NOISE_RETRIES=${NOISE_RETRIES:-$((1 - QUICK))}
NOISE_WAIT_S=5
GEN_RETRIES=2           # repeats of a step in which only rtpload failed
FIFO_PRIO=${FIFO_PRIO:-50}
# How X and rtpload are started: real-time priority (RT throttling still leaves 5 % of each core to
# everything else), then pinned.
if [ "$FIFO_PRIO" -gt 0 ]; then SCHED=(chrt -f "$FIFO_PRIO"); else SCHED=(); fi
X_RUN=("${SCHED[@]}" taskset -c "$RELAY_CORE")
GEN_RUN=("${SCHED[@]}" taskset -c "$GEN_CORE")
STEP_LIMIT_S=120        # hard limit of one rtpload run

# ---- dependencies ---------------------------------------------------------------------------
need_pkgs=()
command -v rtpengine >/dev/null || need_pkgs+=(rtpengine-daemon rtpengine-utils)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v ss >/dev/null || need_pkgs+=(iproute2)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	echo "installing: ${need_pkgs[*]}"
	apt-get update -qq
	# policy-rc.d may forbid starting the packaged service; we never use it (own config below).
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
(cd "$RTPLOAD_DIR" && cargo build --release --quiet)
case ",$ONLY," in
*,sbc,*) [ -x "$SBC_BIN" ] || (cd "$ROOT" && cargo build --release -p sbc-core) ;;
esac
if [ "$(nproc)" -lt 2 ]; then echo "needs 2 cores (relay and generator pinned apart)" >&2; exit 1; fi

mkdir -p "$RAW"
rm -f "$RAW"/*
: >"$LOG"

# ---- network namespace and cleanup ----------------------------------------------------------
NS=sbcrelay-$$
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
nsx() { ip netns exec "$NS" "$@"; }
# Starts a command in the namespace in the background; BG_PID is its pid (`ip netns exec` and
# `taskset` exec the command, so this is the pid of X itself, which is what we measure and signal).
nsx_bg() {
	ip netns exec "$NS" "$@" &
	BG_PID=$!
	PIDS+=("$BG_PID")
}
log() { echo "$*" | tee -a "$LOG"; }

wait_udp() { # port, pid: until something listens on UDP port $1 (10 s), while $2 lives
	local i
	for i in $(seq 100); do
		if [ -n "$(nsx ss -Hlun "sport = :$1")" ]; then return 0; fi
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

stop_pid() {
	local p=$1 i
	kill "$p" 2>/dev/null || true
	for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	local keep=() q
	for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
	PIDS=("${keep[@]}")
}

# ---- X --------------------------------------------------------------------------------------
SBC_CFG=$HERE/sbc.yaml
X_PID=
start_x() { # $1 = X, $2 = tag
	X_PID=
	case "$1" in
	nothing) return 0 ;;
	rtpengine)
		nsx_bg "${X_RUN[@]}" rtpengine --config-file="$HERE/rtpengine.conf" \
			>"$RAW/$2.rtpengine.log" 2>&1
		X_PID=$BG_PID
		wait_udp "$NG_PORT" "$X_PID" || { log "rtpengine did not start; see $RAW/$2.rtpengine.log"; exit 1; }
		;;
	sbc)
		RUST_LOG=warn nsx_bg "${X_RUN[@]}" "$SBC_BIN" --config "$SBC_CFG" \
			>"$RAW/$2.sbc.log" 2>&1
		X_PID=$BG_PID
		wait_udp "$SBC_PORT" "$X_PID" || { log "sbc did not start; see $RAW/$2.sbc.log"; exit 1; }
		;;
	esac
}

# ---- one step -------------------------------------------------------------------------------
# run_step X N -> STEP_PASS (0/1), STEP_WHY, STEP_FILE (rtpload's key=value output), STEP_OTHER
STEP_NO=0
run_step() {
	local try best="" bscore score gen_tries=0
	for ((try = 0; ; try++)); do
		run_step_once "$@"
		# Keep the best attempt: one where rtpload kept up, and among those the quietest.
		score=$(awk -v o="$STEP_OTHER" -v g="$(gen_only_fail && echo 1 || echo 0)" 'BEGIN { printf "%.3f", g * 100 + o }')
		if [ -z "$best" ] || awk -v a="$score" -v b="$bscore" 'BEGIN { exit !(a < b) }'; then
			best="$STEP_OTHER $STEP_PASS $STEP_FILE $STEP_WHY"
			bscore=$score
		fi
		# rtpload fell behind (its schedule, its own sockets) while X was fine: the step says
		# nothing about X. Repeat it, at most GEN_RETRIES times.
		if gen_only_fail && [ "$gen_tries" -lt "$GEN_RETRIES" ] && [ "$1" != nothing ]; then
			gen_tries=$((gen_tries + 1))
			log "  (rtpload fell behind, not X; repeating the step in ${NOISE_WAIT_S} s)"
			sleep "$NOISE_WAIT_S"
			continue
		fi
		# Another tenant used more than NOISE_MAX cores during the window: the verdict says little
		# about X. Repeat a bounded number of times; flag the result if it stays noisy.
		if awk -v o="$STEP_OTHER" -v m="$NOISE_MAX" 'BEGIN { exit !(o <= m) }'; then break; fi
		# The generator alone is not repeated: under SCHED_FIFO its figures barely move with noise
		# (a few us), and repeats would cost a fifth of the run.
		if [ "$try" -ge $((NOISE_RETRIES + gen_tries)) ] || [ "$1" = nothing ]; then
			NOISY[$1,$2]=1
			NOISY_ANY=1
			break
		fi
		log "  (noisy: others used $STEP_OTHER cores; repeating the step in ${NOISE_WAIT_S} s)"
		sleep "$NOISE_WAIT_S"
	done
	read -r STEP_OTHER STEP_PASS STEP_FILE STEP_WHY <<<"$best"
	[ "$try" = 0 ] || log "  (kept: others $STEP_OTHER cores, $([ "$STEP_PASS" = 1 ] && echo pass || echo "FAIL($STEP_WHY )"))"
}
# True when the step failed only because of rtpload (GEN), not because of X.
gen_only_fail() {
	[ "$STEP_PASS" = 0 ] && [[ $STEP_WHY == *GEN* ]] && [[ $STEP_WHY != *lost=* ]] &&
		[[ $STEP_WHY != *p99\>* ]] && [[ $STEP_WHY != *misrouted* ]] && [[ $STEP_WHY != *rtpload-rc* ]] &&
		[[ $STEP_WHY != *not-anchored* ]]
}
kv() { awk -F= -v k="$2" '$1 == k { v = substr($0, length(k) + 2) } END { print (v == "") ? "-" : v }' "$1"; }
run_step_once() {
	local x=$1 n=$2 extra=()
	STEP_NO=$((STEP_NO + 1))
	local tag
	tag=$(printf '%03d-%s-%s' "$STEP_NO" "$x" "$n")
	STEP_FILE=$RAW/$tag.txt
	start_x "$x" "$tag"
	case "$x" in
	nothing) extra=(--direct) ;;
	rtpengine) extra=(--ng "127.0.0.1:$NG_PORT" --watch-pid "$X_PID") ;;
	sbc) extra=(--sip "127.0.0.1:$SBC_PORT" --uac "$UAC_ADDR" --uas "$UAS_ADDR" --watch-pid "$X_PID")
		[ "${SBC_HARNESS_CHECK:-0}" = 1 ] || extra+=(--require-anchored) ;;
	esac
	local rc=0
	local window=$WINDOW_S
	[ "$x" != nothing ] || window=$BASE_WINDOW_S
	nsx timeout "$STEP_LIMIT_S" "${GEN_RUN[@]}" "$RTPLOAD" --calls "$n" \
		--warmup "$WARM_S" --duration "$window" "${extra[@]}" \
		>"$STEP_FILE" 2>"$RAW/$tag.rtpload.err" || rc=$?
	[ -z "$X_PID" ] || stop_pid "$X_PID"
	STEP_OTHER=$(kv "$STEP_FILE" others_cores)
	[ "$STEP_OTHER" = - ] && STEP_OTHER=0
	STEP_PASS=1
	STEP_WHY=""
	if [ "$rc" = 3 ]; then
		STEP_PASS=0; STEP_WHY="not-anchored"
	elif [ "$rc" != 0 ]; then
		STEP_PASS=0; STEP_WHY="rtpload-rc=$rc($(tail -1 "$RAW/$tag.rtpload.err" | cut -c1-120))"
	else
		local lost mis p99 gdrop lag serr
		lost=$(kv "$STEP_FILE" lost); mis=$(kv "$STEP_FILE" misrouted); p99=$(kv "$STEP_FILE" p99_us)
		gdrop=$(kv "$STEP_FILE" drops_generator); lag=$(kv "$STEP_FILE" lag_p99_us)
		serr=$(kv "$STEP_FILE" send_errors)
		[ "$lost" = 0 ] || { STEP_PASS=0; STEP_WHY+=" lost=$lost"; }
		[ "$mis" = 0 ] || { STEP_PASS=0; STEP_WHY+=" misrouted=$mis"; }
		awk -v v="$p99" -v m="$MAX_P99_US" 'BEGIN { exit !(v < m) }' || { STEP_PASS=0; STEP_WHY+=" p99>${MAX_P99_US}us"; }
		[ "$gdrop" = 0 ] && [ "$serr" = 0 ] || { STEP_PASS=0; STEP_WHY+=" GEN(drops=$gdrop,send_errors=$serr)"; }
		awk -v v="$lag" -v m="$MAX_LAG_P99_US" 'BEGIN { exit !(v < m) }' || { STEP_PASS=0; STEP_WHY+=" GEN(lag_p99=${lag}us)"; }
	fi
	log "$(printf '%-9s calls %5d lost %7s p50 %8s us p99 %9s us max %9s us  X %6s us/pkt %5s cores %7s KiB RSS  gen %5s cores  others %5s  %s' \
		"$x" "$n" "$(kv "$STEP_FILE" lost)" "$(kv "$STEP_FILE" p50_us)" "$(kv "$STEP_FILE" p99_us)" \
		"$(kv "$STEP_FILE" max_us)" "$(kv "$STEP_FILE" relay_us_per_pkt)" "$(kv "$STEP_FILE" relay_cores)" \
		"$(kv "$STEP_FILE" relay_rss_kib)" "$(kv "$STEP_FILE" gen_cores)" "$STEP_OTHER" \
		"$([ "$STEP_PASS" = 1 ] && echo pass || echo "FAIL($STEP_WHY )")")"
	sleep 0.5
}

# ---- per-X results --------------------------------------------------------------------------
declare -A RES NOISY MAXC GENLIM
NOISY_ANY=0
SBC_NOTE=""
# record X N: keeps the figures of the step just run under X,N
record() {
	local f
	for f in lost p50_us p99_us max_us relay_us_per_pkt relay_cores relay_top_thread_cores gen_cores; do
		RES[$1,$2,$f]=$(kv "$STEP_FILE" "$f")
	done
	RES[$1,$2,pass]=$STEP_PASS
	RES[$1,$2,verdict]=$([ "$STEP_PASS" = 1 ] && echo pass || { gen_only_fail && echo GEN || echo FAIL; })
}
# The generator alone at N calls (once per N): the baseline of "added" latency.
baseline() {
	[ -n "${RES[nothing,$1,pass]:-}" ] && return 0
	run_step nothing "$1"
	record nothing "$1"
}
mid() { awk -v a="$1" -v b="$2" 'BEGIN { m = (a + b) / 2; printf "%d", int(m / 25 + 0.5) * 25 }'; }

search() { # $1 = X
	local x=$1 lo=0 hi=0 n i
	IFS=, read -r -a coarse <<<"$STEPS"
	for n in "${coarse[@]}"; do
		baseline "$n"
		run_step "$x" "$n"
		if [ "$STEP_WHY" = not-anchored ]; then
			# The SBC passes SDP through: no SBC figures. Run the step once more without the
			# check, as a harness check (rtpload to itself through the SBC's signalling only).
			SBC_NOTE="SBC not measured: the SDP it relays points at rtpload's own sockets (media not anchored)"
			log "# $SBC_NOTE; harness check through its signalling only:"
			SBC_HARNESS_CHECK=1 run_step "$x" "$n"
			log "# (harness check above: RTP went straight between rtpload's sockets; not SBC figures)"
			return
		fi
		record "$x" "$n"
		if gen_only_fail; then
			# rtpload could not offer this load: X's limit is above what we can measure.
			GENLIM[$x]=$n
			break
		fi
		if [ "$STEP_PASS" = 1 ]; then lo=$n; else hi=$n; break; fi
	done
	for ((i = 0; i < BISECT && hi > 0; i++)); do
		n=$(mid "$lo" "$hi")
		[ "$n" -gt "$lo" ] && [ "$n" -lt "$hi" ] || break
		baseline "$n"
		run_step "$x" "$n"
		record "$x" "$n"
		if gen_only_fail; then GENLIM[$x]=$n; break; fi
		if [ "$STEP_PASS" = 1 ]; then lo=$n; else hi=$n; fi
	done
	MAXC[$x]=$lo
	[ "$hi" -gt 0 ] && [ -z "${GENLIM[$x]:-}" ] || MAXC[$x]=">=$lo"
}

# ---- the run --------------------------------------------------------------------------------
START=$(date +%s)
{
	echo "# Media relay benchmark, $(date -u +%Y-%m-%dT%H:%MZ), mode: $([ "$QUICK" = 1 ] && echo quick || echo full), window ${WINDOW_S} s after ${WARM_S} s warm-up"
	echo "# machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r); X pinned to core $RELAY_CORE, rtpload to core $GEN_CORE, scheduling: ${SCHED[*]:-normal}"
	echo "# sbc $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo ?)$(cd "$ROOT" && git diff --quiet HEAD -- sbc-core sbc-media 2>/dev/null || echo '+dirty'), rtpengine $(rtpengine --version 2>&1 | awk '{print $2}') (table=-1, num-threads=1)"
	echo "# load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$LOG" >"$TABLE.head"

IFS=, read -r -a XS <<<"$ONLY"
for x in "${XS[@]}"; do
	case "$x" in
	rtpengine | sbc) search "$x" ;;
	*) echo "unknown X $x" >&2; exit 64 ;;
	esac
done

added() { # X N field(p50_us|p99_us) -> X minus nothing at N
	local v=${RES[$1,$2,$3]:--} b=${RES[nothing,$2,$3]:--}
	if [ "$v" = - ] || [ "$b" = - ]; then echo -; else awk -v v="$v" -v b="$b" 'BEGIN { printf "%.1f", v - b }'; fi
}
{
	cat "$TABLE.head"
	echo "# pass: zero loss and p99 < $((MAX_P99_US / 1000)) ms over the window; latency in us; added = X minus nothing at the same calls;"
	echo "# X cores: X's CPU (all threads) / window; busiest: its busiest thread; gen: rtpload's CPU;"
	echo "# GEN: rtpload fell behind its schedule (the step says nothing about X)"
	printf '%-10s %6s %8s %8s %9s %9s %10s %10s %9s %8s %8s %6s %s\n' X calls "pkt/s" lost p50 p99 "added p50" "added p99" "X us/pkt" "X cores" "busiest" "gen" verdict
	for x in nothing "${XS[@]}"; do
		for n in $(for k in "${!RES[@]}"; do IFS=, read -r a b c <<<"$k"; [ "$a" = "$x" ] && [ "$c" = pass ] && echo "$b"; done | sort -n); do
			printf '%-10s %6d %8d %8s %9s %9s %10s %10s %9s %8s %8s %6s %s\n' "$x" "$n" $((n * 100)) \
				"${RES[$x,$n,lost]}" "${RES[$x,$n,p50_us]}" "${RES[$x,$n,p99_us]}" \
				"$([ "$x" = nothing ] && echo - || added "$x" "$n" p50_us)" \
				"$([ "$x" = nothing ] && echo - || added "$x" "$n" p99_us)" \
				"$([ "$x" = nothing ] && echo - || echo "${RES[$x,$n,relay_us_per_pkt]}")" \
				"$([ "$x" = nothing ] && echo - || echo "${RES[$x,$n,relay_cores]}")" \
				"$([ "$x" = nothing ] && echo - || echo "${RES[$x,$n,relay_top_thread_cores]}")" \
				"${RES[$x,$n,gen_cores]}" \
				"${RES[$x,$n,verdict]}${NOISY[$x,$n]:+*}"
		done
	done
	echo "# max calls (zero loss, p99 < 20 ms), one relay core:"
	for x in "${XS[@]}"; do
		[ -n "${MAXC[$x]:-}" ] && echo "#   $x: ${MAXC[$x]} calls ($(( ${MAXC[$x]#>=} * 100 )) packets/s relayed)${GENLIM[$x]:+; rtpload fell behind at ${GENLIM[$x]} calls}"
	done
	if [ -n "${MAXC[sbc]:-}" ] && [ -n "${MAXC[rtpengine]:-}" ] && [ "${MAXC[rtpengine]#>=}" -gt 0 ]; then
		echo "#   ratio SBC / rtpengine: $(awk -v a="${MAXC[sbc]#>=}" -v b="${MAXC[rtpengine]#>=}" 'BEGIN { printf "%.2f", a / b }')"
	fi
	# A stricter reading of the same steps: p99 under 1 ms (not searched for; from the steps run).
	echo "# highest step run with zero loss and p99 < 1 ms:"
	for x in "${XS[@]}"; do
		local_best=0
		for k in "${!RES[@]}"; do
			IFS=, read -r a b c <<<"$k"
			[ "$a" = "$x" ] && [ "$c" = pass ] && [ "${RES[$k]}" = 1 ] || continue
			awk -v v="${RES[$x,$b,p99_us]}" 'BEGIN { exit !(v < 1000) }' || continue
			[ "$b" -le "$local_best" ] || local_best=$b
		done
		[ -z "${MAXC[$x]:-}" ] || echo "#   $x: $local_best calls"
	done
	[ -z "$SBC_NOTE" ] || echo "# $SBC_NOTE"
	[ "$NOISY_ANY" = 0 ] || echo "# * this step stayed noisy (other processes used > $NOISE_MAX cores) after $NOISE_RETRIES repeats"
	echo "# run time: $(($(date +%s) - START)) s"
} >"$TABLE"
rm -f "$TABLE.head"
echo
tee -a "$LOG" <"$TABLE"
