#!/usr/bin/env bash
# media_relay: G.711 RTP through the SBC in both directions, counted by tshark.
#
#   UAC 127.0.0.11:5062 -> SBC access 127.0.0.1:5060 | SBC trunk 127.0.0.2:5070 -> UAS 127.0.0.12:5080
#   config: lab/configs/media.yaml (media anchored on 127.0.0.1 toward the caller and
#   127.0.0.2 toward the callee)
#   traffic: 10 calls (2/s, at most 5 at once) of uac_media/uas_media: the UAC plays SIPp's
#   g711a.pcap (236 PCMA packets) and an RFC 4733 DTMF; the UAS runs with -rtp_echo.
#
# Expectations on the SBC: every SDP it sends names only its own addresses (no caller
# address reaches the callee and the other way round); RTP flows UAC -> SBC -> UAS and the
# echo UAS -> SBC -> UAC, never UA to UA; of the packets reaching the SBC in each direction,
# >= 99.9 % leave it toward the other side (tshark counts both sides on lo).
# Validated SIPp-to-SIPp (LAB_MODE=direct): the pair completes its calls with media flowing
# straight between the UAs (the checks need the SBC and are skipped).
source "$(dirname "$0")/../lib.sh"
lab_begin media_relay

sbc_start lab/configs/media.yaml
capture_start media udp
uas_start uas 127.0.0.12:5080 uas_media.xml -rtp_echo
UAC_ADDR=127.0.0.11:5062 uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.12:5080)" \
    uac_media.xml 10 2 -l 5
uas_finish uas 10
capture_stop media

if lab_is_direct; then
    lab_note "direct mode: media checks skipped (no SBC)"
else
    media_check sdp sdp --pcap "$OUT/media.pcap" --sbc 127.0.0.1 --sbc 127.0.0.2
    media_check rtp rtp --pcap "$OUT/media.pcap" --sbc 127.0.0.1 --sbc 127.0.0.2 \
        --caller 127.0.0.11 --callee 127.0.0.12 --min-ratio 0.999 --min-packets 2000
fi

lab_end
