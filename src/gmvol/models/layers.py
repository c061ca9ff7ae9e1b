"""Small building blocks shared by the models."""

from __future__ import annotations

import torch
from torch import nn

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
