"""HerstonNet-style (Cruz et al.) multi-scale 3D ResNet regressor.

A residual trunk whose last few stages each feed their own global-pool + linear head; the
prediction combines the heads. Coarse and fine scales each see the volumes from their own
receptive field, and every head gets a short gradient path.
"""

from __future__ import annotations

import torch
from torch import nn

from gmvol.models.config import ResNetConfig


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm3d(out_channels))


class ResidualBlock(nn.Module):
    """Basic residual block: conv-BN-ReLU-conv-BN plus a (projected when needed) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(in_channels, out_channels, 3, stride), nn.ReLU(),
                                  _conv_bn(out_channels, out_channels, 3, 1))
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else _conv_bn(in_channels, out_channels, 1, stride))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ScaleHead(nn.Module):
    """Global average pool + dropout + linear on one stage's feature map."""

    def __init__(self, channels: int, n_outputs: int, dropout: float) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(channels, n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.pool(features).flatten(1)))


class MultiScaleResNet(nn.Module):
    """Stem, ``n_stages`` residual stages (stride 2 between stages), heads on the last ``n_heads``."""

    def __init__(self, cfg: ResNetConfig, *, in_channels: int = 1, n_outputs: int = 68) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.base_channels
        self.stem = nn.Sequential(_conv_bn(in_channels, c, 3, cfg.stem_stride), nn.ReLU())
        widths = [c * 2**i for i in range(cfg.n_stages)]
        self.stages = nn.ModuleList()
        c_in = c
        for i, width in enumerate(widths):
            blocks = [ResidualBlock(c_in if j == 0 else width, width, 2 if (i > 0 and j == 0) else 1)
                      for j in range(cfg.blocks_per_stage)]
            self.stages.append(nn.Sequential(*blocks))
            c_in = width
        self.first_head_stage = cfg.n_stages - cfg.n_heads
        self.heads = nn.ModuleList(ScaleHead(w, n_outputs, cfg.dropout) for w in widths[self.first_head_stage:])

    def scale_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each head's (B, n_outputs) prediction, finest scale first (for deep supervision)."""
        x = self.stem(x)
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= self.first_head_stage:
                outputs.append(self.heads[i - self.first_head_stage](x))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(self.scale_outputs(x))
        return stacked.mean(0) if self.cfg.combine == "mean" else stacked.sum(0)
