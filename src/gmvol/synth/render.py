"""Images rendered from label maps, after SynthSeg's generative model (Billot et al., 2023):
a random intensity per tissue and label, partial-volume blur, a random acquisition resolution
resampled back to the output grid. Every seed is rendered the same way, so that no subject
reveals its anatomy's origin through texture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from gmvol.synth.anatomy import (
    CEREBELLUM_CORTEX_IDS,
    CEREBELLUM_WM_IDS,
    CSF_ID,
    SUBCORTICAL_IDS,
    UNPARCELLATED_CORTEX_IDS,
    WHITE_MATTER_IDS,
)

Contrast = Literal["t1", "random"]
Range = tuple[float, float]

HEAD_CODE = 3000
"""Head tissue classes (gmvol.synth.head) are coded HEAD_CODE + class next to the brain's label ids."""
HEAD_TISSUE_RANGES: dict[int, Range] = {  # T1-like mean intensity (white matter ~ 0.7-1.0)
    1: (0.05, 0.30),   # extra-cerebral CSF
    2: (0.02, 0.15),   # skull (compact bone)
    3: (0.25, 0.45),   # skin and muscle
    4: (0.70, 1.00),   # fat (scalp, orbit, neck)
    5: (0.03, 0.20),   # vitreous of the eyes
    6: (0.35, 0.65),   # marrow (diploe, vertebrae)
}
SUBCORTICAL_MIX: dict[str, Range] = {  # position between gray (0) and white (1) matter
    "thalamusproper": (0.4, 0.7), "caudate": (0.0, 0.25), "putamen": (0.1, 0.35),
    "pallidum": (0.5, 0.85), "hippocampus": (-0.1, 0.1), "amygdala": (-0.1, 0.15),
    "accumbensarea": (0.0, 0.2), "brainstem": (0.6, 0.9),
}
MIX_OF_ID: dict[int, Range] = {i: SUBCORTICAL_MIX[name] for name, ids in SUBCORTICAL_IDS.items() for i in ids}


@dataclass(frozen=True)
class RenderConfig:
    """How a subject's image is drawn from its labels (the `synthesize.render` params section)."""

    contrast: Contrast = "t1"              # t1: ordered CSF < gray < white; random: any order
    csf: Range = (0.05, 0.30)              # mean intensity ranges per tissue, white matter ~ 1
    gray: Range = (0.35, 0.60)
    white: Range = (0.70, 1.00)
    label_jitter: float = 0.04             # per-label offset around its tissue's mean (SD)
    texture: Range = (0.01, 0.05)          # within-label noise SD, before the blur
    blur_voxels: Range = (0.3, 0.8)        # partial-volume blur (Gaussian SD, output voxels)
    resolution_mm: Range = (1.0, 5.0)      # acquisition voxel size in plane
    slice_mm: Range = (1.0, 6.0)           # slice thickness (at least the in-plane size)
    gamma_sd: float = 0.10
    bias_sd: float = 0.10
    noise: Range = (0.01, 0.04)            # Rician noise SD

    def __post_init__(self) -> None:
        for name in ("csf", "gray", "white", "texture", "blur_voxels", "resolution_mm", "slice_mm", "noise"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range [low, high] with 0 <= low <= high, got {[lo, hi]}")


def _tissue_of(label: int) -> str:
    if label in WHITE_MATTER_IDS or label in CEREBELLUM_WM_IDS:
        return "white"
    if label == CSF_ID:
        return "csf"
    if label >= 1000 or label in UNPARCELLATED_CORTEX_IDS or label in CEREBELLUM_CORTEX_IDS:
        return "gray"
    return "subcortical"


def intensity_table(labels_present: np.ndarray, rng: np.random.Generator, cfg: RenderConfig) -> dict[int, tuple[float, float]]:
    """(mean, texture SD) of every code present: brain label ids and HEAD_CODE + head class."""
    u = lambda r: float(rng.uniform(*r))
    if cfg.contrast == "t1":
        tissue = {"csf": u(cfg.csf), "gray": u(cfg.gray), "white": u(cfg.white)}
    else:
        tissue = {k: u((0.0, 1.0)) for k in ("csf", "gray", "white")}
    table: dict[int, tuple[float, float]] = {}
    for code in (int(c) for c in labels_present):
        if code >= HEAD_CODE:
            cls = code - HEAD_CODE
            mean = u((0.0, 1.0)) if cfg.contrast == "random" else u(HEAD_TISSUE_RANGES[cls])
            if cls == 1:
                mean = tissue["csf"]
        elif code == 0:
            mean = 0.0
        else:
            kind = _tissue_of(code)
            if kind == "subcortical":
                mix = u(MIX_OF_ID.get(code, (0.0, 0.3)))
                mean = tissue["gray"] + mix * (tissue["white"] - tissue["gray"])
            else:
                mean = tissue[kind]
            if kind in ("gray", "subcortical"):  # regions differ a little; T1 keeps them between CSF and white
                mean = mean + rng.normal(0.0, cfg.label_jitter)
                if cfg.contrast == "t1":
                    mean = float(np.clip(mean, tissue["csf"] + 0.02, tissue["white"] - 0.02))
        table[code] = (max(0.0, mean), u(cfg.texture))
    return table


def paint(codes: np.ndarray, rng: np.random.Generator, cfg: RenderConfig) -> np.ndarray:
    """The noiseless image: per-code intensity and texture, blurred for partial volume."""
    present = np.unique(codes)
    table = intensity_table(present, rng, cfg)
    index = np.searchsorted(present, codes)
    means = np.array([table[int(c)][0] for c in present], dtype=np.float32)[index]
    sds = np.array([table[int(c)][1] for c in present], dtype=np.float32)[index]
    image = means + sds * rng.standard_normal(codes.shape, dtype=np.float32)
    sigma = float(rng.uniform(*cfg.blur_voxels))
    return ndimage.gaussian_filter(image, sigma).astype(np.float32)


def acquisition_mm(rng: np.random.Generator, cfg: RenderConfig) -> np.ndarray:
    """(3,) acquisition voxel size: two in-plane axes and a thicker slice axis at random."""
    in_plane = float(rng.uniform(*cfg.resolution_mm))
    slice_mm = float(rng.uniform(max(in_plane, cfg.slice_mm[0]), max(in_plane, cfg.slice_mm[1])))
    size = np.full(3, in_plane)
    size[int(rng.integers(3))] = slice_mm
    return size


def resample_acquisition(image: np.ndarray, voxel_mm: float, acquired_mm: np.ndarray) -> np.ndarray:
    """Blur to the acquired resolution, sample on its grid and interpolate back to the output grid."""
    factor = np.maximum(np.asarray(acquired_mm) / voxel_mm, 1.0)
    if np.all(factor <= 1.0):
        return image
    blurred = ndimage.gaussian_filter(image, np.where(factor > 1.0, 0.42 * factor, 0.0))
    low = tuple(max(2, round(n / f)) for n, f in zip(image.shape, factor))
    t = torch.from_numpy(np.ascontiguousarray(blurred))[None, None]
    down = F.interpolate(t, size=low, mode="trilinear", align_corners=True)
    return F.interpolate(down, size=image.shape, mode="trilinear", align_corners=True)[0, 0].numpy()


def scanner_effects(image: np.ndarray, rng: np.random.Generator, cfg: RenderConfig) -> np.ndarray:
    """A smooth multiplicative bias field, Rician noise and a gamma contrast change."""
    coarse = torch.from_numpy(rng.normal(0.0, cfg.bias_sd, size=(1, 1, 4, 4, 4)).astype(np.float32))
    bias = F.interpolate(coarse, size=image.shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    out = np.clip(image, 0.0, None) * np.exp(bias)
    noise = rng.standard_normal(size=(2, *image.shape), dtype=np.float32) * np.float32(rng.uniform(*cfg.noise))
    out = np.sqrt((out + noise[0]) ** 2 + noise[1] ** 2)
    gamma = float(np.exp(rng.normal(0.0, cfg.gamma_sd)))
    return np.power(out / (out.max() + 1e-6), gamma).astype(np.float32)
