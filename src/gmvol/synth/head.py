"""Heads that carry no information about the brain inside them: a skull and scalp of random
thickness around an intracranial space whose size is drawn independently of the brain's, eyes,
face and neck below it, a random field of view, and skull-stripped subjects among the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gmvol.synth.boxes import bounding_box
from gmvol.synth.render import HEAD_CODE, Range

AIR, CSF, SKULL, SOFT, FAT, EYE, MARROW = range(7)
STRIPPED_CSF_MM = 3.0
"""A skull-stripped brain keeps up to this much CSF around it, as brain masks do."""


@dataclass(frozen=True)
class HeadConfig:
    """The head around the brain (the `synthesize.head` params section)."""

    radii_mm: tuple[float, float, float] = (80.0, 100.0, 80.0)  # intracranial semi-axes (L-R, A-P, S-I)
    size_sd: float = 0.10                  # log SD of one factor on all three semi-axes: brains that fill
                                           # the skull and brains afloat in CSF (atrophy), independent of the brain
    radii_sd: float = 0.04                 # log SD of each semi-axis on its own (the head's shape)
    csf_mm: Range = (1.0, 3.0)             # least CSF around the brain where it fills the skull
    skull_mm: Range = (4.0, 9.0)
    scalp_mm: Range = (3.0, 9.0)
    skull_strip_fraction: float = 0.2      # subjects given as a skull-stripped brain
    crop_probability: float = 0.4          # per side of the field of view: cut it short of the head

    def __post_init__(self) -> None:
        if self.size_sd < 0 or self.radii_sd < 0:
            raise ValueError(f"size_sd and radii_sd must be >= 0, got {self.size_sd} and {self.radii_sd}")
        if not 0.0 <= self.skull_strip_fraction <= 1.0 or not 0.0 <= self.crop_probability <= 1.0:
            raise ValueError("skull_strip_fraction and crop_probability must lie in [0, 1]")


def distance_mm(mask: np.ndarray, voxel_mm: float, within_mm: float | None = None) -> np.ndarray:
    """Distance of every voxel from `mask` (0 inside it), in mm: the mean of the chessboard and
    taxicab chamfer distances, within ~15% of Euclidean and ten times faster than the exact
    transform. Head layers need no more; the truth never depends on it.

    With `within_mm`, only the box around the mask that holds every voxel up to that far is
    transformed and the rest is +inf: both chamfer distances are exact for their metrics, so the
    box holds the same values as the whole grid, and callers that only compare with thresholds up
    to `within_mm` see the same voxels (a third of the grid around a brain).
    """
    box = bounding_box(mask, int(np.ceil(within_mm / voxel_mm)) + 1) if within_mm is not None else None
    if box is None:
        return _chamfer_mm(mask, voxel_mm)
    out = np.full(mask.shape, np.inf, dtype=np.float32)
    out[box] = _chamfer_mm(mask[box], voxel_mm)
    return out


def _chamfer_mm(mask: np.ndarray, voxel_mm: float) -> np.ndarray:
    outside = ~mask
    return (ndimage.distance_transform_cdt(outside, metric="chessboard").astype(np.float32)
            + ndimage.distance_transform_cdt(outside, metric="taxicab")) * (0.5 * voxel_mm)


def _sphere_box(q: np.ndarray, center: np.ndarray, radius_mm: float) -> tuple[slice, ...]:
    """The voxel box that holds every voxel whose head-frame position `q` lies within
    `radius_mm` of `center`, with a 2-voxel margin: `q` is a rigid map of the voxel indices."""
    origin = q[(slice(None), 0, 0, 0)].astype(np.float64)
    steps = np.stack([q[(slice(None), *np.eye(3, dtype=int)[a])].astype(np.float64) - origin for a in range(3)], axis=1)
    middle = np.linalg.solve(steps, center - origin)
    half = radius_mm / np.linalg.norm(steps, axis=0) + 2.0
    return tuple(slice(int(np.clip(np.floor(m - h), 0, n)), int(np.clip(np.ceil(m + h) + 1, 0, n)))
                 for m, h, n in zip(middle, half, q.shape[1:]))


def _ellipsoid(q: np.ndarray, center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Voxels inside the ellipsoid, evaluated only in the box of its enclosing sphere (outside
    it every voxel is farther than the largest semi-axis)."""
    inside = np.zeros(q.shape[1:], dtype=bool)
    box = _sphere_box(q, center, float(np.max(radii)))
    inside[box] = (((q[(slice(None), *box)] - center[:, None, None, None]) / radii[:, None, None, None]) ** 2
                   ).sum(axis=0) <= 1.0
    return inside


def head_frame(affine: np.ndarray, shape: tuple[int, ...], rotation: np.ndarray,
               brain_center_mm: np.ndarray) -> np.ndarray:
    """(3, *shape) coordinates of each voxel in the head's own frame (mm, R-A-S from the brain's
    centre): the head turns with the brain's pose."""
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ ijk + affine[:3, 3:4].astype(np.float32)
    return (rotation.T.astype(np.float32) @ (world - brain_center_mm[:, None].astype(np.float32))).reshape(3, *shape)


def head_classes(brain: np.ndarray, q: np.ndarray, voxel_mm: float, rng: np.random.Generator,
                 cfg: HeadConfig) -> tuple[np.ndarray, dict[str, float]]:
    """Tissue class (AIR..MARROW) of every voxel outside `brain`, and the draw that made it."""
    # size_sd 0 draws nothing: a cohort made without it keeps its images exactly
    size = rng.normal(0.0, cfg.size_sd) if cfg.size_sd else 0.0
    radii = np.asarray(cfg.radii_mm) * np.exp(size + rng.normal(0.0, cfg.radii_sd, size=3))
    center = np.array([0.0, rng.normal(0.0, 3.0), rng.normal(5.0, 3.0)])
    around = distance_mm(brain, voxel_mm, within_mm=cfg.csf_mm[1])
    cranium = _ellipsoid(q, center, radii) | (around <= rng.uniform(*cfg.csf_mm)) | brain
    outside = distance_mm(cranium, voxel_mm, within_mm=cfg.skull_mm[1] + cfg.scalp_mm[1])
    skull, scalp = rng.uniform(*cfg.skull_mm), rng.uniform(*cfg.scalp_mm)
    cls = np.full(brain.shape, AIR, dtype=np.uint8)
    cls[cranium] = CSF
    a, b, c = radii
    face = _ellipsoid(q, center + [0, 0.55 * b, -0.75 * c], np.array([0.62 * a, 0.5 * b, 0.6 * c]))
    neck = (((q[0] - center[0]) ** 2 + (q[1] - center[1] + 0.2 * b) ** 2) <= (rng.uniform(0.55, 0.7) * a) ** 2) \
        & (q[2] < center[2] - 0.4 * c)
    soft = (face | neck | (outside <= skull + scalp)) & ~cranium
    cls[soft] = FAT
    cls[soft & (distance_mm(~soft, voxel_mm) > rng.uniform(4.0, 8.0))] = SOFT
    cls[(outside > 0) & (outside <= skull)] = SKULL
    cls[(outside > skull / 3) & (outside <= 2 * skull / 3)] = MARROW
    spine = (((q[0] - center[0]) ** 2 + (q[1] - center[1] + 0.3 * b) ** 2) <= rng.uniform(7.0, 10.0) ** 2) \
        & (q[2] < center[2] - 0.7 * c)
    cls[spine & ~cranium] = MARROW
    eye_r = rng.uniform(10.5, 13.0)
    for side in (-1.0, 1.0):
        eye_c = center + np.array([side * 0.4 * a, 0.78 * b, -0.38 * c])
        box = _sphere_box(q, eye_c, eye_r + 4.0)
        dist = np.sqrt(((q[(slice(None), *box)] - eye_c[:, None, None, None]) ** 2).sum(axis=0))
        part, free = cls[box], ~cranium[box]
        part[(dist <= eye_r + 4.0) & free & (part != SKULL)] = FAT
        part[(dist <= eye_r) & free] = EYE
    cls[brain] = AIR
    return cls, {"head_radius_lr_mm": float(a), "head_radius_ap_mm": float(b), "head_radius_si_mm": float(c),
                 "skull_mm": float(skull), "scalp_mm": float(scalp)}


def field_of_view(brain: np.ndarray, rng: np.random.Generator, probability: float) -> np.ndarray:
    """A box mask: each side of the grid is cut, with `probability`, somewhere between the grid's
    edge and the brain (never into it), as scanners' fields of view cut heads short."""
    keep = np.ones(brain.shape, dtype=bool)
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        occupied = np.flatnonzero(brain.any(axis=other))
        lo, hi = int(occupied[0]), int(occupied[-1])
        index = np.arange(brain.shape[axis])
        shape = [1, 1, 1]
        shape[axis] = -1
        if rng.random() < probability:
            keep &= (index >= rng.integers(0, max(1, lo - 1))).reshape(shape)
        if rng.random() < probability:
            keep &= (index <= rng.integers(min(hi + 2, brain.shape[axis] - 1), brain.shape[axis])).reshape(shape)
    return keep


def head_codes(labels: np.ndarray, q: np.ndarray, voxel_mm: float, rng: np.random.Generator,
               cfg: HeadConfig) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """What the renderer paints: brain label ids inside the brain, HEAD_CODE + class outside,
    0 for air; and the blank mask, where the image is exactly 0 (outside the field of view, and
    around a skull-stripped brain)."""
    brain = labels > 0
    cls, draw = head_classes(brain, q, voxel_mm, rng, cfg)
    stripped = bool(rng.random() < cfg.skull_strip_fraction)
    if stripped:
        cls[:] = AIR
    codes = np.where(brain, labels.astype(np.int32), np.where(cls > AIR, HEAD_CODE + cls.astype(np.int32), 0))
    blank = ~field_of_view(brain, rng, cfg.crop_probability)
    if stripped:  # a brain mask as skull-stripping tools make it: filled, with a little CSF
        around = distance_mm(brain, voxel_mm, within_mm=STRIPPED_CSF_MM)
        blank |= ~ndimage.binary_fill_holes(around <= rng.uniform(0.0, STRIPPED_CSF_MM))
    codes[blank] = 0
    return codes, blank, {**draw, "skull_stripped": float(stripped)}
