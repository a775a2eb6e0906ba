#!/usr/bin/env bash
# media_hold: hold and resume by re-INVITE from each side; media stops and resumes as the
# SDP says.
#
#   UAC 127.0.0.11:5062 -> SBC access 127.0.0.1:5060 | SBC trunk 127.0.0.2:5070 -> UAS 127.0.0.12:5080
#   config: lab/configs/media.yaml
#   call 1: uac_media_hold/uas_media_hold: the caller plays RTP throughout; 7.5 s after the
#     ACK it holds (a=sendonly, answered a=recvonly), 7.5 s later it resumes (a=sendrecv).
#   call 2: uac_media_callee_hold/uas_media_callee_hold: the callee holds and resumes the
#     same way; the caller plays RTP in each phase. Both UASs run with -rtp_echo.
#
# Phases are cut from the capture at the ACKs of the re-INVITEs (+-0.3 s). Expectations on
# the SBC: before the hold and after the resume, >= 99 % of the RTP of each direction is
# relayed; while the caller holds (it is sendonly), the callee's echo is not relayed to
# the caller, while the caller's RTP still reaches the callee; while the callee holds, the
# caller's RTP is not relayed to it.
# Validated SIPp-to-SIPp (LAB_MODE=direct): both pairs complete (checks skipped).
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=150
lab_begin media_hold

sbc_start lab/configs/media.yaml
target=$(sbc_or_direct 127.0.0.1:5060 127.0.0.12:5080)
sbc=(--sbc 127.0.0.1 --sbc 127.0.0.2)
ends=(--caller 127.0.0.11 --callee 127.0.0.12)

# phase_check PCAP LABEL FROM TO ARGS...: the rtp check restricted to [FROM+0.3, TO-0.3].
phase_check() {
    local pcap=$1 label=$2 from=$3 to=$4
    shift 4
    from=$(awk -v t="$from" 'BEGIN { printf "%.3f", t + 0.3 }')
    to=$(awk -v t="$to" 'BEGIN { printf "%.3f", t - 0.3 }')
    media_check "$label" rtp --pcap "$pcap" "${sbc[@]}" "${ends[@]}" --from "$from" \
        --to-time "$to" --min-ratio 0.99 --min-packets 150 "$@"
}

capture_start caller_hold udp
uas_start uas_hold 127.0.0.12:5080 uas_media_hold.xml -rtp_echo
UAC_ADDR=127.0.0.11:5062 uac_run uac_hold "$target" uac_media_hold.xml 1 1
uas_finish uas_hold 1
capture_stop caller_hold

capture_start callee_hold udp
uas_start uas_callee_hold 127.0.0.12:5080 uas_media_callee_hold.xml -rtp_echo
UAC_ADDR=127.0.0.11:5062 uac_run uac_callee_hold "$target" uac_media_callee_hold.xml 1 1
uas_finish uas_callee_hold 1
capture_stop callee_hold

if lab_is_direct; then
    lab_note "direct mode: media checks skipped (no SBC)"
else
    pcap=$OUT/caller_hold.pcap
    mapfile -t acks < <(sip_times "$pcap" 'ip.src == 127.0.0.11 && sip.Method == "ACK"')
    mapfile -t byes < <(sip_times "$pcap" 'ip.src == 127.0.0.11 && sip.Method == "BYE"')
    if ((${#acks[@]} != 3 || ${#byes[@]} < 1)); then
        lab_fail "caller hold: expected 3 ACKs and a BYE from the caller, got ${#acks[@]} and ${#byes[@]}"
    else
        lab_step "caller hold: phases at ${acks[*]} s, BYE at ${byes[0]} s"
        phase_check "$pcap" caller_hold_before "${acks[0]}" "${acks[1]}"
        phase_check "$pcap" caller_hold_held "${acks[1]}" "${acks[2]}" --expect-none callee-\>caller
        phase_check "$pcap" caller_hold_resumed "${acks[2]}" "${byes[0]}"
    fi

    pcap=$OUT/callee_hold.pcap
    mapfile -t acks < <(sip_times "$pcap" 'ip.src == 127.0.0.12 && sip.Method == "ACK"')
    mapfile -t first < <(sip_times "$pcap" 'ip.dst == 127.0.0.12 && sip.Method == "ACK"')
    mapfile -t byes < <(sip_times "$pcap" 'ip.src == 127.0.0.11 && sip.Method == "BYE"')
    if ((${#acks[@]} != 2 || ${#first[@]} < 1 || ${#byes[@]} < 1)); then
        lab_fail "callee hold: expected 2 ACKs from the callee, its ACK and a BYE, got ${#acks[@]}, ${#first[@]}, ${#byes[@]}"
    else
        lab_step "callee hold: phases at ${first[0]} ${acks[*]} s, BYE at ${byes[0]} s"
        phase_check "$pcap" callee_hold_before "${first[0]}" "${acks[0]}"
        # While held, the callee receives nothing, so it echoes nothing: only the caller's
        # direction can be judged.
        phase_check "$pcap" callee_hold_held "${acks[0]}" "${acks[1]}" --expect-none caller-\>callee \
            --min-packets 0 --min-ratio 0
        phase_check "$pcap" callee_hold_resumed "${acks[1]}" "${byes[0]}"
    fi
fi

lab_end
