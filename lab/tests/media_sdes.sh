#!/usr/bin/env bash
# media_sdes: an SDES-SRTP phone calls a plain RTP trunk through the SBC (issue 6, "done when" 4).
#
#   caller baresip 127.0.0.11:5062 (mediaenc=srtp-mand: RTP/SAVP with a=crypto)
#     -> SBC access 127.0.0.1:5060 (media profile sdes) | SBC trunk 127.0.0.2:5070 (plain RTP)
#     -> callee baresip 127.0.0.12:5080 (G.711, plain RTP, the trunk "carrier" target)
#   config: lab/configs/media_sdes.yaml
#   traffic: one call, as in media_baresip (same headless baresips, same tones: 700 Hz from
#   the caller, 1300 Hz from the callee, BYE from the caller after CALL_SECS s), the caller with
#   baresip's srtp module and mediaenc=srtp-mand.
#
# Expectations on the SBC: the offer that reaches the trunk is RTP/AVP without a=crypto, the
# answer that reaches the caller is RTP/SAVP with exactly one a=crypto line (the SBC's own key,
# the tag of one of the caller's lines); the call is set up and the caller's BYE answered; the
# caller's SRTP is decrypted by the SBC: the plain RTP it sends the callee decodes to the
# caller's 700 Hz tone (>= 200 packets, >= 99 % relayed); what it sends the caller is SRTP
# (each packet longer than plain G.711 by the authentication tag), which the caller's srtp
# module accepts (it logs "SRTP is Enabled" and no "failed to decrypt").
#
# The per-UA source routes are those of media_baresip (ua_source_routes in lib.sh; see
# media_baresip: baresip 1.0 binds its RTP sockets to the wildcard address). The baresip config
# dirs are ua_config's, the tones tone_wav's (lib.sh).
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=90
lab_begin media_sdes

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
    "PCMU/8000/1,PCMA/8000/1" ";mediaenc=srtp-mand" srtp.so
ua_config callee "$CALLEE_IP" "$CALLEE_PORT" "$CALLEE_RTP" "$OUT/callee-${CALLEE_HZ}hz.wav" \
    "PCMU/8000/1,PCMA/8000/1" ";answermode=auto"

sbc_start lab/configs/media_sdes.yaml
capture_start media udp

lab_step "starting callee baresip on $CALLEE_IP:$CALLEE_PORT (auto-answer, ${CALLEE_HZ} Hz)"
ua_start callee
rc=0
lab_wait_listening "${UA_PID[callee]}" 10 "udp:$CALLEE_IP:$CALLEE_PORT" || rc=$?
((rc == 0)) ||
    lab_abort "callee baresip did not listen on udp:$CALLEE_IP:$CALLEE_PORT (see callee.ua.log)"

target=127.0.0.1:5060
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

# sdp_of FILTER: the SDP bodies of the SIP messages matching the tshark FILTER.
sdp_of() {
    tshark -r "$OUT/media.pcap" -n -Y "$1" -T fields -e sdp.media -e sdp.media_attr \
        -E separator=' ' -E aggregator=' ' 2>/dev/null
}
offer=$(sdp_of "ip.dst == $CALLEE_IP && sip.Method == \"INVITE\"")
answer=$(sdp_of "ip.dst == $CALLER_IP && sip.Status-Code == 200 && sip.CSeq.method == \"INVITE\"")
printf 'offer to the trunk: %s\nanswer to the caller: %s\n' "$offer" "$answer" >"$OUT/sdp_bodies.txt"
if [[ $offer == *RTP/AVP* && $offer != *crypto* && $offer != *SAVP* ]]; then
    lab_step "the trunk is offered RTP/AVP without a=crypto"
else
    lab_fail "the trunk's offer is not plain RTP/AVP (see sdp_bodies.txt): $offer"
fi
n=$(grep -o 'crypto:[0-9]* AES_CM_128_HMAC_SHA1_[0-9]* inline:' <<<"$answer" | wc -l)
if [[ $answer == *RTP/SAVP* ]] && ((n == 1)); then
    lab_step "the caller is answered RTP/SAVP with one a=crypto line of the SBC's"
else
    lab_fail "the caller's answer is not RTP/SAVP with one a=crypto (see sdp_bodies.txt): $answer"
fi
ua_log_has caller "SRTP is Enabled \(cryptosuite=AES_CM_128_HMAC_SHA1_(80|32)\)" \
    "negotiated SRTP with the SBC"
if tr '\r' '\n' <"$OUT/caller.ua.log" | grep -q 'failed to decrypt'; then
    lab_fail "the caller's srtp module refused SRTP from the SBC (see caller.ua.log)"
else
    lab_step "the caller's srtp module refused nothing"
fi

pcap=(--pcap "$OUT/media.pcap")
sbc=(--sbc 127.0.0.1 --sbc 127.0.0.2)
media_check sdp sdp "${pcap[@]}" "${sbc[@]}"
media_check rtp rtp "${pcap[@]}" "${sbc[@]}" --caller "$CALLER_IP" --callee "$CALLEE_IP" \
    --min-ratio 0.99 --min-packets "$MIN_PACKETS"
# Decrypted by the SBC: the caller's tone in the plain RTP toward the callee.
media_check tone_c2e tone "${pcap[@]}" "${sbc[@]}" --to "$CALLEE_IP" --hz "$CALLER_HZ"
# Encrypted by the SBC: SRTP adds the authentication tag (4 or 10 bytes, RFC 3711 §4.2) to
# each 20 ms G.711 packet, so the usual UDP length of what the SBC sends the caller is above
# the plain 180 bytes (8 UDP + 12 RTP + 160), as is the caller's own, while the callee's is 180.
# usual_udp_length SRC DST: the most frequent UDP length from SRC to DST (RTP outnumbers RTCP).
usual_udp_length() {
    tshark -r "$OUT/media.pcap" -n -Y "udp && !sip && ip.src == $1 && ip.dst == $2" \
        -T fields -e udp.length 2>/dev/null | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }'
}
to_caller=$(usual_udp_length 127.0.0.1 "$CALLER_IP")
from_caller=$(usual_udp_length "$CALLER_IP" 127.0.0.1)
to_callee=$(usual_udp_length 127.0.0.2 "$CALLEE_IP")
lab_step "usual UDP lengths: caller -> SBC ${from_caller:-?}, SBC -> caller ${to_caller:-?}," \
    "SBC -> callee ${to_callee:-?}"
if [[ $to_callee == 180 && $from_caller =~ ^(184|190)$ && $to_caller =~ ^(184|190)$ ]]; then
    lab_step "SRTP both ways on the caller's leg, plain RTP on the callee's"
else
    lab_fail "expected SRTP (184 or 190) on the caller's leg and plain RTP (180) on the callee's"
fi
LAB_PASS_REASON="an SDES-SRTP baresip called a plain baresip through the SBC: RTP/SAVP with the"
LAB_PASS_REASON+=" SBC's a=crypto toward the caller, RTP/AVP toward the trunk, the caller's tone"
LAB_PASS_REASON+=" decrypted toward the callee, SRTP toward the caller accepted"

lab_end
