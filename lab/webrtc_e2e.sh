# webrtc_e2e.sh: helpers of the WebRTC end-to-end lab tests (webrtc_browser_to_g711,
# webrtc_g711_to_browser, webrtc_browser_to_browser), sourced after lib.sh. The browser is
# lab/browser/ua.mjs (JsSIP in headless Chromium, see lab/browser/README.md), the G.711 phone
# lab/browser/baresip_peer.sh, the registrar Kamailio with lab/configs/kamailio-registrar.cfg
# (password "secret" for every user), the SBC one of lab/configs/webrtc*.yaml.

BROWSER_DIR=$LAB_DIR/browser
# The SBC's media ports (lab/configs/webrtc*.yaml): a browser's remote candidate must be one.
WEBRTC_MEDIA_PORTS=42000-42999
WEBRTC_PASSWORD=secret
declare -A PEER_PID=()

# webrtc_outer_setup NAME: outside the namespace, npm ci + the JsSIP bundle (idempotent; npm
# needs the network, which the namespace has not).
webrtc_outer_setup() {
    [[ -z ${LAB_NS:-} ]] || return 0
    mkdir -p "$LAB_OUT_ROOT"
    if ! bash "$BROWSER_DIR/setup.sh" >"$LAB_OUT_ROOT/browser-setup.log" 2>&1; then
        tail -n 20 "$LAB_OUT_ROOT/browser-setup.log"
        echo "FAIL $1: lab/browser/setup.sh failed (see $LAB_OUT_ROOT/browser-setup.log)"
        exit 1
    fi
}

# webrtc_require_browser: what a browser test needs whatever its peer (Chromium, the JsSIP
# bundle, node, openssl for the WSS certificate, tshark), or the test fails (never a skip).
webrtc_require_browser() {
    require_tool openssl openssl
    require_tool node nodejs
    require_tool tshark tshark
    require_tool dumpcap tshark
    [[ -x ${LAB_CHROMIUM:-/usr/bin/chromium} ]] || lab_abort "/usr/bin/chromium missing (apt-get install chromium)"
    [[ -f $BROWSER_DIR/build/jssip.js ]] || lab_abort "lab/browser/build/jssip.js missing (bash lab/browser/setup.sh)"
}

# webrtc_require_peers: every peer the Kamailio/baresip tests need, or the test fails.
webrtc_require_peers() {
    require_tool kamailio kamailio
    require_tool kamcmd kamailio
    require_tool baresip baresip-core
    require_tool sox sox
    webrtc_require_browser
}

# webrtc_cert: a self-signed certificate for the SBC's WSS listener, in the SBC's working
# directory (the configs name sbc-cert.pem and sbc-key.pem). The browser runs with
# --ignore-certificate-errors.
webrtc_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$OUT/sbc-key.pem" -out "$OUT/sbc-cert.pem" >"$OUT/openssl.log" 2>&1 ||
        lab_abort "openssl could not make a certificate (see openssl.log)"
    lab_step "self-signed certificate for the WSS listener (openssl, P-256)"
}

# kamailio_start: Kamailio as registrar and proxy on udp:127.0.0.1:5080, control socket and
# pid file in $OUT; kam ARGS runs kamcmd against it.
kamailio_start() {
    sed "s|@RUNDIR@|$OUT|g" "$LAB_DIR/configs/kamailio-registrar.cfg" >"$OUT/kamailio.cfg"
    timeout -k 5 "$LAB_TEST_TIMEOUT" kamailio -f "$OUT/kamailio.cfg" -DD -E -m 64 -M 8 \
        -P "$OUT/kamailio.pid" -Y "$OUT" >"$OUT/kamailio.stdout" 2>"$OUT/kamailio.log" </dev/null &
    PEER_PID[kamailio]=$!
    lab_wait_listening "${PEER_PID[kamailio]}" 10 udp:127.0.0.1:5080 ||
        lab_abort "Kamailio did not start (see kamailio.log)"
    lab_step "Kamailio (registrar, lookup(\"location\")) on udp:127.0.0.1:5080"
}
kam() { kamcmd -s "unix:$OUT/kamailio_ctl" "$@"; }

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

# baresip_peer NAME PORT RTP_PORTS HZ answer | ARGS... dial URI: baresip NAME on
# 127.0.0.1:PORT registers sip:NAME@lab.test with Kamailio (its requests go through it), G.711
# only, sends HZ and records what it hears (DIR $OUT/NAME, recording $OUT/NAME/received.wav).
# answer: in the background (PEER_PID[NAME]), returns once registered; dial: in the foreground.
baresip_peer() {
    local name=$1 port=$2 rtp=$3 hz=$4
    shift 4
    local args=(bash "$BROWSER_DIR/baresip_peer.sh" --dir "$OUT/$name" --sip "127.0.0.1:$port"
        --rtp-ports "$rtp" --aor "sip:$name@lab.test" --registrar sip:127.0.0.1:5080
        --password "$WEBRTC_PASSWORD" --send-hz "$hz" --codecs PCMU/8000/1,PCMA/8000/1)
    if [[ $1 == answer ]]; then
        "${args[@]}" --timeout 90 answer >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" </dev/null &
        PEER_PID[$name]=$!
        local i
        for ((i = 0; i < 100; i++)); do
            grep -q "AoR: $name\$" <(kam ul.dump 2>/dev/null) && break
            sleep 0.1
        done
        grep -q "AoR: $name\$" <(kam ul.dump 2>/dev/null) ||
            lab_abort "baresip $name did not register with Kamailio (see $name/baresip.log)"
        lab_step "baresip $name (G.711 only, sends $hz Hz) registered with Kamailio, auto-answers"
    else
        "${args[@]}" "$@" >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" </dev/null
    fi
}

# browser_judge NAME RC: ua.mjs NAME's exit status and checks, shown indented.
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
t = (r.get("stats") or {}).get("transport") or {}
print("transport: dtls %s, role %s, srtp %s" % (t.get("dtlsState"), t.get("dtlsRole"), t.get("srtpCipher")))
EOF
    fi
    if ((rc == 0)); then
        lab_step "browser $name: every check passed"
    else
        lab_fail "browser $name: ua.mjs exit status $rc (see $name.json, $name.stderr)"
    fi
}

# browser_json NAME EXPR: a Python expression on the JSON `r` of browser NAME, printed.
browser_json() {
    python3 -c "import json, sys; r = json.load(open(sys.argv[1])); print($2)" "$OUT/$1.json" 2>/dev/null
}

# sbc_anchored NAME: the browser's selected remote candidate is the SBC (127.0.0.1, a port of
# its media range): its media went through the SBC, not to the other UA.
sbc_anchored() {
    local got addr port
    got=$(browser_json "$1" '((r.get("stats") or {}).get("candidatePair") or {}).get("remote") or {}')
    addr=$(python3 -c 'import ast, sys; print(ast.literal_eval(sys.argv[1]).get("address"))' "$got" 2>/dev/null)
    port=$(python3 -c 'import ast, sys; print(ast.literal_eval(sys.argv[1]).get("port"))' "$got" 2>/dev/null)
    if [[ $addr == 127.0.0.1 && $port =~ ^[0-9]+$ ]] &&
        ((port >= ${WEBRTC_MEDIA_PORTS%-*} && port <= ${WEBRTC_MEDIA_PORTS#*-})); then
        lab_step "browser $1's media peer is the SBC ($addr:$port)"
    else
        lab_fail "browser $1's media peer is '$got', not the SBC (127.0.0.1:$WEBRTC_MEDIA_PORTS)"
    fi
}

# sdp_codecs: the codec names (rtpmap encoding names, lowercase) of the first m=audio of the
# SDP on stdin, space-separated, in m-line order.
sdp_codecs() {
    python3 -c '
import re, sys
sdp = sys.stdin.read().replace("\r", "")
m = re.search(r"^m=audio \d+ \S+ ([\d ]+)$", sdp, re.M)
pts = m.group(1).split() if m else []
names = dict(re.findall(r"^a=rtpmap:(\d+) ([^/\s]+)", sdp, re.M))
print(" ".join(names.get(p, {"0": "pcmu", "8": "pcma"}.get(p, "pt" + p)).lower() for p in pts))'
}

# browser_sdp_codecs NAME local|remote: sdp_codecs of what browser NAME holds.
browser_sdp_codecs() {
    browser_json "$1" "(r.get('sdp') or {}).get('$2') or ''" | sdp_codecs
}

# browser_fingerprints NAME local|remote: the a=fingerprint values of that SDP of browser NAME.
browser_fingerprints() {
    browser_json "$1" "(r.get('sdp') or {}).get('$2') or ''" | tr -d '\r' |
        sed -n 's/^a=fingerprint:[^ ]* //p' | sort -u
}

# location_is_sbc USER: Kamailio's location for USER is an SBC token contact
# (sip:rg<32 hex>@127.0.0.1:5070), never the browser's own (a .invalid host, a WS transport).
location_is_sbc() {
    kam ul.dump >"$OUT/location-$1.txt" 2>&1 || lab_fail "kamcmd ul.dump failed (see location-$1.txt)"
    local contact
    contact=$(awk -v aor="$1" '$1 == "AoR:" && $2 == aor { on = 1; next } $1 == "AoR:" { on = 0 }
        on && $1 == "Address:" { print $2 }' "$OUT/location-$1.txt")
    if [[ $contact =~ ^sip:rg[0-9a-f]{32}@127\.0\.0\.1:5070 && $(wc -l <<<"$contact") == 1 ]]; then
        lab_step "Kamailio's location for $1 is the SBC's token contact $contact"
    else
        lab_fail "Kamailio's location for $1 is '${contact:-none}', not one SBC token contact (see location-$1.txt)"
    fi
    grep -qiE "\.invalid|transport=wss?" "$OUT/location-$1.txt" &&
        lab_fail "a browser's own contact reached Kamailio's location (see location-$1.txt)"
    return 0
}

# trunk_sdp_codecs PCAP SPORT DPORT REGEX: for each SIP message over UDP from port SPORT to
# port DPORT in PCAP whose start line matches REGEX (e.g. '^INVITE '), one line: the start
# line, " | ", and the codec names of its SDP (sdp_codecs). Messages without SDP are left out.
trunk_sdp_codecs() {
    python3 - "$@" <<'PY'
import re, struct, sys
path, sport, dport, regex = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
data = open(path, "rb").read()
off = 24
while off + 16 <= len(data):
    incl = struct.unpack_from("<I", data, off + 8)[0]
    pkt = data[off + 16 : off + 16 + incl]
    off += 16 + incl
    if len(pkt) < 42 or pkt[12:14] != b"\x08\x00" or pkt[23] != 17:
        continue
    ihl = (pkt[14] & 15) * 4
    udp = pkt[14 + ihl :]
    sp, dp = struct.unpack_from("!HH", udp, 0)
    if sp != sport or dp != dport:
        continue
    msg = udp[8:].decode(errors="replace").replace("\r", "")
    start = msg.split("\n", 1)[0]
    if not re.search(regex, start) or "\nm=audio " not in msg:
        continue
    sdp = msg.split("\n\n", 1)[1]
    m = re.search(r"^m=audio \d+ \S+ ([\d ]+)$", sdp, re.M)
    pts = m.group(1).split() if m else []
    names = dict(re.findall(r"^a=rtpmap:(\d+) ([^/\s]+)", sdp, re.M))
    print(start + " | " + " ".join(names.get(p, {"0": "pcmu", "8": "pcma"}.get(p, "pt" + p)).lower() for p in pts))
PY
}

# opus_input_narrowband: the SBC's transcoder logs, when the call's media ends, the coded
# bandwidths of the Opus packets it decoded. The SBC's SDP asks the browser for narrowband
# (maxplaybackrate=8000, the trunk is G.711): Chrome must have sent narrowband only.
opus_input_narrowband() {
    local line="" i
    for ((i = 0; i < 50; i++)); do
        line=$(grep -m1 'Opus packets decoded by coded bandwidth' "$OUT/sbc.log" 2>/dev/null) && break
        sleep 0.1
    done
    [[ -n $line ]] || lab_fail "no 'Opus packets decoded by coded bandwidth' line in sbc.log"
    local counts=${line#*side=* }
    lab_step "browser's Opus as the SBC decoded it: $counts"
    [[ $counts =~ nb=([0-9]+)\ mb=0\ wb=0\ swb=0\ fb=0 ]] && ((BASH_REMATCH[1] >= 100)) ||
        lab_fail "the browser's Opus is not all narrowband ($counts), maxplaybackrate=8000 ignored?"
}

# browser_presses_keys_to_ivr CONFIG SCENARIO: the DTMF tests' call. The SBC on CONFIG (with its
# self-signed WSS certificate), a capture of the trunk leg (trunk.pcap), a SIPp IVR on
# 127.0.0.1:5080 running SCENARIO with -rtp_echo; the browser alice calls sip:ivr@lab.test for
# CALL_SECS without registering, sending BROWSER_HZ and pressing DIGITS at DTMF_AT. Judged
# (ua.mjs's checks), anchored at the SBC, and the SBC's answer must name opus and telephone-event,
# no G.711. Then the IVR must have completed its one call. DTMF_METRIC_BEFORE:
# sbc_dtmf_interworked_total before the call.
browser_presses_keys_to_ivr() {
    local config=$1 scenario=$2 rc=0 got
    webrtc_cert
    sbc_start "$config"
    capture_start trunk udp
    uas_start ivr 127.0.0.1:5080 "$scenario" -rtp_echo
    DTMF_METRIC_BEFORE=$(metric sbc_dtmf_interworked_total)

    lab_step "browser alice calls sip:ivr@lab.test for ${CALL_SECS}s without registering, sends $DIGITS" \
        "at ${DTMF_AT}s (sends ${BROWSER_HZ} Hz, Opus)"
    node "$BROWSER_DIR/ua.mjs" --wss wss://127.0.0.1:8443 --uri sip:alice@lab.test \
        --duration "$CALL_SECS" --send-hz "$BROWSER_HZ" --expect-codec opus \
        --send-dtmf "$DIGITS" --dtmf-at "$DTMF_AT" \
        --out "$OUT/alice.json" call sip:ivr@lab.test >/dev/null 2>"$OUT/alice.stderr" </dev/null || rc=$?
    browser_judge alice "$rc"
    sbc_anchored alice
    got=$(browser_sdp_codecs alice remote)
    lab_step "SDP the browser received (the SBC's answer): $got"
    [[ " $got " == *" opus "* && " $got " == *" telephone-event "* && " $got " != *" pcmu "* ]] ||
        lab_fail "the browser's answer from the SBC names '$got', expected opus and telephone-event, no G.711"

    uas_finish ivr 1
    capture_stop trunk
}
