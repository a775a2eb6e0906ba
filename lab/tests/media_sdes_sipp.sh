#!/usr/bin/env bash
# media_sdes_sipp: an SDES-SRTP phone calls a plain-RTP SIPp trunk through the SBC (issue 6,
# "done when" 4, with SIPp as the trunk).
#
#   callers (baresip, PCMU/PCMA, a 700 Hz tone, recording what they decode with sndfile), one
#   call each, one after the other:
#     mand 127.0.0.11:5062  mediaenc=srtp-mand: RTP/SAVP with a=crypto
#     best 127.0.0.13:5064  mediaenc=srtp: best effort, RTP/AVP with a=crypto (the issue's words)
#     -> SBC access 127.0.0.1:5060 (media profile sdes) | SBC trunk 127.0.0.2:5070 (plain RTP)
#     -> callee SIPp 127.0.0.12:5080 (lab/scenarios/uas_media_pcmu.xml: refuses an offer that
#        is not RTP/AVP or carries a=crypto, answers PCMU, -rtp_echo on its media port)
#   and last a plain phone, plain 127.0.0.14:5066 (no mediaenc: RTP/AVP without a=crypto), which
#   the sdes listener must refuse.
#   config: lab/configs/media_sdes.yaml plus a records section (CDRs in ./cdr), written to
#   $OUT/media_sdes_sipp.yaml by this test.
#   traffic: each caller sends BYE after CALL_SECS s. Whatever SIPp gets it sends back, so the
#   caller's tone makes the round trip: SRTP -> SBC -> RTP -> SIPp -> RTP -> SBC -> SRTP.
#
# Checks per call, all on what tools other than the SBC saw (tshark on lo, SIPp's counters and
# its regexps on the offer, baresip's log and recording, Python's csv on the CDR):
# - SDP: the trunk's offer is RTP/AVP without a=crypto (tshark, and SIPp's scenario); the
#   caller's answer keeps the caller's protocol (RTP/SAVP for mand, RTP/AVP for best) with
#   exactly one a=crypto whose key is not one of the caller's; only SBC addresses in the SBC's SDPs.
# - trunk leg: >= MIN_PACKETS RTP packets each way between the SBC's trunk port and SIPp's
#   media port (the ports of the SDPs), every one payload type 0 (PCMU) with UDP length 180
#   (8 + 12 + 160: no authentication tag), and both ways decode (G.711 mu-law) to the caller's
#   700 Hz: the SBC sent plain audio, not SRTP.
# - access leg: >= MIN_PACKETS RTP packets each way between the caller's port and the SBC's
#   access port, every one with UDP length 8 + 12 + 160 + the tag of the answered suite (10
#   bytes for AES_CM_128_HMAC_SHA1_80, 4 for _32); the caller's srtp module says SRTP is
#   enabled and never failed to decrypt; its recording of what it decoded is its own 700 Hz
#   (so the SBC's SRTP toward it decrypts to audio) and its RTP statistics count the packets.
# - end: the caller's BYE reached SIPp and its 200 the caller; SIPp completed 2 calls (INVITE,
#   ACK, BYE, 200); one CDR per call (by the caller's Call-ID): answered/200, released by the
#   caller, billing about CALL_SECS s.
# - the plain phone gets 488, nothing of its call reaches SIPp, and its CDR is failed/488.
#
# The callers' source routes are those of media_baresip (ua_source_routes in lib.sh: baresip
# 1.0 binds its RTP sockets to the wildcard address). SIPp binds its media socket to its -mi
# address.
source "$(dirname "$0")/../lib.sh"
lab_begin media_sdes_sipp

if lab_is_direct; then
    lab_note "direct mode: an SDES caller needs the SBC to reach a plain-RTP trunk; nothing to validate"
    lab_end
fi

CALL_SECS=8
CALLERS=(mand best)
declare -A IP=([mand]=127.0.0.11 [best]=127.0.0.13) PORT=([mand]=5062 [best]=5064)
declare -A RTP=([mand]=10000-10899 [best]=12000-12899) SPORTS=([mand]=10000-10999 [best]=12000-12999)
declare -A MEDIAENC=([mand]=srtp-mand [best]=srtp) PROTO=([mand]=RTP/SAVP [best]=RTP/AVP)
SIPP_IP=127.0.0.12 SIPP_PORT=5080
SBC_ACCESS=127.0.0.1 SBC_TRUNK=127.0.0.2
CALLER_HZ=700
MIN_PACKETS=200

require_tool baresip baresip-core
require_tool sox sox
require_tool tshark tshark
require_tool dumpcap tshark

ua_source_routes "${IP[mand]}=${SPORTS[mand]}" "${IP[best]}=${SPORTS[best]}"

# 10 s of the callers' tone, 8 kHz mono S16LE (aufile reads it at the codec's rate).
wav=$OUT/caller-${CALLER_HZ}hz.wav
tone_wav "$wav" "$CALLER_HZ"
# rtp_stats yes: the checks read the callers' RTP statistics at hangup.
for c in "${CALLERS[@]}"; do
    UA_RTP_STATS=yes ua_config "$c" "${IP[$c]}" "${PORT[$c]}" "${RTP[$c]}" "$wav" \
        "PCMU/8000/1,PCMA/8000/1" ";mediaenc=${MEDIAENC[$c]}" srtp.so sndfile.so
done
PLAIN_IP=127.0.0.14 PLAIN_PORT=5066
UA_RTP_STATS=yes ua_config plain "$PLAIN_IP" "$PLAIN_PORT" 14000-14899 "$wav" \
    "PCMU/8000/1,PCMA/8000/1" ""

# media_sdes's config, and CDRs: what differs from it is only the records section.
cfg=$OUT/media_sdes_sipp.yaml
{
    cat "$REPO_DIR/lab/configs/media_sdes.yaml"
    cat <<'EOF'

records:
  format: csv
  dir: cdr
  rotate: { interval: 2s, max_bytes: 1048576 }
  journal: cdr-journal
EOF
} >"$cfg"
sbc_start "$cfg"
capture_start media udp

uas_start sipp "$SIPP_IP:$SIPP_PORT" uas_media_pcmu.xml -rtp_echo

target=$SBC_ACCESS:5060
for c in "${CALLERS[@]}"; do
    lab_step "caller $c (baresip, mediaenc=${MEDIAENC[$c]}) on ${IP[$c]}:${PORT[$c]} dials" \
        "sip:callee@$target (${CALLER_HZ} Hz), quits after ${CALL_SECS}s"
    ua_start "$c" -t "$CALL_SECS" -e "/dial sip:callee@$target"
    if ua_wait "$c" $((CALL_SECS + 20)); then
        lab_step "caller $c exited"
    else
        lab_fail "caller $c still running $((CALL_SECS + 20))s after start"
        ua_stop "$c"
    fi
done
# A plain-RTP phone (no a=crypto) on the same sdes listener: the SBC must refuse it.
lab_step "caller plain (baresip, no mediaenc) on $PLAIN_IP:$PLAIN_PORT dials sip:refused@$target"
ua_start plain -t 4 -e "/dial sip:refused@$target"
ua_wait plain 15 || {
    lab_fail "caller plain still running 15 s after start"
    ua_stop plain
}
uas_finish sipp "${#CALLERS[@]}"
capture_stop media
sbc_stop

pcap=$OUT/media.pcap
invite="sip.Method == \"INVITE\""
ok200="sip.Status-Code == 200 && sip.CSeq.method == \"INVITE\""
# sdp_of FILTER: "m-line attributes..." of the first SIP message matching the tshark FILTER.
sdp_of() {
    tshark -r "$pcap" -n -Y "$1" -T fields -e sdp.media -e sdp.media_attr \
        -E separator=' ' -E aggregator=' ' 2>/dev/null | head -n 1
}
# first_field FILTER FIELD: FIELD of the first packet matching FILTER.
first_field() {
    tshark -r "$pcap" -n -Y "$1" -T fields -e "$2" 2>/dev/null | head -n 1
}
# keys_of SDP: the inline keys of its a=crypto lines, one per line.
keys_of() { grep -o 'inline:[A-Za-z0-9+/=]*' <<<"$1" | cut -d: -f2; }
port_of() { awk '{ print $2; exit }' <<<"$1"; }

# rtp_flow NAME SRC SPORT DST DPORT LENGTH: require >= MIN_PACKETS RTP packets (tshark decodes
# the port pair as RTP) SRC:SPORT -> DST:DPORT, all PCMU with UDP length LENGTH.
rtp_flow() {
    local name=$1 src=$2 sport=$3 dst=$4 dport=$5 len=$6 all n m
    local flow="ip.src == $src && udp.srcport == $sport && ip.dst == $dst && udp.dstport == $dport"
    all=$(tshark -r "$pcap" -n -d "udp.port==$dport,rtp" -d "udp.port==$sport,rtp" \
        -Y "rtp && $flow" -T fields -e udp.length -e rtp.p_type 2>/dev/null)
    printf '%s\n' "$all" | sort | uniq -c >"$OUT/$name.lengths.txt"
    n=$(grep -c . <<<"$all")
    m=$(grep -cx "$len"$'\t'"0" <<<"$all")
    if ((m >= MIN_PACKETS && m == n)); then
        lab_step "$name: $m RTP packets $src:$sport -> $dst:$dport, all PCMU, UDP length $len"
    else
        lab_fail "$name: $m of $n RTP packets $src:$sport -> $dst:$dport are PCMU with UDP length" \
            "$len (need all, >= $MIN_PACKETS; see $name.lengths.txt)"
    fi
}

# check_call NAME: every check of one caller's call (see the header). Sets CALL_ID[NAME].
declare -A CALL_ID=()
check_call() {
    local c=$1 ip=${IP[$1]} proto=${PROTO[$1]}
    lab_step "---- caller $c (mediaenc=${MEDIAENC[$c]})"
    # Signalling and the end of the call.
    ua_log_has "$c" "Call established" "call established"
    ua_log_has "$c" "Set audio encoder: PCMU 8000Hz" "sends PCMU"
    local dur
    dur=$(tr '\r' '\n' <"$OUT/$c.ua.log" | grep -o 'terminated (duration: [0-9]* secs)' |
        grep -o '[0-9]*' | tail -n 1)
    if [[ -n $dur ]] && ((dur >= CALL_SECS - 2)); then
        lab_step "caller $c's call lasted $dur s"
    else
        lab_fail "caller $c's call lasted ${dur:-?} s (expected about $CALL_SECS s)"
    fi
    local a_id b_id
    a_id=$(first_field "ip.src == $ip && $invite" sip.Call-ID)
    b_id=$(first_field "ip.dst == $SIPP_IP && $invite && sip.from.user == \"$c\"" sip.Call-ID)
    CALL_ID[$c]=$a_id
    [[ -n $a_id && -n $b_id ]] || {
        lab_fail "caller $c: its INVITE or the SBC's to SIPp is not in the capture"
        return
    }
    sip_count "$pcap" "ip.dst == $SIPP_IP && sip.Method == \"BYE\" && sip.Call-ID == \"$b_id\"" \
        "caller $c's BYE reached SIPp"
    sip_count "$pcap" "ip.dst == $ip && sip.CSeq.method == \"BYE\" && sip.Status-Code == 200" \
        "200 OK to caller $c's BYE reached it"

    # SDP.
    local caller_offer trunk_offer trunk_answer caller_answer
    caller_offer=$(sdp_of "ip.src == $ip && $invite")
    trunk_offer=$(sdp_of "sip.Call-ID == \"$b_id\" && $invite")
    trunk_answer=$(sdp_of "sip.Call-ID == \"$b_id\" && $ok200")
    caller_answer=$(sdp_of "ip.dst == $ip && $ok200")
    printf 'caller offer: %s\ntrunk offer: %s\ntrunk answer: %s\ncaller answer: %s\n' \
        "$caller_offer" "$trunk_offer" "$trunk_answer" "$caller_answer" >"$OUT/$c.sdp_bodies.txt"
    if [[ $trunk_offer == *" RTP/AVP "* && $trunk_offer != *crypto* && $trunk_offer != *SAVP* ]]; then
        lab_step "caller $c: the trunk is offered RTP/AVP without a=crypto"
    else
        lab_fail "caller $c: the trunk's offer is not plain RTP/AVP (see $c.sdp_bodies.txt): $trunk_offer"
    fi
    local caller_keys answer_keys suite
    caller_keys=$(keys_of "$caller_offer")
    answer_keys=$(keys_of "$caller_answer")
    suite=$(grep -o 'crypto:[0-9]* AES_CM_128_HMAC_SHA1_[0-9]*' <<<"$caller_answer" | awk '{ print $2 }')
    if [[ $caller_offer != *" $proto "* || -z $caller_keys ]]; then
        lab_fail "caller $c did not offer $proto with a=crypto (see $c.sdp_bodies.txt): $caller_offer"
    elif [[ $caller_answer != *" $proto "* ]] || (($(grep -c . <<<"$answer_keys") != 1)) ||
        [[ -z $suite ]]; then
        lab_fail "caller $c's answer is not $proto with one a=crypto (see $c.sdp_bodies.txt): $caller_answer"
    elif grep -qxF -- "$answer_keys" <<<"$caller_keys"; then
        lab_fail "caller $c: the SBC answered with the caller's own key ($answer_keys)"
    else
        lab_step "caller $c is answered $proto with one a=crypto ($suite), a key of the SBC's" \
            "(not one of the caller's $(grep -c . <<<"$caller_keys"))"
    fi

    # Media: the RTP ports come from the SDPs (where each side said it receives).
    local caller_port access_port trunk_port sipp_port
    caller_port=$(port_of "$caller_offer") access_port=$(port_of "$caller_answer")
    trunk_port=$(port_of "$trunk_offer") sipp_port=$(port_of "$trunk_answer")
    lab_step "caller $c's RTP ports: $ip:${caller_port:-?} <-> SBC $SBC_ACCESS:${access_port:-?}" \
        "| SBC $SBC_TRUNK:${trunk_port:-?} <-> SIPp $SIPP_IP:${sipp_port:-?}"
    if [[ -z $caller_port || -z $access_port || -z $trunk_port || -z $sipp_port ]]; then
        lab_fail "caller $c: an RTP port is missing from the SDPs (see $c.sdp_bodies.txt)"
        return
    fi
    # Trunk leg: plain G.711 (8 + 12 + 160).
    rtp_flow "${c}_trunk_out" "$SBC_TRUNK" "$trunk_port" "$SIPP_IP" "$sipp_port" 180
    rtp_flow "${c}_trunk_in" "$SIPP_IP" "$sipp_port" "$SBC_TRUNK" "$trunk_port" 180
    # Not encrypted: both ways decode (mu-law) to the caller's tone, within this call's time
    # (media_check tone judges what the --sbc addresses send to --to).
    local t0 t1
    t0=$(first_field "sip.Call-ID == \"$b_id\" && $invite" frame.time_relative)
    t1=$(first_field "sip.Call-ID == \"$b_id\" && sip.Method == \"BYE\"" frame.time_relative)
    local window=(--pcap "$pcap" --from "${t0:-0}" --to-time "${t1:-100000}")
    media_check "${c}_tone_to_sipp" tone "${window[@]}" --sbc "$SBC_TRUNK" --to "$SIPP_IP" \
        --hz "$CALLER_HZ"
    media_check "${c}_tone_from_sipp" tone "${window[@]}" --sbc "$SIPP_IP" --to "$SBC_TRUNK" \
        --hz "$CALLER_HZ"
    # Access leg: SRTP, the authentication tag (RFC 3711 section 4.2) after the 160 bytes.
    local srtp_len=190
    [[ $suite == AES_CM_128_HMAC_SHA1_32 ]] && srtp_len=184
    rtp_flow "${c}_access_in" "$ip" "$caller_port" "$SBC_ACCESS" "$access_port" "$srtp_len"
    rtp_flow "${c}_access_out" "$SBC_ACCESS" "$access_port" "$ip" "$caller_port" "$srtp_len"

    ua_log_has "$c" "SRTP is Enabled \(cryptosuite=AES_CM_128_HMAC_SHA1_(80|32)\)" \
        "negotiated SRTP with the SBC"
    if tr '\r' '\n' <"$OUT/$c.ua.log" | grep -q 'failed to decrypt'; then
        lab_fail "caller $c's srtp module refused SRTP from the SBC (see $c.ua.log)"
    else
        lab_step "caller $c's srtp module refused nothing"
    fi
    # baresip's RTP statistics at hangup (rtp_stats): "packets: TRANSMITTED RECEIVED" under
    # the "audio Transmit: Receive:" header.
    local rx
    rx=$(tr '\r' '\n' <"$OUT/$c.ua.log" |
        awk '/^audio +Transmit: +Receive:/ { s = 1; next } s && $1 == "packets:" { print $3; exit }')
    if [[ -n $rx ]] && ((rx >= MIN_PACKETS)); then
        lab_step "caller $c: its RTP statistics count $rx packets received"
    else
        lab_fail "caller $c: its RTP statistics show ${rx:-no} packets received (need $MIN_PACKETS; see $c.ua.log)"
    fi
    # What the caller decoded from the SBC's SRTP: its own tone, back from SIPp's echo.
    local decoded=("$OUT/$c/snd/"*dec*.wav)
    if [[ -f ${decoded[0]} ]]; then
        media_check "${c}_heard" wav --file "${decoded[0]}" --hz "$CALLER_HZ" --skip 1 --seconds 3
    else
        ls -la "$OUT/$c/snd" >"$OUT/$c.snd.txt" 2>&1
        lab_fail "caller $c recorded no decoded audio (see $c.snd.txt)"
    fi
}

for c in "${CALLERS[@]}"; do
    check_call "$c"
done
lab_step "---- caller plain (no a=crypto)"
sip_count "$pcap" "ip.dst == $PLAIN_IP && sip.Status-Code == 488 && sip.CSeq.method == \"INVITE\"" \
    "the SBC refused caller plain's INVITE with 488"
ua_log_has plain "session closed: 488" "was refused (488)"
n=$(sip_times "$pcap" "ip.dst == $SIPP_IP && $invite && sip.from.user == \"plain\"" | wc -l)
if ((n == 0)); then
    lab_step "no INVITE of caller plain reached SIPp"
else
    lab_fail "$n INVITEs of caller plain reached SIPp: the sdes listener let a plain offer through"
fi
lab_step "---- all calls"
media_check sdp sdp --pcap "$pcap" --sbc "$SBC_ACCESS" --sbc "$SBC_TRUNK"

# CDRs: one per call; the SDES callers' by their Call-ID, answered, released by the caller.
python3 "$LAB_DIR/cdr_check.py" cdr csv "callee:${#CALLERS[@]}:answered:200" refused:1:failed:488 \
    >cdr-check.txt 2>&1 ||
    lab_fail "CDRs: see cdr-check.txt ($(grep -m1 problem cdr-check.txt))"
lab_step "$(head -n 1 cdr-check.txt)"
for c in "${CALLERS[@]}"; do
    if out=$(python3 - cdr "${CALL_ID[$c]:-none}" "$CALL_SECS" <<'PY'
import csv, glob, sys
d, call_id, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
rows = [r for f in sorted(glob.glob(d + "/cdr-*.csv")) for r in csv.DictReader(open(f, newline=""))]
mine = [r for r in rows if r["a_call_id"] == call_id]
if len(mine) != 1:
    print(f"{len(mine)} records with a_call_id {call_id}")
    sys.exit(1)
r = mine[0]
print(f"released by {r['released_by']}, billable {r['billable_s']} s, "
      f"codecs {r['a_codec']}/{r['b_codec']}, packets {r['a_packets']}/{r['b_packets']}")
ok = r["released_by"] == "caller" and secs - 3 <= float(r["billable_s"]) <= secs + 1
sys.exit(0 if ok else 1)
PY
    ); then
        lab_step "CDR of caller $c's call: $out"
    else
        lab_fail "CDR of caller $c's call: $out (expected one, released by the caller, about $CALL_SECS s)"
    fi
done

LAB_PASS_REASON="SDES-SRTP baresips (RTP/SAVP and best-effort RTP/AVP, each with a=crypto) called a"
LAB_PASS_REASON+=" plain-RTP SIPp trunk through the SBC: RTP/AVP without a=crypto to SIPp, the caller's"
LAB_PASS_REASON+=" protocol with the SBC's own key back, plain PCMU with the caller's tone both ways on"
LAB_PASS_REASON+=" the trunk leg, SRTP both ways on the caller's leg, its tone heard back by the"
LAB_PASS_REASON+=" caller, BYE and one CDR per call; a plain caller refused (488)"
lab_end
