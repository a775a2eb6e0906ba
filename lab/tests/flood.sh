#!/usr/bin/env bash
# flood: one source floods INVITEs at 20 x the per-source message rate (4,000/s against
# 200/s) while a legitimate caller places 50 calls/s from another address. The flooder is
# banned (its packets then cost a lookup and are dropped unanswered), the legitimate caller
# keeps >= 99.9 % successful calls, and the SBC's memory stays bounded (RSS reported before,
# during and after the flood; at most 64 MiB of growth allowed).
#
#   UAC "legit"   127.0.0.3: 1,000 calls at 50/s       (uac_basic.xml)
#   UAC "flooder" 127.0.0.2: 40,000 INVITEs at 4,000/s  (uac_flood.xml, to an unrouted number)
#   SBC 127.0.0.1:5060 ... UAS 127.0.0.1:5080 (uas_basic.xml); config lab/configs/flood.yaml
# Needs the SBC: in direct mode it is skipped.
LAB_TEST_TIMEOUT=180
source "$(dirname "$0")/../lib.sh"
lab_begin flood

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's rate limits and bans)"
    lab_end
fi
sbc_start lab/configs/flood.yaml
uas_start uas 127.0.0.1:5080 uas_basic.xml -buff_size 4194304
rss0=$(sbc_rss_kib)
UAC_ADDR=127.0.0.3:5062 uac_start legit 127.0.0.1:5060 uac_basic.xml 1000 50 -d 500 -l 200 \
    -buff_size 4194304
sleep 3
rss1=$(sbc_rss_kib)
UAC_ADDR=127.0.0.2:5062 uac_start flooder 127.0.0.1:5060 uac_flood.xml 40000 4000 -s flood \
    -buff_size 4194304
sleep 5
rss2=$(sbc_rss_kib)
lab__stop_sipp flooder
uac_wait_ratio legit 99.9
uas_stop uas
rss3=$(sbc_rss_kib)
lab_step "SBC RSS: start ${rss0} KiB, before flood ${rss1} KiB, during ${rss2} KiB, after ${rss3} KiB"
lab_note "SBC RSS (KiB): start=${rss0} before-flood=${rss1} during-flood=${rss2} after=${rss3}"
growth=$((${rss3:-0} - ${rss1:-0}))
((growth < 65536)) || lab_fail "SBC RSS grew by ${growth} KiB during the flood (limit 64 MiB)"

sent=$(sipp_stat "$OUT/flooder.csv" 'OutgoingCall(C)')
sleep 0.5
sbc_metrics >"$OUT/metrics.txt"
banned=$(metric 'sbc_policy_packets_total{verdict="banned"}')
limited=$(metric 'sbc_policy_packets_total{verdict="rate_limited"}')
offences=$(metric 'sbc_policy_offences_total{kind="rate_exceeded"}')
bans=$(metric sbc_policy_bans_active)
lab_step "flooder sent ${sent:-?} INVITEs; SBC: ${limited} dropped over rate, ${banned} dropped banned, $offences rate offences, $bans bans active"
grep -q "source banned.*source=127.0.0.2/32\|source=127.0.0.2/32.*source banned" "$OUT/sbc.log" ||
    lab_fail "the SBC log does not show the flooder 127.0.0.2 banned"
grep -q "source=127.0.0.3/32" "$OUT/sbc.log" && lab_fail "the legitimate caller 127.0.0.3 was banned"
((bans == 1)) || lab_fail "sbc_policy_bans_active = $bans, expected 1 (the flooder)"
((limited >= 100)) || lab_fail "only $limited packets dropped for rate (the ban needs 100)"
((banned > 10000)) || lab_fail "only $banned packets dropped as banned: was the flood banned?"
LAB_PASS_REASON="legit >= 99.9 % during a 20x flood, flooder banned, RSS ${rss1} -> ${rss3} KiB"
lab_end
