#!/usr/bin/env bash
# media_baresip: a real SIP UA calls another through the SBC, G.711 audio both ways.
#
#   caller baresip 127.0.0.11:5062 -> SBC access 127.0.0.1:5060 | SBC trunk 127.0.0.2:5070
#     -> callee baresip 127.0.0.12:5080 (the trunk "carrier" target)
#   config: lab/configs/media.yaml (media anchored on 127.0.0.1 toward the caller and
#   127.0.0.2 toward the callee)
#   traffic: one call. Both baresips run headless (no audio device: modules g711, aufile,
#   account, menu; config dirs generated in $OUT/caller and $OUT/callee by ua_config in
#   lib.sh), codecs limited to PCMU/PCMA. Each one's audio source is a 10 s, 8 kHz sine made
#   by sox (tone_wav): 700 Hz from the caller, 1300 Hz from the callee (longer than the call:
#   when aufile's file ends, baresip 1.0 hangs up). The callee answers on its own (account
#   parameter answermode=auto); the caller dials with -e "/dial sip:callee@..." and hangs up
#   (BYE) after CALL_SECS (8) s through baresip's own quit timer (-t), which ends its calls
#   first.
#   dumpcap captures lo for the whole call.
#
# Expectations on the SBC: the call is set up and the caller's BYE reaches the callee and
# is answered; every SDP it sends names only its own addresses; RTP flows caller -> SBC ->
# callee and callee -> SBC -> caller, never UA to UA, >= 200 packets reaching the SBC per
# direction and >= 99 % of them relayed; decoding (G.711, by payload type) the RTP the SBC
# sends to the callee gives the caller's 700 Hz tone as the strongest frequency, and what it
# sends to the caller the callee's 1300 Hz; baresip's RTCP sender reports are relayed both
# ways.
# Validated baresip-to-baresip (LAB_MODE=direct: the caller dials 127.0.0.12:5080): the
# call is set up and ended by BYE/200, >= 200 RTP packets flow each way between the UAs, and
# the capture decodes to 700 Hz caller -> callee and 1300 Hz callee -> caller (the tone check
# is then given the sending UA's address in place of the SBC's).
#
# baresip 1.0 binds its RTP sockets to the wildcard address, so the kernel would send its
# RTP from 127.0.0.1 (the first address of lo), not from the address it announces in its
# SDP: the SBC's strict source check rightly drops it (tried: without the routes below it
# relays none of it), and the capture could not tell the UAs from the SBC. So, in this
# test's own namespace only, policy routes give each UA's RTP port range its own source
# address (ip rule sport ... lookup a table whose local route has src 127.0.0.11 /
# 127.0.0.12: ua_source_routes in lib.sh), as if each UA were a host of its own.
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=90
lab_begin media_baresip

CALL_SECS=8
# rtp_ports of each UA, and the (wider) source-port range its policy route covers.
CALLER_IP=127.0.0.11 CALLER_PORT=5062 CALLER_RTP=10000-10899 CALLER_SPORTS=10000-10999
CALLEE_IP=127.0.0.12 CALLEE_PORT=5080 CALLEE_RTP=11000-11899 CALLEE_SPORTS=11000-11999
CALLER_HZ=700 CALLEE_HZ=1300
MIN_PACKETS=200

for tool in baresip sox tshark dumpcap; do
    command -v "$tool" >/dev/null ||
        lab_abort "$tool not installed (bash lab/test-all.sh installs the lab's peers)"
done

# Source address per UA (see the header): RTP/RTCP from the caller's port range leaves from
# the caller's address, the callee's from the callee's.
ua_source_routes "$CALLER_IP=$CALLER_SPORTS" "$CALLEE_IP=$CALLEE_SPORTS"

tone_wav "$OUT/caller-${CALLER_HZ}hz.wav" "$CALLER_HZ"
tone_wav "$OUT/callee-${CALLEE_HZ}hz.wav" "$CALLEE_HZ"
ua_config caller "$CALLER_IP" "$CALLER_PORT" "$CALLER_RTP" "$OUT/caller-${CALLER_HZ}hz.wav" \
    "PCMU/8000/1,PCMA/8000/1" ""
ua_config callee "$CALLEE_IP" "$CALLEE_PORT" "$CALLEE_RTP" "$OUT/callee-${CALLEE_HZ}hz.wav" \
    "PCMU/8000/1,PCMA/8000/1" ";answermode=auto"

sbc_start lab/configs/media.yaml
capture_start media udp

lab_step "starting callee baresip on $CALLEE_IP:$CALLEE_PORT (auto-answer, ${CALLEE_HZ} Hz)"
ua_start callee
rc=0
lab_wait_listening "${UA_PID[callee]}" 10 "udp:$CALLEE_IP:$CALLEE_PORT" || rc=$?
((rc == 0)) ||
    lab_abort "callee baresip did not listen on udp:$CALLEE_IP:$CALLEE_PORT (see callee.ua.log)"

target=$(sbc_or_direct 127.0.0.1:5060 "$CALLEE_IP:$CALLEE_PORT")
lab_step "caller baresip on $CALLER_IP:$CALLER_PORT dials sip:callee@$target" \
    "(${CALLER_HZ} Hz), quits after ${CALL_SECS}s"
ua_start caller -t "$CALL_SECS" -e "/dial sip:callee@$target"
if ua_wait caller $((CALL_SECS + 20)); then
    lab_step "caller baresip exited"
else
    lab_fail "caller baresip still running $((CALL_SECS + 20))s after start"
    ua_stop caller
fi
sleep 0.5
ua_stop callee
capture_stop media

# Signalling: both ends had the call, with G.711, and the caller's BYE went through.
ua_log_has caller "Call established" "call established"
ua_log_has callee "answering call" "auto-answered"
ua_log_has callee "Call established" "call established"
ua_log_has caller "Set audio encoder: PCM[UA] 8000Hz" "sends G.711"
ua_log_has callee "Set audio encoder: PCM[UA] 8000Hz" "sends G.711"
dur=$(tr '\r' '\n' <"$OUT/caller.ua.log" | grep -o 'terminated (duration: [0-9]* secs)' |
    grep -o '[0-9]*' | tail -n 1)
if [[ -n $dur ]] && ((dur >= CALL_SECS - 2)); then
    lab_step "caller's call lasted $dur s"
else
    lab_fail "caller's call lasted ${dur:-?} s (expected about $CALL_SECS s)"
fi
sip_count "$OUT/media.pcap" "ip.dst == $CALLEE_IP && sip.Method == \"BYE\"" "BYE reached the callee"
sip_count "$OUT/media.pcap" "ip.dst == $CALLER_IP && sip.CSeq.method == \"BYE\" && sip.Status-Code == 200" \
    "200 OK to the BYE reached the caller"

pcap=(--pcap "$OUT/media.pcap")
if lab_is_direct; then
    # No SBC: count the UA-to-UA RTP, and judge each tone in what the other UA sent.
    media_check count_c2e count "${pcap[@]}" --src "$CALLER_IP" --dst "$CALLEE_IP" \
        --min-packets "$MIN_PACKETS"
    media_check count_e2c count "${pcap[@]}" --src "$CALLEE_IP" --dst "$CALLER_IP" \
        --min-packets "$MIN_PACKETS"
    media_check tone_c2e tone "${pcap[@]}" --sbc "$CALLER_IP" --to "$CALLEE_IP" --hz "$CALLER_HZ"
    media_check tone_e2c tone "${pcap[@]}" --sbc "$CALLEE_IP" --to "$CALLER_IP" --hz "$CALLEE_HZ"
    LAB_PASS_REASON="baresip called baresip directly: BYE answered, RTP and tones"
    LAB_PASS_REASON+=" ($CALLER_HZ/$CALLEE_HZ Hz) both ways"
else
    sbc=(--sbc 127.0.0.1 --sbc 127.0.0.2)
    media_check sdp sdp "${pcap[@]}" "${sbc[@]}"
    media_check rtp rtp "${pcap[@]}" "${sbc[@]}" --caller "$CALLER_IP" --callee "$CALLEE_IP" \
        --min-ratio 0.99 --min-packets "$MIN_PACKETS"
    media_check tone_c2e tone "${pcap[@]}" "${sbc[@]}" --to "$CALLEE_IP" --hz "$CALLER_HZ"
    media_check tone_e2c tone "${pcap[@]}" "${sbc[@]}" --to "$CALLER_IP" --hz "$CALLEE_HZ"
    # RTCP: baresip sends a sender report after 5 s; the SBC relays it to the other UA from its
    # own RTCP port (RTP + 1).
    for pair in "127.0.0.1 $CALLER_IP" "127.0.0.2 $CALLEE_IP"; do
        set -- $pair
        n=$(tshark -r "$OUT/media.pcap" -n -Y "ip.src == $1 && ip.dst == $2 && rtcp.pt == 200" \
            -T fields -e frame.number 2>/dev/null | wc -l)
        if ((n >= 1)); then
            lab_step "RTCP: $n sender report(s) relayed by the SBC ($1) to $2"
        else
            lab_fail "RTCP: no sender report relayed by the SBC ($1) to $2"
        fi
    done
    LAB_PASS_REASON="baresip called baresip through the SBC: BYE answered, RTP relayed and"
    LAB_PASS_REASON+=" tones ($CALLER_HZ/$CALLEE_HZ Hz) decoded both ways"
fi

lab_end
