"""Assemble scores.json (the full record), the headline metrics.json, and the per-region tables
for the model and both baselines.

Computing the baselines here, from the same train/test tables as the model, keeps the three
blocks of scores.json comparable by construction.
"""

from __future__ import annotations

import pandas as pd

from gmvol.evaluation.baselines import mean_predictor, total_scaling
from gmvol.evaluation.metrics import METRIC_COLUMNS, region_table, summary

PREDICTORS: tuple[str, ...] = ("model", "mean_predictor", "total_scaling")
TIMING_KEYS: tuple[str, ...] = ("seconds_per_scan_forward", "seconds_per_scan_end_to_end")


def predictions(train: pd.DataFrame, true: pd.DataFrame, pred: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The model's predictions next to both baselines', keyed by PREDICTORS."""
    return {
        "model": pred,
        "mean_predictor": mean_predictor(train, true.index),
        "total_scaling": total_scaling(train, true),
    }


def region_tables(train: pd.DataFrame, true: pd.DataFrame, pred: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """`region_table` of each predictor, keyed by PREDICTORS."""
    return {name: region_table(true, values) for name, values in predictions(train, true, pred).items()}


HEADLINE: dict[str, str] = {
    "nl": "normalized_loss", "r2": "r2_median", "icc": "icc_median", "mae_pct": "mae_pct",
    "hemi_err": "hemisphere_error_median",
}
"""Headline key (a column of `dvc metrics show`) -> the summary key it shows, on the test split.
Short keys keep one row per predictor within 120 characters; README.md has the legend."""


def headline(block: dict[str, float | str | None]) -> dict[str, float | None]:
    """The headline numbers of one predictor's summary, to 4 significant digits (a table, not a
    record: scores.json keeps full precision)."""
    return {key: None if block[name] is None else float(f"{block[name]:.4g}") for key, name in HEADLINE.items()}


def report_metrics(train: pd.DataFrame, true: pd.DataFrame, pred: pd.DataFrame,
                   timings: dict[str, float]) -> dict[str, dict[str, float | str | None]]:
    """The scores.json object: {"model": summary + timings, "mean_predictor": ..., "total_scaling": ...}.

    `timings` must hold exactly TIMING_KEYS (seconds per scan), so the file's shape never drifts.
    """
    if set(timings) != set(TIMING_KEYS):
        raise ValueError(f"timings must have exactly the keys {list(TIMING_KEYS)}, got {sorted(timings)}")
    report = set_scores(train, true, pred)
    report["model"].update({key: float(timings[key]) for key in TIMING_KEYS})
    return report


def set_scores(train: pd.DataFrame, true: pd.DataFrame, pred: pd.DataFrame) -> dict[str, dict[str, float | str | None]]:
    """Every predictor's summary on one more evaluation set (the held-out anatomy), keyed by PREDICTORS."""
    return {name: summary(true, values) for name, values in predictions(train, true, pred).items()}


def long_region_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All predictors' region tables stacked: region, hemisphere, lobe, predictor, then the metrics."""
    frames = [table.reset_index(drop=True).assign(predictor=name) for name, table in tables.items()]
    return pd.concat(frames, ignore_index=True)[["region", "hemisphere", "lobe", "predictor", *METRIC_COLUMNS]]


def plots_table(tables: dict[str, pd.DataFrame], metric: str = "normalized_loss") -> pd.DataFrame:
    """One row per region, one column per predictor holding `metric`: the form `dvc plots` draws.

    dvc plots makes one series per y field (`y: [model, mean_predictor, total_scaling]`, x: region);
    it does not split a long table by a `predictor` column, hence wide.
    """
    if metric not in METRIC_COLUMNS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {list(METRIC_COLUMNS)}")
    wide = pd.DataFrame({name: table[metric] for name, table in tables.items()})
    return wide.rename_axis("region").reset_index()
