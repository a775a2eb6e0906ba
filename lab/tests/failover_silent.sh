#!/usr/bin/env bash
# failover_silent: the first trunk never answers; after Timer B (64*T1 = 3.2 s with
# T1 = 50 ms) the SBC fails over to the second trunk, which completes the call; 5 calls.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 | SBC 127.0.0.1:5070 -> black hole 127.0.0.1:5080
#                                                                  -> UAS 127.0.0.1:5081
#   scenarios: uac_basic.xml / uas_blackhole.xml (SIPp that swallows everything) +
#   uas_basic.xml; config: lab/configs/failover_silent.yaml
#
# Expectations on the SBC: the INVITE goes to 127.0.0.1:5080 first (the black hole must
# have received at least one INVITE); the SBC keeps the caller waiting (100 Trying is
# fine), its INVITE client transaction times out after ~3.2 s, and it sends the call to
# 127.0.0.1:5081 (an SBC that marks the first trunk down after the first timeout may send
# later calls straight to 5081). The caller sees an ordinary successful call; the UAS on
# 5081 completes all 5 calls. No CANCEL is expected toward the silent trunk (no
# provisional response was received), but one would not fail the test.
# Validated SIPp-to-SIPp (LAB_MODE=direct): partly: uac_basic.xml against uas_basic.xml on
# 5081, and one call into the black hole, which must log the INVITE and send nothing (the
# caller's call then fails, as it should). Not checkable without the SBC: Timer B and
# the failover itself.
source "$(dirname "$0")/../lib.sh"
lab_begin failover_silent

sbc_start lab/configs/failover_silent.yaml
LAB_UAS_AA=0 uas_start blackhole 127.0.0.1:5080 uas_blackhole.xml -nd -pause_msg_ign
uas_start uas 127.0.0.1:5081 uas_basic.xml
if lab_is_direct; then
    uac_start uac_blackhole 127.0.0.1:5080 uac_basic.xml 1 1 -recv_timeout 2000 -max_invite_retrans 2
    uac_wait uac_blackhole fail
    uac_run uac 127.0.0.1:5081 uac_basic.xml 5 5
else
    uac_run uac 127.0.0.1:5060 uac_basic.xml 5 5
fi
uas_finish uas 5
uas_stop blackhole
lab_require_msg blackhole '^INVITE sip:' "received an INVITE"
if grep -q "message sent" "$OUT/blackhole.messages.log" 2>/dev/null; then
    lab_fail "the black hole sent something (see blackhole.messages.log)"
fi

lab_end
