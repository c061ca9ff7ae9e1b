"""Reference predictors that any useful model must beat (README.md, "Metrics, and why the baselines are there").

The training-set mean already reaches the paper's normalized loss, and scaling it by each
subject's true total gray matter does better still, so both are reported beside the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gmvol.regions import REGION_COLUMNS


def _region_means(train: pd.DataFrame) -> pd.Series:
    """Training-set mean volume of each of the 68 regions, refusing an empty or incomplete table."""
    missing = [c for c in REGION_COLUMNS if c not in train.columns]
    if missing:
        raise ValueError(f"train lacks {len(missing)} region column(s), e.g. {missing[:3]}")
    if len(train) == 0:
        raise ValueError("train has no subjects")
    return train[list(REGION_COLUMNS)].astype(float).mean(axis=0)


def mean_predictor(train: pd.DataFrame, test_index: pd.Index) -> pd.DataFrame:
    """Predict every test subject as the training-set mean of each region."""
    means = _region_means(train).to_numpy()
    values = np.broadcast_to(means, (len(test_index), len(means))).copy()
    return pd.DataFrame(values, index=test_index, columns=list(REGION_COLUMNS))


def total_scaling(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Oracle: training mean of each region x (subject's true 68-region total / training mean total).

    It peeks at the test truth's total, so it is an upper bound for "knows head size, nothing
    regional", not a fair competitor; a model below it has learned little regional anatomy.
    """
    means = _region_means(train)
    test_totals = test[list(REGION_COLUMNS)].astype(float).sum(axis=1).to_numpy()
    factor = test_totals / float(means.sum())  # mean of training totals == sum of region means
    values = np.outer(factor, means.to_numpy())
    return pd.DataFrame(values, index=test.index, columns=list(REGION_COLUMNS))
