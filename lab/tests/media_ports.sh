#!/usr/bin/env bash
# media_ports: media port exhaustion answers 503 and harms no other call.
#
#   UAC 127.0.0.11 -> SBC access 127.0.0.1:5060 | SBC trunk 127.0.0.2:5070 -> UAS 127.0.0.12:5080
#   config: lab/configs/media_ports.yaml (media ports 40000-40009: 5 RTP/RTCP pairs; a call
#   takes one pair per leg, so 2 calls fit)
#   traffic: 2 calls of uac_media/uas_media (-rtp_echo, about 9 s each) from :5062; 1.5 s
#   later a third call from :5064 (uac_expect_503); after the 2 end, a fourth call from
#   :5066 (uac_media).
#
# Expectations on the SBC: the third call gets 503 at once (no port for it); the 2 calls
# in progress complete with their RTP relayed (>= 99.9 % per direction); once they have
# ended, their ports are back in the pool and the fourth call completes.
# Validated SIPp-to-SIPp: the uac_media/uas_media pair in media_relay; the 503 comes from the
# SBC only.
source "$(dirname "$0")/../lib.sh"
lab_begin media_ports

if lab_is_direct; then
    lab_note "direct mode: nothing to validate (the 503 comes from the SBC)"
    lab_end
fi

sbc_start lab/configs/media_ports.yaml
capture_start ports udp
uas_start uas 127.0.0.12:5080 uas_media.xml -rtp_echo
UAC_ADDR=127.0.0.11:5062 uac_start uac_long 127.0.0.1:5060 uac_media.xml 2 10
sleep 1.5
UAC_ADDR=127.0.0.11:5064 uac_run uac_full 127.0.0.1:5060 uac_expect_503.xml 1 1
uac_wait uac_long
UAC_ADDR=127.0.0.11:5066 uac_run uac_after 127.0.0.1:5060 uac_media.xml 1 1
uas_finish uas 3
capture_stop ports

media_check ports rtp --pcap "$OUT/ports.pcap" --sbc 127.0.0.1 --sbc 127.0.0.2 \
    --caller 127.0.0.11 --callee 127.0.0.12 --min-ratio 0.999 --min-packets 700

lab_end
