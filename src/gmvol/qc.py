"""Per-scan quality control that needs no truth: `qc_*` scores, each with a bound, and `qc_pass`.

A network regressing volumes answers every input, in or out of its training distribution, with
a confident number (often about the training mean). These scores tell when an input or an
answer is unlike the training scans:

- `qc_fov`: share of the model's input grid that the scan's field of view covers (>= 0.9).
- `qc_edge`: share of the preprocessed image's signal on the grid's outer faces (a head cut by
  the field of view, or a scan larger than the grid); bound from the training scans.
- `qc_hist`: Wasserstein-1 distance of the preprocessed signal's intensity histogram to the
  training scans' mean histogram (contrast, skull stripping, resolution); bound from training.
- `qc_total`: predicted total gray matter placed in the training range: 0 = the smallest
  training total, 1 = the largest; bound [-0.25, 1.25].
- `qc_flip`: median relative disagreement, over the 68 regions, between the prediction and the
  prediction of the left-right mirrored scan with lh/rh swapped; bound from training scans.

Training-derived bounds are `MARGIN` x the largest value on the reference training scans (up to
64 for the image scores, the first `FLIP_SCANS` of them for qc_flip) plus a floor, stored with the model in `qc.json`. A model without `qc.json` (trained before QC existed)
gets empty `qc_edge`, `qc_hist`, `qc_total` and `qc_flip`, and `qc_pass` from `qc_fov` alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine

from gmvol.config import ConfigError, jsonable, parse
from gmvol.data.preprocess import PreprocessSpec, grid_affine
from gmvol.regions import mirror_permutation

QC_FILE = "qc.json"
SCORES: tuple[str, ...] = ("qc_fov", "qc_edge", "qc_hist", "qc_total", "qc_flip")
QC_COLUMNS: tuple[str, ...] = (*SCORES, "qc_pass")
FOREGROUND = 0.05
"""Normalised intensity above which a voxel counts as signal (the background is ~0)."""
HIST_BINS = 32
FOV_MIN = 0.9
TOTAL_RANGE = (-0.25, 1.25)
MARGIN = 2.0
FLOORS = {"qc_edge": 0.01, "qc_hist": 0.01, "qc_flip": 0.01}
FLIP_SCANS = 16
"""Reference scans that run forward twice (mirror pass) when training measures the qc_flip bound."""
LATTICE = 24
"""Points per axis at which the grid's coverage by the field of view is sampled."""


@dataclass(frozen=True)
class QCReference:
    """What QC needs from the training scans (written by training as qc.json; no timings)."""

    hist: tuple[float, ...]
    total_min: float
    total_max: float
    bounds: dict[str, float]
    n_scans: int

    def to_dict(self) -> dict[str, Any]:
        return jsonable(self)


def read_reference(model_dir: Path) -> QCReference | None:
    """The model's qc.json, or None when it has none; `ValueError` naming the file when malformed."""
    path = Path(model_dir) / QC_FILE
    if not path.is_file():
        return None
    try:
        ref = parse(QCReference, json.loads(path.read_text()), str(path))
    except (json.JSONDecodeError, UnicodeDecodeError, ConfigError) as exc:
        raise ValueError(f"{path}: bad QC reference ({exc})") from None
    if len(ref.hist) != HIST_BINS or set(ref.bounds) != set(FLOORS) or not ref.total_max > ref.total_min:
        raise ValueError(f"{path}: bad QC reference (histogram, bounds or total range)")
    return ref


def histogram(image: np.ndarray) -> np.ndarray:
    """Normalised histogram of the signal voxels' intensities on (FOREGROUND, 1]."""
    counts, _ = np.histogram(image[image > FOREGROUND], bins=HIST_BINS, range=(FOREGROUND, 1.0))
    return counts / max(1, counts.sum())


def hist_distance(image: np.ndarray, reference: Sequence[float]) -> float:
    """Wasserstein-1 distance (in normalised intensity) between two histograms of HIST_BINS bins."""
    width = (1.0 - FOREGROUND) / HIST_BINS
    return float(np.abs(np.cumsum(histogram(image)) - np.cumsum(reference)).sum() * width)


def edge_share(image: np.ndarray) -> float:
    """Share of the signal voxels lying on the grid's six outer faces (1 when there is no signal)."""
    signal = image > FOREGROUND
    inner = signal[1:-1, 1:-1, 1:-1].sum()
    return float(1.0 - inner / signal.sum()) if signal.any() else 1.0


def fov_coverage(img: nib.spatialimages.SpatialImage, spec: PreprocessSpec) -> float:
    """Share of the model grid (placed as preprocessing places it) inside the scan's voxels."""
    target = grid_affine(img, spec)
    axes = [np.linspace(0, n - 1, LATTICE) for n in spec.shape]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    voxels = apply_affine(np.linalg.inv(img.affine) @ target, points)
    inside = ((voxels >= -0.5) & (voxels <= np.asarray(img.shape[:3]) - 0.5)).all(axis=1)
    return float(inside.mean())


def lr_axis(spec: PreprocessSpec) -> int:
    """The grid axis running left-right."""
    return next(i for i, code in enumerate(spec.orientation.upper()) if code in "LR")


def mirrored(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The preprocessed image mirrored left-right."""
    return np.ascontiguousarray(np.flip(image, axis=lr_axis(spec)))


def flip_disagreement(volumes: np.ndarray, mirrored_volumes: np.ndarray) -> float:
    """Median over regions of |v - v'| / mean(v, v'), v' the mirrored scan's prediction, lh/rh swapped."""
    swapped = np.asarray(mirrored_volumes)[mirror_permutation()]
    return float(np.median(np.abs(volumes - swapped) / np.maximum(np.abs(volumes + swapped) / 2, 1e-9)))


def image_scores(img: nib.spatialimages.SpatialImage, image: np.ndarray, spec: PreprocessSpec,
                 ref: QCReference | None) -> dict[str, float]:
    """The scores computed from the input alone (before the forward pass)."""
    scores = {"qc_fov": fov_coverage(img, spec)}
    if ref is not None:
        scores |= {"qc_edge": edge_share(image), "qc_hist": hist_distance(image, ref.hist)}
    return scores


def prediction_scores(volumes: np.ndarray, mirrored_volumes: np.ndarray | None,
                      ref: QCReference | None) -> dict[str, float]:
    """The scores of the answer: total against the training range, left-right consistency."""
    if ref is None or mirrored_volumes is None:
        return {}
    position = (float(volumes.sum()) - ref.total_min) / (ref.total_max - ref.total_min)
    return {"qc_total": position, "qc_flip": flip_disagreement(volumes, mirrored_volumes)}


def passes(scores: dict[str, float], ref: QCReference | None) -> bool:
    """False when any score present is out of its bound."""
    checks = [scores.get("qc_fov", 0.0) >= FOV_MIN]
    if ref is not None:
        checks += [scores.get(k, np.inf) <= ref.bounds[k] for k in FLOORS]
        checks.append(TOTAL_RANGE[0] <= scores.get("qc_total", np.nan) <= TOTAL_RANGE[1])
    return bool(all(checks))


def qc_columns(scores: dict[str, float], ref: QCReference | None) -> dict[str, Any]:
    """The row's qc_* values (None where not computed) and qc_pass."""
    return {**{k: scores.get(k) for k in SCORES}, "qc_pass": passes(scores, ref)}


def _bound(values: Sequence[float], name: str) -> float:
    return round(MARGIN * float(max(values)) + FLOORS[name], 6)


def build_reference(images: Sequence[np.ndarray], totals: Sequence[float], spec: PreprocessSpec,
                    predict: Callable[[np.ndarray], np.ndarray]) -> QCReference:
    """The QC reference from preprocessed training images, their true totals, and `predict`
    (a preprocessed image -> 68 volumes, the trained model). Rounded: the file must be
    byte-reproducible."""
    hist = np.mean([histogram(im) for im in images], axis=0)
    flips = [flip_disagreement(predict(im), predict(mirrored(im, spec))) for im in images[:FLIP_SCANS]]
    bounds = {"qc_edge": _bound([edge_share(im) for im in images], "qc_edge"),
              "qc_hist": _bound([hist_distance(im, hist) for im in images], "qc_hist"),
              "qc_flip": _bound(flips, "qc_flip")}
    return QCReference(tuple(round(float(h), 6) for h in hist), round(float(min(totals)), 2),
                       round(float(max(totals)), 2), bounds, len(images))
