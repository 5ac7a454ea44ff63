#!/usr/bin/env python3
"""Several replicas on one PostgreSQL database (tests/reliability/README.md): three mlkube-server
processes share the database and evaluate the same quality monitor every second.

Proves: each interval exactly one replica evaluates (the turns recorded in mlkube_schedules are an
interval apart, not three per interval); every state change of the monitor reaches its webhook
exactly once (deliveries counted by a receiver); when the replica that took the last turn is
killed with SIGKILL, another takes the next turn within one interval (plus one poll).

  replicas.py --server-bin BIN    (PG_* and MLKUBE_TEST_POSTGRES_URL as for outage.py)
"""

from __future__ import annotations

import argparse
import http.server
import json
import threading
import time

from harness import Postgres, Server, api, free_port, log, result, workdir

INTERVAL_S = 1


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self):
        self.deliveries: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.deliveries.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)

    def states(self) -> list[str]:
        with self.lock:
            return [d.get("state") for d in self.deliveries]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-bin", required=True)
    ap.add_argument("--replicas", type=int, default=3)
    args = ap.parse_args()
    pg = Postgres()
    backend = pg.create_database()
    dbname = backend.rsplit("/", 1)[1]
    wd = workdir("replicas")
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    flags = ["--monitoring-evaluation-interval", str(INTERVAL_S), "--monitoring-allow-private-webhooks"]
    servers = [Server(args.server_bin, backend, wd, flags, env={"HOSTNAME": f"replica-{i}"}, name=f"replica-{i}")
               for i in range(args.replicas)]
    for s in servers:
        s.start()
    base = servers[0].url
    problems: list[str] = []

    def turns() -> list[tuple[str, int]]:
        rows = pg.psql(dbname, "SELECT holder, claimed_at FROM mlkube_schedules WHERE job = 'monitoring'")
        return [(r[0], int(r[1])) for r in rows]

    def watch_turns(seconds: float) -> list[tuple[str, int]]:
        seen: list[tuple[str, int]] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for t in turns():
                if not seen or seen[-1] != t:
                    seen.append(t)
            time.sleep(0.05)
        return seen

    def predictions(n: int, correct: bool, tag: str) -> None:
        now = int(time.time() * 1000)
        ids = [f"{tag}-{i}" for i in range(n)]
        api(base, "POST", "mlkube/predictions/log-batch", {"predictions": [
            {"request_id": r, "model_name": "replicated", "model_version": "1", "timestamp": now, "inputs": {"x": 1},
             "outputs": 1 if correct else 0} for r in ids]})
        api(base, "POST", "mlkube/ground-truth/log-batch", {"ground_truth": [
            {"request_id": r, "actual": 1, "timestamp": now} for r in ids]})

    def expect_deliveries(n: int, what: str) -> None:
        end = time.monotonic() + 6 * INTERVAL_S
        while time.monotonic() < end and len(receiver.states()) < n:
            time.sleep(0.05)
        time.sleep(3 * INTERVAL_S)  # duplicates would arrive by now
        got = receiver.states()
        if len(got) != n:
            problems.append(f"{what}: {len(got)} webhook deliveries, want {n}: {got}")
        log(f"{what}: deliveries so far {got}")

    api(base, "POST", "mlkube/monitors/create", {
        "name": "accuracy-floor", "model_name": "replicated", "model_version": "1", "metric": "accuracy",
        "window": "1h", "threshold": 0.8, "min_samples": 10, "webhook_url": hook})
    predictions(20, True, "good")
    # Once per interval across the replicas: turns an interval apart, not one per replica.
    seen = watch_turns(5 * INTERVAL_S)
    gaps = [b[1] - a[1] for a, b in zip(seen, seen[1:])]
    holders = sorted({h for h, _ in seen})
    log(f"turns in 5 s: {len(seen)} by {holders}, gaps {gaps} ms")
    if len(seen) > 7 or any(g < INTERVAL_S * 1000 * 0.9 for g in gaps):
        problems.append(f"more than one evaluation per interval: {len(seen)} turns in 5 s, gaps {gaps} ms")

    predictions(40, False, "bad")  # accuracy 20/60 < 0.8: FIRING
    expect_deliveries(1, "OK -> FIRING")

    # Kill the replica that took the last turn; another must take the next one.
    holder, last = turns()[0]
    victim = next(s for s in servers if holder.startswith(s.name + "-"))
    log(f"killing {victim.name} (took the turn at {last})")
    victim.kill()
    after = watch_turns(4 * INTERVAL_S)
    taken = [(h, t) for h, t in after if t > last and not h.startswith(victim.name + "-")]
    handover_ms = taken[0][1] - last if taken else None
    log(f"next turn {handover_ms} ms after the killed replica's last one, by {taken[0][0] if taken else None}")
    if handover_ms is None or handover_ms > INTERVAL_S * 1000 * 2:
        problems.append(f"no other replica took over within two intervals: {after}")
    survivors = [s for s in servers if s is not victim]
    base = survivors[0].url
    predictions(400, True, "recovered")  # accuracy 420/460 > 0.8: RESOLVED
    expect_deliveries(2, "FIRING -> RESOLVED")

    states = receiver.states()
    duplicates = max(0, len(states) - 2)
    for s in survivors:
        s.stop()
    if any(s.panicked() for s in servers):
        problems.append("a server log has a panic")
    for p in problems:
        log(f"PROBLEM {p}")
    print(f"replicas: {args.replicas} on one PostgreSQL, {len(seen)} evaluations in 5 s, state changes 2, webhook "
          f"deliveries {len(states)} ({duplicates} duplicates), handover after SIGKILL {handover_ms} ms")
    result({"scenario": "replicas", "replicas": args.replicas, "turns_in_5s": len(seen), "deliveries": len(states),
            "state_changes": 2, "duplicates": duplicates, "handover_ms": handover_ms, "problems": len(problems)},
           ok=not problems)


if __name__ == "__main__":
    main()
