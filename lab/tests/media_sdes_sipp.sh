#!/usr/bin/env bash
# media_sdes_sipp: an SDES-SRTP phone calls a plain-RTP SIPp trunk through the SBC (issue 6,
# "done when" 4, with SIPp as the trunk).
#
#   caller baresip 127.0.0.11:5062 (mediaenc=srtp-mand: RTP/SAVP with a=crypto, PCMU/PCMA,
#     a 700 Hz tone; records what it decodes with the sndfile module)
#     -> SBC access 127.0.0.1:5060 (media profile sdes) | SBC trunk 127.0.0.2:5070 (plain RTP)
#     -> callee SIPp 127.0.0.12:5080 (lab/scenarios/uas_media_pcmu.xml: refuses an offer that
#        is not RTP/AVP or carries a=crypto, answers PCMU, -rtp_echo on its media port)
#   config: lab/configs/media_sdes.yaml plus a records section (CDRs in ./cdr), written to
#   $OUT/media_sdes_sipp.yaml by this test.
#   traffic: one call; the caller sends BYE after CALL_SECS s. Whatever SIPp gets it sends back,
#   so the caller's tone makes the round trip: SRTP -> SBC -> RTP -> SIPp -> RTP -> SBC -> SRTP.
#
# Checks, all on what tools other than the SBC saw (tshark on lo, SIPp's counters and its
# regexps on the offer, baresip's log and recording, Python's csv on the CDR):
# - SDP: the trunk's offer is RTP/AVP without a=crypto (tshark, and SIPp's scenario); the
#   caller's answer is RTP/SAVP with exactly one a=crypto whose key is not one of the caller's;
#   only SBC addresses in the SBC's SDPs.
# - trunk leg: >= MIN_PACKETS RTP packets each way between the SBC's trunk port and SIPp's
#   media port (the ports of the SDPs), every one payload type 0 (PCMU) with UDP length 180
#   (8 + 12 + 160: no authentication tag), and both ways decode (G.711 mu-law) to the caller's
#   700 Hz: the SBC sent plain audio, not SRTP.
# - access leg: >= MIN_PACKETS RTP packets each way between the caller's port and the SBC's
#   access port, every one with UDP length 8 + 12 + 160 + the tag of the answered suite (10
#   bytes for AES_CM_128_HMAC_SHA1_80, 4 for _32); the caller's srtp module says SRTP is
#   enabled and never failed to decrypt; its recording of what it decoded is its own 700 Hz
#   (so the SBC's SRTP toward it decrypts to audio) and its RTP statistics show packets received.
# - end: SIPp completed 1 call (INVITE, ACK, BYE, 200), the caller's BYE reached SIPp and the
#   200 the caller; one CDR, answered/200, released by the caller, billing about CALL_SECS s,
#   with the caller's Call-ID.
#
# The caller's source route is that of media_baresip (ua_source_routes in lib.sh: baresip 1.0
# binds its RTP sockets to the wildcard address). SIPp binds its media socket to its -mi address.
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=90
lab_begin media_sdes_sipp

if lab_is_direct; then
    lab_note "direct mode: an SDES caller needs the SBC to reach a plain-RTP trunk; nothing to validate"
    lab_end
fi

CALL_SECS=8
CALLER_IP=127.0.0.11 CALLER_PORT=5062 CALLER_RTP=10000-10899 CALLER_SPORTS=10000-10999
SIPP_IP=127.0.0.12 SIPP_PORT=5080
SBC_ACCESS=127.0.0.1 SBC_TRUNK=127.0.0.2
CALLER_HZ=700
MIN_PACKETS=200

require_tool baresip baresip-core
require_tool sox sox
require_tool tshark tshark
require_tool dumpcap tshark

ua_source_routes "$CALLER_IP=$CALLER_SPORTS"

# 10 s of the caller's tone, 8 kHz mono S16LE (aufile reads it at the codec's rate).
sox -n -r 8000 -c 1 -b 16 -e signed-integer "$OUT/caller-${CALLER_HZ}hz.wav" synth 10 \
    sine "$CALLER_HZ" vol 0.5 >"$OUT/sox.txt" 2>&1 || lab_abort "sox could not make the tone (see sox.txt)"
ua_config caller "$CALLER_IP" "$CALLER_PORT" "$CALLER_RTP" "$OUT/caller-${CALLER_HZ}hz.wav" \
    "PCMU/8000/1,PCMA/8000/1" ";mediaenc=srtp-mand" srtp.so sndfile.so

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
lab_step "caller baresip on $CALLER_IP:$CALLER_PORT dials sip:callee@$target" \
    "(SDES-SRTP, ${CALLER_HZ} Hz), quits after ${CALL_SECS}s"
ua_start caller -t "$CALL_SECS" -e "/dial sip:callee@$target"
if ua_wait caller $((CALL_SECS + 20)); then
    lab_step "caller baresip exited"
else
    lab_fail "caller baresip still running $((CALL_SECS + 20))s after start"
    ua_stop caller
fi
uas_finish sipp 1
capture_stop media
sbc_stop

# ---- signalling and the end of the call --------------------------------------------------
ua_log_has caller "Call established" "call established"
ua_log_has caller "Set audio encoder: PCMU 8000Hz" "sends PCMU"
dur=$(tr '\r' '\n' <"$OUT/caller.ua.log" | grep -o 'terminated (duration: [0-9]* secs)' |
    grep -o '[0-9]*' | tail -n 1)
if [[ -n $dur ]] && ((dur >= CALL_SECS - 2)); then
    lab_step "caller's call lasted $dur s"
else
    lab_fail "caller's call lasted ${dur:-?} s (expected about $CALL_SECS s)"
fi
pcap=$OUT/media.pcap
sip_count "$pcap" "ip.dst == $SIPP_IP && sip.Method == \"BYE\"" "the caller's BYE reached SIPp"
sip_count "$pcap" "ip.dst == $CALLER_IP && sip.CSeq.method == \"BYE\" && sip.Status-Code == 200" \
    "200 OK to the BYE reached the caller"

# ---- SDP ---------------------------------------------------------------------------------
# sdp_of FILTER: "m-line attributes..." of the first SIP message matching the tshark FILTER.
sdp_of() {
    tshark -r "$pcap" -n -Y "$1" -T fields -e sdp.media -e sdp.media_attr \
        -E separator=' ' -E aggregator=' ' 2>/dev/null | head -n 1
}
# keys_of SDP: the inline keys of its a=crypto lines, one per line.
keys_of() { grep -o 'inline:[A-Za-z0-9+/=]*' <<<"$1" | cut -d: -f2; }
invite="sip.Method == \"INVITE\""
ok200="sip.Status-Code == 200 && sip.CSeq.method == \"INVITE\""
caller_offer=$(sdp_of "ip.src == $CALLER_IP && $invite")
trunk_offer=$(sdp_of "ip.dst == $SIPP_IP && $invite")
trunk_answer=$(sdp_of "ip.src == $SIPP_IP && $ok200")
caller_answer=$(sdp_of "ip.dst == $CALLER_IP && $ok200")
printf 'caller offer: %s\ntrunk offer: %s\ntrunk answer: %s\ncaller answer: %s\n' \
    "$caller_offer" "$trunk_offer" "$trunk_answer" "$caller_answer" >"$OUT/sdp_bodies.txt"
if [[ $trunk_offer == *" RTP/AVP "* && $trunk_offer != *crypto* && $trunk_offer != *SAVP* ]]; then
    lab_step "the trunk is offered RTP/AVP without a=crypto"
else
    lab_fail "the trunk's offer is not plain RTP/AVP (see sdp_bodies.txt): $trunk_offer"
fi
caller_keys=$(keys_of "$caller_offer")
answer_keys=$(keys_of "$caller_answer")
suite=$(grep -o 'crypto:[0-9]* AES_CM_128_HMAC_SHA1_[0-9]*' <<<"$caller_answer" | awk '{ print $2 }')
if [[ $caller_offer != *RTP/SAVP* || -z $caller_keys ]]; then
    lab_fail "the caller did not offer RTP/SAVP with a=crypto (see sdp_bodies.txt): $caller_offer"
elif [[ $caller_answer != *RTP/SAVP* ]] || (($(grep -c . <<<"$answer_keys") != 1)) || [[ -z $suite ]]; then
    lab_fail "the caller's answer is not RTP/SAVP with one a=crypto (see sdp_bodies.txt): $caller_answer"
elif grep -qxF -- "$answer_keys" <<<"$caller_keys"; then
    lab_fail "the SBC answered the caller with the caller's own key ($answer_keys)"
else
    lab_step "the caller is answered RTP/SAVP with one a=crypto ($suite), a key of the SBC's" \
        "(not one of the caller's $(grep -c . <<<"$caller_keys"))"
fi
media_check sdp sdp --pcap "$pcap" --sbc "$SBC_ACCESS" --sbc "$SBC_TRUNK"

# ---- media -------------------------------------------------------------------------------
# The RTP ports come from the SDPs: where each side said it receives.
port_of() { awk '{ print $2; exit }' <<<"$1"; }
caller_port=$(port_of "$caller_offer") access_port=$(port_of "$caller_answer")
trunk_port=$(port_of "$trunk_offer") sipp_port=$(port_of "$trunk_answer")
lab_step "RTP ports: caller $CALLER_IP:${caller_port:-?} <-> SBC $SBC_ACCESS:${access_port:-?}" \
    "| SBC $SBC_TRUNK:${trunk_port:-?} <-> SIPp $SIPP_IP:${sipp_port:-?}"
[[ -n $caller_port && -n $access_port && -n $trunk_port && -n $sipp_port ]] ||
    lab_abort "an RTP port is missing from the SDPs (see sdp_bodies.txt)"

# rtp_flow NAME SRC SPORT DST DPORT LENGTH: require >= MIN_PACKETS RTP packets (tshark decodes
# the port pair as RTP) SRC:SPORT -> DST:DPORT, all PCMU with UDP length LENGTH.
rtp_flow() {
    local name=$1 src=$2 sport=$3 dst=$4 dport=$5 len=$6 all
    local flow="ip.src == $src && udp.srcport == $sport && ip.dst == $dst && udp.dstport == $dport"
    all=$(tshark -r "$pcap" -n -d "udp.port==$dport,rtp" -d "udp.port==$sport,rtp" \
        -Y "rtp && $flow" -T fields -e udp.length -e rtp.p_type 2>/dev/null)
    printf '%s\n' "$all" | sort | uniq -c >"$OUT/$name.lengths.txt"
    local n m
    n=$(grep -c . <<<"$all")
    m=$(grep -cx "$len"$'\t'"0" <<<"$all")
    if ((m >= MIN_PACKETS && m == n)); then
        lab_step "$name: $m RTP packets $src:$sport -> $dst:$dport, all PCMU, UDP length $len"
    else
        lab_fail "$name: $m of $n RTP packets $src:$sport -> $dst:$dport are PCMU with UDP length" \
            "$len (need all, >= $MIN_PACKETS; see $name.lengths.txt)"
    fi
}
# Trunk leg: plain G.711 (8 + 12 + 160).
rtp_flow trunk_out "$SBC_TRUNK" "$trunk_port" "$SIPP_IP" "$sipp_port" 180
rtp_flow trunk_in "$SIPP_IP" "$sipp_port" "$SBC_TRUNK" "$trunk_port" 180
# Not encrypted: both ways decode (mu-law) to the caller's tone. (media_check tone judges what
# the --sbc addresses send to --to.)
media_check tone_to_sipp tone --pcap "$pcap" --sbc "$SBC_TRUNK" --to "$SIPP_IP" --hz "$CALLER_HZ"
media_check tone_from_sipp tone --pcap "$pcap" --sbc "$SIPP_IP" --to "$SBC_TRUNK" --hz "$CALLER_HZ"
# Access leg: SRTP, the authentication tag (RFC 3711 section 4.2) after the 160 bytes.
case $suite in
    AES_CM_128_HMAC_SHA1_80) srtp_len=190 ;;
    AES_CM_128_HMAC_SHA1_32) srtp_len=184 ;;
    *) srtp_len=190 ;;
esac
rtp_flow access_in "$CALLER_IP" "$caller_port" "$SBC_ACCESS" "$access_port" "$srtp_len"
rtp_flow access_out "$SBC_ACCESS" "$access_port" "$CALLER_IP" "$caller_port" "$srtp_len"

ua_log_has caller "SRTP is Enabled \(cryptosuite=AES_CM_128_HMAC_SHA1_(80|32)\)" \
    "negotiated SRTP with the SBC"
if tr '\r' '\n' <"$OUT/caller.ua.log" | grep -q 'failed to decrypt'; then
    lab_fail "the caller's srtp module refused SRTP from the SBC (see caller.ua.log)"
else
    lab_step "the caller's srtp module refused nothing"
fi
# baresip's RTP statistics at hangup (rtp_stats): "packets: TRANSMITTED RECEIVED" under the
# "audio Transmit: Receive:" header.
rx=$(tr '\r' '\n' <"$OUT/caller.ua.log" |
    awk '/^audio +Transmit: +Receive:/ { s = 1; next } s && $1 == "packets:" { print $3; exit }')
if [[ -n $rx ]] && ((rx >= MIN_PACKETS)); then
    lab_step "baresip caller: its RTP statistics count $rx packets received"
else
    lab_fail "baresip caller: its RTP statistics show ${rx:-no} packets received (need $MIN_PACKETS; see caller.ua.log)"
fi
# What the caller decoded from the SBC's SRTP: its own tone, back from SIPp's echo.
decoded=("$OUT/caller/snd/"*dec*.wav)
dec=${decoded[0]}
if [[ -f $dec ]]; then
    media_check caller_heard wav --file "$dec" --hz "$CALLER_HZ" --skip 1 --seconds 3
else
    ls -la "$OUT/caller/snd" >"$OUT/caller.snd.txt" 2>&1
    lab_fail "baresip caller recorded no decoded audio (see caller.snd.txt)"
fi

# ---- CDR ---------------------------------------------------------------------------------
python3 "$LAB_DIR/cdr_check.py" cdr csv callee:1:answered:200 >cdr-check.txt 2>&1 ||
    lab_fail "CDRs: see cdr-check.txt ($(grep -m1 problem cdr-check.txt))"
lab_step "$(head -n 1 cdr-check.txt)"
call_id=$(tshark -r "$pcap" -n -Y "ip.src == $CALLER_IP && $invite" -T fields -e sip.Call-ID \
    2>/dev/null | head -n 1)
if out=$(python3 - cdr "$call_id" "$CALL_SECS" <<'PY'
import csv, glob, sys
d, call_id, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
rows = [r for f in sorted(glob.glob(d + "/cdr-*.csv")) for r in csv.DictReader(open(f, newline=""))]
if len(rows) != 1:
    print(f"{len(rows)} records")
    sys.exit(1)
r = rows[0]
print(f"a_call_id {r['a_call_id']}, released by {r['released_by']}, billable {r['billable_s']} s, "
      f"codecs {r['a_codec']}/{r['b_codec']}, packets {r['a_packets']}/{r['b_packets']}")
ok = (r["a_call_id"] == call_id and r["released_by"] == "caller"
      and secs - 3 <= float(r["billable_s"]) <= secs + 1)
sys.exit(0 if ok else 1)
PY
); then
    lab_step "CDR: $out"
else
    lab_fail "CDR: $out (expected the caller's Call-ID $call_id, released by the caller, about $CALL_SECS s)"
fi

LAB_PASS_REASON="an SDES-SRTP baresip called a plain-RTP SIPp trunk through the SBC: RTP/AVP"
LAB_PASS_REASON+=" without a=crypto to SIPp, RTP/SAVP with the SBC's own key to the caller, plain"
LAB_PASS_REASON+=" PCMU with the caller's tone both ways on the trunk leg, SRTP both ways on the"
LAB_PASS_REASON+=" caller's leg, its tone heard back by the caller, BYE and one CDR"
lab_end
