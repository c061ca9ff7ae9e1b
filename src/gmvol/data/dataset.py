"""Torch datasets over the preprocessing cache, with standardised targets and augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from gmvol.data.preprocess import load_cached
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


def flip_left_right(image: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror along x (RAS axis 0) and swap each lh region's target with its rh twin."""
    return np.ascontiguousarray(image[::-1]), target[mirror_permutation()]


def shift(image: np.ndarray, offsets: tuple[int, ...]) -> np.ndarray:
    """Translate by whole voxels with zero fill (no interpolation, so it is exact and cheap)."""
    out = np.zeros_like(image)
    src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offsets, image.shape))
    dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offsets, image.shape))
    out[dst] = image[src]
    return out


def augment(image: np.ndarray, target: np.ndarray, cfg: AugmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if cfg.flip and rng.random() < 0.5:
        image, target = flip_left_right(image, target)
    if cfg.shift_voxels:
        image = shift(image, tuple(rng.integers(-cfg.shift_voxels, cfg.shift_voxels + 1, size=3)))
    if cfg.intensity:
        gamma, gain = np.exp(rng.normal(0.0, cfg.intensity, size=2))
        image = np.clip(np.power(image, gamma) * gain, 0.0, 1.0).astype(np.float32)
    return image, target


def load_images(cache_dir: Path, subjects: list[str]) -> np.ndarray:
    """All cached images of `subjects` as one float32 array (N, D, H, W), held in memory."""
    return np.stack([load_cached(cache_dir, s)["image"] for s in subjects])


class CachedImages(Sequence):
    """The cached images of `subjects`, each read from disk when asked for: at 1 mm 256^3 the
    cache of 670 subjects is 42 GiB, too much to hold (once per DDP process, too). DataLoader
    worker processes then read the next batches while the model trains on this one."""

    def __init__(self, cache_dir: Path, subjects: list[str]) -> None:
        self.cache_dir, self.subjects = Path(cache_dir), list(subjects)

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return load_cached(self.cache_dir, self.subjects[index])["image"]


class VolumeDataset(Dataset):
    """(image (1, D, H, W), standardised targets (68,)) pairs from cached images, held in memory
    (an array) or read on access (:class:`CachedImages`)."""

    def __init__(self, images: np.ndarray | CachedImages, volumes: np.ndarray, scaler: TargetScaler,
                 augment_cfg: AugmentConfig | None = None) -> None:
        self.images = images
        self.targets = scaler.transform(volumes)
        self.augment_cfg = augment_cfg

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, target = self.images[index], self.targets[index]
        if self.augment_cfg is not None:
            # torch's generator is seeded by the runner (and per loader worker), so draws are
            # reproducible yet differ between epochs
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
            image, target = augment(image, target, self.augment_cfg, rng)
        return {"image": torch.from_numpy(np.ascontiguousarray(image))[None],
                "target": torch.from_numpy(np.ascontiguousarray(target))}


def volumes_of(table: pd.DataFrame) -> np.ndarray:
    """The 68 target columns as a float64 array, in REGION_COLUMNS order."""
    return table[list(REGION_COLUMNS)].to_numpy(dtype=np.float64)
