"""Regression heads that turn a (B, C, D, H, W) feature map into (B, n_outputs) predictions.

Every head is called as ``head(features, pointwise)``, where `pointwise` is the trunk's last
per-voxel linear map (MeshNet's 1x1x1 conv). Handing it over instead of applying it first lets a
pooling head apply it *after* average pooling, which is exactly equal (both are linear) and
spares a full-resolution conv and its backward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from gmvol.models.layers import SeparableAdaptiveAvgPool3d


class PooledLinearHead(nn.Module):
    """Average-pool to a grid_size^3 grid, flatten, linear.

    grid_size 1 is the paper's global-pool head, which is location-blind by construction; a
    coarse grid (e.g. 4) keeps where features are, so the head can tell left frontal cortex from
    right occipital cortex.
    """

    def __init__(self, channels: int, n_outputs: int, grid_size: int = 1) -> None:
        super().__init__()
        self.pool = SeparableAdaptiveAvgPool3d(grid_size)
        self.linear = nn.Linear(channels * grid_size**3, n_outputs)

    def forward(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        pooled = self.pool(features)
        if pointwise is not None:
            pooled = pointwise(pooled)  # commutes with average pooling
        return self.linear(pooled.flatten(1))


class SoftCountHead(nn.Module):
    """Soft segmentation, then soft voxel counting: a volume is a count of voxels.

    A 1x1x1 conv gives per-voxel logits over n_outputs + 1 classes (class 0 is background, class
    k + 1 is output column k); the softmax averaged over voxels is each region's soft volume
    fraction, which a per-region affine (weight, bias) maps to the (standardised) target units.
    The logits can also be trained against a label map with an auxiliary segmentation loss.
    """

    def __init__(self, channels: int, n_outputs: int) -> None:
        super().__init__()
        self.classifier = nn.Conv3d(channels, n_outputs + 1, kernel_size=1)
        # Default: a uniform softmax (fraction 1/(n+1)) maps to 0. Real targets need far larger
        # scales; call set_affine with data-derived values before training (see its docstring).
        self.weight = nn.Parameter(torch.full((n_outputs,), float(n_outputs + 1)))
        self.bias = nn.Parameter(torch.full((n_outputs,), -1.0))

    def logits(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        """Per-voxel class logits (B, n_outputs + 1, D, H, W); class 0 is background."""
        return self.classifier(features if pointwise is None else pointwise(features))

    def count(self, logits: torch.Tensor) -> torch.Tensor:
        """Predictions (B, n_outputs) from logits: affine of each region's mean softmax."""
        fractions = torch.softmax(logits, dim=1).mean(dim=(2, 3, 4))[:, 1:]
        return fractions * self.weight + self.bias

    def forward(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        return self.count(self.logits(features, pointwise))

    @torch.no_grad()
    def set_affine(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Initialise the fraction -> target affine from data.

        For targets standardised as z = (volume - mean) / std, a perfect segmentation gives
        z = fraction * (n_voxels * voxel_volume) / std - mean / std, i.e. weight =
        n_voxels * voxel_volume / std and bias = -mean / std (weights of order 1e4 for a 1 mm
        brain), far from where an optimiser gets from the default in reasonable time.
        """
        self.weight.copy_(weight)
        self.bias.copy_(bias)


HEADS: tuple[str, ...] = ("pool", "grid", "softcount")
"""Head names as written in configs."""


def make_head(name: str, channels: int, n_outputs: int, grid_size: int) -> nn.Module:
    """Build a head by its config name (grid_size is used by the 'grid' head only)."""
    if name == "pool":
        return PooledLinearHead(channels, n_outputs, 1)
    if name == "grid":
        return PooledLinearHead(channels, n_outputs, grid_size)
    if name == "softcount":
        return SoftCountHead(channels, n_outputs)
    raise ValueError(f"unknown head {name!r}; choose one of {list(HEADS)}")
