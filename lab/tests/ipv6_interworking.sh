#!/usr/bin/env bash
# ipv6_interworking: calls from an IPv6 caller ([::1], UDP and then TCP) reach an IPv4 callee
# (127.0.0.1:5080) through the SBC: leg A is IPv6, leg B IPv4 (RFC 5118 addresses on leg A,
# none of them on leg B).
#
#   UAC [::1]:5062 --UDP/TCP--> SBC access [::1]:5060 ... SBC trunk 127.0.0.1:5070 --UDP--> UAS 127.0.0.1:5080
#   scenarios: uac_basic.xml / uas_basic.xml; config: lab/configs/ipv6.yaml
# Needs the SBC (the address families differ per leg): in direct mode it is skipped.
source "$(dirname "$0")/../lib.sh"
lab_begin ipv6_interworking

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (the SBC changes the address family)"
    lab_end
fi
sbc_start lab/configs/ipv6.yaml
uas_start uas 127.0.0.1:5080 uas_basic.xml
UAC_ADDR=::1:5062 uac_run uac_udp "[::1]:5060" uac_basic.xml 50 25
UAC_ADDR=::1:5063 uac_run uac_tcp "[::1]:5060" uac_basic.xml 50 25 -t t1
uas_finish uas 100
lab_end
