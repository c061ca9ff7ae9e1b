"""Small building blocks shared by the models."""

from __future__ import annotations

import math

import torch
from torch import nn

from gmvol.models.fast_conv import is_channels_last

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}
"""Activation name (as written in configs) -> module class."""
INPLACE_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ELU)


def make_activation(name: str, inplace: bool = False) -> nn.Module:
    """Instantiate an activation by its config name; `inplace` (where the activation has it) saves
    one activation-sized allocation when its input is not needed again (e.g. after BatchNorm)."""
    try:
        cls = ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
    return cls(inplace=True) if inplace and cls in INPLACE_ACTIVATIONS else cls()


def make_dropout3d(p: float) -> nn.Module:
    """Channel dropout, or nothing at p=0 (Dropout3d still does work at p=0 in training)."""
    return nn.Dropout3d(p) if p > 0 else nn.Identity()


def append_coordinates(x: torch.Tensor) -> torch.Tensor:
    """Append 3 channels holding each voxel's normalised (z, y, x) position in [-1, 1] (CoordConv).

    A fully convolutional trunk is translation-equivariant, so on its own it cannot tell where a
    voxel is; regional volumes depend on exactly that.
    """
    b, _, *shape = x.shape
    axes = [torch.linspace(-1.0, 1.0, n, dtype=x.dtype, device=x.device) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    return torch.cat([x, grid.unsqueeze(0).expand(b, -1, -1, -1, -1)], dim=1)


def adaptive_pool_matrix(length: int, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(size, length) averaging matrix with AdaptiveAvgPool's bins: bin i covers
    [floor(i * length / size), ceil((i + 1) * length / size))."""
    i = torch.arange(size, device=device).unsqueeze(1)
    start, end = (i * length) // size, -((-(i + 1) * length) // size)
    position = torch.arange(length, device=device)
    inside = (position >= start) & (position < end)
    return inside.to(dtype) / (end - start).to(dtype)


def _average_axis(t: torch.Tensor, axis: int, matrix: torch.Tensor) -> torch.Tensor:
    """Contract axis `axis` of `t` with `matrix` (size, length) as one batched GEMM."""
    before, length, after = t.shape[:axis], t.shape[axis], t.shape[axis + 1:]
    flat = t.reshape(math.prod(before), length, math.prod(after))
    if not after:  # the innermost axis: one plain GEMM
        out = (flat.squeeze(-1) @ matrix.T).unsqueeze(-1)
    else:
        out = torch.matmul(matrix, flat)
    return out.reshape(*before, matrix.shape[0], *after)


class SeparableAdaptiveAvgPool3d(nn.Module):
    """``nn.AdaptiveAvgPool3d`` computed as three GEMMs, one per axis, in the input's memory order.

    A box average is the product of per-axis averages, so the pooling is separable. PyTorch's CPU
    adaptive pooling is a scalar loop whose backward zero-fills and scatters a channels-first
    gradient (measured 16 ms forward + backward for a (4, 16, 36, 44, 38) bf16 channels_last map
    on 2 cores); the GEMMs take 2.5 ms and hand back a gradient in the input's layout. Same bins,
    same result up to float rounding (the GEMMs accumulate in fp32, so bf16 results are closer
    to exact than the loop's); no parameters, so state_dicts are unchanged.
    """

    def __init__(self, output_size: int) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = is_channels_last(x)
        t = x.permute(0, 2, 3, 4, 1) if channels_last else x  # a view in memory order
        spatial_axes = (1, 2, 3) if channels_last else (2, 3, 4)
        for axis in reversed(spatial_axes):  # innermost first: it shrinks the most data
            matrix = adaptive_pool_matrix(t.shape[axis], self.output_size, x.dtype, x.device)
            t = _average_axis(t, axis, matrix)
        return t.permute(0, 4, 1, 2, 3) if channels_last else t
