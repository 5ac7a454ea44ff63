#!/usr/bin/env python3
"""Hostile requests against every HTTP route of mlkube-server (issue #18, point 4).

    hostile.py --server-bin target/debug/mlkube-server [--auth] [--workers N] [--keep] [--dump FILE]

Starts the given binary on 127.0.0.1 (a free port, a temporary SQLite database and artifact
directory, `--expose-prometheus`, a stand-in web UI build so `/` and `/static-files/` are routed),
seeds a little real data (an experiment, runs with metrics, params and tags, an artifact, a
registered model with versions and an alias, logged models, a monitor, predictions, ground truth, a
drift reference) so that requests naming real ids reach the code behind the id lookups, sends the
corpus, stops the server (SIGTERM, then SIGKILL) and reads its log for "panicked".

The route list is the server's own: the authorisation table `ROUTES` in
server/src/auth/permissions.rs, which `route_table_covers_every_registered_route`
(server/tests/api_auth.rs) holds equal to what the router registers. Every route of that table
needs an entry in `SPECS` below (its fields, their wire types, a valid request naming the seeded
data); a route without one, or an entry for a route the table no longer has, stops the run before
any request is sent, so the corpus cannot drift from the server.

The corpus (about 10 600 requests), per route and per URL prefix it is served under (the second
prefix of a route, `/ajax-api/…`, gets seven request-level cases only, its handler being the same):
- bodies: malformed JSON (`{`, `[`, trailing garbage), non-object JSON (`[]`, `"x"`, `1`, `null`),
  an empty body, a wrong or missing Content-Type, invalid UTF-8, deep nesting (100 000 `[`),
  a 20 MB body (once per body-taking handler), a 1 MB string in every string field;
- each known field with every wrong JSON type, huge numbers (1e400, -1e400, 2^63, -2^63-1, "NaN"),
  hostile strings (NUL, lone surrogates, SQL, `%FF%FE`), unknown fields, missing required fields;
- paging: max_results -1, 0, 10^12, 2^63; page tokens that are random base64, not base64, base64
  of non-JSON or of a hostile offset;
- lists of the wrong shape and absurd length (40 000 ids, 100 sort keys, 2000 key/value pairs),
  filters of 500 clauses and of 10 000 `IN` values, 20 000 datasets;
- artifact paths with `../`, `%2e%2e`, double encoding, backslashes, NUL, absolute paths, in body
  fields, query parameters and the proxy's URL path;
- GET routes get the same through their query string, including invalid UTF-8 (`%FF%FE`), repeated
  and `k[]` keys; path parameters get bogus ids and invalid UTF-8;
- every route with methods it does not serve, unknown paths, hostile headers (bad Content-Length,
  broken chunked encoding, huge headers), and GraphQL queries built to exhaust the parser.
With `--auth` the server runs MLflow's basic auth (its admin from the INI file, a random password)
and the corpus goes out three times: without credentials (the request-level cases on every route,
everything on the public ones), as a non-admin user with default permission READ (the
request-level cases and every case of the fields the permission checks read, AUTH_FIELDS) and as
admin (everything); malformed `Authorization` headers are among the framing cases.

Checks on every answer: status below 500; a 4xx carries MLflow's JSON error
(`{"error_code": "...", "message": "..."}` with string values and the status MLflow gives that
code); an answer came at all (a reset, a closed connection without an answer or a 30 s silence is
counted as a 5xx, as the proxy in front would answer 502/504). At the end the server must still
answer /health, must not have exited, and its log must hold no "panicked" (a crash counts as a
panic too).

Allowed exceptions, written down here and nowhere else:
- 501 NOT_IMPLEMENTED in MLflow's shape from the multipart upload routes and from artifact
  downloads of runs stored outside the proxy: MLflow answers exactly that (not counted as 5xx);
- `/static-files/<path>` 404 for a file the UI build does not have: MLflow's static handler
  answers a plain 404 too (a non-JSON 404 is allowed there, nowhere else);
- requests the HTTP layer (hyper) refuses before any route sees them: a request line or headers
  past its size limit (431 or 414) or bytes that are not HTTP (400), with an empty body, for the
  cases built to break HTTP framing only (marked `framing`).

Output: progress on stderr (and each failing request with its answer), a summary table on stdout,
and as the last stdout line `RESULT {"routes": R, "requests": N, "status_5xx": X,
"bad_error_shape": Y, "panics": P}` (R counts each route once per prefix it is served under).
Exit status 0 only when X, Y and P are all 0; on failure the working directory is kept with the
server log and failures.txt (every failing request). `--dump FILE` writes every request's route,
case, status, verdict, seconds and answer. Standard library only; about 20 s without `--auth` and
40 s with it against a debug build on an otherwise idle 2-core machine.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROUTE_TABLE = os.path.join(REPO, "server", "src", "auth", "permissions.rs")
PREFIXES = {"Root": [""], "V2": ["/api/2.0", "/ajax-api/2.0"], "V3": ["/api/3.0", "/ajax-api/3.0"]}
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE")
TIMEOUT = 30.0
ADMIN = ("admin", "hostile-admin-" + secrets.token_hex(6))
USER = ("hostile-user", "hostile-user-password")

# The status MLflow answers with each error code (reference: mlflow/protos/databricks.proto and
# mlflow/server/handlers.py); a 4xx whose code says otherwise is a bad error shape.
CODE_STATUS = {
    "INVALID_PARAMETER_VALUE": {400},
    "BAD_REQUEST": {400, 413},
    "RESOURCE_ALREADY_EXISTS": {400},
    "RESOURCE_DOES_NOT_EXIST": {404},
    "ENDPOINT_NOT_FOUND": {404, 405},
    "PERMISSION_DENIED": {403},
    "UNAUTHENTICATED": {401},
    "RESOURCE_EXHAUSTED": {429},
    "NOT_IMPLEMENTED": {501},
}


def log(msg: str) -> None:
    print(f"[hostile {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# === the route table ===

ROW = re.compile(r'^\s*r\((Root|V2|V3),\s*"([A-Z]+)",\s*"([^"]+)",\s*(\w+)')


def read_route_table(path: str = ROUTE_TABLE) -> list[tuple[str, str, str, str]]:
    """(scope, method, path, rule) of every row of `pub static ROUTES` in permissions.rs."""
    rows, inside = [], False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("pub static ROUTES"):
                inside = True
            elif inside and line.startswith("];"):
                break
            elif inside and (m := ROW.match(line)):
                rows.append((m.group(1), m.group(2), m.group(3), m.group(4)))
    if len(rows) < 100:
        raise SystemExit(f"hostile: read only {len(rows)} routes from {path}; has the table's layout changed?")
    return rows


# === a raw HTTP/1.1 client: one connection per request, bytes exactly as given ===


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class NoAnswer(Exception):
    """The connection was reset or closed, or stayed silent, before a whole answer came."""


def _parse(data: bytes) -> Answer | None:
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = data[:head_end].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise NoAnswer(f"not an HTTP answer: {lines[0][:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    rest = data[head_end + 4:]
    if status < 200 and status != 101:  # 100 Continue: the real answer follows
        return _parse(rest)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, pos = bytearray(), 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(rest[pos:eol].split(b";")[0] or b"0", 16)
            if size == 0:
                return Answer(status, headers, bytes(body))
            if len(rest) < eol + 2 + size + 2:
                return None
            body += rest[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
    if "content-length" in headers:
        n = int(headers["content-length"])
        return Answer(status, headers, rest[:n]) if len(rest) >= n else None
    return Answer(status, headers, rest)  # delimited by the close (read to the end first)


def http(port: int, method: str, target: bytes, headers: list[tuple[str, str]], body: bytes | None,
         timeout: float = TIMEOUT) -> Answer:
    head = [f"{method} ".encode() + target + b" HTTP/1.1", f"Host: 127.0.0.1:{port}".encode(), b"Connection: close"]
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        head.append(f"Content-Length: {len(body)}".encode())
    head += [f"{k}: {v}".encode("latin-1") for k, v in headers]
    out = memoryview(b"\r\n".join(head) + b"\r\n\r\n" + (body or b""))
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if len(out) <= 1 << 16:
        return _small(sock, out, timeout)
    sock.setblocking(False)
    received = bytearray()
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    sending, eof, reset = True, False, None
    try:
        # Read while writing: a server may answer (413, 401) before the body is all sent.
        while not eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoAnswer(f"no answer within {timeout:.0f} s")
            for _, events in sel.select(min(left, 1.0)):
                if events & selectors.EVENT_WRITE and sending:
                    try:
                        n = sock.send(out[:262144])
                        out = out[n:]
                    except (BrokenPipeError, ConnectionResetError):
                        out = out[:0]
                    if not out:
                        sending = False
                        sel.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError as err:
                        reset, eof = err, True
                        break
                    if not chunk:
                        eof = True
                        break
                    received += chunk
    finally:
        sel.close()
        sock.close()
    return _answer(received, reset)


def _answer(received: bytearray, reset: Exception | None) -> Answer:
    answer = _parse(bytes(received))
    if answer is None:
        why = "reset" if reset else "closed"
        raise NoAnswer(f"connection {why} after {len(received)} bytes of answer")
    return answer


def _small(sock: socket.socket, out: memoryview, timeout: float) -> Answer:
    """A request that fits the socket buffers: send it whole, then read to the close."""
    received, reset = bytearray(), None
    try:
        try:
            sock.sendall(out)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (and closed) before the request was all sent: read the answer
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except ConnectionResetError as err:
                reset = err
                break
            except TimeoutError:
                raise NoAnswer(f"no answer within {timeout:.0f} s") from None
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    return _answer(received, reset)


# === the seeded world ===


class Api:
    """Plain JSON calls for seeding, as admin when auth is on."""

    def __init__(self, port: int, auth: tuple[str, str] | None):
        self.port, self.auth = port, auth

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             ctype: str = "application/json") -> Any:
        headers = [("Content-Type", ctype)] if (body is not None or raw is not None) else []
        if self.auth:
            headers.append(("Authorization", basic(*self.auth)))
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        answer = http(self.port, method, path.encode(), headers, data)
        if answer.status != 200:
            raise RuntimeError(f"seeding {method} {path}: {answer.status} {answer.body[:300]!r}")
        return answer.json()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def seed(api: Api, auth: bool) -> dict[str, str]:
    """Real objects for the valid parts of requests; `doomed_*` ones are for the destructive routes."""
    p = "/api/2.0/mlflow"
    s: dict[str, str] = {}
    s["exp"] = api.call("POST", f"{p}/experiments/create", {"name": "hostile"})["experiment_id"]
    s["exp_name"] = "hostile"
    s["doomed_exp"] = api.call("POST", f"{p}/experiments/create", {"name": "hostile-doomed"})["experiment_id"]
    api.call("POST", f"{p}/experiments/set-experiment-tag", {"experiment_id": s["exp"], "key": "k", "value": "v"})

    def run(exp: str) -> str:
        return api.call("POST", f"{p}/runs/create", {"experiment_id": exp, "start_time": 1})["run"]["info"]["run_id"]

    s["run"], s["run2"], s["doomed_run"] = run(s["exp"]), run(s["exp"]), run(s["doomed_exp"])
    for r in (s["run"], s["run2"]):
        api.call("POST", f"{p}/runs/log-batch", {
            "run_id": r,
            "metrics": [{"key": "loss", "value": 1.0 / (i + 1), "timestamp": 1000 + i, "step": i} for i in range(20)],
            "params": [{"key": "lr", "value": "0.1"}],
            "tags": [{"key": "team", "value": "a"}],
        })
    s["artifact"] = f"{s['exp']}/{s['run']}/artifacts/model/MLmodel"
    s["doomed_artifact"] = f"{s['exp']}/{s['run']}/artifacts/doomed.txt"
    for path in (s["artifact"], s["doomed_artifact"], f"{s['exp']}/{s['run']}/artifacts/data/a.csv"):
        api.call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{path}", raw=b"artifact_path: model\n",
                 ctype="application/octet-stream")
    s["model"], s["doomed_model"], s["rename_model"] = "hostile-model", "hostile-doomed-model", "hostile-rename-model"
    for name in (s["model"], s["doomed_model"], s["rename_model"]):
        api.call("POST", f"{p}/registered-models/create", {"name": name, "tags": [{"key": "k", "value": "v"}]})
    for _ in range(3):
        api.call("POST", f"{p}/model-versions/create",
                 {"name": s["model"], "source": f"runs:/{s['run']}/model", "run_id": s["run"]})
    api.call("POST", f"{p}/model-versions/set-tag", {"name": s["model"], "version": "1", "key": "k", "value": "v"})
    api.call("POST", f"{p}/registered-models/alias", {"name": s["model"], "alias": "champion", "version": "1"})

    def logged_model(name: str) -> str:
        body = {"experiment_id": s["exp"], "name": name, "source_run_id": s["run"],
                "params": [{"key": "a", "value": "1"}], "tags": [{"key": "t", "value": "1"}]}
        return api.call("POST", f"{p}/logged-models", body)["model"]["info"]["model_id"]

    s["logged_model"], s["doomed_logged_model"] = logged_model("hostile-lm"), logged_model("hostile-doomed-lm")
    # Model quality monitoring.
    q = "/api/2.0/mlkube"
    now = int(time.time() * 1000)
    api.call("POST", f"{q}/predictions/log-batch", {"predictions": [
        {"request_id": f"r{i}", "model_name": "hostile-model", "model_version": "1", "timestamp": now - i * 1000,
         "inputs": {"x": i, "y": i * 2}, "outputs": {"probability": (i % 10) / 10}} for i in range(30)]})
    api.call("POST", f"{q}/ground-truth/log-batch", {"ground_truth": [
        {"request_id": f"r{i}", "actual": i % 2, "timestamp": now} for i in range(30)]})
    s["monitor_name"] = "hostile-monitor"
    s["monitor"] = api.call("POST", f"{q}/monitors/create", {
        "name": s["monitor_name"], "model_name": "hostile-model", "metric": "accuracy", "window": "1h",
        "threshold": 0.5})["monitor"]["monitor_id"]
    s["doomed_monitor"] = api.call("POST", f"{q}/monitors/create", {
        "name": "hostile-doomed-monitor", "model_name": "hostile-model", "metric": "accuracy", "window": "1h",
        "threshold": 0.5})["monitor"]["monitor_id"]
    for name in ("hostile-model", "hostile-doomed-ref"):
        api.call("POST", f"{q}/drift/reference/set",
                 {"model_name": name, "model_version": "1", "inputs": [{"x": i, "y": -i} for i in range(20)]})
    if auth:
        for user in (USER[0], "hostile-victim", "hostile-doomed-user"):
            api.call("POST", f"{p}/users/create", {"username": user, "password": USER[1]})
        api.call("POST", f"{p}/experiments/permissions/create",
                 {"experiment_id": s["exp"], "username": "hostile-victim", "permission": "READ"})
        api.call("POST", f"{p}/registered-models/permissions/create",
                 {"name": s["model"], "username": "hostile-victim", "permission": "READ"})
    return s


# === what every route takes ===
#
# Field types: s string, i int64, f double, b bool, ls repeated string, kv list of {key, value},
# objs list of messages, any any JSON, path an artifact path, tok a page token, max max_results,
# ids a list of ids (gets the 40 000-element list), filter a search filter, q a GraphQL query.


@dataclass
class Spec:
    fields: dict[str, str]
    base: Callable[[dict[str, str]], dict[str, Any]] = lambda s: {}
    # Path parameters: name -> seeded key (or a literal when not a key).
    path: dict[str, str] = field(default_factory=dict)


def _s(fields: str = "", base: Callable[[dict[str, str]], dict[str, Any]] = lambda s: {}, **path: str) -> Spec:
    parsed = dict(item.split(":") for item in fields.split()) if fields else {}
    return Spec(parsed, base, path)


RUN = "run_id:s run_uuid:s"
SEARCH = "filter:filter max_results:max order_by:ls page_token:tok"
MONITOR = ("name:s model_name:s model_version:s metric:s window:s threshold:f direction:s score_field:s "
           "positive_label:s decision_threshold:f min_samples:i webhook_url:s")
MODEL_LIST = "models:objs"

SPECS: dict[str, Spec] = {
    # probes and the UI
    "GET /health": _s(), "GET /version": _s(), "GET /metrics": _s(),
    "GET /mlflow/server-info": _s(),
    "GET /": _s(),
    "GET /static-files/{*path}": _s(path="static/js/main.abc123.js"),
    "GET /get-artifact": _s(f"{RUN} path:path",
                            lambda s: {"run_id": s["run"], "path": "model/MLmodel"}),
    "GET /model-versions/get-artifact": _s("name:s version:s path:path",
                                           lambda s: {"name": s["model"], "version": "1", "path": "MLmodel"}),
    "GET /graphql": _s("query:q operationName:s variables:any",
                       lambda s: {"query": "{ test(inputString: \"x\") { output } }"}),
    "POST /graphql": _s("query:q operationName:s variables:any",
                        lambda s: {"query": "query Q($id: String) { mlflowGetRun(input: {runId: $id}) "
                                            "{ run { info { runId } } } }", "variables": {"id": s["run"]}}),
    "POST /mlflow/experiments/search-datasets": _s("experiment_ids:ids", lambda s: {"experiment_ids": [s["exp"]]}),
    "GET /mlflow/logged-models/{model_id}/artifacts/directories": _s(
        "artifact_directory_path:path", model_id="logged_model"),
    "GET /mlflow/logged-models/{model_id}/artifacts/files": _s(
        "artifact_file_path:path", lambda s: {"artifact_file_path": "MLmodel"}, model_id="logged_model"),
    "GET /mlflow/gateway-proxy": _s(), "POST /mlflow/gateway-proxy": _s(),
    "POST /mlflow/traces/search": _s(), "POST /mlflow/traces/metrics": _s(),
    "GET /mlflow/datasets/search": _s(), "POST /mlflow/datasets/search": _s(),
    "GET /mlflow/scorers/list": _s(), "GET /mlflow/gateway/endpoints/list": _s(),
    "GET /mlflow/assistant/config": _s(), "GET /mlflow/assistant/providers": _s(),
    "GET /mlflow/ui-telemetry": _s(), "POST /mlflow/ui-telemetry": _s(),
    # experiments
    "POST /mlflow/experiments/create": _s("name:s artifact_location:path tags:kv",
                                          lambda s: {"name": "hostile-new", "tags": [{"key": "a", "value": "b"}]}),
    "GET /mlflow/experiments/get": _s("experiment_id:s", lambda s: {"experiment_id": s["exp"]}),
    "GET /mlflow/experiments/get-by-name": _s("experiment_name:s", lambda s: {"experiment_name": s["exp_name"]}),
    "POST /mlflow/experiments/search": _s(f"{SEARCH} view_type:s", lambda s: {"max_results": 10}),
    "GET /mlflow/experiments/search": _s(f"{SEARCH} view_type:s", lambda s: {"max_results": 10}),
    "POST /mlflow/experiments/update": _s("experiment_id:s new_name:s",
                                          lambda s: {"experiment_id": s["doomed_exp"], "new_name": "hostile-renamed"}),
    "POST /mlflow/experiments/delete": _s("experiment_id:s", lambda s: {"experiment_id": s["doomed_exp"]}),
    "POST /mlflow/experiments/restore": _s("experiment_id:s", lambda s: {"experiment_id": s["doomed_exp"]}),
    "POST /mlflow/experiments/set-experiment-tag": _s(
        "experiment_id:s key:s value:s", lambda s: {"experiment_id": s["exp"], "key": "k", "value": "v"}),
    "POST /mlflow/experiments/delete-experiment-tag": _s(
        "experiment_id:s key:s", lambda s: {"experiment_id": s["exp"], "key": "nope"}),
    # runs
    "POST /mlflow/runs/create": _s("experiment_id:s user_id:s run_name:s start_time:i tags:kv",
                                   lambda s: {"experiment_id": s["exp"], "start_time": 1}),
    "GET /mlflow/runs/get": _s(RUN, lambda s: {"run_id": s["run"]}),
    "POST /mlflow/runs/update": _s(f"{RUN} status:s end_time:i run_name:s",
                                   lambda s: {"run_id": s["run2"], "status": "RUNNING"}),
    "POST /mlflow/runs/delete": _s(RUN, lambda s: {"run_id": s["doomed_run"]}),
    "POST /mlflow/runs/restore": _s(RUN, lambda s: {"run_id": s["doomed_run"]}),
    "POST /mlflow/runs/search": _s(f"experiment_ids:ids run_view_type:s {SEARCH}",
                                   lambda s: {"experiment_ids": [s["exp"]], "max_results": 5}),
    "POST /mlflow/runs/log-metric": _s(
        f"{RUN} key:s value:f timestamp:i step:i model_id:s dataset_name:s dataset_digest:s",
        lambda s: {"run_id": s["run2"], "key": "m", "value": 1.5, "timestamp": 5, "step": 1}),
    "POST /mlflow/runs/log-parameter": _s(f"{RUN} key:s value:s",
                                          lambda s: {"run_id": s["run2"], "key": "p", "value": "1"}),
    "POST /mlflow/runs/set-tag": _s(f"{RUN} key:s value:s", lambda s: {"run_id": s["run2"], "key": "t", "value": "1"}),
    "POST /mlflow/runs/delete-tag": _s(f"{RUN} key:s", lambda s: {"run_id": s["run2"], "key": "nope"}),
    "POST /mlflow/runs/log-batch": _s(
        f"{RUN} metrics:objs params:kv tags:kv",
        lambda s: {"run_id": s["run2"], "metrics": [{"key": "b", "value": 1, "timestamp": 1, "step": 0}],
                   "params": [{"key": "bp", "value": "1"}], "tags": [{"key": "bt", "value": "1"}]}),
    "POST /mlflow/runs/log-model": _s(
        f"{RUN} model_json:s",
        lambda s: {"run_id": s["run2"], "model_json": json.dumps(
            {"artifact_path": "m", "flavors": {}, "utc_time_created": "2024-01-01", "run_id": s["run2"]})}),
    "POST /mlflow/runs/log-inputs": _s(
        f"{RUN} datasets:objs {MODEL_LIST}",
        lambda s: {"run_id": s["run2"], "datasets": [{"tags": [{"key": "context", "value": "train"}], "dataset": {
            "name": "d", "digest": "abc", "source_type": "local", "source": "{}"}}]}),
    "POST /mlflow/runs/outputs": _s(f"{RUN} {MODEL_LIST}",
                                    lambda s: {"run_id": s["run2"], "models": [{"model_id": s["logged_model"],
                                                                                "step": 1}]}),
    # metrics
    "GET /mlflow/metrics/get-history": _s(f"{RUN} metric_key:s page_token:tok max_results:max",
                                          lambda s: {"run_id": s["run"], "metric_key": "loss"}),
    "GET /mlflow/metrics/get-history-bulk-interval": _s(
        "run_ids:ids metric_key:s start_step:i end_step:i max_results:max",
        lambda s: {"run_ids": [s["run"], s["run2"]], "metric_key": "loss"}),
    "GET /mlflow/metrics/get-history-bulk": _s("run_id:ids metric_key:s max_results:max",
                                               lambda s: {"run_id": [s["run"]], "metric_key": "loss"}),
    "GET /mlflow/artifacts/list": _s(f"{RUN} path:path", lambda s: {"run_id": s["run"], "path": "model"}),
    # logged models
    "POST /mlflow/logged-models": _s(
        "experiment_id:s name:s model_type:s source_run_id:s params:kv tags:kv",
        lambda s: {"experiment_id": s["doomed_exp"], "name": "lm"}),
    "POST /mlflow/logged-models/search": _s(
        "experiment_ids:ids filter:filter max_results:max page_token:tok datasets:objs order_by:objs",
        lambda s: {"experiment_ids": [s["exp"]], "order_by": [{"field_name": "name", "ascending": False}]}),
    "GET /mlflow/logged-models/{model_id}": _s(model_id="logged_model"),
    "PATCH /mlflow/logged-models/{model_id}": _s("status:s", lambda s: {"status": "LOGGED_MODEL_READY"},
                                                  model_id="logged_model"),
    "DELETE /mlflow/logged-models/{model_id}": _s(model_id="doomed_logged_model"),
    "PATCH /mlflow/logged-models/{model_id}/tags": _s("tags:kv", lambda s: {"tags": [{"key": "x", "value": "y"}]},
                                                       model_id="logged_model"),
    "DELETE /mlflow/logged-models/{model_id}/tags/{key}": _s(model_id="logged_model", key="nope"),
    "POST /mlflow/logged-models/{model_id}/params": _s("params:kv", lambda s: {"params": [{"key": "p2",
                                                                                         "value": "1"}]},
                                                        model_id="logged_model"),
    # registered models
    "POST /mlflow/registered-models/create": _s("name:s description:s tags:kv", lambda s: {"name": "hostile-new"}),
    "GET /mlflow/registered-models/get": _s("name:s", lambda s: {"name": s["model"]}),
    "POST /mlflow/registered-models/rename": _s(
        "name:s new_name:s", lambda s: {"name": s["rename_model"], "new_name": "hostile-renamed-model"}),
    "PATCH /mlflow/registered-models/update": _s("name:s description:s",
                                                 lambda s: {"name": s["model"], "description": "d"}),
    "DELETE /mlflow/registered-models/delete": _s("name:s", lambda s: {"name": s["doomed_model"]}),
    "GET /mlflow/registered-models/search": _s(SEARCH, lambda s: {"max_results": 10}),
    "POST /mlflow/registered-models/get-latest-versions": _s("name:s stages:ls", lambda s: {"name": s["model"]}),
    "GET /mlflow/registered-models/get-latest-versions": _s("name:s stages:ls", lambda s: {"name": s["model"]}),
    "POST /mlflow/registered-models/set-tag": _s("name:s key:s value:s",
                                                 lambda s: {"name": s["model"], "key": "k", "value": "v"}),
    "DELETE /mlflow/registered-models/delete-tag": _s("name:s key:s", lambda s: {"name": s["model"], "key": "nope"}),
    "POST /mlflow/registered-models/alias": _s("name:s alias:s version:s",
                                               lambda s: {"name": s["model"], "alias": "b", "version": "2"}),
    "GET /mlflow/registered-models/alias": _s("name:s alias:s", lambda s: {"name": s["model"], "alias": "champion"}),
    "DELETE /mlflow/registered-models/alias": _s("name:s alias:s", lambda s: {"name": s["model"], "alias": "nope"}),
    # model versions
    "POST /mlflow/model-versions/create": _s(
        "name:s source:path run_id:s run_link:s model_id:s description:s tags:kv",
        lambda s: {"name": s["model"], "source": f"runs:/{s['run']}/model", "run_id": s["run"]}),
    "GET /mlflow/model-versions/get": _s("name:s version:s", lambda s: {"name": s["model"], "version": "1"}),
    "PATCH /mlflow/model-versions/update": _s("name:s version:s description:s",
                                              lambda s: {"name": s["model"], "version": "1", "description": "d"}),
    "DELETE /mlflow/model-versions/delete": _s("name:s version:s", lambda s: {"name": s["model"], "version": "3"}),
    "GET /mlflow/model-versions/search": _s(SEARCH, lambda s: {"filter": f"name='{s['model']}'"}),
    "POST /mlflow/model-versions/transition-stage": _s(
        "name:s version:s stage:s archive_existing_versions:b",
        lambda s: {"name": s["model"], "version": "2", "stage": "Staging", "archive_existing_versions": False}),
    "GET /mlflow/model-versions/get-download-uri": _s("name:s version:s",
                                                      lambda s: {"name": s["model"], "version": "1"}),
    "POST /mlflow/model-versions/set-tag": _s(
        "name:s version:s key:s value:s", lambda s: {"name": s["model"], "version": "1", "key": "k", "value": "v"}),
    "DELETE /mlflow/model-versions/delete-tag": _s(
        "name:s version:s key:s", lambda s: {"name": s["model"], "version": "1", "key": "nope"}),
    # the artifact proxy
    "GET /mlflow-artifacts/artifacts": _s("path:path", lambda s: {"path": f"{s['exp']}/{s['run']}/artifacts"}),
    "GET /mlflow-artifacts/artifacts/": _s("path:path", lambda s: {"path": s["exp"]}),
    "GET /mlflow-artifacts/artifacts/{*path}": _s(path="artifact"),
    "PUT /mlflow-artifacts/artifacts/{*path}": _s(path="artifact"),
    "DELETE /mlflow-artifacts/artifacts/{*path}": _s(path="doomed_artifact"),
    "POST /mlflow-artifacts/mpu/create/{*path}": _s("path:path size:i", path="artifact"),
    "POST /mlflow-artifacts/mpu/complete/{*path}": _s("path:path upload_id:s parts:objs", path="artifact"),
    "POST /mlflow-artifacts/mpu/abort/{*path}": _s("path:path upload_id:s", path="artifact"),
    # users and permissions (basic auth)
    "POST /mlflow/users/create": _s("username:s password:s",
                                    lambda s: {"username": "hostile-new-user", "password": "long-enough-pw"}),
    "GET /mlflow/users/get": _s("username:s", lambda s: {"username": USER[0]}),
    "GET /mlflow/users/current": _s(),
    "GET /mlflow/users/list": _s(),
    "PATCH /mlflow/users/update-password": _s(
        "username:s password:s current_password:s",
        lambda s: {"username": "hostile-victim", "password": USER[1]}),
    "PATCH /mlflow/users/update-admin": _s("username:s is_admin:b",
                                           lambda s: {"username": "hostile-victim", "is_admin": False}),
    "DELETE /mlflow/users/delete": _s("username:s", lambda s: {"username": "hostile-doomed-user"}),
    **{f"{m} /mlflow/experiments/permissions/{op}": _s(
        "experiment_id:s username:s permission:s",
        lambda s: {"experiment_id": s["exp"], "username": "hostile-victim", "permission": "READ"})
       for m, op in (("POST", "create"), ("GET", "get"), ("PATCH", "update"), ("DELETE", "delete"))},
    **{f"{m} /mlflow/registered-models/permissions/{op}": _s(
        "name:s username:s permission:s",
        lambda s: {"name": s["model"], "username": "hostile-victim", "permission": "READ"})
       for m, op in (("POST", "create"), ("GET", "get"), ("PATCH", "update"), ("DELETE", "delete"))},
    # model quality monitoring
    "POST /mlkube/predictions/log-batch": _s("predictions:objs", lambda s: {"predictions": [
        {"request_id": "h1", "model_name": "hostile-model", "model_version": "1", "inputs": {"x": 1},
         "outputs": {"probability": 0.5}}]}),
    "POST /mlkube/ground-truth/log-batch": _s("ground_truth:objs", lambda s: {"ground_truth": [
        {"request_id": "h1", "actual": 1}]}),
    "GET /mlkube/quality/get": _s(
        "model_name:s model_version:s window:s task:s score_field:s positive_label:s threshold:f end_time:i drift:b",
        lambda s: {"model_name": "hostile-model", "window": "1h", "drift": "true"}),
    "GET /mlkube/monitors/list": _s("model_name:s"),
    "GET /mlkube/monitors/get": _s("monitor_id:s name:s", lambda s: {"monitor_id": s["monitor"]}),
    "POST /mlkube/monitors/evaluate": _s("monitor_id:s name:s", lambda s: {"monitor_id": s["monitor"]}),
    "POST /mlkube/monitors/create": _s(MONITOR, lambda s: {
        "name": "hostile-new-monitor", "model_name": "hostile-model", "metric": "accuracy", "window": "1h",
        "threshold": 0.5}),
    "PATCH /mlkube/monitors/update": _s(f"monitor_id:s {MONITOR}",
                                        lambda s: {"monitor_id": s["monitor"], "threshold": 0.25}),
    "DELETE /mlkube/monitors/delete": _s("monitor_id:s name:s", lambda s: {"monitor_id": s["doomed_monitor"]}),
    "GET /mlkube/drift/reference/get": _s("model_name:s model_version:s",
                                          lambda s: {"model_name": "hostile-model", "model_version": "1"}),
    "POST /mlkube/drift/reference/set": _s("model_name:s model_version:s inputs:objs", lambda s: {
        "model_name": "hostile-model", "model_version": "2", "inputs": [{"x": 1}, {"x": 2}]}),
    "DELETE /mlkube/drift/reference/delete": _s("model_name:s model_version:s",
                                                lambda s: {"model_name": "hostile-doomed-ref", "model_version": "1"}),
}


# === building the corpus ===


@dataclass
class Case:
    route: str          # "METHOD template" as in the table (with its prefix)
    area: str           # for the summary
    name: str           # what is hostile about it
    method: str
    target: bytes
    headers: list[tuple[str, str]]
    body: bytes | None
    framing: bool = False       # built to break HTTP framing: hyper's bare refusal allowed
    static_404: bool = False    # a plain 404 from the UI's static files is allowed
    field: str | None = None    # the request field it makes hostile (None: the request as a whole)
    public: bool = False        # the route needs no credentials


class Raw:
    """A JSON token written verbatim (numbers JSON libraries refuse to write, broken escapes)."""

    def __init__(self, text: str):
        self.text = text


def render(value: Any) -> bytes:
    raws: list[str] = []

    def swap(v: Any) -> Any:
        if isinstance(v, Raw):
            raws.append(v.text)
            return f"\u0001RAW{len(raws) - 1}\u0001"
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(value))
    for i, raw in enumerate(raws):
        text = text.replace(f'"\\u0001RAW{i}\\u0001"', raw)
    return text.encode()


MB = "x" * (1 << 20)
BIG_NUMBERS = ["1e400", "-1e400", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
               "-0.0", '"NaN"', '"-Infinity"', '"1e400"', '" 12 "']
WRONG_TYPES: list[Any] = ["x", -1, 1.5, True, None, {"a": 1}, [], ["x"], [None]]
HOSTILE_STRINGS: list[Any] = ["", "\u0000", Raw('"\\ud800"'), "' OR 1=1 --", "%FF%FE", "\u202e\U0001f600\u0301", MB,
                              Raw('"' + "\\u0000" * 1000 + '"')]
TRAVERSALS = ["../../../../etc/passwd", "..", "../", "%2e%2e/%2e%2e/etc/passwd", "%252e%252e/%252e%252e/etc",
              "..%2f..%2fetc%2fpasswd", "..\\..\\windows", "/etc/passwd", "a/../../b", "a\u0000b", "./.",
              "a//b", "file:///etc/passwd", "models/../../x", "%00", "%"]
PAGE_SIZES: list[Any] = [-1, 0, 10 ** 12, Raw("9223372036854775808"), "abc", 1.5, "-5", " 7 "]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


PAGE_TOKENS = ["!!!not-base64!!!", "YQ", b64(secrets.token_bytes(48)), b64(b"not json"), b64(b"[1,2]"),
               b64(b'{"offset": -1}'), b64(b'{"offset": 1e400}'), b64(b'{"offset": "7"}'),
               b64(b'{"offset": 18446744073709551615}'), b64(b'{"offset": 9223372036854775807}'),
               b64(b'{"offset": 9223372036854775808}'), b64(b'{"offset": 4294967296000}'),
               b64(b'{"offset": 1.5}'), b64(b'{"offset": null}'), b64(b'\xff\xfe{"offset": 1}'),
               b64(b'{' * 10000)]
FILTERS = ["", "(", "metrics.loss > ", "name = 'x' AND", "attributes.x LIKE '%", "a" * 20000,
           "params.p = '" + "\u0000" + "'", "tags.`a` = 'b'", "metrics.loss > 1e400",
           "metrics.loss > 99999999999999999999999999", " AND ".join(["metrics.loss > 1"] * 2000),
           "name IN (" + ",".join(["'x'"] * 5000) + ")", " AND ".join(
               [f"metrics.m{i} > 1" for i in range(200)] + [f"params.p{i} = 'x'" for i in range(150)]
               + [f"tags.t{i} != 'y'" for i in range(149)] + ["name LIKE '%x%'"]),
           "attributes.run_id IN (" + ",".join(f"'{i}'" for i in range(10000)) + ")", "run_id = '\ud800'".encode("utf-8", "surrogatepass").decode(
               "latin-1"), "name = 'a' OR name = 'b'"]
GQL = ["{" * 100000, "query {" + " a {" * 3000 + " }" * 3000 + "}", "{ " + "a " * 200000 + "}",
       "fragment A on Query { ...A } { ...A }",
       # fan-out of fragment spreads without fields
       "fragment F on Query { " + "...G " * 50 + "} fragment G on Query { " + "...H " * 50 + "} "
       "fragment H on Query { " + "...I " * 50 + "} fragment I on Query { " + "...J " * 50 + "} "
       "fragment J on Query { test { output } } { ...F }",
       "query { mlflowGetRun(input: {runId: \"" + "x" * 100000 + "\"}) { run { info { runId } } } }",
       "query($a: Int) { test(inputString: $a) { output } }", "{ __schema { types { name } } }",
       "subscription { x }", "mutation { testMutation(inputString: \"x\") { output } }",
       "query { " + " ".join(f"a{i}: test(inputString: \"x\") {{ output }}" for i in range(500)) + " }",
       "query { mlflowSearchRuns(input: {experimentIds: [" + ",".join(['"1"'] * 40000) + "]}) { runs { info { runId }"
       " } } }"]


def typed_values(t: str) -> list[tuple[str, Any]]:
    """(label, value) pairs for a field of type `t` in a JSON body."""
    vals: list[tuple[str, Any]] = [(f"type:{json.dumps(v)[:12]}", v) for v in WRONG_TYPES]
    if t in ("i", "f", "max", "b"):
        vals += [(f"num:{n[:14]}", Raw(n)) for n in BIG_NUMBERS]
    if t in ("s", "path", "filter", "tok", "q"):
        vals += [(f"num:{n[:14]}", Raw(n)) for n in BIG_NUMBERS[:3]]
        vals += [(f"str:{i}", v) for i, v in enumerate(HOSTILE_STRINGS)]
    if t == "path":
        vals += [(f"traversal:{p[:20]}", p) for p in TRAVERSALS]
    if t == "tok":
        vals += [(f"token:{i}", p) for i, p in enumerate(PAGE_TOKENS)]
    if t == "max":
        vals += [(f"page-size:{i}", v) for i, v in enumerate(PAGE_SIZES)]
    if t == "filter":
        vals += [(f"filter:{i}", v) for i, v in enumerate(FILTERS)]
    if t == "q":
        vals += [(f"graphql:{i}", v) for i, v in enumerate(GQL)]
    if t in ("ls", "ids"):
        vals += [("list:bad-items", [{}, [], None, True]), ("list:1MB-item", [MB]), ("list:nested", [[["x"]]]),
                 ("list:traversal", TRAVERSALS), ("list:big-numbers", [Raw(n) for n in BIG_NUMBERS])]
    if t == "ls":
        vals += [(f"list:order-by-{n}", [f"{kind}.k{i}" for i in range(n // 3 + 1) for kind in ("metrics", "params", "tags")]
                  [:n]) for n in (16, 31, 100)]
    if t == "ids":
        vals += [("list:40000", [str(i) for i in range(40000)]), ("list:10000", [str(i) for i in range(10000)]), ("list:101", ["1"] * 101),
                 ("list:21", ["1"] * 21), ("list:empty-strings", ["", ""])]
    if t in ("kv", "objs"):
        vals += [("objs:wrong-fields", [{"key": {}, "value": []}]), ("objs:nulls", [{"key": None, "value": None}]),
                 ("objs:numbers", [{"key": Raw("1e400"), "value": Raw("-1e400")}]),
                 ("objs:1MB", [{"key": MB, "value": MB}]), ("objs:hostile-key", [{"key": "../x", "value": "\u0000"}]),
                 ("objs:2000", [{"key": f"k{i}", "value": "v"} for i in range(2000)]),
                 ("objs:deep", [Raw("[" * 5000 + "]" * 5000)]), ("objs:mixed", [{"key": "a"}, 1, "x", None])]
    if t == "objs":
        vals += [(f"objs:sort-{n}", [{"field_name": f"metrics.m{i}", "ascending": i % 2 == 0,
                                      "dataset_name": f"d{i % 3}"} for i in range(n)]) for n in (32, 100)]
        vals += [(f"objs:datasets-{n}", [{"dataset_name": f"d{i}", "dataset_digest": f"x{i}"} for i in range(n)])
                 for n in (10000, 20000)]
    if t == "objs":
        vals += [("objs:every-type", [{k: v for k, v in zip(
            ["key", "value", "timestamp", "step", "request_id", "model_name", "model_version", "inputs", "outputs",
             "actual", "dataset", "tags", "model_id", "field_name", "ascending", "dataset_name", "name", "digest"],
            [Raw("1e400"), {}, Raw("-9223372036854775809"), "NaN", [], 1, True, Raw("[" * 200 + "]" * 200),
             Raw('{"a": ' * 200 + "1" + "}" * 200), {"x": 1}, "x", {}, [], 5, "maybe", 1.5, None, 7])}]),
                 ("objs:timestamps", [{"key": "k", "value": 1, "timestamp": Raw("-1"), "step": Raw("1e400"),
                                       "request_id": "r", "model_name": "m", "model_version": "1",
                                       "outputs": 1, "actual": 1}]),
                 ("objs:dataset", [{"dataset": {"name": MB, "digest": "x" * 37, "source_type": None,
                                                "source": {}, "schema": [], "profile": 1}}])]
    if t == "any":
        vals += [("any:deep", Raw("[" * 5000 + "]" * 5000)), ("any:big", Raw("1e400")), ("any:1MB", MB)]
    return vals


def query_values(t: str) -> list[tuple[str, str]]:
    """(label, raw query-string value) pairs; values are put in the URL as they are (percent escapes kept)."""
    vals = [("empty", ""), ("utf8:%FF%FE", "%FF%FE"), ("utf8:%C0%AF", "%C0%AF"), ("nul", "%00"),
            ("60KB", "a" * 60000), ("1MB", "a" * (1 << 20)), ("pct", "%zz%"), ("plus", "+%2B+"),
            ("sql", urllib.parse.quote("' OR 1=1 --")), ("unicode", urllib.parse.quote("\u202e\U0001f600")),
            ("json", urllib.parse.quote('{"a": 1}'))]
    vals += [(f"num:{n}", urllib.parse.quote(n)) for n in
             ("1e400", "-1e400", "9223372036854775808", "-9223372036854775809", "NaN", "1.5", "true")]
    if t == "path":
        vals += [(f"traversal:{p[:20]}", urllib.parse.quote(p, safe="%")) for p in TRAVERSALS]
    if t == "tok":
        vals += [(f"token:{i}", urllib.parse.quote(p)) for i, p in enumerate(PAGE_TOKENS)]
    if t == "max":
        vals += [(f"page-size:{v}", v) for v in ("-1", "0", str(10 ** 12), str(2 ** 63), "abc")]
    if t == "filter":
        vals += [(f"filter:{i}", urllib.parse.quote(f, safe="")) for i, f in enumerate(FILTERS) if len(f) < 60000]
    if t == "q":
        vals += [(f"graphql:{i}", urllib.parse.quote(q, safe="")) for i, q in enumerate(GQL) if len(q) < 300000]
    return vals


def encode_query(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        for item in (v if isinstance(v, list) else [v]):
            text = item if isinstance(item, str) else json.dumps(item)
            parts.append(f"{urllib.parse.quote(k)}={urllib.parse.quote(text, safe='')}")
    return "&".join(parts)


JSON = [("Content-Type", "application/json")]
# What the second prefix of a route (its /ajax-api twin, the same handler) is sent.
TWIN_CASES = {"valid", "malformed:{", "non-object:[]", "empty", "content-type:text", "deep:[", "body-on-get"}


def area_of(path: str) -> str:
    segments = [s for s in path.split("/") if s and s not in ("mlflow", "mlkube")]
    if not segments:
        return "/"
    if segments[0] in ("experiments", "registered-models") and "permissions" in segments:
        return "permissions"
    return segments[0].split("?")[0]


def fill_path(template: str, spec: Spec, seeded: dict[str, str]) -> str:
    path = template
    for name, key in spec.path.items():
        value = seeded.get(key, key)
        path = path.replace("{*path}" if name == "path" else f"{{{name}}}", value)
    return path


def served_routes(port: int, routes: list[tuple[str, str, str, str]], seeded: dict[str, str],
                  auth: tuple[str, str] | None) -> set[str]:
    """The "METHOD /prefix/template" the server really serves: the table names every prefix of a
    scope, but some routes are upstream's `/ajax-api` ones only, and the users and permissions
    routes exist with basic auth only. A route answers TRACE (which none serves) with 405."""
    headers = [("Authorization", basic(*auth))] if auth else []
    served = set()
    for scope, method, template, _ in routes:
        spec = SPECS[f"{method} {template}"]
        for prefix in PREFIXES[scope]:
            path = prefix + fill_path(template, spec, seeded)
            if http(port, "TRACE", path.encode(), headers, None).status == 405:
                served.add(f"{method} {prefix}{template}")
    return served


def build_cases(routes: list[tuple[str, str, str, str]], seeded: dict[str, str], served: set[str]) -> list[Case]:
    """The whole corpus over `routes` (scope, method, path, rule). A route gets everything under the
    first prefix that serves it, the request-level TWIN_CASES under its others."""
    cases: list[Case] = []
    seen_paths: dict[str, set[str]] = defaultdict(set)
    big_done: set[str] = set()
    for scope, method, template, rule in routes:
        spec = SPECS[f"{method} {template}"]
        prefixes = PREFIXES[scope]
        primary = next((p for p in prefixes if f"{method} {p}{template}" in served), prefixes[0])
        for prefix in prefixes:
            route = f"{method} {prefix}{template}"
            area = area_of(template)
            path = prefix + fill_path(template, spec, seeded)
            seen_paths[prefix + template].add(method)
            base = spec.base(seeded)
            twin = prefix != primary
            is_static = template.startswith("/static-files")

            def add(name: str, m: str = method, target: str | bytes = path, headers=None, body: bytes | None = None,
                    framing: bool = False, field: str | None = None) -> None:
                if twin and name not in TWIN_CASES:
                    return
                t = target.encode("latin-1") if isinstance(target, str) else target
                cases.append(Case(route, area, name, m, t, headers if headers is not None else [], body, framing,
                                  is_static, field, rule == "Public"))

            takes_body = method in BODY_METHODS and not template.startswith("/mlflow-artifacts/artifacts/")
            valid_q = encode_query(base)
            if method == "GET" or method == "DELETE" and not takes_body:
                add("valid", target=f"{path}?{valid_q}" if valid_q else path)
            if takes_body:
                add("valid", headers=JSON, body=render(base))
                # the shape of the body
                for name, raw in [("malformed:{", b"{"), ("malformed:[", b"["), ("malformed:trailing",
                                                                               render(base) + b" garbage"),
                                  ("malformed:two-objects", b"{}{}"), ("non-object:[]", b"[]"),
                                  ("non-object:string", b'"x"'), ("non-object:1", b"1"), ("non-object:null", b"null"),
                                  ("non-object:true", b"true"), ("double-encoded:bad", b'"{\\"a\\": "'),
                                  ("double-encoded:array", b'"[1]"'), ("empty", b""), ("whitespace", b" \r\n\t "),
                                  ("utf8:bytes", b'{"name": "\xff\xfe", "\xc0\xaf": 1}'),
                                  ("utf8:bom", b"\xef\xbb\xbf" + render(base)), ("nul", b"\x00"),
                                  ("deep:[", b"[" * 100000), ("deep:{", b'{"a":' * 100000),
                                  ("deep:string", b'"' + b"[" * 100000 + b'"')]:
                    add(name, headers=JSON, body=raw)
                add("content-type:missing", body=render(base))
                add("content-type:text", headers=[("Content-Type", "text/plain")], body=render(base))
                add("content-type:form", headers=[("Content-Type", "application/x-www-form-urlencoded")],
                    body=encode_query(base).encode())
                add("content-type:json-ish", headers=[("Content-Type", "application/jsonx")], body=render(base))
                add("content-type:charset", headers=[("Content-Type", "application/json; charset=latin-1")],
                    body=render(base))
                add("content-type:gzip", headers=JSON + [("Content-Encoding", "gzip")], body=b"\x1f\x8b\x08\x00garbage")
                add("query-instead-of-body", target=f"{path}?{valid_q}")
                handler = template if not twin else None
                if handler and handler not in big_done:
                    big_done.add(handler)
                    add("body:20MB", headers=JSON, body=b'{"a": "' + b"x" * (20 << 20) + b'"}')
            if twin:
                continue
            # the fields, one at a time, on a valid request
            if method == "GET" or (method == "DELETE" and not takes_body):
                for fname, t in spec.fields.items():
                    for label, value in query_values(t):
                        q = dict(base)
                        q.pop(fname, None)
                        rest = encode_query(q)
                        target = f"{path}?{rest + '&' if rest else ''}{urllib.parse.quote(fname)}={value}"
                        add(f"{fname}={label}", target=target, framing=len(target) > 65000, field=fname)
                    add(f"{fname}:repeated", target=f"{path}?{valid_q}&{fname}=a&{fname}=b", field=fname)
                    add(f"{fname}:brackets", target=f"{path}?{fname}[]=a&{fname}[0]=b&{fname}[x]=c", field=fname)
                    q = dict(base)
                    q.pop(fname, None)
                    add(f"{fname}:missing", target=f"{path}?{encode_query(q)}", field=fname)
                add("query:unknown", target=f"{path}?{valid_q}&zzz_unknown=1&=&&=x&k")
                add("query:utf8-key", target=f"{path}?%FF%FE=1&{valid_q}")
                add("query:raw-bytes", target=path.encode() + b"?a=\xff\xfe", framing=True)
                add("query:1MB", target=f"{path}?a={'b' * (1 << 20)}", framing=True)
                add("body-on-get", headers=JSON, body=b"{")
            if takes_body:
                for fname, t in spec.fields.items():
                    for label, value in typed_values(t):
                        add(f"{fname}={label}", headers=JSON, body=render({**base, fname: value}), field=fname)
                    add(f"{fname}:missing", headers=JSON, body=render({k: v for k, v in base.items() if k != fname}),
                        field=fname)
                add("unknown-fields", headers=JSON, body=render({**base, "zzz_unknown": {"a": [1]}, "": 1}))
                add("duplicate-keys", headers=JSON, body=render(base)[:-1] + b', "zzz": 1, "zzz": 2}'
                    if base else b'{"zzz": 1, "zzz": 2}')
                add("all-null", headers=JSON, body=render({k: None for k in spec.fields} or {"x": None}))
                add("all-1MB", headers=JSON, body=render({k: MB[: (8 << 20) // max(1, len(spec.fields))]
                                                          for k in spec.fields} or {"x": MB}))
            # path parameters
            for name in spec.path:
                good = seeded.get(spec.path[name], spec.path[name])
                bad = ["m-doesnotexist", "%FF%FE", "%2e%2e", "..", "%00", "a%2Fb", "x" * 60000, "%25%32%65",
                       "%C0%AE%C0%AE", "%"]
                if name == "path":
                    bad = TRAVERSALS + ["%FF%FE.txt", "0/" + "a/" * 2000 + "f", good + "/", good + "/..",
                                        "1/../../2", "%2F%2Fetc", "a" * 60000]
                for b in bad:
                    value = urllib.parse.quote(b, safe="%/") if name == "path" else urllib.parse.quote(b, safe="%")
                    token = "{*path}" if name == "path" else f"{{{name}}}"
                    other = fill_path(template.replace(token, value), spec, seeded)
                    target = prefix + other
                    if method == "GET":
                        add(f"{{{name}}}={b[:20]}", target=target)
                    else:
                        add(f"{{{name}}}={b[:20]}", target=target, headers=JSON if takes_body else [],
                            body=render(base) if takes_body else b"bytes")
                add(f"{{{name}}}:raw-bytes", target=path.replace(good, "").encode() + b"\xff\xfe", framing=True)
                add(f"{{{name}}}:dotdot-raw", target=path.replace(good, "../../../etc/passwd"))
            if template.startswith("/mlflow-artifacts/artifacts/") and method == "PUT":
                add("upload:empty", body=b"")
                add("upload:20MB", headers=[("Content-Type", "application/octet-stream")], body=b"\0" * (20 << 20))
                add("upload:chunked-broken", headers=[("Transfer-Encoding", "chunked")], body=b"zz\r\nxx\r\n",
                    framing=True)
    # methods a route does not serve, on each concrete path
    for full_template, methods in seen_paths.items():
        template = re.sub(r"^/(api|ajax-api)/[23]\.0", "", full_template)
        any_method = next(iter(methods))
        spec = SPECS[f"{any_method} {template}"]
        concrete = full_template[: len(full_template) - len(template)] + fill_path(template, spec, seeded)
        for m in ALL_METHODS:
            if m not in methods and not (m == "GET" and "HEAD" in methods):
                cases.append(Case(f"{any_method} {full_template}", area_of(template), f"method:{m}", m,
                                  concrete.encode(), JSON if m in BODY_METHODS else [],
                                  b"{}" if m in BODY_METHODS else None, static_404=template.startswith("/static")))
    # paths no route serves, and hostile HTTP framing
    odd = [("/api/2.0/mlflow/does-not-exist", None), ("/api/2.0/", None), ("/api/9.9/mlflow/runs/get", None),
           ("/api/3.0/mlflow/runs/get", None), ("//api/2.0/mlflow/runs/get", None),
           ("/api/2.0/mlflow/runs/get/", None), ("/api/2.0/mlflow/runs/../runs/get", None),
           ("/api/2.0/mlflow/%72uns/get", None), ("/%FF%FE", None), ("/" + "a" * 60000, None),
           ("/api/2.0/mlflow-artifacts/artifactsX", None), ("/static-files", None), ("/graphqlx", None),
           ("/api/2.0/mlflow/experiments/create", b"{}"), ("/api/2.0/mlkube/", None), ("/api/2.0/mlflow/users", None)]
    for target, body in odd:
        cases.append(Case("(unrouted)", "(unrouted)", target[:40], "POST" if body else "GET", target.encode(),
                          JSON if body else [], body))
    framing = [
        ("GET", b"*", [], None), ("OPTIONS", b"*", [], None),
        ("GET", b"http://127.0.0.1/api/2.0/mlflow/experiments/search", [], None),
        ("GET", b"/api/2.0/mlflow/experiments/get?experiment_id=\x00", [], None),
        ("GET", b"/api/2.0/mlflow/\xff\xfe", [], None),
        ("POST", b"/api/2.0/mlflow/experiments/search", JSON + [("Content-Length", "abc")], b"{}"),
        ("POST", b"/api/2.0/mlflow/experiments/search", JSON + [("Content-Length", "-1")], b"{}"),
        ("POST", b"/api/2.0/mlflow/experiments/search", JSON + [("Content-Length", "2"), ("Content-Length", "3")],
         b"{}"),
        ("POST", b"/api/2.0/mlflow/experiments/search",
         JSON + [("Content-Length", "2"), ("Transfer-Encoding", "chunked")], b"2\r\n{}\r\n0\r\n\r\n"),
        ("POST", b"/api/2.0/mlflow/experiments/search", JSON + [("Transfer-Encoding", "chunked")], b"zz\r\n{}"),
        ("GET", b"/api/2.0/mlflow/experiments/search", [("X-Huge", "a" * 500000)], None),
        ("GET", b"/api/2.0/mlflow/experiments/search", [(f"X-H{i}", "a") for i in range(500)], None),
        ("GET", b"/api/2.0/mlflow/experiments/search", [("Content-Type", "\u00ff")], None),
        ("BREW", b"/api/2.0/mlflow/experiments/search", [], None),
        ("GET", b"/api/2.0/mlflow/experiments/search", [("Authorization", "Basic !!!")], None),
        ("GET", b"/api/2.0/mlflow/experiments/search", [("Authorization", "Basic " + b64(b"\xff\xfe:\xff"))], None),
    ]
    for m, target, headers, body in framing:
        cases.append(Case("(framing)", "(framing)", f"{m} {target[:30]!r} {headers[-1][0] if headers else ''}", m,
                          target, headers, body, framing=True))
    return cases


# Fields the basic-auth middleware reads to decide (auth/middleware.rs): the non-admin pass makes
# these hostile, the handlers' own fields being the admin pass's.
AUTH_FIELDS = {"experiment_id", "experiment_name", "experiment_ids", "run_id", "run_uuid", "run_ids", "name",
               "new_name", "username", "source", "model_id", "path"}


def for_pass(cases: list[Case], who: str) -> list[Case]:
    """The cases a pass sends: everything as admin (or without auth); without credentials the
    request-level cases everywhere and everything on the public routes; as a user the
    request-level cases and the fields the permission checks read."""
    if who in ("admin", "anonymous"):
        return cases
    if who == "no-credentials":
        return [c for c in cases if c.field is None or c.public]
    return [c for c in cases if c.field is None or c.field in AUTH_FIELDS]


# === running it ===


@dataclass
class Verdict:
    kind: str  # ok, 5xx, shape, allowed
    detail: str = ""


def judge(case: Case, answer: Answer | None, error: str | None) -> Verdict:
    if answer is None:
        return Verdict("5xx", f"no answer: {error}")
    status = answer.status
    body = answer.json()
    shaped = (isinstance(body, dict) and isinstance(body.get("error_code"), str)
              and isinstance(body.get("message"), str) and body["message"] != "")
    if status >= 500:
        if status == 501 and shaped and body["error_code"] == "NOT_IMPLEMENTED":
            return Verdict("allowed", "501 NOT_IMPLEMENTED")
        return Verdict("5xx", f"{status} {answer.body[:200]!r}")
    if status < 400:
        return Verdict("ok")
    if not shaped:
        if case.framing and status in (400, 414, 431) and not answer.body:
            return Verdict("allowed", f"{status} from the HTTP layer")
        if case.static_404 and status == 404:
            return Verdict("allowed", "static 404")
        return Verdict("shape", f"{status} {answer.headers.get('content-type', '-')} {answer.body[:200]!r}")
    want = CODE_STATUS.get(body["error_code"])
    if want is None or status not in want:
        return Verdict("shape", f"{status} with error_code {body['error_code']}")
    return Verdict("ok")


@dataclass
class Tally:
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    dump: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_pass(port: int, name: str, cases: list[Case], auth: tuple[str, str] | None, tally: Tally,
             rows: dict[tuple[str, str], Counter], workers: int) -> None:
    extra = [("Authorization", basic(*auth))] if auth else []

    def one(case: Case) -> None:
        headers = list(case.headers)
        if extra and not any(k == "Authorization" for k, _ in headers):
            headers += extra
        answer, error = None, None
        t0 = time.monotonic()
        try:
            answer = http(port, case.method, case.target, headers, case.body)
        except (NoAnswer, OSError) as err:
            error = f"{type(err).__name__}: {err}"
        took = time.monotonic() - t0
        verdict = judge(case, answer, error)
        with tally.lock:
            if tally.dump is not None:
                status = answer.status if answer else "-"
                snippet = answer.body[:160] if answer else error
                tally.dump.write(f"{name}\t{case.route}\t{case.name}\t{status}\t{verdict.kind}\t{took:.3f}\t"
                                 f"{snippet!r}\n")
            row = rows[(name, case.area)]
            row["requests"] += 1
            if answer is not None:
                row[f"{answer.status // 100}xx"] += 1
            row[f"verdict:{verdict.kind}"] += 1
            tally.counts[verdict.kind] += 1
            tally.counts["requests"] += 1
            if verdict.kind in ("5xx", "shape"):
                line = (f"{name}: {case.route} [{case.name}] {case.method} {case.target[:120]!r} "
                        f"-> {verdict.kind}: {verdict.detail}")
                tally.failures.append(line)
                if len(tally.failures) <= 200:
                    log("FAIL " + line)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, cases))
    log(f"pass '{name}': {len(cases)} requests in {time.monotonic() - started:.1f} s")


class Server:
    def __init__(self, binary: str, workdir: str, auth: bool):
        self.binary, self.workdir, self.auth = binary, workdir, auth
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(workdir, "server.log")

    def start(self) -> None:
        ui = os.path.join(self.workdir, "ui")
        os.makedirs(os.path.join(ui, "static", "js"), exist_ok=True)
        with open(os.path.join(ui, "index.html"), "w") as f:
            f.write("<!doctype html><html><body><div id=root></div></body></html>")
        with open(os.path.join(ui, "static", "js", "main.abc123.js"), "w") as f:
            f.write("console.log('ui');\n" * 100)
        env = dict(os.environ, NO_COLOR="1", RUST_LOG="warn,mlkube_server=warn")
        if self.auth:
            ini = os.path.join(self.workdir, "basic_auth.ini")
            with open(ini, "w") as f:
                f.write(f"[mlflow]\ndefault_permission = READ\n"
                        f"database_uri = sqlite:///{os.path.join(self.workdir, 'basic_auth.db')}\n"
                        f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
                        # failed logins are part of the corpus; keep the limit out of the way
                        f"max_failed_logins = 1000000\n")
            env["MLFLOW_AUTH_CONFIG_PATH"] = ini
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [self.binary, "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", f"sqlite:///{os.path.join(self.workdir, 'mlkube.db')}",
               "--artifacts-destination", os.path.join(self.workdir, "artifacts"),
               "--expose-prometheus", "--ui-dir", ui, "--sqlite-synchronous", "normal",
               "--monitoring-allow-private-webhooks"]
        if self.auth:
            cmd += ["--app-name", "basic-auth"]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"hostile: server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if http(self.port, "GET", b"/health", [], None, timeout=2).status == 200:
                    return
            except (NoAnswer, OSError):
                pass
            time.sleep(0.05)
        raise SystemExit(f"hostile: server not healthy within 60 s:\n{self.tail()}")

    def tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            return http(self.port, "GET", b"/health", [], None, timeout=10).status == 200
        except (NoAnswer, OSError):
            return False

    def cpu_seconds(self) -> float | None:
        """User + system CPU the server used so far (Linux /proc), for the log."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, AttributeError):
            return None

    def stop(self) -> int | None:
        """Stop it; the exit status when it had already exited on its own, else None."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log("server ignored SIGTERM for 10 s; killing it")
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return None

    def panics(self) -> list[str]:
        with open(self.log_path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        return [line for line in text.splitlines() if "panicked" in line]


def check_specs(rows: list[tuple[str, str, str, str]]) -> None:
    table = {f"{m} {p}" for _, m, p, _ in rows}
    missing = sorted(table - SPECS.keys())
    stale = sorted(SPECS.keys() - table)
    if missing or stale:
        msg = ["hostile: tests/reliability/hostile.py SPECS is out of step with server/src/auth/permissions.rs:"]
        msg += [f"  no spec for route {r} (add its fields and a valid request to SPECS)" for r in missing]
        msg += [f"  spec for a route the table no longer has: {r}" for r in stale]
        raise SystemExit("\n".join(msg))


def print_table(rows: dict[tuple[str, str], Counter]) -> None:
    cols = ["requests", "2xx", "3xx", "4xx", "5xx", "verdict:allowed", "verdict:5xx", "verdict:shape"]
    heads = ["pass", "area", "requests", "2xx", "3xx", "4xx", "5xx", "allowed", "FAIL 5xx", "FAIL shape"]
    total: Counter = Counter()
    for c in rows.values():
        total.update(c)
    lines = [[p, a] + [str(c[k]) for k in cols] for (p, a), c in sorted(rows.items())]
    lines.append(["TOTAL", ""] + [str(total[k]) for k in cols])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(heads)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(heads))
    print(fmt(["-" * w for w in widths]))
    for line in lines:
        print(fmt(line))
    print("(2xx..5xx: answers by status; allowed: the documented exceptions (501 NOT_IMPLEMENTED, plain static 404s, "
          "the HTTP layer's bare refusals); FAIL 5xx: 5xx answers and requests without an answer; FAIL shape: 4xx "
          "answers not in MLflow's error shape)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-bin", required=True, help="the mlkube-server binary to start")
    parser.add_argument("--auth", action="store_true", help="run it with basic auth (corpus sent 3 times)")
    parser.add_argument("--workers", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (database, log)")
    parser.add_argument("--dump", metavar="FILE", help="write every request's route, case, status and answer here")
    args = parser.parse_args()
    if not os.access(args.server_bin, os.X_OK):
        raise SystemExit(f"hostile: {args.server_bin} is not an executable")

    started = time.monotonic()
    table = read_route_table()
    check_specs(table)
    workdir = tempfile.mkdtemp(prefix="mlkube-hostile-")
    server = Server(os.path.abspath(args.server_bin), workdir, args.auth)
    server.start()
    log(f"server up on 127.0.0.1:{server.port} (auth {'on' if args.auth else 'off'}), workdir {workdir}")
    tally, rows = Tally(), defaultdict(Counter)
    if args.dump:
        tally.dump = open(args.dump, "w", encoding="utf-8")
    panics, exited, served = 0, None, set()
    try:
        seeded = seed(Api(server.port, ADMIN if args.auth else None), args.auth)
        served = served_routes(server.port, table, seeded, ADMIN if args.auth else None)
        cases = build_cases(table, seeded, served)
        listed = sum(len(PREFIXES[scope]) for scope, _, _, _ in table)
        log(f"{len(table)} table rows: {listed} routes with their prefixes, {len(served)} of them served; "
            f"{len(cases)} cases per pass")
        passes = [("admin" if args.auth else "anonymous", ADMIN if args.auth else None)]
        if args.auth:
            passes = [("no-credentials", None), ("user", USER), ("admin", ADMIN)]
        for name, who in passes:
            run_pass(server.port, name, for_pass(cases, name), who, tally, rows, args.workers)
        cpu = server.cpu_seconds()
        if cpu is not None:
            log(f"server CPU: {cpu:.1f} s")
        alive = server.alive()
        if not alive:
            log("the server no longer answers /health")
            panics += 1
    finally:
        exited = server.stop()
    if exited is not None:
        log(f"the server had exited by itself with status {exited}")
        panics += 1
    lines = server.panics()
    for line in lines[:20]:
        log("PANIC " + line)
    panics += len(lines)
    if tally.failures:
        with open(os.path.join(workdir, "failures.txt"), "w") as f:
            f.write("\n".join(tally.failures) + "\n")
        log(f"{len(tally.failures)} failing requests (the first 200 above, all in {workdir}/failures.txt); "
            f"server log: {server.log_path}")
    print_table(rows)
    result = {"routes": len(served), "requests": tally.counts["requests"], "status_5xx": tally.counts["5xx"],
              "bad_error_shape": tally.counts["shape"], "panics": panics}
    ok = result["status_5xx"] == 0 and result["bad_error_shape"] == 0 and panics == 0
    if ok and not args.keep:
        # rm: the corpus leaves directories nested deeper than Python's rmtree recurses.
        subprocess.run(["rm", "-rf", "--", workdir], check=False)
    else:
        log(f"working directory kept: {workdir}")
    log(f"done in {time.monotonic() - started:.1f} s")
    print("RESULT " + json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
