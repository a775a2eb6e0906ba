#!/usr/bin/env bash
# webrtc_g711_to_browser: issue 6, done-when 2. A browser (JsSIP in headless Chromium) registers
# over WSS to the SBC (relayed to Kamailio); a G.711-only baresip calls it through Kamailio,
# whose location sends the INVITE to the SBC's token contact, and the SBC to the browser over
# its WSS connection; the SBC transcodes PCMU <-> Opus.
#
#   baresip carol 127.0.0.1:5092 (PCMU/PCMA only, registered with Kamailio, requests through it)
#     --UDP--> Kamailio 127.0.0.1:5080 (lookup("location"): sip:rg...@127.0.0.1:5070)
#     --UDP--> SBC trunk 127.0.0.1:5070 --WSS 127.0.0.1:8443--> browser alice (lab/browser/ua.mjs,
#     register-and-answer; listener profile webrtc, codecs opus, telephone-event)
#   media: baresip <-RTP PCMU-> SBC 127.0.0.1:42000-42999 <-ICE-lite, DTLS-SRTP, Opus-> browser
#   config: lab/configs/webrtc.yaml, lab/configs/kamailio-registrar.cfg; the WSS certificate is
#   self-signed, made here with openssl.
#   traffic: one REGISTER (401 relayed, then 200), one call of CALL_SECS (10) s that baresip
#   hangs up; the browser sends 700 Hz (fake microphone), baresip 1300 Hz.
#
# Checked: Kamailio's location holds the SBC's token contact for the browser, not the browser's;
# the call reached the browser (ua.mjs: registered, call established); the offer the browser
# received names opus (and no G.711), the SBC's 200 to Kamailio names PCMU (and no opus); the
# browser's getStats(): DTLS connected, an SRTP cipher, candidate pair succeeded with the SBC as
# remote, received codec opus, >= 20 packets per second each way, <= 2 % loss; the browser
# heard baresip's 1300 Hz, baresip's recording holds the browser's 700 Hz; the browser's Opus was
# narrowband only (the SBC's maxplaybackrate=8000), as the SBC's log counts it.
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=${LAB_TEST_TIMEOUT_BROWSER:-150}
source "$LAB_DIR/webrtc_e2e.sh"
webrtc_outer_setup webrtc_g711_to_browser
lab_begin webrtc_g711_to_browser

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's WebRTC edge)"
    lab_end
fi
webrtc_require_peers

CALL_SECS=10
BROWSER_HZ=700 BARESIP_HZ=1300

webrtc_cert
kamailio_start
sbc_start lab/configs/webrtc.yaml
capture_start sip "udp port 5070"

lab_step "browser alice registers over WSS via the SBC and waits for a call" \
    "(sends ${BROWSER_HZ} Hz, expects ${BARESIP_HZ} Hz, Opus)"
rm -f "$OUT/alice.ready"
node "$BROWSER_DIR/ua.mjs" --wss wss://127.0.0.1:8443 --uri sip:alice@lab.test \
    --password "$WEBRTC_PASSWORD" --duration "$CALL_SECS" --send-hz "$BROWSER_HZ" \
    --expect-hz "$BARESIP_HZ" --expect-codec opus --ready-file "$OUT/alice.ready" \
    --out "$OUT/alice.json" register-and-answer >/dev/null 2>"$OUT/alice.stderr" </dev/null &
PEER_PID[alice]=$!
wait_file "$OUT/alice.ready" 20 || lab_abort "browser alice not registered after 20 s (see alice.stderr)"
location_is_sbc alice

lab_step "baresip carol (G.711 only, sends ${BARESIP_HZ} Hz) dials sip:alice@lab.test via Kamailio for ${CALL_SECS}s"
baresip_peer carol 5092 10100-10199 "$BARESIP_HZ" --duration "$CALL_SECS" --timeout 60 \
    dial sip:alice@lab.test || lab_fail "baresip carol: no call established (see carol/baresip.log)"
cp "$OUT/carol/baresip.log" "$OUT/carol.ua.log" 2>/dev/null
rc=0
wait "${PEER_PID[alice]}" || rc=$?
unset 'PEER_PID[alice]'
browser_judge alice "$rc"
sbc_anchored alice

got=$(browser_sdp_codecs alice remote)
lab_step "SDP the browser received (the SBC's offer): $got"
[[ " $got " == *" opus "* && " $got " != *" pcmu "* && " $got " != *" pcma "* ]] ||
    lab_fail "the browser's offer from the SBC names '$got', expected opus and no G.711"

capture_stop sip
answer=$(trunk_sdp_codecs "$OUT/sip.pcap" 5070 5080 '^SIP/2.0 200 ' | head -n 1)
lab_step "trunk side: SBC's 200 to Kamailio [${answer#*| }]"
[[ -n $answer && " ${answer#*| } " == *" pcmu "* && " ${answer#*| } " != *" opus "* ]] ||
    lab_fail "trunk-side answer '$answer' does not name PCMU without opus"
media_check carol_heard wav --file "$OUT/carol/received.wav" --hz "$BROWSER_HZ"
opus_input_narrowband

peer_stop kamailio
LAB_PASS_REASON="G.711 baresip called the browser via Kamailio -> SBC token -> WSS: PCMU <-> Opus"
LAB_PASS_REASON+=" (DTLS-SRTP) transcoded, ${BARESIP_HZ} Hz heard by the browser and"
LAB_PASS_REASON+=" ${BROWSER_HZ} Hz by baresip"
lab_end
