#!/usr/bin/env bash
# test-all.sh: the single test command of the repository (`bash lab/test-all.sh`, also
# what .ci/run executes).
#
#   1. installs the lab's peers with apt-get if any is missing (sip-tester, tshark,
#      iproute2, procps, baresip-core, sox, sipvicious, nftables, chromium, kamailio with its
#      websocket and tls modules, rtpengine-daemon, openssl, cmake), then lab/browser/setup.sh (npm ci,
#      the JsSIP bundle); a peer that cannot be installed is a failure, never a skip
#   2. cargo fmt --all -- --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. cargo test --workspace
#   5. cargo build --release -p sbc-core          (target/release/sbc)
#      and 60 s of fuzzing (SIP codec and framing, SDP, the secure media side, the transcoders and
#      RTCP reporter) (fuzz/run.sh; FUZZ_SECONDS to change it)
#   6. every lab test in lab/tests/ against that binary (bash lab/run-lab.sh)
#
# Each step and each lab test counts once; the last line is "N passed, M failed" and the
# exit status is non-zero if anything failed. Steps 2-5 all run even if one fails; if the
# release build fails, the lab tests are not run and count as failed.
# Needs root (apt-get, network namespaces).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
OUT=$REPO/lab/out
mkdir -p "$OUT"

passed=0
failed=0
failed_names=()

pass() {
    passed=$((passed + 1))
    echo "PASS $1"
}
fail() {
    failed=$((failed + 1))
    failed_names+=("$1")
    echo "FAIL $1${2:+: $2}"
}

# step NAME TIMEOUT CMD...: run one step under a time limit, output to the console.
step() {
    local name=$1 limit=$2
    shift 2
    echo "==== $name: $*"
    local t0 rc=0
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" || rc=$?
    local dt=$(($(date +%s) - t0))
    if ((rc == 0)); then
        pass "$name (${dt}s)"
    elif ((rc == 124)); then
        fail "$name" "timed out after ${limit}s"
    else
        fail "$name" "exit status $rc (${dt}s)"
    fi
    return "$rc"
}

# ---- 1. peers ---------------------------------------------------------------------------
install_peers() {
    local missing=()
    command -v sipp >/dev/null || missing+=(sip-tester)
    { command -v tshark >/dev/null && command -v dumpcap >/dev/null; } || missing+=(tshark)
    { command -v ip >/dev/null && command -v ss >/dev/null; } || missing+=(iproute2)
    command -v pgrep >/dev/null || missing+=(procps)
    command -v python3 >/dev/null || missing+=(python3)
    # baresip (headless, G.711 + aufile; srtp.so for media_sdes) and sox (its tone files):
    # media_baresip, media_sdes, media_sdes_sipp.
    command -v baresip >/dev/null || missing+=(baresip-core)
    command -v sox >/dev/null || missing+=(sox)
    # The edge-policy tests: attack tools (sipvicious) and kernel bans (nft, setpriv).
    { command -v svmap >/dev/null && command -v svwar >/dev/null && command -v svcrack >/dev/null; } ||
        missing+=(sipvicious)
    command -v nft >/dev/null || missing+=(nftables)
    command -v setpriv >/dev/null || missing+=(util-linux)
    # sngrep: pcap_intercept checks that it opens the capture files.
    command -v sngrep >/dev/null || missing+=(sngrep)
    # The browser harness (lab/browser, browser_harness_kamailio): Chromium driven by
    # playwright-core under Node 20 (the machine's; Debian's nodejs only if none), Kamailio with
    # WebSocket + TLS as the reference WSS registrar, rtpengine for its media, openssl for the
    # test certificate.
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    command -v kamailio >/dev/null || missing+=(kamailio)
    [[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so ]] || missing+=(kamailio-websocket-modules)
    [[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ]] || missing+=(kamailio-tls-modules)
    command -v rtpengine >/dev/null || missing+=(rtpengine-daemon)
    # openssl: tls_call and ws_call make their certificates and read the served one.
    command -v openssl >/dev/null || missing+=(openssl)
    # libfuzzer-sys compiles libFuzzer (C++) for the fuzz step.
    command -v c++ >/dev/null || missing+=(g++)
    # opusic-sys builds its bundled libopus with cmake (sbc-media's transcoding); the cargo
    # steps below run after this one.
    command -v cmake >/dev/null || missing+=(cmake)
    if ((${#missing[@]} == 0)); then
        echo "peers present: $(sipp -v 2>/dev/null | grep -o 'SIPp v[^ ]*' | head -n 1), $(tshark -v 2>/dev/null | head -n 1), $(baresip -h 2>&1 | grep -o 'baresip v[^ ]*' | head -n 1), sox $(sox --version 2>/dev/null | grep -o 'v[0-9.]*'), $(nft --version 2>/dev/null)"
        return 0
    fi
    echo "installing missing peers: ${missing[*]}"
    if [[ $(id -u) != 0 ]]; then
        echo "not root: cannot apt-get install ${missing[*]}" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update &&
        timeout 900 apt-get install -y --no-install-recommends "${missing[@]}" || return 1
    command -v sipp >/dev/null && command -v tshark >/dev/null && command -v dumpcap >/dev/null &&
        command -v ip >/dev/null && command -v ss >/dev/null && command -v pgrep >/dev/null &&
        command -v c++ >/dev/null && command -v baresip >/dev/null && command -v sox >/dev/null &&
        command -v svmap >/dev/null && command -v svwar >/dev/null && command -v svcrack >/dev/null &&
        command -v nft >/dev/null && command -v setpriv >/dev/null && command -v sngrep >/dev/null &&
        [[ -x /usr/bin/chromium ]] && command -v node >/dev/null && command -v npm >/dev/null &&
        command -v kamailio >/dev/null && command -v rtpengine >/dev/null && command -v openssl >/dev/null &&
        [[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so ]] &&
        [[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ]] &&
        command -v cmake >/dev/null
}
echo "==== peers"
if install_peers; then
    pass "peers"
else
    fail "peers" "could not install the lab's packages"
fi

# The browser harness's Node packages (npm ci) and JsSIP bundle, while the network is there
# (the lab tests run in namespaces without it).
step "browser harness setup" 900 bash lab/browser/setup.sh

# ---- 2-5. cargo -------------------------------------------------------------------------
step "cargo fmt" 300 cargo fmt --all -- --check
step "cargo clippy" 1800 cargo clippy --workspace --all-targets -- -D warnings
step "cargo test" 1800 cargo test --workspace
build_ok=1
step "cargo build --release" 1800 cargo build --release -p sbc-core || build_ok=0
# Bounded fuzzing of the SIP parser and the stream framer (stable Rust; see fuzz/run.sh).
step "fuzz (60 s)" 900 bash fuzz/run.sh "${FUZZ_SECONDS:-60}"

# ---- 6. lab -----------------------------------------------------------------------------
tests=()
for t in lab/tests/*.sh; do tests+=("$(basename "$t" .sh)"); done
if ((build_ok == 0)); then
    for t in "${tests[@]}"; do fail "lab $t" "not run: the release build failed"; done
else
    results=$OUT/test-all.results
    : >"$results"
    echo "==== lab: ${#tests[@]} tests against $REPO/target/release/sbc"
    LAB_RESULTS=$results LAB_SUMMARY=0 SBC_BIN=$REPO/target/release/sbc bash lab/run-lab.sh "${tests[@]}"
    for t in "${tests[@]}"; do
        if grep -qx "PASS $t" "$results"; then
            passed=$((passed + 1))
        elif grep -qx "FAIL $t" "$results"; then
            failed=$((failed + 1))
            failed_names+=("lab $t")
        else
            fail "lab $t" "not run (lab setup failed, see above)"
        fi
    done
fi

echo "===="
((failed == 0)) || echo "failed: $(printf '%s, ' "${failed_names[@]}" | sed 's/, $//')"
echo "$passed passed, $failed failed"
((failed == 0))
