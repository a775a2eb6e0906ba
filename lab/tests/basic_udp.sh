#!/usr/bin/env bash
# basic_udp: 2,000 basic calls over UDP at 100 calls/s through the SBC; 0 may fail.
#
#   UAC 127.0.0.1:5062 --UDP--> SBC access 127.0.0.1:5060 ... SBC trunk 127.0.0.1:5070 --UDP--> UAS 127.0.0.1:5080
#   scenarios: uac_basic.xml / uas_basic.xml (INVITE, 180, 200, ACK, pause 500 ms, BYE from the caller, 200)
#   config: configs/sbc.yaml (the default config)
#
# Expectations on the SBC: relays 180 then 200 (in that order) to the caller, ACKs/relays
# the ACK on leg B, relays the caller's BYE to the callee and the 200 back; every call of
# 2,000 completes.
# Validated SIPp-to-SIPp (LAB_MODE=direct: UAC straight to the UAS on 5080): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin basic_udp

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_basic.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_basic.xml 2000 100 -d 500 -l 400
uas_finish uas 2000

lab_end
