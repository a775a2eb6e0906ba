#!/usr/bin/env python3
"""A registered SIP user agent for the lab: registers, refreshes, answers calls, and leaves.

SIPp cannot play this part: a SIPp client drops an INVITE whose Call-ID is not one of its own
calls, and the INVITE for a registered user must arrive on the very flow the REGISTER left from
(the same UDP address, or the same TCP connection), so the registering and the answering UA
must be one process.

    reg_client.py --local 127.0.0.11:5061 --sbc 127.0.0.1:5060 --transport udp \
        --user alice --domain lab.example --password secret --refreshes 5 --calls 1

1. REGISTER (Expires: 600); a 401 is answered with MD5 digest credentials (qop=auth when
   offered); the 200 must list our Contact with an expiry.
2. --refreshes more REGISTERs in a row, each with fresh credentials (nc+1), each must get 200.
   "registered" is printed (and flushed) after the last one.
3. Answers --calls INVITEs: 180, then 200 with an SDP answer; waits for the ACK and the BYE,
   answers the BYE 200.
4. Exits (over TCP the connection is closed: the test then checks the binding is gone).
Exit status 0 when every step went as described; a message on stderr says what failed.
Python stdlib only.
"""
import argparse
import hashlib
import random
import re
import socket
import sys
import time


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def parse(data):
    head, _, body = data.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers, body


def header(headers, name):
    for n, v in headers:
        if n.lower() == name.lower():
            return v
    return None


def all_headers(headers, name):
    return [v for n, v in headers if n.lower() == name.lower()]


class Flow:
    def __init__(self, transport, local, sbc):
        self.transport = transport
        self.sbc = sbc
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(local)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind((local[0], 0))
            self.sock.connect(sbc)
        self.local = self.sock.getsockname()
        self.buf = b""

    def send(self, text):
        data = text.encode()
        if self.transport == "udp":
            self.sock.sendto(data, self.sbc)
        else:
            self.sock.sendall(data)

    def recv(self, timeout):
        """The next SIP message (text), or None after `timeout` seconds."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                if self.transport == "udp":
                    data, _ = self.sock.recvfrom(65536)
                    if data.strip(b"\r\n"):
                        return data.decode(errors="replace")
                    continue
                msg = self._frame()
                if msg is not None:
                    return msg
                chunk = self.sock.recv(65536)
                if not chunk:
                    return None
                self.buf += chunk
                msg = self._frame()
                if msg is not None:
                    return msg
            except socket.timeout:
                return None

    def _frame(self):
        self.buf = self.buf.lstrip(b"\r\n")
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", self.buf[:end])
        length = int(m.group(1)) if m else 0
        total = end + 4 + length
        if len(self.buf) < total:
            return None
        msg, self.buf = self.buf[:total], self.buf[total:]
        return msg.decode(errors="replace")

    def close(self):
        self.sock.close()


class Client:
    def __init__(self, args):
        self.a = args
        self.flow = Flow(args.transport, hostport(args.local), hostport(args.sbc))
        ip, port = self.flow.local
        t = args.transport
        self.contact = f"sip:{args.user}@{ip}:{port};transport={t}"
        self.via_host = f"{ip}:{port}"
        self.call_id = f"{random.getrandbits(64):016x}@{ip}"
        self.tag = f"{random.getrandbits(32):08x}"
        self.cseq = 0
        self.challenge = None
        self.nc = 0

    def log(self, text):
        print(f"{time.time():.3f} {text}", flush=True)

    def fail(self, why):
        print(f"{self.a.user}: {why}", file=sys.stderr, flush=True)
        self.flow.close()
        sys.exit(1)

    def register_request(self):
        self.cseq += 1
        a = self.a
        ruri = f"sip:{a.sbc}"
        lines = [
            f"REGISTER {ruri} SIP/2.0",
            f"Via: SIP/2.0/{a.transport.upper()} {self.via_host};branch=z9hG4bK{random.getrandbits(48):012x};rport",
            "Max-Forwards: 70",
            f"From: <sip:{a.user}@{a.domain}>;tag={self.tag}",
            f"To: <sip:{a.user}@{a.domain}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <{self.contact}>",
            "Expires: 600",
        ]
        if self.challenge:
            lines.append("Authorization: " + self.credentials("REGISTER", ruri))
        lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines)

    def credentials(self, method, uri):
        ch = self.challenge
        realm, nonce = ch["realm"], ch["nonce"]
        ha1 = md5(f"{self.a.user}:{realm}:{self.a.password}")
        ha2 = md5(f"{method}:{uri}")
        out = f'Digest username="{self.a.user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
        if "auth" in ch.get("qop", ""):
            self.nc += 1
            nc = f"{self.nc:08x}"
            cnonce = f"{random.getrandbits(32):08x}"
            resp = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
            out += f', response="{resp}", algorithm=MD5, cnonce="{cnonce}", nc={nc}, qop=auth'
        else:
            out += f', response="{md5(f"{ha1}:{nonce}:{ha2}")}", algorithm=MD5'
        if "opaque" in ch:
            out += f', opaque="{ch["opaque"]}"'
        return out

    def final(self, method):
        """The final response to our last request."""
        while True:
            msg = self.flow.recv(10)
            if msg is None:
                self.fail(f"no final response to {method} {self.cseq}")
            start, headers, _ = parse(msg)
            if not start.startswith("SIP/2.0"):
                self.fail(f"unexpected request while waiting for the {method} response: {start}")
            code = int(start.split()[1])
            if code >= 200:
                return code, headers

    def register(self, what):
        self.flow.send(self.register_request())
        code, headers = self.final("REGISTER")
        if code == 401 and not self.challenge:
            v = header(headers, "WWW-Authenticate") or ""
            self.challenge = dict(re.findall(r'(\w+)="?([^",]*)"?', v))
            self.log(f"{what}: 401, realm {self.challenge.get('realm')}")
            self.flow.send(self.register_request())
            code, headers = self.final("REGISTER")
        if code != 200:
            self.fail(f"{what}: REGISTER answered {code}")
        contacts = ",".join(all_headers(headers, "Contact"))
        m = re.search(r"<([^>]*)>;expires=(\d+)", contacts)
        if not m or m.group(1) != self.contact:
            self.fail(f"{what}: 200 does not list our contact: {contacts!r}")
        self.log(f"{what}: 200, expires={m.group(2)}")

    def answer_call(self, n):
        while True:
            msg = self.flow.recv(self.a.wait)
            if msg is None:
                self.fail(f"call {n}: no INVITE within {self.a.wait}s")
            start, headers, _ = parse(msg)
            if start.startswith("INVITE "):
                break
            self.log(f"ignored while waiting for an INVITE: {start}")
        ruri = start.split()[1]
        self.log(f"call {n}: INVITE {ruri}")
        if ruri != self.contact and not ruri.startswith(self.contact.split(";")[0]):
            self.fail(f"call {n}: Request-URI {ruri} is not our contact {self.contact}")
        to_tag = f"{random.getrandbits(32):08x}"
        ip = self.flow.local[0]
        sdp = (
            f"v=0\r\no=callee 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            "m=audio 46000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )

        def response(code, reason, body=""):
            lines = [f"SIP/2.0 {code} {reason}"]
            lines += [f"Via: {v}" for v in all_headers(headers, "Via")]
            lines += [
                f"From: {header(headers, 'From')}",
                f"To: {header(headers, 'To')};tag={to_tag}",
                f"Call-ID: {header(headers, 'Call-ID')}",
                f"CSeq: {header(headers, 'CSeq')}",
                f"Contact: <{self.contact}>",
            ]
            if body:
                lines.append("Content-Type: application/sdp")
            lines += [f"Content-Length: {len(body)}", "", body]
            return "\r\n".join(lines)

        self.flow.send(response(180, "Ringing"))
        self.flow.send(response(200, "OK", sdp))
        acked = False
        while True:
            msg = self.flow.recv(30)
            if msg is None:
                self.fail(f"call {n}: no {'BYE' if acked else 'ACK'}")
            start, bye_headers, _ = parse(msg)
            if start.startswith("ACK "):
                acked = True
            elif start.startswith("BYE "):
                headers = bye_headers
                self.flow.send(response(200, "OK"))
                self.log(f"call {n}: BYE answered")
                break
            elif start.startswith("SIP/2.0"):
                continue
            else:
                self.log(f"call {n}: ignored {start}")
        if not acked:
            self.fail(f"call {n}: BYE before ACK")

    def run(self):
        self.register("register")
        for i in range(self.a.refreshes):
            self.register(f"refresh {i + 1}")
        print("registered", flush=True)
        for n in range(1, self.a.calls + 1):
            self.answer_call(n)
        # Let the last 200 leave before the connection closes.
        time.sleep(0.2)
        self.flow.close()
        self.log("done")


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--local", required=True, help="IP:PORT (TCP: the IP; the port is chosen)")
    p.add_argument("--sbc", required=True)
    p.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    p.add_argument("--user", required=True)
    p.add_argument("--domain", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--refreshes", type=int, default=0)
    p.add_argument("--calls", type=int, default=1)
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for each INVITE")
    Client(p.parse_args()).run()


if __name__ == "__main__":
    main()
