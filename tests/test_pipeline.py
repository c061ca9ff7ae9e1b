"""End to end: the whole study under `dvc repro` in a temporary git + DVC repo, with tiny params."""

from __future__ import annotations

import base64
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from study import ROOT, dvc, make_study, run

from gmvol.evaluation.tables import HEADLINE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_study(tmp_path_factory.mktemp("e2e") / "study")
    dvc("repro", cwd=path)
    return path


def test_repro_writes_every_stage_output(study: Path) -> None:
    data = study / "data"
    for rel in ("synthetic/sub-0001/mri/orig.mgz", "cohort_stats.json", "subjects.csv", "excluded.csv",
                "split/train.csv", "split/test.csv", "cache/spec.json", "models/meshnet_grid/model.pt",
                "models/baseline/model.json", "train/meshnet_grid/curves.csv", "eval/meshnet_grid/metrics.json",
                "eval/baseline/boxplot.png", "saliency/meshnet_grid/focus.csv", "saliency/meshnet_count/best.png",
                "report/index.html", "heldout_anatomy/ho-0001/mri/orig.mgz", "heldout_anatomy/cohort.csv",
                "cohort_montage.png", "eval/meshnet_grid/heldout_predictions.csv", "extrapolation/cohort.csv",
                "eval/meshnet_count/extrapolation_predictions.csv", "models/meshnet_count/model.pt"):
        assert (data / rel).is_file(), rel
    scores = json.loads((data / "eval" / "meshnet_grid" / "scores.json").read_text())
    assert set(scores) == {"model", "mean_predictor", "total_scaling", "heldout_anatomy", "extrapolation"}
    held = scores["heldout_anatomy"]
    assert set(held) == {"model", "mean_predictor", "total_scaling"}
    assert held["mean_predictor"]["normalized_loss"] > 0 and "hemisphere_error_median" in held["model"]
    assert {"normalized_loss", "r2_median", "icc_median", "hemisphere_error_median",
            "seconds_per_scan_end_to_end"} <= set(scores["model"])
    headline = json.loads((data / "eval" / "meshnet_grid" / "metrics.json").read_text())
    assert headline["nl"] == pytest.approx(scores["model"]["normalized_loss"], rel=1e-3)
    baseline = json.loads((data / "eval" / "mean_predictor" / "scores.json").read_text())
    assert baseline == scores["mean_predictor"]  # scored once for the study, the same as per model
    page = (data / "report" / "index.html").read_text()
    assert 'id="heldout"' in page
    for png in ("eval/meshnet_grid/boxplot.png", "eval/baseline/scatter.png", "saliency/meshnet_count/worst.png",
                "cohort_montage.png"):
        embedded = base64.b64encode((data / png).read_bytes()).decode()
        assert f"data:image/png;base64,{embedded}" in page, f"{png} is not shown in the report"


def test_second_repro_does_nothing_and_status_is_clean(study: Path) -> None:
    again = dvc("repro", cwd=study).stdout
    assert "Running stage" not in again
    assert "up to date" in dvc("status", cwd=study).stdout


def _status_after(study: Path, change: Callable[[dict], None]) -> set[str]:
    """The stages `dvc status` calls changed after `change` to params.yaml (then restored)."""
    path = study / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        return set(json.loads(dvc("status", "--json", cwd=study).stdout))
    finally:
        path.write_text(original)


def test_adding_a_model_reruns_only_its_chain_and_the_report(study: Path) -> None:
    new_chain = {"train@resnet", "evaluate@resnet", "saliency@resnet", "report"}
    assert _status_after(study, lambda p: p["study"]["models"].append("resnet")) == new_chain

    def add_and_retune(p: dict) -> None:
        p["study"]["models"].append("resnet")
        p["models"]["resnet"]["resnet"]["base_channels"] = 4
    assert _status_after(study, add_and_retune) == new_chain
    # changing a model nobody trains touches no stage but the report, which shows every param
    assert _status_after(study, lambda p: p["models"]["resnet"]["resnet"].update(n_heads=2)) == {"report"}
    assert "up to date" in dvc("status", cwd=study).stdout


def test_a_fresh_clone_reproduces_every_model_and_cache_byte_for_byte(study: Path, tmp_path: Path) -> None:
    """Timings live only in metrics files, so model and cache hashes repeat across clones."""
    other = make_study(tmp_path / "clone")
    dvc("repro", cwd=other)
    first, second = lock_hashes(study), lock_hashes(other)
    assert first.keys() == second.keys() and {"data/cache", "data/models/meshnet_count"} <= first.keys()
    assert {k for k in first if first[k] != second[k]} == set()


def lock_hashes(study: Path) -> dict[str, str]:
    """Output path -> md5 from dvc.lock, less the files that hold timings or a clock value."""
    lock = yaml.safe_load((study / "dvc.lock").read_text())["stages"]
    hashes = {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", [])}
    timed = ("metrics.json", "scores.json", "index.html")
    return {path: md5 for path, md5 in hashes.items() if not path.endswith(timed)}


def test_metrics_and_plots_commands(study: Path) -> None:
    shown = json.loads(dvc("metrics", "show", "--json", cwd=study).stdout)
    files = next(iter(shown.values()))["data"]
    models = ("meshnet_count", "meshnet_grid", "baseline")
    assert set(files) == {f"data/eval/{p}/metrics.json" for p in (*models, "mean_predictor", "total_scaling")}
    for name, entry in files.items():  # the test-split headline in every row, one row per predictor
        data = entry["data"]
        is_model = name.split("/")[2] in models
        assert set(data) == set(HEADLINE) | ({"heldout_anatomy", "extrapolation"} if is_model else set()), name
        for extra in ("heldout_anatomy", "extrapolation") if is_model else ():  # with the same baselines
            assert set(data[extra]) == {"model", "mean_predictor", "total_scaling"}
            assert all(set(block) == set(HEADLINE) for block in data[extra].values())
    table = dvc("metrics", "show", cwd=study).stdout.splitlines()
    assert len(table) == 1 + len(files), table
    out = study / "plots"
    dvc("plots", "show", "-o", str(out), cwd=study)
    assert (out / "index.html").is_file()


def readme_exp_show() -> list[str]:
    """The README's `dvc exp show ...` command line, as words."""
    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("dvc exp show --only-changed"))
    return shlex.split(line, comments=True)


def test_an_experiment_and_the_readme_comparisons_fit_a_terminal(study: Path) -> None:
    run(["git", "add", "-A"], study)
    run(["git", "commit", "-qm", "baseline run"], study)
    lr = yaml.safe_load((study / "params.yaml").read_text())["models"]["meshnet_count"]["train"]["lr"] / 2
    rerun = dvc("exp", "run", "-S", f"models.meshnet_count.train.lr={lr}", cwd=study).stdout
    assert "train@meshnet_count" in rerun and "Running stage 'synthesize'" not in rerun
    words = readme_exp_show()
    shown = run([sys.executable, "-m", "dvc", *words[1:], "--no-pager"], study, env={"COLUMNS": "120"}).stdout
    rows = [ln for ln in shown.splitlines() if any(ch.isdigit() for ch in ln) and "metrics.json" not in ln]
    assert len(rows) >= 3, shown  # workspace, the baseline commit and the experiment
    assert max(map(len, shown.splitlines())) <= 120 and "…" not in shown, shown  # nothing cut off
    assert "meshnet_count/metrics.json:nl" in shown and "models.meshnet_count.train.lr" in shown
    diff = dvc("metrics", "diff", "HEAD", "--json", cwd=study).stdout
    changed = json.loads(diff)
    assert "data/eval/meshnet_count/metrics.json" in changed
    extra = {f"{s}.{p}.{k}" for s in ("heldout_anatomy", "extrapolation")
             for p in ("model", "mean_predictor", "total_scaling") for k in HEADLINE}
    assert set(changed["data/eval/meshnet_count/metrics.json"]) <= set(HEADLINE) | extra
    assert "data/eval/mean_predictor/metrics.json" not in changed  # the baselines do not train
    assert "models.meshnet_count.train.lr" in dvc("params", "diff", "HEAD", cwd=study).stdout
