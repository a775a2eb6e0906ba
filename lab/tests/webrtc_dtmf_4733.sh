#!/usr/bin/env bash
# webrtc_dtmf_4733: issue 6, DTMF "telephone-event/48000 <-> /8000 mapping" with a real browser. A
# browser (JsSIP in headless Chromium) calls an IVR on a plain-RTP trunk that takes key presses as
# RFC 4733 events (the default `dtmf: rfc4733`) and presses 1 4 7 #: Chrome's RTCDTMFSender sends
# telephone-event/48000 inside DTLS-SRTP next to Opus; the trunk speaks PCMU and
# telephone-event/8000, so the SBC transcodes the audio and must carry the events over into the
# trunk's stream in its 8 kHz clock.
#
#   browser alice (lab/browser/ua.mjs, `call` mode: no REGISTER) --WSS--> SBC wss 127.0.0.1:8443
#     (profile webrtc, codecs opus, telephone-event) | trunk 127.0.0.1:5070 --UDP--> SIPp IVR
#     127.0.0.1:5080 (lab/scenarios/uas_ivr_dtmf_4733.xml; trunk codecs PCMU, telephone-event)
#   media: browser <-ICE-lite, DTLS-SRTP, Opus + telephone-event/48000-> SBC 127.0.0.1:42000-42999
#     <-RTP PCMU + telephone-event/8000-> SIPp (-rtp_echo)
#   config: lab/configs/webrtc_dtmf_4733.yaml; the WSS certificate is self-signed (openssl).
#   traffic: one call of CALL_SECS (8) s that the browser hangs up; DTMF_AT (2) s into it the
#   browser sends DIGITS (147#: 160 ms tones, 100 ms gaps, as ua.js asks RTCDTMFSender).
#
# Checked: SIPp (its regexps) got a plain RTP/AVP offer with telephone-event/8000 and answered it
# with the offer's payload type; no INFO reached it (its scenario fails on any request before the
# BYE). tshark decodes the RTP toward SIPp's media port: the events are events 1, 4, 7, 11 (#) in
# that order, once each, with the trunk's telephone-event payload type, in the same SSRC and
# sequence space as the PCMU audio (continuous sequence numbers), the marker bit on each event's
# first packet, the end bit on its last, an end duration of 80..500 ms in 8 kHz units (Chrome
# sends 160 ms: 1280 units; a duration left in the browser's 48 kHz clock would read 7680), and
# an RTP timestamp in the audio's 8 kHz timeline (within 100 ms of the PCMU packet sent next to
# it: a timestamp left in 48 kHz units lands seconds away). The G.711 toward SIPp decodes to the
# browser's 700 Hz; the SBC interworked nothing (no "RFC 4733 to SIP INFO" log line, counter
# unchanged); ua.mjs: DTLS connected, SRTP, the SBC as remote candidate, codec opus, packets both
# ways, <= 2 % loss, "DTMF sent" 147#.
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=${LAB_TEST_TIMEOUT_BROWSER:-150}
source "$LAB_DIR/webrtc_e2e.sh"
webrtc_outer_setup webrtc_dtmf_4733
lab_begin webrtc_dtmf_4733

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's WebRTC edge and DTMF mapping)"
    lab_end
fi
webrtc_require_browser

CALL_SECS=8 DTMF_AT=2 DIGITS='147#'
BROWSER_HZ=700

browser_presses_keys_to_ivr lab/configs/webrtc_dtmf_4733.yaml uas_ivr_dtmf_4733.xml
before=$DTMF_METRIC_BEFORE

# The trunk's side of the call, from SIPp's own answer (o=callee): its media port, and the
# telephone-event payload type it answered with (the SBC's offer's).
sipp_port=$(awk '/o=callee/ { own = 1 } own && /m=audio/ { print $2; exit }' "$OUT/ivr.messages.log")
te_pt=$(awk '/o=callee/ { own = 1 } own && /telephone-event\/8000/ { sub(/.*rtpmap:/, ""); print $1; exit }' \
    "$OUT/ivr.messages.log")
[[ -n $sipp_port && -n $te_pt ]] ||
    lab_abort "no media port or telephone-event payload type in SIPp's 200 (ivr.messages.log)"
tshark -r "$OUT/trunk.pcap" -n -d "udp.port==$sipp_port,rtp" -o "rtpevent.event_payload_type_value:$te_pt" \
    -Y "rtp && udp.dstport == $sipp_port" -T fields -E separator=, \
    -e frame.time_relative -e rtp.ssrc -e rtp.seq -e rtp.timestamp -e rtp.p_type -e rtp.marker \
    -e rtpevent.event_id -e rtpevent.end_of_event -e rtpevent.duration \
    >"$OUT/rtp_to_ivr.csv" 2>"$OUT/tshark.stderr"
lab_step "trunk leg (tshark): $(wc -l <"$OUT/rtp_to_ivr.csv") RTP packets to SIPp's port $sipp_port" \
    "(telephone-event payload type $te_pt)"
if ! python3 - "$OUT/rtp_to_ivr.csv" "$DIGITS" "$te_pt" >"$OUT/event_check.txt" 2>&1 <<'PY'; then
import sys
rows = [l.rstrip("\n").split(",") for l in open(sys.argv[1]) if l.strip()]
want = ["11" if d == "#" else d for d in sys.argv[2]]
te_pt = sys.argv[3]
fail = []
audio = [r for r in rows if r[4] == "0"]
events = [r for r in rows if r[4] == te_pt]
other = sorted({r[4] for r in rows} - {"0", te_pt})
if other:
    fail.append(f"payload types {other} toward the trunk, expected only 0 and {te_pt}")
if not audio:
    fail.append("no PCMU toward the trunk")
if not events:
    fail.append("no telephone-event packet reached the trunk")
if audio and events:
    ssrc = audio[0][1]
    if {r[1] for r in rows} != {ssrc}:
        fail.append(f"SSRCs {sorted({r[1] for r in rows})}: events and audio are not one stream")
    seqs = [int(r[2]) for r in rows]
    holes = [(a, b) for a, b in zip(seqs, seqs[1:]) if (b - a) % 65536 != 1]
    if holes:
        fail.append(f"sequence numbers not continuous: {holes[:5]}")
    # One event per RTP timestamp (RFC 4733 §2.5.1.3): group its packets, in order of arrival.
    by_ts = {}
    for r in events:
        by_ts.setdefault(r[3], []).append(r)
    found = []
    for ts, pkts in by_ts.items():
        ids = {p[6] for p in pkts}
        ends = [p for p in pkts if p[7] == "1"]
        dur = max((int(p[8]) for p in ends), default=0)
        # the PCMU packet sent next to the event's first packet, in the same timeline
        t0 = float(pkts[0][0])
        near = min(audio, key=lambda a: abs(float(a[0]) - t0))
        drift = (int(ts) - int(near[3]) + 2**31) % 2**32 - 2**31
        found.append("/".join(sorted(ids)))
        print(f"event {'/'.join(sorted(ids))}: ts {ts}, {len(pkts)} packets, {len(ends)} with the end "
              f"bit, end duration {dur} units ({dur / 8:.0f} ms at 8 kHz), marker "
              f"{pkts[0][5]}; PCMU next to it ts {near[3]} ({drift:+d} units)")
        if len(ids) != 1:
            fail.append(f"ts {ts}: several event ids {ids} under one timestamp")
        if pkts[0][5] != "1" or any(p[5] == "1" for p in pkts[1:]):
            fail.append(f"ts {ts}: marker bit not exactly on the event's first packet")
        if not ends:
            fail.append(f"ts {ts}: no end bit")
        elif not 640 <= dur <= 4000:
            fail.append(f"ts {ts}: end duration {dur} units, expected 80..500 ms at 8 kHz (640..4000)")
        if abs(drift) > 800:
            fail.append(f"ts {ts}: {drift:+d} units from the PCMU sent next to it (> 100 ms at 8 kHz)")
    print("events in order:", found)
    if found != want:
        fail.append(f"events {found}, expected {want} once each in order")
for f in fail:
    print("FAIL:", f)
sys.exit(1 if fail else 0)
PY
    sed 's/^/   /' "$OUT/event_check.txt"
    lab_fail "the telephone events on the trunk leg are not $DIGITS in 8 kHz (see event_check.txt)"
else
    sed 's/^/   /' "$OUT/event_check.txt"
fi

media_check tone_to_ivr tone --pcap "$OUT/trunk.pcap" --sbc 127.0.0.1 --to 127.0.0.1 --hz "$BROWSER_HZ"

after=$(metric sbc_dtmf_interworked_total)
lab_step "SBC: sbc_dtmf_interworked_total $before -> $after (nothing to interwork)"
! grep -q 'DTMF: RFC 4733 to SIP INFO' "$OUT/sbc.log" ||
    lab_fail "the SBC turned key presses into INFO on an rfc4733 trunk (see sbc.log)"
((after == before)) || lab_fail "sbc_dtmf_interworked_total rose by $((after - before)), expected 0"

LAB_PASS_REASON="browser (DTLS-SRTP, Opus, telephone-event/48000) pressed $DIGITS toward an RFC 4733"
LAB_PASS_REASON+=" trunk: tshark decodes events 1,4,7,11 in order in the PCMU stream (one SSRC,"
LAB_PASS_REASON+=" continuous sequence numbers), in the 8 kHz clock (durations and timestamps), no"
LAB_PASS_REASON+=" INFO; the browser's Opus reached the trunk as PCMU ${BROWSER_HZ} Hz"
lab_end
