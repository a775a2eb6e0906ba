#!/usr/bin/env bash
# topology: topology hiding, checked on a capture of both legs.
#
#   UAC 127.0.0.11:5062 -> SBC access 127.0.0.1:5060 | SBC trunk 127.0.0.2:5070 -> UAS 127.0.0.12:5080
#   config: lab/configs/topology.yaml (each side of the SBC on its own address)
#   traffic, 5 calls each, one pair after the other: uac_basic/uas_basic (caller hangs
#   up), uac_callee_hangup/uas_callee_hangup, uac_reinvite/uas_reinvite (re-INVITEs from
#   the caller), uac_callee_reinvite/uas_callee_reinvite (re-INVITEs from the callee)
#
# dumpcap captures all UDP on lo; lab/topology_check.py then sorts every SIP message into
# leg A (to/from 127.0.0.1:5060) or leg B (to/from 127.0.0.2:5070) and fails if any
# Call-ID, From/To tag, Via branch, Via sent-by host:port, Contact URI or Contact
# host:port of one leg appears anywhere in a message of the other leg, the SBC's own two
# sockets excepted, nor any bare IP of the other side (--strict-hosts: media is anchored, so
# the caller's 127.0.0.11 must not appear in an SDP sent to the callee). At least 20 Call-IDs
# per leg are required, and every SIP message must belong to exactly one leg.
#
# Expectations on the SBC: besides completing the 20 calls, nothing identifying one side
# crosses to the other: new Call-ID, tags and branches on leg B; its own Via and Contact
# (127.0.0.2:5070 on leg B, 127.0.0.1:5060 on leg A); and no caller address in any header
# of leg B (e.g. a From URI copied with the caller's host:port would be a leak), nor any
# callee address on leg A.
# Validated SIPp-to-SIPp (LAB_MODE=direct): the four scenario pairs, with these addresses,
# straight from 127.0.0.11 to 127.0.0.12:5080 (the capture is taken but not checked: with
# no SBC there are no legs). topology_check.py itself is validated by topology_selftest.
source "$(dirname "$0")/../lib.sh"
lab_begin topology

sbc_start lab/configs/topology.yaml
capture_start topology udp
target=$(sbc_or_direct 127.0.0.1:5060 127.0.0.12:5080)
for pair in basic callee_hangup reinvite callee_reinvite; do
    uas_start "uas_$pair" 127.0.0.12:5080 "uas_$pair.xml"
    UAC_ADDR=127.0.0.11:5062 uac_run "uac_$pair" "$target" "uac_$pair.xml" 5 5
    uas_finish "uas_$pair" 5
done
capture_stop topology

if lab_is_direct; then
    lab_note "direct mode: capture not checked (no SBC, no legs)"
else
    lab_step "checking topology hiding on topology.pcap"
    if python3 "$LAB_DIR/topology_check.py" --pcap "$OUT/topology.pcap" \
        --leg-a 127.0.0.1:5060 --leg-b 127.0.0.2:5070 --min-calls 20 --strict-hosts >"$OUT/topology_check.txt" 2>&1; then
        sed 's/^/   /' "$OUT/topology_check.txt" | grep -vE '^   (LEAK|warning)' | tail -n 4
    else
        sed 's/^/   /' "$OUT/topology_check.txt" | head -n 30
        lab_fail "topology check failed (see topology_check.txt)"
    fi
fi

lab_end
