#!/usr/bin/env bash
# webrtc_browser_to_browser: issue 6, done-when 3. Two browsers (JsSIP in headless Chromium)
# register over WSS to the SBC (relayed to Kamailio) and one calls the other through it: both
# legs Opus (no transcoding), DTLS-SRTP terminated and re-keyed by the SBC on each browser leg.
#
#   browser alice --WSS--> SBC wss 127.0.0.1:8443 -- trunk 127.0.0.1:5070 --UDP--> Kamailio
#     127.0.0.1:5080 (lookup("location"): bob's SBC token) --UDP--> SBC trunk 5070 --WSS-->
#     browser bob (listener profile webrtc, no codec restriction anywhere)
#   media: alice <-DTLS-SRTP Opus-> SBC <-RTP Opus-> SBC <-DTLS-SRTP Opus-> bob (all on
#     127.0.0.1:42000-42999: the call passes the SBC twice, as an access call and a trunk call)
#   config: lab/configs/webrtc-opus.yaml, lab/configs/kamailio-registrar.cfg; the WSS
#   certificate is self-signed, made here with openssl.
#   traffic: two REGISTERs (each 401 relayed, then 200), one call of CALL_SECS (10) s that alice
#   hangs up; alice sends 500 Hz, bob 1100 Hz.
#
# Checked: Kamailio's location holds SBC token contacts for both browsers; each browser's
# getStats(): DTLS connected, an SRTP cipher, candidate pair succeeded with the SBC as remote,
# received codec opus, >= 20 packets per second each way, <= 2 % loss, the other's tone heard;
# the SDP each browser received names opus and carries a fingerprint that is neither its own
# nor the other browser's, and the same for both (the SBC relay's one certificate: re-keyed per
# leg); the SDPs on the trunk side are led by opus (passed through, not transcoded).
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=${LAB_TEST_TIMEOUT_BROWSER:-150}
source "$LAB_DIR/webrtc_e2e.sh"
webrtc_outer_setup webrtc_browser_to_browser
lab_begin webrtc_browser_to_browser

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's WebRTC edge)"
    lab_end
fi
webrtc_require_peers

CALL_SECS=10
ALICE_HZ=500 BOB_HZ=1100

webrtc_cert
kamailio_start
sbc_start lab/configs/webrtc-opus.yaml
capture_start sip "udp port 5070"

ua=(node "$BROWSER_DIR/ua.mjs" --wss wss://127.0.0.1:8443 --password "$WEBRTC_PASSWORD"
    --duration "$CALL_SECS" --expect-codec opus)
lab_step "browser bob registers over WSS via the SBC and waits (sends ${BOB_HZ} Hz)"
rm -f "$OUT/bob.ready" "$OUT/alice.ready"
"${ua[@]}" --uri sip:bob@lab.test --send-hz "$BOB_HZ" --expect-hz "$ALICE_HZ" \
    --ready-file "$OUT/bob.ready" --out "$OUT/bob.json" register-and-answer \
    >/dev/null 2>"$OUT/bob.stderr" </dev/null &
PEER_PID[bob]=$!
wait_file "$OUT/bob.ready" 20 || lab_abort "browser bob not registered after 20 s (see bob.stderr)"
location_is_sbc bob

lab_step "browser alice registers and calls sip:bob@lab.test for ${CALL_SECS}s (sends ${ALICE_HZ} Hz)"
"${ua[@]}" --uri sip:alice@lab.test --send-hz "$ALICE_HZ" --expect-hz "$BOB_HZ" \
    --ready-file "$OUT/alice.ready" --out "$OUT/alice.json" register-and-call sip:bob@lab.test \
    >/dev/null 2>"$OUT/alice.stderr" </dev/null &
PEER_PID[alice]=$!
wait_file "$OUT/alice.ready" 20 || lab_fail "browser alice not registered after 20 s"
location_is_sbc alice
for name in alice bob; do
    rc=0
    wait "${PEER_PID[$name]}" || rc=$?
    unset 'PEER_PID[$name]'
    browser_judge "$name" "$rc"
    sbc_anchored "$name"
done

# Re-keyed per leg: what each browser received carries the SBC's fingerprint, never a browser's.
own=$(
    browser_fingerprints alice local
    browser_fingerprints bob local
)
lab_step "the browsers' own fingerprints: ${own//$'\n'/ }"
for name in alice bob; do
    got=$(browser_sdp_codecs "$name" remote)
    fp=$(browser_fingerprints "$name" remote)
    lab_step "$name received: codecs [$got], fingerprint ${fp:-none}"
    [[ " $got " == *" opus "* ]] || lab_fail "the SDP $name received names '$got', no opus"
    if [[ -z $fp || $(wc -l <<<"$own") -lt 2 ]]; then
        lab_fail "fingerprints missing (browsers' own: '$own', $name received: '$fp')"
    elif grep -qxF -f <(echo "$own") <<<"$fp"; then
        lab_fail "$name received a browser's own DTLS fingerprint: the SBC did not re-key the leg"
    fi
done

# The relay has one DTLS certificate (docs/architecture.md, secure::dtls): both legs name it.
[[ -n $(browser_fingerprints alice remote) &&
    $(browser_fingerprints alice remote) == "$(browser_fingerprints bob remote)" ]] ||
    lab_fail "the browsers received different fingerprints: not both the SBC relay's certificate"

capture_stop sip
while read -r line; do
    [[ -n $line ]] || continue
    lab_step "trunk side: $line"
    [[ ${line#*| } == "opus "* ]] || lab_fail "trunk-side SDP not led by opus (transcoded?): $line"
done < <(
    trunk_sdp_codecs "$OUT/sip.pcap" 5070 5080 '^(INVITE |SIP/2.0 200 )'
    trunk_sdp_codecs "$OUT/sip.pcap" 5080 5070 '^(INVITE |SIP/2.0 200 )'
)
[[ $(trunk_sdp_codecs "$OUT/sip.pcap" 5070 5080 '^(INVITE |SIP/2.0 200 )' | wc -l) -ge 2 ]] ||
    lab_fail "expected the SBC's INVITE and 200 toward Kamailio in sip.pcap"

peer_stop kamailio
LAB_PASS_REASON="two browsers registered via the SBC and called each other through it: Opus"
LAB_PASS_REASON+=" end to end, DTLS-SRTP re-keyed per leg (SBC fingerprints, SBC candidates),"
LAB_PASS_REASON+=" ${ALICE_HZ} Hz and ${BOB_HZ} Hz heard"
lab_end
