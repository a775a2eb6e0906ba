#!/usr/bin/env bash
# topology_selftest: checks lab/topology_check.py itself; needs no SBC (same in both modes).
#
# 1. `topology_check.py --self-test`: synthetic legs (clean; Call-ID leaked as is and
#    embedded in another Call-ID; From tag leaked; caller address leaked in a Contact;
#    caller IP in an SDP c= line = warning only, failure with --strict-hosts).
# 2. A real capture of two independent SIPp pairs standing in for the two legs of an SBC:
#      leg A: UAC 127.0.0.11:5062 -> UAS playing the SBC at 127.0.0.1:5060
#      leg B: UAC playing the SBC at 127.0.0.2:5070 -> UAS 127.0.0.12:5080
#    with their own Call-IDs: the check must pass (no false positive on real SIPp traffic).
# 3. The same two pairs, both UACs with -cid_str "leak-%u@lab" (the same Call-IDs on both
#    legs, as a B2BUA that reused the caller's Call-ID would produce): the check must fail
#    and report the Call-ID, and nothing else, as leaked.
source "$(dirname "$0")/../lib.sh"
lab_begin topology_selftest

lab_step "topology_check.py --self-test"
if python3 "$LAB_DIR/topology_check.py" --self-test >"$OUT/self-test.txt" 2>&1; then
    sed 's/^/   /' "$OUT/self-test.txt"
else
    cat "$OUT/self-test.txt"
    lab_fail "topology_check.py --self-test failed"
fi

# run_pairs NAME [EXTRA UAC ARGS]: both pairs at once, captured into NAME.pcap.
run_pairs() {
    local name=$1
    shift
    capture_start "$name" udp
    uas_start "${name}_uas_a" 127.0.0.1:5060 uas_basic.xml
    uas_start "${name}_uas_b" 127.0.0.12:5080 uas_basic.xml
    UAC_ADDR=127.0.0.11:5062 uac_start "${name}_uac_a" 127.0.0.1:5060 uac_basic.xml 5 5 "$@"
    UAC_ADDR=127.0.0.2:5070 uac_start "${name}_uac_b" 127.0.0.12:5080 uac_basic.xml 5 5 "$@"
    uac_wait "${name}_uac_a"
    uac_wait "${name}_uac_b"
    uas_finish "${name}_uas_a" 5
    uas_finish "${name}_uas_b" 5
    capture_stop "$name"
}

check_capture() {
    python3 "$LAB_DIR/topology_check.py" --pcap "$OUT/$1.pcap" \
        --leg-a 127.0.0.1:5060 --leg-b 127.0.0.2:5070 --min-calls 5 >"$OUT/$1.check.txt" 2>&1
}

run_pairs clean
if check_capture clean; then
    lab_step "clean capture: check passes, as it should"
else
    sed 's/^/   /' "$OUT/clean.check.txt" | head -n 20
    lab_fail "false positive: the check fails on two independent calls (see clean.check.txt)"
fi

run_pairs leak -cid_str "leak-%u@lab"
if check_capture leak; then
    lab_fail "the check passes although the same Call-IDs are on both legs (see leak.check.txt)"
elif ! grep -q "^LEAK: Call-ID 'leak-" "$OUT/leak.check.txt"; then
    lab_fail "the check fails but does not report the leaked Call-ID (see leak.check.txt)"
elif grep "^LEAK:" "$OUT/leak.check.txt" | grep -vq "^LEAK: Call-ID"; then
    lab_fail "the check reports leaks other than the Call-ID (see leak.check.txt)"
else
    lab_step "leak capture: check fails on the Call-IDs, as it should"
    grep -m 2 "^LEAK" "$OUT/leak.check.txt" | sed 's/^/   /'
fi

LAB_PASS_REASON="topology_check.py detects a Call-ID leak and passes clean traffic"
lab_end
