#!/usr/bin/env bash
# pcap_intercept: a call to an intercept target leaves a PCAP of both legs' SIP and RTP; an
# untargeted call leaves none.
#
#   UAC 127.0.0.11:5062 -> SBC access 127.0.0.1:5060 | SBC trunk 127.0.0.2:5070 -> UAS 127.0.0.12:5080
#   config: lab/configs/capture.yaml (media.yaml + capture: mode targets, callee 'target\d+',
#   and the rolling signalling capture), with its capture directories moved into $OUT.
#   traffic: one call to "other456" (not a target), a pause, then one call to "target123";
#   both are uac_media/uas_media calls (SIPp plays g711a.pcap, the UAS echoes the RTP).
#
# Expectations (lab/pcap_check.py): the intercept directory (mode 0700) holds exactly one file
# (mode 0600); tshark reads it without a warning; it holds SIP of two Call-IDs (leg A and leg B,
# neither of them the untargeted call's) and RTP on both legs in both directions (heuristic RTP
# decoding); its SIP and its RTP/RTCP packet counts are within 1 % of what dumpcap on lo saw
# for that call (same Call-IDs; same SBC media ports within the capture's time span); its
# timestamps are real (inside the live capture's span). The rolling signalling capture holds
# the SIP of both calls.
source "$(dirname "$0")/../lib.sh"
lab_begin pcap_intercept

if lab_is_direct; then
    lab_note "direct mode: nothing to check (captures are made by the SBC)"
    lab_end
fi

CFG=$OUT/capture.yaml
sed "s|lab/out/pcap_intercept|$OUT|g" "$REPO_DIR/lab/configs/capture.yaml" >"$CFG"
rm -rf "$OUT/captures"

sbc_start "$CFG"
capture_start live udp
uas_start uas 127.0.0.12:5080 uas_media.xml -rtp_echo
UAC_ADDR=127.0.0.11:5062 uac_run uac_other 127.0.0.1:5060 uac_media.xml 1 1 -s other456
# Keeps the untargeted call's last packets out of the targeted call's time span.
sleep 1
UAC_ADDR=127.0.0.11:5062 uac_run uac_target 127.0.0.1:5060 uac_media.xml 1 1 -s target123
uas_finish uas 2
capture_stop live
sbc_stop

lab_step "pcap check"
if python3 "$LAB_DIR/pcap_check.py" --intercept "$OUT/captures/intercept" \
    --live "$OUT/live.pcap" --rolling "$OUT/captures/sip" --untargeted other456 \
    >"$OUT/pcap_check.txt" 2>&1; then
    sed 's/^/   /' "$OUT/pcap_check.txt"
else
    sed 's/^/   /' "$OUT/pcap_check.txt" | head -n 40
    lab_fail "pcap check failed (see pcap_check.txt)"
fi

# sngrep, the other tool operators read SIP captures with, must see both legs' dialogs.
if ! command -v sngrep >/dev/null; then
    lab_fail "sngrep is not installed"
else
    for f in "$OUT"/captures/intercept/*.pcap; do
        [[ -e $f ]] || continue
        dialogs=$(timeout 20 sngrep -N -I "$f" 2>&1 | grep -o 'Dialog count: [0-9]*' | tail -n 1)
        if [[ $dialogs == "Dialog count: 2" ]]; then
            lab_step "sngrep reads $(basename "$f"): $dialogs (leg A and leg B)"
        else
            lab_fail "sngrep on $(basename "$f"): '${dialogs:-nothing}', expected 2 dialogs"
        fi
    done
fi

lab_end
