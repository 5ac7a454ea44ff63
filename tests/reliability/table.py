"""The reliability summary table (tests/reliability/run pipes `scenario|rc|seconds|RESULT json`
lines in): one row per scenario with the figures the README's table quotes."""

import json
import sys

COLUMNS = ("scenario", "result", "time", "cycles survived", "acked writes checked", "lost", "5xx",
           "duplicate notifications", "detail")


def row(line: str) -> tuple:
    name, rc, seconds, raw = line.rstrip("\n").split("|", 3)
    r = json.loads(raw or "{}")
    # sidecar_abuse.py's RESULT line has no "ok" key: its exit status alone says whether it passed.
    ok = rc == "0" and r.get("ok", True) is True
    cycles = f"{r['survived']}/{r['cycles']}" if "cycles" in r else "-"
    fivexx = r.get("status_5xx", r.get("answers", {}) and sum(
        v for k, v in r.get("answers", {}).items() if k.startswith("5") and not k.startswith("503")))
    detail = {
        "pg-outage": lambda: f"{r.get('answers')}, slowest {r.get('slowest_s')} s, recovered in {r.get('recovery_s')} s",
        "replicas": lambda: f"{r.get('replicas')} replicas, {r.get('turns_in_5s')} evaluations in 5 s, "
                            f"{r.get('deliveries')} deliveries for {r.get('state_changes')} changes, "
                            f"handover {r.get('handover_ms')} ms",
    }.get(r.get("scenario", ""), lambda: ", ".join(f"{k} {v}" for k, v in r.items()
                                                     if k not in ("ok", "scenario", "cycles", "survived",
                                                                  "acked_checked", "lost", "status_5xx")))()
    return (name, "ok" if ok else "FAIL", f"{seconds}s", cycles, str(r.get("acked_checked", "-")),
            str(r.get("lost", "-")), str(fivexx if fivexx != {} else "-"), str(r.get("duplicates", "-")), detail)


rows = [row(line) for line in sys.stdin if line.strip()]
widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]
for r in [COLUMNS, tuple("-" * w for w in widths), *rows]:
    print("  " + " | ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
