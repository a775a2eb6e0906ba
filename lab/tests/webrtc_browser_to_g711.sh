#!/usr/bin/env bash
# webrtc_browser_to_g711: issue 6, done-when 1. A browser (JsSIP in headless Chromium) registers
# over WSS to the SBC, which relays the registration to Kamailio (the registrar), and calls a
# G.711-only baresip through the SBC; the SBC transcodes Opus <-> PCMU.
#
#   browser alice (lab/browser/ua.mjs) --WSS--> SBC wss 127.0.0.1:8443 (profile webrtc,
#     codecs opus, telephone-event) -- trunk 127.0.0.1:5070 --UDP--> Kamailio 127.0.0.1:5080
#     (lookup("location")) --> baresip bob 127.0.0.1:5090 (PCMU/PCMA only, registered with
#     Kamailio directly, auto-answer; trunk media codecs PCMU, PCMA, telephone-event)
#   media: browser <-ICE-lite, DTLS-SRTP, Opus-> SBC 127.0.0.1:42000-42999 <-RTP PCMU-> baresip
#   config: lab/configs/webrtc.yaml, lab/configs/kamailio-registrar.cfg; the WSS certificate is
#   self-signed, made here with openssl.
#   traffic: one REGISTER (401 from Kamailio relayed, then 200), one call of CALL_SECS (10) s
#   that the browser hangs up; the browser sends 700 Hz (fake microphone), baresip 1300 Hz.
#
# Checked: the browser registered (200) and Kamailio's location holds the SBC's token contact
# (sip:rg...@127.0.0.1:5070), not the browser's; the SDP the browser received names opus (and
# no G.711), the SBC's INVITE to Kamailio and baresip's answer name PCMU (and no opus); the
# browser's getStats(): DTLS connected, an SRTP cipher, candidate pair succeeded with the SBC as
# remote, received codec opus, >= 20 packets per second each way, <= 2 % loss; the browser
# heard baresip's 1300 Hz (WebAudio), baresip's recording holds the browser's 700 Hz; the
# browser's Opus was narrowband only (the SBC's maxplaybackrate=8000), as the SBC's log counts it.
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=${LAB_TEST_TIMEOUT_BROWSER:-150}
source "$LAB_DIR/webrtc_e2e.sh"
webrtc_outer_setup webrtc_browser_to_g711
lab_begin webrtc_browser_to_g711

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
baresip_peer bob 5090 10000-10099 "$BARESIP_HZ" answer

lab_step "browser alice registers over WSS via the SBC and calls sip:bob@lab.test for ${CALL_SECS}s" \
    "(sends ${BROWSER_HZ} Hz, expects ${BARESIP_HZ} Hz, Opus)"
rm -f "$OUT/alice.ready"
rc=0
node "$BROWSER_DIR/ua.mjs" --wss wss://127.0.0.1:8443 --uri sip:alice@lab.test \
    --password "$WEBRTC_PASSWORD" --duration "$CALL_SECS" --send-hz "$BROWSER_HZ" \
    --expect-hz "$BARESIP_HZ" --expect-codec opus --ready-file "$OUT/alice.ready" \
    --out "$OUT/alice.json" register-and-call sip:bob@lab.test \
    >/dev/null 2>"$OUT/alice.stderr" </dev/null &
PEER_PID[alice]=$!
# While the call is up, the browser is registered: Kamailio must know the SBC only.
wait_file "$OUT/alice.ready" 20 || lab_fail "browser alice not registered after 20 s"
location_is_sbc alice
wait "${PEER_PID[alice]}" || rc=$?
unset 'PEER_PID[alice]'
browser_judge alice "$rc"
sbc_anchored alice

got=$(browser_sdp_codecs alice remote)
lab_step "SDP the browser received (the SBC's answer): $got"
[[ " $got " == *" opus "* && " $got " != *" pcmu "* && " $got " != *" pcma "* ]] ||
    lab_fail "the browser's answer from the SBC names '$got', expected opus and no G.711"

peer_stop bob
capture_stop sip
offer=$(trunk_sdp_codecs "$OUT/sip.pcap" 5070 5080 '^INVITE ' | head -n 1)
answer=$(trunk_sdp_codecs "$OUT/sip.pcap" 5080 5070 '^SIP/2.0 200 ' | head -n 1)
lab_step "trunk side: SBC's INVITE [${offer#*| }], answer [${answer#*| }]"
for sdp in "offer:$offer" "answer:$answer"; do
    codecs=" ${sdp#*| } "
    [[ -n ${sdp#*:} && $codecs == *" pcmu "* && $codecs != *" opus "* ]] ||
        lab_fail "trunk-side ${sdp%%:*} '${sdp#*:}' does not name PCMU without opus"
done
cp "$OUT/bob/baresip.log" "$OUT/bob.ua.log" 2>/dev/null
media_check bob_heard wav --file "$OUT/bob/received.wav" --hz "$BROWSER_HZ"
opus_input_narrowband

peer_stop kamailio
LAB_PASS_REASON="browser registered over WSS via the SBC (Kamailio holds the SBC's token), called"
LAB_PASS_REASON+=" G.711 baresip: Opus (DTLS-SRTP) <-> PCMU transcoded, ${BARESIP_HZ} Hz heard by"
LAB_PASS_REASON+=" the browser and ${BROWSER_HZ} Hz by baresip"
lab_end
