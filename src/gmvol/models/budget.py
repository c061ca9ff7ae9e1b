"""The model-file budget: what a model.json / model.pt may ask for, checked before allocation.

A tampered model.json with 10^6 channels or 10^9 outputs made the loader try to allocate
terabytes before any shape check. Here sizes are checked on the JSON itself, then on the model
built on PyTorch's "meta" device (shapes without storage), and only then is anything real built.
The limits are 10x or more above every architecture the study trains (README: "Input checks").
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from gmvol.models.config import ModelConfig
from gmvol.models.registry import build_model

MAX_CONFIG_BYTES = 16 << 20
"""model.json: the config plus metadata (target scaling, preprocess spec) is a few kB."""
MAX_WEIGHTS_BYTES = 2 << 30
"""model.pt: 2 GiB holds MAX_PARAMETERS float32 weights with room for buffers."""
MAX_SETTING = 4096
"""Any integer setting of the architecture (channels, units, layers, grid side, outputs)."""
MAX_LIST_LENGTH = 64
"""Any list setting (MeshNet dilations: 7-9 entries; baseline stages: 3)."""
DEPTH_SETTINGS = ("n_stages", "blocks_per_stage", "n_heads")
MAX_DEPTH = 64
"""Integer settings that multiply the number of layers (ResNet-152's deepest stage has 36 blocks):
bounded like list lengths, so that even the meta build stays under a second or so."""
MAX_PARAMETERS = 200_000_000
"""Parameters of the built model: the largest trained here (baseline) has 9.4M."""
MAX_GRID_AXIS = 512
MAX_GRID_VOXELS = 384**3
"""Preprocess grid the model reads: the paper uses 256^3; 384^3 is twice HCP's 0.7 mm grid."""


def _settings(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every leaf of a (JSON) config with its dotted path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _settings(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        yield where, value
        for i, item in enumerate(value):
            yield from _settings(item, f"{where}[{i}]")
    else:
        yield where, value


def check_config_sizes(config: Any) -> None:
    """Raise ValueError when a config integer or list is beyond the budget (before anything is built)."""
    for where, value in _settings(config, "model"):
        if isinstance(value, (list, tuple)) and len(value) > MAX_LIST_LENGTH:
            raise ValueError(f"{where} has {len(value)} entries (at most {MAX_LIST_LENGTH})")
        limit = MAX_DEPTH if where.rsplit(".", 1)[-1] in DEPTH_SETTINGS else MAX_SETTING
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit:
            raise ValueError(f"{where} = {value} is beyond the model-file budget (at most {limit})")
        if isinstance(value, float) and abs(value) > MAX_SETTING:
            raise ValueError(f"{where} = {value:g} is beyond the model-file budget (at most {MAX_SETTING})")


def meta_model(cfg: ModelConfig) -> nn.Module:
    """The model of `cfg` with shape-only tensors, its parameter count within the budget.

    Raises ValueError when it cannot be built or is too large.
    """
    try:
        with torch.device("meta"):
            model = build_model(cfg)
    except Exception as exc:  # noqa: BLE001 - any builder failure means a bad config
        raise ValueError(f"the config cannot be built ({type(exc).__name__}: {exc})") from None
    n_parameters = sum(p.numel() for p in model.parameters())
    if n_parameters > MAX_PARAMETERS:
        raise ValueError(f"the config builds {n_parameters:.3g} parameters (at most {MAX_PARAMETERS:.3g})")
    return model


def check_grid(shape: tuple[int, ...]) -> None:
    """Raise ValueError when the preprocess grid a model asks for is beyond the budget."""
    if max(shape) > MAX_GRID_AXIS or math.prod(shape) > MAX_GRID_VOXELS:
        raise ValueError(f"preprocess grid {tuple(shape)} is beyond the budget "
                         f"(at most {MAX_GRID_AXIS} per axis and {MAX_GRID_VOXELS} voxels)")
