#!/usr/bin/env python3
"""mlkube-sidecar under abuse: idle connections, slow-loris clients and a slow model server.

    tests/reliability/sidecar_abuse.py --sidecar-bin target/debug/mlkube-sidecar

Starts its own model server (http.server in a thread on 127.0.0.1: `/invocations` answers at once,
`/slow` sleeps past the sidecar's request timeout, `/ping` for readiness) and the sidecar binary in
front of it with short limits (request timeout 2 s, header read timeout 15 s, request body timeout
5 s), raises RLIMIT_NOFILE for itself and the sidecar, then:

1. idle: opens 10 000 TCP connections to the serving port that never send a byte and holds them;
   with all of them open the metrics port must answer and a normal request must succeed, and the
   sidecar must close each one within the header read timeout (plus slack) of its opening;
2. slow-loris, while those idle connections are still open: 256 connections send a request head
   one byte per second and 256 send a complete head and then the body one byte per second; every
   one must be cut off by the sidecar within its timeout plus slack (counted from the first byte of
   a head, from the end of the head for a body; the body senders get a 408 REQUEST_TIMEOUT), while
   a normal request every 100 ms keeps succeeding and the metrics port keeps answering;
3. slow upstream: 16 concurrent requests to `/slow` must each get a 504 `UPSTREAM_TIMEOUT` in the
   sidecar's error shape at the request timeout, not later;
4. memory: the sidecar's VmRSS is sampled throughout (and VmHWM read at the end); the peak must stay
   under RSS_BOUND_MIB.

Progress goes to stderr, a table to stdout, and the last stdout line is
`RESULT {"idle_connections": N, "slowloris_cut": N, "timeouts_504": N, "peak_rss_mib": X,
"rss_bound_mib": B, "metrics_ok": true}`. Exit status 0 only if every check passed. Standard
library only; about 25 s.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import resource
import select
import selectors
import socket
import subprocess
import sys
import threading
import time

IDLE_CONNECTIONS = 10_000
SLOW_HEAD_CONNECTIONS = 256
SLOW_BODY_CONNECTIONS = 256
SLOW_UPSTREAM_REQUESTS = 16
REQUEST_TIMEOUT_S = 2.0
HEADER_READ_TIMEOUT_S = 15.0
BODY_TIMEOUT_S = 5.0
# How much later than its timeout a connection may be cut (scheduling, 1 s send ticks, a loaded
# 2-CPU machine).
CUT_SLACK_S = 3.0
# The 504 may come this much after the request timeout.
TIMEOUT_SLACK_S = 0.5
# Measured (sidecar/README.md, "Limits under abuse"): the peak is about 30 MiB for a release build
# and 36 MiB for a debug one, with the 10 000 idle connections, the slow-loris clients and normal
# traffic at once; before hyper's buffers were deferred to a connection's first byte, the idle
# connections alone took it to 120 MiB. The bound leaves room for other machines and allocators
# and still catches 8 KiB per idle connection (78 MiB).
RSS_BOUND_MIB = 64
NOFILE_WANTED = IDLE_CONNECTIONS + SLOW_HEAD_CONNECTIONS + SLOW_BODY_CONNECTIONS + 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(max(NOFILE_WANTED, soft), hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < NOFILE_WANTED:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below the {NOFILE_WANTED} sockets needed")
    return want


# --- the model server ---


class ModelHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    slow_seconds = REQUEST_TIMEOUT_S + 3.0

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        self._answer(200, b"{}" if self.path == "/ping" else b'{"error":"not found"}')

    def do_POST(self) -> None:
        body = self._read_body()
        if len(body) < int(self.headers.get("Content-Length") or 0):
            self.close_connection = True
            return
        if self.path == "/slow":
            time.sleep(self.slow_seconds)
        self._answer(200, json.dumps({"predictions": [0.5], "received_bytes": len(body)}).encode())


class ModelServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


# --- the sidecar process ---


class Sidecar:
    def __init__(self, binary: str, upstream: str):
        help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
        args = [binary, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--upstream", upstream,
                "--model-name", "abuse", "--model-version", "1", "--request-timeout", str(REQUEST_TIMEOUT_S),
                "--worker-threads", "2", "--upstream-health-interval", "1", "--log-format", "json"]
        self.limits = {}
        for flag, value in (("--header-read-timeout", HEADER_READ_TIMEOUT_S),
                            ("--request-body-timeout", BODY_TIMEOUT_S)):
            if flag in help_text:
                args += [flag, str(value)]
                self.limits[flag] = value
            else:
                log(f"this sidecar has no {flag}: that check is expected to fail")
        env = dict(os.environ, NO_COLOR="1", MLKUBE_LOG="info")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True)
        self.log_lines: list[str] = []
        self.proxy_addr = self.metrics_addr = None
        deadline = time.monotonic() + 30
        assert self.proc.stderr is not None
        while self.proxy_addr is None:
            line = self.proc.stderr.readline().decode(errors="replace")
            if not line:
                raise SystemExit(f"the sidecar exited ({self.proc.wait()}) before serving: {self.log_lines[-5:]}")
            self.log_lines.append(line)
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == "mlkube-sidecar serving":
                host, port = fields["proxy_addr"].rsplit(":", 1)
                self.proxy_addr = (host, int(port))
                host, port = fields["metrics_addr"].rsplit(":", 1)
                self.metrics_addr = (host, int(port))
            if time.monotonic() > deadline:
                raise SystemExit("the sidecar did not log its addresses within 30 s")
        # Keep reading its log so the pipe never fills.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.log_lines.append(raw.decode(errors="replace"))

    def status(self) -> dict[str, int]:
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
        return out

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def held_connections(self, client_ports: set[int]) -> int:
        """How many of the connections from `client_ports` to the serving port the sidecar has
        accepted and holds open (its socket fds matched against the kernel's TCP table), not counting
        those still in its accept queue."""
        inodes = set()
        fd_dir = f"/proc/{self.proc.pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        held = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if (local_port == self.proxy_addr[1] and remote_port in client_ports and fields[3] == "01"
                            and fields[9] in inodes):
                        held += 1
        return held

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class RssSampler(threading.Thread):
    """VmRSS every 20 ms; `peak_kib` is the highest sample (VmHWM is read separately)."""

    def __init__(self, sidecar: Sidecar):
        super().__init__(daemon=True)
        self.sidecar, self.peak_kib, self.stopped = sidecar, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.peak_kib = max(self.peak_kib, self.sidecar.status()["VmRSS"])
            except (OSError, KeyError):
                return
            time.sleep(0.02)


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


# --- clients ---


def request(addr, method: str, path: str, body: bytes | None = None, timeout: float = 10.0):
    """One request on a new connection: (status, body, seconds)."""
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    t = time.monotonic()
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), time.monotonic() - t
    finally:
        conn.close()


def normal_ok(sidecar: Sidecar) -> bool:
    try:
        status, body, _ = request(sidecar.proxy_addr, "POST", "/invocations", b'{"inputs": [[1, 2]]}')
        return status == 200 and json.loads(body)["predictions"] == [0.5]
    except (OSError, ValueError, KeyError):
        return False


def metrics_ok(sidecar: Sidecar) -> bool:
    try:
        status, body, _ = request(sidecar.metrics_addr, "GET", "/metrics")
        return status == 200 and b"mlflow_predictions_total" in body
    except OSError:
        return False


class IdleConnections:
    """The idle phase: `open` opens the connections (a second thread watches each for the
    sidecar's close, so a close is timed when it happens) and checks the sidecar with all of them
    open; `finish`, after the slow-loris phase has run meanwhile, checks that each was closed."""

    def __init__(self, sidecar: Sidecar):
        self.sidecar = sidecar
        self.poller = select.epoll()
        self.opened: dict[int, tuple[socket.socket, float]] = {}
        self.closed: dict[int, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.last_opened = 0.0

    def _watch(self) -> None:
        while not self.stop.is_set():
            for fd, _ in self.poller.poll(0.05):
                with self.lock:
                    sock, t = self.opened[fd]
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed[fd] = time.monotonic() - t
                    self.poller.unregister(fd)

    def open(self, checks: dict, figures: dict) -> None:
        sidecar = self.sidecar
        log(f"idle: opening {IDLE_CONNECTIONS} connections that send nothing")
        baseline_fds = sidecar.open_fds()
        self.watcher.start()
        t0 = time.monotonic()
        for i in range(IDLE_CONNECTIONS):
            s = socket.create_connection(sidecar.proxy_addr, timeout=10)
            s.setblocking(False)
            with self.lock:
                self.opened[s.fileno()] = (s, time.monotonic())
            self.poller.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
            if i % 256 == 255:
                # Keep the listen backlog from overflowing on a loaded machine: an overflow costs
                # the next connect a 1 s SYN retransmit, not the sidecar anything.
                paced = time.monotonic() + 2
                while sidecar.open_fds() - baseline_fds < i + 1 - 768 and time.monotonic() < paced:
                    time.sleep(0.002)
        self.last_opened = time.monotonic()
        client_ports = {sock.getsockname()[1] for sock, _ in self.opened.values()}
        held, settle = 0, time.monotonic() + 2  # the last few may still be in the accept queue
        while True:
            held = sidecar.held_connections(client_ports)
            if held >= IDLE_CONNECTIONS or time.monotonic() > settle:
                break
            time.sleep(0.05)
        closed_early = len(self.closed)
        log(f"idle: {len(self.opened)} open in {self.last_opened - t0:.1f} s; the sidecar holds {held} connections, "
            f"{closed_early} closed so far")
        figures["idle_rss_kib"] = sidecar.status()["VmRSS"]
        figures["idle_opened"] = len(self.opened)
        figures["idle_held"] = held if closed_early == 0 else 0
        checks["idle: all 10 000 accepted and held at once"] = held >= IDLE_CONNECTIONS and closed_early == 0
        checks["idle: metrics port answers"] = metrics_ok(sidecar)
        checks["idle: a normal request succeeds"] = normal_ok(sidecar)
        log(f"idle: metrics {checks['idle: metrics port answers']}, request "
            f"{checks['idle: a normal request succeeds']}, RSS {mib(figures['idle_rss_kib'])} MiB")

    def finish(self, checks: dict, figures: dict) -> None:
        bound = HEADER_READ_TIMEOUT_S + CUT_SLACK_S
        while len(self.closed) < len(self.opened) and time.monotonic() < self.last_opened + bound:
            time.sleep(0.1)
        self.close()
        closed = list(self.closed.values())
        figures["idle_cut"] = len(closed)
        figures["idle_cut_min_s"] = round(min(closed, default=0.0), 2)
        figures["idle_cut_max_s"] = round(max(closed, default=0.0), 2)
        checks[f"idle: each closed by the sidecar within {bound:g} s of opening"] = (
            len(closed) == len(self.opened) and max(closed, default=0.0) <= bound)
        log(f"idle: the sidecar closed {len(closed)} of them, {figures['idle_cut_min_s']}.."
            f"{figures['idle_cut_max_s']} s after each opened")

    def close(self) -> None:
        if not self.stop.is_set():
            self.stop.set()
            if self.watcher.is_alive():
                self.watcher.join()
            self.poller.close()
            for s, _ in self.opened.values():
                s.close()


class SlowConn:
    """A slow-loris connection; `started` is when the timeout it tests began: its first byte (a slow
    head) or its complete head (a slow body)."""

    def __init__(self, addr, payload: bytes, head_len: int):
        self.sock = socket.create_connection(addr, timeout=5)
        self.payload, self.head_len = payload, head_len
        self.sent = self.sock.send(payload[:max(head_len, 1)])
        self.sock.setblocking(False)
        self.started = time.monotonic()
        self.closed_after: float | None = None
        self.answer = b""

    def status(self) -> int | None:
        if self.answer.startswith(b"HTTP/1.1 "):
            return int(self.answer[9:12])
        return None


def phase_slowloris(sidecar: Sidecar, checks: dict, figures: dict) -> None:
    body_len = 1000
    head = b"POST /invocations HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
    slow_head = head + b"Content-Length: 2\r\nX-Padding: " + b"p" * 80 + b"\r\n\r\n{}"
    slow_body = head + f"Content-Length: {body_len}\r\n\r\n".encode() + b"1" * body_len
    # A slow head sends its first byte at once, a slow body its whole head, then a byte a second.
    conns = [SlowConn(sidecar.proxy_addr, slow_head, 0) for _ in range(SLOW_HEAD_CONNECTIONS)]
    body_conns = [SlowConn(sidecar.proxy_addr, slow_body, len(slow_body) - body_len)
                  for _ in range(SLOW_BODY_CONNECTIONS)]
    everyone = conns + body_conns
    log(f"slow-loris: {len(conns)} heads and {len(body_conns)} bodies at one byte per second")

    stop = threading.Event()
    normal = {"ok": 0, "failed": 0, "slowest": 0.0, "metrics_failed": 0}

    def traffic() -> None:
        while not stop.is_set():
            t = time.monotonic()
            if normal_ok(sidecar):
                normal["ok"] += 1
            else:
                normal["failed"] += 1
            normal["slowest"] = max(normal["slowest"], time.monotonic() - t)
            if not metrics_ok(sidecar):
                normal["metrics_failed"] += 1
            stop.wait(0.1)

    driver = threading.Thread(target=traffic, daemon=True)
    driver.start()
    sel = selectors.DefaultSelector()
    by_fd = {}
    for c in everyone:
        if c.closed_after is None:
            sel.register(c.sock, selectors.EVENT_READ)
            by_fd[c.sock.fileno()] = c
    limit = max(HEADER_READ_TIMEOUT_S, BODY_TIMEOUT_S) + CUT_SLACK_S
    start = time.monotonic()
    next_tick = start
    while any(c.closed_after is None for c in everyone) and time.monotonic() - start < limit + 2:
        now = time.monotonic()
        if now >= next_tick:
            next_tick += 1.0
            for c in everyone:
                if c.closed_after is None and c.sent < len(c.payload):
                    try:
                        c.sent += c.sock.send(c.payload[c.sent:c.sent + 1])
                    except BlockingIOError:
                        pass
                    except OSError:
                        c.closed_after = time.monotonic() - c.started
                        sel.unregister(c.sock)
        for key, _ in sel.select(timeout=max(0.0, min(0.1, next_tick - time.monotonic()))):
            c = by_fd[key.fd]
            try:
                data = c.sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                c.answer += data
            else:
                c.closed_after = time.monotonic() - c.started
                sel.unregister(c.sock)
    stop.set()
    driver.join()
    sel.close()
    for c in everyone:
        c.sock.close()

    heads_cut = [c.closed_after for c in conns if c.closed_after is not None]
    bodies_cut = [c.closed_after for c in body_conns if c.closed_after is not None]
    body_statuses: dict[str, int] = {}
    for c in body_conns:
        key = str(c.status())
        body_statuses[key] = body_statuses.get(key, 0) + 1
    figures.update(slow_heads=len(conns), slow_heads_cut=len(heads_cut),
                   slow_head_cut_max_s=round(max(heads_cut, default=0.0), 2),
                   slow_bodies=len(body_conns), slow_bodies_cut=len(bodies_cut),
                   slow_body_cut_max_s=round(max(bodies_cut, default=0.0), 2), slow_body_statuses=body_statuses,
                   normal_ok=normal["ok"], normal_failed=normal["failed"],
                   normal_slowest_ms=round(normal["slowest"] * 1000, 1))
    checks[f"slow-loris: every slow head cut within {HEADER_READ_TIMEOUT_S + CUT_SLACK_S:g} s"] = (
        len(heads_cut) == len(conns) and max(heads_cut, default=0.0) <= HEADER_READ_TIMEOUT_S + CUT_SLACK_S)
    checks[f"slow-loris: every slow body cut within {BODY_TIMEOUT_S + CUT_SLACK_S:g} s"] = (
        len(bodies_cut) == len(body_conns) and max(bodies_cut, default=0.0) <= BODY_TIMEOUT_S + CUT_SLACK_S)
    checks["slow-loris: slow bodies answered 408"] = body_statuses == {"408": len(body_conns)}
    checks["slow-loris: normal requests all succeed meanwhile"] = normal["ok"] > 0 and normal["failed"] == 0
    checks["slow-loris: metrics port answers meanwhile"] = normal["metrics_failed"] == 0
    log(f"slow-loris: heads cut {len(heads_cut)}/{len(conns)} (last after {figures['slow_head_cut_max_s']} s), "
        f"bodies cut {len(bodies_cut)}/{len(body_conns)} (last after {figures['slow_body_cut_max_s']} s, "
        f"answers {body_statuses}); normal requests {normal['ok']} ok, {normal['failed']} failed, "
        f"slowest {figures['normal_slowest_ms']} ms")


def phase_slow_upstream(sidecar: Sidecar, checks: dict, figures: dict) -> None:
    log(f"slow upstream: {SLOW_UPSTREAM_REQUESTS} requests to a model that answers after "
        f"{ModelHandler.slow_seconds:g} s (request timeout {REQUEST_TIMEOUT_S:g} s)")
    answers: list[tuple[int, bytes, float] | None] = [None] * SLOW_UPSTREAM_REQUESTS

    def one(i: int) -> None:
        try:
            answers[i] = request(sidecar.proxy_addr, "POST", "/slow", b'{"inputs": [[1]]}', timeout=30)
        except OSError:
            answers[i] = None

    threads = [threading.Thread(target=one, args=(i,)) for i in range(SLOW_UPSTREAM_REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got_504 = 0
    latencies = []
    for answer in answers:
        if answer is None:
            continue
        status, body, seconds = answer
        latencies.append(seconds)
        try:
            shaped = json.loads(body).get("error_code") == "UPSTREAM_TIMEOUT"
        except ValueError:
            shaped = False
        if status == 504 and shaped and REQUEST_TIMEOUT_S - 0.05 <= seconds <= REQUEST_TIMEOUT_S + TIMEOUT_SLACK_S:
            got_504 += 1
    figures.update(timeouts_504=got_504, timeout_min_s=round(min(latencies, default=0.0), 3),
                   timeout_max_s=round(max(latencies, default=0.0), 3))
    checks[f"slow upstream: every request 504 UPSTREAM_TIMEOUT within {REQUEST_TIMEOUT_S:g}"
           f"+{TIMEOUT_SLACK_S:g} s"] = got_504 == SLOW_UPSTREAM_REQUESTS
    log(f"slow upstream: {got_504}/{SLOW_UPSTREAM_REQUESTS} answered 504 in "
        f"{figures['timeout_min_s']}..{figures['timeout_max_s']} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sidecar-bin", required=True, help="the mlkube-sidecar binary to test")
    args = parser.parse_args()
    started = time.monotonic()
    nofile = raise_nofile()  # the sidecar inherits it

    model = ModelServer(("127.0.0.1", 0), ModelHandler)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{model.server_address[1]}"
    sidecar = Sidecar(args.sidecar_bin, upstream)
    log(f"sidecar pid {sidecar.proc.pid} on {sidecar.proxy_addr[1]} (metrics {sidecar.metrics_addr[1]}) in front of "
        f"{upstream}; RLIMIT_NOFILE {nofile}")
    checks: dict[str, bool] = {}
    figures: dict = {}
    try:
        for _ in range(20):  # warm up: upstream connections, allocator arenas
            normal_ok(sidecar)
        figures["rss_before_kib"] = sidecar.status()["VmRSS"]
        sampler = RssSampler(sidecar)
        sampler.start()
        idle = IdleConnections(sidecar)
        try:
            idle.open(checks, figures)
            # While the idle connections wait to be closed.
            phase_slowloris(sidecar, checks, figures)
            idle.finish(checks, figures)
        finally:
            idle.close()
        phase_slow_upstream(sidecar, checks, figures)
        time.sleep(1.0)
        sampler.stopped.set()
        sampler.join()
        status = sidecar.status()
        figures["rss_after_kib"] = status["VmRSS"]
        figures["peak_rss_kib"] = max(sampler.peak_kib, status["VmHWM"])
        checks["sidecar still running"] = sidecar.proc.poll() is None
        checks["metrics port answers at the end"] = metrics_ok(sidecar)
        checks["a normal request succeeds at the end"] = normal_ok(sidecar)
        checks[f"peak RSS under {RSS_BOUND_MIB} MiB"] = figures["peak_rss_kib"] <= RSS_BOUND_MIB * 1024
    finally:
        code = sidecar.stop()
        model.shutdown()
    checks["clean exit on SIGTERM"] = code == 0
    checks["no panic in the log"] = not any("panicked" in line for line in sidecar.log_lines)
    elapsed = time.monotonic() - started

    rows = [
        ("idle connections held at once", f"{figures.get('idle_held', 0)} of {figures.get('idle_opened', 0)}; "
                                          f"{figures.get('idle_cut', 0)} closed by the sidecar "
                                          f"{figures.get('idle_cut_min_s')}..{figures.get('idle_cut_max_s')} s "
                                          f"after opening"),
        ("slow heads cut", f"{figures.get('slow_heads_cut', 0)}/{figures.get('slow_heads', 0)}, last after "
                           f"{figures.get('slow_head_cut_max_s')} s"),
        ("slow bodies cut", f"{figures.get('slow_bodies_cut', 0)}/{figures.get('slow_bodies', 0)}, last after "
                            f"{figures.get('slow_body_cut_max_s')} s, answers {figures.get('slow_body_statuses')}"),
        ("normal requests meanwhile", f"{figures.get('normal_ok', 0)} ok, {figures.get('normal_failed', 0)} failed, "
                                      f"slowest {figures.get('normal_slowest_ms')} ms"),
        ("504 at the request timeout", f"{figures.get('timeouts_504', 0)}/{SLOW_UPSTREAM_REQUESTS}, "
                                       f"{figures.get('timeout_min_s')}..{figures.get('timeout_max_s')} s "
                                       f"(timeout {REQUEST_TIMEOUT_S:g} s)"),
        ("RSS before / idle / peak / after", f"{mib(figures.get('rss_before_kib', 0))} / "
                                             f"{mib(figures.get('idle_rss_kib', 0))} / "
                                             f"{mib(figures.get('peak_rss_kib', 0))} / "
                                             f"{mib(figures.get('rss_after_kib', 0))} MiB "
                                             f"(bound {RSS_BOUND_MIB} MiB)"),
        ("run time", f"{elapsed:.1f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'figure'.ljust(width)} | value")
    print(f"{'-' * width}-|------")
    for name, value in rows:
        print(f"{name.ljust(width)} | {value}")
    print()
    width = max(len(c) for c in checks)
    for name, ok in checks.items():
        print(f"{name.ljust(width)} | {'ok' if ok else 'FAILED'}")
    ok = all(checks.values())
    for name, passed in checks.items():
        if not passed:
            log(f"FAILED: {name}")
    result = {
        "idle_connections": figures.get("idle_held", 0),
        "slowloris_cut": figures.get("slow_heads_cut", 0) + figures.get("slow_bodies_cut", 0),
        "timeouts_504": figures.get("timeouts_504", 0),
        "peak_rss_mib": mib(figures.get("peak_rss_kib", 0)),
        "rss_bound_mib": RSS_BOUND_MIB,
        "metrics_ok": all(v for k, v in checks.items() if "metrics" in k),
    }
    print("RESULT " + json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
