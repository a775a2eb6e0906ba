#!/usr/bin/env python3
"""Topology-hiding check for a B2BUA, from a packet capture.

Reads a capture (pcap/pcapng) with tshark, keeps the SIP messages carried over UDP and
sorts each into leg A (to or from the SBC's access socket, --leg-a IP:PORT) or leg B (to
or from the SBC's trunk-side socket, --leg-b IP:PORT). Per leg it collects:

  Call-IDs, From tags, To tags, Via branches, Via sent-by host:port, Contact URIs
  (and the host:port of each Contact URI)

and fails if any value collected on one leg appears anywhere (start line, headers or
body) in a SIP message of the other leg. Values that belong to the SBC itself are not
leaks: its own addresses (--sbc, by default the two leg sockets) as sent-by or Contact
host:port, and Contact URIs that point at one of them.

Matching: Call-IDs, tags and branches are searched as substrings not glued to letters or
digits (so "b2b-<Call-ID>" is caught, while a tag "z9-1" is not found inside "z9-12");
host:port values must not be preceded by a digit, letter or dot, nor followed by a digit.
Bare hosts (IP without port) of the other leg are reported as warnings only, e.g. an SDP
c= line that still carries the caller's address when media is not anchored
(--strict-hosts makes them failures).

Exit status: 0 no leak; 1 leak, unclassified SIP packets, or too little traffic
(--min-calls); 2 usage or tshark error.

  topology_check.py --pcap cap.pcap --leg-a 127.0.0.1:5060 --leg-b 127.0.0.2:5070
  topology_check.py --self-test     # synthetic messages, no capture needed
"""

import argparse
import re
import subprocess
import sys

COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
           "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}

MIN_TOKEN_LEN = 6

CATEGORIES = ("Call-ID", "From tag", "To tag", "Via branch", "Via sent-by", "Contact URI", "Contact host:port")


class Message:
    """One SIP message seen on the wire."""

    def __init__(self, frame, src, dst, text):
        self.frame = frame
        self.src = src
        self.dst = dst
        self.text = text
        head, _, self.body = text.partition("\r\n\r\n")
        if not _ and "\n\n" in text:
            head, _, self.body = text.partition("\n\n")
        lines = re.split(r"\r?\n", head)
        self.start = lines[0] if lines else ""
        self.headers = []  # (lower-case full name, value)
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and self.headers:
                name, value = self.headers[-1]
                self.headers[-1] = (name, value + " " + line.strip())
                continue
            name, sep, value = line.partition(":")
            if not sep:
                continue
            name = name.strip().lower()
            name = COMPACT.get(name, name)
            self.headers.append((name, value.strip()))

    def values(self, name):
        return [v for n, v in self.headers if n == name]


def split_commas(value):
    """Split a header value on commas outside <...> and quotes."""
    out, cur, depth, quoted = [], [], 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0 and not quoted:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def header_param(value, param):
    """A parameter of a name-addr header (after the >, or after the URI if no <>)."""
    if ">" in value:
        value = value.rsplit(">", 1)[1]
    else:
        value = value.split(";", 1)[1] if ";" in value else ""
    for p in value.split(";"):
        k, _, v = p.strip().partition("=")
        if k.strip().lower() == param:
            return v.strip()
    return None


def uri_of(value):
    m = re.search(r"<([^>]*)>", value)
    if m:
        return m.group(1).strip()
    return value.split(";", 1)[0].strip()


def hostport_of_uri(uri):
    m = re.match(r"^[a-zA-Z]+:(?:[^@;>]*@)?(\[[^\]]+\]|[^:;>?]+)(?::(\d+))?", uri)
    if not m:
        return None, None
    host = m.group(1)
    port = m.group(2) or ("5061" if uri.lower().startswith("sips:") else "5060")
    return host, port


def norm_addr(addr):
    host, _, port = addr.rpartition(":")
    return host, port


def collect(messages, sbc_addrs):
    """Values per category, each mapped to the first frame that showed it."""
    vals = {c: {} for c in CATEGORIES}
    hosts = {}
    sbc_hosts = {h for h, _ in sbc_addrs}

    def add(cat, value, frame):
        if value:
            vals[cat].setdefault(value, frame)

    for msg in messages:
        for v in msg.values("call-id"):
            add("Call-ID", v, msg.frame)
        for v in msg.values("from"):
            add("From tag", header_param(v, "tag"), msg.frame)
        for v in msg.values("to"):
            add("To tag", header_param(v, "tag"), msg.frame)
        for hv in msg.values("via"):
            for via in split_commas(hv):
                m = re.match(r"^SIP\s*/\s*2\.0\s*/\s*\w+\s+([^;\s]+)", via, re.I)
                if m:
                    sent_by = m.group(1)
                    if re.search(r":\d+$", sent_by):
                        host, port = norm_addr(sent_by)
                    else:
                        host, port = sent_by, "5060"
                    if (host, port) not in sbc_addrs:
                        add("Via sent-by", f"{host}:{port}", msg.frame)
                    if host not in sbc_hosts:
                        hosts.setdefault(host, msg.frame)
                for p in via.split(";")[1:]:
                    k, _, v = p.strip().partition("=")
                    if k.strip().lower() == "branch":
                        add("Via branch", v.strip(), msg.frame)
        for hv in msg.values("contact"):
            for c in split_commas(hv):
                if c.strip() == "*":
                    continue
                uri = uri_of(c)
                host, port = hostport_of_uri(uri)
                if host is None:
                    continue
                if (host, port) in sbc_addrs:
                    continue
                add("Contact URI", uri, msg.frame)
                add("Contact host:port", f"{host}:{port}", msg.frame)
                if host not in sbc_hosts:
                    hosts.setdefault(host, msg.frame)
    return vals, hosts


def token_regex(value, category):
    v = re.escape(value)
    if category in ("Via sent-by", "Contact host:port"):
        return re.compile(r"(?<![0-9A-Za-z.])" + v + r"(?![0-9])")
    if category == "host":
        return re.compile(r"(?<![0-9A-Za-z.])" + v + r"(?![0-9A-Za-z.])")
    return re.compile(r"(?<![0-9A-Za-z])" + v + r"(?![0-9A-Za-z])")


def find_leaks(vals, hosts, other_msgs, allow):
    leaks, warnings, skipped = [], [], []
    for cat in CATEGORIES:
        for value, frame in sorted(vals[cat].items()):
            if value in allow:
                continue
            if cat in ("Call-ID", "From tag", "To tag", "Via branch") and len(value) < MIN_TOKEN_LEN:
                skipped.append((cat, value))
                continue
            rx = token_regex(value, cat)
            for msg in other_msgs:
                m = rx.search(msg.text)
                if m:
                    line = msg.text[msg.text.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0].strip()
                    leaks.append((cat, value, frame, msg.frame, line))
                    break
    for host, frame in sorted(hosts.items()):
        if host in allow:
            continue
        rx = token_regex(host, "host")
        for msg in other_msgs:
            m = rx.search(msg.text)
            if m:
                line = msg.text[msg.text.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0].strip()
                warnings.append(("host", host, frame, msg.frame, line))
                break
    return leaks, warnings, skipped


def read_capture(path, tshark):
    cmd = [tshark, "-r", path, "-n", "-Y", "udp", "-T", "fields", "-E", "separator=\t",
           "-e", "frame.number", "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst",
           "-e", "udp.dstport", "-e", "udp.payload"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemExit(f"topology_check: cannot run tshark: {e}") from e
    if res.returncode != 0:
        print(res.stderr, file=sys.stderr)
        raise SystemExit(2)
    msgs = []
    for line in res.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 6 or not parts[5]:
            continue
        frame, sip, sport, dip, dport, payload = parts[:6]
        try:
            data = bytes.fromhex(payload.replace(":", ""))
        except ValueError:
            continue
        text = data.decode("utf-8", errors="replace")
        first = text.split("\n", 1)[0]
        if not (first.startswith("SIP/2.0 ") or re.match(r"^[A-Z]+ \S+ SIP/2\.0", first)):
            continue
        msgs.append(Message(int(frame), (sip, sport), (dip, dport), text))
    return msgs


def classify(msgs, leg_a, leg_b):
    a, b, unclassified, both = [], [], [], []
    for m in msgs:
        in_a = leg_a in (m.src, m.dst)
        in_b = leg_b in (m.src, m.dst)
        if in_a and in_b:
            both.append(m)
        elif in_a:
            a.append(m)
        elif in_b:
            b.append(m)
        else:
            unclassified.append(m)
    return a, b, unclassified, both


def check(msgs, leg_a, leg_b, sbc_addrs, allow, min_calls, strict_hosts, out=sys.stdout):
    a, b, unclassified, both = classify(msgs, leg_a, leg_b)
    va, ha = collect(a, sbc_addrs)
    vb, hb = collect(b, sbc_addrs)
    ok = True
    print(f"SIP messages: {len(msgs)} (leg A {len(a)}, leg B {len(b)}, "
          f"unclassified {len(unclassified)}, on both legs {len(both)})", file=out)
    for name, v in (("A", va), ("B", vb)):
        counts = ", ".join(f"{len(v[c])} {c}" for c in CATEGORIES)
        print(f"leg {name}: {counts}", file=out)
    for m in unclassified[:5]:
        print(f"UNCLASSIFIED frame {m.frame}: {m.src[0]}:{m.src[1]} -> {m.dst[0]}:{m.dst[1]} {m.start}", file=out)
    for m in both[:5]:
        print(f"ON BOTH LEGS frame {m.frame}: {m.src[0]}:{m.src[1]} -> {m.dst[0]}:{m.dst[1]} {m.start}", file=out)
    if unclassified or both:
        print("FAIL: SIP messages that do not belong to exactly one leg (the check would be incomplete)", file=out)
        ok = False
    for name, v in (("A", va), ("B", vb)):
        if len(v["Call-ID"]) < min_calls:
            print(f"FAIL: leg {name} has {len(v['Call-ID'])} Call-IDs, fewer than --min-calls {min_calls}", file=out)
            ok = False
    leaks_ab, warn_ab, skip_ab = find_leaks(va, ha, b, allow)
    leaks_ba, warn_ba, skip_ba = find_leaks(vb, hb, a, allow)
    for cat, value in skip_ab + skip_ba:
        print(f"note: {cat} {value!r} is shorter than {MIN_TOKEN_LEN} characters, not searched", file=out)
    for src, dst, leaks in (("A", "B", leaks_ab), ("B", "A", leaks_ba)):
        for cat, value, f1, f2, line in leaks:
            print(f"LEAK: {cat} {value!r} of leg {src} (frame {f1}) appears on leg {dst} in frame {f2}: {line}", file=out)
            ok = False
    for src, dst, warns in (("A", "B", warn_ab), ("B", "A", warn_ba)):
        for _, value, f1, f2, line in warns:
            tag = "LEAK" if strict_hosts else "warning"
            print(f"{tag}: host {value} of leg {src} (frame {f1}) appears on leg {dst} in frame {f2}: {line}", file=out)
            if strict_hosts:
                ok = False
    print("topology check: " + ("PASS" if ok else "FAIL"), file=out)
    return ok


def parse_addr(s):
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected IP:PORT, got {s!r}")
    return (host, port)


def self_test():
    """Synthetic legs: no leak passes; a leaked Call-ID, tag or address is caught."""
    import io

    def msg(frame, src, dst, text):
        return Message(frame, parse_addr(src), parse_addr(dst), text.replace("\n", "\r\n"))

    sbc_a, sbc_b = ("127.0.0.1", "5060"), ("127.0.0.2", "5070")

    def legs(b_call_id="b-77@127.0.0.2", b_from_tag="sbcb1", b_contact="sip:127.0.0.2:5070", b_body=""):
        a_inv = msg(1, "127.0.0.11:5062", "127.0.0.1:5060",
                    "INVITE sip:svc@127.0.0.1:5060 SIP/2.0\n"
                    "Via: SIP/2.0/UDP 127.0.0.11:5062;branch=z9hG4bK-caller-1\n"
                    "f: <sip:caller@127.0.0.11:5062>;tag=callertag1\n"
                    "To: <sip:svc@127.0.0.1:5060>\n"
                    "i: a-42@127.0.0.11\nCSeq: 1 INVITE\nm: <sip:caller@127.0.0.11:5062>\n"
                    "Content-Length: 0\n\n")
        a_ok = msg(4, "127.0.0.1:5060", "127.0.0.11:5062",
                   "SIP/2.0 200 OK\n"
                   "Via: SIP/2.0/UDP 127.0.0.11:5062;branch=z9hG4bK-caller-1\n"
                   "From: <sip:caller@127.0.0.11:5062>;tag=callertag1\n"
                   "To: <sip:svc@127.0.0.1:5060>;tag=sbcatag\n"
                   "Call-ID: a-42@127.0.0.11\nCSeq: 1 INVITE\nContact: <sip:sbc@127.0.0.1:5060>\n"
                   "Content-Length: 0\n\n")
        b_inv = msg(2, "127.0.0.2:5070", "127.0.0.12:5080",
                    "INVITE sip:svc@127.0.0.12:5080 SIP/2.0\n"
                    "Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-sbc-1\n"
                    f"From: <sip:caller@127.0.0.2>;tag={b_from_tag}\n"
                    "To: <sip:svc@127.0.0.12:5080>\n"
                    f"Call-ID: {b_call_id}\nCSeq: 7 INVITE\nContact: <{b_contact}>\n"
                    f"Content-Length: {len(b_body)}\n\n{b_body}")
        b_ok = msg(3, "127.0.0.12:5080", "127.0.0.2:5070",
                   "SIP/2.0 200 OK\n"
                   "Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-sbc-1\n"
                   f"From: <sip:caller@127.0.0.2>;tag={b_from_tag}\n"
                   "To: <sip:svc@127.0.0.12:5080>;tag=calleetag1\n"
                   f"Call-ID: {b_call_id}\nCSeq: 7 INVITE\nContact: <sip:callee@127.0.0.12:5080>\n"
                   "Content-Length: 0\n\n")
        return [a_inv, b_inv, b_ok, a_ok]

    cases = [
        ("clean", legs(), True, None),
        ("Call-ID leaked", legs(b_call_id="a-42@127.0.0.11"), False, "LEAK: Call-ID"),
        ("Call-ID embedded", legs(b_call_id="b2b-a-42@127.0.0.11"), False, "LEAK: Call-ID"),
        ("From tag leaked", legs(b_from_tag="callertag1"), False, "LEAK: From tag"),
        ("caller address leaked in Contact", legs(b_contact="sip:caller@127.0.0.11:5062"), False,
         "LEAK: Via sent-by"),
        ("caller host in SDP is a warning only", legs(b_body="v=0\r\nc=IN IP4 127.0.0.11\r\n"), True,
         "warning: host 127.0.0.11"),
    ]
    failures = 0
    for name, msgs, expect_ok, expect_text in cases:
        buf = io.StringIO()
        ok = check(msgs, sbc_a, sbc_b, {sbc_a, sbc_b}, set(), 1, False, out=buf)
        good = ok == expect_ok and (expect_text is None or expect_text in buf.getvalue())
        print(f"self-test {'ok  ' if good else 'FAIL'}: {name}")
        if not good:
            failures += 1
            print(buf.getvalue())
    # The strict mode turns the SDP host into a failure.
    buf = io.StringIO()
    ok = check(cases[-1][1], sbc_a, sbc_b, {sbc_a, sbc_b}, set(), 1, True, out=buf)
    print(f"self-test {'ok  ' if not ok else 'FAIL'}: --strict-hosts fails on the SDP host")
    failures += 1 if ok else 0
    return 0 if failures == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pcap", help="capture file (pcap or pcapng)")
    ap.add_argument("--leg-a", type=parse_addr, help="the SBC's access socket IP:PORT (leg A)")
    ap.add_argument("--leg-b", type=parse_addr, help="the SBC's trunk-side socket IP:PORT (leg B)")
    ap.add_argument("--sbc", type=parse_addr, action="append", default=[],
                    help="another IP:PORT owned by the SBC (the leg sockets always are)")
    ap.add_argument("--allow", action="append", default=[], help="a value allowed on both legs")
    ap.add_argument("--min-calls", type=int, default=1, help="minimum Call-IDs per leg (default 1)")
    ap.add_argument("--strict-hosts", action="store_true", help="bare hosts of the other leg are leaks too")
    ap.add_argument("--tshark", default="tshark")
    ap.add_argument("--self-test", action="store_true", help="run the built-in synthetic tests")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if not (args.pcap and args.leg_a and args.leg_b):
        ap.error("--pcap, --leg-a and --leg-b are required")
    msgs = read_capture(args.pcap, args.tshark)
    sbc_addrs = {args.leg_a, args.leg_b, *args.sbc}
    ok = check(msgs, args.leg_a, args.leg_b, sbc_addrs, set(args.allow), args.min_calls, args.strict_hosts)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
