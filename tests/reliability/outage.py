#!/usr/bin/env python3
"""PostgreSQL outages under load (tests/reliability/README.md): clients keep writing while
PostgreSQL is stopped and started again, then crashed and restarted (every connection dropped).

Proves: while the database is away every write is answered within the request deadline with 503
TEMPORARILY_UNAVAILABLE in MLflow's error shape (never a 500, never a hang), /health answers 503
saying why, writes succeed again without restarting mlkube-server, and every write answered 200
is still there afterwards.

  outage.py --server-bin BIN      (PG_BIN, PG_DIR, PG_PORT, MLKUBE_TEST_POSTGRES_URL from
                                   scripts/lib/postgres.sh: a cluster with its durability on)
"""

from __future__ import annotations

import argparse
import threading
import time
import urllib.parse

from harness import Postgres, Server, api, log, request, result, workdir

DEADLINE_S = 10.0  # the 5 s connection-acquire timeout plus slack


class Writer(threading.Thread):
    def __init__(self, idx: int, base: str, run_id: str, events: list, lock: threading.Lock):
        super().__init__(daemon=True)
        self.idx, self.base, self.run_id, self.events, self.lock = idx, base, run_id, events, lock
        self.stop = threading.Event()
        self.acked: dict[int, float] = {}

    def run(self):
        step = 0
        while not self.stop.is_set():
            step += 1
            value = step + self.idx / 10
            t = time.monotonic()
            try:
                status, body, took = request(self.base, "POST", "/api/2.0/mlflow/runs/log-metric",
                                             {"run_id": self.run_id, "key": f"w{self.idx}", "value": value,
                                              "timestamp": step, "step": step}, timeout=30)
                code = (body or {}).get("error_code") if isinstance(body, dict) else None
            except OSError as err:
                status, code, took = None, type(err).__name__, time.monotonic() - t
            if status == 200:
                self.acked[step] = value
            with self.lock:
                self.events.append((t, status, code, took))
            if status != 200:
                time.sleep(0.1)


def wait_until(pred, timeout: float) -> float | None:
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        if pred():
            return time.monotonic() - t
        time.sleep(0.05)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-bin", required=True)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    pg = Postgres()
    wd = workdir("outage")
    server = Server(args.server_bin, pg.create_database(), wd)
    server.start()
    exp = api(server.url, "POST", "mlflow/experiments/create", {"name": "outage"})["experiment_id"]
    run_id = api(server.url, "POST", "mlflow/runs/create", {"experiment_id": exp})["run"]["info"]["run_id"]
    events: list = []
    lock = threading.Lock()
    writers = [Writer(i, server.url, run_id, events, lock) for i in range(args.clients)]
    for w in writers:
        w.start()

    def writes_succeed() -> bool:
        try:
            return api(server.url, "POST", "mlflow/runs/set-tag", {"run_id": run_id, "key": "probe", "value": "x"},
                       timeout=DEADLINE_S) is not None
        except (OSError, RuntimeError):
            return False

    def health() -> tuple[int, str]:
        try:
            status, body, _ = request(server.url, "GET", "/health", timeout=DEADLINE_S)
            return status, str(body)
        except OSError as err:
            return 0, str(err)

    problems: list[str] = []
    recoveries: list[float] = []
    health_down = []
    time.sleep(2)
    for label, down in (("stop/start", lambda: pg.ctl("stop", "fast")),
                        ("crash/restart", lambda: pg.ctl("stop", "immediate"))):
        log(f"PostgreSQL {label} under load")
        down()
        time.sleep(1.5)
        status, why = health()
        health_down.append(status)
        if status != 503:
            problems.append(f"{label}: /health answered {status} while PostgreSQL was down: {why}")
        time.sleep(3)
        pg.ctl("start")
        took = wait_until(writes_succeed, 60)
        if took is None:
            problems.append(f"{label}: writes did not succeed within 60 s of PostgreSQL's start")
        else:
            recoveries.append(took)
            log(f"{label}: writes succeed {took:.2f} s after PostgreSQL is back")
        if health()[0] != 200:
            problems.append(f"{label}: /health not 200 after recovery")
        time.sleep(2)
    for w in writers:
        w.stop.set()
    for w in writers:
        w.join(timeout=60)

    statuses: dict[str, int] = {}
    slowest = 0.0
    for _, status, code, took in events:
        key = f"{status} {code}" if status != 200 else "200"
        statuses[key] = statuses.get(key, 0) + 1
        slowest = max(slowest, took)
        if status is None:
            problems.append(f"a request got no answer: {code} after {took:.1f} s")
        elif status >= 500 and (status != 503 or code != "TEMPORARILY_UNAVAILABLE"):
            problems.append(f"a request was answered {status} {code}")
    if slowest > DEADLINE_S:
        problems.append(f"the slowest request took {slowest:.1f} s (deadline {DEADLINE_S} s)")
    if statuses.get("503 TEMPORARILY_UNAVAILABLE", 0) == 0:
        problems.append("no write was answered 503 during the outages (did the outage happen?)")
    lost = 0
    for w in writers:
        q = urllib.parse.urlencode({"run_id": run_id, "metric_key": f"w{w.idx}", "max_results": 25000})
        got = {int(m["step"]): m["value"] for m in api(server.url, "GET", f"mlflow/metrics/get-history?{q}")
               .get("metrics", [])}
        lost += sum(1 for step, value in w.acked.items() if got.get(step) != value)
    if lost:
        problems.append(f"{lost} acknowledged writes lost")
    server.stop()
    if server.panicked():
        problems.append("the server log has a panic")
    for p in problems[:20]:
        log(f"PROBLEM {p}")
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    print(f"PostgreSQL outages: {len(events)} writes ({answers}), slowest {slowest:.2f} s, "
          f"recovered in {', '.join(f'{r:.2f} s' for r in recoveries)} without a restart, {lost} lost")
    result({"scenario": "pg-outage", "requests": len(events), "answers": statuses, "slowest_s": round(slowest, 2),
            "recovery_s": [round(r, 2) for r in recoveries], "lost": lost,
            "acked_checked": sum(len(w.acked) for w in writers), "problems": len(problems)},
           ok=not problems)


if __name__ == "__main__":
    main()
