#!/usr/bin/env bash
# session_timer: session timer (RFC 4028) with a refresh by the caller after 2 s; 10 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> UAS 127.0.0.1:5080
#   scenarios: uac_session_timer.xml / uas_session_timer.xml; config: configs/sbc.yaml
#
# Expectations on the SBC:
#   leg A: the INVITE has Supported: timer, Session-Expires: 90;refresher=uac, Min-SE: 90;
#          the 200 to the caller carries a Session-Expires header; the refresh re-INVITE
#          (CSeq 2, same SDP, Session-Expires) 2 s later is answered 200.
#   leg B: free: the SBC may pass the timer through (the UAS then echoes Session-Expires
#          with Require: timer) or run it per leg (plain 200 from the UAS); it may relay
#          the refresh to the UAS or answer it itself. Nobody waits for the 45 s refresh.
# Validated SIPp-to-SIPp (LAB_MODE=direct): yes (the pass-through variant; the UAS's
# other branch, no Session-Expires and no relayed refresh, was checked with uac_basic.xml).
source "$(dirname "$0")/../lib.sh"
lab_begin session_timer

sbc_start configs/sbc.yaml
uas_start uas 127.0.0.1:5080 uas_session_timer.xml
uac_run uac "$(sbc_or_direct 127.0.0.1:5060 127.0.0.1:5080)" uac_session_timer.xml 10 10
uas_finish uas 10

lab_end
