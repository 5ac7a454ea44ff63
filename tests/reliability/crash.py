#!/usr/bin/env python3
"""Crash cycles: many clients write while mlkube-server is killed with SIGKILL at random moments
and restarted, N times, on SQLite or PostgreSQL (tests/reliability/README.md).

Clients log metrics, params, tags and log-batches to their own runs, predictions and ground truth
to the monitoring API, and stream artifact uploads. After every kill and restart:
  * every write answered 2xx is there with its exact value (cumulative over all cycles);
  * a log-batch (or prediction batch) that got no answer is there whole or not at all;
  * an upload killed mid-stream left nothing under its final name (a file there is complete);
  * SQLite: PRAGMA integrity_check is "ok".
Any 5xx answer or a panic in the server log fails the scenario.

  crash.py --server-bin BIN --backend sqlite|postgres [--cycles N] [--clients N] [--seed N]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import random
import sqlite3
import threading
import time
import urllib.parse

from harness import Postgres, Server, api, log, request, result, workdir

BATCH = 50  # metrics per log-batch
PRED_BATCH = 20  # predictions per prediction batch


class Ledger:
    """What the clients were told was written, and what got no answer."""

    def __init__(self):
        self.lock = threading.Lock()
        self.metrics: list[tuple[str, str, int, float]] = []  # run, key, step, value
        self.params: list[tuple[str, str, str]] = []
        self.tags: list[tuple[str, str, str]] = []
        self.unanswered_batches: list[tuple[str, list[tuple[str, int, float]], list[str], list[str]]] = []
        self.predictions: dict[str, int] = {}  # model_version -> acknowledged predictions
        self.unanswered_predictions: dict[str, int] = {}  # model_version -> unanswered batches
        self.labels: dict[str, int] = {}
        self.unanswered_labels: dict[str, int] = {}
        self.artifacts: dict[str, str] = {}  # path -> sha256 (acknowledged)
        self.unanswered_artifacts: dict[str, str] = {}
        self.status_5xx = 0
        self.status_other = 0


class Client(threading.Thread):
    def __init__(self, idx: int, run_id: str, ledger: Ledger, rng: random.Random):
        super().__init__(daemon=True)
        self.idx, self.run_id, self.ledger, self.rng = idx, run_id, ledger, rng
        self.base = ""
        self.stop = threading.Event()
        self.step = 0
        self.pred_seq = 0
        self.labelled_ids: list[str] = []

    def post(self, rpc: str, body) -> int | None:
        try:
            status, _, _ = request(self.base, "POST", f"/api/2.0/{rpc}", body, timeout=20)
        except OSError:
            return None
        if status >= 500:
            with self.ledger.lock:
                self.ledger.status_5xx += 1
        elif status != 200:
            with self.ledger.lock:
                self.ledger.status_other += 1
        return status

    def run(self):
        while not self.stop.is_set():
            op = self.rng.random()
            self.step += 1
            ts = int(time.time() * 1000)
            if op < 0.35:
                value = self.rng.random()
                st = self.post("mlflow/runs/log-metric", {"run_id": self.run_id, "key": f"single{self.idx}",
                                                          "value": value, "timestamp": ts, "step": self.step})
                if st == 200:
                    with self.ledger.lock:
                        self.ledger.metrics.append((self.run_id, f"single{self.idx}", self.step, value))
            elif op < 0.45:
                key, value = f"p{self.idx}-{self.step}", f"v{self.rng.getrandbits(40)}"
                st = self.post("mlflow/runs/log-parameter", {"run_id": self.run_id, "key": key, "value": value})
                if st == 200:
                    with self.ledger.lock:
                        self.ledger.params.append((self.run_id, key, value))
            elif op < 0.55:
                key, value = f"t{self.idx}-{self.step}", f"v{self.rng.getrandbits(40)}"
                st = self.post("mlflow/runs/set-tag", {"run_id": self.run_id, "key": key, "value": value})
                if st == 200:
                    with self.ledger.lock:
                        self.ledger.tags.append((self.run_id, key, value))
            elif op < 0.85:
                base_step = self.step * 1000
                metrics = [(f"batch{self.idx}", base_step + i, self.rng.random()) for i in range(BATCH)]
                params = [f"bp{self.idx}-{self.step}-{i}" for i in range(3)]
                tags = [f"bt{self.idx}-{self.step}-{i}" for i in range(3)]
                body = {"run_id": self.run_id,
                        "metrics": [{"key": k, "value": v, "timestamp": ts, "step": s} for k, s, v in metrics],
                        "params": [{"key": k, "value": k} for k in params],
                        "tags": [{"key": k, "value": k} for k in tags]}
                st = self.post("mlflow/runs/log-batch", body)
                with self.ledger.lock:
                    if st == 200:
                        self.ledger.metrics.extend((self.run_id, k, s, v) for k, s, v in metrics)
                        self.ledger.params.extend((self.run_id, k, k) for k in params)
                        self.ledger.tags.extend((self.run_id, k, k) for k in tags)
                    elif st is None:
                        self.ledger.unanswered_batches.append((self.run_id, metrics, params, tags))
            elif op < 0.95:
                version = str(self.idx)
                ids = [f"c{self.idx}-{self.pred_seq}-{i}" for i in range(PRED_BATCH)]
                self.pred_seq += 1
                st = self.post("mlkube/predictions/log-batch", {"predictions": [
                    {"request_id": r, "model_name": "crash", "model_version": version, "timestamp": ts,
                     "inputs": {"x": 1}, "outputs": 1} for r in ids]})
                with self.ledger.lock:
                    if st == 200:
                        self.ledger.predictions[version] = self.ledger.predictions.get(version, 0) + PRED_BATCH
                        self.labelled_ids.extend(ids)
                    elif st is None:
                        self.ledger.unanswered_predictions[version] = \
                            self.ledger.unanswered_predictions.get(version, 0) + 1
            else:
                if len(self.labelled_ids) < PRED_BATCH:
                    continue
                ids, self.labelled_ids = self.labelled_ids[:PRED_BATCH], self.labelled_ids[PRED_BATCH:]
                version = str(self.idx)
                st = self.post("mlkube/ground-truth/log-batch", {"ground_truth": [
                    {"request_id": r, "actual": 1, "timestamp": ts} for r in ids]})
                with self.ledger.lock:
                    if st == 200:
                        self.ledger.labels[version] = self.ledger.labels.get(version, 0) + PRED_BATCH
                    elif st is None:
                        self.ledger.unanswered_labels[version] = self.ledger.unanswered_labels.get(version, 0) + 1


class Uploader(threading.Thread):
    """Streams artifacts in small chunks (chunked transfer), so a kill often lands mid-upload."""

    def __init__(self, ledger: Ledger, cycle: int, rng: random.Random):
        super().__init__(daemon=True)
        self.ledger, self.cycle, self.rng = ledger, cycle, rng
        self.base = ""
        self.stop = threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            path = f"crash/c{self.cycle}/file{n}.bin"
            data = self.rng.randbytes(2 * 1024 * 1024)
            digest = hashlib.sha256(data).hexdigest()
            url = urllib.parse.urlsplit(self.base)
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
            try:
                conn.putrequest("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}")
                conn.putheader("Transfer-Encoding", "chunked")
                conn.putheader("Content-Type", "application/octet-stream")
                conn.endheaders()
                for i in range(0, len(data), 64 * 1024):
                    chunk = data[i:i + 64 * 1024]
                    conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    time.sleep(0.01)
                conn.send(b"0\r\n\r\n")
                status = conn.getresponse().status
            except OSError:
                status = None
            finally:
                conn.close()
            with self.ledger.lock:
                if status == 200:
                    self.ledger.artifacts[path] = digest
                elif status is None:
                    self.ledger.unanswered_artifacts[path] = digest
                    return
                elif status >= 500:
                    self.ledger.status_5xx += 1


def history(base: str, run_id: str, key: str) -> dict[int, float]:
    out: dict[int, float] = {}
    token = None
    while True:
        q = {"run_id": run_id, "metric_key": key, "max_results": 25000}
        if token:
            q["page_token"] = token
        page = api(base, "GET", "mlflow/metrics/get-history?" + urllib.parse.urlencode(q))
        for m in page.get("metrics", []):
            out[int(m["step"])] = float(m["value"])
        token = page.get("next_page_token")
        if not token:
            return out


def verify(base: str, ledger: Ledger, runs: list[str]) -> tuple[int, list[str]]:
    """(acknowledged writes checked, problems)."""
    problems: list[str] = []
    checked = 0
    data = {}
    for run_id in runs:
        run = api(base, "GET", f"mlflow/runs/get?run_id={run_id}")["run"]["data"]
        data[run_id] = ({p["key"]: p["value"] for p in run.get("params", [])},
                        {t["key"]: t["value"] for t in run.get("tags", [])})
    histories: dict[tuple[str, str], dict[int, float]] = {}

    def hist(run_id, key):
        if (run_id, key) not in histories:
            histories[(run_id, key)] = history(base, run_id, key)
        return histories[(run_id, key)]

    for run_id, key, step, value in ledger.metrics:
        checked += 1
        got = hist(run_id, key).get(step)
        if got != value:
            problems.append(f"metric {key} step {step} of run {run_id}: acknowledged {value}, found {got}")
    for run_id, key, value in ledger.params:
        checked += 1
        if data[run_id][0].get(key) != value:
            problems.append(f"param {key} of run {run_id}: acknowledged {value!r}, found {data[run_id][0].get(key)!r}")
    for run_id, key, value in ledger.tags:
        checked += 1
        if data[run_id][1].get(key) != value:
            problems.append(f"tag {key} of run {run_id}: acknowledged {value!r}, found {data[run_id][1].get(key)!r}")
    for run_id, metrics, params, tags in ledger.unanswered_batches:
        present = sum(1 for k, s, v in metrics if hist(run_id, k).get(s) == v)
        present += sum(1 for k in params if data[run_id][0].get(k) == k)
        present += sum(1 for k in tags if data[run_id][1].get(k) == k)
        if present not in (0, len(metrics) + len(params) + len(tags)):
            problems.append(f"unanswered log-batch of run {run_id} is partly stored: {present} of "
                            f"{len(metrics) + len(params) + len(tags)} rows")
    end = int(time.time() * 1000) + 60_000
    for version in sorted(set(ledger.predictions) | set(ledger.unanswered_predictions)):
        q = urllib.parse.urlencode({"model_name": "crash", "model_version": version, "window": "365d",
                                    "end_time": end})
        report = api(base, "GET", f"mlkube/quality/get?{q}")["quality"]
        acked, maybe = ledger.predictions.get(version, 0), ledger.unanswered_predictions.get(version, 0)
        extra = report["predictions"] - acked
        checked += acked
        if extra < 0 or extra % PRED_BATCH or extra > maybe * PRED_BATCH:
            problems.append(f"predictions of version {version}: {report['predictions']} stored, {acked} "
                            f"acknowledged, {maybe} batches unanswered")
        acked_l, maybe_l = ledger.labels.get(version, 0), ledger.unanswered_labels.get(version, 0)
        extra_l = report["labelled"] - acked_l
        checked += acked_l
        if extra_l < 0 or extra_l % PRED_BATCH or extra_l > maybe_l * PRED_BATCH:
            problems.append(f"ground truth of version {version}: {report['labelled']} labelled, {acked_l} "
                            f"acknowledged, {maybe_l} batches unanswered")
    for path, digest in list(ledger.artifacts.items()) + list(ledger.unanswered_artifacts.items()):
        acked = path in ledger.artifacts
        status, _, _ = request(base, "GET", f"/api/2.0/mlflow-artifacts/artifacts/{path}")
        if acked:
            checked += 1
        if status == 404 and not acked:
            continue
        url = urllib.parse.urlsplit(base)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
        conn.request("GET", f"/api/2.0/mlflow-artifacts/artifacts/{path}")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if resp.status != 200 or hashlib.sha256(body).hexdigest() != digest:
            problems.append(f"artifact {path} ({'acknowledged' if acked else 'unanswered'}): status {resp.status}, "
                            f"{len(body)} bytes that do not match what was sent")
    return checked, problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server-bin", required=True)
    ap.add_argument("--backend", choices=["sqlite", "postgres"], required=True)
    ap.add_argument("--cycles", type=int, default=6)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("MLKUBE_RELIABILITY_SEED", "0")) or None)
    args = ap.parse_args()
    seed = args.seed or random.randrange(1, 10**6)
    rng = random.Random(seed)
    log(f"crash cycles on {args.backend}: {args.cycles} cycles, {args.clients} clients, seed {seed}")
    wd = workdir(f"crash-{args.backend}")
    db_path = os.path.join(wd, "mlkube.db")
    backend = f"sqlite:///{db_path}" if args.backend == "sqlite" else Postgres().create_database()
    server = Server(args.server_bin, backend, wd, name="server")
    server.start()
    exp = api(server.url, "POST", "mlflow/experiments/create", {"name": "crash"})["experiment_id"]
    runs = [api(server.url, "POST", "mlflow/runs/create", {"experiment_id": exp, "start_time": 0})["run"]["info"]["run_id"]
            for _ in range(args.clients)]
    ledger = Ledger()
    clients = [Client(i, runs[i], ledger, random.Random(rng.random())) for i in range(args.clients)]
    problems: list[str] = []
    checked_total = 0
    integrity = "ok"
    survived = 0
    for cycle in range(1, args.cycles + 1):
        threads = []
        for c in clients:
            fresh = Client(c.idx, c.run_id, ledger, random.Random(rng.random()))
            fresh.step, fresh.pred_seq, fresh.labelled_ids = c.step + 1_000, c.pred_seq + 1_000, c.labelled_ids
            fresh.base = server.url
            threads.append(fresh)
        uploader = Uploader(ledger, cycle, random.Random(rng.random()))
        uploader.base = server.url
        for t in threads + [uploader]:
            t.start()
        time.sleep(rng.uniform(1.0, 2.5))
        server.kill()
        for t in threads + [uploader]:
            t.stop.set()
        for t in threads + [uploader]:
            t.join(timeout=30)
        clients = threads
        if args.backend == "sqlite":
            con = sqlite3.connect(db_path)
            integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
            con.close()
            if integrity != "ok":
                problems.append(f"cycle {cycle}: integrity_check says {integrity}")
        server.start()
        checked, found = verify(server.url, ledger, runs)
        checked_total += checked
        problems.extend(f"cycle {cycle}: {p}" for p in found)
        if not found:
            survived += 1
        log(f"cycle {cycle}: killed, restarted, {checked} acknowledged writes checked, {len(found)} problems")
    server.stop()
    if server.panicked():
        problems.append("the server log has a panic")
    if ledger.status_5xx:
        problems.append(f"{ledger.status_5xx} answers were 5xx")
    for p in problems[:20]:
        log(f"PROBLEM {p}")
    lost = sum(1 for p in problems if "acknowledged" in p)
    print(f"crash cycles ({args.backend}): {survived}/{args.cycles} cycles survived, {checked_total} acknowledged "
          f"writes checked, {lost} lost, {len(ledger.unanswered_batches)} unanswered batches all-or-nothing")
    result({"scenario": f"crash-{args.backend}", "cycles": args.cycles, "survived": survived,
            "acked_checked": checked_total, "lost": lost, "problems": len(problems),
            "status_5xx": ledger.status_5xx, "status_4xx": ledger.status_other, "seed": seed},
           ok=not problems and survived == args.cycles)


if __name__ == "__main__":
    main()
