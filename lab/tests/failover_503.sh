#!/usr/bin/env bash
# failover_503: the first trunk answers 503, the SBC fails over to the second trunk, which
# completes the call; the caller sees an ordinary successful call; 10 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS1 127.0.0.1:5080 (503)
#                                                                  -> UAS2 127.0.0.1:5081 (call)
#   scenarios: uac_basic.xml / uas_reject_503.xml + uas_basic.xml;
#   config: lab/configs/failover.yaml (route trunks [carrier, carrier2])
#
# Expectations on the SBC: every call first goes to 127.0.0.1:5080; the SBC ACKs the 503
# there, does not relay it, and sends a new INVITE to 127.0.0.1:5081, whose 180/200 it
# relays; ACK and BYE go to 5081. UAS1 must see 10 rejected calls (each ACKed), UAS2 10
# complete calls, the UAC 10 successful calls.
# Validated SIPp-to-SIPp (LAB_MODE=direct): partly: uac_basic.xml against uas_basic.xml on
# 5081, and uac_expect_503.xml against uas_reject_503.xml on 5080. Not checkable
# without the SBC: the failover decision itself.
source "$(dirname "$0")/../lib.sh"
lab_begin failover_503

sbc_start lab/configs/failover.yaml
uas_start uas503 127.0.0.1:5080 uas_reject_503.xml
uas_start uas 127.0.0.1:5081 uas_basic.xml
if lab_is_direct; then
    uac_run uac503 127.0.0.1:5080 uac_expect_503.xml 10 10
    uac_run uac 127.0.0.1:5081 uac_basic.xml 10 10
else
    uac_run uac 127.0.0.1:5060 uac_basic.xml 10 10
fi
uas_finish uas503 10
uas_finish uas 10

lab_end
