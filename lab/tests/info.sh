#!/usr/bin/env bash
# info: the caller sends two INFO (application/dtmf-relay, Signal=5 then Signal=#) in
# the confirmed dialog; 10 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_info.xml / uas_info.xml; config: configs/sbc.yaml
#
# Expectations on the SBC: relays both INFO requests into the leg B dialog, in order, with
# Content-Type application/dtmf-relay and the body unchanged; relays the 200s back.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin info

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_info.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_info.xml 10 10
uas_finish uas 10

lab_end
