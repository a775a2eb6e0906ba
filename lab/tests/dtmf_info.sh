#!/usr/bin/env bash
# dtmf_info: SIP INFO <-> RFC 4733 DTMF interworking on a trunk with `dtmf: info`; 1 call.
#
#   UAC 127.0.0.11:5062 (RFC 4733) -> SBC access 127.0.0.1:5060 | SBC trunk 127.0.0.2:5070
#   -> UAS 127.0.0.12:5080 (SIP INFO)
#   config: lab/configs/dtmf_info.yaml; scenarios: uac_dtmf_4733.xml / uas_dtmf_info.xml
#
# Expectations on the SBC:
#  1. RFC 4733 -> INFO: the UAC plays SIPp's dtmf_2833_1.pcap (digit 1: start, updates, three
#     end packets). The UAS receives exactly one INFO, Content-Type application/dtmf-relay,
#     Signal=1 with a Duration (SIPp checks it); no telephone-event packet reaches the UAS,
#     and the INVITE toward it offers no telephone-event, while the caller's 200 keeps it.
#  2. INFO -> RFC 4733: the UAS (which plays g711a.pcap toward the caller through the SBC)
#     sends INFO Signal=5 Duration=200; the SBC answers 200 itself and sends the caller
#     RFC 4733 packets: event 5, marker on the first, an end bit, a duration of about 200 ms,
#     one timestamp, in the stream the caller receives (the SSRC of the relayed audio) with
#     sequence numbers continuous around them (tshark decodes, -d udp.port==PORT,rtp).
# Validated with the feature off (`dtmf: rfc4733` in the config): the UAS gets no INFO and
# fails, and no event packet with the audio's SSRC reaches the caller.
source "$(dirname "$0")/../lib.sh"
lab_begin dtmf_info

if lab_is_direct; then
    lab_note "direct mode: nothing to validate (the scenarios need the SBC's interworking)"
    lab_end
fi

sbc_start lab/configs/dtmf_info.yaml
capture_start dtmf udp
uas_start uas 127.0.0.12:5080 uas_dtmf_info.xml
UAC_ADDR=127.0.0.11:5062 uac_run uac 127.0.0.1:5060 uac_dtmf_4733.xml 1 1
uas_finish uas 1
capture_stop dtmf

lab_step "the INVITE toward the INFO trunk offers no telephone-event"
if grep -q "telephone-event" "$OUT/uas.messages.log"; then
    lab_fail "telephone-event reached the INFO side (see uas.messages.log)"
fi

# Each UA's media port, from its own SDP (o=caller / o=callee) in its message log.
media_port() { awk -v o="$2" '$0 ~ o { own = 1 } own && /m=audio/ { print $2; exit }' "$1"; }
uac_port=$(media_port "$OUT/uac.messages.log" "o=caller")
uas_port=$(media_port "$OUT/uas.messages.log" "o=callee")
[[ -n $uac_port && -n $uas_port ]] || lab_abort "no media port in the SIPp logs"
tshark -r "$OUT/dtmf.pcap" -n -d "udp.port==$uac_port,rtp" -d "udp.port==$uas_port,rtp" \
    -Y "rtp && (udp.dstport == $uac_port || udp.dstport == $uas_port)" -T fields -E separator=, \
    -e ip.src -e ip.dst -e rtp.ssrc -e rtp.seq -e rtp.timestamp -e rtp.p_type -e rtp.marker \
    -e rtpevent.event_id -e rtpevent.end_of_event -e rtpevent.duration \
    >"$OUT/rtp.csv" 2>"$OUT/tshark.stderr"
lab_step "RTP decoded by tshark: $(wc -l <"$OUT/rtp.csv") packets toward the UAs"
if ! python3 - "$OUT/rtp.csv" >"$OUT/rtp_check.txt" 2>&1 <<'PY'; then
import sys
rows = [l.rstrip("\n").split(",") for l in open(sys.argv[1]) if l.strip()]
fail = []
to_uas = [r for r in rows if r[0] == "127.0.0.2" and r[1] == "127.0.0.12"]
to_uac = [r for r in rows if r[0] == "127.0.0.1" and r[1] == "127.0.0.11"]
# The caller sends only the digit (consumed by the SBC): nothing may reach the UAS.
if not to_uac:
    fail.append("no relayed RTP to the UAC")
leaked = [r for r in to_uas if r[7] != ""]
if leaked:
    fail.append(f"{len(leaked)} telephone-event packets relayed to the INFO side")
events = [r for r in to_uac if r[7] != ""]
print(f"to UAS: {len(to_uas)} packets, {len(leaked)} events; to UAC: {len(to_uac)} packets, {len(events)} events")
if not events:
    fail.append("no RFC 4733 packet reached the caller")
else:
    ssrc = events[0][2]
    ids = {r[7] for r in events}
    ends = [r for r in events if r[8] == "1"]
    stamps = {r[4] for r in events}
    if ids != {"5"}:
        fail.append(f"event ids {ids}, expected 5")
    if events[0][6] != "1" or any(r[6] == "1" for r in events[1:]):
        fail.append("marker bit not exactly on the first event packet")
    if len(ends) < 1:
        fail.append("no end bit")
    dur = max(int(r[9]) for r in ends) if ends else 0
    if not 1200 <= dur <= 2000:
        fail.append(f"end duration {dur} units, expected about 1600 (200 ms at 8 kHz)")
    if len(stamps) != 1:
        fail.append(f"event packets with {len(stamps)} timestamps, expected one")
    stream = [r for r in to_uac if r[2] == ssrc]
    audio = [r for r in stream if r[7] == ""]
    if not audio:
        fail.append("the events are not in the stream the caller receives (no audio with their SSRC)")
    seqs = [int(r[3]) for r in stream]
    gaps = [(a, b) for a, b in zip(seqs, seqs[1:]) if (b - a) % 65536 != 1]
    if gaps:
        fail.append(f"sequence numbers not continuous around the events: {gaps[:5]}")
    print(f"event 5: {len(events)} packets, {len(ends)} with the end bit, duration {dur} units, "
          f"ssrc {ssrc}, stream of {len(stream)} packets, seq {seqs[0]}..{seqs[-1]}")
for f in fail:
    print("FAIL:", f)
sys.exit(1 if fail else 0)
PY
    sed 's/^/   /' "$OUT/rtp_check.txt"
    lab_fail "RTP checks failed (see rtp_check.txt, rtp.csv)"
else
    sed 's/^/   /' "$OUT/rtp_check.txt"
fi

lab_end
