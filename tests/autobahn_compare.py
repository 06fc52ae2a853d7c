"""Compares an Autobahn fuzzingclient report with the committed expectation.

Fails when a case is missing, is not OK / NON-STRICT / INFORMATIONAL, or got worse than
the expected behaviour. Prints a one-line summary in the 'N passed, N failed' form.
"""
import json
import sys

RANK = {"OK": 0, "INFORMATIONAL": 0, "NON-STRICT": 1, "UNIMPLEMENTED": 2, "FAILED": 3}
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


def main(report_path, expected_path):
    report = json.load(open(report_path))
    (agent,) = report.keys()
    results = report[agent]
    expected = json.load(open(expected_path))
    failed = []
    for case, want in sorted(expected.items()):
        got = results.get(case)
        if got is None:
            failed.append("%s: missing from the report" % case)
            continue
        for key in ("behavior", "behaviorClose"):
            g = got[key]
            if g not in ACCEPTED:
                failed.append("%s: %s is %s" % (case, key, g))
            elif RANK.get(g, 3) > RANK.get(want[key], 3):
                failed.append("%s: %s regressed %s -> %s" % (case, key, want[key], g))
    extra = sorted(set(results) - set(expected))
    for case in extra:
        for key in ("behavior", "behaviorClose"):
            if results[case][key] not in ACCEPTED:
                failed.append("%s: %s is %s" % (case, key, results[case][key]))
    for line in failed:
        print("FAIL " + line)
    total = len(set(expected) | set(results))
    print("autobahn: %d passed, %d failed" % (total - len(failed), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[3] == "--write-expected":
        report = json.load(open(sys.argv[1]))
        (agent,) = report.keys()
        out = {c: {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
               for c, r in report[agent].items()}
        json.dump(out, open(sys.argv[2], "w"), indent=1, sort_keys=True)
        sys.exit(0)
    sys.exit(main(sys.argv[1], sys.argv[2]))
