#!/usr/bin/env bash
# cancel: the caller sends CANCEL after the 180; 10 calls over UDP.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_cancel.xml / uas_ring_cancel.xml; config: configs/sbc.yaml
#
# Expectations on the SBC:
#   leg A: relays the 180; answers the caller's CANCEL with 200 and the INVITE with 487
#          (either order), absorbs the caller's ACK for the 487.
#   leg B: sends CANCEL (same branch and CSeq number as its INVITE on leg B); the UAS
#          answers 200, then 487; the SBC ACKs the 487.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin cancel

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_ring_cancel.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_cancel.xml 10 10
uas_finish uas 10

lab_end
