#!/usr/bin/env bash
# webrtc_opus_fec: issue 6, "FEC understood", both ways, with a real browser. A browser (JsSIP in
# headless Chromium) calls a PCMU trunk (SIPp echoing the audio back), so the SBC transcodes:
# - toward the browser, the SBC's encoder (useinbandfec=1 offered) spends an in-band FEC copy on
#   each frame only while the browser's RTCP receiver reports on that stream show loss;
# - from the browser, the SBC's own RTCP reports (a transcoded pair's RTCP is the SBC's, see
#   sbc-media/src/rtcp.rs) tell Chrome of the loss on its uplink, so Chrome's encoder adds
#   in-band FEC, which the SBC's decoder uses to rebuild lost frames.
#
#   browser alice (lab/browser/ua.mjs, `call` mode: no REGISTER) --WSS--> SBC wss 127.0.0.1:8443
#     (profile webrtc, codecs opus) | trunk 127.0.0.1:5070 --UDP--> SIPp 127.0.0.1:5080
#     (lab/scenarios/uas_media_pcmu.xml, PCMU, -rtp_echo)
#   media: browser <-ICE-lite, DTLS-SRTP, Opus-> SBC 127.0.0.1:42000-42999 <-RTP PCMU-> SIPp
#   config: lab/configs/webrtc_opus_fec.yaml; the WSS certificate is self-signed (openssl).
#   traffic: two calls that the browser hangs up: the first of CALL_SECS (12) s on a clean
#   network, the second of LOSSY_SECS (20) s with LOSS_PCT (10) % of the UDP between the SBC's media ports and the
#   browser dropped, each way, by nftables rules in this test's namespace (numgen random), the
#   trunk's media (SIPp's ports) untouched.
#
# Checked, for the clean call: ua.mjs's usual checks (DTLS connected, SRTP, the SBC as remote
# candidate, opus, packets both ways, <= 2 % loss); the SBC logged no "Opus FEC follows the
# receiver's loss" and 0 frames "encoded with in-band FEC"; Chrome's getStats has a
# remote-inbound-rtp for its audio (it read the SBC's report blocks) with 0 lost and a round-trip
# time under 1 s (from the SBC's LSR/DLSR); no Opus packet from Chrome carried FEC. On the trunk
# leg, tshark decodes the SBC's RTCP to SIPp's RTCP port as sender reports of the PCMU stream
# SIPp receives (same SSRC as its RTP, counts that grow) with a report block on SIPp's stream and
# an SDES CNAME, and, as the call ends, a BYE for that stream. For the lossy call: the browser
# counted 3..25 % of the SBC's packets lost (the rule worked); the SBC logged "Opus FEC follows the receiver's loss" with a level of 5 % or
# more (Chrome's RTCP reached the transcoder and was read), and at the end of the call at least
# 100 frames "encoded with in-band FEC"; Chrome's remote-inbound-rtp shows 3..25 % of its
# packets lost (the SBC's reports), and the SBC decoded at least 100 Opus packets from Chrome
# with in-band FEC and rebuilt lost frames from it. The browser's Opus reached SIPp as PCMU on
# both calls (ua.mjs: packets received back).
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=${LAB_TEST_TIMEOUT_BROWSER:-150}
source "$LAB_DIR/webrtc_e2e.sh"
webrtc_outer_setup webrtc_opus_fec
lab_begin webrtc_opus_fec

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's Opus encoder toward a browser)"
    lab_end
fi
webrtc_require_browser
command -v nft >/dev/null || lab_abort "nft (nftables) is missing: lab/test-all.sh installs it"

CALL_SECS=12 LOSSY_SECS=20 LOSS_PCT=10
FEC_CHANGED='media worker: Opus FEC follows the receiver'"'"'s loss'
FEC_SUMMARY='media worker: Opus frames encoded with in-band FEC'
DECODED='media worker: Opus packets decoded by coded bandwidth'

webrtc_cert
sbc_start lab/configs/webrtc_opus_fec.yaml
trunk_mp=$LAB_MP # SIPp's media port (uas_start moves LAB_MP on for the next SIPp)
uas_start echo 127.0.0.1:5080 uas_media_pcmu.xml -rtp_echo

# browser_call NAME [ua.mjs options]: one call of CALL_SECS to the trunk, judged.
browser_call() {
    local name=$1 rc=0
    shift
    node "$BROWSER_DIR/ua.mjs" --wss wss://127.0.0.1:8443 --uri "sip:$name@lab.test" \
        --duration "$CALL_SECS" --send-hz 700 --expect-codec opus "$@" \
        --out "$OUT/$name.json" call sip:echo@lab.test >/dev/null 2>"$OUT/$name.stderr" </dev/null || rc=$?
    browser_judge "$name" "$rc"
    sbc_anchored "$name"
}
# fec_frames FROM_LINE: the frames the SBC encoded with FEC, summed over the transcoders that
# ended after line FROM_LINE of its log.
fec_frames() {
    tail -n +"$(($1 + 1))" "$OUT/sbc.log" | grep -F "$FEC_SUMMARY" |
        sed -n 's/.*fec_frames=\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }'
}
# decoded FROM_LINE FIELD: FIELD (lbrr, fec_recovered) of the SBC's decoders of Chrome's Opus that
# ended after line FROM_LINE of its log, summed.
decoded() {
    tail -n +"$(($1 + 1))" "$OUT/sbc.log" | grep -F "$DECODED" |
        sed -n "s/.* $2=\([0-9]*\).*/\1/p" | awk '{ s += $1 } END { print s + 0 }'
}
# sbc_log_settled: wait (up to 5 s) until the SBC has logged the end of the call's transcoders.
sbc_log_settled() {
    local want=$1 i
    for i in $(seq 50); do
        (($(grep -cF "$FEC_SUMMARY" "$OUT/sbc.log") >= want)) && return 0
        sleep 0.1
    done
    lab_fail "the SBC logged no '$FEC_SUMMARY' line at the end of the call (see sbc.log)"
}

lab_step "call 1, clean network: browser clean calls sip:echo@lab.test for ${CALL_SECS}s"
capture_start trunk-media "udp portrange $trunk_mp-$((trunk_mp + 1))"
browser_call clean
capture_stop trunk-media
sbc_log_settled 1
clean_lines=$(wc -l <"$OUT/sbc.log")
clean_fec=$(fec_frames 0)
lab_step "call 1: the SBC encoded $clean_fec frame(s) with in-band FEC toward the browser"
((clean_fec == 0)) || lab_fail "FEC spent on a call whose browser reported no loss ($clean_fec frames)"
! grep -qF "$FEC_CHANGED" "$OUT/sbc.log" || lab_fail "the SBC changed its FEC level on a clean call"
remote=$(browser_json clean 'r["stats"]["remoteInbound"]')
lab_step "call 1: Chrome's remote-inbound-rtp from the SBC's reports: $remote"
browser_json clean 'int(r["stats"]["remoteInbound"]["packetsLost"] == 0 and 0 <= r["stats"]["remoteInbound"]["roundTripTime"] < 1)' |
    grep -qx 1 || lab_fail "Chrome shows no report of the SBC's with 0 lost and a round-trip time ('$remote')"
clean_lbrr=$(decoded 0 lbrr)
((clean_lbrr == 0)) || lab_fail "Chrome sent $clean_lbrr packets with FEC on a clean uplink"

# The trunk leg: tshark reads the SBC's RTCP to SIPp's RTCP port as RTCP.
tshark -r "$OUT/trunk-media.pcap" -n -d "udp.port==$((trunk_mp + 1)),rtcp" \
    -Y "rtcp.pt == 200 && udp.dstport == $((trunk_mp + 1))" -T fields -E separator=, -E aggregator='|' \
    -e rtcp.senderssrc -e rtcp.sender.packetcount -e rtcp.ssrc.identifier -e rtcp.ssrc.high_seq \
    -e rtcp.sdes.text >"$OUT/trunk-rtcp.csv" 2>"$OUT/tshark.stderr" ||
    lab_fail "tshark could not read the trunk leg's capture (tshark.stderr)"
rtp_ssrc=$(tshark -r "$OUT/trunk-media.pcap" -n -d "udp.port==$trunk_mp,rtp" \
    -Y "rtp && udp.dstport == $trunk_mp" -T fields -e rtp.ssrc 2>>"$OUT/tshark.stderr" | sort -u | xargs)
lab_step "trunk leg (tshark): $(wc -l <"$OUT/trunk-rtcp.csv") sender report(s) to SIPp's RTCP port;" \
    "RTP SSRC toward SIPp '$rtp_ssrc'; reports: $(head -c 300 "$OUT/trunk-rtcp.csv" | tr '\n' ' ')"
python3 - "$OUT/trunk-rtcp.csv" "$rtp_ssrc" <<'PY' || lab_fail "the SBC's sender reports on the trunk leg are wrong (trunk-rtcp.csv)"
import sys
rows = [l.strip().split(",") for l in open(sys.argv[1]) if l.strip()]
rtp_ssrc = sys.argv[2]
assert len(rows) >= 1 and " " not in rtp_ssrc and rtp_ssrc, (rows, rtp_ssrc)
counts = [int(r[1]) for r in rows]
for sender, count, ssrcs, high, cname in rows:
    assert sender == rtp_ssrc, f"SR sender {sender} is not the RTP stream's SSRC {rtp_ssrc}"
    # The report block's SSRC, then the SDES chunk's (the sender's), then, in the last report,
    # the BYE's. SIPp echoes the SBC's RTP as it is, so the stream it sends has the SBC's SSRC.
    block, *own = ssrcs.split("|")
    assert block == rtp_ssrc and own and set(own) == {sender} and int(high) > 0, f"{ssrcs} {high}"
    assert cname.startswith("sbc-"), f"CNAME {cname!r}"
assert counts == sorted(counts) and counts[-1] > 0, counts
PY
byes=$(tshark -r "$OUT/trunk-media.pcap" -n -d "udp.port==$((trunk_mp + 1)),rtcp" \
    -Y "rtcp.pt == 203 && udp.dstport == $((trunk_mp + 1))" -T fields -e rtcp.ssrc.identifier \
    -E aggregator='|' 2>>"$OUT/tshark.stderr" | xargs)
lab_step "trunk leg (tshark): RTCP BYE(s) as the call ended: '${byes:-none}'"
[[ $byes == *"|$rtp_ssrc" ]] || lab_fail "no RTCP BYE for the SBC's stream toward SIPp as the call ended"

lab_step "call 2: dropping ${LOSS_PCT} % of the UDP between the SBC's media ports and the browser," \
    "each way (nftables, the trunk's ports $trunk_mp-$((trunk_mp + 3)) untouched)"
nft -f - <<NFT || lab_abort "could not add the nftables loss rule"
table inet lab_loss {
    chain out {
        type filter hook output priority 0; policy accept;
        udp sport ${WEBRTC_MEDIA_PORTS} udp dport != $trunk_mp-$((trunk_mp + 3)) numgen random mod 100 < $LOSS_PCT drop
    }
    # On input, not output: a packet dropped on output fails the sender's sendmsg (EPERM), and
    # Chrome sends it again, so its uplink would lose almost nothing.
    chain in {
        type filter hook input priority 0; policy accept;
        udp dport ${WEBRTC_MEDIA_PORTS} udp sport != $trunk_mp-$((trunk_mp + 3)) numgen random mod 100 < $LOSS_PCT drop
    }
}
NFT
summaries_before=$(grep -cF "$FEC_SUMMARY" "$OUT/sbc.log")
# Longer: each side turns FEC on only after the other's first report with loss (1.25-3.75 s in,
# then ~5 s apart), and with 10 % loss each way a report can be lost too.
# --lossy-path: Chrome's selected pair reads "in-progress" while a consent check lost on the
# way is outstanding; it must still be the nominated one (and sbc_anchored checks it is the SBC).
CALL_SECS=$LOSSY_SECS browser_call lossy --max-loss 0.3 --lossy-path
sbc_log_settled $((summaries_before + 1))
nft delete table inet lab_loss

loss=$(browser_json lossy 'r["stats"]["inbound"]["packetsLost"] / max(1, r["stats"]["inbound"]["packetsLost"] + r["stats"]["inbound"]["packetsReceived"])')
lab_step "call 2: the browser lost $(awk -v l="$loss" 'BEGIN { printf "%.1f", 100 * l }') % of the SBC's packets"
awk -v l="$loss" 'BEGIN { exit !(l >= 0.03 && l <= 0.25) }' ||
    lab_fail "the browser's loss is '$loss', expected 3..25 % from the rule (did it apply?)"
levels=$(tail -n +"$((clean_lines + 1))" "$OUT/sbc.log" | grep -F "$FEC_CHANGED" |
    sed -n 's/.* loss=\([0-9]*\).*/\1/p' | xargs)
lossy_fec=$(fec_frames "$clean_lines")
lab_step "call 2: FEC levels the SBC took from the browser's reports: '${levels:-none}';" \
    "$lossy_fec frame(s) encoded with in-band FEC"
max_level=$(printf '%s\n' $levels 0 | sort -n | tail -1)
((max_level >= 5)) ||
    lab_fail "the SBC never raised its FEC level to 5 % or more on the browser's reports ('$levels')"
((lossy_fec >= 100)) || lab_fail "only $lossy_fec frames carried FEC toward a browser losing packets"
uplink=$(browser_json lossy 'r["stats"]["remoteInbound"]["packetsLost"] / max(1, r["stats"]["outbound"]["packetsSent"])')
lossy_lbrr=$(decoded "$clean_lines" lbrr)
lossy_recovered=$(decoded "$clean_lines" fec_recovered)
lab_step "call 2: Chrome's remote-inbound-rtp (the SBC's reports) shows" \
    "$(awk -v l="$uplink" 'BEGIN { printf "%.1f", 100 * l }') % of its packets lost;" \
    "the SBC decoded $lossy_lbrr packets with FEC from Chrome and rebuilt $lossy_recovered lost frame(s) from it"
awk -v l="$uplink" 'BEGIN { exit !(l >= 0.03 && l <= 0.25) }' ||
    lab_fail "Chrome's view of its uplink loss is '$uplink', expected 3..25 % from the SBC's reports"
((lossy_lbrr >= 100)) || lab_fail "Chrome sent only $lossy_lbrr packets with FEC over a lossy uplink"
((lossy_recovered >= 1)) || lab_fail "the SBC rebuilt no lost frame from Chrome's FEC"

uas_finish echo 2

LAB_PASS_REASON="a browser's RTCP steers the SBC's Opus FEC: a clean call, 0 frames with FEC; with"
LAB_PASS_REASON+=" $(awk -v l="$loss" 'BEGIN { printf "%.1f", 100 * l }') % loss toward the browser"
LAB_PASS_REASON+=" (nftables), levels '$levels' from its reports and $lossy_fec frames with FEC;"
LAB_PASS_REASON+=" the SBC's own RTCP (SR to SIPp, read by tshark) tells Chrome of"
LAB_PASS_REASON+=" $(awk -v l="$uplink" 'BEGIN { printf "%.1f", 100 * l }') % uplink loss, and Chrome's"
LAB_PASS_REASON+=" FEC ($lossy_lbrr packets) rebuilt $lossy_recovered lost frames"
lab_end
