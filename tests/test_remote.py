"""The collaborator workflow: push a reproduced study to a DVC remote, clone it, pull, reuse, predict.

One tiny study is reproduced once (module fixture) and round-tripped twice: through a local
directory remote, and through an S3 remote served by a moto server bound to 127.0.0.1.
"""

from __future__ import annotations

import filecmp
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from study import dvc, make_study, run

from gmvol.predict import TABLE_COLUMNS

pytestmark = pytest.mark.slow

MODEL = Path("data/models/meshnet_count")
PULLED = ("data/models/meshnet_count/model.pt", "data/models/meshnet_count/model.json", "data/models/baseline/model.json",
          "data/cache/spec.json", "data/eval/meshnet_grid/boxplot.png", "data/report/index.html")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study, reproduced and committed (dvc.lock and the .gitignore files DVC wrote)."""
    path = make_study(tmp_path_factory.mktemp("shared") / "study")
    dvc("repro", cwd=path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "reproduced"], path)
    return path


def clone(study: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(study), str(dest)], dest.parent)
    assert not (dest / MODEL / "model.pt").exists()  # outputs live in the remote, not in git
    return dest


def scan_of(study: Path) -> Path:
    """A test subject's T1 (relative to the repo), from the committed split."""
    subject = pd.read_csv(study / "data" / "split" / "test.csv")["subject"].iloc[0]
    return Path("data") / "synthetic" / subject / "mri" / "orig.mgz"


def predict(repo: Path, scan: Path, out: Path) -> str:
    from gmvol.cli import main

    assert main(["predict", str(repo / scan), "--model", str(repo / MODEL), "--out", str(out)]) == 0
    return out.read_text()


def check_reuse(study: Path, copy: Path, tmp_path: Path, *remote: str) -> None:
    """The pulled clone matches the original, is in sync with the remote, and reproduces nothing."""
    for rel in PULLED:
        assert filecmp.cmp(study / rel, copy / rel, shallow=False), rel
    synced = dvc("status", "-c", *remote, "--json", cwd=copy)
    assert json.loads(synced.stdout) == {}, synced.stdout
    assert "up to date" in dvc("status", cwd=copy).stdout
    again = dvc("repro", cwd=copy)
    assert "Running stage" not in again.stdout, again.stdout

    scan = scan_of(study)
    original = predict(study, scan, tmp_path / "a.csv")
    pulled = predict(copy, scan, tmp_path / "b.csv")
    assert original == pulled
    table = pd.read_csv(tmp_path / "a.csv")
    assert len(table) == 1 and list(table.columns) == list(TABLE_COLUMNS) and table["total"].iloc[0] > 0


def test_local_directory_remote(study: Path, tmp_path: Path) -> None:
    store = tmp_path / "remote"
    dvc("remote", "add", "-d", "local", str(store), cwd=study)
    run(["git", "commit", "-qam", "default remote"], study)  # collaborators get it with the clone
    dvc("push", "--run-cache", cwd=study)
    assert (store / "files" / "md5").is_dir()
    assert any((store / "runs").rglob("*")), "--run-cache pushed no run cache"

    copy = clone(study, tmp_path / "clone")
    assert str(store) in (copy / ".dvc" / "config").read_text()
    pulled = dvc("pull", cwd=copy)
    assert "Running stage" not in pulled.stdout
    check_reuse(study, copy, tmp_path)

    other = clone(study, tmp_path / "clone-repro-pull")  # the one-command path: fetch what repro needs
    reused = dvc("repro", "--pull", cwd=other)
    assert "Running stage" not in reused.stdout, reused.stdout
    assert filecmp.cmp(study / MODEL / "model.pt", other / MODEL / "model.pt", shallow=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, with dummy credentials in the environment only."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                       "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                       "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "moto.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto server exited ({server.returncode}): {(tmp_path / 'moto.log').read_text()}")
            try:
                opener.open(url, timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answered
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer on {url} within 60 s")
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def test_s3_remote(study: Path, tmp_path: Path, s3_endpoint: str) -> None:
    import boto3

    bucket = "gmvol-dvc"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)

    def add_remote(repo: Path) -> None:
        dvc("remote", "add", "-f", "s3remote", f"s3://{bucket}/store", cwd=repo)
        dvc("remote", "modify", "s3remote", "endpointurl", s3_endpoint, cwd=repo)

    add_remote(study)
    dvc("push", "-r", "s3remote", "--run-cache", cwd=study)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert any(k.startswith("store/files/md5/") for k in keys), keys[:10]
    assert any(k.startswith("store/runs/") for k in keys), "--run-cache pushed no run cache"

    copy = clone(study, tmp_path / "clone")
    add_remote(copy)
    dvc("pull", "-r", "s3remote", cwd=copy)
    for repo in (study, copy):
        for config in (repo / ".dvc").glob("config*"):
            assert "testing" not in config.read_text(), config  # credentials stay in the env
    check_reuse(study, copy, tmp_path, "-r", "s3remote")
