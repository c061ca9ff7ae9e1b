"""Torch datasets over the preprocessing cache, with standardised targets and augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from gmvol.data.cell_fractions import CellFractions
from gmvol.data.fractions import SparseFractions
from gmvol.data.preprocess import load_cached_image, load_fractions
from gmvol.regions import REGION_COLUMNS, mirror_permutation


@dataclass(frozen=True)
class TargetScaler:
    """Per-region standardisation with training-set statistics, stored with the model so that
    predictions come back in mm^3."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, volumes: np.ndarray) -> TargetScaler:
        return cls(volumes.mean(axis=0), volumes.std(axis=0) + 1e-6)

    def transform(self, volumes: np.ndarray) -> np.ndarray:
        return ((volumes - self.mean) / self.std).astype(np.float32)

    def inverse(self, standardized: np.ndarray) -> np.ndarray:
        return standardized * self.std + self.mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> TargetScaler:
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (`train.augment`; defaults equal it); all off gives the plain data."""

    flip: bool = True              # left-right flip with lh/rh targets swapped
    shift_voxels: int = 1          # random integer translation (rigid jitter)
    intensity: float = 0.1         # gamma and gain jitter (log-sd)
    zoom: float = 0.0              # counting models: brain size jitter, log linear factor in [-zoom, zoom];
                                   # the targets are recounted from the zoomed class fractions


def flip_left_right(image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror along x (RAS axis 0) and swap each lh region's target with its rh twin."""
    return np.ascontiguousarray(image[::-1]), target[mirror_permutation()]


def shift(image: np.ndarray, offsets: tuple[int, ...]) -> np.ndarray:
    """Translate the last three axes by whole voxels with zero fill (no interpolation, so it is
    exact and cheap); leading axes (classes) move together."""
    out = np.zeros_like(image)
    spatial = image.shape[-3:]
    src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offsets, spatial))
    dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offsets, spatial))
    out[(..., *dst)] = image[(..., *src)]
    return out


def zoom_about_centre(image: np.ndarray, factor: float) -> np.ndarray:
    """The image's content scaled by `factor` about the grid centre (linear), zeros outside; the
    same map as `CellFractions.zoomed`."""
    centre = (np.asarray(image.shape) - 1) / 2.0
    return ndimage.affine_transform(image, np.full(3, 1.0 / factor), offset=centre - centre / factor,
                                    order=1, mode="constant", cval=0.0).astype(np.float32)


def augment(image: np.ndarray, target: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
            fractions: CellFractions | None = None, cell_mm3: float = 1.0
            ) -> tuple[np.ndarray, np.ndarray, CellFractions | None]:
    """One random draw of `cfg` applied to the image, its targets (mm^3) and (when given) its class
    fractions alike: a flip swaps lh/rh targets and classes, a shift moves the fractions too, and
    a zoom (fractions only) makes the brain smaller or larger, its targets recounted."""
    if cfg.flip and rng.random() < 0.5:
        image, target = flip_left_right(image, target)
        fractions = None if fractions is None else fractions.flipped()
    if cfg.shift_voxels:
        offsets = tuple(int(o) for o in rng.integers(-cfg.shift_voxels, cfg.shift_voxels + 1, size=3))
        image = shift(image, offsets)
        fractions = None if fractions is None else fractions.shifted(offsets)
    if cfg.zoom and fractions is not None:
        factor = float(np.exp(rng.uniform(-cfg.zoom, cfg.zoom)))
        image, fractions = zoom_about_centre(image, factor), fractions.zoomed(factor)
        target = fractions.region_volumes(cell_mm3)
    if cfg.intensity:
        gamma, gain = np.exp(rng.normal(0.0, cfg.intensity, size=2))
        image = np.clip(np.power(image, gamma) * gain, 0.0, 1.0).astype(np.float32)
    return image, target, fractions


def load_images(cache_dir: Path, subjects: list[str]) -> np.ndarray:
    """All cached images of `subjects` as one float32 array (N, D, H, W), held in memory."""
    return np.stack([load_cached_image(cache_dir, s) for s in subjects])


class CachedImages(Sequence):
    """The cached images of `subjects`, each read from disk when asked for: at 1 mm 256^3 the
    cache of 670 subjects is 42 GiB, too much to hold (once per DDP process, too). DataLoader
    worker processes then read the next batches while the model trains on this one."""

    def __init__(self, cache_dir: Path, subjects: list[str]) -> None:
        self.cache_dir, self.subjects = Path(cache_dir), list(subjects)

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return load_cached_image(self.cache_dir, self.subjects[index])


class CachedFractions(Sequence):
    """The cached partial-volume targets of `subjects`, sparse; held in memory (a few hundred kB
    a subject at 5 mm) or, with `preload` False, read on access like :class:`CachedImages`."""

    def __init__(self, cache_dir: Path, subjects: list[str], preload: bool = True) -> None:
        self.cache_dir, self.subjects = Path(cache_dir), list(subjects)
        self.held = [load_fractions(self.cache_dir, s) for s in self.subjects] if preload else None

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> SparseFractions:  # type: ignore[override]
        return self.held[index] if self.held is not None else load_fractions(self.cache_dir, self.subjects[index])


class VolumeDataset(Dataset):
    """(image (1, D, H, W), standardised targets (68,)) pairs from cached images, held in memory
    (an array) or read on access (:class:`CachedImages`); with `fractions` also each image's
    dense class fractions (N_CLASSES, D, H, W) for a counting model's per-voxel loss."""

    def __init__(self, images: np.ndarray | CachedImages, volumes: np.ndarray, scaler: TargetScaler,
                 augment_cfg: AugmentConfig | None = None, fractions: CachedFractions | None = None,
                 cell_mm3: float = 1.0) -> None:
        self.images = images
        self.volumes = np.asarray(volumes, dtype=np.float64)
        self.scaler = scaler
        self.targets = scaler.transform(self.volumes)
        self.augment_cfg = augment_cfg
        self.fractions = fractions
        self.cell_mm3 = cell_mm3

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, target = self.images[index], self.targets[index]
        fractions = (None if self.fractions is None
                     else CellFractions.of(self.fractions[index], image.shape, self.cell_mm3))
        if self.augment_cfg is not None:
            # torch's generator is seeded by the runner (and per loader worker), so draws are
            # reproducible yet differ between epochs
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
            # in mm^3, then standardised: a flip moves rh volumes into lh columns, whose mean and
            # spread differ (mirroring standardised values would mis-scale them)
            image, volumes, fractions = augment(image, self.volumes[index], self.augment_cfg, rng, fractions,
                                                self.cell_mm3)
            target = self.scaler.transform(volumes)
        item = {"image": torch.from_numpy(np.ascontiguousarray(image))[None],
                "target": torch.from_numpy(np.ascontiguousarray(target))}
        if fractions is not None:
            item["fractions"] = torch.from_numpy(fractions.dense())
        return item


def volumes_of(table: pd.DataFrame) -> np.ndarray:
    """The 68 target columns as a float64 array, in REGION_COLUMNS order."""
    return table[list(REGION_COLUMNS)].to_numpy(dtype=np.float64)
