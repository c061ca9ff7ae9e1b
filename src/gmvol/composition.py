"""How a hemisphere's gray matter divides among its DK regions, and how far to trust a model's
reading of it.

A counting model measures a hemisphere's gray matter well, but at 5 mm a DK region's border runs
through a ribbon one voxel thick, and its counted share of the hemisphere is noisier than the
training mean share (README, "Composition"). `compose_shares` pulls the shares toward that mean
with one weight and keeps each hemisphere's total, and so the count's extrapolation, as it is.
"""

from __future__ import annotations

import numpy as np

from gmvol.regions import hemisphere_columns


def hemisphere_shares(volumes: np.ndarray) -> np.ndarray:
    """(N, 68) volumes -> each region's share of its own hemisphere's total."""
    shares = np.empty_like(volumes, dtype=np.float64)
    for columns in hemisphere_columns():
        part = volumes[:, columns]
        shares[:, columns] = part / part.sum(axis=1, keepdims=True)
    return shares


def hemisphere_totals(volumes: np.ndarray) -> np.ndarray:
    """(N, 68): each region's column holds its hemisphere's total."""
    totals = np.empty_like(volumes, dtype=np.float64)
    for columns in hemisphere_columns():
        totals[:, columns] = volumes[:, columns].sum(axis=1, keepdims=True)
    return totals


def compose_shares(volumes: np.ndarray, share_prior: np.ndarray, weight: float) -> np.ndarray:
    """(N, 68) or (68,) volumes with each hemisphere's shares weight x their own + (1 - weight) x
    `share_prior`, its total unchanged (what `CountingHead.compose_shares` does in torch)."""
    rows = np.atleast_2d(volumes)
    out = weight * rows + (1.0 - weight) * share_prior * hemisphere_totals(rows)
    return out.reshape(np.shape(volumes))


def fit_composition_weight(predicted: np.ndarray, true: np.ndarray, share_prior: np.ndarray) -> float:
    """The weight in [0, 1] whose `compose_shares` of `predicted` is closest to `true` in squared
    error over all subjects and regions (least squares, closed form)."""
    anchored = compose_shares(predicted, share_prior, 0.0)
    own, wanted = predicted - anchored, true - anchored
    denominator = float((own**2).sum())
    return 1.0 if denominator == 0 else float(np.clip((own * wanted).sum() / denominator, 0.0, 1.0))
