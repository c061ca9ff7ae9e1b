"""Typed model configurations and their strict JSON-able dict form.

One frozen dataclass per architecture, gathered in :class:`ModelConfig`, whose ``name`` picks the
one that is built. Keeping every architecture's settings side by side lets a params file switch
models with one key (``model.name``) without losing the others' settings. Dicts are checked
strictly: an unknown key or a wrongly typed value raises ``ValueError`` naming it, so a typo in a
params file fails loudly instead of silently training the default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gmvol.config import jsonable, parse
from gmvol.models.heads import HEADS
from gmvol.models.layers import ACTIVATIONS
from gmvol.regions import N_REGIONS


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class MeshNetConfig:
    """MeshNet (Fedorov et al. 2017): 3x3x3 dilated conv blocks, a 1x1x1 conv, then a head."""

    channels: int = 21
    dilations: tuple[int, ...] = (1, 1, 1, 2, 4, 8, 1)
    dropout: float = 0.0
    activation: str = "relu"
    head: str = "pool"
    """'pool' (paper), 'grid' (keeps coarse location), 'count' (segment, then sum the voxels) or
    'count_factored' (the same count from a tissue softmax, then a region softmax within the cortex)."""
    grid_size: int = 4
    """Side of the pooled grid of the 'grid' head."""
    coord_channels: bool = False
    """Append normalised z, y, x coordinate channels to the input (CoordConv)."""
    checkpointing: bool = False
    """Recompute each block in backward instead of storing it (needed to train at 256^3)."""
    fast_dilation: bool = True
    """Use :class:`FastDilatedConv3d` (space-to-batch, channels_last) on CPU."""
    context_after: tuple[int, ...] = ()
    """Blocks (0-based) after which the scan's pooled features modulate every voxel's
    (:class:`gmvol.models.context.GlobalContext`); empty: the plain trunk."""

    def __post_init__(self) -> None:
        _require(self.channels >= 1, f"meshnet.channels must be >= 1, got {self.channels}")
        _require(len(self.dilations) >= 1 and all(d >= 1 for d in self.dilations),
                 f"meshnet.dilations must be a non-empty list of ints >= 1, got {list(self.dilations)}")
        _require(0.0 <= self.dropout < 1.0, f"meshnet.dropout must be in [0, 1), got {self.dropout}")
        _require(self.activation in ACTIVATIONS,
                 f"meshnet.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        _require(self.head in HEADS, f"meshnet.head must be one of {list(HEADS)}, got {self.head!r}")
        _require(self.grid_size >= 1, f"meshnet.grid_size must be >= 1, got {self.grid_size}")
        _require(all(0 <= i < len(self.dilations) for i in self.context_after)
                 and len(set(self.context_after)) == len(self.context_after),
                 f"meshnet.context_after must name distinct blocks in [0, {len(self.dilations)}), "
                 f"got {list(self.context_after)}")


@dataclass(frozen=True)
class BaselineConfig:
    """Rebsamen et al. 2020 BrainRegressorCNN; the defaults are their 256^3 recipe."""

    channels: tuple[int, ...] = (144, 192, 192)
    kernels: tuple[int, ...] = (11, 5, 3)
    strides: tuple[int, ...] = (3, 2, 1)
    conv_bias: tuple[bool, ...] = (True, False, False)
    pool_kernel: int = 3
    pool_stride: int = 2
    pooled_size: int = 4
    """Feature grid side before the flatten (what 256^3 input gives; smaller grids pool to it)."""
    fc_units: tuple[int, ...] = (384, 192)
    dropout: float = 0.4
    width: float = 1.0
    """Multiplier on conv channels and FC units (e.g. 0.25 for CPU runs)."""

    def __post_init__(self) -> None:
        n = len(self.channels)
        _require(n >= 1 and len(self.kernels) == n and len(self.strides) == n and len(self.conv_bias) == n,
                 "baseline.channels, kernels, strides and conv_bias must have the same non-zero length")
        _require(all(k % 2 == 1 for k in self.kernels), f"baseline.kernels must be odd, got {list(self.kernels)}")
        _require(all(v >= 1 for v in (*self.channels, *self.strides, *self.fc_units)),
                 "baseline.channels, strides and fc_units must be >= 1")
        _require(self.pool_kernel >= 1 and self.pool_stride >= 1 and self.pooled_size >= 1,
                 "baseline.pool_kernel, pool_stride and pooled_size must be >= 1")
        _require(0.0 <= self.dropout < 1.0, f"baseline.dropout must be in [0, 1), got {self.dropout}")
        _require(self.width > 0, f"baseline.width must be > 0, got {self.width}")


@dataclass(frozen=True)
class ResNetConfig:
    """HerstonNet-style 3D ResNet (Cruz et al.) with a regression head at several scales."""

    base_channels: int = 16
    n_stages: int = 4
    """Stages of residual blocks; each after the first halves the grid and doubles the channels."""
    blocks_per_stage: int = 2
    n_heads: int = 3
    """Heads on the last n_heads stages (global pool + linear each)."""
    combine: str = "mean"
    """How head outputs make the prediction: 'mean' or 'sum'."""
    stem_stride: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _require(self.base_channels >= 1 and self.blocks_per_stage >= 1 and self.stem_stride >= 1,
                 "resnet.base_channels, blocks_per_stage and stem_stride must be >= 1")
        _require(self.n_stages >= 1, f"resnet.n_stages must be >= 1, got {self.n_stages}")
        _require(1 <= self.n_heads <= self.n_stages,
                 f"resnet.n_heads must be in [1, n_stages={self.n_stages}], got {self.n_heads}")
        _require(self.combine in ("mean", "sum"), f"resnet.combine must be 'mean' or 'sum', got {self.combine!r}")
        _require(0.0 <= self.dropout < 1.0, f"resnet.dropout must be in [0, 1), got {self.dropout}")


ArchConfig = MeshNetConfig | BaselineConfig | ResNetConfig


@dataclass(frozen=True)
class ModelConfig:
    """Which model to build (``name``), its input/output sizes, and every architecture's settings."""

    name: str = "meshnet"
    """Which architecture to build: a key of MODEL_REGISTRY ('meshnet', 'baseline', 'resnet')."""
    n_outputs: int = N_REGIONS
    in_channels: int = 1
    """Image channels (1 for a T1); MeshNet's coordinate channels are added on top."""
    meshnet: MeshNetConfig = field(default_factory=MeshNetConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    resnet: ResNetConfig = field(default_factory=ResNetConfig)

    def __post_init__(self) -> None:
        _require(self.name in ARCH_NAMES, f"model name must be one of {list(ARCH_NAMES)}, got {self.name!r}")
        _require(self.n_outputs >= 1 and self.in_channels >= 1, "n_outputs and in_channels must be >= 1")

    @property
    def arch(self) -> ArchConfig:
        """The settings of the selected architecture."""
        return getattr(self, self.name)


ARCH_NAMES: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("name", "n_outputs", "in_channels"))
"""Model names; each is also the ModelConfig field holding that model's settings."""


def model_config_from_dict(d: Mapping[str, Any], where: str = "model") -> ModelConfig:
    """Build a ModelConfig from a (params/JSON) dict; missing keys take their defaults.

    Raises ValueError naming the key for unknown keys, wrong types and invalid values.
    """
    return parse(ModelConfig, d, where)


def model_config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    """The full dict form of `cfg` (plain JSON types); inverse of :func:`model_config_from_dict`."""
    return jsonable(cfg)
