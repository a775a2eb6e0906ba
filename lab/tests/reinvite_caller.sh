#!/usr/bin/env bash
# reinvite_caller: the caller holds (re-INVITE a=sendonly) and resumes (re-INVITE
# a=sendrecv); 10 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_reinvite.xml / uas_reinvite.xml; config: configs/sbc.yaml
#
# Expectations on the SBC: relays each re-INVITE of the caller as a re-INVITE in the leg B
# dialog (leg B Call-ID/tags, its own CSeq numbering), with the SDP direction unchanged
# (a=sendonly, then no sendonly/recvonly/inactive); relays each 200 back with the UAS's
# direction (a=recvonly, then sendrecv); the ACKs reach the UAS; BYE as usual.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin reinvite_caller

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_reinvite.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_reinvite.xml 10 10
uas_finish uas 10

lab_end
