#!/usr/bin/env bash
# metrics: the Prometheus endpoint (admin.metrics) counts what really happened: after 50 SIPp
# calls and one garbage datagram, /metrics says 50 calls started and 50 answered calls ended,
# messages received over UDP, and exactly one malformed message.
#
#   UAC 127.0.0.1:5062 --UDP--> SBC 127.0.0.1:5060 ... 127.0.0.1:5070 --UDP--> UAS 127.0.0.1:5080
#   scenarios: uac_basic.xml / uas_basic.xml; config: lab/configs/metrics.yaml
# Needs the SBC: in direct mode it is skipped.
source "$(dirname "$0")/../lib.sh"
lab_begin metrics

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (reads the SBC's own counters)"
    lab_end
fi
sbc_start lab/configs/metrics.yaml
uas_start uas 127.0.0.1:5080 uas_basic.xml
uac_run uac 127.0.0.1:5060 uac_basic.xml 50 25
uas_finish uas 50
python3 - <<'PY' || lab_fail "could not send the garbage datagram"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"INVITE this is not SIP\r\n\r\n", ("127.0.0.1", 5060))
PY
sleep 0.3
python3 - "$OUT/metrics.txt" <<'PY' || lab_fail "metrics endpoint check failed (reason above, page in metrics.txt)"
import sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9090/metrics", timeout=5).read().decode()
open(sys.argv[1], "w").write(text)
values = {}
for line in text.splitlines():
    if line and not line.startswith("#"):
        name, _, value = line.rpartition(" ")
        values[name] = float(value)
def want(name, ok):
    v = values.get(name)
    if v is None or not ok(v):
        sys.exit(f"{name} = {v}")
want("sbc_calls_started_total", lambda v: v == 50)
want('sbc_calls_ended_total{disposition="answered"}', lambda v: v == 50)
want('sbc_sip_messages_received_total{transport="udp"}', lambda v: v >= 50 * 5)
want("sbc_sip_malformed_total", lambda v: v == 1)
PY
lab_end
