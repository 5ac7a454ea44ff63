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


def s3_api():
    """A boto3 client for the test S3 server itself (MLKUBE_TEST_S3_ENDPOINT), not the proxy."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=os.environ["MLKUBE_TEST_S3_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def pending_multipart_uploads(key_containing: str = "") -> int:
    """Multipart uploads started and neither completed nor aborted, in every bucket of the test
    S3 server, whose key contains `key_containing`."""
    s3 = s3_api()
    return sum(
        1
        for b in s3.list_buckets()["Buckets"]
        for u in s3.list_multipart_uploads(Bucket=b["Name"]).get("Uploads", [])
        if key_containing in u["Key"]
    )


def stored_objects(key_containing: str) -> dict[str, dict]:
    """The objects in every bucket of the test S3 server whose key contains `key_containing`:
    key -> {Size, ETag}."""
    s3 = s3_api()
    found = {}
    for b in s3.list_buckets()["Buckets"]:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b["Name"]):
            for obj in page.get("Contents", []):
                if key_containing in obj["Key"]:
                    found[obj["Key"]] = {"Size": obj["Size"], "ETag": obj["ETag"].strip('"')}
    return found


@pytest.mark.skipif(not ON_S3, reason="checks the S3 server itself")
def test_a_client_upload_aborted_after_a_part_leaves_no_parts(run_id):
    """MLflow's client-driven multipart upload: one part goes straight to the store through its
    presigned URL, then the client aborts through the server. The store keeps no pending upload
    and no object."""
    created = requests.post(
        api_url(f"/mlflow-artifacts/mpu/create/0/{run_id}/artifacts"),
        json={"path": "/tmp/local/aborted.bin", "num_parts": 2},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    body = created.json()
    part = requests.put(body["credentials"][0]["url"], data=os.urandom(5 * MIB), timeout=60)
    assert part.status_code == 200, part.text
    assert part.headers.get("ETag")
    # The part is on the store, waiting for its upload to complete.
    assert pending_multipart_uploads(run_id) == 1
    aborted = requests.post(
        api_url(f"/mlflow-artifacts/mpu/abort/0/{run_id}/artifacts"),
        json={"path": "aborted.bin", "upload_id": body["upload_id"]},
        timeout=30,
    )
    assert aborted.status_code == 200, aborted.text
    assert pending_multipart_uploads(run_id) == 0
    assert stored_objects(run_id) == {}


@pytest.mark.skipif(not ON_S3, reason="the server's own multipart upload to S3")
def test_a_20_mb_proxied_put_goes_to_s3_in_parts_and_round_trips(client, run_id, tmp_path, monkeypatch):
    """Without MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD the client streams one PUT through the proxy;
    past 8 MiB the server uploads it to the store as a multipart upload of its own (three parts
    here, so the store's ETag ends in -3), and the download is the same bytes."""
    monkeypatch.delenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", raising=False)
    size = 20 * MIB + 777
    upload_and_check(client, run_id, tmp_path, size)
    stored = stored_objects(f"{run_id}/artifacts/model/weights.bin")
    assert [o["Size"] for o in stored.values()] == [size], stored
    assert [o["ETag"].rsplit("-", 1)[-1] for o in stored.values()] == ["3"], stored
    assert pending_multipart_uploads(run_id) == 0


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
