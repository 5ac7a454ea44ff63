"""Small helpers shared by the compatibility tests."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import urllib.parse
from dataclasses import dataclass

import pytest
from mlflow.exceptions import MlflowException

from conftest import TRACKING_URI


@contextlib.contextmanager
def expect_mlflow_error(code: str):
    """Expect the block to raise an MlflowException carrying ``code`` (e.g. INVALID_PARAMETER_VALUE)."""
    with pytest.raises(MlflowException) as info:
        yield info
    assert info.value.error_code == code, f"expected {code}, got {info.value.error_code}: {info.value}"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def raw_request(method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> RawResponse:
    """Send ``path`` to the server byte for byte (no normalisation of ``..`` or re-encoding).

    ``requests``/urllib3 remove dot segments from URLs, which would hide exactly what the traversal tests
    send, so this talks http.client directly.
    """
    parsed = urllib.parse.urlsplit(TRACKING_URI)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=60)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        all_headers = {"Content-Length": str(len(body or b""))}
        all_headers.update(headers or {})
        for key, value in all_headers.items():
            conn.putheader(key, value)
        conn.endheaders(body or b"")
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def api_url(path: str, prefix: str = "/api/2.0") -> str:
    return f"{TRACKING_URI}{prefix}{path}"


def artifact_root() -> str | None:
    """Local directory the server stores proxied artifacts in, when the harness tells us."""
    return os.environ.get("MLKUBE_COMPAT_ARTIFACT_ROOT") or None
