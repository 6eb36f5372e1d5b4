#!/usr/bin/env python3
"""Compares Autobahn fuzzingclient reports of one backend reached directly and through proxies.
usage: compare.py BASELINE/index.json [NAME=]OTHER/index.json...   (Python 3)
A case passes when its behavior is OK, NON-STRICT or INFORMATIONAL and its close behavior OK or
INFORMATIONAL. Prints the counts per result of every report, then each case that passes on the
baseline and not through a proxy. Exit status 1 when there is such a case."""
import json, os, sys
from collections import Counter

GOOD = {"OK", "NON-STRICT", "INFORMATIONAL"}
GOOD_CLOSE = {"OK", "INFORMATIONAL"}


def load(arg):
    name, _, path = arg.rpartition("=")
    name = name or os.path.basename(os.path.dirname(os.path.abspath(path)))
    report = json.load(open(path))
    return name, next(iter(report.values()))  # one agent per report


def passes(case):
    return case["behavior"] in GOOD and case["behaviorClose"] in GOOD_CLOSE


def key(case_id):
    return [int(x) for x in case_id.split(".")]


def result(case):
    return f"{case['behavior']}/{case['behaviorClose']}" if case else "missing"


reports = [load(arg) for arg in sys.argv[1:]]
for name, cases in reports:
    counts = Counter(c["behavior"] for c in cases.values())
    close = Counter(c["behaviorClose"] for c in cases.values())
    print(f"{name:>10}: {len(cases)} cases, behavior {dict(sorted(counts.items()))}, "
          f"close {dict(sorted(close.items()))}")

(base_name, base), others = reports[0], reports[1:]
regressions = 0
for name, cases in others:
    lost = [k for k in sorted(base, key=key) if passes(base[k]) and not (k in cases and passes(cases[k]))]
    regressions += len(lost)
    if lost:
        print(f"\n{name}: {len(lost)} case(s) pass on {base_name} but not here:")
        for k in lost:
            print(f"  {k:<10} {base_name}: {result(base[k]):<28} {name}: {result(cases.get(k))}")
if regressions == 0:
    print(f"\nevery case passing on {base_name} passes through "
          + ", ".join(name for name, _ in others))
sys.exit(1 if regressions else 0)
