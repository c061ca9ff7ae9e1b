"""Scan-wide context for a fully convolutional trunk: feature-wise modulation from global pools.

A voxel's share of gray matter is written in its intensity only relative to this scan's own
tissue intensities (its contrast, gain and gamma are random), and a stack of 3x3x3 convs reads
those only through whatever its receptive field happens to hold. Pooling the features over the
whole grid and feeding them back as a per-channel scale and shift (FiLM, Perez et al. 2018; a
squeeze-and-excitation with an additive term, Hu et al. 2018) hands every voxel the scan's
statistics at the cost of two small linear layers.
"""

from __future__ import annotations

import torch
from torch import nn


class GlobalContext(nn.Module):
    """h -> h x (1 + scale) + shift, with (scale, shift) per channel from the mean and the max of
    h over the grid. The last layer starts at zero, so an untrained block is the identity and a
    model that adds it starts where the plain trunk starts."""

    def __init__(self, channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 2 * channels
        self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # float32 statistics: a bf16 mean over 10^5-10^7 voxels would lose digits
        pooled = torch.cat([h.mean(dim=(2, 3, 4), dtype=torch.float32),
                            h.amax(dim=(2, 3, 4)).float()], dim=1)
        with torch.autocast(h.device.type, enabled=False):
            scale, shift = self.mlp(pooled).chunk(2, dim=1)
        view = (*scale.shape, 1, 1, 1)
        return h * (1.0 + scale.view(view)).to(h.dtype) + shift.view(view).to(h.dtype)
