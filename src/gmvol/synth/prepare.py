"""Anatomy seeds made ready for synthesis, once per cohort: calibrated regional volumes, the
boundary maps that thickness change uses, and the coarse region territories that area change uses.

Seeds are prepared in the main process and saved as .npz files, so that worker processes load
them in milliseconds instead of repeating the distance transforms.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, special

from gmvol.regions import N_REGIONS
from gmvol.synth.anatomy import DONORS, Seed, donor_parcellation, load_seed
from gmvol.synth.boxes import bounding_box
from gmvol.synth.thickness import BoundaryMaps, boundary_maps, change_gray_matter, region_index

COARSE_SPACING_MM = 4


@dataclass(frozen=True)
class PreparedSeed:
    """A seed ready for `synthesize_subject`."""

    name: str
    labels: np.ndarray        # int16, calibrated
    affine: np.ndarray
    center_mm: np.ndarray
    maps: BoundaryMaps
    territory: np.ndarray     # nearest region (0..67) of each brain voxel on the coarse grid, -1 outside
    coarse_affine: np.ndarray


def smooth_uniform(shape: tuple[int, ...], rng: np.random.Generator, spacing_mm: float = 8.0,
                   only_at: np.ndarray | None = None) -> np.ndarray:
    """A smooth random field on a 1 mm grid with values uniform in [0, 1): where draws differ
    spatially (patchy thickness), at the cost of one small upsampling.

    `only_at` (flat indices, e.g. `BoundaryMaps.movable`) maps values to [0, 1) only there and
    leaves 0 elsewhere: the same values at those voxels, for a tenth of the normal CDFs."""
    coarse = tuple(int(np.ceil(n / spacing_mm)) + 2 for n in shape)
    noise = torch.from_numpy(rng.standard_normal(coarse).astype(np.float32))[None, None]
    field = F.interpolate(noise, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    scale = field.std() + 1e-6
    if only_at is None:
        return np.clip(special.ndtr(field / scale), 0.0, 1.0 - 1e-6).astype(np.float32)
    out = np.zeros(field.size, dtype=np.float32)
    out[only_at] = np.clip(special.ndtr(field.ravel()[only_at] / scale), 0.0, 1.0 - 1e-6)
    return out.reshape(shape)


def regional_volumes(labels: np.ndarray) -> np.ndarray:
    """(68,) voxel counts of the DK regions."""
    region = region_index(labels)
    return np.bincount(region[region >= 0].ravel(), minlength=N_REGIONS).astype(np.float64)


def calibration_voxels(volumes: np.ndarray, sd_max: float) -> np.ndarray:
    """(seeds, 68) voxel changes that pull each region's log-volume towards the seeds' mean just
    enough that its spread across seeds is at most `sd_max`: real individuals differ by region,
    but a frontal pole that differs 2x between two donors would make one seed's region CV alone
    exceed real cohorts'."""
    logs = np.log(volumes)
    deviation = logs - logs.mean(axis=0)
    spread = deviation.std(axis=0)
    shrink = np.clip(1.0 - sd_max / np.maximum(spread, 1e-9), 0.0, 1.0)
    return volumes * (np.exp(-shrink * deviation) - 1.0)


def _territory(labels: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    territory = np.full(labels.shape, -1, dtype=np.int16)
    box = bounding_box(labels > 0, 1)  # the regions, and every voxel given one, lie in the brain's box
    if box is not None:
        region = region_index(labels[box])
        _, nearest = ndimage.distance_transform_edt(region < 0, return_indices=True)
        territory[box] = np.where(labels[box] == 0, -1, region[tuple(nearest)])
    s = COARSE_SPACING_MM
    coarse = territory[s // 2::s, s // 2::s, s // 2::s]
    coarse_affine = affine @ np.diag([s, s, s, 1.0])
    coarse_affine[:3, 3] = affine[:3, :3] @ np.full(3, s // 2) + affine[:3, 3]
    return np.ascontiguousarray(coarse), coarse_affine


def prepare(seed: Seed, calibration: np.ndarray | None) -> PreparedSeed:
    """Calibrate a seed's regions (None: leave it as it is, as for a held-out anatomy) and
    precompute its maps."""
    labels = seed.labels
    if calibration is not None:
        rng = np.random.default_rng(zlib.crc32(seed.name.encode()))
        maps = boundary_maps(labels)
        patches = smooth_uniform(labels.shape, rng, only_at=maps.movable).ravel()
        labels = change_gray_matter(labels, maps, calibration, patches)
    territory, coarse_affine = _territory(labels, seed.affine)
    return PreparedSeed(name=seed.name, labels=labels, affine=seed.affine, center_mm=seed.center_mm,
                        maps=boundary_maps(labels), territory=territory, coarse_affine=coarse_affine)


def seed_volumes(name: str) -> np.ndarray:
    """(68,) regional voxel counts of a seed as it ships (what calibration pulls together); a
    donor's cortex is the same before its white matter and hindbrain are derived, so its bare
    parcellation is counted."""
    return regional_volumes(donor_parcellation(name)[0] if name in DONORS else load_seed(name).labels)


@functools.lru_cache(maxsize=16)
def _prepared(name: str, calibration: tuple[float, ...] | None) -> PreparedSeed:
    return prepare(load_seed(name), None if calibration is None else np.asarray(calibration))


def prepare_named(args: tuple[str, tuple[float, ...] | None, Path]) -> Path:
    """Prepare one seed and save it (a picklable job for `parallel_map`); kept per process, since
    the same seeds make every cohort of a test session."""
    name, calibration, path = args
    save_prepared(_prepared(name, calibration), path)
    return path


def calibrations(names: tuple[str, ...], held_out: tuple[str, ...], volumes: list[np.ndarray],
                 sd_max: float) -> dict[str, tuple[float, ...] | None]:
    """The training seeds' calibration voxels (computed together), none for the held-out ones."""
    changes = calibration_voxels(np.stack(volumes), sd_max)
    return {**{n: tuple(float(c) for c in row) for n, row in zip(names, changes)}, **dict.fromkeys(held_out)}


def save_prepared(seed: PreparedSeed, path: Path) -> None:
    """Compressed: the synthesize stage keeps the training seeds as an output (30 MB each raw)."""
    np.savez_compressed(path, labels=seed.labels, affine=seed.affine, center_mm=seed.center_mm,
             territory=seed.territory, coarse_affine=seed.coarse_affine,
             **{f"maps_{k}": v for k, v in seed.maps.arrays().items()})


@functools.lru_cache(maxsize=8)
def load_prepared(path: Path) -> PreparedSeed:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    maps = BoundaryMaps(**{k[5:]: v for k, v in arrays.items() if k.startswith("maps_")})
    return PreparedSeed(name=Path(path).stem, labels=arrays["labels"], affine=arrays["affine"],
                        center_mm=arrays["center_mm"], maps=maps, territory=arrays["territory"],
                        coarse_affine=arrays["coarse_affine"])
