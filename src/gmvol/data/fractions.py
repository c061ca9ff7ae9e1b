"""Partial-volume targets: how much of each model-grid cell every class fills, counted exactly
from a subject's own aparc+aseg.

Each label voxel is split into s^3 sample points (s = its size / `step_mm`, rounded up), and each
point goes to the model-grid cell it falls in. A cell's fraction of class c is then (points of c)
x (point volume) / (cell volume), so that for every region the fractions x cell volume sum to
exactly its voxel count x voxel volume: a counting model sees the very volume it is scored on.
Stored sparse (background, most of the grid, is implied as the remainder): a few hundred kB per
subject at 5 mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from gmvol.regions import N_REGIONS
from gmvol.tissue import BACKGROUND_CLASS, N_CLASSES, classes_of

TIE_BREAK = 1e-4
"""Added to every point's cell coordinate: points that lie exactly on a cell face in exact
arithmetic would otherwise fall either way by float rounding and overfill one cell."""
DENSE_BINS_MAX = 2**25
"""Count cells x classes in one dense bincount up to this many bins, else via np.unique."""


@dataclass(frozen=True)
class SparseFractions:
    """Foreground class counts per model-grid cell: `index` (flat C-order cell index, int32),
    `klass` (class, uint8), `count` (sample points, uint16); a point is `sample_mm3`."""

    index: np.ndarray
    klass: np.ndarray
    count: np.ndarray
    sample_mm3: float
    outside_mm3: float = 0.0      # DK-region volume that fell outside the model grid (lost)

    KEYS = ("fraction_index", "fraction_class", "fraction_count", "fraction_sample_mm3")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The cache's npz entries."""
        return dict(zip(self.KEYS, (self.index, self.klass, self.count, np.float64(self.sample_mm3))))

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any]) -> SparseFractions:
        index, klass, count, sample = (arrays[k] for k in cls.KEYS)
        return cls(index, klass, count, float(sample))

    def class_volumes(self) -> np.ndarray:
        """(N_CLASSES,) mm^3 of each class inside the grid (background: 0, it is implied)."""
        return np.bincount(self.klass, weights=self.count, minlength=N_CLASSES) * self.sample_mm3


def _samples_per_axis(img: nib.spatialimages.SpatialImage, step_mm: float) -> int:
    return max(1, math.ceil(max(float(z) for z in img.header.get_zooms()[:3]) / step_mm - 1e-6))


def label_fractions(img: nib.spatialimages.SpatialImage, grid_affine: np.ndarray,
                    grid_shape: tuple[int, int, int], step_mm: float = 1.0) -> SparseFractions:
    """Sparse class fractions of `img` (an aparc+aseg, any grid) on the model grid
    (`grid_affine`, `grid_shape`), by sample points at most `step_mm` apart."""
    classes = classes_of(np.asarray(img.dataobj))
    voxels = np.nonzero(classes != BACKGROUND_CLASS)
    klass = classes[voxels].astype(np.int64)
    in_region = klass < N_REGIONS
    to_grid = np.linalg.inv(grid_affine) @ img.affine
    linear = to_grid[:3, :3]
    # one row per grid axis (contiguous), the same float64 sums as (points x 3) @ linear.T + shift
    base = (np.stack(voxels, axis=1).astype(np.float64) @ linear.T + to_grid[:3, 3] + 0.5 + TIE_BREAK).T.copy()
    s = _samples_per_axis(img, step_mm)
    steps = (np.arange(s) + 0.5) / s - 0.5
    offsets = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3) @ linear.T
    keys, lost = [], 0
    for offset in offsets:  # floor -> nearest; axis by axis: (N, 3) reductions are slow in numpy
        flat = np.zeros(klass.shape, dtype=np.int64)
        inside = np.ones(klass.shape, dtype=bool)
        for axis, size in enumerate(grid_shape):
            cell = np.floor(base[axis] + offset[axis]).astype(np.int64)
            inside &= (cell >= 0) & (cell < size)
            flat = flat * size + cell
        lost += int(np.count_nonzero(~inside & in_region))
        keys.append(flat[inside] * N_CLASSES + klass[inside])
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    bins = int(np.prod(grid_shape)) * N_CLASSES
    if bins <= DENSE_BINS_MAX:
        counts = np.bincount(key, minlength=bins)
        key = np.flatnonzero(counts)
        counts = counts[key]
    else:
        key, counts = np.unique(key, return_counts=True)
    sample_mm3 = float(abs(np.linalg.det(img.affine[:3, :3]))) / s**3
    return SparseFractions(index=(key // N_CLASSES).astype(np.int32), klass=(key % N_CLASSES).astype(np.uint8),
                           count=counts.astype(np.uint16), sample_mm3=sample_mm3, outside_mm3=lost * sample_mm3)
