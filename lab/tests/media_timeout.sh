#!/usr/bin/env bash
# media_timeout: a call whose RTP stops is ended by the SBC, with a BYE on both legs.
#
#   UAC 127.0.0.11:5062 -> SBC access 127.0.0.1:5060 | SBC trunk 127.0.0.2:5070 -> UAS 127.0.0.12:5080
#   config: lab/configs/media_timeout.yaml (media inactivity_timeout: 3s)
#   traffic: 2 calls of uac_media_timeout/uas_media_timeout (-rtp_echo): RTP for about 7 s,
#   then silence; both UAs wait for a BYE that carries a Reason header naming the timeout.
#
# Expectations on the SBC: the SBC sends BYE to the caller and to the callee, each 3 s
# (+0.5/-0 s; the check granularity of the SBC is well under that) after the last RTP
# packet of its call; the SBC itself survives.
# Validated SIPp-to-SIPp: no (without the SBC nobody sends the BYE).
source "$(dirname "$0")/../lib.sh"
lab_begin media_timeout

if lab_is_direct; then
    lab_note "direct mode: nothing to validate (the BYE comes from the SBC)"
    lab_end
fi

sbc_start lab/configs/media_timeout.yaml
capture_start timeout udp
uas_start uas 127.0.0.12:5080 uas_media_timeout.xml -rtp_echo
UAC_ADDR=127.0.0.11:5062 uac_run uac 127.0.0.1:5060 uac_media_timeout.xml 2 1
uas_finish uas 2
capture_stop timeout

pcap=$OUT/timeout.pcap
last_rtp=$(tshark -r "$pcap" -n -o rtp.heuristic_rtp:TRUE -Y rtp -T fields -e frame.time_relative |
    tail -n 1)
mapfile -t bye_a < <(sip_times "$pcap" 'ip.src == 127.0.0.1 && ip.dst == 127.0.0.11 && sip.Method == "BYE"')
mapfile -t bye_b < <(sip_times "$pcap" 'ip.src == 127.0.0.2 && ip.dst == 127.0.0.12 && sip.Method == "BYE"')
lab_step "last RTP at ${last_rtp:-none} s; BYEs to the caller at ${bye_a[*]:-none} s, to the callee at ${bye_b[*]:-none} s"
if [[ -z $last_rtp ]]; then
    lab_fail "no RTP in the capture"
elif ((${#bye_a[@]} < 2 || ${#bye_b[@]} < 2)); then
    lab_fail "expected a BYE per call on each leg"
else
    # The second call's RTP ends last; its BYEs are the last ones on each leg.
    for t in "${bye_a[-1]}" "${bye_b[-1]}"; do
        if ! awk -v b="$t" -v r="$last_rtp" 'BEGIN { d = b - r; exit !(d >= 3.0 && d <= 3.5) }'; then
            lab_fail "BYE at $t s is not 3-3.5 s after the last RTP packet ($last_rtp s)"
        fi
    done
fi

lab_end
