#!/usr/bin/env bash
# update: the caller sends an UPDATE with an SDP offer in the confirmed dialog; 10 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_update.xml / uas_update.xml; config: configs/sbc.yaml
#
# Expectations on the SBC: relays the UPDATE (with its SDP offer) into the leg B dialog and
# the UAS's 200 (with its SDP answer) back to the caller; BYE as usual.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin update

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_update.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_update.xml 10 10
uas_finish uas 10

lab_end
