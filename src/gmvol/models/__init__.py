"""Models that regress the 68 DK regional volumes from a T1 volume (B, 1, D, H, W) -> (B, 68).

Build them from a typed :class:`ModelConfig` through :data:`MODEL_REGISTRY`::

    cfg = model_config_from_dict({"name": "meshnet", "meshnet": {"head": "grid"}})
    model = build_model(cfg)
"""

from gmvol.models.config import (
    BaselineConfig,
    MeshNetConfig,
    ModelConfig,
    ResNetConfig,
    model_config_from_dict,
    model_config_to_dict,
)
from gmvol.models.fast_conv import FastDilatedConv3d
from gmvol.models.registry import MODEL_REGISTRY, build_model, count_parameters

__all__ = [
    "MODEL_REGISTRY",
    "BaselineConfig",
    "FastDilatedConv3d",
    "MeshNetConfig",
    "ModelConfig",
    "ResNetConfig",
    "build_model",
    "count_parameters",
    "model_config_from_dict",
    "model_config_to_dict",
]
