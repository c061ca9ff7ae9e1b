"""Is this a brain T1 at all? Geometry and intensity bounds a real scan meets and nonsense fails.

A model regressing volumes returns a normal-looking row for any array it is given (an all-zero
image gave 697k mm^3 in total), so a scan is refused unless it carries brain-like signal on a
brain-sized grid. The bounds are deliberately wide: they admit 0.3 mm 7T scans, 1 mm FreeSurfer
conformed scans, skull-stripped templates and clinical 1 x 1 x 6 mm thick-slice scans, and refuse
masks, constants, tiny or giant grids and skewed affines (README: "Input checks").
"""

from __future__ import annotations

import numpy as np

MIN_VOXEL_MM = 0.2
"""Finest voxel edge: 7T research scans reach 0.3-0.5 mm."""
MAX_VOXEL_MM = 10.0
"""Coarsest voxel edge: clinical 2D scans use 5-7 mm slices (8 mm with gaps); 1 m is a unit error."""
MIN_FOV_MM = 100.0
"""Shortest field-of-view side: an adult brain spans about 140 x 170 x 120 mm (LR, AP, SI)."""
MAX_FOV_MM = 500.0
"""Longest field-of-view side: twice a head with neck; more is a body scan or a unit error."""
MAX_SHEAR = 0.05
"""Largest |cos| of the angle between two voxel axes (2.9 degrees off square). Scanners write
rotations times scales, so real affines are orthogonal to rounding (~1e-6)."""

SAMPLE_VOXELS = 1 << 21
"""Intensity statistics use a regular subsample of about this many voxels (2 per axis at 256^3)."""
MIN_LEVELS = 16
"""Occupied bins, of 256 between the minimum and the 99.9th percentile: masks have 2, label
maps a handful, an 8-bit T1 over a hundred."""
MIN_CONTRAST = 0.2
"""(p99 - p1) relative to max(|p1|, |p99|): a constant image plus noise has a few percent."""
MIN_FOREGROUND_ML = 300.0
"""Volume above p1 + 10% of (p99 - p1): a brain alone is 1000-1500 ml, a head more."""
FOREGROUND_FRACTION = 0.1


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel edge lengths in mm: the column norms of the affine's 3x3 part."""
    return np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)


def check_geometry(affine: np.ndarray, shape: tuple[int, ...]) -> None:
    """Raise ValueError unless voxel size, field of view and axis angles are those of a head scan."""
    zooms = voxel_sizes(affine)
    if zooms.min() < MIN_VOXEL_MM or zooms.max() > MAX_VOXEL_MM:
        raise ValueError(f"voxel size {_mm(zooms)} mm is outside [{MIN_VOXEL_MM}, {MAX_VOXEL_MM}] mm")
    fov = zooms * np.asarray(shape[:3], dtype=float)
    if fov.min() < MIN_FOV_MM or fov.max() > MAX_FOV_MM:
        raise ValueError(f"field of view {_mm(fov)} mm is outside [{MIN_FOV_MM:g}, {MAX_FOV_MM:g}] mm "
                         "per axis; a brain does not fit or this is no head scan")
    axes = np.asarray(affine, dtype=float)[:3, :3] / zooms
    shear = float(np.abs(axes.T @ axes - np.eye(3)).max())
    if shear > MAX_SHEAR:
        raise ValueError(f"affine is sheared (voxel axes {np.degrees(np.arcsin(min(shear, 1.0))):.1f} "
                         f"degrees off square, tolerance {np.degrees(np.arcsin(MAX_SHEAR)):.1f})")


def _subsample(data: np.ndarray) -> tuple[np.ndarray, int]:
    """A regular subsample of about SAMPLE_VOXELS voxels, and its stride per axis."""
    stride = max(1, int(np.ceil((data.size / SAMPLE_VOXELS) ** (1 / 3))))
    return np.asarray(data[::stride, ::stride, ::stride], dtype=np.float32).ravel(), stride


def check_signal(data: np.ndarray, voxel_mm3: float) -> None:
    """Raise ValueError unless the intensities look like a T1: not constant, not a mask, with
    contrast, and with foreground of at least a small brain's volume."""
    sample, stride = _subsample(data)
    lo, hi = float(sample.min()), float(sample.max())
    if hi == lo:
        raise ValueError(f"image is constant (every voxel is {lo:g}), not a T1")
    p1, p99, p999 = (float(v) for v in np.percentile(sample, [1, 99, 99.9]))
    if p999 <= lo:
        raise ValueError("image is almost empty (99.9% of its voxels hold the minimum value)")
    scaled = (sample.astype(np.float64) - lo) / (p999 - lo)      # exact bins at any magnitude
    counts, _ = np.histogram(scaled, bins=256, range=(0.0, 1.0))
    levels = int(np.count_nonzero(counts))
    if levels < MIN_LEVELS:
        raise ValueError(f"image has only {levels} intensity level(s) (at least {MIN_LEVELS} expected): "
                         "a mask or label map, not a T1")
    if p99 - p1 < MIN_CONTRAST * max(abs(p1), abs(p99)):
        raise ValueError(f"image has no contrast (1st-99th percentile {p1:g}-{p99:g})")
    foreground = int(np.count_nonzero(sample > p1 + FOREGROUND_FRACTION * (p99 - p1)))
    foreground_ml = foreground * stride**3 * voxel_mm3 / 1000.0
    if foreground_ml < MIN_FOREGROUND_ML:
        raise ValueError(f"signal covers only {foreground_ml:.0f} ml (at least {MIN_FOREGROUND_ML:g} ml "
                         "expected; a brain is about 1200 ml)")


def check_t1(data: np.ndarray, affine: np.ndarray) -> None:
    """Every plausibility check of a brain T1 (geometry first: it is the cheaper one)."""
    check_geometry(affine, data.shape)
    check_signal(data, float(np.prod(voxel_sizes(affine))))


def _mm(values: np.ndarray) -> str:
    return " x ".join(f"{v:.3g}" for v in values)
