"""Per-subject intensity: tissue contrast, gamma, smooth bias field and noise, as scanners vary."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SHELL_INTENSITY = {2: 0.08, 3: 0.12, 4: 0.75}
"""Mean intensity of the CSF rim, skull (dark in T1) and scalp (fat, bright), brain max = 1."""


def paint_head(brain_t1: np.ndarray, tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brain intensities plus the shell's tissue classes, each class jittered per subject."""
    image = brain_t1.copy()
    for cls, mean in SHELL_INTENSITY.items():
        image[tissue == cls] = mean * rng.uniform(0.8, 1.2)
    return image


def scanner_effects(image: np.ndarray, rng: np.random.Generator, *, gamma_sd: float,
                    bias_sd: float, noise_sd: float) -> np.ndarray:
    """Gamma contrast change, a smooth multiplicative bias field and Rician-like noise."""
    gamma = float(np.exp(rng.normal(0.0, gamma_sd)))
    out = np.power(np.clip(image, 0.0, None), gamma)
    coarse = torch.from_numpy(rng.normal(0.0, bias_sd, size=(1, 1, 4, 4, 4)).astype(np.float32))
    bias = F.interpolate(coarse, size=image.shape, mode="trilinear", align_corners=False)[0, 0]
    out = out * np.exp(bias.numpy())
    noise = rng.standard_normal(size=(2, *image.shape), dtype=np.float32) * np.float32(noise_sd)
    return np.sqrt((out + noise[0]) ** 2 + noise[1] ** 2)
