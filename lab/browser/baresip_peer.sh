#!/usr/bin/env bash
# baresip_peer.sh: a headless baresip UA for lab tests: G.711 only (by default), sends an 8 kHz
# tone from a WAV (aufile), records what it receives to a WAV (sndfile), auto-answers or dials.
#
#   baresip_peer.sh --dir DIR [options] answer
#   baresip_peer.sh --dir DIR [options] dial URI
#
#   --dir DIR          config dir, logs and recordings (created; required)
#   --sip IP:PORT      where baresip listens for SIP (127.0.0.1:5080; it also takes TCP on the
#                      port and TLS on port + 1)
#   --rtp-ports A-B    its RTP ports (10000-10099)
#   --send-hz HZ       the tone it sends: a 30 s, 8 kHz mono sine made with sox (1300)
#   --wav FILE         send this WAV instead (its rate must be the codec's: 8 kHz for G.711)
#   --record FILE      what it received, decoded (8 kHz mono S16), after the call (DIR/received.wav)
#   --codecs LIST      audio_codecs of the account (PCMU/8000/1,PCMA/8000/1); opus/48000/2 or
#                      G722/16000/1 load their module (then give a --wav at that codec's rate
#                      and channels: opus/48000/2 needs a 48 kHz stereo WAV)
#   --aor URI          its address of record (sip:baresip@IP:PORT of --sip)
#   --registrar URI    REGISTER there (e.g. sip:127.0.0.1:5060); requests also go through it
#   --password PW      digest password (for REGISTER and challenged requests)
#   --mediaenc NAME    account mediaenc (e.g. srtp for SDES-SRTP; loads the srtp module)
#   --duration S       dial: hang up (BYE) S seconds after the call is established (8)
#   --timeout S        the process ends after S seconds whatever happens (answer: 60, dial:
#                      duration + 20)
#
# Runs in the foreground until the call is over (dial) or the timeout / SIGINT / SIGTERM
# (answer); then moves the received-audio dump to --record and exits 0 if a call was
# established, 1 otherwise. Its log is DIR/baresip.log (name it NAME.ua.log in a test's $OUT
# by giving --dir $OUT/NAME and reading DIR/baresip.log). Judge the recording with
#   python3 lab/media_check.py wav --file FILE --hz HZ
#
# baresip 1.0 notes (see shared LAB-NOTES): ausine is 48 kHz only, so G.711 gets aufile; the
# net_interface must be set or it announces another interface; its RTP sockets are bound to
# the wildcard address, so its RTP leaves from the first address of lo (127.0.0.1) whatever
# --sip says: keep --sip on 127.0.0.1, or add source routes as lab/tests/media_baresip.sh does.
set -uo pipefail

usage() {
    sed -n '2,35p' "$0" >&2
    exit 2
}

dir='' sip=127.0.0.1:5080 rtp=10000-10099 send_hz=1300 wav='' record=''
codecs=PCMU/8000/1,PCMA/8000/1 aor='' registrar='' password='' mediaenc='' duration=8 timeout=''
mode='' target=''
while (($#)); do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --sip) sip=$2; shift 2 ;;
        --rtp-ports) rtp=$2; shift 2 ;;
        --send-hz) send_hz=$2; shift 2 ;;
        --wav) wav=$2; shift 2 ;;
        --record) record=$2; shift 2 ;;
        --codecs) codecs=$2; shift 2 ;;
        --aor) aor=$2; shift 2 ;;
        --registrar) registrar=$2; shift 2 ;;
        --password) password=$2; shift 2 ;;
        --mediaenc) mediaenc=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        answer) mode=answer; shift ;;
        dial)
            mode=dial
            target=${2:-}
            [[ -n $target ]] || usage
            shift 2
            ;;
        -h | --help) usage ;;
        *)
            echo "baresip_peer.sh: unknown argument $1" >&2
            usage
            ;;
    esac
done
[[ -n $dir && -n $mode ]] || usage
command -v baresip >/dev/null || { echo "baresip_peer.sh: baresip not installed" >&2; exit 2; }
mkdir -p "$dir" || exit 2
dir=$(cd "$dir" && pwd)
ip=${sip%:*}
[[ -n $aor ]] || aor="sip:baresip@$sip"
[[ -n $record ]] || record=$dir/received.wav
if [[ -z $timeout ]]; then
    if [[ $mode == dial ]]; then timeout=$((duration + 20)); else timeout=60; fi
fi
if [[ -z $wav ]]; then
    wav=$dir/send-${send_hz}hz.wav
    sox -n -r 8000 -c 1 -b 16 -e signed-integer "$wav" synth 30 sine "$send_hz" vol 0.5 ||
        { echo "baresip_peer.sh: sox could not make $wav" >&2; exit 2; }
fi

# sndfile dumps each direction of each call into snd_path: *-dec.wav is what was received.
mkdir -p "$dir/dump"
rm -f "$dir"/dump/*.wav
modules="module			g711.so
module			aufile.so
module			sndfile.so"
# Codec modules beyond G.711, as the codec list asks.
[[ ${codecs,,} == *opus* ]] && modules+=$'\nmodule\t\t\topus.so'
[[ ${codecs,,} == *g722* ]] && modules+=$'\nmodule\t\t\tg722.so'
[[ $mediaenc == srtp* ]] && modules+=$'\nmodule\t\t\tsrtp.so'
[[ $mediaenc == dtls_srtp* ]] && modules+=$'\nmodule\t\t\tdtls_srtp.so'
cat >"$dir/config" <<EOF
poll_method		epoll
sip_listen		$sip
net_interface		$ip
call_local_timeout	60
call_max_calls		1
audio_source		aufile,$wav
rtp_ports		$rtp
rtcp_mux		no
jitter_buffer_delay	5-10
rtp_stats		no
statmode_default	off
snd_path		$dir/dump
module_path		/usr/lib/baresip/modules
$modules
module_tmp		account.so
module_app		menu.so
EOF
params=";audio_codecs=$codecs"
if [[ -n $registrar ]]; then
    params+=";outbound=\"$registrar\";regint=300"
else
    params+=";regint=0"
fi
[[ -n $password ]] && params+=";auth_pass=$password"
[[ -n $mediaenc ]] && params+=";mediaenc=$mediaenc"
[[ $mode == answer ]] && params+=";answermode=auto"
echo "<$aor>$params" >"$dir/accounts"

args=(-f "$dir")
# -t bounds the whole process; a dialled call is ended DURATION s after it was established
# (below).
args+=(-t "$timeout")
[[ $mode == dial ]] && args+=(-e "/dial $target")
: >"$dir/baresip.log"
baresip "${args[@]}" >"$dir/baresip.log" 2>&1 </dev/null &
bp=$!
trap 'kill -INT $bp 2>/dev/null' INT TERM

if [[ $mode == dial ]]; then
    # Wait for the call to be established, hold it, then end it with SIGINT (baresip sends
    # BYE for its calls when it quits).
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$bp" 2>/dev/null || break
        tr '\r' '\n' <"$dir/baresip.log" | grep -q "Call established" && break
        sleep 0.1
    done
    if kill -0 "$bp" 2>/dev/null && tr '\r' '\n' <"$dir/baresip.log" | grep -q "Call established"; then
        sleep "$duration"
        kill -INT "$bp" 2>/dev/null
    fi
fi
while kill -0 "$bp" 2>/dev/null; do
    wait "$bp" 2>/dev/null
done
wait "$bp" 2>/dev/null

# One call per run, so one *-dec.wav (the dump directory was emptied above).
dec=$(find "$dir/dump" -name '*-dec.wav' | head -n 1)
if [[ -n $dec ]]; then
    mv "$dec" "$record"
fi
if tr '\r' '\n' <"$dir/baresip.log" | grep -q "Call established"; then
    exit 0
fi
echo "baresip_peer.sh: no call established (see $dir/baresip.log)" >&2
exit 1
