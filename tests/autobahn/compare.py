#!/usr/bin/env python3
"""Compares Autobahn fuzzingclient reports of one backend reached directly and through proxies.
usage: compare.py [--unimplemented NAME=GLOB,...] [NAME=]BASELINE/index.json [NAME=]OTHER/index.json...
A report with several agents (the fuzzingserver's) is read for the agent NAME.
A case passes when its behavior is OK, NON-STRICT or INFORMATIONAL and its close behavior OK or
INFORMATIONAL. Prints the counts per result of every report, then each case that passes on the
baseline and not through a proxy. Exit status 1 when there is such a case. `--unimplemented`
names cases (e.g. `filtered=12.*,13.*`: compression, when the proxy does not let the extension
be negotiated) that may be UNIMPLEMENTED through that proxy; they are counted, not failed.
(Python 3)"""
import fnmatch, json, os, sys
from collections import Counter

GOOD = {"OK", "NON-STRICT", "INFORMATIONAL"}
GOOD_CLOSE = {"OK", "INFORMATIONAL"}


def load(arg):
    name, _, path = arg.rpartition("=")
    name = name or os.path.basename(os.path.dirname(os.path.abspath(path)))
    report = json.load(open(path))
    # The agent NAME when the report has it (the upstream leg's one report holds
    # one agent per way), else the report's one agent.
    return name, report[name] if name in report else next(iter(report.values()))


def passes(case):
    return case["behavior"] in GOOD and case["behaviorClose"] in GOOD_CLOSE


def key(case_id):
    return [int(x) for x in case_id.split(".")]


def result(case):
    return f"{case['behavior']}/{case['behaviorClose']}" if case else "missing"


args = sys.argv[1:]
unimplemented = {}  # report name -> globs of case ids
while args and args[0] == "--unimplemented":
    name, _, globs = args[1].partition("=")
    unimplemented.setdefault(name, []).extend(globs.split(","))
    args = args[2:]


def excused(name, case_id, case):
    return (case is not None and case["behavior"] == "UNIMPLEMENTED"
            and any(fnmatch.fnmatchcase(case_id, g) for g in unimplemented.get(name, [])))




def cell(cases):
    """A README table cell: the count of each result, the cases that fail named."""
    counts = Counter(c["behavior"] for c in cases.values())
    order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
    parts = []
    for result in order + sorted(set(counts) - set(order)):
        if not counts[result]:
            continue
        text = f"{counts[result]} {result}"
        ids = sorted((k for k, c in cases.items() if c["behavior"] == result), key=key)
        if result == "UNIMPLEMENTED":
            text += " (" + ", ".join(sorted({k.split(".")[0] + ".\\*" for k in ids}, key=lambda s: int(s.split(".")[0]))) + ")"
        elif result not in ("OK", "NON-STRICT", "INFORMATIONAL") and len(ids) <= 4:
            text += f" ({', '.join(ids)})"
        parts.append(text)
    return ", ".join(parts)


reports = [load(arg) for arg in args]
for name, cases in reports:
    counts = Counter(c["behavior"] for c in cases.values())
    close = Counter(c["behaviorClose"] for c in cases.values())
    print(f"{name:>10}: {len(cases)} cases, behavior {dict(sorted(counts.items()))}, "
          f"close {dict(sorted(close.items()))}")

(base_name, base), others = reports[0], reports[1:]
regressions = 0
for name, cases in others:
    lost = [k for k in sorted(base, key=key) if passes(base[k]) and not (k in cases and passes(cases[k]))]
    allowed = [k for k in lost if excused(name, k, cases.get(k))]
    if allowed:
        print(f"\n{name}: {len(allowed)} case(s) UNIMPLEMENTED as expected "
              f"({', '.join(unimplemented[name])})")
    lost = [k for k in lost if k not in allowed]
    regressions += len(lost)
    if lost:
        print(f"\n{name}: {len(lost)} case(s) pass on {base_name} but not here:")
        for k in lost:
            print(f"  {k:<10} {base_name}: {result(base[k]):<28} {name}: {result(cases.get(k))}")
print("\nREADME table row: | " + f"{len(reports[0][1])} | "
      + " | ".join(cell(cases) for _, cases in reports) + " |")
if regressions == 0:
    print(f"\nevery case passing on {base_name} passes through "
          + ", ".join(name for name, _ in others))
sys.exit(1 if regressions else 0)
