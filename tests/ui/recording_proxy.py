"""A small recording reverse proxy between the browser and the tracking server (127.0.0.1 only).

The browser talks to the proxy, the proxy forwards each request unchanged to the server and keeps a
record of it: method, path with query, request body, status, and the parsed body of JSON responses.
It sees what Playwright's page events miss, such as the requests of the 3.x UI's telemetry
SharedWorker and the favicon, and it works the same in front of any server.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy recomputes.
_DROP_REQUEST = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                 "transfer-encoding", "accept-encoding", "host", "content-length"}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "trailer", "upgrade", "content-length"}
_JSON_BODY_LIMIT = 4 * 1024 * 1024


class RecordingProxy:
    def __init__(self, target: str):
        split = urlsplit(target)
        if split.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the proxy forwards to loopback addresses only, not {target}")
        self.target_host = split.hostname
        self.target_port = split.port or 80
        self.target_origin = f"{split.scheme}://{split.netloc}"
        self.records: list[dict] = []
        self.in_flight = 0
        self.last_activity = time.monotonic()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-proxy", daemon=True)

    def __enter__(self) -> "RecordingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- bookkeeping, shared with the browser side ---

    def mark(self) -> int:
        """Index of the next record: records[mark():] are those made after this call."""
        with self._lock:
            return len(self.records)

    def slice(self, start: int) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self.records[start:]]

    def idle_for(self) -> float:
        """Seconds since the last request started or ended; 0 while any is open."""
        with self._lock:
            return 0.0 if self.in_flight else time.monotonic() - self.last_activity

    def _begin(self, rec: dict) -> None:
        with self._lock:
            self.records.append(rec)
            self.in_flight += 1
            self.last_activity = time.monotonic()

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last_activity = time.monotonic()

    # --- the handler ---

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep stderr quiet
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                rec = {
                    "method": self.command,
                    "url": proxy.origin + self.path,
                    "status": None,
                    "error": None,
                    "post_data": body.decode("utf-8", "replace") if body else None,
                }
                proxy._begin(rec)
                try:
                    status, headers, payload = self._upstream(body)
                except OSError as err:
                    rec["error"] = f"proxy could not reach the server: {err}"
                    status, headers, payload = 502, [("Content-Type", "text/plain")], rec["error"].encode()
                rec["status"] = status
                content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
                rec["content_type"] = content_type
                if "json" in content_type and len(payload) <= _JSON_BODY_LIMIT:
                    try:
                        rec["json"] = json.loads(payload)
                    except ValueError:
                        rec["json"] = None
                try:
                    self.send_response(status)
                    for key, value in headers:
                        if key.lower() == "location" and value.startswith(proxy.target_origin):
                            value = proxy.origin + value[len(proxy.target_origin):]
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except OSError:
                    pass  # the browser went away (a cancelled request)
                finally:
                    proxy._end()

            def _upstream(self, body):
                conn = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _DROP_REQUEST}
                    headers["Host"] = f"{proxy.target_host}:{proxy.target_port}"
                    if body is not None:
                        headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                    kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _DROP_RESPONSE]
                    return resp.status, kept, payload
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

        return Handler
