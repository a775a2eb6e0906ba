#!/usr/bin/env bash
# Calls-per-second benchmark: SIPp UAC -> X -> SIPp UAS, for
#   X = nothing (SIPp to SIPp: the ceiling of the load generator),
#       the SBC with 1 and 2 shards,
#       Kamailio 5.6 as a stateful proxy with record-routing and dialog tracking,
#       Kamailio 5.6 with topology hiding (topos, Redis storage),
# and two call shapes: zero-length calls and 10 s calls. For each pair it searches the highest
# call rate with < 0.1 % failed calls and measures the CPU time X spends per 1000 calls at a fixed
# rate. Everything runs in a network namespace of its own, on loopback only.
#
# usage: lab/bench/cps/run.sh [--quick] [--only LIST] [--shapes LIST]
#   --quick         coarser search, shorter steps (~3.5 minutes instead of ~12-15)
#   --only LIST     comma-separated subset of: sipp,sbc1,sbc2,kamailio,topos (default: all)
#   --shapes LIST   comma-separated subset of: 0s,10s (default: both)
# Environment: SBC_BIN (default target/release/sbc, built if missing), KAM_CHILDREN (default 4),
#   NOISE_MAX (default 0.15): a step during which other processes on the machine used more cores
#   than this is repeated, at most NOISE_RETRIES (default 3) times, then flagged with * in the table.
#
# Output: a table on stdout and in lab/out/bench-cps.txt; every step in lab/out/bench-cps.log; the
# raw SIPp statistics and the logs of X in lab/out/bench-cps/.
#
# Method (see docs/benchmarks.md):
# - A step = fresh X + fresh SIPp UAS, then one SIPp UAC run of a bounded number of calls
#   (`-m N`, N = rate x send time) under `timeout`, read from the UAC's `-trace_stat` CSV.
#   The step passes when
#     failed calls (N - SuccessfulCall) < 0.1 % of N,
#     retransmissions by the UAC < 0.1 % of N (X answered within T1 = 500 ms: without this an
#       overloaded X "passes" a short step by queueing and catching up seconds later),
#     SIPp really offered the rate (calls created / time to create them >= 95 % of the target),
#     and the UAC ended before its timeout.
#   The CSV is watched every 0.25 s; a step is stopped as soon as it cannot pass any more.
# - Zero-length calls: a step at FIX_RATE (also the CPU measurement), then doubling from 1000 cps
#   until a step fails, then geometric bisection between the last pass and the first failure.
# - 10 s calls: a step at FIX_RATE (CPU), then from the zero-length maximum down by x0.8 until a
#   step passes, then bisection. The send time is longer than the call, so the full concurrency
#   (rate x 10 s) is reached and held with INVITEs and BYEs flowing at the same time.
# - CPU of X: utime + stime of every X process (sbc; kamailio and all its children; redis-server)
#   from /proc/PID/stat, sampled just before and just after the UAC run, per call made.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
OUT=$ROOT/lab/out
RAW=$OUT/bench-cps
TABLE=$OUT/bench-cps.txt
LOG=$OUT/bench-cps.log

QUICK=0
ONLY="sipp,sbc1,sbc2,kamailio,topos"
SHAPES="0s,10s"
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--only) ONLY=$2; shift ;;
	--shapes) SHAPES=$2; shift ;;
	-h | --help) sed -n '2,16p' "$0"; exit 0 ;;
	*) echo "unknown argument: $1" >&2; exit 64 ;;
	esac
	shift
done

# ---- parameters of the search -------------------------------------------------------------
FIX_RATE=500            # fixed rate of the CPU measurement (every X sustains it)
START_RATE=1000         # first rate of the doubling phase
MAX_RATE=64000          # never ask for more
HOLD_S=10               # duration of the long calls
if [ "$QUICK" = 1 ]; then
	START_RATE=4000
	SEND_ZERO_S=2   # zero-length calls: N = rate x 2 s
	BISECT_ZERO=1   # final ratio hi/lo = 2^(1/2)
	SEND_LONG_S=10  # 10 s calls: N = rate x 10 s
	DESCENTS_LONG=2 # at most zl_max, 0.8 zl_max, 0.64 zl_max
	BISECT_LONG=0
	CPU_LONG=0      # no fixed-rate CPU step for 10 s calls
else
	SEND_ZERO_S=5
	BISECT_ZERO=3   # final ratio 2^(1/8) = 1.09
	SEND_LONG_S=15
	DESCENTS_LONG=4
	BISECT_LONG=1
	CPU_LONG=1
fi
SEND_CPU_LONG_S=5       # CPU step of 10 s calls: FIX_RATE x 5 s calls
KAM_CHILDREN=${KAM_CHILDREN:-4}
KAM_SHM_MB=2048
SBC_BIN=${SBC_BIN:-$ROOT/target/release/sbc}
UAC_PORT=5061
X_PORT=5060             # where the UAC sends (SBC access listener / Kamailio)
UAS_PORT=5080           # the callee (SBC trunk target / Kamailio's $du)
BUFF=4194304
NOISE_MAX=${NOISE_MAX:-0.15}    # cores used by other processes during a step before it is repeated
NOISE_RETRIES=${NOISE_RETRIES:-3}
NOISE_WAIT_S=10

# ---- dependencies ---------------------------------------------------------------------------
need_pkgs=()
command -v sipp >/dev/null || need_pkgs+=(sip-tester)
command -v kamailio >/dev/null || need_pkgs+=(kamailio)
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/topos.so ] || need_pkgs+=(kamailio-extra-modules)
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/topos_redis.so ] || need_pkgs+=(kamailio-redis-modules)
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v timeout >/dev/null || need_pkgs+=(coreutils)
command -v ps >/dev/null || need_pkgs+=(procps)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	echo "installing: ${need_pkgs[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
if [ ! -x "$SBC_BIN" ]; then
	(cd "$ROOT" && cargo build --release -p sbc-core)
fi

mkdir -p "$RAW"
rm -f "$RAW"/*
: >"$LOG"

# ---- network namespace and cleanup ----------------------------------------------------------
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
nsx() { ip netns exec "$NS" "$@"; }
# Starts a command in the namespace in the background; BG_PID is its pid (`ip netns exec` execs
# the command, so this is the pid of the command itself, which is what we signal later).
nsx_bg() {
	ip netns exec "$NS" "$@" &
	BG_PID=$!
	PIDS+=("$BG_PID")
}

log() { echo "$*" | tee -a "$LOG"; }

# Waits until something listens on UDP port $1 in the namespace (at most 10 s).
wait_udp() {
	local i
	for i in $(seq 100); do
		if [ -n "$(nsx ss -Hlun "sport = :$1")" ]; then return 0; fi
		sleep 0.1
	done
	log "nothing listens on udp port $1"
	return 1
}
wait_tcp() {
	local i
	for i in $(seq 100); do
		if [ -n "$(nsx ss -Hltn "sport = :$1")" ]; then return 0; fi
		sleep 0.1
	done
	log "nothing listens on tcp port $1"
	return 1
}

# Stops the processes started for one step, each by its pid.
stop_pids() {
	local p i
	for p in "$@"; do kill "$p" 2>/dev/null || true; done
	for p in "$@"; do
		for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	local keep=() q
	for q in "${PIDS[@]}"; do
		case " $* " in *" $q "*) ;; *) keep+=("$q") ;; esac
	done
	PIDS=("${keep[@]}")
}

# CPU ticks (utime + stime) of the given processes and of all their descendants.
cpu_ticks() {
	local all=() p
	local kids
	for p in "$@"; do
		all+=("$p")
		mapfile -t kids < <(descendants "$p")
		all+=("${kids[@]}")
	done
	local t=0 f
	for p in "${all[@]}"; do
		f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		f=${f##*) }   # drop "pid (comm) "
		set -- $f
		t=$((t + ${12} + ${13}))   # fields 14 and 15 of the full line
	done
	echo "$t"
}
descendants() {
	ps -e -o pid=,ppid= | awk -v root="$1" '
		{ kids[$2] = kids[$2] " " $1 }
		END { walk(root) }
		function walk(p,   n, a, i) { n = split(kids[p], a, " "); for (i = 1; i <= n; i++) { print a[i]; walk(a[i]) } }'
}
HZ=$(getconf CLK_TCK)
# Snapshot "pid ticks" of every process on the machine (for the noise indicator below).
proc_snapshot() {
	awk 'FNR == 1 { sub(/.*\) /, ""); split($0, f, " "); print substr(FILENAME, 7, length(FILENAME) - 11), f[12] + f[13] }' \
		/proc/[0-9]*/stat 2>/dev/null >"$1" || true
}
# CPU ticks used between two snapshots by processes alive at the second one.
proc_delta() {
	awk 'NR == FNR { a[$1] = $2; next } { d += $2 - (($1 in a) ? a[$1] : 0) } END { print d + 0 }' "$1" "$2"
}
# CPU milliseconds (user + system) of all reaped children of this shell: `times` must run in this
# shell, not in a subshell, hence the file.
children_cpu() {
	times >"$RAW/.times"
	CHILD_MS=$(awk 'NR == 2 {
		t = 0
		for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
		printf "%d", t * 1000
	}' "$RAW/.times")
}

# ---- starting X -----------------------------------------------------------------------------
X_PIDS=()
start_x() { # $1 = X, $2 = tag for log files
	X_PIDS=()
	case "$1" in
	sipp) ;;
	sbc1 | sbc2)
		RUST_LOG=warn nsx_bg "$SBC_BIN" --config "$HERE/sbc-shards${1#sbc}.yaml" \
			>"$RAW/$2.sbc.log" 2>&1
		X_PIDS+=("$BG_PID")
		;;
	kamailio | topos)
		local cfg=$HERE/kamailio-proxy.cfg
		if [ "$1" = topos ]; then
			cfg=$HERE/kamailio-topos.cfg
			nsx_bg redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
				--daemonize no --logfile "" --dir "$RAW" >"$RAW/$2.redis.log" 2>&1
			X_PIDS+=("$BG_PID")
			wait_tcp 6379
		fi
		# -DD: no daemon, the main process stays our child; -E: log to stderr
		nsx_bg kamailio -f "$cfg" -DD -E -m "$KAM_SHM_MB" -M 16 -x tlsf -X tlsf \
			-A "CHILDREN=$KAM_CHILDREN" -P "$RAW/kamailio.pid" -Y "$RAW" \
			>"$RAW/$2.kamailio.log" 2>&1
		X_PIDS+=("$BG_PID")
		;;
	esac
	if [ "$1" != sipp ]; then wait_udp "$X_PORT"; fi
	# Kamailio forks its workers after binding: give them a moment.
	case "$1" in kamailio | topos) sleep 1 ;; esac
	local p
	for p in "${X_PIDS[@]}"; do
		kill -0 "$p" 2>/dev/null || { log "$1 exited at start; see $RAW/$2.*.log"; exit 1; }
	done
}

# ---- one step -------------------------------------------------------------------------------
# run_step X SHAPE RATE SEND_S -> sets STEP_PASS (0/1), STEP_ACH (achieved cps), STEP_CPU1K
# (CPU seconds of X per 1000 calls), STEP_FAILED, STEP_OTHER (cores used by other processes).
STEP_NO=0
run_step() {
	local try
	for ((try = 0; ; try++)); do
		run_step_once "$@"
		# Another tenant used more than NOISE_MAX cores during the step: its verdict says little
		# about X. Repeat it a bounded number of times; flag the result if it stays noisy.
		if awk -v o="$STEP_OTHER" -v m="$NOISE_MAX" 'BEGIN { exit !(o <= m) }'; then return; fi
		if [ "$try" -ge "$NOISE_RETRIES" ]; then
			NOISY[$1,$2]=1
			NOISY_ANY=1
			log "  (noisy: others used $STEP_OTHER cores; keeping this result, flagged)"
			return
		fi
		log "  (noisy: others used $STEP_OTHER cores; repeating the step in ${NOISE_WAIT_S} s)"
		sleep "$NOISE_WAIT_S"
	done
}
run_step_once() {
	local x=$1 shape=$2 rate=$3 send_s=$4
	local hold_ms=0 hold_s=0
	[ "$shape" = 10s ] && { hold_ms=$((HOLD_S * 1000)); hold_s=$HOLD_S; }
	local n=$((rate * send_s))
	local limit
	if [ "$hold_s" = 0 ]; then limit=$((rate * 2 > 1000 ? rate * 2 : 1000)); else limit=$((rate * (hold_s + 3))); fi
	STEP_NO=$((STEP_NO + 1))
	local tag
	tag=$(printf '%03d-%s-%s-%s' "$STEP_NO" "$x" "$shape" "$rate")
	start_x "$x" "$tag"
	local dest=127.0.0.1:$X_PORT
	[ "$x" = sipp ] && dest=127.0.0.1:$UAS_PORT
	nsx_bg sipp -sf "$HERE/uas.xml" -i 127.0.0.1 -p "$UAS_PORT" -nostdin -buff_size "$BUFF" \
		-trace_stat -stf "$RAW/$tag.uas.csv" -fd 1 >"$RAW/$tag.uas.out" 2>&1
	local uas=$BG_PID
	wait_udp "$UAS_PORT"
	local csv=$RAW/$tag.uac.csv
	local c0 u0 k0 k1
	c0=$(cpu_ticks "${X_PIDS[@]}")
	u0=$(cpu_ticks "$uas")
	children_cpu
	k0=$CHILD_MS
	proc_snapshot "$RAW/.procs0"
	local tmo=$((send_s + hold_s + 25)) rc=0 t0 t1 aborted=""
	t0=$(date +%s%N)
	nsx_bg timeout "$tmo" sipp -sf "$HERE/uac.xml" -i 127.0.0.1 -p "$UAC_PORT" \
		-nostdin -buff_size "$BUFF" -r "$rate" -m "$n" -l "$limit" -d "$hold_ms" \
		-recv_timeout 8000 -trace_stat -stf "$csv" -fd 1 "$dest" >"$RAW/$tag.uac.out" 2>&1
	local uac=$BG_PID
	# Watch the per-second statistics: once failures or retransmissions exceed the 0.1 % budget
	# the step has failed; stop it instead of waiting for thousands of calls to time out.
	while kill -0 "$uac" 2>/dev/null; do
		sleep 0.25
		if [ -s "$csv" ] && tail -1 "$csv" | awk -F';' -v n="$n" '
			{ exit !(($18 + 0) * 1000 >= n || ($58 + 0) * 1000 >= n) }'; then
			aborted=" (stopped early)"
			kill "$uac" 2>/dev/null || true
			break
		fi
	done
	wait "$uac" 2>/dev/null || rc=$?
	t1=$(date +%s%N)
	children_cpu
	k1=$CHILD_MS
	local c1 u1
	c1=$(cpu_ticks "${X_PIDS[@]}")
	u1=$(cpu_ticks "$uas")
	proc_snapshot "$RAW/.procs1"
	# Noise indicator: CPU of everything else on this (shared) machine during the step, in cores:
	# processes alive at the end, minus X and the UAS (the UAC has exited by then).
	local other
	other=$(awk -v d="$(proc_delta "$RAW/.procs0" "$RAW/.procs1")" -v x=$((c1 - c0)) -v u=$((u1 - u0)) \
		-v hz="$HZ" -v a="$t0" -v b="$(date +%s%N)" \
		'BEGIN { o = (d - x - u) / hz / ((b - a) / 1e9); printf "%.2f", (o < 0) ? 0 : o }')
	stop_pids "$uas" "${X_PIDS[@]}"
	local uas_retr
	uas_retr=$(tail -1 "$RAW/$tag.uas.csv" 2>/dev/null | awk -F';' '{ print $58 + 0 }')
	# The UAC statistics: successful and failed calls, retransmissions, and the time at which the
	# N-th call was created (interpolated between the per-second rows of the CSV).
	local stats
	stats=$(awk -F';' -v n="$n" '
		NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
		{
			split($col["StartTime"], s, "\t"); split($col["CurrentTime"], c, "\t")
			t = c[3] - s[3]; out = $col["OutgoingCall(C)"]
			if (!done && out >= n) {
				tn = (out == pout) ? t : pt + (n - pout) * (t - pt) / (out - pout); done = 1
			}
			pt = t; pout = out; succ = $col["SuccessfulCall(C)"]; retr = $col["Retransmissions(C)"]
			created = out; fail = $col["FailedCall(C)"]
		}
		END {
			if (!done) tn = pt
			printf "%d %d %d %.3f %d\n", succ + 0, retr + 0, created + 0, tn, fail + 0
		}' "$csv" 2>/dev/null || echo "0 0 0 0 0")
	local succ retr created tn fail_seen
	read -r succ retr created tn fail_seen <<<"$stats"
	STEP_FAILED=$((n - succ))
	STEP_ACH=$(awk -v c="$created" -v t="$tn" 'BEGIN { printf "%d", (t > 0) ? c / t : 0 }')
	# per call made (= N unless the step was stopped early)
	local made=$((created > 0 ? created : 1))
	STEP_CPU1K=$(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$made" 'BEGIN { printf "%.3f", d / hz / n * 1000 }')
	local sipp_cpu1k wall
	sipp_cpu1k=$(awk -v k="$((k1 - k0))" -v d=$((u1 - u0)) -v hz="$HZ" -v n="$made" \
		'BEGIN { printf "%.3f", (k / 1000 + d / hz) / n * 1000 }')
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
	STEP_OTHER=$other
	STEP_PASS=1
	local why=""
	[ "$rc" = 0 ] || [ "$rc" = 1 ] || [ -n "$aborted" ] || { STEP_PASS=0; why+=" uac-rc=$rc"; }
	[ -z "$aborted" ] || [ $((fail_seen * 1000)) -lt "$n" ] || why+=" failed"
	[ -n "$aborted" ] || [ $((STEP_FAILED * 1000)) -lt "$n" ] || { STEP_PASS=0; why+=" failed"; }
	[ $((retr * 1000)) -lt "$n" ] || { STEP_PASS=0; why+=" retransmissions"; }
	[ -n "$aborted" ] || [ $((STEP_ACH * 100)) -ge $((rate * 95)) ] || { STEP_PASS=0; why+=" rate-not-offered"; }
	local verdict=pass shown_failed=$STEP_FAILED
	[ "$STEP_PASS" = 1 ] || verdict="FAIL($why )"
	# Stopped early: the calls never made are not "failed"; show what SIPp counted.
	[ -z "$aborted" ] || { verdict+=" (stopped early, $created calls made)"; shown_failed=$fail_seen; }
	log "$(printf '%-8s %-3s rate %5d calls %7d failed %6d offered %5d cps retrans %6d/%-6d X cpu %.3f s/1k sipp cpu %.3f s/1k others %.2f cores wall %5.1f s %s' \
		"$x" "$shape" "$rate" "$n" "$shown_failed" "$STEP_ACH" "$retr" "$uas_retr" "$STEP_CPU1K" \
		"$sipp_cpu1k" "$other" "$wall" "$verdict")"
	sleep 0.5
}

# ---- searches -------------------------------------------------------------------------------
geo_mid() { awk -v a="$1" -v b="$2" 'BEGIN { m = sqrt(a * b); printf "%d", (m >= 1000) ? int(m / 50 + 0.5) * 50 : int(m / 10 + 0.5) * 10 }'; }

declare -A MAX CPU_FIX CPU_MAX FAIL_ZERO NOISY
NOISY_ANY=0
search_zero() { # $1 = X
	local x=$1 lo=0 hi=0 lo_cpu=- r
	run_step "$x" 0s "$FIX_RATE" "$SEND_ZERO_S"
	CPU_FIX[$x,0s]=$STEP_CPU1K
	if [ "$STEP_PASS" = 1 ]; then
		lo=$FIX_RATE; lo_cpu=$STEP_CPU1K; r=$START_RATE
		while [ "$r" -le "$MAX_RATE" ]; do
			run_step "$x" 0s "$r" "$SEND_ZERO_S"
			if [ "$STEP_PASS" = 1 ]; then lo=$r; lo_cpu=$STEP_CPU1K; r=$((r * 2)); else hi=$r; break; fi
		done
	else
		hi=$FIX_RATE; lo=$((FIX_RATE / 4))
	fi
	local i
	for ((i = 0; i < BISECT_ZERO && hi > 0; i++)); do
		r=$(geo_mid "$lo" "$hi")
		[ "$r" -gt "$lo" ] && [ "$r" -lt "$hi" ] || break
		run_step "$x" 0s "$r" "$SEND_ZERO_S"
		if [ "$STEP_PASS" = 1 ]; then lo=$r; lo_cpu=$STEP_CPU1K; else hi=$r; fi
	done
	MAX[$x,0s]=$lo
	CPU_MAX[$x,0s]=$lo_cpu
	FAIL_ZERO[$x]=$hi
}
search_long() { # $1 = X
	local x=$1 lo=0 hi=0 lo_cpu=- r top
	if [ "$CPU_LONG" = 1 ]; then
		run_step "$x" 10s "$FIX_RATE" "$SEND_CPU_LONG_S"
		CPU_FIX[$x,10s]=$STEP_CPU1K
	else
		CPU_FIX[$x,10s]=-
	fi
	top=${MAX[$x,0s]:-0}
	[ "$top" -gt 0 ] || top=$START_RATE
	r=$top
	local i
	for ((i = 0; i <= DESCENTS_LONG; i++)); do
		run_step "$x" 10s "$r" "$SEND_LONG_S"
		if [ "$STEP_PASS" = 1 ]; then lo=$r; lo_cpu=$STEP_CPU1K; break; fi
		hi=$r
		r=$(awk -v r="$r" 'BEGIN { printf "%d", int(r * 0.8 / 50 + 0.5) * 50 }')
	done
	# Passed at the zero-length maximum: look once above it, below the first zero-length failure.
	if [ "$lo" = "$top" ] && [ "${FAIL_ZERO[$x]:-0}" -gt "$top" ]; then
		hi=${FAIL_ZERO[$x]}
	fi
	if [ "$lo" -gt 0 ] && [ "$hi" -gt 0 ]; then
		for ((i = 0; i < BISECT_LONG; i++)); do
			r=$(geo_mid "$lo" "$hi")
			[ "$r" -gt "$lo" ] && [ "$r" -lt "$hi" ] || break
			run_step "$x" 10s "$r" "$SEND_LONG_S"
			if [ "$STEP_PASS" = 1 ]; then lo=$r; lo_cpu=$STEP_CPU1K; else hi=$r; fi
		done
	fi
	# lo = 0: even the lowest rate tried failed; report "< r".
	if [ "$lo" = 0 ]; then MAX[$x,10s]="<$r"; else MAX[$x,10s]=$lo; fi
	CPU_MAX[$x,10s]=$lo_cpu
}

# ---- the run --------------------------------------------------------------------------------
name_of() {
	case "$1" in
	sipp) echo "nothing (SIPp->SIPp)" ;;
	sbc1) echo "SBC, 1 shard" ;;
	sbc2) echo "SBC, 2 shards" ;;
	kamailio) echo "Kamailio proxy+dialog" ;;
	topos) echo "Kamailio+topos(redis)" ;;
	esac
}

START=$(date +%s)
{
	echo "# CPS benchmark, $(date -u +%Y-%m-%dT%H:%MZ), mode: $([ "$QUICK" = 1 ] && echo quick || echo full)"
	echo "# machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), shared by SIPp UAC, SIPp UAS and X"
	echo "# sbc $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo ?)$(cd "$ROOT" && git diff --quiet HEAD -- sbc-core 2>/dev/null || echo '+dirty'), $(sipp -v 2>/dev/null | grep -o 'SIPp v[^ ]*' | head -1), $(kamailio -v | head -1 | awk '{print "kamailio", $3}') (children=$KAM_CHILDREN, shm ${KAM_SHM_MB} MB), redis $(redis-server --version | grep -o 'v=[^ ]*' | cut -d= -f2)"
} | tee -a "$LOG" >"$TABLE.head"

IFS=, read -r -a XS <<<"$ONLY"
IFS=, read -r -a SH <<<"$SHAPES"
for x in "${XS[@]}"; do
	for s in "${SH[@]}"; do
		case "$s" in
		0s) search_zero "$x" ;;
		10s) search_long "$x" ;;
		*) echo "unknown shape $s" >&2; exit 64 ;;
		esac
	done
done

{
	cat "$TABLE.head"
	echo "# max cps: highest rate tried with < 0.1 % failed calls and < 0.1 % retransmissions (per call)"
	echo "#          from the caller, the rate really offered (>= 95 % of the target)."
	echo "# CPU: CPU-seconds used by X per 1000 calls, at ${FIX_RATE} cps and at the max rate found."
	printf '%-24s %-6s %14s %18s %18s\n' "X" "calls" "max cps" "CPU s/1k @${FIX_RATE}cps" "CPU s/1k @max"
	for x in "${XS[@]}"; do
		for s in "${SH[@]}"; do
			cf=${CPU_FIX[$x,$s]:--}; cm=${CPU_MAX[$x,$s]:--}
			[ "$x" = sipp ] && { cf=-; cm=-; }
			printf '%-24s %-6s %14s %18s %18s\n' "$(name_of "$x")" "$s" "${MAX[$x,$s]:--}${NOISY[$x,$s]:+*}" "$cf" "$cm"
		done
	done
	[ "$NOISY_ANY" = 0 ] || echo "# * a step of this search stayed noisy (other processes used > $NOISE_MAX cores) after $NOISE_RETRIES repeats"
	echo "# run time: $(($(date +%s) - START)) s"
} >"$TABLE"
rm -f "$TABLE.head"
echo
cat "$TABLE" | tee -a "$LOG"
