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


def adaptive_pool_bins(length: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """AdaptiveAvgPool's bins along one axis: a (size, length) 0/1 membership matrix (bool) and
    each bin's voxel count; bin i covers [floor(i * length / size), ceil((i + 1) * length / size))."""
    i = torch.arange(size, device=device).unsqueeze(1)
    start, end = (i * length) // size, -((-(i + 1) * length) // size)
    position = torch.arange(length, device=device)
    return (position >= start) & (position < end), (end - start).squeeze(1)


def _sum_axis(t: torch.Tensor, axis: int, membership: torch.Tensor) -> torch.Tensor:
    """Bin sums along axis `axis` of `t`, as one batched GEMM with the (size, length) 0/1 matrix."""
    before, length, after = t.shape[:axis], t.shape[axis], t.shape[axis + 1:]
    flat = t.reshape(math.prod(before), length, math.prod(after))
    if not after:  # the innermost axis: one plain GEMM
        out = (flat.squeeze(-1) @ membership.T).unsqueeze(-1)
    else:
        out = torch.matmul(membership, flat)
    return out.reshape(*before, membership.shape[0], *after)


class SeparableAdaptiveAvgPool3d(nn.Module):
    """``nn.AdaptiveAvgPool3d(output_size)`` (int size, 5-D input) as three GEMMs, one per axis.

    A box average is the product of per-axis averages, so the pooling is separable. PyTorch's CPU
    adaptive pooling is a scalar loop whose backward zero-fills and scatters a channels-first
    gradient; the GEMMs are several times faster (benchmarks/README.md) and hand back a gradient
    in the input's layout. Precision
    as PyTorch's under autocast, where pooling is an fp32 op: the first GEMM sums in the input's
    dtype with exact 0/1 weights (fp32 accumulation, one rounding of each bin sum; fp16 input is
    upcast first, as its sums could overflow), the rest is fp32, divided by exact bin counts, and
    the result is fp32 under autocast, else the input's dtype. No parameters: state_dicts are
    unchanged.
    """

    def __init__(self, output_size: int) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = is_channels_last(x)
        t = x.permute(0, 2, 3, 4, 1) if channels_last else x  # a view in memory order
        spatial_axes = (1, 2, 3) if channels_last else (2, 3, 4)
        accumulate = torch.promote_types(x.dtype, torch.float32)
        if x.dtype == torch.float16:
            t = t.to(accumulate)
        with torch.autocast(x.device.type, enabled=False):
            for axis in reversed(spatial_axes):  # innermost first: it shrinks the most data
                membership, counts = adaptive_pool_bins(t.shape[axis], self.output_size, x.device)
                t = _sum_axis(t, axis, membership.to(t.dtype)).to(accumulate)
                t = t / counts.to(accumulate).view(-1, *[1] * (t.dim() - axis - 1))
        out = t.permute(0, 4, 1, 2, 3) if channels_last else t
        return out if torch.is_autocast_enabled(x.device.type) else out.to(x.dtype)
