#!/usr/bin/env bash
# cdr_disk: a full CDR directory raises the alarm, calls keep flowing, and the queued records are
# written once the directory has room again.
#
#   UAC 127.0.0.1:5062 -> SBC 127.0.0.1:5060 -> trunk "answer" -> UAS 127.0.0.1:5080
#   config: lab/configs/cdr.yaml; the CDR directory is a 256 KiB tmpfs mounted in this test's
#   own mount namespace (ip netns exec gives it one), filled up with a file before the calls.
#   chmod would not do: the lab runs as root, which ignores permissions.
# Checks: all calls succeed while the disk is full; the log has the alarm and sbc_cdr_alarm is 1
# with sbc_cdr_queued > 0 on /metrics; after the filler is deleted, the alarm clears and every
# call has its record (Python csv).
source "$(dirname "$0")/../lib.sh"
lab_begin cdr_disk

if lab_is_direct; then
    lab_note "direct mode: CDRs need the SBC; nothing to validate"
    lab_end
fi

metric() {
    python3 - "$1" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9090/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(sys.argv[1] + " ") or line.startswith(sys.argv[1] + "{"):
        print(line.split()[-1]); break
PY
}

mkdir -p cdr
mount -t tmpfs -o size=256k tmpfs cdr || lab_abort "cannot mount a tmpfs on $OUT/cdr"
sbc_start lab/configs/cdr.yaml
dd if=/dev/zero of=cdr/filler bs=4k 2>/dev/null
lab_step "CDR directory full: $(df -h cdr | tail -1)"
uas_start uas 127.0.0.1:5080 uas_basic.xml
uac_run full 127.0.0.1:5060 uac_basic.xml 10 10 -s 1001 -d 200
sleep 1.5
alarm=$(metric sbc_cdr_alarm)
queued=$(metric sbc_cdr_queued)
lab_step "while full: sbc_cdr_alarm=${alarm:-?} sbc_cdr_queued=${queued:-?}"
[[ ${alarm:-} == 1 ]] || lab_fail "sbc_cdr_alarm is ${alarm:-absent}, expected 1"
[[ ${queued:-0} == 10 ]] || lab_fail "sbc_cdr_queued is ${queued:-absent}, expected 10"
grep -q "CDR ALARM" sbc.log || lab_fail "no CDR ALARM line in sbc.log"
ls cdr | grep -q '^cdr-' && lab_fail "a CDR file was completed on a full disk?"

rm -f cdr/filler
lab_step "room again; waiting for the queue to drain"
for ((i = 0; i < 20; i++)); do
    queued=$(metric sbc_cdr_queued)
    [[ ${queued:-1} == 0 ]] && break
    sleep 0.25
done
alarm=$(metric sbc_cdr_alarm)
lab_step "after: sbc_cdr_alarm=${alarm:-?} sbc_cdr_queued=${queued:-?}"
[[ ${alarm:-} == 0 ]] || lab_fail "sbc_cdr_alarm is ${alarm:-absent} after the disk came back"
grep -q "alarm cleared" sbc.log || lab_fail "no 'alarm cleared' line in sbc.log"
uac_run after 127.0.0.1:5060 uac_basic.xml 2 2 -s 1002 -d 200
uas_finish uas 12
sbc_stop
python3 "$LAB_DIR/cdr_check.py" cdr csv 1001:10:answered:200 1002:2:answered:200 \
    >cdr-check.txt 2>&1 || lab_fail "CDRs: see cdr-check.txt ($(grep -m1 problem cdr-check.txt))"
lab_step "$(head -1 cdr-check.txt)"
cp -r cdr cdr-copy
umount cdr

lab_end
