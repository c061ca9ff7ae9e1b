"""One saliency map per regional output, computed with Captum.

The paper asks, region by region, which voxels the volume estimate depends on. Attributing 68
targets one at a time is 68 backward passes of a 3D CNN, so the image is replicated into a
batch and each batch element gets a different target: one backward pass serves `batch_size`
regions.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency

from gmvol.regions import N_REGIONS

Method = Literal["saliency", "input_x_gradient", "integrated_gradients"]
METHODS: tuple[str, ...] = typing.get_args(Method)


def _check_image(image: np.ndarray) -> None:
    """Refuse inputs that would give silently meaningless maps."""
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (D, H, W), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN/Inf")


def _attribute(model: torch.nn.Module, batch: torch.Tensor, targets: list[int], method: str,
               ig_steps: int) -> torch.Tensor:
    """Attribute each batch element to its own target; returns (B, 1, D, H, W)."""
    if method == "saliency":
        return Saliency(model).attribute(batch, target=targets, abs=True)
    if method == "input_x_gradient":
        return InputXGradient(model).attribute(batch, target=targets).abs()
    # internal_batch_size = #examples keeps IG at one step per forward pass, so its memory
    # matches plain saliency instead of growing with ig_steps.
    return IntegratedGradients(model).attribute(
        batch, baselines=torch.zeros_like(batch), target=targets, n_steps=ig_steps,
        internal_batch_size=batch.shape[0])


def region_saliency(model: torch.nn.Module, image: np.ndarray, method: Method = "saliency",
                    batch_size: int = 8, ig_steps: int = 16, device: str | torch.device = "cpu",
                    targets: Sequence[int] | None = None) -> np.ndarray:
    """Saliency map of each output (default: all 68 regions) for one image, shape (R, D, H, W).

    `method='saliency'` gives |d output / d voxel| (Captum `Saliency`); `'input_x_gradient'`
    |voxel x d output / d voxel| (Captum `InputXGradient`): the gradient weighted by what the scan
    holds there, so air, which every scan holds as 0, gets none; one backward pass, as saliency; `'integrated_gradients'` signed IG attributions from an all-zero baseline (a blank
    scan), which input x gradient approximates in one step. The model is moved
    to `device` and put in eval mode (dropout/batch-norm must not differ between targets); its
    previous train/eval mode is restored afterwards.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if batch_size < 1 or ig_steps < 1:
        raise ValueError("batch_size and ig_steps must be >= 1")
    _check_image(image)
    targets = list(range(N_REGIONS)) if targets is None else [int(t) for t in targets]
    x = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32), device=device)[None, None]
    out = np.empty((len(targets), *image.shape), dtype=np.float32)
    was_training = model.training
    model.to(device).eval()
    try:
        for start in range(0, len(targets), batch_size):
            chunk = targets[start:start + batch_size]
            batch = x.repeat(len(chunk), 1, 1, 1, 1).requires_grad_()
            attr = _attribute(model, batch, chunk, method, ig_steps)
            out[start:start + len(chunk)] = attr[:, 0].detach().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def subtract_mean_map(maps: np.ndarray, indices: Sequence[int] | None = None) -> np.ndarray:
    """Each region's map minus the mean map over all regions (the paper's centering).

    What every region's output depends on (e.g. overall brain size, the skull edge) cancels,
    leaving what is specific to the region. `indices` picks which centered maps to return (the
    mean is always over all regions), so a caller needing three panels does not hold 68 copies.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be (R, D, H, W), got shape {maps.shape}")
    mean = maps.mean(axis=0, dtype=np.float64).astype(maps.dtype)
    chosen = maps if indices is None else maps[list(indices)]
    return chosen - mean[None]
