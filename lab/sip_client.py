#!/usr/bin/env python3
"""A small SIP user agent over TLS, WS and WSS for the lab (Python stdlib only).

SIPp as packaged by Debian has no TLS and no WebSocket, so the lab's TLS and WebSocket
clients are this script. It behaves like a browser's SIP stack (JsSIP): Via and Contact
hosts under `.invalid` (RFC 7118 section 5), the `sip` WebSocket subprotocol (section 4),
one SIP message per WebSocket message. TLS is a plain RFC 3261 stream framed by
Content-Length, with RFC 5626 CRLF keep-alives.

    sip_client.py call TRANSPORT HOST:PORT [--ca PEM] [--register] [--ping]
        REGISTER first (any final answer is accepted and printed) when --register; INVITE with
        SDP; ACK the 200; wait for the callee's BYE and answer 200. With --ping (tls), send a
        CRLFCRLF ping and require the CRLF pong. Exit 0 when all of that happened.
    sip_client.py refused TRANSPORT HOST:PORT [--ca PEM] [--protocol NAME]
        A WebSocket handshake that offers only NAME (default: none): exit 0 if refused.
    sip_client.py limit TRANSPORT HOST:PORT N [--ca PEM]
        Open N WebSocket connections (all must be accepted), then one more (must be refused),
        then close one and open another (must be accepted again). Exit 0 if so.

Every message sent and received is printed (the lab keeps the output as NAME.ua.log).
"""
import argparse
import base64
import hashlib
import os
import random
import socket
import ssl
import struct
import sys
import time

DEADLINE = 20.0  # seconds for a whole command


def log(*a):
    print(*a, flush=True)


class Conn:
    """One connection: TLS or TCP stream, or a WebSocket over either."""

    def __init__(self, transport, addr, ca=None, protocol="sip", timeout=5.0):
        self.transport = transport
        host, port = addr.rsplit(":", 1)
        self.host = host
        sock = socket.create_connection((host, int(port)), timeout=timeout)
        if transport in ("tls", "wss"):
            ctx = ssl.create_default_context(cafile=ca)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            sock = ctx.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.buf = b""
        self.local = "%s:%d" % sock.getsockname()[:2]
        if transport in ("ws", "wss"):
            self.handshake(protocol)

    # ---- WebSocket (RFC 6455) ---------------------------------------------------------------

    def handshake(self, protocol):
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET / HTTP/1.1",
            "Host: %s" % self.host,
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: %s" % key,
            "Sec-WebSocket-Version: 13",
            "Origin: https://lab.invalid",
        ]
        if protocol:
            lines.append("Sec-WebSocket-Protocol: %s" % protocol)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self.read_until(b"\r\n\r\n")
        if head is None:
            raise ConnectionError("connection closed during the WebSocket handshake")
        text = head.decode(errors="replace")
        status = text.split("\r\n", 1)[0]
        if " 101 " not in status + " ":
            raise ConnectionError("handshake refused: %s" % status)
        headers = {}
        for line in text.split("\r\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise ConnectionError("bad Sec-WebSocket-Accept")
        if headers.get("sec-websocket-protocol", "").lower() != "sip":
            raise ConnectionError("subprotocol not echoed: %r" % headers.get("sec-websocket-protocol"))

    def ws_send(self, opcode, payload):
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def ws_recv(self):
        """The next data message (bytes), answering pings; None when the connection ends."""
        parts = b""
        while True:
            h = self.read_exact(2)
            if h is None:
                return None
            fin, opcode, n = h[0] & 0x80, h[0] & 0x0F, h[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.read_exact(8))[0]
            mask = self.read_exact(4) if h[1] & 0x80 else None
            data = self.read_exact(n) if n else b""
            if data is None:
                return None
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x9:
                log("<<< websocket ping")
                self.ws_send(0xA, data)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                log("<<< websocket close")
                return None
            parts += data
            if fin:
                return parts

    # ---- bytes ------------------------------------------------------------------------------

    def fill(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise
        except (ConnectionError, ssl.SSLError, OSError):
            return False
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_exact(self, n):
        while len(self.buf) < n:
            if not self.fill():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_until(self, sep):
        while sep not in self.buf:
            if not self.fill():
                return None
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    # ---- SIP --------------------------------------------------------------------------------

    def send(self, text):
        data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
        log(">>> %s\n%s" % (self.transport, data.decode(errors="replace")))
        if self.transport in ("ws", "wss"):
            self.ws_send(0x1, data)
        else:
            self.sock.sendall(data)

    def recv(self):
        """The next SIP message as text (None when the connection ends)."""
        if self.transport in ("ws", "wss"):
            data = self.ws_recv()
            if data is None:
                return None
            text = data.decode(errors="replace")
        else:
            while self.buf.startswith(b"\r\n"):
                self.buf = self.buf[2:]
            head = self.read_until(b"\r\n\r\n")
            if head is None:
                return None
            text = head.decode(errors="replace")
            length = int(header(text, "Content-Length", "l") or "0")
            body = self.read_exact(length) if length else b""
            text += body.decode(errors="replace")
        log("<<< %s\n%s" % (self.transport, text))
        return text

    def recv_until(self, pred, what):
        deadline = time.time() + DEADLINE
        while time.time() < deadline:
            self.sock.settimeout(max(0.1, deadline - time.time()))
            msg = self.recv()
            if msg is None:
                raise SystemExit("connection closed while waiting for %s" % what)
            if pred(msg):
                return msg
        raise SystemExit("timed out waiting for %s" % what)


def header(msg, name, compact=None):
    for line in msg.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        if ":" not in line:
            continue
        k, v = line.split(":", 1)
        if k.strip().lower() in (name.lower(), (compact or "").lower()):
            return v.strip()
    return None


def status(msg):
    first = msg.split("\r\n", 1)[0]
    if first.startswith("SIP/2.0 "):
        return int(first.split()[1])
    return None


def cseq_method(msg):
    return (header(msg, "CSeq") or " ").split()[-1]


def via_host(transport):
    # JsSIP writes a random `.invalid` host: the SBC must answer on the connection.
    return "%s.invalid" % "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))


def call(args):
    c = Conn(args.transport, args.target, args.ca)
    host = via_host(args.transport)
    vt = args.transport.upper()
    user = "lab%d" % random.randint(1000, 9999)
    contact = "<sip:%s@%s;transport=%s>" % (user, host, args.transport)
    sbc = args.target
    tag = "%08x" % random.getrandbits(32)
    if args.register:
        c.send(
            "REGISTER sip:%s SIP/2.0\n"
            "Via: SIP/2.0/%s %s;branch=z9hG4bK%08x\n"
            "Max-Forwards: 70\n"
            "From: <sip:%s@lab.invalid>;tag=%s\n"
            "To: <sip:%s@lab.invalid>\n"
            "Call-ID: reg-%s\n"
            "CSeq: 1 REGISTER\n"
            "Contact: %s;expires=600\n"
            "Expires: 600\n"
            "Content-Length: 0\n\n"
            % (sbc, vt, host, random.getrandbits(32), user, tag, user, tag, contact)
        )
        r = c.recv_until(lambda m: cseq_method(m) == "REGISTER" and (status(m) or 0) >= 200, "REGISTER answer")
        log("REGISTER answered %d on the same connection" % status(r))
    sdp = (
        "v=0\no=lab 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"
        "m=audio 40000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\na=sendrecv\n"
    ).replace("\n", "\r\n")
    call_id = "%s-%08x@lab.invalid" % (args.transport, random.getrandbits(32))
    c.send(
        "INVITE sip:100@%s SIP/2.0\n"
        "Via: SIP/2.0/%s %s;branch=z9hG4bK%08x\n"
        "Max-Forwards: 70\n"
        "From: <sip:%s@lab.invalid>;tag=%s\n"
        "To: <sip:100@lab.invalid>\n"
        "Call-ID: %s\n"
        "CSeq: 1 INVITE\n"
        "Contact: %s\n"
        "Content-Type: application/sdp\n"
        "Content-Length: %d\n\n%s"
        % (sbc, vt, host, random.getrandbits(32), user, tag, call_id, contact, len(sdp), sdp)
    )
    ok = c.recv_until(lambda m: cseq_method(m) == "INVITE" and (status(m) or 0) >= 200, "INVITE final")
    if status(ok) != 200:
        raise SystemExit("INVITE answered %d" % status(ok))
    to = header(ok, "To", "t")
    target = header(ok, "Contact", "m").strip("<>").split(">")[0]
    c.send(
        "ACK %s SIP/2.0\n"
        "Via: SIP/2.0/%s %s;branch=z9hG4bK%08x\n"
        "Max-Forwards: 70\n"
        "From: <sip:%s@lab.invalid>;tag=%s\n"
        "To: %s\n"
        "Call-ID: %s\n"
        "CSeq: 1 ACK\n"
        "Content-Length: 0\n\n" % (target, vt, host, random.getrandbits(32), user, tag, to, call_id)
    )
    if args.ping:
        c.sock.sendall(b"\r\n\r\n")
        log(">>> CRLF CRLF ping")
        c.sock.settimeout(5)
        while not c.buf.startswith(b"\r\n"):
            if not c.fill():
                raise SystemExit("connection closed while waiting for the CRLF pong")
        c.buf = c.buf[2:]
        log("<<< CRLF pong")
    bye = c.recv_until(lambda m: m.startswith("BYE "), "the callee's BYE")
    ruri = bye.split(" ", 2)[1]
    if ruri != contact.strip("<>"):
        raise SystemExit("BYE Request-URI %s is not our Contact %s" % (ruri, contact))
    lines = [l for l in bye.split("\r\n\r\n", 1)[0].split("\r\n")[1:] if l.split(":", 1)[0].lower() in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")]
    c.send("SIP/2.0 200 OK\n%s\nContent-Length: 0\n\n" % "\n".join(lines))
    log("call done: BYE received on the %s connection and answered" % args.transport)
    time.sleep(0.2)
    return 0


def refused(args):
    try:
        Conn(args.transport, args.target, args.ca, protocol=args.protocol)
    except ConnectionError as e:
        log("refused as expected: %s" % e)
        return 0
    log("the handshake offering %r was accepted" % args.protocol)
    return 1


def limit(args):
    conns = []
    for i in range(args.n):
        conns.append(Conn(args.transport, args.target, args.ca))
        log("connection %d accepted (%s)" % (i + 1, conns[-1].local))
    try:
        extra = Conn(args.transport, args.target, args.ca, timeout=3.0)
        log("connection %d was accepted over the limit (%s)" % (args.n + 1, extra.local))
        return 1
    except (ConnectionError, OSError) as e:
        log("connection %d refused as expected: %s" % (args.n + 1, e))
    conns.pop().sock.close()
    # The SBC sees the close and frees the slot.
    for _ in range(50):
        time.sleep(0.1)
        try:
            conns.append(Conn(args.transport, args.target, args.ca, timeout=3.0))
            log("a slot freed by a close is usable again")
            return 0
        except (ConnectionError, OSError):
            continue
    log("no connection accepted after one was closed")
    return 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("call", "refused", "limit"):
        s = sub.add_parser(name)
        s.add_argument("transport", choices=["tls", "ws", "wss"])
        s.add_argument("target")
        if name == "limit":
            s.add_argument("n", type=int)
        s.add_argument("--ca")
        if name == "call":
            s.add_argument("--register", action="store_true")
            s.add_argument("--ping", action="store_true")
        if name == "refused":
            s.add_argument("--protocol", default="")
    args = p.parse_args()
    try:
        return {"call": call, "refused": refused, "limit": limit}[args.cmd](args)
    except (ConnectionError, OSError, ssl.SSLError) as e:
        log("error: %s" % e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
