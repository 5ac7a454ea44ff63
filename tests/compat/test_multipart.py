"""Large artifacts and MLflow's proxied multipart upload (MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD).

With the server's artifact destination on S3 (MLKUBE_COMPAT_ARTIFACTS=s3) the client gets one
presigned URL per part, uploads the parts straight to the store and completes the upload through
the server; on a local destination the server answers the NOT_IMPLEMENTED message the client
falls back from, and the file goes up as one streamed PUT. Either way the downloaded file is the
uploaded one, byte for byte.
"""

from __future__ import annotations

import hashlib
import os

import mlflow
import mlflow.artifacts
import pytest
import requests

from compat_helpers import api_url
from conftest import UPSTREAM

ON_S3 = os.environ.get("MLKUBE_COMPAT_ARTIFACTS") == "s3"
MIB = 1024 * 1024


def make_file(path, size: int) -> str:
    """A file of `size` pseudo-random bytes (cheap to make, impossible to compress), its sha256."""
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        left = size
        i = 0
        while left:
            chunk = (block[i % 251 :] + block[: i % 251])[: min(MIB, left)]
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
            i += 1
    return digest.hexdigest()


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def upload_and_check(client, run_id, tmp_path, size: int):
    src = tmp_path / "weights.bin"
    want = make_file(src, size)
    client.log_artifact(run_id, str(src), artifact_path="model")
    listed = {f.path: f.file_size for f in client.list_artifacts(run_id, "model")}
    assert listed == {"model/weights.bin": size}
    dst = tmp_path / "dst"
    dst.mkdir()
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model/weights.bin", dst_path=str(dst))
    assert sha256_of(local) == want


def test_multipart_upload_or_clean_fallback(client, run_id, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(5 * MIB))
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(5 * MIB))
    # Three parts, the last one short.
    upload_and_check(client, run_id, tmp_path, 12 * MIB + 12345)


@pytest.mark.skipif(not ON_S3, reason="the 200 MB multipart upload runs with the S3 destination")
def test_200_mb_multipart_upload(client, run_id, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    upload_and_check(client, run_id, tmp_path, 200 * MIB)


def test_multipart_requests_are_answered_in_mlflow_shape(run_id):
    base = api_url(f"/mlflow-artifacts/mpu/create/0/{run_id}/artifacts")
    if not ON_S3:
        resp = requests.post(base, json={"path": "x.bin", "num_parts": 2}, timeout=30)
        assert resp.status_code == 501
        assert resp.json()["message"].startswith("Multipart upload is not supported for the current artifact repository")
        return
    created = requests.post(base, json={"path": "/tmp/local/x.bin", "num_parts": 2}, timeout=30)
    assert created.status_code == 200, created.text
    body = created.json()
    assert [c["part_number"] for c in body["credentials"]] == [1, 2]
    assert all("uploadId=" in c["url"] and "partNumber=" in c["url"] for c in body["credentials"])
    # Abort: the parts are dropped; completing afterwards fails, and nothing appears.
    aborted = requests.post(
        api_url(f"/mlflow-artifacts/mpu/abort/0/{run_id}/artifacts"),
        json={"path": "x.bin", "upload_id": body["upload_id"]},
        timeout=30,
    )
    assert aborted.status_code == 200, aborted.text
    listed = requests.get(api_url("/mlflow-artifacts/artifacts"), params={"path": f"0/{run_id}/artifacts"}, timeout=30)
    assert "x.bin" not in listed.text


def pending_multipart_uploads() -> int:
    """Multipart uploads started and neither completed nor aborted, in every bucket of the test
    S3 server (MLKUBE_TEST_S3_ENDPOINT)."""
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["MLKUBE_TEST_S3_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    return sum(
        len(s3.list_multipart_uploads(Bucket=b["Name"]).get("Uploads", [])) for b in s3.list_buckets()["Buckets"]
    )


@pytest.mark.skipif(not ON_S3, reason="checks the S3 server itself")
def test_an_upload_cut_mid_stream_leaves_no_object_and_no_parts(run_id):
    """A PUT through the proxy that dies after 20 MB (so the server had started a multipart
    upload of its own): nothing under the name, and no orphaned parts on the store."""
    import http.client
    import time
    import urllib.parse

    url = urllib.parse.urlsplit(api_url(""))
    path = f"{url.path}/mlflow-artifacts/artifacts/0/{run_id}/artifacts/cut.bin"
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("PUT", path)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = os.urandom(MIB)
    for _ in range(20):
        conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    conn.sock.close()  # no terminating chunk: the client went away
    deadline = time.time() + 30
    while time.time() < deadline and pending_multipart_uploads():
        time.sleep(0.2)
    assert pending_multipart_uploads() == 0
    got = requests.get(api_url(f"/mlflow-artifacts/artifacts/0/{run_id}/artifacts/cut.bin"), timeout=30)
    # Nothing under the name either way; upstream `mlflow server` answers a missing S3 object with
    # a 500 where mlkube says 404.
    assert got.status_code == (500 if UPSTREAM else 404), got.text
