#!/usr/bin/env bash
# reinvite_callee: the callee holds (re-INVITE a=sendonly) and resumes (re-INVITE
# a=sendrecv), then the caller hangs up; 10 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_callee_reinvite.xml / uas_callee_reinvite.xml; config: configs/sbc.yaml
#
# Expectations on the SBC: accepts in-dialog INVITEs from the UAS on leg B (sent to the
# SBC's Contact, CSeq 1 and 2 of the callee's own numbering) and sends re-INVITEs in the
# caller's dialog on leg A (leg A Call-ID, From tag = the SBC's To tag toward the caller,
# Request-URI = the caller's Contact) with the SDP direction unchanged; relays the
# caller's 200 (a=recvonly, then sendrecv) and the ACKs; then the caller's BYE.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes.
source "$(dirname "$0")/../lib.sh"
lab_begin reinvite_callee

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_callee_reinvite.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_callee_reinvite.xml 10 10
uas_finish uas 10

lab_end
