#!/usr/bin/env python3
"""pcap_check.py: judge the SBC's intercept capture of one call against a live capture of lo.

  pcap_check.py --intercept DIR --live PCAP [--rolling DIR] [--untargeted USER]

Checks (one line each; exit status 0 when all hold):
  - DIR is mode 0700 and holds exactly one .pcap file, mode 0600;
  - `tshark -r FILE` reads it with exit status 0 and nothing on stderr (no warnings);
  - its SIP carries exactly two Call-IDs (leg A and leg B) and no INVITE to USER;
  - tshark decodes RTP (heuristic) on both legs in both directions;
  - the SIP messages of those Call-IDs in the live capture, and the UDP packets to or from the
    SBC media ports of the intercept file in the live capture within the intercept's time span,
    number within 1 % of the intercept file's own counts;
  - the intercept timestamps lie within the live capture's span (real time, not invented);
  - with --rolling: the rolling signalling capture holds SIP of the call and of USER's call.
"""

import argparse
import glob
import os
import stat
import subprocess
import sys

FAILS = []


def check(ok, line):
    print(("ok   " if ok else "FAIL ") + line)
    if not ok:
        FAILS.append(line)


def tshark(pcap, display_filter, fields, extra=()):
    cmd = ["tshark", "-r", pcap, "-n", *extra, "-Y", display_filter, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--intercept", required=True)
    ap.add_argument("--live", required=True)
    ap.add_argument("--rolling")
    ap.add_argument("--untargeted")
    a = ap.parse_args()

    check(mode(a.intercept) == 0o700, f"intercept dir mode {oct(mode(a.intercept))} (0o700)")
    files = sorted(glob.glob(os.path.join(a.intercept, "*.pcap")))
    check(len(files) == 1, f"intercept files: {len(files)} (1: the untargeted call has none)")
    if not files:
        return
    f = files[0]
    check(mode(f) == 0o600, f"intercept file mode {oct(mode(f))} (0o600)")

    r = subprocess.run(["tshark", "-r", f, "-n"], capture_output=True, text=True, check=False)
    # tshark's warning about running as root is about the lab's user, not the file.
    stderr = [line for line in r.stderr.splitlines()
              if line.strip() and "This could be dangerous" not in line]
    check(r.returncode == 0 and not stderr,
          f"tshark reads {os.path.basename(f)}: status {r.returncode}, warnings {stderr}")

    sip = tshark(f, "sip", ["sip.Call-ID", "sip.Method", "sip.r-uri.user"])
    call_ids = sorted({row[0] for row in sip if row and row[0]})
    check(len(call_ids) == 2, f"SIP Call-IDs in the intercept: {len(call_ids)} (2: leg A and B)")
    if a.untargeted:
        leaked = [row for row in sip if len(row) > 2 and row[2] == a.untargeted]
        check(not leaked, f"no SIP of the untargeted call ({len(leaked)} messages)")

    heur = ["-o", "rtp.heuristic_rtp:TRUE"]
    rtp = tshark(f, "rtp", ["ip.src", "udp.srcport", "ip.dst", "udp.dstport"], heur)
    flows = {}
    for src, sport, dst, dport in (row for row in rtp if len(row) == 4):
        flows[(src, sport, dst, dport)] = flows.get((src, sport, dst, dport), 0) + 1
    for k, n in sorted(flows.items()):
        print(f"flow: {k[0]}:{k[1]} -> {k[2]}:{k[3]} {n} RTP")
    # Leg A is between the caller and the SBC's access side, leg B between the SBC's trunk side
    # and the callee: both directions of both legs make at least four flows on four addresses.
    check(len(flows) >= 4 and min(flows.values()) > 50,
          f"RTP flows decoded: {len(flows)} (>= 4, each > 50 packets)")

    # The SBC's media ports: the ports of the intercept's non-SIP packets on SBC addresses.
    media = tshark(f, "udp && !sip", ["ip.src", "udp.srcport", "ip.dst", "udp.dstport",
                                       "frame.time_epoch"])
    sip_rows = tshark(f, "sip", ["frame.time_epoch"])
    times = [float(row[-1]) for row in media + sip_rows if row and row[-1]]
    t0, t1 = min(times), max(times)
    endpoints = {}
    for src, sport, dst, dport, _ in (row for row in media if len(row) == 5):
        endpoints[(src, sport)] = endpoints.get((src, sport), 0) + 1
        endpoints[(dst, dport)] = endpoints.get((dst, dport), 0) + 1
    # An SBC endpoint appears in every packet of its flows both ways; peers too, but each SBC
    # port has exactly one peer, so the SBC ports are the endpoints on the SBC's addresses.
    sbc_ports = sorted({(ip, port) for (ip, port) in endpoints if ip in ("127.0.0.1", "127.0.0.2")})
    check(len(sbc_ports) >= 2, f"SBC media endpoints: {sbc_ports}")

    live_sip = tshark(a.live, " || ".join(f'sip.Call-ID == "{c}"' for c in call_ids),
                      ["frame.time_epoch"])
    n_sip, n_live_sip = len(sip), len(live_sip)
    check(abs(n_sip - n_live_sip) <= max(1, n_live_sip // 100),
          f"SIP messages: intercept {n_sip}, live {n_live_sip} (within 1 %)")
    port_filter = " || ".join(
        f"(ip.addr == {ip} && udp.port == {port})" for ip, port in sbc_ports) or "frame"
    live_media = tshark(a.live, f"({port_filter}) && !sip && !icmp && "
                        f"frame.time_epoch >= {t0 - 0.5} && frame.time_epoch <= {t1 + 0.5}",
                        ["frame.time_epoch"])
    n_media, n_live_media = len(media), len(live_media)
    check(n_live_media > 0 and abs(n_media - n_live_media) <= n_live_media / 100,
          f"RTP/RTCP packets: intercept {n_media}, live {n_live_media} (within 1 %)")

    live_times = [float(row[0]) for row in tshark(a.live, "frame", ["frame.time_epoch"]) if row]
    check(live_times and min(live_times) - 1 <= t0 and t1 <= max(live_times) + 1,
          f"intercept timestamps {t0:.3f}..{t1:.3f} inside the live capture's span")

    if a.rolling:
        check(mode(a.rolling) == 0o700, f"rolling dir mode {oct(mode(a.rolling))} (0o700)")
        rolled = sorted(glob.glob(os.path.join(a.rolling, "sip-*.pcap")))
        users = set()
        ids = set()
        for p in rolled:
            for row in tshark(p, "sip", ["sip.Call-ID", "sip.r-uri.user"]):
                ids.add(row[0])
                if len(row) > 1 and row[1]:
                    users.add(row[1])
        want = {"target123"} | ({a.untargeted} if a.untargeted else set())
        check(set(call_ids) <= ids and want <= users,
              f"rolling signalling capture: {len(rolled)} file(s), {len(ids)} Call-IDs, "
              f"INVITEs to {sorted(users)}")


if __name__ == "__main__":
    main()
    sys.exit(1 if FAILS else 0)
