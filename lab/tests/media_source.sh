#!/usr/bin/env bash
# media_source: strict RTP source checking (RTP Bleed fails) and NAT latching on request.
#
#   UAC 127.0.0.11:5062 -> SBC access 127.0.0.1:5060 | SBC trunk 127.0.0.2:5070 -> UAS 127.0.0.12:5080
#   part 1, config lab/configs/media.yaml (default: strict source): one uac_media/uas_media
#     call (-rtp_echo). Mid-call, lab/rtp_inject.py sends marked RTP (its own SSRC) to the
#     SBC's media port of each leg: to the caller's leg from the caller's IP but another port
#     (127.0.0.11:7000) and from another IP with the caller's port (127.0.0.13:20010); to the
#     callee's leg from 127.0.0.13:7002.
#   part 2, config lab/configs/media_nat.yaml (access listener media nat: true): a caller
#     (uac_media_quiet/uas_media) whose SDP announces its SIPp media port, while its RTP
#     (300 packets from lab/rtp_inject.py) comes from 127.0.0.11:7078, as through a NAT.
#
# Expectations on the SBC: part 1: no packet with an injected SSRC leaves the SBC, and the
# call's own RTP is relayed (>= 99.9 % per direction). Part 2: the SBC latches to the
# caller's real source: >= 99.9 % of the RTP is relayed in both directions (the echo goes
# back to the port the caller sends from). The same NAT call against the strict default is
# also run (part 3): its caller RTP must not be relayed at all.
# (SIPp itself cannot play the NATed caller: it sends pcap RTP from the port in its own SDP.)
# Validated SIPp-to-SIPp (LAB_MODE=direct): the pairs complete (checks skipped).
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=150
lab_begin media_source

target=$(sbc_or_direct 127.0.0.1:5060 127.0.0.12:5080)
sbc=(--sbc 127.0.0.1 --sbc 127.0.0.2)
ends=(--caller 127.0.0.11 --callee 127.0.0.12)

# Part 1: strict source.
sbc_start lab/configs/media.yaml
capture_start strict udp
uas_start uas 127.0.0.12:5080 uas_media.xml -rtp_echo
UAC_ADDR=127.0.0.11:5062 uac_start uac "$target" uac_media.xml 1 1
if a_port=$(received_media_port uac) && b_port=$(received_media_port uas); then
    lab_step "SBC media ports: $a_port toward the caller, $b_port toward the callee"
    if ! lab_is_direct; then
        python3 "$LAB_DIR/rtp_inject.py" --src 127.0.0.11:7000 --dst "127.0.0.1:$a_port" \
            --ssrc 0xbad00001 --count 50 >"$OUT/inject1.txt" 2>&1 &
        p1=$!
        python3 "$LAB_DIR/rtp_inject.py" --src 127.0.0.13:20010 --dst "127.0.0.1:$a_port" \
            --ssrc 0xbad00002 --count 50 >"$OUT/inject2.txt" 2>&1 &
        p2=$!
        python3 "$LAB_DIR/rtp_inject.py" --src 127.0.0.13:7002 --dst "127.0.0.2:$b_port" \
            --ssrc 0xbad00003 --count 50 >"$OUT/inject3.txt" 2>&1 &
        wait $! "$p1" "$p2"
    fi
else
    lab_fail "no SDP answer seen by the UAC or offer seen by the UAS"
fi
uac_wait uac
uas_finish uas 1
capture_stop strict
sbc_stop

if ! lab_is_direct; then
    cat "$OUT"/inject*.txt | sed 's/^/   /'
    media_check strict rtp --pcap "$OUT/strict.pcap" "${sbc[@]}" "${ends[@]}" \
        --forbid-ssrc 0xbad00001 --forbid-ssrc 0xbad00002 --forbid-ssrc 0xbad00003 \
        --min-ratio 0.999 --min-packets 200
fi

# nat_call NAME CONFIG: one uac_media_quiet/uas_media call; the caller's RTP (300 packets,
# 6 s) comes from 127.0.0.11:7078, not from the port in its SDP, as through a NAT.
nat_call() {
    local name=$1 cfg=$2
    sbc_start "$cfg"
    capture_start "$name" udp
    uas_start "uas_$name" 127.0.0.12:5080 uas_media.xml -rtp_echo
    UAC_ADDR=127.0.0.11:5062 uac_start "uac_$name" "$target" uac_media_quiet.xml 1 1
    if port=$(received_media_port "uac_$name"); then
        python3 "$LAB_DIR/rtp_inject.py" --src 127.0.0.11:7078 --dst "127.0.0.1:$port" \
            --ssrc 0x4e415401 --count 300 >"$OUT/$name.inject.txt" 2>&1
    else
        lab_fail "$name: no SDP answer seen by the UAC"
    fi
    uac_wait "uac_$name"
    uas_finish "uas_$name" 1
    capture_stop "$name"
    sbc_stop
}

if lab_is_direct; then
    lab_note "direct mode: NAT parts skipped (they need the SBC's latching)"
else
    # Part 2: a caller behind NAT, with the option on: the SBC latches to 127.0.0.11:7078
    # and sends the callee's echo there.
    nat_call nat lab/configs/media_nat.yaml
    media_check nat rtp --pcap "$OUT/nat.pcap" "${sbc[@]}" "${ends[@]}" \
        --min-ratio 0.999 --min-packets 290
    # Part 3: the same caller against the strict default: its RTP is not relayed.
    nat_call nat_strict lab/configs/media.yaml
    media_check nat_strict rtp --pcap "$OUT/nat_strict.pcap" "${sbc[@]}" "${ends[@]}" \
        --expect-none caller-\>callee --min-packets 0 --min-ratio 0
fi

lab_end
