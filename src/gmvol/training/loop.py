"""Train one registered model on the preprocessing cache with Catalyst, and save it."""

from __future__ import annotations

import json
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from catalyst import dl
from torch.utils.data import DataLoader

from gmvol.data.dataset import (
    AugmentConfig,
    CachedImages,
    TargetScaler,
    VolumeDataset,
    load_images,
    volumes_of,
)
from gmvol.data.preprocess import PreprocessSpec, read_spec
from gmvol.heap import retain_freed_memory
from gmvol.models import build_model
from gmvol.regions import REGION_COLUMNS
from gmvol.training.curves import BestWeightsCallback, CurvesLogger
from gmvol.training.ddp import DDPEngine, SeededShuffle, per_process_batch, resolve_layout
from gmvol.training.engine import build_engine, resolve_engine_name
from gmvol.training.outputs import SaveOutputsCallback


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the architecture itself is the model's own config."""

    seed: int = 0
    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-3              # OneCycle's peak learning rate
    weight_decay: float = 1e-4
    scheduler: str = "onecycle"   # or "constant"
    patience: int = 5             # early stopping on the validation loss, in epochs
    engine: str = "auto"          # auto | cpu | gpu | ddp
    precision: str = "fp32"       # fp32 | bf16 | fp16 (AMP on GPU)
    num_workers: int = 0          # loader processes reading/augmenting the next batches
    preload_gib: float = 4.0      # hold the images in memory up to this size, else read per batch
    threads: int = 0              # torch CPU threads; 0 = leave torch's default
    check: bool = False           # Catalyst's 3-batch smoke run
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ddp_processes: int = 0        # engine ddp: processes per node; 0 = one per GPU
    ddp_backend: str = "auto"     # auto (nccl on CUDA, else gloo) | nccl | gloo
    ddp_nodes: int = 1            # > 1: every node runs the stage with NODE_RANK, MASTER_ADDR set
    ddp_port: int = 0             # 0 = MASTER_PORT if set, else a free port (single node)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))


def _images(cache_dir: Path, subjects: list[str], spec: PreprocessSpec,
            cfg: TrainConfig) -> np.ndarray | CachedImages:
    """In memory when small enough (no I/O during training), else read on access."""
    gib = len(subjects) * float(np.prod(spec.shape)) * 4 / 2**30
    return load_images(cache_dir, subjects) if gib <= cfg.preload_gib else CachedImages(cache_dir, subjects)


def _loaders(train_table: pd.DataFrame, cache_dir: Path, spec: PreprocessSpec, cfg: TrainConfig,
             scaler: TargetScaler) -> OrderedDict[str, DataLoader]:
    """Train and valid loaders. With `num_workers` > 0, worker processes prepare the next
    batches (reading, augmenting) while the model trains; pinned memory speeds the GPU copy."""
    workers = {"num_workers": cfg.num_workers, "persistent_workers": cfg.num_workers > 0,
               "pin_memory": torch.cuda.is_available() and resolve_engine_name(cfg.engine) != "cpu"}
    loaders: OrderedDict[str, DataLoader] = OrderedDict()
    for fold, aug in (("train", cfg.augment), ("valid", None)):
        part = train_table[train_table["fold"] == fold] if "fold" in train_table else train_table
        if fold == "valid" and part.empty:
            part = train_table  # no validation split: monitor the training subjects themselves
        images = _images(cache_dir, part["subject"].tolist(), spec, cfg)
        data = VolumeDataset(images, volumes_of(part), scaler, aug)
        order = SeededShuffle(len(data), cfg.seed) if fold == "train" else None  # same on all ranks
        loaders[fold] = DataLoader(data, batch_size=cfg.batch_size, sampler=order, drop_last=False, **workers)
    return loaders


def _engine(cfg: TrainConfig) -> dl.Engine:
    """The Catalyst engine; for DDP, refuse a global batch the processes cannot share equally."""
    if resolve_engine_name(cfg.engine) != "ddp":
        return build_engine(cfg.engine, cfg.precision)
    layout = resolve_layout(cfg.ddp_processes, cfg.ddp_backend, cfg.ddp_nodes, cfg.ddp_port)
    per_process_batch(cfg.batch_size, layout.world_size)
    return build_engine("ddp", cfg.precision, layout, threads=cfg.threads)


def train_model(model_cfg: Any, cfg: TrainConfig, train_csv: Path, cache_dir: Path, out_dir: Path,
                curves_csv: Path, metrics_json: Path) -> dict[str, Any]:
    """Fit, then write `out_dir/model.pt` (best weights), `last.pt`, `model.json`, the curves
    and a small metrics file with the validation loss next to the mean predictor's.

    With engine ddp the fit runs in spawned processes and rank 0 writes these files (see
    `SaveOutputsCallback`); the metrics returned here are read back from `metrics_json`, and are
    empty on the other nodes of a multi-node job, which write nothing."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    engine = _engine(cfg)  # refuse a bad DDP layout before loading any data
    table = pd.read_csv(train_csv)
    fit_part = table[table["fold"] == "train"] if "fold" in table else table
    scaler = TargetScaler.fit(volumes_of(fit_part))
    spec = read_spec(cache_dir / "spec.json")
    loaders = _loaders(table, cache_dir, spec, cfg, scaler)
    if resolve_engine_name(cfg.engine) == "cpu":
        retain_freed_memory()  # 1.15-1.6x per step on CPU (gmvol.heap); DDP processes do it in setup

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    # fused: one kernel for all parameters (0.3 ms vs 2.6 ms per step for MeshNet on 2 CPU cores)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    steps = max(1, len(loaders["train"])) * cfg.epochs  # global batches: the same under DDP
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps)
                 if cfg.scheduler == "onecycle" else None)
    best = BestWeightsCallback()
    curves = CurvesLogger(curves_csv)
    valid_targets = loaders["valid"].dataset.targets
    mean_loss = float(np.mean(valid_targets**2))  # the training mean is 0 in standardised units
    metadata = {"target_scaling": scaler.to_dict(), "regions": list(REGION_COLUMNS),
                "preprocess": spec.to_dict(), "train": _jsonable(asdict(cfg))}
    save = SaveOutputsCallback(best, curves, out_dir, model_cfg, metadata, metrics_json,
                               {"valid_loss_mean_predictor": mean_loss,
                                "engine": resolve_engine_name(cfg.engine)})
    callbacks = [best, save, dl.EarlyStoppingCallback(patience=cfg.patience, loader_key="valid",
                                                      metric_key="loss", minimize=True)]
    if scheduler is not None:
        callbacks.append(dl.SchedulerCallback(mode="batch"))
    runner = dl.SupervisedRunner(input_key="image", target_key="target", output_key="pred",
                                 loss_key="loss")
    with tempfile.TemporaryDirectory() as logdir:
        runner.train(
            engine=engine, model=model,
            criterion=torch.nn.MSELoss(), optimizer=optimizer, scheduler=scheduler,
            loaders=loaders, callbacks=callbacks, num_epochs=cfg.epochs,
            loggers={"curves": curves, "console": dl.ConsoleLogger()},
            seed=cfg.seed,  # Catalyst silently uses 42 unless told
            logdir=logdir, valid_loader="valid", valid_metric="loss", minimize_valid_metric=True,
            verbose=True, check=cfg.check,
        )
    if isinstance(engine, DDPEngine) and engine.layout.node_rank != 0:
        return {}
    return json.loads(Path(metrics_json).read_text())


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
