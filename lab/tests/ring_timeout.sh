#!/usr/bin/env bash
# ring_timeout: the callee rings and never answers; the SBC gives up after the route's
# ring_timeout (2 s), cancels leg B and answers the caller 408; 5 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_expect_408.xml / uas_ring_cancel.xml; config: lab/configs/ring_timeout.yaml
#
# Expectations on the SBC:
#   leg B: INVITE, gets 180; about 2 s after the INVITE it sends CANCEL (same branch and
#          CSeq number as the INVITE); the UAS answers 200 (CANCEL) and 487 (INVITE); the
#          SBC ACKs the 487.
#   leg A: relays the 180 (optional for the caller), then sends 408 Request Timeout to the
#          caller and absorbs its ACK.
# Validated SIPp-to-SIPp (LAB_MODE=direct): partly. Without an SBC nobody cancels after
# 2 s, so direct mode validates the two halves separately: uac_cancel.xml against
# uas_ring_cancel.xml (the UAS half: CANCEL, 200, 487, ACK), and uac_expect_408.xml
# against uas_reject_408.xml (the UAC half). Not checkable without the SBC: the
# timing (CANCEL ~2 s after the INVITE) and that the SBC itself originates CANCEL and 408.
source "$(dirname "$0")/../lib.sh"
lab_begin ring_timeout

sbc_start lab/configs/ring_timeout.yaml
if lab_is_direct; then
    uas_start uas 127.0.0.1:5080 uas_ring_cancel.xml
    uac_run uac_cancel 127.0.0.1:5080 uac_cancel.xml 5 5
    uas_finish uas 5
    uas_start uas408 127.0.0.1:5080 uas_reject_408.xml
    uac_run uac 127.0.0.1:5080 uac_expect_408.xml 5 5
    uas_finish uas408 5
else
    uas_start uas 127.0.0.1:5080 uas_ring_cancel.xml
    uac_run uac 127.0.0.1:5060 uac_expect_408.xml 5 5
    uas_finish uas 5
fi

lab_end
