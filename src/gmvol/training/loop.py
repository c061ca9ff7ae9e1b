"""Train one registered model on the preprocessing cache with Catalyst, and save it."""

from __future__ import annotations

import tempfile
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from catalyst import dl
from torch.utils.data import DataLoader

from gmvol.data.dataset import AugmentConfig, TargetScaler, VolumeDataset, load_images, volumes_of
from gmvol.data.preprocess import read_spec
from gmvol.io import atomic_path, write_json
from gmvol.models import build_model, count_parameters
from gmvol.models.checkpoint import save_model
from gmvol.regions import REGION_COLUMNS
from gmvol.training.curves import BestWeightsCallback, CurvesLogger
from gmvol.training.engine import build_engine, resolve_engine_name


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
    num_workers: int = 0
    threads: int = 0              # torch CPU threads; 0 = leave torch's default
    check: bool = False           # Catalyst's 3-batch smoke run
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))


def _loaders(train_table: pd.DataFrame, cache_dir: Path, cfg: TrainConfig,
             scaler: TargetScaler) -> OrderedDict[str, DataLoader]:
    loaders: OrderedDict[str, DataLoader] = OrderedDict()
    for fold, aug in (("train", cfg.augment), ("valid", None)):
        part = train_table[train_table["fold"] == fold] if "fold" in train_table else train_table
        if fold == "valid" and part.empty:
            part = train_table  # no validation split: monitor the training subjects themselves
        data = VolumeDataset(load_images(cache_dir, part["subject"].tolist()), volumes_of(part), scaler, aug)
        loaders[fold] = DataLoader(data, batch_size=cfg.batch_size, shuffle=fold == "train",
                                   num_workers=cfg.num_workers, drop_last=False)
    return loaders


def train_model(model_cfg: Any, cfg: TrainConfig, train_csv: Path, cache_dir: Path, out_dir: Path,
                curves_csv: Path, metrics_json: Path) -> dict[str, float]:
    """Fit, then write `out_dir/model.pt` (best weights), `last.pt`, `model.json`, the curves
    and a small metrics file with the validation loss next to the mean predictor's."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    table = pd.read_csv(train_csv)
    fit_part = table[table["fold"] == "train"] if "fold" in table else table
    scaler = TargetScaler.fit(volumes_of(fit_part))
    spec = read_spec(cache_dir / "spec.json")
    loaders = _loaders(table, cache_dir, cfg, scaler)

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, len(loaders["train"])) * cfg.epochs
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps)
                 if cfg.scheduler == "onecycle" else None)
    best = BestWeightsCallback()
    curves = CurvesLogger(curves_csv)
    callbacks = [best, dl.EarlyStoppingCallback(patience=cfg.patience, loader_key="valid",
                                                metric_key="loss", minimize=True)]
    if scheduler is not None:
        callbacks.append(dl.SchedulerCallback(mode="batch"))
    runner = dl.SupervisedRunner(input_key="image", target_key="target", output_key="pred",
                                 loss_key="loss")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as logdir:
        runner.train(
            engine=build_engine(cfg.engine, cfg.precision), model=model,
            criterion=torch.nn.MSELoss(), optimizer=optimizer, scheduler=scheduler,
            loaders=loaders, callbacks=callbacks, num_epochs=cfg.epochs,
            loggers={"curves": curves, "console": dl.ConsoleLogger()},
            seed=cfg.seed,  # Catalyst silently uses 42 unless told
            logdir=logdir, valid_loader="valid", valid_metric="loss", minimize_valid_metric=True,
            verbose=True, check=cfg.check,
        )
    seconds = time.perf_counter() - started

    valid_targets = loaders["valid"].dataset.targets
    mean_loss = float(np.mean(valid_targets**2))  # the training mean is 0 in standardised units
    metadata = {
        "target_scaling": scaler.to_dict(), "regions": list(REGION_COLUMNS),
        "preprocess": spec.to_dict(), "train": _jsonable(asdict(cfg)),
        "best_epoch": best.best_epoch, "n_parameters": count_parameters(model),
    }
    model.load_state_dict(best.best_state or best.last_state or model.state_dict())
    save_model(out_dir, model, model_cfg, metadata)
    if best.last_state is not None:
        with atomic_path(out_dir / "last.pt") as tmp:
            torch.save(best.last_state, tmp)
    metrics = {"valid_loss": best.best_score, "valid_loss_mean_predictor": mean_loss,
               "best_epoch": best.best_epoch, "train_seconds": seconds,
               "epochs_run": len(curves.rows),
               "seconds_per_sample": seconds / max(1, len(curves.rows)) / len(loaders["train"].dataset),
               "n_parameters": count_parameters(model), "engine": resolve_engine_name(cfg.engine)}
    write_json(metrics, metrics_json)
    return metrics


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
