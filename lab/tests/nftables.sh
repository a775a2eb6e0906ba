#!/usr/bin/env bash
# nftables: with policy.nftables on, a ban is pushed into the kernel. In this test's own network
# namespace: a scanner (User-Agent friendly-scanner) from 127.0.0.2 is banned on its first
# OPTIONS; `nft list set` then holds 127.0.0.2 with a timeout, and 50 more packets from it never
# reach the SBC's socket: the SBC's packet counters (every verdict of the pre-parse check) do
# not move, while the kernel rule's counter does. Another source is still answered. The ban is
# saved at shutdown and restored at the next start, into the kernel again. Last, the SBC is
# started without CAP_NET_ADMIN: it says once that nftables is unavailable and keeps dropping
# the banned source in userspace.
#
#   SBC 127.0.0.1:5060; config lab/configs/nftables.yaml (state file bans.state in the test dir)
# Needs the SBC: in direct mode it is skipped.
source "$(dirname "$0")/../lib.sh"
lab_begin nftables

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's kernel bans)"
    lab_end
fi
require_tool nft nftables
require_tool setpriv util-linux

# options FROM [USER_AGENT] [COUNT]: send COUNT OPTIONS from FROM:5070... and print how many
# were answered within 0.3 s each.
options() {
    python3 - "$@" <<'PY'
import socket, sys
src, ua, count = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "lab-client", int(sys.argv[3]) if len(sys.argv) > 3 else 1
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.settimeout(0.3)
port = s.getsockname()[1]
answered = 0
for i in range(count):
    msg = (f"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {src}:{port};branch=z9hG4bK-o{i}-{port}\r\n"
           f"From: <sip:probe@{src}>;tag={i}\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o{i}-{port}@{src}\r\n"
           f"CSeq: 1 OPTIONS\r\nUser-Agent: {ua}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    s.sendto(msg.encode(), ("127.0.0.1", 5060))
    try:
        s.recv(65535)
        answered += 1
    except socket.timeout:
        pass
print(answered)
PY
}
# seen: every packet the SBC's socket delivered (sum over the pre-parse verdicts).
seen() { sbc_metrics | awk '/^sbc_policy_packets_total/ { n += $NF } END { print n + 0 }'; }

sbc_start lab/configs/nftables.yaml
sleep 0.5
nft list table inet sbc_lab >"$OUT/nft-table-start.txt" 2>&1 ||
    lab_fail "table inet sbc_lab was not created at start (see nft-table-start.txt)"

[[ $(options 127.0.0.3) == 1 ]] || lab_fail "a normal client is not answered"
[[ $(options 127.0.0.2 friendly-scanner) == 0 ]] || lab_fail "the scanner's OPTIONS was answered"
sleep 1
nft list set inet sbc_lab banned >"$OUT/nft-set.txt" 2>&1
grep -Eq "127\.0\.0\.2 timeout [0-9]+m" "$OUT/nft-set.txt" ||
    lab_fail "nft set banned does not hold 127.0.0.2 with a timeout (see nft-set.txt)"
lab_step "kernel set: $(grep -o '127.0.0.2 timeout [^,}]*' "$OUT/nft-set.txt")"
before=$(seen)
answered=$(options 127.0.0.2 lab-client 50)
sleep 0.5
after=$(seen)
nft list chain inet sbc_lab input >"$OUT/nft-chain.txt" 2>&1
dropped=$(grep -o "ip saddr @banned counter packets [0-9]*" "$OUT/nft-chain.txt" | awk '{ print $NF }')
lab_step "50 packets from the banned source: $answered answered; SBC socket saw $((after - before)); kernel rule dropped ${dropped:-?}"
((answered == 0)) || lab_fail "$answered packets of the banned source were answered"
((after == before)) || lab_fail "the SBC's socket still got $((after - before)) packets of the banned source"
((${dropped:-0} >= 50)) || lab_fail "the kernel rule counted ${dropped:-0} drops, expected >= 50"
[[ $(options 127.0.0.3) == 1 ]] || lab_fail "a normal client is no longer answered"

lab_step "restart: the ban is saved and restored"
sbc_stop
grep -q "127.0.0.2/32" "$OUT/bans.state" 2>/dev/null || lab_fail "bans.state does not hold the ban"
cp "$OUT/sbc.log" "$OUT/sbc-first.log"
sbc_start lab/configs/nftables.yaml
sleep 1
grep -q "bans restored.*restored=1" "$OUT/sbc.log" || lab_fail "the restarted SBC did not restore the ban"
nft list set inet sbc_lab banned >"$OUT/nft-set-restart.txt" 2>&1
grep -Eq "127\.0\.0\.2 timeout" "$OUT/nft-set-restart.txt" ||
    lab_fail "after the restart the kernel set does not hold 127.0.0.2 (see nft-set-restart.txt)"
[[ $(options 127.0.0.2 lab-client 3) == 0 ]] || lab_fail "the banned source is answered after a restart"
sbc_stop
cp "$OUT/sbc.log" "$OUT/sbc-second.log"

lab_step "without CAP_NET_ADMIN: userspace bans only"
nft delete table inet sbc_lab 2>/dev/null
SBC_REAL_BIN=$SBC_BIN
SBC_BIN=$OUT/sbc-no-net-admin
printf '#!/bin/sh\nexec setpriv --inh-caps=-net_admin --bounding-set=-net_admin %s "$@"\n' \
    "$SBC_REAL_BIN" >"$SBC_BIN"
chmod +x "$SBC_BIN"
sbc_start lab/configs/nftables.yaml
sleep 1
n=$(grep -c "nftables unavailable" "$OUT/sbc.log")
((n == 1)) || lab_fail "expected one 'nftables unavailable' log line without CAP_NET_ADMIN, got $n"
[[ $(options 127.0.0.2 lab-client 3) == 0 ]] || lab_fail "the banned source is answered without nftables"
[[ $(options 127.0.0.3) == 1 ]] || lab_fail "a normal client is not answered without nftables"
banned_user=$(metric 'sbc_policy_packets_total{verdict="banned"}')
((banned_user >= 3)) || lab_fail "userspace drops of the banned source: $banned_user, expected >= 3"
SBC_BIN=$SBC_REAL_BIN
LAB_PASS_REASON="banned source in the kernel set with a timeout, its packets never reach the socket; ban restored after restart; userspace fallback without CAP_NET_ADMIN"
lab_end
