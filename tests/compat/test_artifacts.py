"""Artifacts through the mlflow-artifacts proxy: upload, list, download, log_dict/log_text."""

from __future__ import annotations

import filecmp
import json
import os

import mlflow
import mlflow.artifacts
import yaml

from conftest import unique_name


def write(path, content: bytes | str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(path, mode) as f:
        f.write(content)


def test_log_artifact_and_download(client, run_id, tmp_path):
    src = tmp_path / "src" / "notes.txt"
    write(str(src), "hello artifacts\n")
    blob = tmp_path / "src" / "blob.bin"
    write(str(blob), bytes(range(256)) * 64)

    client.log_artifact(run_id, str(src))
    client.log_artifact(run_id, str(blob), artifact_path="bin/data")

    top = {f.path: f for f in client.list_artifacts(run_id)}
    assert set(top) == {"notes.txt", "bin"}
    assert top["notes.txt"].is_dir is False
    assert top["notes.txt"].file_size == len("hello artifacts\n")
    assert top["bin"].is_dir is True

    nested = client.list_artifacts(run_id, "bin/data")
    assert [(f.path, f.is_dir, f.file_size) for f in nested] == [("bin/data/blob.bin", False, 256 * 64)]

    dst = tmp_path / "dst"
    dst.mkdir()
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="notes.txt", dst_path=str(dst))
    assert open(local).read() == "hello artifacts\n"
    local_blob = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="bin/data/blob.bin", dst_path=str(dst)
    )
    assert filecmp.cmp(local_blob, str(blob), shallow=False)


def test_log_artifacts_nested_tree_round_trip(client, run_id, tmp_path):
    tree = tmp_path / "tree"
    files = {
        "a.txt": "alpha",
        "sub/b.json": json.dumps({"b": [1, 2, 3]}),
        "sub/deeper/c.csv": "x,y\n1,2\n",
        "sub/deeper/deepest/d.bin": os.urandom(4096),
        "with space.txt": "spaced name",
        "unicodé-ñ.txt": "non-ascii name",
    }
    for rel, content in files.items():
        write(str(tree / rel), content)

    client.log_artifacts(run_id, str(tree), artifact_path="outputs")

    listing = client.list_artifacts(run_id, "outputs")
    by_path = {f.path: f for f in listing}
    assert set(by_path) == {"outputs/a.txt", "outputs/sub", "outputs/with space.txt", "outputs/unicodé-ñ.txt"}
    assert by_path["outputs/sub"].is_dir
    assert by_path["outputs/a.txt"].file_size == 5
    deeper = {f.path: f.is_dir for f in client.list_artifacts(run_id, "outputs/sub/deeper")}
    assert deeper == {"outputs/sub/deeper/c.csv": False, "outputs/sub/deeper/deepest": True}

    dst = tmp_path / "download"
    dst.mkdir()
    local_root = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="outputs", dst_path=str(dst))
    downloaded = {}
    for dirpath, _, names in os.walk(local_root):
        for n in names:
            full = os.path.join(dirpath, n)
            downloaded[os.path.relpath(full, local_root)] = open(full, "rb").read()
    assert downloaded == {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}


def test_list_artifacts_empty_and_missing(client, run_id):
    assert client.list_artifacts(run_id) == []
    assert client.list_artifacts(run_id, "does/not/exist") == []


def test_log_dict_and_log_text(client, run_id):
    payload = {"model": "lr", "features": ["a", "b"], "nested": {"depth": 2, "ok": True}}
    client.log_dict(run_id, payload, "config/params.json")
    client.log_text(run_id, "line one\nline two\n", "notes/readme.md")
    client.log_dict(run_id, {"k": [1, 2]}, "config/params.yaml")

    run = client.get_run(run_id)
    base = run.info.artifact_uri.rstrip("/")
    assert mlflow.artifacts.load_dict(f"{base}/config/params.json") == payload
    assert yaml.safe_load(mlflow.artifacts.load_text(f"{base}/config/params.yaml")) == {"k": [1, 2]}
    assert mlflow.artifacts.load_text(f"{base}/notes/readme.md") == "line one\nline two\n"
    assert sorted(f.path for f in client.list_artifacts(run_id, "config")) == [
        "config/params.json",
        "config/params.yaml",
    ]


def test_fluent_log_artifact_and_runs_uri_download(client, experiment_id, tmp_path):
    src = tmp_path / "report.html"
    write(str(src), "<h1>report</h1>")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(src), artifact_path="reports")
        mlflow.log_text("fluent text", "fluent.txt")
    dst = tmp_path / "out"
    dst.mkdir()
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{run.info.run_id}/reports/report.html", dst_path=str(dst)
    )
    assert open(local).read() == "<h1>report</h1>"
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/fluent.txt") == "fluent text"


def test_overwrite_artifact_replaces_content(client, run_id, tmp_path):
    path = tmp_path / "v.txt"
    write(str(path), "first version")
    client.log_artifact(run_id, str(path))
    write(str(path), "second")
    client.log_artifact(run_id, str(path))
    base = client.get_run(run_id).info.artifact_uri.rstrip("/")
    assert mlflow.artifacts.load_text(f"{base}/v.txt") == "second"
    (info,) = client.list_artifacts(run_id)
    assert info.file_size == len("second")


def test_artifacts_are_isolated_per_run(client, experiment_id, tmp_path):
    a = client.create_run(experiment_id).info.run_id
    b = client.create_run(experiment_id).info.run_id
    f = tmp_path / "only-a.txt"
    write(str(f), unique_name())
    client.log_artifact(a, str(f))
    assert [x.path for x in client.list_artifacts(a)] == ["only-a.txt"]
    assert client.list_artifacts(b) == []
