#!/usr/bin/env python3
"""rtp_inject.py: send G.711 RTP packets with a marked SSRC from a chosen source.

  rtp_inject.py --src IP:PORT --dst IP:PORT [--count 50] [--ssrc 0xbadc0de] [--pt 8]

Used by the media_source lab test to play the attacker of the RTP Bleed class: packets to
the SBC's media port from an address or port that the call's SDP never announced. The SSRC
marks them, so the capture shows whether the SBC relayed any of them.
"""

import argparse
import socket
import struct
import time


def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True, type=hostport)
    ap.add_argument("--dst", required=True, type=hostport)
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--ssrc", default="0xbadc0de")
    ap.add_argument("--pt", type=int, default=8)
    ap.add_argument("--interval", type=float, default=0.02)
    a = ap.parse_args()
    family = socket.AF_INET6 if ":" in a.src[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(a.src)
    ssrc = int(a.ssrc, 0)
    payload = bytes([0xD5]) * 160
    for i in range(a.count):
        header = struct.pack("!BBHII", 0x80, a.pt & 0x7F, (1000 + i) & 0xFFFF, 160 * i, ssrc)
        sock.sendto(header + payload, a.dst)
        time.sleep(a.interval)
    print(f"sent {a.count} packets {a.src[0]}:{a.src[1]} -> {a.dst[0]}:{a.dst[1]} ssrc {a.ssrc}")


if __name__ == "__main__":
    main()
