"""How to train (the `train` params section) and how a model's own `train` overrides apply.

The defaults equal the params file's `train` section; `training_configs` is the one place where a
model entry of the `models` section (its architecture plus optional `train` overrides) meets the
shared `train` section, so the stage and the tests build exactly the same configs.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gmvol.config import check_overrides, merged, parse
from gmvol.data.dataset import AugmentConfig
from gmvol.models.config import ModelConfig, model_config_from_dict
from gmvol.precision import TrainingPrecision

Engine = Literal["auto", "cpu", "gpu", "ddp"]
ENGINES: tuple[str, ...] = typing.get_args(Engine)
OVERRIDES_KEY = "train"
"""The key of a `models.<name>` entry that holds its overrides of the `train` section."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the architecture itself is the model's own config."""

    seed: int = 0
    epochs: int = 6
    batch_size: int = 4
    lr: float = 0.003                            # OneCycle's peak learning rate (AdamW)
    weight_decay: float = 0.0001
    scheduler: Literal["onecycle", "constant"] = "onecycle"
    patience: int = 4                            # early stopping on the validation loss, in epochs
    engine: Engine = "auto"                      # auto: gpu when CUDA is there, else cpu
    ddp_processes: int = 0                       # ddp: processes per node; 0 = one per GPU
    ddp_backend: Literal["auto", "nccl", "gloo"] = "auto"   # auto: nccl on CUDA, else gloo
    ddp_nodes: int = 1                           # > 1: every node runs the stage with NODE_RANK set
    ddp_port: int = 0                            # 0 = MASTER_PORT if set, else a free port
    precision: TrainingPrecision = "fp32"        # bf16 | fp16: autocast (fp16 on GPU only); auto: bf16 where native
    num_workers: int = 0                         # loader processes reading/augmenting next batches
    preload_gib: float = 4.0                     # hold the images in memory up to this, else stream
    threads: int = 0                             # torch CPU threads; 0 = torch's default
    check: bool = False                          # Catalyst's 3-batch smoke run
    volume_weight: float = 1.0                   # counting models: loss = volume MSE x this
    segmentation_weight: float = 1.0             # + per-voxel soft cross-entropy x this
    dice_weight: float = 1.0                     # + (1 - mean soft Dice of the 68 regions) x this
    total_weight: float = 0.0                    # + MSE of the hemisphere totals (in training SDs) x this
    composition: bool = True                     # counting models: after training, pull the regional
                                                 # shares toward the training mean, weight fit on valid
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "patience", "ddp_nodes"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.preload_gib < 0:
            raise ValueError("lr must be > 0, weight_decay and preload_gib >= 0")
        if min(self.volume_weight, self.segmentation_weight, self.dice_weight, self.total_weight) < 0:
            raise ValueError("volume_weight, segmentation_weight, dice_weight and total_weight must be >= 0")
        if min(self.ddp_processes, self.ddp_port, self.num_workers, self.threads) < 0:
            raise ValueError("ddp_processes, ddp_port, num_workers and threads must be >= 0")


def training_configs(train_section: Mapping[str, Any], model_entry: Mapping[str, Any],
                     model: str) -> tuple[ModelConfig, TrainConfig]:
    """The model's architecture config and its training config: the `train` section updated
    (recursively) by the entry's own `train` overrides. Errors name `models.<model>...` or
    `train...`, whichever holds the bad key."""
    where = f"models.{model}"
    if not isinstance(model_entry, Mapping):
        parse(ModelConfig, model_entry, where)  # raises, naming the entry
    architecture = {k: v for k, v in model_entry.items() if k != OVERRIDES_KEY}
    overrides = model_entry.get(OVERRIDES_KEY) or {}
    check_overrides(TrainConfig, overrides, f"{where}.{OVERRIDES_KEY}")
    return (model_config_from_dict(architecture, where),
            parse(TrainConfig, merged(train_section, overrides), "train"))
