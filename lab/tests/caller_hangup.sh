#!/usr/bin/env bash
# caller_hangup: the caller hangs up after 1 s; 20 calls over UDP.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_basic.xml / uas_basic.xml (INVITE, 180, 200, ACK, 1 s, BYE from the
#   caller, 200); config: configs/sbc.yaml
#
# Expectations on the SBC: relays the caller's BYE (sent to the SBC's Contact in its 200,
# with the SBC's To tag) as a BYE of leg B (Call-ID and tags of leg B, Request-URI = the
# UAS's Contact); the UAS answers 200, the caller gets a 200 for its BYE.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin caller_hangup

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_basic.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_basic.xml 20 10 -d 1000
uas_finish uas 20

lab_end
