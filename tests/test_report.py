"""The HTML study report, built from fake eval/saliency outputs of two models (no real run needed)."""

from __future__ import annotations

import base64
import html
import json
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gmvol.io import InputError
from gmvol.regions import LOBE_OF, REGION_COLUMNS, hemisphere_and_name
from gmvol.report import build_report
from gmvol.report.formatting import fmt_mm3, fmt_share, fmt_sig

MODELS = ("meshnet", "resnet")
WORST = "rh_entorhinal"
EVAL_PNGS = ("boxplot.png", "scatter.png", "normalized_loss.png", "segmentation.png")
SALIENCY_PNGS = ("best.png", "median.png", "worst.png")


def tiny_png(rgb: tuple[int, int, int]) -> bytes:
    """A valid 2x2 RGB PNG, built by hand so the test needs no plotting."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes(rgb) * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def summary(nl: float, r2: float | None, pearson: float | None, timings: bool) -> dict:
    """A scores.json predictor entry with the SUMMARY_KEYS shape."""
    entry = {"mse": nl * 4e6, "normalized_loss": nl, "mae_mm3": nl * 2e4, "mae_pct": nl * 300,
             "r2_median": r2, "r2_pooled": r2, "r2_min": -0.3, "worst_region": WORST,
             "pearson_median": pearson, "icc_median": pearson}
    if timings:
        entry |= {"seconds_per_scan_forward": 0.012, "seconds_per_scan_end_to_end": 1.5}
    return entry


def regions_csv(r2_shift: float) -> pd.DataFrame:
    """68 rows like evaluation's region table; WORST has the lowest R²."""
    rows = []
    for i, col in enumerate(REGION_COLUMNS):
        hemi, name = hemisphere_and_name(col)
        r2 = -0.3 if col == WORST else 0.2 + 0.01 * i + r2_shift
        rows.append({"region": col, "hemisphere": hemi, "lobe": LOBE_OF[name], "mse": 1e4 + i,
                     "normalized_loss": 0.01, "mae_mm3": 80.0 + i, "mae_pct": 3.0, "r2": r2,
                     "pearson_r": 0.7, "icc31": 0.6})
    return pd.DataFrame(rows)


def make_inputs(root: Path) -> dict[str, Path]:
    """eval/, saliency/ and params.yaml for MODELS; model i has normalized loss 0.01 * (i + 1)."""
    paths = {"eval": root / "eval", "saliency": root / "saliency", "params": root / "params.yaml"}
    for i, model in enumerate(MODELS):
        ev, sal = paths["eval"] / model, paths["saliency"] / model
        ev.mkdir(parents=True)
        sal.mkdir(parents=True)
        metrics = {"model": summary(0.01 * (i + 1), 0.6 - 0.1 * i, 0.8, timings=True)
                   | {"focus_in_region_median": 0.3 + 0.1 * i},
                   "mean_predictor": summary(0.04, -0.01, None, timings=False),
                   "total_scaling": summary(0.012, 0.5, 0.7, timings=False)}
        (ev / "scores.json").write_text(json.dumps(metrics))
        regions_csv(0.05 * i).to_csv(ev / "regions.csv", index=False)
        (sal / "summary.json").write_text(json.dumps({
            "focus_in_region_median": 0.3, "focus_in_brain_median": 0.8, "focus_outside_brain_median": 0.2,
            "method": "saliency", "best_region": "lh_insula", "median_region": "lh_cuneus",
            "worst_region": WORST}))
        pd.DataFrame({"region": list(REGION_COLUMNS), "in_region": 0.3, "in_brain_other": 0.5,
                      "outside_brain": 0.2}).to_csv(sal / "focus.csv", index=False)
        for j, name in enumerate(EVAL_PNGS):
            (ev / name).write_bytes(tiny_png((40 * i, 60 * j, 200)))
        for j, name in enumerate(SALIENCY_PNGS):
            (sal / name).write_bytes(tiny_png((200, 40 * i, 60 * j)))
    paths["params"].write_text("split:\n  seed: 0  # comment\n  test_fraction: 0.2\nmodels:\n  meshnet: {width: 21}\n")
    return paths


def build(paths: dict[str, Path], tmp_path: Path) -> str:
    out = tmp_path / "report" / "index.html"
    params = yaml.safe_load(paths["params"].read_text())
    build_report(list(MODELS), paths["eval"], paths["saliency"], params, str(paths["params"]), out)
    assert out.is_file()
    return html.unescape(out.read_text())


def test_report_shows_models_baselines_figures_and_worst_region(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path)
    page = build(paths, tmp_path)
    for model in MODELS:
        assert model in page
        for name in EVAL_PNGS:
            data = base64.b64encode((paths["eval"] / model / name).read_bytes()).decode()
            assert f"data:image/png;base64,{data}" in page
        for name in SALIENCY_PNGS:
            data = base64.b64encode((paths["saliency"] / model / name).read_bytes()).decode()
            assert f"data:image/png;base64,{data}" in page
    assert page.count("<img ") == len(MODELS) * (len(EVAL_PNGS) + len(SALIENCY_PNGS))
    assert page.count("<figcaption>") == page.count("<img ")
    assert 'alt=""' not in page
    # baselines appear once each (deduplicated), marked as taken from the first model
    assert page.count("mean predictor<br>") == 1 and page.count("total scaling (oracle)<br>") == 1
    assert page.count("baseline, from meshnet") == 2
    assert WORST in page and "10 worst regions by R²" in page
    assert "beats mean predictor 4.0x in normalized loss, beats total scaling (oracle) 1.2x" in page
    assert "<b>0.0100</b>" in page  # best normalized loss (meshnet) in bold
    assert "test_fraction: 0.2" in page and "Generated " in page
    assert str(paths["params"]) in page


def test_report_survives_missing_png_and_null_metrics(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path)
    missing = paths["eval"] / "resnet" / "scatter.png"
    missing.unlink()
    (paths["saliency"] / "meshnet" / "worst.png").unlink()
    metrics_path = paths["eval"] / "resnet" / "scores.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["model"] = {key: None for key in metrics["model"]}
    metrics_path.write_text(json.dumps(metrics))
    table = regions_csv(0.0)
    table.loc[0, ["r2", "pearson_r"]] = float("nan")
    table.to_csv(paths["eval"] / "resnet" / "regions.csv", index=False)
    page = build(paths, tmp_path)
    assert f"{missing} was not found" in page
    assert "worst.png was not found" in page
    assert "normalized loss vs mean predictor: n/a" in page
    assert "—" in page and ">nan<" not in page.lower()
    assert page.count("<img ") == len(MODELS) * (len(EVAL_PNGS) + len(SALIENCY_PNGS)) - 2


def test_report_warns_when_baselines_differ(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path)
    metrics_path = paths["eval"] / "resnet" / "scores.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["mean_predictor"]["normalized_loss"] = 0.05
    metrics_path.write_text(json.dumps(metrics))
    page = build(paths, tmp_path)
    assert "The baselines of resnet differ from those of meshnet" in page
    assert "beats mean predictor 2.5x" in page  # resnet's verdict uses its own baselines


def test_report_needs_metrics(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path)
    (paths["eval"] / "resnet" / "scores.json").unlink()
    with pytest.raises(InputError, match="scores.json"):
        build(paths, tmp_path)
    assert not (tmp_path / "report" / "index.html").exists()


def test_number_formats() -> None:
    assert fmt_sig(123456.0) == "123,000"
    assert fmt_sig(0.0012345) == "0.00123"
    assert fmt_sig(0.62) == "0.620"
    assert fmt_sig(float("nan")) == fmt_sig(None) == "—"
    assert fmt_mm3(1234.6) == "1,235"
    assert fmt_share(0.3) == "30%"


def test_report_shows_the_heldout_anatomy_and_the_cohort(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path)
    scores = paths["eval"] / "meshnet" / "scores.json"
    metrics = json.loads(scores.read_text())
    metrics["heldout_anatomy"] = {
        "model": summary(0.015, 0.55, 0.7, timings=False) | {"hemisphere_error_median": 0.031},
        "mean_predictor": summary(0.05, -0.2, None, timings=False) | {"hemisphere_error_median": 0.09},
        "total_scaling": summary(0.02, 0.4, 0.6, timings=False) | {"hemisphere_error_median": 0.0},
        "response": {"thickness_change": 0.153, "thickness_change_se": 0.2, "brain_scale": 1.0}}
    metrics["extrapolation"] = {
        "model": summary(0.02, 0.6, 0.7, timings=False) | {"hemisphere_error_median": 0.042},
        "mean_predictor": summary(0.09, -3.0, None, timings=False) | {"hemisphere_error_median": 0.27},
        "total_scaling": summary(0.01, 0.4, 0.6, timings=False) | {"hemisphere_error_median": 0.0}}
    scores.write_text(json.dumps(metrics))
    stats, montage = tmp_path / "cohort_stats.json", tmp_path / "montage.png"
    stats.write_text(json.dumps({"n_subjects": 670, "total_min": 301000.0, "total_max": 812000.0, "cv_min": 0.19,
                                 "cv_max": 0.24, "total_scaling_r2_median": 0.43,
                                 "totals_per_seed": {"mni152": {"mean": 604000.0}, "9861": {"mean": 522000.0}}}))
    montage.write_bytes(tiny_png((9, 9, 9)))
    out = tmp_path / "index.html"
    build_report(list(MODELS), paths["eval"], paths["saliency"], {}, "params.yaml", out, stats, montage)
    page = html.unescape(out.read_text())
    section = page[page.index('id="heldout"'):page.index('id="extrapolation"')]
    assert "1.50×" in section and "3.1%" in section and "9.0%" in section  # ratio to the test split
    meshnet_row = section.split(">meshnet</a>")[1].split("</tr>")[0]
    assert meshnet_row.endswith('<td class="num">15.3%</td>')  # the thickness response
    resnet_row = section.split(">resnet</a>")[1].split("</tr>")[0]
    assert resnet_row.count("—") == 9  # resnet has no held-out scores: ratio, the seven columns, the response
    extrapolation = page[page.index('id="extrapolation"'):page.index('id="model-meshnet"')]
    assert "2.00×" in extrapolation and "4.2%" in extrapolation and "27.0%" in extrapolation
    assert f"{fmt_mm3(301000.0)}–{fmt_mm3(812000.0)}" in page
    assert base64.b64encode(montage.read_bytes()).decode() in page
