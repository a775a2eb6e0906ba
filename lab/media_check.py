#!/usr/bin/env python3
"""media_check.py: judge the media of a lab capture with tshark's own dissectors.

The SBC's media plane is checked on a dumpcap capture of lo, with tshark decoding the SIP/SDP
and the RTP (heuristically: the ports are the SBC's own), so that what counts the packets is a
tool we did not write.

  media_check.py sdp --pcap F --sbc IP [--sbc IP..]
      Every SDP that an SBC address sent must carry only SBC addresses in o= and c= (0.0.0.0
      and :: are allowed: hold), and no ICE candidate. Prints the SDPs it saw per direction.

  media_check.py rtp --pcap F --sbc IP.. --caller IP --callee IP [--min-ratio R]
                     [--from T] [--to-time T] [--forbid-ssrc X..] [--expect-none DIR..]
      Counts RTP between the UAs and the SBC (in the time window, seconds relative to the
      first packet of the capture) and requires, per direction, that the packets the SBC sent
      on are at least R of those it received (caller->callee and callee->caller), that no RTP
      went between the UAs directly, and that no packet with a forbidden SSRC left the SBC.
      --expect-none caller->callee (or callee->caller) requires instead that the SBC sent
      nothing on in that direction (hold), while the UA did send.

  media_check.py tone --pcap F --sbc IP.. --to IP --hz F [--tolerance 25]
      Decodes the G.711 RTP the SBC sent to IP (PCMU or PCMA by payload type) and requires
      that the strongest frequency is F +- tolerance Hz. (With no SBC in the path, give the
      sending UA's address as --sbc to judge what that UA sent to IP.)

  media_check.py count --pcap F --src IP --dst IP [--min-packets N] [--from T] [--to-time T]
      Counts the RTP packets sent from IP to IP and requires at least N (default 1). Needs no
      SBC: in direct mode it shows that two UAs exchanged media.

  media_check.py wav --file F --hz F [--tolerance 25] [--skip 0.5] [--seconds 3]
      Reads a recorded WAV (16-bit PCM, e.g. what baresip's sndfile module wrote of the audio
      it received), skips the first SKIP seconds, and requires that the strongest frequency of
      the next SECONDS is F +- tolerance Hz and that the audio is not silent.

Exit status 0 when every check holds, 1 otherwise; each check prints one line.
"""

import argparse
import collections
import math
import struct
import subprocess
import sys
import wave


def tshark(pcap, display_filter, fields, rtp=False):
    cmd = ["tshark", "-r", pcap, "-n"]
    if rtp:
        cmd += ["-o", "rtp.heuristic_rtp:TRUE"]
    cmd += ["-Y", display_filter, "-T", "fields", "-E", "separator=\t",
            "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def cmd_sdp(a):
    sbc = set(a.sbc)
    rows = tshark(a.pcap, "sdp", ["ip.src", "ipv6.src", "ip.dst", "ipv6.dst",
                                  "sdp.owner.address", "sdp.connection_info.address",
                                  "sdp.media_attr", "sdp.media.port"])
    bad, seen = 0, collections.Counter()
    for r in rows:
        r += [""] * (8 - len(r))
        src, dst = r[0] or r[1], r[2] or r[3]
        if src not in sbc:
            continue
        addrs = [x for x in (r[4] + "|" + r[5]).split("|") if x]
        attrs = [x for x in r[6].split("|") if x]
        seen[(src, dst)] += 1
        leaks = [x for x in addrs if x not in sbc and x not in ("0.0.0.0", "::")]
        ice = [x for x in attrs if x.startswith(("candidate", "ice-"))]
        if leaks or ice:
            bad += 1
            print(f"LEAK: SDP {src} -> {dst} carries {leaks + ice}")
    for (src, dst), n in sorted(seen.items()):
        print(f"sdp: {n} SDP bodies {src} -> {dst}")
    if not seen:
        print("FAIL: no SDP sent by the SBC in the capture")
        return 1
    if bad:
        print(f"FAIL: {bad} SDP bodies from the SBC carry non-SBC addresses or ICE")
        return 1
    print("ok: every SDP the SBC sent carries only SBC addresses")
    return 0


def rtp_rows(a):
    rows = tshark(a.pcap, "rtp", ["frame.time_relative", "ip.src", "ipv6.src", "udp.srcport",
                                  "ip.dst", "ipv6.dst", "udp.dstport", "rtp.ssrc",
                                  "rtp.p_type", "rtp.payload"], rtp=True)
    t_from = a.__dict__.get("from_t")
    t_to = a.__dict__.get("to_t")
    for r in rows:
        r += [""] * (10 - len(r))
        t = float(r[0])
        if t_from is not None and t < t_from:
            continue
        if t_to is not None and t > t_to:
            continue
        yield {"t": t, "src": r[1] or r[2], "sport": r[3], "dst": r[4] or r[5], "dport": r[6],
               "ssrc": r[7].lower(), "pt": r[8], "payload": r[9]}


def cmd_rtp(a):
    sbc = set(a.sbc)
    flows = collections.Counter()
    counts = collections.Counter()
    forbidden = {s.lower() for s in a.forbid_ssrc}
    leaked = 0
    for p in rtp_rows(a):
        flows[(p["src"], p["sport"], p["dst"], p["dport"])] += 1
        src_sbc, dst_sbc = p["src"] in sbc, p["dst"] in sbc
        marked = p["ssrc"] in forbidden or p["ssrc"].replace("0x", "") in forbidden
        if marked and not src_sbc:
            # Injected by the test (an attacker), not the UA's own RTP.
            counts["injected"] += 1
            continue
        if not src_sbc and not dst_sbc:
            counts["direct"] += 1
        elif not src_sbc:
            counts[("in", p["src"])] += 1
        elif not dst_sbc:
            counts[("out", p["dst"])] += 1
            if marked:
                leaked += 1
    for (s, sp, d, dp), n in sorted(flows.items()):
        print(f"flow: {s}:{sp} -> {d}:{dp} {n} RTP packets")
    rc = 0
    if counts["direct"]:
        print(f"FAIL: {counts['direct']} RTP packets went between the UAs, not through the SBC")
        rc = 1
    if leaked:
        print(f"FAIL: {leaked} packets with a forbidden SSRC were relayed by the SBC")
        rc = 1
    elif forbidden:
        print(f"ok: none of the {counts['injected']} packets with a forbidden SSRC left the SBC")
        if counts["injected"] == 0:
            print("FAIL: no injected packet reached the SBC, so the check proves nothing")
            rc = 1
    for name, src, dst in (("caller->callee", a.caller, a.callee),
                           ("callee->caller", a.callee, a.caller)):
        sent, relayed = counts[("in", src)], counts[("out", dst)]
        if name in a.expect_none:
            if sent == 0:
                print(f"FAIL: {name}: the UA sent no RTP, so holding it proves nothing")
                rc = 1
            elif relayed:
                print(f"FAIL: {name}: the SBC relayed {relayed} of {sent} packets; expected none")
                rc = 1
            else:
                print(f"ok: {name}: the SBC relayed none of {sent} packets, as expected")
            continue
        if sent == 0 and a.min_packets == 0:
            print(f"skip: {name}: no RTP reached the SBC")
            continue
        if sent < a.min_packets:
            print(f"FAIL: {name}: only {sent} RTP packets reached the SBC (need {a.min_packets})")
            rc = 1
            continue
        ratio = relayed / sent
        verdict = "ok" if ratio >= a.min_ratio else "FAIL"
        print(f"{verdict}: {name}: {relayed} of {sent} RTP packets relayed "
              f"({100 * ratio:.2f} %, need {100 * a.min_ratio:.2f} %)")
        if ratio < a.min_ratio:
            rc = 1
    return rc


def ulaw(b):
    b = ~b & 0xFF
    sign, exp, mant = b & 0x80, (b >> 4) & 7, b & 0x0F
    v = ((mant << 3) + 0x84) << exp
    v -= 0x84
    return -v if sign else v


def alaw(b):
    b ^= 0x55
    sign, exp, mant = b & 0x80, (b >> 4) & 7, b & 0x0F
    v = (mant << 4) + 8 if exp == 0 else ((mant << 4) + 0x108) << (exp - 1)
    return v if sign else -v


def goertzel(samples, rate, hz):
    k = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return s1 * s1 + s2 * s2 - k * s1 * s2


def strongest(samples, rate):
    """(peak Hz, share of the scanned power within 30 Hz of it), 100-3800 Hz in 10 Hz steps."""
    mean = sum(samples) / len(samples)
    samples = [x - mean for x in samples]
    powers = {hz: goertzel(samples, rate, hz) for hz in range(100, min(3800, rate // 2), 10)}
    peak = max(powers, key=powers.get)
    total = sum(powers.values()) or 1.0
    share = sum(v for hz, v in powers.items() if abs(hz - peak) <= 30) / total
    return peak, share


def cmd_wav(a):
    try:
        with wave.open(a.file, "rb") as w:
            rate, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except (OSError, EOFError, wave.Error) as e:
        print(f"FAIL: cannot read {a.file}: {e}")
        return 1
    if width != 2:
        print(f"FAIL: {a.file}: {8 * width}-bit samples, expected 16-bit PCM")
        return 1
    # The first channel only.
    samples = [v[0] for v in struct.iter_unpack("<" + "h" * ch, raw)]
    start = int(a.skip * rate)
    window = samples[start:start + int(a.seconds * rate)]
    if len(window) < rate // 2:
        print(f"FAIL: {a.file} holds {len(samples) / rate:.2f} s of audio; "
              f"need more than {a.skip + 0.5:.1f} s")
        return 1
    rms = math.sqrt(sum(x * x for x in window) / len(window))
    dbfs = 20 * math.log10(rms / 32768) if rms > 0 else -200.0
    if dbfs < -60:
        print(f"FAIL: {a.file}: silent ({dbfs:.1f} dBFS over {len(window) / rate:.2f} s)")
        return 1
    peak, share = strongest(window, rate)
    ok = abs(peak - a.hz) <= a.tolerance
    verdict = "ok" if ok else "FAIL"
    print(f"{verdict}: strongest frequency in {a.file} ({len(samples) / rate:.2f} s at {rate} Hz, "
          f"{dbfs:.1f} dBFS) is {peak} Hz ({100 * share:.0f} % of the scanned power), "
          f"expected {a.hz:g} Hz")
    return 0 if ok else 1


def cmd_tone(a):
    sbc = set(a.sbc)
    samples = []
    for p in rtp_rows(a):
        if p["src"] not in sbc or p["dst"] != a.to or p["pt"] not in ("0", "8"):
            continue
        data = bytes.fromhex(p["payload"].replace(":", ""))
        dec = ulaw if p["pt"] == "0" else alaw
        samples.extend(dec(x) for x in data)
        if len(samples) >= 8000 * 4:
            break
    if len(samples) < 8000:
        print(f"FAIL: only {len(samples)} G.711 samples from the SBC to {a.to}")
        return 1
    # Skip the first half second (jitter buffers and ramp-up), take up to 2 s.
    samples = samples[4000:20000]
    mean = sum(samples) / len(samples)
    samples = [x - mean for x in samples]
    powers = {hz: goertzel(samples, 8000, hz) for hz in range(100, 3800, 10)}
    peak = max(powers, key=powers.get)
    total = sum(powers.values()) or 1.0
    share = sum(v for hz, v in powers.items() if abs(hz - peak) <= 30) / total
    ok = abs(peak - a.hz) <= a.tolerance
    verdict = "ok" if ok else "FAIL"
    print(f"{verdict}: strongest frequency sent to {a.to} is {peak} Hz "
          f"({100 * share:.0f} % of the scanned power), expected {a.hz} Hz")
    return 0 if ok else 1


def cmd_count(a):
    n = sum(1 for p in rtp_rows(a) if p["src"] == a.src and p["dst"] == a.dst)
    ok = n >= a.min_packets
    verdict = "ok" if ok else "FAIL"
    print(f"{verdict}: {n} RTP packets {a.src} -> {a.dst} (need {a.min_packets})")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("sdp", "rtp", "tone"):
        p = sub.add_parser(name)
        p.add_argument("--pcap", required=True)
        p.add_argument("--sbc", action="append", required=True)
        p.add_argument("--from", dest="from_t", type=float)
        p.add_argument("--to-time", dest="to_t", type=float)
        if name == "rtp":
            p.add_argument("--caller", required=True)
            p.add_argument("--callee", required=True)
            p.add_argument("--min-ratio", type=float, default=0.999)
            p.add_argument("--min-packets", type=int, default=100)
            p.add_argument("--forbid-ssrc", action="append", default=[])
            p.add_argument("--expect-none", action="append", default=[],
                           choices=["caller->callee", "callee->caller"])
        if name == "tone":
            p.add_argument("--to", required=True)
            p.add_argument("--hz", type=float, required=True)
            p.add_argument("--tolerance", type=float, default=25)
    p = sub.add_parser("wav")
    p.add_argument("--file", required=True)
    p.add_argument("--hz", type=float, required=True)
    p.add_argument("--tolerance", type=float, default=25)
    p.add_argument("--skip", type=float, default=0.5)
    p.add_argument("--seconds", type=float, default=3)
    p = sub.add_parser("count")
    p.add_argument("--pcap", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--min-packets", type=int, default=1)
    p.add_argument("--from", dest="from_t", type=float)
    p.add_argument("--to-time", dest="to_t", type=float)
    a = ap.parse_args()
    return {"sdp": cmd_sdp, "rtp": cmd_rtp, "tone": cmd_tone, "count": cmd_count,
            "wav": cmd_wav}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
