"""End to end: the whole study under `dvc repro` in a temporary git + DVC repo, with tiny params."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from study import dvc, make_study, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_study(tmp_path_factory.mktemp("e2e") / "study")
    dvc("repro", cwd=path)
    return path


def test_repro_writes_every_stage_output(study: Path) -> None:
    data = study / "data"
    for rel in ("synthetic/sub-0001/mri/orig.mgz", "cohort_stats.json", "subjects.csv", "excluded.csv",
                "split/train.csv", "split/test.csv", "cache/spec.json", "models/meshnet/model.pt",
                "models/baseline/model.json", "train/meshnet/curves.csv", "eval/meshnet/metrics.json",
                "eval/baseline/boxplot.png", "saliency/meshnet/focus.csv", "saliency/meshnet/best.png",
                "report/index.html"):
        assert (data / rel).is_file(), rel
    metrics = json.loads((data / "eval" / "meshnet" / "metrics.json").read_text())
    assert set(metrics) == {"model", "mean_predictor", "total_scaling"}
    assert {"normalized_loss", "r2_median", "icc_median", "seconds_per_scan_end_to_end"} <= set(metrics["model"])
    assert "boxplot" in (data / "report" / "index.html").read_text()


def test_second_repro_does_nothing_and_status_is_clean(study: Path) -> None:
    again = dvc("repro", cwd=study).stdout
    assert "Running stage" not in again
    assert "up to date" in dvc("status", cwd=study).stdout


def test_metrics_and_plots_commands(study: Path) -> None:
    shown = dvc("metrics", "show", "--json", cwd=study).stdout
    assert "data/eval/meshnet/metrics.json" in shown and "mean_predictor" in shown
    out = study / "plots"
    dvc("plots", "show", "-o", str(out), cwd=study)
    assert (out / "index.html").is_file()


def test_metrics_diff_shows_a_changed_training_param(study: Path) -> None:
    run(["git", "add", "-A"], study)
    run(["git", "commit", "-qm", "baseline run"], study)
    params = yaml.safe_load((study / "params.yaml").read_text())
    params["train"]["lr"] = params["train"]["lr"] * 3
    (study / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = dvc("repro", cwd=study).stdout
    assert "train@meshnet" in rerun and "Running stage 'synthesize'" not in rerun
    diff = dvc("metrics", "diff", "HEAD", "--json", cwd=study).stdout
    changed = json.loads(diff)
    assert "data/eval/meshnet/metrics.json" in changed
    assert any(k.startswith("model.") for k in changed["data/eval/meshnet/metrics.json"])
    assert "train.lr" in dvc("params", "diff", "HEAD", cwd=study).stdout
