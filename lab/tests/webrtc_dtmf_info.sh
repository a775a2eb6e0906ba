#!/usr/bin/env bash
# webrtc_dtmf_info: issue 6, DTMF interworking with a real browser. A browser (JsSIP in headless
# Chromium) calls an IVR on a trunk with `dtmf: info` and presses 1 4 7 # (RFC 4733 from
# Chrome's RTCDTMFSender, telephone-event/48000 inside DTLS-SRTP); the IVR must get them as SIP
# INFO, in order, once each.
#
#   browser alice (lab/browser/ua.mjs, `call` mode: no REGISTER) --WSS--> SBC wss 127.0.0.1:8443
#     (profile webrtc, codecs opus, telephone-event) | trunk 127.0.0.1:5070 --UDP--> SIPp IVR
#     127.0.0.1:5080 (lab/scenarios/uas_ivr_dtmf_info.xml; trunk codecs PCMU,
#     telephone-event, dtmf: info)
#   media: browser <-ICE-lite, DTLS-SRTP, Opus + telephone-event/48000-> SBC 127.0.0.1:42000-42999
#     <-RTP PCMU-> SIPp (-rtp_echo: it sends back what it gets, so the browser receives RTP)
#   config: lab/configs/webrtc_dtmf_info.yaml; the WSS certificate is self-signed (openssl).
#   traffic: one call of CALL_SECS (8) s that the browser hangs up; DTMF_AT (2) s into it the
#   browser sends DIGITS (147#: 160 ms tones, 100 ms gaps, as ua.js asks RTCDTMFSender).
#
# Checked: SIPp (its regexps) got an offer on RTP/AVP without telephone-event or a=crypto, then
# exactly four INFOs, in order, Content-Type application/dtmf-relay, Signal=1, 4, 7, #, each
# with Duration 40..500 ms, then the browser's BYE (any other request fails its call); tshark on
# the trunk leg sees the same four INFOs, 200..1000 ms apart (one per key press), and only PCMU
# (payload type 0, no event packet) toward SIPp's media port; the SBC logged four "DTMF: RFC
# 4733 to SIP INFO" with the digits in order and sbc_dtmf_interworked_total rose by 4; ua.mjs:
# call established, DTLS connected, SRTP, candidate pair with the SBC as remote, codec opus,
# packets both ways, <= 2 % loss, "DTMF sent" 147#; the G.711 on the trunk leg decodes to the
# browser's 700 Hz (media_check tone: the SBC transcoded the browser's Opus; SIPp only echoes it).
# The browser does not judge the tone it gets back: it would hear its own tone, and with
# --expect-hz only 0.61..0.78 of its frames after the digits held it (3 runs; 10..15 of 51
# silent), most likely Chrome's echo canceller removing its own tone from its microphone.
# Validated with the feature off (`dtmf: rfc4733` in the config): SIPp's offer then holds
# telephone-event and no INFO comes, so its call fails, and the SBC logs no interworked digit.
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=${LAB_TEST_TIMEOUT_BROWSER:-150}
source "$LAB_DIR/webrtc_e2e.sh"
webrtc_outer_setup webrtc_dtmf_info
lab_begin webrtc_dtmf_info

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's WebRTC edge and DTMF interworking)"
    lab_end
fi
webrtc_require_browser

CALL_SECS=8 DTMF_AT=2 DIGITS='147#'
BROWSER_HZ=700

browser_presses_keys_to_ivr lab/configs/webrtc_dtmf_info.yaml uas_ivr_dtmf_info.xml
before=$DTMF_METRIC_BEFORE

# What crossed the trunk leg, as tshark decodes it: the INFOs (in capture order) and the RTP
# toward SIPp's media port (from its own SDP, o=callee).
sipp_port=$(awk '/o=callee/ { own = 1 } own && /m=audio/ { print $2; exit }' "$OUT/ivr.messages.log")
[[ -n $sipp_port ]] || lab_abort "no media port in SIPp's 200 (ivr.messages.log)"
# (a retransmission, sip.resend, is the same request, not a second key press)
info_filter='sip.Method == "INFO" && sip.resend == 0 && udp.srcport == 5070 && udp.dstport == 5080'
tshark -r "$OUT/trunk.pcap" -n -Y "$info_filter" -T fields -e frame.time_relative -e udp.payload \
    >"$OUT/infos.txt" 2>"$OUT/tshark.stderr"
tshark -r "$OUT/trunk.pcap" -n -d "udp.port==$sipp_port,rtp" -Y "rtp && udp.dstport == $sipp_port" \
    -T fields -e rtp.p_type >"$OUT/rtp_to_ivr.txt" 2>>"$OUT/tshark.stderr"
lab_step "trunk leg (tshark): $(wc -l <"$OUT/infos.txt") INFO(s), $(wc -l <"$OUT/rtp_to_ivr.txt") RTP" \
    "packets to SIPp's port $sipp_port, payload types: $(sort -n "$OUT/rtp_to_ivr.txt" | uniq -c | xargs)"
if ! python3 - "$OUT/infos.txt" "$DIGITS" >"$OUT/info_check.txt" 2>&1 <<'PY'; then
import re, sys
want = list(sys.argv[2])
fail, got, times = [], [], []
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    t, payload = line.split()
    times.append(float(t))
    msg = bytes.fromhex(payload.replace(":", "")).decode(errors="replace")
    head, _, body = msg.partition("\r\n\r\n")
    ct = re.search(r"^(?:Content-Type|c):\s*(.*?)\s*$", head, re.M | re.I)
    ctype = ct.group(1) if ct else ""
    sig = re.search(r"^Signal=\s*(\S)\s*$", body, re.M)
    dur = re.search(r"^Duration=\s*(\d+)\s*$", body, re.M)
    got.append((sig.group(1) if sig else None, int(dur.group(1)) if dur else None))
    if ctype.lower() != "application/dtmf-relay":
        fail.append(f"INFO with Content-Type '{ctype}'")
gaps = [round((b - a) * 1000) for a, b in zip(times, times[1:])]
print("INFOs (signal, duration ms):", got, "ms between them:", gaps)
if [g[0] for g in got] != want:
    fail.append(f"digits {[g[0] for g in got]}, expected {want} once each in order")
bad = [g for g in got if g[1] is None or not 40 <= g[1] <= 500]
if bad:
    fail.append(f"implausible durations (want 40..500 ms): {bad}")
# One INFO per key press as it ends: the tones start 260 ms apart or more (160 + 100 ms gap), so
# INFOs bunched together (or held back to the hangup) are a defect too.
if any(not 200 <= g <= 1000 for g in gaps):
    fail.append(f"INFOs {gaps} ms apart, expected one per key press (200..1000 ms)")
for f in fail:
    print("FAIL:", f)
sys.exit(1 if fail else 0)
PY
    sed 's/^/   /' "$OUT/info_check.txt"
    lab_fail "the INFOs on the trunk leg are not $DIGITS (see info_check.txt, trunk.pcap)"
else
    sed 's/^/   /' "$OUT/info_check.txt"
fi
(($(wc -l <"$OUT/rtp_to_ivr.txt") >= 20 * (CALL_SECS - 2))) ||
    lab_fail "fewer than $((20 * (CALL_SECS - 2))) RTP packets reached SIPp's media port"
! grep -qvx 0 "$OUT/rtp_to_ivr.txt" ||
    lab_fail "RTP toward the INFO trunk other than PCMU (payload type 0): events leaked? (see rtp_to_ivr.txt)"

media_check tone_to_ivr tone --pcap "$OUT/trunk.pcap" --sbc 127.0.0.1 --to 127.0.0.1 --hz "$BROWSER_HZ"

# The SBC's own account: one log line per digit, in order, and the counter.
logged=$(grep 'DTMF: RFC 4733 to SIP INFO' "$OUT/sbc.log" | sed -n 's/.* digit=\([0-9*#A-D]\) .*/\1/p' | tr -d '\n')
after=$(metric sbc_dtmf_interworked_total)
lab_step "SBC: 'DTMF: RFC 4733 to SIP INFO' for '$logged'; sbc_dtmf_interworked_total $before -> $after"
[[ $logged == "$DIGITS" ]] || lab_fail "the SBC logged digits '$logged' interworked, expected '$DIGITS'"
((after - before == ${#DIGITS})) ||
    lab_fail "sbc_dtmf_interworked_total rose by $((after - before)), expected ${#DIGITS}"

LAB_PASS_REASON="browser (DTLS-SRTP, Opus, telephone-event/48000) pressed $DIGITS toward a dtmf: info"
LAB_PASS_REASON+=" trunk: SIPp got 4 INFOs Signal=1,4,7,# in order (application/dtmf-relay,"
LAB_PASS_REASON+=" 200..1000 ms apart, plausible Durations), no telephone-event offered or sent to it;"
LAB_PASS_REASON+=" the browser's Opus reached it as PCMU ${BROWSER_HZ} Hz"
lab_end
