#!/usr/bin/env bash
# busy_486: the callee answers 486 Busy Here; the caller must get the 486; 10 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_expect_486.xml / uas_reject_486.xml; config:
#   configs/sbc.yaml (one trunk: nothing to fail over to)
#
# Expectations on the SBC:
#   leg B: ACKs the 486 (ACK with the branch of its INVITE).
#   leg A: sends 486 to the caller (100 and 18x before it are optional) and absorbs the
#          caller's ACK for it.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin busy_486

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_reject_486.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_expect_486.xml 10 10
uas_finish uas 10

lab_end
