"""MeshNet regressor: a stack of dilated 3x3x3 conv blocks, a 1x1x1 conv, and a regression head."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gmvol.models.config import MeshNetConfig
from gmvol.models.context import GlobalContext
from gmvol.models.fast_conv import FastDilatedConv3d
from gmvol.models.heads import CountingHead, make_head
from gmvol.models.layers import append_coordinates, make_activation, make_dropout3d

N_COORDINATES = 3
CHANNELS_LAST_MULTIPLE = 16
"""Widths that are multiples of this fill AVX-512 float vectors, so the whole trunk runs fastest
in channels_last_3d (benchmarks/bench_train.py); other widths keep channels-first BatchNorm."""


def _conv3(in_channels: int, out_channels: int, dilation: int, fast: bool) -> nn.Conv3d:
    """A 'same'-padded 3x3x3 conv; the fast variant shares the plain one's parameters."""
    if fast:
        return FastDilatedConv3d(in_channels, out_channels, 3, dilation=dilation)
    return nn.Conv3d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)


def conv_block(in_channels: int, out_channels: int, dilation: int, cfg: MeshNetConfig) -> nn.Sequential:
    """One MeshNet block: conv, BatchNorm, activation, channel dropout."""
    return nn.Sequential(OrderedDict(
        conv=_conv3(in_channels, out_channels, dilation, cfg.fast_dilation),
        norm=nn.BatchNorm3d(out_channels),
        act=make_activation(cfg.activation, inplace=True),  # BatchNorm's backward needs its input only
        drop=make_dropout3d(cfg.dropout),
    ))


@contextlib.contextmanager
def _frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Stop BatchNorm running-stat updates (momentum 0) while a checkpointed block is recomputed,
    so that recomputation does not count each batch twice."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm3d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


class _Recomputable:
    """Runs a block under torch.utils.checkpoint; the second call (the recomputation) freezes BN."""

    def __init__(self, block: nn.Module) -> None:
        self.block = block
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            return self.block(x)
        with _frozen_running_stats(self.block):
            return self.block(x)


class MeshNet(nn.Module):
    """MeshNet trunk (Fedorov et al. 2017) with a regression head; any grid size, any shape.

    ``forward(x)`` maps (B, in_channels, D, H, W) to (B, n_outputs). With ``head='count'``,
    ``segment(x)`` also returns the argmax class map (`gmvol.tissue`).
    """

    def __init__(self, cfg: MeshNetConfig, *, in_channels: int = 1, n_outputs: int = 68) -> None:
        super().__init__()
        self.cfg = cfg
        first = in_channels + (N_COORDINATES if cfg.coord_channels else 0)
        widths = [first] + [cfg.channels] * len(cfg.dilations)
        self.blocks = nn.ModuleList(
            conv_block(widths[i], widths[i + 1], d, cfg) for i, d in enumerate(cfg.dilations))
        if cfg.fast_dilation and cfg.channels % CHANNELS_LAST_MULTIPLE == 0:
            for module in self.blocks.modules():
                if isinstance(module, FastDilatedConv3d):
                    module.channels_last_output = True
        self.contexts = nn.ModuleDict({str(i): GlobalContext(cfg.channels) for i in cfg.context_after})
        self.final = nn.Conv3d(cfg.channels, cfg.channels, kernel_size=1)
        self.head = make_head(cfg.head, cfg.channels, n_outputs, cfg.grid_size)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The conv blocks' (B, channels, D, H, W) output, before the 1x1x1 conv."""
        if self.cfg.coord_channels:
            x = append_coordinates(x)
        use_checkpoint = self.cfg.checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            x = checkpoint(_Recomputable(block), x, use_reentrant=False) if use_checkpoint else block(x)
            if str(i) in self.contexts:
                x = self.contexts[str(i)](x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The per-voxel feature map the head sees (trunk + 1x1x1 conv)."""
        return self.final(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x), self.final)

    def counting_head(self) -> CountingHead:
        """The head, when it is a counting head (segmentation and partial-volume training)."""
        if not isinstance(self.head, CountingHead):
            raise TypeError(f"a segmentation needs head='count' or 'count_factored'; this model has head={self.cfg.head!r}")
        return self.head

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised volumes (B, 68) and the argmax class map (B, D, H, W), in one pass."""
        return self.counting_head().segment(self.trunk(x), self.final)
