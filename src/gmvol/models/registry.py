"""Model registry: config name -> model class, and the one place models are built."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from gmvol.models.baseline import BrainRegressorCNN
from gmvol.models.config import ModelConfig
from gmvol.models.meshnet import MeshNet
from gmvol.models.resnet import MultiScaleResNet

ModelBuilder = Callable[..., nn.Module]
"""Called as ``builder(arch_cfg, in_channels=..., n_outputs=...)`` with the model's own settings."""


MODEL_REGISTRY: dict[str, ModelBuilder] = {  # keys: config.ARCH_NAMES (checked by the tests)
    "meshnet": MeshNet,
    "baseline": BrainRegressorCNN,
    "resnet": MultiScaleResNet,
}


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the model `cfg.name` names, mapping (B, in_channels, D, H, W) to (B, n_outputs)."""
    return MODEL_REGISTRY[cfg.name](cfg.arch, in_channels=cfg.in_channels, n_outputs=cfg.n_outputs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
