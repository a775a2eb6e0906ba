#!/usr/bin/env bash
# basic_tcp: 2,000 basic calls at 100 calls/s, caller on TCP, callee on UDP; 0 may fail.
#
#   UAC 127.0.0.1:5062 --TCP (one connection, -t t1)--> SBC access 127.0.0.1:5060
#   SBC trunk 127.0.0.1:5070 --UDP--> UAS 127.0.0.1:5080
#   scenarios: uac_basic.xml / uas_basic.xml; config: configs/sbc.yaml
#
# Expectations on the SBC: as basic_udp, with leg A over TCP (all requests and responses
# of leg A on the caller's connection, framed by Content-Length) and leg B over UDP.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes; without an SBC there is no transport
# change, so the direct run uses TCP on both sides (the UAS runs with -t t1 too).
source "$(dirname "$0")/../lib.sh"
lab_begin basic_tcp

sbc_start configs/sbc.yaml
if lab_is_direct; then
    uas_start uas 127.0.0.1:5080 uas_basic.xml -t t1
else
    uas_start uas 127.0.0.1:5080 uas_basic.xml
fi
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_basic.xml 2000 100 -d 500 -l 400 -t t1
uas_finish uas 2000

lab_end
