#!/usr/bin/env bash
# sipvicious: Debian's sipvicious (svmap, svwar, svcrack) attacks the SBC while a legitimate
# caller with digest credentials places calls from another address.
#
#   - svmap, svwar and svcrack as shipped (User-Agent friendly-scanner) are banned on their first
#     request and find nothing;
#   - svwar without User-Agent (-c --force, REGISTER and INVITE) cannot tell the real user 1001
#     from users that do not exist: its output for 1001-1010 is the same as for 2001-2010, and
#     the SBC's answers to 1001 and 2001 (no credentials, wrong password) are identical but for
#     nonces and tags (compared directly);
#   - svcrack without User-Agent (-c) on user 1001, whose password is 30th in its dictionary, is
#     banned after 5 failed authentications and does not find it;
#   - the legitimate SIPp caller (127.0.0.3, user 1001) keeps >= 99.9 % of its calls successful.
#
#   SBC access 127.0.0.1:5060 (realm sbc.lab) ... UAS 127.0.0.1:5080; config lab/configs/scanner.yaml
#   sources: caller .3, svmap .4, svwar -c .6/.7/.9, svwar .8, svcrack -c .10, svcrack .11,
#   direct comparison .12.
# sipvicious 0.3.3 ignores -b for svwar and svcrack (it binds to any address, and the kernel then
# picks 127.0.0.1, the trunk's source, which is never banned): each tool is run through a small
# wrapper that binds its socket to the test's address.
# Needs the SBC: in direct mode it is skipped.
LAB_TEST_TIMEOUT=240
source "$(dirname "$0")/../lib.sh"
lab_begin sipvicious

if lab_is_direct; then
    LAB_PASS_REASON="not applicable in direct mode (tests the SBC's defences)"
    lab_end
fi
for t in svmap svwar svcrack; do require_tool "$t" sipvicious; done

# sv IP TOOL ARGS...: run a sipvicious tool with its socket bound to IP.
sv() {
    local ip=$1 tool=$2
    shift 2
    PYTHONPATH=/usr/share/sipvicious timeout 60 python3 - "$ip" "$tool" "$@" <<'PY'
import importlib, socket, sys
ip, tool = sys.argv[1], sys.argv[2]
bind = socket.socket.bind
def bind_to_ip(sock, addr):
    if sock.family == socket.AF_INET and isinstance(addr, tuple):
        addr = (ip, addr[1])
    return bind(sock, addr)
socket.socket.bind = bind_to_ip
sys.argv = [tool] + sys.argv[3:]
importlib.import_module(f"sipvicious.{tool}").main()
PY
}
# banned IP: the SBC logged a ban of IP.
banned() { grep -q "source banned source=$1/32" "$OUT/sbc.log"; }
# found_nothing FILE: the tool's output says it found nothing and shows no result table.
found_nothing() { grep -q "found nothing" "$1" && ! grep -q "^| [0-9]" "$1"; }

sbc_start lab/configs/scanner.yaml
uas_start uas 127.0.0.1:5080 uas_basic.xml
UAC_ADDR=127.0.0.3:5062 uac_start legit 127.0.0.1:5060 uac_auth_call.xml 480 8 -d 1000 \
    -au 1001 -ap Kx7-lab-secret-2611 -key auth_user 1001 -auth_uri service@127.0.0.1:5060
sleep 1

lab_step "svmap (friendly-scanner) from 127.0.0.4"
sv 127.0.0.4 svmap -p5060 127.0.0.1 >"$OUT/svmap.out" 2>&1
found_nothing "$OUT/svmap.out" || lab_fail "svmap found the SBC (see svmap.out)"
lab_step "svwar (friendly-scanner) from 127.0.0.8"
sv 127.0.0.8 svwar --force -e1000-1019 127.0.0.1 >"$OUT/svwar-ua.out" 2>&1
found_nothing "$OUT/svwar-ua.out" || lab_fail "svwar found extensions (see svwar-ua.out)"
lab_step "svcrack (friendly-scanner) from 127.0.0.11"
sv 127.0.0.11 svcrack -u 1001 -d "$LAB_DIR/scenarios/svcrack-dictionary.txt" 127.0.0.1 \
    >"$OUT/svcrack-ua.out" 2>&1
found_nothing "$OUT/svcrack-ua.out" || lab_fail "svcrack found a password (see svcrack-ua.out)"
for ip in 127.0.0.4 127.0.0.8 127.0.0.11; do
    banned "$ip" || lab_fail "$ip (a sipvicious tool with its User-Agent) was not banned"
done

lab_step "svwar -c (no User-Agent): a range with the real user 1001 and one without"
# normalize FILE: svwar's verdicts only (raw responses echoed in errors carry the extension,
# nonces, tags and Call-IDs).
normalize() { grep -v "Response:" "$1" | grep -v "^DEBUG" | sed -e 's/[0-9]\{4\}//g'; }
sv 127.0.0.6 svwar --force -c -e1001-1010 127.0.0.1 >"$OUT/svwar-real.out" 2>&1
sv 127.0.0.7 svwar --force -c -e2001-2010 127.0.0.1 >"$OUT/svwar-fake.out" 2>&1
sv 127.0.0.9 svwar --force -c -m INVITE -e1001-1010 127.0.0.1 >"$OUT/svwar-invite.out" 2>&1
for f in svwar-real svwar-fake svwar-invite; do
    found_nothing "$OUT/$f.out" || lab_fail "svwar found extensions (see $f.out)"
done
if ! diff <(normalize "$OUT/svwar-real.out") <(normalize "$OUT/svwar-fake.out") >"$OUT/svwar.diff"; then
    lab_fail "svwar's output differs between a range with user 1001 and one without (svwar.diff)"
fi

lab_step "direct comparison from 127.0.0.12: user 1001 vs 2001, without and with a wrong password"
python3 - "$OUT/compare.txt" <<'PY' || lab_fail "the SBC's answers tell 1001 from 2001 (see compare.txt)"
import hashlib, re, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.12", 0))
s.settimeout(2)
port = s.getsockname()[1]
n = 0
def send(method, user, auth=None):
    global n
    n += 1
    uri = "sip:127.0.0.1:5060" if method == "REGISTER" else f"sip:{user}@127.0.0.1:5060"
    hdr = {"REGISTER": "Authorization", "INVITE": "Proxy-Authorization"}[method]
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.12:{port};branch=z9hG4bK-cmp{n}",
             f"From: <sip:{user}@127.0.0.1>;tag=f{n}", f"To: <sip:{user}@127.0.0.1>",
             f"Call-ID: cmp{n}@127.0.0.12", f"CSeq: 1 {method}", f"Contact: <sip:{user}@127.0.0.12:{port}>",
             "Max-Forwards: 70"]
    if auth:
        lines.append(f"{hdr}: {auth}")
    lines += ["Content-Length: 0", "", ""]
    s.sendto("\r\n".join(lines).encode(), ("127.0.0.1", 5060))
    while True:
        r = s.recv(65535).decode()
        if not r.startswith("SIP/2.0 100"):
            return uri, r
def shape(resp):
    out = []
    for line in resp.split("\r\n"):
        name, _, value = line.partition(": ")
        if name in ("Via", "Call-ID", "CSeq", "From", "To", "Contact"):
            value = "*"
        value = re.sub(r'nonce="[0-9a-f]+"', 'nonce="N"', value)
        out.append(f"{name}: {value}" if _ else line)
    return "\n".join(out)
def wrong(method, user, uri, challenge):
    nonce = re.search(r'nonce="([^"]+)"', challenge).group(1)
    ha1 = hashlib.md5(f"{user}:sbc.lab:not-it".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    resp = hashlib.md5(f"{ha1}:{nonce}:00000001:abc:auth:{ha2}".encode()).hexdigest()
    return (f'Digest username="{user}", realm="sbc.lab", nonce="{nonce}", uri="{uri}", '
            f'response="{resp}", algorithm=MD5, cnonce="abc", nc=00000001, qop=auth')
report, bad = [], False
for method in ("REGISTER", "INVITE"):
    answers = {}
    for user in ("1001", "2001"):
        uri, first = send(method, user)
        _, second = send(method, user, wrong(method, user, uri, first))
        answers[user] = (shape(first), shape(second))
    same = answers["1001"] == answers["2001"]
    bad |= not same
    report.append(f"{method}: {'identical' if same else 'DIFFERENT'}\n"
                  f"-- 1001 without credentials:\n{answers['1001'][0]}\n-- 1001 wrong password:\n{answers['1001'][1]}\n"
                  f"-- 2001 without credentials:\n{answers['2001'][0]}\n-- 2001 wrong password:\n{answers['2001'][1]}\n")
open(sys.argv[1], "w").write("\n".join(report))
sys.exit(1 if bad else 0)
PY

lab_step "svcrack -c (no User-Agent) on 1001 from 127.0.0.10 (right password 30th of 40)"
sv 127.0.0.10 svcrack -c -u 1001 -d "$LAB_DIR/scenarios/svcrack-dictionary.txt" 127.0.0.1 \
    >"$OUT/svcrack.out" 2>&1
found_nothing "$OUT/svcrack.out" || lab_fail "svcrack found the password (see svcrack.out)"
banned 127.0.0.10 || lab_fail "svcrack -c (127.0.0.10) was not banned after its failed authentications"

uac_wait_ratio legit 99.9
uas_stop uas
banned 127.0.0.3 && lab_fail "the legitimate caller 127.0.0.3 was banned"
banned 127.0.0.12 && lab_fail "the comparison source (2 failed authentications of 5) was banned"
sleep 0.5
sbc_metrics >"$OUT/metrics.txt"
lab_step "metrics: bans=$(metric sbc_policy_bans_active), scanner offences=$(metric 'sbc_policy_offences_total{kind="scanner"}'), auth failures=$(metric 'sbc_auth_total{outcome="failed"}'), dropped banned=$(metric 'sbc_policy_packets_total{verdict="banned"}')"
LAB_PASS_REASON="svmap/svwar/svcrack banned and found nothing; svwar -c cannot tell 1001 from 2001; svcrack -c banned before the password; legit >= 99.9 %"
lab_end
