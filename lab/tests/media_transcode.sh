#!/usr/bin/env bash
# media_transcode: an Opus-only UA calls a G.711-only UA through the SBC, which transcodes
# (Opus <-> PCMU) on its media worker.
#
#   caller baresip 127.0.0.11:5062 (opus/48000/2 only) -> SBC access 127.0.0.1:5060 (codecs:
#     [opus, telephone-event]) | SBC trunk 127.0.0.2:5070 -> callee baresip 127.0.0.12:5080
#     (PCMU/PCMA only; trunk codecs: [PCMU, PCMA, telephone-event])
#   config: lab/configs/media-transcode.yaml
#   traffic: one call of CALL_SECS (8) s. The caller's source is a 48 kHz stereo 700 Hz sine
#   (aufile reads the file at the codec's rate and channels), the callee's an 8 kHz 1300 Hz sine. Both record what
#   they decode with baresip's sndfile module (WAV files in $OUT/<ua>/snd). dumpcap captures lo.
#
# Expectations: the call is set up with Opus toward the caller and PCMU toward the callee (each
# UA's log names its encoder); the SDP each UA gets names only the SBC's addresses; RTP flows
# through the SBC both ways with >= 200 packets per direction and >= 95 % of them sent on (one
# 20 ms packet out per 20 ms packet in); the PCMU the SBC sends to the callee decodes to the
# caller's 700 Hz (on the wire), and what each UA decoded has the other's tone as its strongest
# frequency: 700 Hz at the callee, 1300 Hz at the caller (from Opus made by the SBC).
#
# Policy routes as in media_baresip (ua_source_routes in lib.sh): baresip 1.0 binds its RTP
# sockets to the wildcard address, so each UA's RTP port range gets its own source address in
# this test's namespace. Both UAs load opus.so and sndfile.so (ua_config in lib.sh; the tones
# are tone_wav's).
source "$(dirname "$0")/../lib.sh"
LAB_TEST_TIMEOUT=90
lab_begin media_transcode

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

# aufile reads the file at the codec's rate and channels: 48 kHz stereo for opus/48000/2.
tone_wav "$OUT/caller-${CALLER_HZ}hz.wav" "$CALLER_HZ" 48000 2
tone_wav "$OUT/callee-${CALLEE_HZ}hz.wav" "$CALLEE_HZ" 8000 1
ua_config caller "$CALLER_IP" "$CALLER_PORT" "$CALLER_RTP" "$OUT/caller-${CALLER_HZ}hz.wav" \
    "opus/48000/2" "" opus.so sndfile.so
ua_config callee "$CALLEE_IP" "$CALLEE_PORT" "$CALLEE_RTP" "$OUT/callee-${CALLEE_HZ}hz.wav" \
    "PCMU/8000/1,PCMA/8000/1" ";answermode=auto" opus.so sndfile.so

sbc_start lab/configs/media-transcode.yaml
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

# Signalling: both ends had the call, each with its own codec, and the caller's BYE went through.
ua_log_has caller "Call established" "call established"
ua_log_has callee "answering call" "auto-answered"
ua_log_has callee "Call established" "call established"
ua_log_has caller "Set audio encoder: opus 48000Hz" "sends Opus"
ua_log_has callee "Set audio encoder: PCM[UA] 8000Hz" "sends G.711"
sip_count "$OUT/media.pcap" "ip.dst == $CALLEE_IP && sip.Method == \"BYE\"" "BYE reached the callee"

pcap=(--pcap "$OUT/media.pcap")
sbc=(--sbc 127.0.0.1 --sbc 127.0.0.2)
media_check sdp sdp "${pcap[@]}" "${sbc[@]}"
media_check rtp rtp "${pcap[@]}" "${sbc[@]}" --caller "$CALLER_IP" --callee "$CALLEE_IP" \
    --min-ratio 0.95 --min-packets "$MIN_PACKETS"
media_check tone_c2e tone "${pcap[@]}" "${sbc[@]}" --to "$CALLEE_IP" --hz "$CALLER_HZ"

# What each UA decoded (sndfile writes one WAV per direction; "dec" is what it received).
# wav_tone NAME HZ: the strongest frequency of NAME's decoded audio is HZ (+-25 Hz).
wav_tone() {
    local name=$1 hz=$2 wav out
    wav=$(ls "$OUT/$name/snd/"*dec*.wav 2>/dev/null | head -n 1)
    if [[ -z $wav ]]; then
        ls -la "$OUT/$name/snd" >"$OUT/$name.snd.txt" 2>&1
        lab_fail "baresip $name recorded no decoded audio (see $name.snd.txt)"
        return
    fi
    if out=$(python3 - "$wav" "$hz" <<'PY'
import math, struct, sys, wave
w = wave.open(sys.argv[1])
rate, ch, n = w.getframerate(), w.getnchannels(), w.getnframes()
raw = w.readframes(n)
x = struct.unpack("<%dh" % (len(raw) // 2), raw)[::ch]
x = x[rate:rate * 3]  # skip the first second (ramp-up), take 2 s
if len(x) < rate:
    print(f"only {len(x)} samples at {rate} Hz")
    sys.exit(1)
m = sum(x) / len(x)
x = [v - m for v in x]


def power(hz):
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


powers = {hz: power(hz) for hz in range(100, 3800, 20)}
peak = max(powers, key=powers.get)
rms = math.sqrt(sum(v * v for v in x) / len(x))
print(f"strongest {peak} Hz ({rate} Hz sampling, rms {rms:.0f})")
sys.exit(0 if abs(peak - float(sys.argv[2])) <= 25 and rms > 100 else 1)
PY
    ); then
        lab_step "baresip $name decoded the other side's tone: $out, expected $hz Hz"
    else
        lab_fail "baresip $name decoded audio: $out, expected $hz Hz"
    fi
}
wav_tone callee "$CALLER_HZ"
wav_tone caller "$CALLEE_HZ"

LAB_PASS_REASON="an Opus-only baresip called a G.711-only baresip through the SBC: transcoded"
LAB_PASS_REASON+=" both ways, tones ($CALLER_HZ/$CALLEE_HZ Hz) decoded by each UA"
lab_end
