#!/usr/bin/env bash
# callee_hangup: the callee hangs up; 20 calls over UDP.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_callee_hangup.xml / uas_callee_hangup.xml; config: configs/sbc.yaml
#
# Expectations on the SBC: after INVITE/180/200/ACK, the UAS sends BYE on leg B (built from
# the SBC's Contact/Record-Route, with the leg B Call-ID and tags); the SBC answers it (or
# relays the caller's 200) and sends a BYE in the caller's dialog on leg A (Call-ID, tags
# of leg A, Request-URI = the caller's Contact); the caller answers 200.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin callee_hangup

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_callee_hangup.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_callee_hangup.xml 20 10
uas_finish uas 20

lab_end
