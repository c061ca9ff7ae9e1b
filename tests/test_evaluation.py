"""Evaluation metrics, baselines, metrics.json shape and figures, checked against hand-derived values."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gmvol.evaluation import (
    METRIC_COLUMNS,
    PREDICTORS,
    SUMMARY_KEYS,
    long_region_table,
    mean_predictor,
    plot_error_boxplot,
    plot_normalized_loss_bars,
    plot_scatter_grid,
    plots_table,
    region_table,
    region_tables,
    report_metrics,
    summary,
    total_scaling,
)
from gmvol.evaluation.metrics import hemisphere_error_median, hemisphere_ratios
from gmvol.evaluation.tables import HEADLINE, headline
from gmvol.regions import N_REGIONS, REGION_COLUMNS

SUBJECTS = pd.Index(["s1", "s2", "s3", "s4"], name="subject")
SCALE = 100.0 * np.arange(1, N_REGIONS + 1)  # c_j: region j's volume unit
K = np.array([1.0, 2.0, 3.0, 4.0])  # true = c_j * K
E = np.array([0.5, -0.5, 0.5, -0.5])  # pred = true + c_j * E (rh_insula: 2 * E)
WORST = "rh_insula"
TIMINGS = {"seconds_per_scan_forward": 0.25, "seconds_per_scan_end_to_end": 1.5}


def frame(values: np.ndarray, index: pd.Index = SUBJECTS) -> pd.DataFrame:
    return pd.DataFrame(values, index=index, columns=list(REGION_COLUMNS))


@pytest.fixture()
def tiny() -> tuple[pd.DataFrame, pd.DataFrame]:
    """4 x 68 table whose per-region metrics are known in closed form (see the hand values below)."""
    true = frame(np.outer(K, SCALE))
    err = np.outer(E, SCALE)
    err[:, REGION_COLUMNS.index(WORST)] *= 2
    return true, true + err


def random_cohort(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = rng.uniform(500, 15000, N_REGIONS)
    return frame(base * rng.normal(1, 0.1, (n, 1)) * rng.normal(1, 0.12, (n, N_REGIONS)),
                 pd.Index([f"sub-{seed}-{i}" for i in range(n)]))


def icc31_anova(x: np.ndarray, y: np.ndarray) -> float:
    """Shrout & Fleiss ICC(3,1) from an explicit two-way ANOVA table (loops, no shared code)."""
    data = [[float(a), float(b)] for a, b in zip(x, y)]
    n, k = len(data), 2
    grand = sum(sum(row) for row in data) / (n * k)
    row_means = [sum(row) / k for row in data]
    col_means = [sum(row[j] for row in data) / n for j in range(k)]
    ss_total = sum((v - grand) ** 2 for row in data for v in row)
    ss_rows = k * sum((m - grand) ** 2 for m in row_means)
    ss_cols = n * sum((m - grand) ** 2 for m in col_means)
    ms_rows = ss_rows / (n - 1)
    ms_err = (ss_total - ss_rows - ss_cols) / ((n - 1) * (k - 1))
    return (ms_rows - ms_err) / (ms_rows + (k - 1) * ms_err)


def test_region_metrics_match_hand_values(tiny: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    # Hand values for t = c*[1,2,3,4], p = t + c*[.5,-.5,.5,-.5]: SSres = c^2, SStot = 5c^2,
    # sum t^2 = 30c^2, dt.dp = 4c^2, |dp|^2 = 4c^2.
    table = region_table(*tiny)
    assert list(table.columns) == ["region", "hemisphere", "lobe", *METRIC_COLUMNS]
    assert table.index.name == "region" and list(table.index) == list(REGION_COLUMNS)
    regular = table.drop(index=WORST)
    c = pd.Series(SCALE, index=list(REGION_COLUMNS)).drop(WORST)
    np.testing.assert_allclose(regular["mse"], 0.25 * c**2)
    np.testing.assert_allclose(regular["normalized_loss"], 1 / 30)
    np.testing.assert_allclose(regular["mae_mm3"], 0.5 * c)
    np.testing.assert_allclose(regular["mae_pct"], 2500 / 96)  # 50 * (1 + 1/2 + 1/3 + 1/4) / 4
    np.testing.assert_allclose(regular["r2"], 0.8)
    np.testing.assert_allclose(regular["pearson_r"], 2 / math.sqrt(5))
    np.testing.assert_allclose(regular["icc31"], 8 / 9)  # 2 cov / (var t + var p) = 8 / (5 + 4)
    worst = table.loc[WORST]  # doubled error: p = c*[2,1,4,3], SSres = 4c^2, dt.dp = 3c^2, |dp|^2 = 5c^2
    assert worst["r2"] == pytest.approx(0.2)
    assert worst["normalized_loss"] == pytest.approx(4 / 30)
    assert worst["pearson_r"] == pytest.approx(3 / 5)
    assert worst["icc31"] == pytest.approx(2 * 3 / (5 + 5))
    assert (table.loc["lh_insula", "hemisphere"], table.loc["lh_insula", "lobe"]) == ("lh", "insula")
    assert table.loc["rh_precentral", "lobe"] == "frontal"


def test_icc31_matches_anova_formula_and_ignores_offset() -> None:
    true = random_cohort(30, 1)
    rng = np.random.default_rng(7)
    pred = true * rng.uniform(0.5, 1.2, N_REGIONS) * rng.normal(1, 0.05, true.shape)
    table = region_table(true, pred)
    expected = [icc31_anova(true[c].to_numpy(), pred[c].to_numpy()) for c in REGION_COLUMNS]
    np.testing.assert_allclose(table["icc31"], expected, rtol=1e-10)
    assert (table["pearson_r"] > 0).all()
    assert (table["icc31"] <= table["pearson_r"] + 1e-12).all()  # a scale mismatch costs ICC, not r
    shifted = region_table(true, pred + 1000.0)  # consistency ICC: a constant offset is invisible...
    np.testing.assert_allclose(shifted["icc31"], table["icc31"], rtol=1e-10)
    assert (shifted["mae_mm3"] != table["mae_mm3"]).any()  # ...which is why MAE sits beside it


def test_summary_matches_hand_values(tiny: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    out = summary(*tiny)
    assert tuple(out) == SUMMARY_KEYS
    w = REGION_COLUMNS.index(WORST)
    err_sq = SCALE**2 * np.where(np.arange(N_REGIONS) == w, 4.0, 1.0)  # SSres per region
    assert out["mse"] == pytest.approx(err_sq.sum() / (4 * N_REGIONS))
    assert out["normalized_loss"] == pytest.approx(err_sq.sum() / (30 * (SCALE**2).sum()))
    assert out["r2_pooled"] == pytest.approx(1 - err_sq.sum() / (5 * (SCALE**2).sum()))
    assert out["r2_median"] == pytest.approx(0.8)
    assert out["r2_min"] == pytest.approx(0.2) and out["worst_region"] == WORST
    assert out["pearson_median"] == pytest.approx(2 / math.sqrt(5))
    assert out["icc_median"] == pytest.approx(8 / 9)
    assert out["mae_pct"] == pytest.approx((2500 / 96 * (N_REGIONS - 1) + 2 * 2500 / 96) / N_REGIONS)
    assert all(type(v) is float for k, v in out.items() if k != "worst_region")


def test_perfect_prediction(tiny: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    true, _ = tiny
    table = region_table(true, true.copy())
    np.testing.assert_allclose(table[["r2", "icc31", "pearson_r"]], 1.0)
    np.testing.assert_allclose(table[["normalized_loss", "mse", "mae_mm3", "mae_pct"]], 0.0)
    out = summary(true, true.copy())
    assert out["normalized_loss"] == 0.0 and out["r2_pooled"] == pytest.approx(1.0)


def test_baselines_match_hand_values() -> None:
    train = frame(np.outer([1.0, 2.0, 3.0], SCALE), pd.Index(["a", "b", "c"]))  # means 2c, mean total 2S
    test = frame(np.outer(K, SCALE))
    test.iloc[0, 0] *= 2  # subject s1 has a doubled lh_bankssts: total = S + c_0
    mean = mean_predictor(train, test.index)
    assert mean.index.equals(test.index) and list(mean.columns) == list(REGION_COLUMNS)
    np.testing.assert_allclose(mean.to_numpy(), np.tile(2 * SCALE, (4, 1)))
    scaled = total_scaling(train, test)
    total = SCALE.sum()
    np.testing.assert_allclose(scaled.iloc[0], SCALE * (total + SCALE[0]) / total)  # 2c * (S + c0) / 2S
    np.testing.assert_allclose(scaled.iloc[1:], test.iloc[1:])  # proportional subjects are exact
    assert scaled.index.equals(test.index)


def test_report_metrics_shape_and_json(tiny: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    true, pred = tiny
    train = frame(np.outer(np.linspace(0.9, 1.1, 20), true.mean()), pd.RangeIndex(20))
    report = report_metrics(train, true, pred, TIMINGS)
    assert tuple(report) == PREDICTORS
    assert set(report["model"]) == set(SUMMARY_KEYS) | set(TIMINGS)
    assert report["model"]["seconds_per_scan_end_to_end"] == 1.5
    for name in ("mean_predictor", "total_scaling"):
        assert set(report[name]) == set(SUMMARY_KEYS)
    assert report["mean_predictor"]["pearson_median"] is None  # constant prediction: r undefined
    assert report["mean_predictor"]["icc_median"] == pytest.approx(0.0, abs=1e-9)
    assert report["total_scaling"]["r2_median"] == pytest.approx(1.0)  # truth here is purely proportional
    assert report["model"] == summary(true, pred) | TIMINGS
    json.dumps(report, allow_nan=False)
    with pytest.raises(ValueError, match="timings"):
        report_metrics(train, true, pred, {"forward": 1.0})


def test_long_and_plots_tables(tiny: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    true, pred = tiny
    tables = region_tables(true * 1.05, true, pred)
    long = long_region_table(tables)
    assert len(long) == 3 * N_REGIONS and set(long["predictor"]) == set(PREDICTORS)
    wide = plots_table(tables)
    assert list(wide.columns) == ["region", *PREDICTORS] and len(wide) == N_REGIONS
    np.testing.assert_allclose(wide["model"], 1 / 30 * np.where(wide["region"] == WORST, 4, 1))
    with pytest.raises(ValueError, match="unknown metric"):
        plots_table(tables, "accuracy")


def test_mismatched_inputs_are_refused(tiny: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    true, pred = tiny
    with pytest.raises(ValueError, match="same subjects"):
        region_table(true, pred.iloc[::-1])
    with pytest.raises(ValueError, match="lacks"):
        region_table(true, pred.drop(columns="lh_insula"))
    with pytest.raises(ValueError, match="positive"):
        region_table(true * 0, pred)
    with pytest.raises(ValueError, match="NaN"):
        region_table(true, pred.where(pred > 200))


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG header, after checking the signature."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_figures_are_written_as_pngs(tmp_path: Path) -> None:
    train, true = random_cohort(40, 1), random_cohort(12, 2)
    pred = true * 0.7 + train.mean() * 0.3
    paths = {"box": tmp_path / "box.png", "scatter": tmp_path / "scatter.png", "bars": tmp_path / "bars.png"}
    plot_error_boxplot(true, pred, paths["box"], "test model")
    plot_scatter_grid(true, pred, paths["scatter"])
    plot_normalized_loss_bars(region_tables(train, true, pred), paths["bars"])
    for path in paths.values():
        width, height = png_size(path)
        assert width >= 1000 and height >= 1000  # 150 dpi on a multi-inch figure
        assert path.stat().st_size > 30_000  # real content, not an empty canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())  # no temp leftovers


def test_hemisphere_error_is_the_median_relative_error_of_each_hemisphere_total() -> None:
    cols = list(REGION_COLUMNS)
    true = pd.DataFrame(np.full((3, 68), 100.0), columns=cols, index=["a", "b", "c"])
    pred = true.copy()
    lh = [c for c in cols if c.startswith("lh_")]
    pred.loc["a", lh] *= 1.10          # a: lh +10%, rh exact
    pred.loc["b", cols] *= 0.95        # b: both -5%
    pred.loc["c", lh[:17]] *= 1.02     # c: half of lh +2% -> lh total +1%
    # |errors| over (subject, hemisphere): 0.10, 0, 0.05, 0.05, 0.01, 0 -> median 0.03
    assert hemisphere_error_median(true, pred) == pytest.approx(0.03)
    assert summary(true, pred)["hemisphere_error_median"] == pytest.approx(0.03)
    # signed, per subject and hemisphere (lh, rh): the bias a median of |errors| hides
    np.testing.assert_allclose(hemisphere_ratios(true, pred), [[1.10, 1.0], [0.95, 0.95], [1.01, 1.0]])


def test_composition_scores_the_shares_alone_on_the_true_totals() -> None:
    cols = list(REGION_COLUMNS)
    rng = np.random.default_rng(3)
    true = pd.DataFrame(rng.uniform(1000.0, 9000.0, (6, 68)), columns=cols)
    scaled = true * np.array([0.7, 0.8, 0.9, 1.1, 1.2, 1.3])[:, None]  # right shares, wrong totals
    assert summary(true, scaled)["normalized_loss"] > 0.005
    assert summary(true, scaled)["composition_normalized_loss"] == pytest.approx(0.0, abs=1e-20)
    assert summary(true, scaled)["composition_r2_median"] == pytest.approx(1.0)
    lh = [c for c in cols if c.startswith("lh_")]
    swapped = true.copy()  # right totals, two regions' volumes exchanged: composition is all the error
    swapped[[lh[0], lh[1]]] = true[[lh[1], lh[0]]].to_numpy()
    block = summary(true, swapped)
    assert block["composition_normalized_loss"] == pytest.approx(block["normalized_loss"])
    assert block["hemisphere_error_median"] == pytest.approx(0.0, abs=1e-12)
    negative = true.copy()
    negative[lh] = -1.0  # a regression head can say this; its lh has no shares
    assert summary(true, negative)["composition_normalized_loss"] is None


def test_total_response_says_how_much_of_each_draw_a_model_reports() -> None:
    from gmvol.evaluation.response import has_draws, response_scores, total_response

    cols = list(REGION_COLUMNS)
    rng = np.random.default_rng(4)
    n = 60
    draws = pd.DataFrame({"seed": rng.choice(["a", "b", "c"], n), "thickness_change": rng.normal(0, 0.05, n),
                          "brain_scale": np.exp(rng.normal(0, 0.05, n))}, index=[f"s{i}" for i in range(n)])
    seed_size = draws["seed"].map({"a": 0.9, "b": 1.0, "c": 1.2}).to_numpy()
    factor = seed_size * (1 + draws["thickness_change"].to_numpy()) * draws["brain_scale"].to_numpy() ** 3
    shares = rng.uniform(0.5, 1.5, 68)
    true = pd.DataFrame(np.outer(factor, shares) * 1000.0, index=draws.index, columns=cols)
    exact = total_response(true, true.copy(), draws).set_index("draw")
    np.testing.assert_allclose(exact["response"], 1.0, atol=1e-9)
    assert exact.loc["brain_scale", "true_slope"] == pytest.approx(3.0, abs=0.05)  # log volume of a size factor
    # reports size and what it knows of each seed, but no thickness: the seed cannot pass for a measurement
    blind = true.div(1 + draws["thickness_change"], axis=0) * rng.normal(1.0, 0.01, (n, 1))
    scores = response_scores(true, blind, draws)
    assert abs(scores["thickness_change"]) < 3 * scores["thickness_change_se"] < 0.3
    assert scores["brain_scale"] == pytest.approx(1.0, abs=3 * scores["brain_scale_se"])
    assert has_draws(draws) and not has_draws(draws.drop(columns="seed"))
    with pytest.raises(ValueError, match="same subjects"):
        total_response(true, blind.iloc[1:], draws)


def test_headline_keeps_few_rounded_numbers_under_short_keys(tiny: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    true, _ = tiny
    pred = true * 1.0123457
    block = summary(true, pred)
    top = headline(block)
    assert set(top) == set(HEADLINE) and len(top) <= 10
    assert top["nl"] == pytest.approx(block["normalized_loss"], rel=1e-3) and top["nl"] != block["normalized_loss"]
    assert top["hemi_err"] == pytest.approx(0.01235, rel=1e-3)
    assert headline({**block, "icc_median": None})["icc"] is None
