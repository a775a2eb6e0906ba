#!/usr/bin/env python3
"""Print the sockets an SBC config listens on, one `proto:ip:port` per line.

Reads only the `listeners:` section of the SBC's YAML config (the subset of YAML that
configs/sbc.yaml uses: a block list of mappings with `address`, `port` and a flow list
`transports: [udp, tcp]`; tls, ws and wss are TCP sockets). Python stdlib only, so no YAML library is needed.
The lab uses this to know when a freshly started SBC is ready.
"""
import re
import sys


def listeners(text):
    out = []
    in_section = False
    cur = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "-")):
            # a top-level key
            if cur:
                out.append(cur)
                cur = None
            in_section = line.startswith("listeners:")
            continue
        if not in_section:
            continue
        m = re.match(r"^\s*-\s*(.*)$", line)
        if m:
            if cur:
                out.append(cur)
            cur = {}
            line = m.group(1)
        if cur is None:
            continue
        kv = re.match(r"^\s*([A-Za-z_]+)\s*:\s*(.*)$", line)
        if kv:
            cur[kv.group(1)] = kv.group(2).strip()
    if cur:
        out.append(cur)
    socks = []
    for entry in out:
        addr = entry.get("address", "").strip("\"'")
        port = entry.get("port", "").strip("\"'")
        transports = entry.get("transports", "[udp]").strip("[]")
        for t in transports.split(","):
            t = t.strip().strip("\"'").lower()
            # tls, ws and wss listen on TCP sockets.
            if t in ("tls", "ws", "wss"):
                t = "tcp"
            if t and addr and port:
                socks.append(f"{t}:{addr}:{port}")
    return socks


def main():
    if len(sys.argv) != 2:
        print("usage: cfg_listeners.py CONFIG.yaml", file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        socks = listeners(f.read())
    if not socks:
        print(f"no listeners found in {sys.argv[1]}", file=sys.stderr)
        return 1
    print("\n".join(socks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
