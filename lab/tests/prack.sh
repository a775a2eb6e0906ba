#!/usr/bin/env bash
# prack: reliable provisional responses (100rel): 183 with Require: 100rel and RSeq,
# PRACK, 200 (PRACK), 200 (INVITE); 10 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_prack.xml / uas_prack.xml; config: configs/sbc.yaml
#
# Expectations on the SBC:
#   leg B: its INVITE announces 100rel (Supported or Require: 100rel); it PRACKs the
#          reliable 183 with RAck "1 <its INVITE's CSeq number> INVITE".
#   leg A: the caller gets a 183 with Require: 100rel, an RSeq and the SDP answer; the
#          caller's PRACK (RAck <that RSeq> 1 INVITE) is answered 200; then the 200 for
#          the INVITE arrives (after the 200 for the PRACK).
#   Whether the SBC relays PRACK end to end or runs 100rel on each leg is its choice.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin prack

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_prack.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_prack.xml 10 10
uas_finish uas 10

lab_end
