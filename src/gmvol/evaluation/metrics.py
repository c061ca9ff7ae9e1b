"""Per-region and overall accuracy metrics for predicted regional volumes.

The paper's normalized loss alone cannot tell a model from the training-set mean (README.md,
"Metrics, and why the baselines are there"), so every table here also carries measures of whether individual differences
between subjects are captured: R^2 around the test mean, Pearson r and ICC(3,1).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gmvol.regions import LOBE_OF, REGION_COLUMNS, hemisphere_and_name, hemisphere_columns

METRIC_COLUMNS: tuple[str, ...] = ("mse", "normalized_loss", "mae_mm3", "mae_pct", "r2", "pearson_r", "icc31")
"""Columns of `region_table` besides region/hemisphere/lobe, in order."""

SUMMARY_KEYS: tuple[str, ...] = ("mse", "normalized_loss", "normalized_loss_region_median", "mae_mm3", "mae_pct", "r2_median", "r2_pooled",
                                 "r2_min", "worst_region", "pearson_median", "icc_median",
                                 "hemisphere_error_median", "composition_normalized_loss", "composition_r2_median")
"""Keys of `summary`, fixed so scores.json keeps one shape across commits."""


def aligned_arrays(true: pd.DataFrame, pred: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(subjects x 68) float arrays in REGION_COLUMNS order, after checking the tables match.

    Refusing mismatched subjects, missing regions, non-finite values or non-positive true volumes
    here keeps every metric from silently comparing the wrong rows or dividing by zero.
    """
    columns = list(REGION_COLUMNS)
    for name, frame in (("true", true), ("pred", pred)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lacks {len(missing)} region column(s), e.g. {missing[:3]}")
    if len(true) < 2:
        raise ValueError(f"need at least 2 subjects to evaluate, got {len(true)}")
    if not true.index.equals(pred.index):
        raise ValueError("true and pred must list the same subjects in the same order (index differs)")
    t = true[columns].to_numpy(dtype=float)
    p = pred[columns].to_numpy(dtype=float)
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("volumes contain NaN or infinite values")
    if (t <= 0).any():
        raise ValueError("true volumes must be positive (mae_pct divides by them)")
    return t, p


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (an undefined statistic, not an infinite one)."""
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _deviations(x: np.ndarray) -> np.ndarray:
    """Per-column deviations from the mean, exactly 0 for constant columns.

    Rounding in the mean of a constant column leaves tiny equal deviations, which would turn
    the mean predictor's undefined Pearson r into arbitrary numbers instead of NaN.
    """
    return np.where(np.ptp(x, axis=0) > 0, x - x.mean(axis=0), 0.0)


def _r2(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-column 1 - SSres/SStot with SStot around the *test* mean; NaN if the truth is constant."""
    ss_res = ((p - t) ** 2).sum(axis=0)
    ss_tot = (_deviations(t) ** 2).sum(axis=0)
    return 1.0 - _safe_ratio(ss_res, ss_tot)


def _pearson(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-column Pearson r; NaN where either side is constant (e.g. the mean predictor)."""
    dt, dp = _deviations(t), _deviations(p)
    return _safe_ratio((dt * dp).sum(axis=0), np.sqrt((dt**2).sum(axis=0) * (dp**2).sum(axis=0)))


def _icc31(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-column ICC(3,1): two-way mixed, consistency, single measure (Shrout & Fleiss 1979).

    The truth and the prediction are the k=2 "raters": ICC = (MS_R - MS_E) / (MS_R + (k-1) MS_E),
    MS_R the between-subject mean square and MS_E the residual mean square of the two-way ANOVA.
    Consistency ignores a constant offset of the prediction, so read it next to the MAE.
    """
    y = np.stack([t, p], axis=-1)  # subjects x regions x raters
    n, k = y.shape[0], y.shape[2]
    grand = y.mean(axis=(0, 2))
    subject_means = y.mean(axis=2)
    rater_means = y.mean(axis=0)
    ss_rows = k * ((subject_means - grand) ** 2).sum(axis=0)
    resid = y - subject_means[:, :, None] - rater_means[None, :, :] + grand[None, :, None]
    ms_rows = ss_rows / (n - 1)
    ms_err = (resid**2).sum(axis=(0, 2)) / ((n - 1) * (k - 1))
    return _safe_ratio(ms_rows - ms_err, ms_rows + (k - 1) * ms_err)


def region_table(true: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
    """One row per region: mse, normalized_loss, mae_mm3, mae_pct, r2, pearson_r, icc31.

    normalized_loss is the paper's MSE(pred, true) / MSE(true, 0) = sum((p-t)^2) / sum(t^2);
    mae_pct is the mean of |p - t| / t * 100. The index and a column are both named `region`,
    so the frame can be written with or without its index.
    """
    t, p = aligned_arrays(true, pred)
    err = p - t
    hemis, names = zip(*(hemisphere_and_name(c) for c in REGION_COLUMNS))
    table = pd.DataFrame({
        "region": list(REGION_COLUMNS),
        "hemisphere": hemis,
        "lobe": [LOBE_OF[name] for name in names],
        "mse": (err**2).mean(axis=0),
        "normalized_loss": (err**2).sum(axis=0) / (t**2).sum(axis=0),
        "mae_mm3": np.abs(err).mean(axis=0),
        "mae_pct": (np.abs(err) / t * 100.0).mean(axis=0),
        "r2": _r2(t, p),
        "pearson_r": _pearson(t, p),
        "icc31": _icc31(t, p),
    })
    table.index = pd.Index(table["region"], name="region")
    return table


def _json_float(value: float) -> float | None:
    """A plain float for JSON, or None where the statistic is undefined (NaN is not valid JSON)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _median(values: pd.Series) -> float | None:
    """Median over regions where the statistic is defined; None if it is defined nowhere."""
    finite = values.dropna()
    return _json_float(finite.median()) if len(finite) else None


def summary(true: pd.DataFrame, pred: pd.DataFrame) -> dict[str, float | str | None]:
    """Overall metrics, JSON-ready (plain floats; None where undefined, e.g. Pearson of a constant).

    mse, normalized_loss, mae_mm3 and mae_pct pool all subject x region cells. r2_pooled is
    1 - sum(SSres) / sum(SStot) over regions (each SStot around its own region's test mean), so big
    regions weigh more; r2_median weighs regions equally. worst_region is the region of r2_min.
    The composition_* pair scores `on_true_totals(true, pred)`: what the predictor knows of how
    each hemisphere divides among its regions, its total error taken out.
    """
    t, p = aligned_arrays(true, pred)
    err = p - t
    table = region_table(true, pred)
    ss_tot = (_deviations(t) ** 2).sum()
    r2 = table["r2"].dropna()
    return {
        "mse": float((err**2).mean()),
        "normalized_loss": float((err**2).sum() / (t**2).sum()),
        "normalized_loss_region_median": _median(table["normalized_loss"]),
        "mae_mm3": float(np.abs(err).mean()),
        "mae_pct": float((np.abs(err) / t * 100.0).mean()),
        "r2_median": _median(table["r2"]),
        "r2_pooled": _json_float(1.0 - (err**2).sum() / ss_tot) if ss_tot > 0 else None,
        "r2_min": _json_float(r2.min()) if len(r2) else None,
        "worst_region": str(r2.idxmin()) if len(r2) else None,
        "pearson_median": _median(table["pearson_r"]),
        "icc_median": _median(table["icc31"]),
        "hemisphere_error_median": hemisphere_error_median(true, pred),
        **composition_scores(true, pred),
    }


def on_true_totals(true: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame | None:
    """`pred`'s share of each region in its hemisphere x the true hemisphere total (None when a
    predicted hemisphere total is not positive: it has no shares).

    A regional error is a hemisphere total error plus a composition error; this removes the
    first. Scored next to the mean predictor's (the training shares on the true totals), it says
    whether a model reads regional anatomy at all or only brain size.
    """
    t, p = aligned_arrays(true, pred)
    out = np.empty_like(p)
    for idx in hemisphere_columns():
        predicted = p[:, idx].sum(axis=1, keepdims=True)
        if (predicted <= 0).any():
            return None
        out[:, idx] = p[:, idx] / predicted * t[:, idx].sum(axis=1, keepdims=True)
    return pd.DataFrame(out, index=true.index, columns=list(REGION_COLUMNS))


def composition_scores(true: pd.DataFrame, pred: pd.DataFrame) -> dict[str, float | None]:
    """Normalized loss and median regional R^2 of `on_true_totals` (see `summary`)."""
    composed = on_true_totals(true, pred)
    if composed is None:
        return {"composition_normalized_loss": None, "composition_r2_median": None}
    t, c = aligned_arrays(true, composed)
    return {"composition_normalized_loss": float(((c - t) ** 2).sum() / (t**2).sum()),
            "composition_r2_median": _median(region_table(true, composed)["r2"])}


def hemisphere_ratios(true: pd.DataFrame, pred: pd.DataFrame) -> np.ndarray:
    """(subjects x 2) predicted hemisphere total / true, in HEMISPHERES order: signed, so that a
    bias (by anatomy, by size) shows, not only its size."""
    t, p = aligned_arrays(true, pred)
    return np.stack([p[:, idx].sum(axis=1) / t[:, idx].sum(axis=1) for idx in hemisphere_columns()], axis=1)


def hemisphere_error_median(true: pd.DataFrame, pred: pd.DataFrame) -> float | None:
    """Median over subjects and both hemispheres of |predicted hemisphere total / true - 1|: how
    far off a user's total cortical gray matter per hemisphere is, the first number they check."""
    return _json_float(float(np.median(np.abs(hemisphere_ratios(true, pred) - 1.0))))
