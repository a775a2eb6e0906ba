#!/usr/bin/env bash
# cdr_mixed: after a SIPp run of mixed outcomes, the CDR files hold exactly one record per call
# with the right disposition, status and timing; read back by Python's csv module, then (second
# round, same scenarios) by its json module.
#
#   UAC 127.0.0.1:5062 -> SBC access 127.0.0.1:5060 -> trunks by callee prefix (lab/configs/cdr.yaml):
#     1xxx answered, 5 s of talk (uas_basic on 5080)       -> answered/200, bills 5 s +- 0.1 s
#     2xxx busy (uas_reject_486 on 5082)                   -> busy/486
#     3xxx caller cancels while ringing (uas_ring_cancel)  -> cancelled/487
#     4xxx nobody answers, 2 s ring timeout               -> no_answer/408
#     5xxx first trunk 503 (5085), then answered (5086)    -> answered/200, 2 attempts
#   UAC 127.0.0.99:5064 -> SBC trunk listener 127.0.0.1:5070: not a trunk source
#                                                          -> rejected_by_policy/403
# Each round: SIGTERM (graceful drain) completes the last file; no temporary file may remain.
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=240
lab_begin cdr_mixed

if lab_is_direct; then
    lab_note "direct mode: CDRs need the SBC; nothing to validate"
    lab_end
fi

for fmt in csv jsonl; do
    lab_step "round: $fmt"
    rm -rf cdr cdr-journal
    sed "s/format: csv/format: $fmt/" "$REPO_DIR/lab/configs/cdr.yaml" >"$OUT/cdr-$fmt.yaml"
    sbc_start "$OUT/cdr-$fmt.yaml"
    uas_start uas_answer 127.0.0.1:5080 uas_basic.xml
    uas_start uas_busy 127.0.0.1:5082 uas_reject_486.xml
    uas_start uas_ring 127.0.0.1:5083 uas_ring_cancel.xml
    uas_start uas_dead 127.0.0.1:5085 uas_reject_503.xml
    uas_start uas_backup 127.0.0.1:5086 uas_basic.xml
    UAC_ADDR=127.0.0.1:5062 uac_start answered 127.0.0.1:5060 uac_basic.xml 4 4 -s 1001 -d 5000
    UAC_ADDR=127.0.0.1:5063 uac_start busy 127.0.0.1:5060 uac_expect_486.xml 3 3 -s 2001
    UAC_ADDR=127.0.0.1:5064 uac_start cancelled 127.0.0.1:5060 uac_cancel.xml 3 3 -s 3001
    UAC_ADDR=127.0.0.1:5065 uac_start noanswer 127.0.0.1:5060 uac_expect_408.xml 2 2 -s 4001
    UAC_ADDR=127.0.0.1:5066 uac_start failover 127.0.0.1:5060 uac_basic.xml 3 3 -s 5001 -d 1000
    UAC_ADDR=127.0.0.99:5067 uac_start rejected 127.0.0.1:5070 uac_expect_403.xml 3 3 -s 6001
    for u in answered busy cancelled noanswer failover rejected; do
        uac_wait "$u"
    done
    uas_finish uas_answer 4
    uas_finish uas_busy 3
    uas_finish uas_ring 5
    uas_finish uas_dead 3
    uas_finish uas_backup 3
    sbc_stop
    cp sbc.log "sbc-$fmt.log"
    python3 "$LAB_DIR/cdr_check.py" cdr "$fmt" \
        1:4:answered:200:5.0 2:3:busy:486 3:3:cancelled:487 4:2:no_answer:408 \
        5:3:answered:200 6:3:rejected_by_policy:403 >"cdr-check-$fmt.txt" 2>&1 ||
        lab_fail "$fmt CDRs: $(grep -c problem "cdr-check-$fmt.txt") problem(s), see cdr-check-$fmt.txt"
    lab_step "$(head -1 "cdr-check-$fmt.txt")"
    # Failover: two attempts, the second on the backup trunk with the rewritten callee.
    python3 - cdr "$fmt" <<'PY' || lab_fail "$fmt CDRs: failover/policy fields wrong"
import csv, json, os, sys
d, fmt = sys.argv[1], sys.argv[2]
rows = []
for n in sorted(os.listdir(d)):
    if n.startswith("cdr-") and n.endswith(fmt):
        with open(os.path.join(d, n), newline="") as f:
            rows += list(csv.DictReader(f)) if fmt == "csv" else [json.loads(l) for l in f]
bad = []
for r in rows:
    if r["callee_in"].startswith("5"):
        if (str(r["attempts"]), r["outbound_trunk"], r["callee_out"]) != ("2", "backup", "+495001"):
            bad.append(r)
        if not r["b_call_id"] or r["b_call_id"] == r["a_call_id"]:
            bad.append(r)
    if r["callee_in"].startswith("6"):
        if (r["inbound_listener"], r["source"].split(":")[0]) != ("trunk", "127.0.0.99"):
            bad.append(r)
    if r["callee_in"].startswith("1") and r["a_codec"] == "":
        bad.append(r)
for r in bad:
    print("bad record:", r)
sys.exit(1 if bad else 0)
PY
    mv cdr "cdr-$fmt"
done

lab_end
