#!/usr/bin/env bash
# trunk_to_ua: a call from the trunk side to the UA side; 20 calls over UDP.
#
#   UAC 127.0.0.1:5062 (the "carrier": source 127.0.0.1 matches its sources) -> SBC trunk
#   listener 127.0.0.1:5070 | SBC access listener 127.0.0.1:5060 -> UAS ("pbx") 127.0.0.1:5090
#   scenarios: uac_basic.xml / uas_basic.xml; config: configs/sbc.yaml (route carrier-to-pbx)
#
# Expectations on the SBC: recognises the source 127.0.0.1 on the trunk listener as trunk
# "carrier", routes to trunk "pbx" (127.0.0.1:5090) through the access listener, and
# completes INVITE/180/200/ACK/BYE/200 as in basic_udp.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin trunk_to_ua

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5090 uas_basic.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5070 127.0.0.1:5090)" uac_basic.xml 20 10 -d 200
uas_finish uas 20

lab_end
