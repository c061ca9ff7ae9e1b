"""How much of a known change in anatomy a model reports: the slope of its predicted total
against each synthetic draw, next to the slope of the true total.

A model can score well on a test split while reporting only brain size: thinning of the cortex,
what atrophy looks like, would then pass unseen. The synthetic cohort knows each subject's draws
(cohort.csv), so the response to each can be measured; seed means are removed first, so that
what a model knows about each training anatomy does not pass for a measurement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gmvol.regions import REGION_COLUMNS

DRAWS: dict[str, str] = {"thickness_change": "linear", "brain_scale": "log"}
"""cohort.csv column -> how it enters the fit (log: a linear size factor)."""


def _within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """`values` (N, K) minus the mean of their group."""
    out = np.asarray(values, dtype=np.float64).copy()
    for g in np.unique(groups):
        out[groups == g] -= out[groups == g].mean(axis=0)
    return out


def total_response(true: pd.DataFrame, pred: pd.DataFrame, draws: pd.DataFrame,
                   factors: Sequence[str] = tuple(DRAWS), group: str = "seed") -> pd.DataFrame:
    """One row per draw: d log(total) / d draw for the true and the predicted 68-region totals,
    from one least-squares fit of log total on all `factors` (within `group`), their ratio
    `response` (1: the model reports the whole change; 0: none of it) and its standard error (the
    predicted slope's, over the true slope: a few dozen subjects leave it wide)."""
    subjects = true.index
    if not subjects.equals(pred.index) or not subjects.isin(draws.index).all():
        raise ValueError("true, pred and draws must hold the same subjects (true's index order)")
    missing = [c for c in (*factors, group) if c not in draws.columns]
    if missing:
        raise ValueError(f"draws lack column(s) {missing}: a synthetic cohort.csv holds them")
    rows = draws.loc[subjects]
    x = np.column_stack([np.log(rows[f].to_numpy(float)) if DRAWS.get(f) == "log" else rows[f].to_numpy(float)
                         for f in factors])
    totals = np.column_stack([np.log(t[list(REGION_COLUMNS)].to_numpy(float).sum(axis=1)) for t in (true, pred)])
    groups = rows[group].astype(str).to_numpy()
    design, outcome = _within(x, groups), _within(totals, groups)
    slopes, *_ = np.linalg.lstsq(design, outcome, rcond=None)
    dof = len(subjects) - design.shape[1] - len(np.unique(groups))
    if dof < 1:
        raise ValueError(f"{len(subjects)} subjects are too few to fit {len(factors)} draws within {group}")
    residual_var = float(((outcome[:, 1] - design @ slopes[:, 1]) ** 2).sum()) / dof
    slope_se = np.sqrt(residual_var * np.diag(np.linalg.pinv(design.T @ design)))
    return pd.DataFrame({"draw": list(factors), "true_slope": slopes[:, 0], "predicted_slope": slopes[:, 1],
                         "response": slopes[:, 1] / slopes[:, 0], "response_se": slope_se / np.abs(slopes[:, 0])})


def has_draws(draws: pd.DataFrame, group: str = "seed") -> bool:
    """Whether a set's table holds the synthetic draws (real subjects do not) and they vary."""
    if not all(c in draws.columns for c in (*DRAWS, group)) or len(draws) <= len(DRAWS) + 1:
        return False
    return bool((draws[list(DRAWS)].std() > 0).all())


def response_scores(true: pd.DataFrame, pred: pd.DataFrame, draws: pd.DataFrame) -> dict[str, float]:
    """`total_response` as {draw: response, draw_se: its standard error}, the form scores.json keeps."""
    table = total_response(true, pred, draws)
    out: dict[str, float] = {}
    for row in table.itertuples():
        out[str(row.draw)], out[f"{row.draw}_se"] = float(row.response), float(row.response_se)
    return out
