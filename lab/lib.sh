# lab/lib.sh: helpers sourced by every lab test (lab/tests/*.sh).
#
# A test looks like this:
#
#   source "$(dirname "$0")/../lib.sh"
#   lab_begin basic_udp                    # own network namespace, output dir, cleanup trap
#   sbc_start configs/sbc.yaml             # start the SBC, wait until it listens
#   uas_start uas 127.0.0.1:5080 uas_basic.xml
#   uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_basic.xml 10 5
#   uas_finish uas 10                      # the UAS must have completed 10 calls, 0 failed
#   lab_end                                # prints PASS/FAIL, dumps logs on failure
#
# Modes (environment LAB_MODE):
#   sbc     (default) the SBC (target/release/sbc or $SBC_BIN) sits between UAC and UAS.
#   direct  no SBC: the UAC is pointed straight at the UAS, to validate the scenario pairs.
#
# Every test runs in a network namespace of its own (sbclab-<test>-<pid>), with only lo up,
# so fixed ports never collide and nothing leaves the machine; all of 127.0.0.0/8 is
# local there. The namespace and everything started in it are removed when the test exits.
# Logs go to lab/out/<test>/ (or $LAB_OUT_ROOT/<test>/).
#
# Pass/fail is decided by SIPp's own statistics: the UAC's exit status (0 = every call
# successful) and, for every SIPp, the SuccessfulCall(C)/FailedCall(C) counters in the last
# line of its -trace_stat CSV file.

set -uo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LAB_DIR/.." && pwd)
LAB_MODE=${LAB_MODE:-sbc}
SBC_BIN=${SBC_BIN:-$REPO_DIR/target/release/sbc}
LAB_OUT_ROOT=${LAB_OUT_ROOT:-$LAB_DIR/out}
# Whole-test limit (seconds); a test may set it before lab_begin.
LAB_TEST_TIMEOUT=${LAB_TEST_TIMEOUT:-180}
# How long to wait for the SBC to listen after start.
LAB_SBC_START_TIMEOUT=${LAB_SBC_START_TIMEOUT:-10}
# A SIPp UAC gives up on a call when an expected message does not come within this (ms).
# UASs get no such limit: an OPTIONS keep-alive from the SBC, auto-answered by -aa, leaves
# a "call" waiting for an INVITE that would then fail; a UAS call that never completes
# shows up as a missing successful call instead.
LAB_RECV_TIMEOUT=${LAB_RECV_TIMEOUT:-20000}
# Default UAC address (override per call: UAC_ADDR=127.0.0.11:5062 uac_run ...).
UAC_ADDR=${UAC_ADDR:-127.0.0.1:5062}

case $LAB_MODE in
    sbc | direct) ;;
    *)
        echo "LAB_MODE must be sbc or direct, not '$LAB_MODE'" >&2
        exit 2
        ;;
esac

lab_is_direct() { [[ $LAB_MODE == direct ]]; }

# sbc_or_direct SBC_ADDR DIRECT_ADDR: where the UAC sends, depending on the mode.
sbc_or_direct() {
    if lab_is_direct; then echo "$2"; else echo "$1"; fi
}

lab__now() { date +%s.%N; }
lab__elapsed_since() { awk -v a="$1" -v b="$(lab__now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------
# Test life cycle
# ---------------------------------------------------------------------------------------

# lab_begin NAME: create lab/out/NAME, a fresh network namespace, and re-run the calling
# test script inside it (under `timeout`). Returns only inside the namespace.
lab_begin() {
    TEST=$1
    OUT=$LAB_OUT_ROOT/$TEST
    local script
    script=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)/$(basename "${BASH_SOURCE[1]}")

    if [[ -z ${LAB_NS:-} ]]; then
        rm -rf "$OUT"
        mkdir -p "$OUT"
        LAB__NS="sbclab-$TEST-$$"
        # Cleanup of the namespace runs in this (outer) shell, whatever happens inside.
        trap 'lab__ns_cleanup' EXIT
        trap 'exit 130' INT TERM
        if ! ip netns add "$LAB__NS" 2>"$OUT/netns.err"; then
            echo "FAIL $TEST: cannot create network namespace $LAB__NS: $(cat "$OUT/netns.err")"
            exit 1
        fi
        ip netns exec "$LAB__NS" ip link set lo up
        local rc=0
        LAB_NS=$LAB__NS LAB_MODE=$LAB_MODE timeout -k 10 "$LAB_TEST_TIMEOUT" \
            ip netns exec "$LAB__NS" bash "$script" || rc=$?
        if ((rc == 124 || rc == 137)); then
            echo "FAIL $TEST: whole test timed out after ${LAB_TEST_TIMEOUT}s"
            echo "FAIL $TEST: whole test timed out after ${LAB_TEST_TIMEOUT}s" >"$OUT/result"
            lab__dump_logs
        fi
        exit "$rc"
    fi

    # Inside the namespace from here on.
    cd "$OUT" || exit 1
    LAB_FAILS=()
    LAB_NOTES=()
    SBC_PID=
    declare -gA LAB_SIPP_PID=()
    declare -gA LAB_SIPP_KIND=()
    LAB_MP=20000
    LAB_T0=$(lab__now)
    trap 'lab__inner_exit' EXIT
    trap 'lab_fail "interrupted"; exit 130' INT TERM
    echo "== $TEST ($LAB_MODE mode, netns $LAB_NS, logs in $OUT)"
}

lab__ns_cleanup() {
    [[ -n ${LAB__NS:-} ]] || return 0
    # Only processes inside our own namespace: all of them were started by this test.
    local pids
    pids=$(ip netns pids "$LAB__NS" 2>/dev/null || true)
    if [[ -n $pids ]]; then
        # shellcheck disable=SC2086
        kill -TERM $pids 2>/dev/null || true
        sleep 0.5
        pids=$(ip netns pids "$LAB__NS" 2>/dev/null || true)
        # shellcheck disable=SC2086
        [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$LAB__NS" 2>/dev/null || true
}

# lab_fail REASON: record a failure (the test goes on, so that all reasons are reported).
lab_fail() {
    LAB_FAILS+=("$*")
    echo "   FAIL: $*"
}

# lab_note TEXT: informational line, also written to the console.
lab_note() {
    LAB_NOTES+=("$*")
    echo "   note: $*"
}

# lab_step TEXT: progress line.
lab_step() { echo "-- $* (t=$(lab__elapsed_since "$LAB_T0")s)"; }

# lab_abort REASON: record a failure and end the test now.
lab_abort() {
    lab_fail "$@"
    lab_end
}

# lab_end: stop everything, print PASS/FAIL and exit accordingly.
lab_end() {
    lab__stop_all
    local t
    t=$(lab__elapsed_since "$LAB_T0")
    local line
    if ((${#LAB_FAILS[@]} == 0)); then
        line="PASS $TEST: ${LAB_PASS_REASON:-all SIPp calls completed as scripted} (${t}s, $LAB_MODE mode)"
        echo "$line" | tee "$OUT/result"
        LAB__ENDED=1
        exit 0
    fi
    local reasons
    reasons=$(printf '%s; ' "${LAB_FAILS[@]}")
    line="FAIL $TEST: ${reasons%; } (${t}s, $LAB_MODE mode)"
    lab__dump_logs
    echo "$line" | tee "$OUT/result"
    LAB__ENDED=1
    exit 1
}

lab__inner_exit() {
    local rc=$?
    if [[ -z ${LAB__ENDED:-} ]]; then
        # The script died before lab_end (a bug in the test, or a signal).
        LAB_FAILS+=("test script ended unexpectedly (status $rc)")
        lab__stop_all
        lab__dump_logs
        echo "FAIL $TEST: test script ended unexpectedly (status $rc)" | tee "$OUT/result"
        exit 1
    fi
}

lab__dump_logs() {
    local f
    echo "---- logs of $TEST (full logs in $OUT) ----"
    if [[ -s $OUT/sbc.log ]]; then
        echo "---- tail of sbc.log"
        tail -n "${LAB_DUMP_LINES:-40}" "$OUT/sbc.log"
    fi
    for f in "$OUT"/*.errors.log; do
        [[ -s $f ]] || continue
        echo "---- tail of $(basename "$f") (SIPp unexpected messages and errors)"
        tail -n "${LAB_DUMP_LINES:-40}" "$f"
    done
    for f in "$OUT"/*.stderr; do
        [[ -s $f ]] || continue
        echo "---- tail of $(basename "$f")"
        tail -n 10 "$f"
    done
    # Logs of peers other than SIPp (baresip, ...): NAME.ua.log.
    for f in "$OUT"/*.ua.log; do
        [[ -s $f ]] || continue
        echo "---- tail of $(basename "$f")"
        tail -n "${LAB_DUMP_LINES:-40}" "$f"
    done
    # The last scenario screen of each SIPp: how many calls reached each message.
    for f in "$OUT"/*.stdout; do
        [[ $f == */sbc.stdout ]] && continue
        grep -q "Messages" "$f" 2>/dev/null || continue
        echo "---- last scenario screen of $(basename "$f" .stdout)"
        awk '/Messages +Retrans +Timeout +Unexpected-Msg/ { buf = ""; on = 1 }
             on { buf = buf $0 "\n" }
             /Test Terminated|Statistics Screen/ { if (on) last = buf; on = 0 }
             END { printf "%s", last }' "$f" | grep -v "^$" | head -n 40
    done
    echo "---- end of logs of $TEST"
}

# ---------------------------------------------------------------------------------------
# Sockets
# ---------------------------------------------------------------------------------------

# lab_listening PROTO IP PORT: true if something listens there (in this namespace).
lab_listening() {
    local flag=-Hlun
    [[ $1 == tcp ]] && flag=-Hltn
    ss "$flag" 2>/dev/null | awk -v ip="$2" -v port="$3" '
        { a = $4 }
        a == ip ":" port || a == "[" ip "]:" port || a == "0.0.0.0:" port || a == "*:" port || a == "[::]:" port { found = 1 }
        END { exit !found }'
}

# lab_wait_listening PID TIMEOUT SPEC...: wait until all PROTO:IP:PORT specs listen.
# Returns 0 when ready, 1 on timeout, 2 if PID exited.
lab_wait_listening() {
    local pid=$1 limit=$2
    shift 2
    local deadline spec ok
    deadline=$(awk -v n="$(lab__now)" -v l="$limit" 'BEGIN { printf "%.3f", n + l }')
    while :; do
        ok=1
        for spec in "$@"; do
            # proto:ip:port, where ip may itself hold colons (IPv6)
            proto=${spec%%:*} ip=${spec#*:} port=${spec##*:}
            ip=${ip%:*}
            lab_listening "$proto" "$ip" "$port" || {
                ok=0
                break
            }
        done
        ((ok)) && return 0
        kill -0 "$pid" 2>/dev/null || return 2
        awk -v n="$(lab__now)" -v d="$deadline" 'BEGIN { exit !(n > d) }' && return 1
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------------------
# The SBC
# ---------------------------------------------------------------------------------------

# sbc_start CONFIG: start the SBC with CONFIG (path relative to the repository or absolute)
# and wait until it listens on every listener of the config. No-op in direct mode.
sbc_start() {
    local cfg=$1
    [[ $cfg == /* ]] || cfg=$REPO_DIR/$cfg
    if lab_is_direct; then
        lab_note "direct mode: no SBC started ($(basename "$cfg") not used)"
        return 0
    fi
    [[ -f $cfg ]] || lab_abort "config $cfg not found"
    [[ -x $SBC_BIN ]] || lab_abort "SBC binary $SBC_BIN not found (cargo build --release -p sbc-core)"
    cp "$cfg" "$OUT/sbc-config.yaml"
    local specs
    specs=$(python3 "$LAB_DIR/cfg_listeners.py" "$cfg") || lab_abort "cannot read listeners of $cfg"
    lab_step "starting SBC: $SBC_BIN --config $cfg"
    RUST_LOG=${RUST_LOG:-info} timeout -k 5 "$LAB_TEST_TIMEOUT" \
        "$SBC_BIN" --config "$cfg" >"$OUT/sbc.stdout" 2>"$OUT/sbc.log" </dev/null &
    SBC_PID=$!
    local rc=0
    # shellcheck disable=SC2086
    lab_wait_listening "$SBC_PID" "$LAB_SBC_START_TIMEOUT" $specs || rc=$?
    case $rc in
        0) lab_step "SBC listening on $(echo $specs)" ;;
        1) lab_abort "SBC not listening on all of: $(echo $specs) after ${LAB_SBC_START_TIMEOUT}s" ;;
        2)
            local st=0
            wait "$SBC_PID" || st=$?
            SBC_PID=
            lab_abort "SBC exited (status $st) before listening on $(echo $specs)"
            ;;
    esac
}

# sbc_stop: SIGTERM the SBC; records a failure if it had died during the test or panicked.
sbc_stop() {
    [[ -n ${SBC_PID:-} ]] || return 0
    local pid=$SBC_PID st=0
    SBC_PID=
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" || st=$?
        lab_fail "SBC died during the test (exit status $st)"
    else
        kill -TERM "$pid" 2>/dev/null
        local i
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            lab_note "SBC still running 5s after SIGTERM; killed"
            lab__kill_tree "$pid"
        fi
        wait "$pid" 2>/dev/null || true
    fi
    if grep -q "panicked at" "$OUT/sbc.log" 2>/dev/null; then
        lab_fail "SBC panicked (see sbc.log)"
    fi
}

# ---------------------------------------------------------------------------------------
# SIPp
# ---------------------------------------------------------------------------------------

# Options every SIPp gets. NAME names its files in $OUT.
lab__sipp_common() {
    local name=$1
    SIPP_COMMON=(-nostdin
        -trace_stat -stf "$OUT/$name.csv" -fd 1
        -trace_err -error_file "$OUT/$name.errors.log"
        -trace_msg -message_file "$OUT/$name.messages.log"
        -trace_logs -log_file "$OUT/$name.logs.log"
        -trace_screen -screen_file "$OUT/$name.screen.log"
        -mp "$LAB_MP")
    LAB_MP=$((LAB_MP + 10))
}

# sipp_stat FILE COLUMN: value of COLUMN (e.g. 'SuccessfulCall(C)') in the last line of a
# SIPp -trace_stat CSV file; empty if unavailable.
sipp_stat() {
    [[ -s $1 ]] || return 0
    awk -F';' -v col="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
        { last = $0 }
        END { if (c && last != "") { split(last, f, ";"); print f[c] } }' "$1"
}

# uas_start NAME IP:PORT SCENARIO [SIPP ARGS...]: start a SIPp server in the background
# with lab/scenarios/SCENARIO, bound to IP:PORT, and wait until it listens.
# It runs with -aa (so OPTIONS keep-alives from the SBC get a 200 and are neither
# successful nor failed calls; LAB_UAS_AA=0 leaves -aa out) and with a -m of
# LAB_UAS_MAX_CALLS (default 5000) as a safety bound only: such OPTIONS count toward -m, so
# the exact number of calls is not used to stop it. uas_finish stops it (SIGINT) once its
# calls are done and checks its counters.
uas_start() {
    local name=$1 addr=$2 scen=$3
    shift 3
    local ip=${addr%:*} port=${addr##*:} proto=udp a prev=
    for a in "$@"; do
        [[ $prev == -t && $a == t* ]] && proto=tcp
        prev=$a
    done
    lab__sipp_common "$name"
    lab_step "starting UAS $name on $proto:$addr ($scen)"
    local aa=(-aa)
    [[ ${LAB_UAS_AA:-1} == 0 ]] && aa=()
    timeout -k 5 "$LAB_TEST_TIMEOUT" sipp -sf "$LAB_DIR/scenarios/$scen" -i "$ip" -mi "$ip" -p "$port" \
        -m "${LAB_UAS_MAX_CALLS:-5000}" "${aa[@]}" "${SIPP_COMMON[@]}" "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" </dev/null &
    LAB_SIPP_PID[$name]=$!
    LAB_SIPP_KIND[$name]=uas
    local rc=0
    lab_wait_listening "${LAB_SIPP_PID[$name]}" 5 "$proto:$ip:$port" || rc=$?
    ((rc == 0)) || lab_abort "UAS $name did not listen on $proto:$addr (see $name.stderr)"
}

# uas_finish NAME EXPECTED [GRACE_SECONDS]: wait (up to GRACE, default 10 s) until the UAS
# has finished EXPECTED calls, stop it, and require EXPECTED successful and 0 failed calls.
uas_finish() {
    local name=$1 expected=$2 grace=${3:-10}
    local pid=${LAB_SIPP_PID[$name]:-}
    [[ -n $pid ]] || {
        lab_fail "uas_finish: no UAS named $name"
        return
    }
    local deadline s f
    deadline=$(awk -v n="$(lab__now)" -v g="$grace" 'BEGIN { printf "%.3f", n + g }')
    while kill -0 "$pid" 2>/dev/null; do
        s=$(sipp_stat "$OUT/$name.csv" 'SuccessfulCall(C)')
        f=$(sipp_stat "$OUT/$name.csv" 'FailedCall(C)')
        (((${s:-0} + ${f:-0}) >= expected)) && break
        awk -v n="$(lab__now)" -v d="$deadline" 'BEGIN { exit !(n > d) }' && break
        sleep 0.25
    done
    lab__stop_sipp "$name"
    s=$(sipp_stat "$OUT/$name.csv" 'SuccessfulCall(C)')
    f=$(sipp_stat "$OUT/$name.csv" 'FailedCall(C)')
    if [[ ${s:-x} == "$expected" && ${f:-x} == 0 ]]; then
        lab_step "UAS $name: $s successful, 0 failed calls"
    else
        lab_fail "UAS $name: ${s:-?} successful, ${f:-?} failed calls (expected $expected successful, 0 failed)"
    fi
}

# uas_stop NAME: stop a SIPp server without judging it (e.g. a black hole).
uas_stop() { lab__stop_sipp "$1"; }

lab__stop_sipp() {
    local name=$1
    local pid=${LAB_SIPP_PID[$name]:-}
    [[ -n $pid ]] || return 0
    unset 'LAB_SIPP_PID[$name]'
    if kill -0 "$pid" 2>/dev/null; then
        # timeout(1) forwards SIGINT to SIPp, which writes a last stats line and exits.
        kill -INT "$pid" 2>/dev/null
        local i
        for ((i = 0; i < 30; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            lab__kill_tree "$pid"
        fi
    fi
    wait "$pid" 2>/dev/null
    return 0
}

# uac_start NAME TARGET SCENARIO CALLS RATE [SIPP ARGS...]: start a SIPp client in the
# background: CALLS calls (-m) at RATE calls/s (-r) toward TARGET (IP:PORT), from $UAC_ADDR.
uac_start() {
    local name=$1 target=$2 scen=$3 calls=$4 rate=$5
    shift 5
    local ip=${UAC_ADDR%:*} port=${UAC_ADDR##*:}
    local limit=${LAB_UAC_TIMEOUT:-$((calls / rate + 45))}
    lab__sipp_common "$name"
    lab_step "UAC $name: $calls calls at $rate/s from $UAC_ADDR to $target ($scen)"
    timeout -k 5 $((limit + 15)) sipp -sf "$LAB_DIR/scenarios/$scen" "$target" \
        -i "$ip" -mi "$ip" -p "$port" -m "$calls" -r "$rate" -recv_timeout "$LAB_RECV_TIMEOUT" \
        -timeout "${limit}s" -timeout_error "${SIPP_COMMON[@]}" "$@" \
        >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" </dev/null &
    LAB_SIPP_PID[$name]=$!
    LAB_SIPP_KIND[$name]=uac
    LAB_UAC_CALLS[$name]=$calls
}
declare -A LAB_UAC_CALLS=()

# uac_wait NAME [fail]: wait for a UAC started by uac_start and require exit status 0 and
# CALLS successful, 0 failed calls in its statistics; with "fail", require instead that
# every call failed (used in direct mode to show that a peer really stays silent).
uac_wait() {
    local name=$1 expect=${2:-success}
    local pid=${LAB_SIPP_PID[$name]:-} calls=${LAB_UAC_CALLS[$name]:-0}
    [[ -n $pid ]] || {
        lab_fail "uac_wait: no UAC named $name"
        return
    }
    local rc=0
    wait "$pid" || rc=$?
    unset 'LAB_SIPP_PID[$name]'
    local s f
    s=$(sipp_stat "$OUT/$name.csv" 'SuccessfulCall(C)')
    f=$(sipp_stat "$OUT/$name.csv" 'FailedCall(C)')
    if [[ $expect == fail ]]; then
        if [[ ${s:-x} == 0 && ${f:-x} == "$calls" ]]; then
            lab_step "UAC $name: all $f calls failed, as expected"
        else
            lab_fail "UAC $name: ${s:-?} successful, ${f:-?} failed of $calls calls (expected all to fail)"
        fi
    elif ((rc == 0)) && [[ ${s:-x} == "$calls" && ${f:-x} == 0 ]]; then
        lab_step "UAC $name: $s successful, 0 failed calls"
    else
        local why="exit status $rc"
        ((rc == 124)) && why="killed by timeout"
        lab_fail "UAC $name: $why, ${s:-?} successful, ${f:-?} failed of $calls calls"
    fi
}

# uac_run ...: uac_start then uac_wait (same arguments as uac_start).
uac_run() {
    uac_start "$@"
    uac_wait "$1"
}

# lab__kill_tree PID: SIGKILL a process we started (a timeout(1) wrapper) and its children.
lab__kill_tree() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do
        kill -KILL "$child" 2>/dev/null
    done
    kill -KILL "$1" 2>/dev/null
}

lab__stop_all() {
    local name
    for name in "${!LAB_SIPP_PID[@]}"; do
        lab__stop_sipp "$name"
    done
    for name in "${!LAB_CAPTURE_PID[@]}"; do
        capture_stop "$name"
    done
    sbc_stop
}

# ---------------------------------------------------------------------------------------
# Packet capture
# ---------------------------------------------------------------------------------------

# capture_start NAME [FILTER]: capture lo (default filter "udp") into $OUT/NAME.pcap with
# dumpcap, and wait until it is capturing.
capture_start() {
    local name=$1 filter=${2:-udp}
    timeout -k 5 "$LAB_TEST_TIMEOUT" dumpcap -q -i lo -f "$filter" -w "$OUT/$name.pcap" -P \
        >"$OUT/$name.dumpcap.stdout" 2>"$OUT/$name.dumpcap.stderr" </dev/null &
    LAB_CAPTURE_PID[$name]=$!
    local i
    for ((i = 0; i < 50; i++)); do
        grep -q "Capturing on" "$OUT/$name.dumpcap.stderr" 2>/dev/null && break
        kill -0 "${LAB_CAPTURE_PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "Capturing on" "$OUT/$name.dumpcap.stderr" 2>/dev/null ||
        lab_abort "dumpcap did not start (see $name.dumpcap.stderr)"
    lab_step "capturing lo ($filter) into $name.pcap"
}
declare -A LAB_CAPTURE_PID=()

# capture_stop NAME: stop a capture started by capture_start (the file is complete after).
capture_stop() {
    local name=$1
    local pid=${LAB_CAPTURE_PID[$name]:-}
    [[ -n $pid ]] || return 0
    unset 'LAB_CAPTURE_PID[$name]'
    sleep 0.3
    kill -INT "$pid" 2>/dev/null
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && lab__kill_tree "$pid"
    wait "$pid" 2>/dev/null
    return 0
}

# lab_require_msg NAME REGEX DESCRIPTION: require that SIPp NAME's message log matches
# (grep -E) REGEX, e.g. to prove a black-hole peer received an INVITE.
lab_require_msg() {
    if grep -Eq -- "$2" "$OUT/$1.messages.log" 2>/dev/null; then
        lab_step "$1 $3"
    else
        lab_fail "$1: expected $3, not found in $1.messages.log"
    fi
}

# ---------------------------------------------------------------------------------------
# Media checks (tshark decodes; lab/media_check.py judges)
# ---------------------------------------------------------------------------------------

# media_check LABEL SUBCOMMAND ARGS...: run lab/media_check.py SUBCOMMAND ARGS, keep its output
# in $OUT/LABEL.txt, show it indented, and record a failure if a check failed.
media_check() {
    local label=$1
    shift
    lab_step "media check $label: $1"
    if python3 "$LAB_DIR/media_check.py" "$@" >"$OUT/$label.txt" 2>&1; then
        grep -v '^flow:' "$OUT/$label.txt" | sed 's/^/   /'
    else
        sed 's/^/   /' "$OUT/$label.txt" | head -n 40
        lab_fail "media check $label failed (see $label.txt)"
    fi
}

# sip_times PCAP FILTER: relative times (s) of the SIP messages matching the tshark display
# FILTER in PCAP, one per line, in order.
sip_times() {
    tshark -r "$1" -n -Y "$2" -T fields -e frame.time_relative 2>/dev/null
}

# received_media_port NAME [TIMEOUT]: wait (default 10 s) until SIPp NAME has received a
# message with an SDP body, and print the port of its first m= line (where that SIPp sends
# its RTP, i.e. the SBC's media port on its leg).
received_media_port() {
    local log=$OUT/$1.messages.log timeout=${2:-10} i port
    for ((i = 0; i < timeout * 10; i++)); do
        port=$(awk '/message received/ { r = 1 } /message sent/ { r = 0 }
            r && /^m=audio/ { print $2; exit }' "$log" 2>/dev/null)
        [[ -n $port ]] && {
            echo "$port"
            return 0
        }
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------------------
# Policy tests: metrics, success ratios, the SBC process
# ---------------------------------------------------------------------------------------

# sbc_metrics [ADDR]: print the SBC's Prometheus page (admin.metrics, default 127.0.0.1:9090)
# as "name{labels} value" lines; empty output if it cannot be read.
sbc_metrics() {
    python3 - "${1:-127.0.0.1:9090}" <<'PY' 2>/dev/null
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line and not line.startswith("#"):
        print(line)
PY
}

# metric NAME [ADDR]: the value of one series (NAME with its labels exactly as exported, e.g.
# 'sbc_policy_packets_total{verdict="banned"}'), 0 if absent.
metric() {
    sbc_metrics "${2:-}" | awk -v n="$1" '{ v = $NF; $NF = ""; sub(/ $/, ""); if ($0 == n) { print v; f = 1 } }
        END { if (!f) print 0 }'
}

# sbc_process_pid: the SBC's own PID (SBC_PID is its timeout(1) wrapper).
sbc_process_pid() {
    [[ -n ${SBC_PID:-} ]] || return 1
    pgrep -P "$SBC_PID" -x sbc | head -n 1
}

# sbc_rss_kib: resident memory of the SBC in KiB.
sbc_rss_kib() {
    local pid
    pid=$(sbc_process_pid) || return 1
    awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"
}

# uac_wait_ratio NAME MIN_PERCENT: like uac_wait, but passes when at least MIN_PERCENT of the
# CALLS were successful (SIPp's exit status is then not required to be 0).
uac_wait_ratio() {
    local name=$1 min=$2
    local pid=${LAB_SIPP_PID[$name]:-} calls=${LAB_UAC_CALLS[$name]:-0}
    [[ -n $pid ]] || {
        lab_fail "uac_wait_ratio: no UAC named $name"
        return
    }
    wait "$pid" 2>/dev/null
    unset 'LAB_SIPP_PID[$name]'
    local s f
    s=$(sipp_stat "$OUT/$name.csv" 'SuccessfulCall(C)')
    f=$(sipp_stat "$OUT/$name.csv" 'FailedCall(C)')
    if awk -v s="${s:-0}" -v c="$calls" -v m="$min" 'BEGIN { exit !(c > 0 && s * 100 >= m * c) }'; then
        lab_step "UAC $name: ${s} successful, ${f:-?} failed of $calls calls (>= $min % required)"
    else
        lab_fail "UAC $name: ${s:-?} successful, ${f:-?} failed of $calls calls (< $min %)"
    fi
}

# require_tool NAME PACKAGE: fail the test (never skip) when a peer is missing.
require_tool() {
    command -v "$1" >/dev/null || lab_abort "$1 not found (install the $2 package: bash lab/test-all.sh does)"
}

# ---- baresip UAs (media_baresip, media_sdes, media_sdes_sipp, media_transcode) ----------

# Pids of the running baresip UAs, by name.
declare -gA UA_PID=()

# ua_start NAME [BARESIP ARGS...]: run baresip with $OUT/NAME as config dir, log NAME.ua.log.
ua_start() {
    local name=$1
    shift
    timeout -k 5 "$LAB_TEST_TIMEOUT" baresip -f "$OUT/$name" "$@" \
        >"$OUT/$name.ua.log" 2>&1 </dev/null &
    UA_PID[$name]=$!
}

# ua_wait NAME SECONDS: wait until baresip NAME has exited; false if it is still running.
ua_wait() {
    local pid=${UA_PID[$1]} i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && return 1
    wait "$pid" 2>/dev/null
    unset 'UA_PID[$1]'
    return 0
}

# ua_stop NAME: SIGINT (baresip ends its calls and exits), then SIGKILL after 5 s.
ua_stop() {
    local pid=${UA_PID[$1]:-}
    [[ -n $pid ]] || return 0
    kill -INT "$pid" 2>/dev/null
    if ! ua_wait "$1" 5; then
        lab_note "baresip $1 still running 5 s after SIGINT; killed"
        lab__kill_tree "$pid"
        wait "$pid" 2>/dev/null
        unset 'UA_PID[$1]'
    fi
}

# ua_log_has NAME REGEX DESCRIPTION: require a line of NAME.ua.log to match REGEX.
ua_log_has() {
    if tr '\r' '\n' <"$OUT/$1.ua.log" | grep -Eq -- "$2"; then
        lab_step "baresip $1: $3"
    else
        lab_fail "baresip $1: no sign that $3 (see $1.ua.log)"
    fi
}

# sip_count PCAP FILTER DESCRIPTION: require at least one SIP message of PCAP matching the tshark
# FILTER.
sip_count() {
    local n
    n=$(sip_times "$1" "$2" | wc -l)
    if ((n > 0)); then
        lab_step "$3 ($n)"
    else
        lab_fail "not in the capture: $3"
    fi
}

# tone_wav FILE HZ [RATE [CHANNELS]]: 10 s of a sine at HZ, S16LE, RATE Hz (8000) and CHANNELS
# (1), made by sox: what baresip's aufile reads (the file's rate and channels must be the
# codec's: 8 kHz mono for G.711, 48 kHz stereo for opus/48000/2), longer than the lab's calls
# (when the file ends, baresip 1.0 hangs up).
tone_wav() {
    sox -n -r "${3:-8000}" -c "${4:-1}" -b 16 -e signed-integer "$1" synth 10 sine "$2" vol 0.5 \
        >>"$OUT/sox.txt" 2>&1 || lab_abort "sox could not make $1 (see sox.txt)"
}

# ua_config NAME IP PORT RTP_PORTS WAV CODECS ACCOUNT_PARAMS [MODULE...]: a headless baresip
# config dir $OUT/NAME: SIP on IP:PORT, RTP from RTP_PORTS (no rtcp-mux), the aufile source
# reading WAV (its rate must be the codec's: 8 kHz mono for G.711), one account offering CODECS
# (e.g. PCMU/8000/1,PCMA/8000/1) with ACCOUNT_PARAMS (e.g. ";answermode=auto"), and the extra
# MODULEs (e.g. srtp.so, opus.so; sndfile.so records what the UA sends and decodes into
# $OUT/NAME/snd). No audio player and no alert device: baresip 1.0's aufile is a source only.
# rtp_stats is no unless UA_RTP_STATS=yes (UA_RTP_STATS=yes ua_config ...): with it baresip
# prints RTP statistics at hangup, and once it has had an RTCP sender report it also puts an
# X-RTP-Stat header in its BYE, so it changes what goes on the wire.
ua_config() {
    local name=$1 ip=$2 port=$3 rtp=$4 wav=$5 codecs=$6 params=$7 dir=$OUT/$1 m modules=
    local stats=${UA_RTP_STATS:-no}
    shift 7
    for m in "$@"; do modules+="module			$m"$'\n'; done
    mkdir -p "$dir/snd"
    cat >"$dir/config" <<EOF
poll_method		epoll
sip_listen		$ip:$port
net_interface		$ip
call_local_timeout	30
call_max_calls		1
audio_source		aufile,$wav
rtp_ports		$rtp
rtcp_mux		no
jitter_buffer_delay	5-10
rtp_stats		$stats
statmode_default	off
snd_path		$dir/snd
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
${modules}module_tmp		account.so
module_app		menu.so
EOF
    echo "<sip:$name@$ip:$port>;regint=0;audio_codecs=$codecs$params" >"$dir/accounts"
}

# ua_source_routes IP=SPORTS...: baresip 1.0 binds its RTP sockets to the wildcard address, so
# in a namespace where all of 127.0.0.0/8 is local its RTP would leave from 127.0.0.1, not from
# the address in its SDP. A policy route per UA fixes that: UDP from the source ports SPORTS
# (a range covering the UA's rtp_ports) leaves from IP. The rules are consulted before the
# local table, so the local table's rule moves after them. Aborts unless every route is in
# effect (routes.txt keeps the commands' output and the rules).
ua_source_routes() {
    local spec ip sports table=111 pref=10 ok=1 src
    lab_step "policy routes (udp source ports -> source address): $*"
    for spec in "$@"; do
        ip=${spec%%=*} sports=${spec#*=}
        { ip route add local 127.0.0.0/8 dev lo src "$ip" table "$table" &&
            ip rule add ipproto udp sport "$sports" lookup "$table" pref "$pref"; } \
            >>"$OUT/routes.txt" 2>&1 || ok=0
        table=$((table + 1)) pref=$((pref + 1))
    done
    { ip rule add lookup local pref 100 && ip rule del pref 0; } >>"$OUT/routes.txt" 2>&1 || ok=0
    ip rule >>"$OUT/routes.txt" 2>&1
    ((ok)) || lab_abort "cannot set the per-UA source routes (see routes.txt)"
    for spec in "$@"; do
        ip=${spec%%=*} sports=${spec#*=}
        src=$(ip route get 127.0.0.1 ipproto udp sport "${sports%-*}" dport 40000 |
            grep -o 'src [0-9.]*')
        [[ $src == "src $ip" ]] ||
            lab_abort "policy routes not effective (udp from port ${sports%-*} would leave with '$src')"
    done
}
