#!/usr/bin/env bash
# cac: call admission control on a trunk limited to 10 concurrent calls (limits.max_total).
# 20 calls offered at once: exactly 10 connect, the other 10 get 503 with Retry-After (checked in
# the SIPp scenario, counted from its log); an emergency call (112) connects while the trunk is
# full; after the 10 end, 10 new calls connect again; and every slot is given back (metrics).
#
#   UAC "fill" 127.0.0.2: 20 calls at 20/s holding 6 s   (uac_cac.xml)
#   UAC "emergency" 127.0.0.3: 1 call to 112 during fill  (uac_basic.xml -s 112)
#   UAC "again" 127.0.0.2: 10 calls after fill             (uac_cac.xml)
#   SBC 127.0.0.1:5060 ... UAS 127.0.0.1:5080 (uas_basic.xml); config lab/configs/cac.yaml
# Needs the SBC: in direct mode it is skipped.
source "$(dirname "$0")/../lib.sh"
lab_begin cac

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's admission control)"
    lab_end
fi
sbc_start lab/configs/cac.yaml
uas_start uas 127.0.0.1:5080 uas_basic.xml

# count NAME WORD: lines of SIPp NAME's -trace_logs file with WORD.
count() { grep -c "$2" "$OUT/$1.logs.log" 2>/dev/null || true; }

UAC_ADDR=127.0.0.2:5062 uac_start fill 127.0.0.1:5060 uac_cac.xml 20 20 -l 20 -d 6000
sleep 2.5
busy=$(metric 'sbc_policy_rejected_total{reason="trunk_cac"}')
lab_step "trunk full: $busy calls refused so far"
UAC_ADDR=127.0.0.3:5062 uac_run emergency 127.0.0.1:5060 uac_basic.xml 1 1 -s 112 -d 500
uac_wait fill
connected=$(count fill CONNECTED)
refused=$(count fill "REFUSED retry-after=5 ")
lab_step "fill: $connected connected, $refused refused with 503 + Retry-After: 5"
((connected == 10)) || lab_fail "fill: $connected calls connected, expected exactly 10"
((refused == 10)) || lab_fail "fill: $refused calls refused with 503 + Retry-After, expected 10"

UAC_ADDR=127.0.0.2:5062 uac_run again 127.0.0.1:5060 uac_cac.xml 10 10 -l 10 -d 1000
again=$(count again CONNECTED)
((again == 10)) || lab_fail "again: $again of 10 calls connected after the first 10 ended"
uas_finish uas 21

sleep 0.5
sbc_metrics >"$OUT/metrics.txt"
cac=$(metric 'sbc_policy_rejected_total{reason="trunk_cac"}')
emergency=$(metric sbc_policy_emergency_calls_total)
active=$(metric sbc_policy_calls_active)
lab_step "metrics: trunk_cac refusals=$cac, emergency calls=$emergency, calls holding a permit=$active"
((cac == 10)) || lab_fail "sbc_policy_rejected_total{reason=\"trunk_cac\"} = $cac, expected 10"
((emergency == 1)) || lab_fail "sbc_policy_emergency_calls_total = $emergency, expected 1"
((active == 0)) || lab_fail "sbc_policy_calls_active = $active after all calls ended (permit leak)"
LAB_PASS_REASON="10 of 20 connected, 10 got 503 + Retry-After, 112 connected while full, 10/10 after"
lab_end
