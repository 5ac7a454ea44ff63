"""Shared pieces of the reliability scenarios (tests/reliability/README.md): servers started and
killed as real processes on 127.0.0.1, a small JSON-over-HTTP client, PostgreSQL control, and the
RESULT line every scenario ends with. Standard library only."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base: str, method: str, path: str, body=None, timeout: float = 15.0, raw: bytes | None = None,
            headers: dict | None = None):
    """One request on a fresh connection: (status, parsed JSON or None, seconds). Raises OSError
    (connection refused, reset, timeout) when no answer came."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    t = time.monotonic()
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = None
    return resp.status, parsed, time.monotonic() - t


def api(base: str, method: str, rpc: str, body=None, timeout: float = 15.0):
    """An MLflow REST call that must succeed: the parsed answer."""
    status, parsed, _ = request(base, method, f"/api/2.0/{rpc}", body, timeout)
    if status != 200:
        raise RuntimeError(f"{method} {rpc} -> {status} {parsed}")
    return parsed


class Server:
    """An mlkube-server process on a free port, its log in WORKDIR/server-N.log."""

    def __init__(self, binary: str, backend: str, workdir: str, args: list[str] | None = None,
                 env: dict | None = None, name: str = "server"):
        self.binary, self.backend, self.workdir = binary, backend, workdir
        self.args, self.env, self.name = args or [], env or {}, name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, wait: float = 60.0) -> None:
        self.starts += 1
        logfile = open(os.path.join(self.workdir, f"{self.name}-{self.starts}.log"), "wb")
        env = dict(os.environ, NO_COLOR="1", **self.env)
        cmd = [self.binary, "--host", "127.0.0.1", "--port", str(self.port), "--backend-store-uri", self.backend,
               "--artifacts-destination", os.path.join(self.workdir, "artifacts"), "--no-ui", *self.args]
        self.proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                                     start_new_session=True)
        logfile.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path()}")
            try:
                if request(self.url, "GET", "/health", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not healthy within {wait}s; see {self.log_path()}")

    def log_path(self) -> str:
        return os.path.join(self.workdir, f"{self.name}-{self.starts}.log")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a node or the OOM killer takes the pod."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def panicked(self) -> bool:
        for i in range(1, self.starts + 1):
            path = os.path.join(self.workdir, f"{self.name}-{i}.log")
            if os.path.exists(path) and b"panicked" in open(path, "rb").read():
                return True
        return False


class Postgres:
    """The private cluster tests/reliability/run started (PG_BIN, PG_DIR, PG_PORT from
    scripts/lib/postgres.sh), controlled with pg_ctl as its owner."""

    def __init__(self):
        self.bin, self.dir, self.port = os.environ["PG_BIN"], os.environ["PG_DIR"], os.environ["PG_PORT"]
        self.base_url = os.environ["MLKUBE_TEST_POSTGRES_URL"]
        # The options the cluster was started with (port, socket directory, settings) live only in
        # postmaster.opts: a plain `pg_ctl start` would forget them.
        words = shlex.split(open(os.path.join(self.dir, "data", "postmaster.opts")).read())
        opts, skip = [], False
        for w in words[1:]:
            if skip:
                skip = False
            elif w == "-D":
                skip = True
            else:
                opts.append(w)
        self.options = shlex.join(opts)

    def _as_owner(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, **kw)

    def ctl(self, action: str, mode: str = "fast") -> None:
        """`stop` (mode fast: sessions ended cleanly; immediate: a crash) or `start`."""
        data = f"--pgdata={self.dir}/data"
        if action == "stop":
            self._as_owner([f"{self.bin}/pg_ctl", "stop", data, f"--mode={mode}", "--wait", "--timeout=60"],
                           stdout=subprocess.DEVNULL)
        else:
            # The server inherits pg_ctl's stdout: never a pipe, or the call waits for it to exit.
            self._as_owner([f"{self.bin}/pg_ctl", "start", data, "--wait", "--timeout=60", "-o", self.options,
                            f"--log={self.dir}/postgres.log"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)

    def psql(self, database: str, sql: str) -> list[list[str]]:
        out = self._as_owner([f"{self.bin}/psql", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "-d", database,
                              "-At", "-F", "\t", "-c", sql], capture_output=True, text=True).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def create_database(self) -> str:
        name = f"reliability_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return f"{self.base_url.rsplit('/', 1)[0]}/{name}"


def workdir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=f"mlkube-{prefix}-")


def result(values: dict, ok: bool) -> None:
    """The scenario's last stdout line, read by tests/reliability/run."""
    print("RESULT " + json.dumps(dict(values, ok=ok), separators=(",", ":")), flush=True)
    sys.exit(0 if ok else 1)
