#!/usr/bin/env bash
# drain: SIGTERM while calls are up. The SBC answers new INVITEs 503 at once, lets the calls in
# progress go on for drain_grace (2 s in lab/configs/drain.yaml), then ends them with a BYE on
# both legs and exits with status 0.
#
#   UAC "calls": 5 calls that never hang up themselves (uac_callee_hangup.xml: waits for a BYE
#   and answers 200); UAS: uas_basic.xml (answers, then takes the BYE, which comes from the SBC).
#   UAC "late": one call placed after SIGTERM must get 503 (uac_expect_503.xml).
# Needs the SBC: in direct mode it is skipped.
source "$(dirname "$0")/../lib.sh"
lab_begin drain

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's own shutdown)"
    lab_end
fi
sbc_start lab/configs/drain.yaml
uas_start uas 127.0.0.1:5080 uas_basic.xml
uac_start calls 127.0.0.1:5060 uac_callee_hangup.xml 5 10
sleep 1.5
lab_step "SIGTERM to the SBC with 5 calls up"
sbc_pid=$SBC_PID
kill -TERM "$sbc_pid"
sleep 0.3
UAC_ADDR=127.0.0.1:5063 uac_run late 127.0.0.1:5060 uac_expect_503.xml 1 1
uac_wait calls
uas_finish uas 5
# The SBC must stop by itself once the calls are gone, with status 0.
for ((i = 0; i < 60; i++)); do
    kill -0 "$sbc_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$sbc_pid" 2>/dev/null; then
    lab_fail "SBC still running 6 s after SIGTERM (drain grace 2 s)"
else
    st=0
    wait "$sbc_pid" || st=$?
    SBC_PID=
    ((st == 0)) || lab_fail "SBC exited with status $st after SIGTERM"
    grep -q "drain grace over; ending remaining calls" "$OUT/sbc.log" ||
        lab_fail "the SBC log does not say it ended the remaining calls"
fi
lab_end
