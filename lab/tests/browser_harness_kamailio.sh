#!/usr/bin/env bash
# browser_harness_kamailio: the browser harness (lab/browser) proven against a reference
# WebRTC setup without our SBC: Kamailio 5.6 (websocket + tls modules) as WSS registrar and
# proxy, rtpengine 10.5 anchoring the media (DTLS-SRTP + ICE toward the browser, plain G.711
# RTP toward baresip).
#
#   browser (JsSIP in headless Chromium, ua.mjs)  --WSS 127.0.0.1:8443-->  Kamailio
#     --UDP 127.0.0.1:5060-->  baresip bob@127.0.0.1:5080 (G.711 only, registered, auto-answer)
#   media: browser <-DTLS-SRTP/ICE-> rtpengine 127.0.0.1:30000-30999 <-RTP PCMU-> baresip
#   config: lab/browser/kamailio-wss.cfg (-A WITH_RTPENGINE), rtpengine's own config written
#   here (table = -1, interface 127.0.0.1, ng on 127.0.0.1:2223), a self-signed certificate
#   made with openssl for the WSS listener (the browser runs with --ignore-certificate-errors).
#   traffic: one call of CALL_SECS (8) s: the browser registers (digest, password labpass),
#   calls sip:bob@lab.test and hangs up. The browser's fake microphone sends 700 Hz, baresip
#   sends 1300 Hz.
#
# Expectations: the browser registered (200) and the call was established; its getStats()
# show DTLS connected, an SRTP cipher, a succeeded candidate pair whose remote end is
# rtpengine (127.0.0.1, a port in rtpengine's range: the media was anchored, not direct),
# >= 20 RTP packets per second of call each way, <= 2 % loss, PCMU received; the strongest
# frequency the browser heard (WebAudio analysis of the remote track) is baresip's 1300 Hz,
# and the strongest in what baresip received and recorded (sndfile) is the browser's 700 Hz.
#
# BROWSER_HARNESS_FULL=1 adds two calls (not run by CI, to keep its time small): baresip
# carol dials the registered browser (register-and-answer), and browser to browser.
#
# lab/browser/setup.sh (npm ci + the JsSIP bundle) runs first, outside the namespace (npm
# needs the network); it is idempotent.
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=${LAB_TEST_TIMEOUT_BROWSER:-150}
BROWSER_DIR=$LAB_DIR/browser
if [[ -z ${LAB_NS:-} ]]; then
    mkdir -p "$LAB_OUT_ROOT"
    if ! bash "$BROWSER_DIR/setup.sh" >"$LAB_OUT_ROOT/browser-setup.log" 2>&1; then
        tail -n 20 "$LAB_OUT_ROOT/browser-setup.log"
        echo "FAIL browser_harness_kamailio: lab/browser/setup.sh failed (see $LAB_OUT_ROOT/browser-setup.log)"
        exit 1
    fi
fi
lab_begin browser_harness_kamailio

CALL_SECS=8
BROWSER_HZ=700 BARESIP_HZ=1300
RTPENGINE_PORTS=30000-30999
PASSWORD=labpass

for tool in kamailio rtpengine baresip sox openssl node python3; do
    command -v "$tool" >/dev/null ||
        lab_abort "$tool not installed (bash lab/test-all.sh installs the lab's peers)"
done
for mod in websocket tls xhttp rtpengine; do
    [[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/$mod.so ]] ||
        lab_abort "Kamailio module $mod.so missing (kamailio-websocket-modules, kamailio-tls-modules)"
done
[[ -x /usr/bin/chromium ]] || lab_abort "/usr/bin/chromium missing (apt-get install chromium)"

declare -A PEER_PID=()

# peer_stop NAME: SIGTERM a peer started here, SIGKILL after 5 s.
peer_stop() {
    local pid=${PEER_PID[$1]:-} i
    [[ -n $pid ]] || return 0
    unset 'PEER_PID[$1]'
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && lab__kill_tree "$pid"
    wait "$pid" 2>/dev/null
    return 0
}

# wait_file FILE SECONDS: true once FILE exists.
wait_file() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -e $1 ]] && return 0
        sleep 0.1
    done
    return 1
}

# browser_judge NAME: ua.mjs NAME's exit status and checks, shown indented.
browser_judge() {
    local name=$1 rc=$2
    if [[ -s $OUT/$name.json ]]; then
        python3 - "$OUT/$name.json" <<'EOF' | sed 's/^/   /'
import json, sys
r = json.load(open(sys.argv[1]))
for c in r.get("checks", []):
    print(("ok   " if c["ok"] else "FAIL ") + c["name"] + ": " + c["detail"])
for e in r.get("errors", []):
    print("error: " + e)
EOF
    fi
    if ((rc == 0)); then
        lab_step "browser $name: every check passed"
    else
        lab_fail "browser $name: ua.mjs exit status $rc (see $name.json, $name.stderr)"
    fi
}

# rtpengine_anchored NAME: the browser's selected remote candidate is rtpengine's.
rtpengine_anchored() {
    local got
    got=$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
c = ((r.get("stats") or {}).get("candidatePair") or {}).get("remote") or {}
print(c.get("address"), c.get("port"))' "$OUT/$1.json" 2>/dev/null)
    local addr=${got% *} port=${got#* }
    if [[ $addr == 127.0.0.1 && $port =~ ^[0-9]+$ ]] &&
        ((port >= ${RTPENGINE_PORTS%-*} && port <= ${RTPENGINE_PORTS#*-})); then
        lab_step "browser $1's media peer is rtpengine ($addr:$port)"
    else
        lab_fail "browser $1's media peer is '$got', not rtpengine ($RTPENGINE_PORTS)"
    fi
}

# ---- the reference setup -------------------------------------------------------------
lab_step "self-signed certificate for the WSS listener"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$OUT/wss-key.pem" -out "$OUT/wss-cert.pem" \
    -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >"$OUT/openssl.log" 2>&1 ||
    lab_abort "openssl could not make a certificate (see openssl.log)"
cat >"$OUT/tls.cfg" <<EOF
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = $OUT/wss-key.pem
certificate = $OUT/wss-cert.pem
EOF

cat >"$OUT/rtpengine.conf" <<EOF
[rtpengine]
table = -1
interface = 127.0.0.1
listen-ng = 127.0.0.1:2223
port-min = ${RTPENGINE_PORTS%-*}
port-max = ${RTPENGINE_PORTS#*-}
log-level = 6
log-stderr = true
foreground = true
EOF
lab_step "starting rtpengine (ng 127.0.0.1:2223, media $RTPENGINE_PORTS)"
timeout -k 5 "$LAB_TEST_TIMEOUT" rtpengine --config-file="$OUT/rtpengine.conf" \
    --config-section=rtpengine >"$OUT/rtpengine.stderr" 2>&1 </dev/null &
PEER_PID[rtpengine]=$!
rc=0
lab_wait_listening "${PEER_PID[rtpengine]}" 10 udp:127.0.0.1:2223 || rc=$?
((rc == 0)) || lab_abort "rtpengine not listening on udp:127.0.0.1:2223 (see rtpengine.stderr)"

lab_step "starting Kamailio (udp/tcp 5060, ws 8080, wss 8443, rtpengine)"
mkdir -p "$OUT/kamailio-run"
timeout -k 5 "$LAB_TEST_TIMEOUT" kamailio -f "$BROWSER_DIR/kamailio-wss.cfg" -DD -E -m 64 -M 8 \
    -w "$OUT/kamailio-run" -Y "$OUT/kamailio-run" -A "TLS_CFG=\"$OUT/tls.cfg\"" \
    -A "LAB_PASSWORD=\"$PASSWORD\"" -A WITH_RTPENGINE >"$OUT/kamailio.stderr" 2>&1 </dev/null &
PEER_PID[kamailio]=$!
rc=0
lab_wait_listening "${PEER_PID[kamailio]}" 15 udp:127.0.0.1:5060 tcp:127.0.0.1:8443 || rc=$?
((rc == 0)) || lab_abort "Kamailio not listening on udp 5060 and tls 8443 (see kamailio.stderr)"

# ---- baresip bob: registered, auto-answers, G.711 only ---------------------------------
lab_step "baresip bob on 127.0.0.1:5080 registers, auto-answers (${BARESIP_HZ} Hz, G.711)"
bash "$BROWSER_DIR/baresip_peer.sh" --dir "$OUT/bob" --sip 127.0.0.1:5080 \
    --rtp-ports 10000-10099 --aor sip:bob@lab.test --registrar sip:127.0.0.1:5060 \
    --password "$PASSWORD" --send-hz "$BARESIP_HZ" --timeout $((CALL_SECS + 60)) answer \
    >"$OUT/bob.stdout" 2>"$OUT/bob.stderr" </dev/null &
PEER_PID[bob]=$!
for ((i = 0; i < 100; i++)); do
    tr '\r' '\n' 2>/dev/null <"$OUT/bob/baresip.log" | grep -q "200 OK" && break
    sleep 0.1
done
tr '\r' '\n' 2>/dev/null <"$OUT/bob/baresip.log" | grep -Eq "registered|200 OK" ||
    lab_abort "baresip bob did not register with Kamailio (see bob/baresip.log)"

# ---- call 1: browser alice -> baresip bob ----------------------------------------------
ua=(node "$BROWSER_DIR/ua.mjs" --wss wss://127.0.0.1:8443 --password "$PASSWORD"
    --duration "$CALL_SECS")
lab_step "browser alice registers over WSS and calls sip:bob@lab.test for ${CALL_SECS}s" \
    "(sends ${BROWSER_HZ} Hz, expects ${BARESIP_HZ} Hz, PCMU)"
rc=0
"${ua[@]}" --uri sip:alice@lab.test --send-hz "$BROWSER_HZ" --expect-hz "$BARESIP_HZ" \
    --expect-codec PCMU --out "$OUT/alice.json" register-and-call sip:bob@lab.test \
    >/dev/null 2>"$OUT/alice.stderr" </dev/null || rc=$?
browser_judge alice "$rc"
rtpengine_anchored alice
peer_stop bob
cp "$OUT/bob/baresip.log" "$OUT/bob.ua.log" 2>/dev/null
media_check bob_heard wav --file "$OUT/bob/received.wav" --hz "$BROWSER_HZ"

if [[ ${BROWSER_HARNESS_FULL:-0} == 1 ]]; then
    # ---- call 2: baresip carol -> the registered browser dave ---------------------------
    lab_step "browser dave registers and waits; baresip carol dials sip:dave@lab.test"
    rm -f "$OUT/dave.ready"
    "${ua[@]}" --uri sip:dave@lab.test --send-hz "$BROWSER_HZ" --expect-hz "$BARESIP_HZ" \
        --expect-codec PCMU --ready-file "$OUT/dave.ready" --out "$OUT/dave.json" \
        register-and-answer >/dev/null 2>"$OUT/dave.stderr" </dev/null &
    PEER_PID[dave]=$!
    wait_file "$OUT/dave.ready" 20 || lab_fail "browser dave not registered after 20 s"
    bash "$BROWSER_DIR/baresip_peer.sh" --dir "$OUT/carol" --sip 127.0.0.1:5090 \
        --rtp-ports 10100-10199 --aor sip:carol@lab.test --registrar sip:127.0.0.1:5060 \
        --password "$PASSWORD" --send-hz "$BARESIP_HZ" --duration "$CALL_SECS" \
        dial sip:dave@lab.test >"$OUT/carol.stdout" 2>"$OUT/carol.stderr" </dev/null ||
        lab_fail "baresip carol: no call established (see carol/baresip.log)"
    cp "$OUT/carol/baresip.log" "$OUT/carol.ua.log" 2>/dev/null
    rc=0
    wait "${PEER_PID[dave]}" || rc=$?
    unset 'PEER_PID[dave]'
    browser_judge dave "$rc"
    rtpengine_anchored dave
    media_check carol_heard wav --file "$OUT/carol/received.wav" --hz "$BROWSER_HZ"

    # ---- call 3: browser erin -> browser frank (Opus, both through rtpengine) -----------
    lab_step "browser frank waits; browser erin calls sip:frank@lab.test (Opus)"
    rm -f "$OUT/frank.ready"
    "${ua[@]}" --uri sip:frank@lab.test --send-hz 1100 --expect-hz 500 --expect-codec opus \
        --ready-file "$OUT/frank.ready" --out "$OUT/frank.json" register-and-answer \
        >/dev/null 2>"$OUT/frank.stderr" </dev/null &
    PEER_PID[frank]=$!
    wait_file "$OUT/frank.ready" 20 || lab_fail "browser frank not registered after 20 s"
    rc=0
    "${ua[@]}" --uri sip:erin@lab.test --send-hz 500 --expect-hz 1100 --expect-codec opus \
        --out "$OUT/erin.json" register-and-call sip:frank@lab.test \
        >/dev/null 2>"$OUT/erin.stderr" </dev/null || rc=$?
    browser_judge erin "$rc"
    rc=0
    wait "${PEER_PID[frank]}" || rc=$?
    unset 'PEER_PID[frank]'
    browser_judge frank "$rc"
fi

peer_stop kamailio
peer_stop rtpengine
LAB_PASS_REASON="browser (JsSIP, Chromium) registered over WSS to Kamailio and called baresip"
LAB_PASS_REASON+=" through rtpengine: DTLS-SRTP, PCMU, ${BARESIP_HZ} Hz heard by the browser and"
LAB_PASS_REASON+=" ${BROWSER_HZ} Hz by baresip"
[[ ${BROWSER_HARNESS_FULL:-0} == 1 ]] &&
    LAB_PASS_REASON+="; also baresip -> browser and browser -> browser"
lab_end
