#!/usr/bin/env bash
# ipv6_interworking: calls from an IPv6 caller ([::1], UDP and then TCP) reach an IPv4 callee
# (127.0.0.12:5080) through the SBC: leg A is IPv6, leg B IPv4 (RFC 5118 addresses on leg A,
# none of them on leg B). Then media: a caller on [fd00::11] (an address the test adds to
# lo) plays G.711 RTP over IPv6; the callee echoes it over IPv4.
#
#   UAC [::1]:5062 --UDP/TCP--> SBC access [::1]:5060 ... SBC trunk 127.0.0.2:5070 --UDP--> UAS 127.0.0.12:5080
#   scenarios: uac_basic.xml / uas_basic.xml, then uac_media.xml / uas_media.xml (-rtp_echo)
#   config: lab/configs/ipv6.yaml
#
# Expectations on the SBC (media part): the SDP sent to the caller names only [::1] (IN
# IP6), the one sent to the callee only 127.0.0.2 (IN IP4); >= 99.9 % of the RTP of each
# direction crosses from one address family to the other.
# Needs the SBC (the address families differ per leg): in direct mode it is skipped.
source "$(dirname "$0")/../lib.sh"
lab_begin ipv6_interworking

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (the SBC changes the address family)"
    lab_end
fi
sbc_start lab/configs/ipv6.yaml
uas_start uas 127.0.0.12:5080 uas_basic.xml
UAC_ADDR=::1:5062 uac_run uac_udp "[::1]:5060" uac_basic.xml 50 25
UAC_ADDR=::1:5063 uac_run uac_tcp "[::1]:5060" uac_basic.xml 50 25 -t t1
uas_finish uas 100

# Media across address families, from a caller address that is not the SBC's.
ip -6 addr add fd00::11/128 dev lo nodad || lab_abort "cannot add fd00::11 to lo"
capture_start media6 udp
uas_start uas_media 127.0.0.12:5080 uas_media.xml -rtp_echo
UAC_ADDR=fd00::11:5064 uac_run uac_media "[::1]:5060" uac_media.xml 3 1
uas_finish uas_media 3
capture_stop media6
media_check sdp6 sdp --pcap "$OUT/media6.pcap" --sbc ::1 --sbc 127.0.0.2
media_check rtp6 rtp --pcap "$OUT/media6.pcap" --sbc ::1 --sbc 127.0.0.2 \
    --caller fd00::11 --callee 127.0.0.12 --min-ratio 0.999 --min-packets 700
lab_end
