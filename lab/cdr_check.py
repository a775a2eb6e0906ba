#!/usr/bin/env python3
"""Reads the CDR files of a lab test back with Python's own csv and json modules and checks them.

usage: cdr_check.py DIR FORMAT EXPECT...
  FORMAT  csv or jsonl
  EXPECT  CALLEE_PREFIX:COUNT:DISPOSITION:STATUS[:BILLABLE_S]  records whose callee_in starts with
          CALLEE_PREFIX; with BILLABLE_S, each must bill that many seconds +- 0.1 s.
          '*' as prefix matches every record.

Checks: only completed files (no temporary file is left in DIR); every record has a unique
record_id and a unique a_call_id (exactly one record per call); the records of each EXPECT are
exactly COUNT, all with that disposition and status; timestamps are ordered
(start <= ring <= answer <= end); the total equals the sum of the counts (unless '*' is used).
Prints a summary per disposition; exits 1 with the reasons on failure.
"""
import csv
import datetime
import json
import os
import sys


def parse_time(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ") if s else None


def load(d, fmt):
    rows, problems = [], []
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        if name.endswith(".tmp"):
            problems.append(f"temporary file left behind: {name}")
            continue
        if not name.startswith("cdr-") or not name.endswith("." + fmt):
            continue
        with open(path, newline="") as f:
            if fmt == "csv":
                rows += list(csv.DictReader(f))
            else:
                rows += [json.loads(line) for line in f if line.strip()]
    return rows, problems


def main():
    d, fmt, expects = sys.argv[1], sys.argv[2], sys.argv[3:]
    rows, problems = load(d, fmt)
    ids = [r["record_id"] for r in rows]
    if len(set(ids)) != len(ids):
        problems.append("duplicate record ids")
    calls = [r["a_call_id"] for r in rows]
    if len(set(calls)) != len(calls):
        problems.append("more than one record for a call (duplicate a_call_id)")
    total = 0
    for e in expects:
        parts = e.split(":")
        prefix, count, disp, status = parts[0], int(parts[1]), parts[2], int(parts[3])
        billable = float(parts[4]) if len(parts) > 4 else None
        sel = [r for r in rows if prefix == "*" or r["callee_in"].startswith(prefix)]
        total = None if prefix == "*" or total is None else total + count
        if len(sel) != count:
            problems.append(f"{prefix}: {len(sel)} records, expected {count}")
        for r in sel:
            if r["disposition"] != disp or int(r["status"]) != status:
                problems.append(
                    f"{prefix}: record {r['record_id']} is {r['disposition']}/{r['status']}, "
                    f"expected {disp}/{status}")
            if billable is not None and abs(float(r["billable_s"]) - billable) > 0.1:
                problems.append(
                    f"{prefix}: record {r['record_id']} bills {r['billable_s']} s, "
                    f"expected {billable} +- 0.1")
    for r in rows:
        times = [parse_time(r[k]) for k in ("start", "ring", "answer", "end")]
        present = [t for t in times if t is not None]
        if present != sorted(present):
            problems.append(f"record {r['record_id']}: timestamps out of order")
    if total is not None and len(rows) != total:
        problems.append(f"{len(rows)} records in all, expected {total}")
    summary = {}
    for r in rows:
        summary[r["disposition"]] = summary.get(r["disposition"], 0) + 1
    print(f"{len(rows)} records ({fmt}): " + ", ".join(f"{k}={v}" for k, v in sorted(summary.items())))
    for p in problems:
        print("problem:", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
