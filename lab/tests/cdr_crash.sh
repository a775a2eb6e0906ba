#!/usr/bin/env bash
# cdr_crash: kill -9 of the SBC during 20 answered calls; at the restart the journal yields 20
# records with disposition interrupted (end = last time the SBC was known alive); a following
# call is recorded normally. CDRs in JSON Lines, read back with Python's json module.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 -> trunk "answer" -> UAS 127.0.0.1:5080
#   config: lab/configs/cdr.yaml with format jsonl
source "$(dirname "$0")/../lib.sh"
lab_begin cdr_crash

if lab_is_direct; then
    lab_note "direct mode: CDRs need the SBC; nothing to validate"
    lab_end
fi

sed "s/format: csv/format: jsonl/" "$REPO_DIR/lab/configs/cdr.yaml" >"$OUT/cdr-jsonl.yaml"
sbc_start "$OUT/cdr-jsonl.yaml"
uas_start uas 127.0.0.1:5080 uas_basic.xml
# 20 calls that would last a minute.
uac_start long 127.0.0.1:5060 uac_basic.xml 20 20 -s 1001 -d 60000
for ((i = 0; i < 40; i++)); do
    s=$(sipp_stat "$OUT/uas.csv" 'CurrentCall')
    [[ ${s:-0} -ge 20 ]] && break
    sleep 0.25
done
sleep 1
lab_step "UAS has ${s:-?} calls up; kill -9 of the SBC"
sbc_pid=$(pgrep -P "$SBC_PID" -x sbc)
[[ -n $sbc_pid ]] || lab_abort "cannot find the sbc process under $SBC_PID"
kill -KILL "$sbc_pid"
wait "$SBC_PID" 2>/dev/null
SBC_PID=
cp sbc.log sbc-killed.log
lab__stop_sipp long
uas_stop uas
ls -la cdr >cdr-after-kill.txt 2>&1

lab_step "restart"
sbc_start "$OUT/cdr-jsonl.yaml"
# The listeners are bound before the journal is replayed, so the SBC may listen before it logs
# the replay: wait for the line.
for _ in $(seq 50); do
    grep -q 'CDR writer started' sbc.log && break
    sleep 0.1
done
grep -q 'CDR writer started.*interrupted=20' sbc.log ||
    lab_fail "restart did not report 20 interrupted calls: $(grep 'CDR writer started' sbc.log)"
uas_start uas2 127.0.0.1:5080 uas_basic.xml
uac_run after 127.0.0.1:5060 uac_basic.xml 1 1 -s 1002 -d 1000
uas_finish uas2 1
sbc_stop

python3 "$LAB_DIR/cdr_check.py" cdr jsonl 1001:20:interrupted:0 1002:1:answered:200:1.0 \
    >cdr-check.txt 2>&1 || lab_fail "CDRs: see cdr-check.txt ($(grep -m1 problem cdr-check.txt))"
lab_step "$(head -1 cdr-check.txt)"
# The interrupted calls were answered; their end is the last time known alive, after the answer
# and before the restart.
python3 - cdr <<'PY' || lab_fail "interrupted records have wrong times"
import json, os, sys
rows = []
for n in sorted(os.listdir(sys.argv[1])):
    if n.startswith("cdr-"):
        rows += [json.loads(l) for l in open(os.path.join(sys.argv[1], n))]
intr = [r for r in rows if r["disposition"] == "interrupted"]
after = [r for r in rows if r["disposition"] == "answered"]
bad = [r for r in intr if not r["answer"] or not r["answer"] <= r["end"] < after[0]["start"]]
bad += [r for r in intr if r["sbc_reason"] != "interrupted" or float(r["billable_s"]) <= 0]
for r in bad:
    print("bad:", r)
sys.exit(1 if bad or not after else 0)
PY

lab_end
