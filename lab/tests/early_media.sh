#!/usr/bin/env bash
# early_media: 183 Session Progress with SDP (early media), then 200; 10 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_early_media.xml / uas_early_media.xml; config: configs/sbc.yaml
#
# Expectations on the SBC: relays the 183 to the caller with an SDP body (Content-Type
# application/sdp, an m=audio line), then the 200, in that order; ACK and the caller's BYE
# reach the UAS.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin early_media

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_early_media.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_early_media.xml 10 10
uas_finish uas 10

lab_end
