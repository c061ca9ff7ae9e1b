"""Dask-distributed predict and preprocessing, and resumable predict runs: a real LocalCluster
(2 worker processes) on tiny scans and the tiny study."""

from __future__ import annotations

import filecmp
import os
import signal
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest
from test_predict import head, predict, read_table, save_tiny_model

from gmvol.data.preprocess import PreprocessConfig, build_cache
from gmvol.distributed import dask_client, dask_map, parse_address
from gmvol.ledger import Ledger, ledger_path, read_records

SCANS = ("s0", "s1", "broken", "s3", "s4", "s5")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Six tiny scans, the third a truncated file."""
    root = tmp_path_factory.mktemp("scans")
    paths = []
    for i, name in enumerate(SCANS):
        paths.append(root / f"{name}.nii.gz")
        nib.save(head(i), paths[-1])
    blob = paths[2].read_bytes()
    paths[2].write_bytes(blob[: len(blob) // 3])
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The tcp:// address of a 2-worker LocalCluster, as `--dask local:2` starts it."""
    with dask_client("local:2") as client:
        yield client.scheduler.address


def test_addresses_are_checked() -> None:
    assert parse_address("local:3") == 3 and parse_address("tcp://10.0.0.1:8786") is None
    for bad in ("local:0", "10.0.0.1:8786", "local:two", ""):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_predict_on_a_local_cluster_gives_the_local_table(
        tmp_path: Path, model_dir: Path, scans: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    local, dask = tmp_path / "local.csv", tmp_path / "dask.csv"
    status, _, local_err = predict(capsys, model_dir, *scans, "--out", str(local))
    assert status == 1
    status, _, err = predict(capsys, model_dir, *scans, "--out", str(dask), "--dask", "local:2")
    assert status == 1, err
    assert dask.read_bytes() == local.read_bytes()
    table = read_table(dask.read_text())
    assert table["subject"].tolist() == [s for s in SCANS if s != "broken"]
    assert {"qc_pass", "qc_fov"} <= set(table.columns)
    broken = [line for line in err.splitlines() if scans[2] in line]
    assert len(broken) == 2 and "corrupt gzip" in broken[0]  # live, and in the summary
    assert broken == [line for line in local_err.splitlines() if scans[2] in line]
    assert "1 of 6 scan(s) failed" in err


def test_an_interrupted_run_resumes_without_recomputing(
        tmp_path: Path, model_dir: Path, scans: list[str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    good = [s for s in scans if "broken" not in s]
    out, reference = tmp_path / "v.csv", tmp_path / "reference.csv"
    assert predict(capsys, model_dir, *good, "--out", str(reference))[0] == 0
    record = Ledger.record
    calls = []

    def record_then_sigint(self: Ledger, *args: object, **kwargs: object) -> None:
        record(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # a real SIGINT, right after the second row was committed
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Ledger, "record", record_then_sigint)
    status, _, err = predict(capsys, model_dir, *good, "--out", str(out))
    assert status == 130 and not out.exists()
    assert "2 finished scan(s) are kept" in err
    monkeypatch.setattr(Ledger, "record", record)

    status, _, err = predict(capsys, model_dir, *good, "--out", str(out))
    assert status == 0 and "2 of 5 scan(s) already done" in err
    assert out.read_bytes() == reference.read_bytes()
    rows = [r for r in read_records(ledger_path(out)) if "subject" in r]
    runs = {r["subject"]: [x["run"] for x in rows if x["subject"] == r["subject"]] for r in rows}
    assert list(runs.values()) == [[1], [1], [2], [2], [2]]  # the first two were not recomputed
    # a third run computes nothing, and writes the same table
    status, _, err = predict(capsys, model_dir, *good, "--out", str(out))
    assert status == 0 and "5 of 5 scan(s) already done" in err and out.read_bytes() == reference.read_bytes()
    # a changed input file is recomputed
    nib.save(head(9), good[0])
    assert "4 of 5 scan(s) already done" in predict(capsys, model_dir, *good, "--out", str(out))[2]


def test_preprocess_on_dask_writes_the_same_cache(tiny_study: Path, tmp_path: Path, scheduler: str) -> None:
    spec = {"voxel_size": 10.0, "shape": (18, 22, 18)}
    build_cache(tiny_study / "subjects.csv", PreprocessConfig(**spec, workers=1), tmp_path / "local")
    build_cache(tiny_study / "subjects.csv",
                PreprocessConfig(**spec, executor="dask", dask_address=scheduler), tmp_path / "dask")
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert len(names) == 1 + len(pd.read_csv(tiny_study / "subjects.csv"))
    assert sorted(p.name for p in (tmp_path / "dask").iterdir()) == names
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "local", tmp_path / "dask", names, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == len(names)


def test_executor_dask_needs_an_address() -> None:
    with pytest.raises(ValueError, match="dask_address"):
        PreprocessConfig(executor="dask")


def test_a_dead_worker_is_retried_once_then_reported(tmp_path: Path, scheduler: str) -> None:
    marker = tmp_path / "died-once"

    def dies_the_first_time(job: int) -> int:
        if job == 1 and not marker.exists():
            marker.touch()
            os._exit(1)
        return job * 10

    assert dask_map(dies_the_first_time, [0, 1, 2], scheduler, "test") == [0, 10, 20]

    def always_dies(job: int) -> int:
        if job == 1:
            os._exit(1)
        return job

    with pytest.raises(BrokenProcessPool, match="died"):
        dask_map(always_dies, [0, 1], scheduler, "test")
