"""Train one registered model on the preprocessing cache with Catalyst, and save it."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from catalyst import dl
from torch.utils.data import DataLoader

from gmvol.config import jsonable
from gmvol.data.dataset import (
    CachedFractions,
    CachedImages,
    TargetScaler,
    VolumeDataset,
    load_images,
    volumes_of,
)
from gmvol.data.preprocess import PreprocessSpec, read_spec
from gmvol.data.split import fit_subjects, fold_rows
from gmvol.heap import retain_freed_memory
from gmvol.io import write_json
from gmvol.models import build_model
from gmvol.models.card import DataSource
from gmvol.regions import REGION_COLUMNS
from gmvol.regrid import METADATA_KEY, TypicalTotals
from gmvol.training.calibration import calibrate_composition
from gmvol.training.config import TrainConfig
from gmvol.training.counting import (
    class_priors,
    counting_callbacks,
    counting_criteria,
    counting_head,
    prepare_counting,
    runner_keys,
)
from gmvol.training.curves import BestWeightsCallback, CurvesLogger
from gmvol.training.ddp import DDPEngine, SeededShuffle, per_process_batch, resolve_layout
from gmvol.training.engine import build_engine, engine_precision, resolve_engine_name
from gmvol.training.outputs import SaveOutputsCallback, write_card_and_qc


def _images(cache_dir: Path, subjects: list[str], spec: PreprocessSpec,
            cfg: TrainConfig) -> np.ndarray | CachedImages:
    """In memory when small enough (no I/O during training), else read on access."""
    gib = len(subjects) * float(np.prod(spec.shape)) * 4 / 2**30
    return load_images(cache_dir, subjects) if gib <= cfg.preload_gib else CachedImages(cache_dir, subjects)


def _loaders(train_table: pd.DataFrame, cache_dir: Path, spec: PreprocessSpec, cfg: TrainConfig,
             scaler: TargetScaler, counting: bool = False) -> OrderedDict[str, DataLoader]:
    """Train and valid loaders (with the class fractions for a counting model). With
    `num_workers` > 0, worker processes prepare the next batches (reading, augmenting) while the
    model trains; pinned memory speeds the GPU copy."""
    workers = {"num_workers": cfg.num_workers, "persistent_workers": cfg.num_workers > 0,
               "pin_memory": torch.cuda.is_available() and resolve_engine_name(cfg.engine) != "cpu"}
    loaders: OrderedDict[str, DataLoader] = OrderedDict()
    for fold, aug in (("train", cfg.augment), ("valid", None)):
        part = fold_rows(train_table, fold)
        if fold == "valid" and part.empty:
            part = train_table  # no validation split: monitor the training subjects themselves
        subjects = part["subject"].tolist()
        images = _images(cache_dir, subjects, spec, cfg)
        fractions = CachedFractions(cache_dir, subjects, preload=isinstance(images, np.ndarray)) if counting else None
        data = VolumeDataset(images, volumes_of(part), scaler, aug, fractions, spec.voxel_size**3)
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
                curves_csv: Path, metrics_json: Path, source: DataSource | None = None) -> dict[str, Any]:
    """Fit, then write `out_dir/model.pt` (best weights), `last.pt`, `model.json`, the model
    card and QC reference (`card.json`, `qc.json`; `source` says where the training subjects
    came from), the curves and a small metrics file with the validation loss next to the mean
    predictor's.

    With engine ddp the fit runs in spawned processes and rank 0 writes these files (see
    `SaveOutputsCallback`); the metrics returned here are read back from `metrics_json`, and are
    empty on the other nodes of a multi-node job, which write nothing."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    engine = _engine(cfg)  # refuse a bad DDP layout before loading any data
    table = pd.read_csv(train_csv)
    fit_volumes = volumes_of(fit_subjects(table))
    scaler = TargetScaler.fit(fit_volumes)
    spec = read_spec(cache_dir / "spec.json")
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg)
    head = counting_head(model)
    if head is None and cfg.augment.zoom:
        raise ValueError("train.augment.zoom needs a counting model (meshnet head 'count' or 'count_factored'): the zoomed "
                         "targets are recounted from the class fractions, which a regression model does not use")
    loaders = _loaders(table, cache_dir, spec, cfg, scaler, counting=head is not None)
    if head is not None:
        fractions = loaders["train"].dataset.fractions
        priors = class_priors(fractions, int(np.prod(spec.shape)), spec.voxel_size**3)
        prepare_counting(head, scaler, spec.voxel_size, priors)
    if resolve_engine_name(cfg.engine) == "cpu":
        retain_freed_memory()  # faster CPU steps (benchmarks/README.md); DDP processes do it in setup

    # fused: one kernel for all parameters instead of one per tensor (benchmarks/README.md)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    steps = max(1, len(loaders["train"])) * cfg.epochs  # global batches: the same under DDP
    scheduler = (torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps)
                 if cfg.scheduler == "onecycle" else None)
    best = BestWeightsCallback(patience=cfg.patience)
    curves = CurvesLogger(curves_csv)
    valid_targets = loaders["valid"].dataset.targets
    mean_loss = float(np.mean(valid_targets**2))  # the training mean is 0 in standardised units
    metadata = {"target_scaling": scaler.to_dict(), "regions": list(REGION_COLUMNS),
                "preprocess": jsonable(spec), "train": jsonable(cfg),
                METADATA_KEY: TypicalTotals.of(fit_volumes.sum(axis=1)).to_list()}  # gmvol.regrid
    save = SaveOutputsCallback(best, curves, out_dir, model_cfg, metadata, metrics_json,
                               {"valid_loss_mean_predictor": mean_loss,
                                "engine": resolve_engine_name(cfg.engine),
                                "precision": engine_precision(cfg.engine, cfg.precision)})
    callbacks: list[dl.Callback] = [best, save]
    criterion: torch.nn.Module | dict[str, torch.nn.Module] = torch.nn.MSELoss()
    if head is not None:
        callbacks += counting_callbacks(cfg.volume_weight, cfg.segmentation_weight, cfg.dice_weight,
                                        cfg.total_weight)
        criterion = counting_criteria(scaler, fit_volumes)
    if scheduler is not None:
        callbacks.append(dl.SchedulerCallback(mode="batch"))
    runner = dl.SupervisedRunner(**runner_keys(head is not None))
    # logdir=None: no Catalyst checkpoints, CSV or TensorBoard logs (our outputs are written by
    # SaveOutputsCallback and CurvesLogger); `best` alone tracks the best epoch and stops early
    runner.train(
        engine=engine, model=model,
        criterion=criterion, optimizer=optimizer, scheduler=scheduler,
        loaders=loaders, callbacks=callbacks, num_epochs=cfg.epochs,
        loggers={"curves": curves, "console": dl.ConsoleLogger()},
        seed=cfg.seed,  # Catalyst silently uses 42 unless told
        logdir=None, valid_loader="valid", valid_metric="loss", minimize_valid_metric=True,
        verbose=True, check=cfg.check,
    )
    if isinstance(engine, DDPEngine) and engine.layout.node_rank != 0:
        return {}
    metrics = json.loads(Path(metrics_json).read_text())
    if head is not None and cfg.composition:
        device = "cpu" if resolve_engine_name(cfg.engine) == "cpu" else "auto"
        metrics.update(calibrate_composition(out_dir, table, cache_dir, device))
        write_json(metrics, metrics_json)
        print(f"train {Path(out_dir).name}: composition weight {metrics['composition_weight']:.3f} "
              f"(validation normalized loss {metrics['valid_normalized_loss_counted']:.4f} counted, "
              f"{metrics['valid_normalized_loss_composed']:.4f} composed)")
    write_card_and_qc(out_dir, source or DataSource(), table, cache_dir, scaler, metrics)
    print(f"train {Path(out_dir).name}: valid loss {metrics['valid_loss']:.4f} (mean predictor "
          f"{metrics['valid_loss_mean_predictor']:.4f}), best epoch {metrics['best_epoch']}")
    return metrics
