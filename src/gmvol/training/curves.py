"""Per-epoch training curves as CSV for `dvc plots`, and in-memory best/last weights.

DVCLive dropped its Catalyst integration, so this small logger writes what `dvc plots` reads.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from catalyst import dl
from catalyst.core.logger import ILogger

from gmvol.io import write_csv


class CurvesLogger(ILogger):
    """Collect epoch-level loss/lr per loader; rewrite `path` atomically after every epoch."""

    def __init__(self, path: Path) -> None:
        super().__init__(log_batch_metrics=False, log_epoch_metrics=True)
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, Any], scope: str, runner: dl.IRunner) -> None:
        if scope != "epoch":
            return
        row: dict[str, float] = {"epoch": runner.epoch_step}
        for loader, values in metrics.items():
            if not isinstance(values, dict):
                continue
            for key in ("loss", "segmentation_loss", "dice_loss", "total_loss", "lr"):  # the middle three: counting models
                if key in values:
                    row[key if key == "lr" else f"{loader}_{key}"] = float(values[key])
        self.rows.append(row)
        write_csv(pd.DataFrame(self.rows), self.path)


class BestWeightsCallback(dl.Callback):
    """The one tracker of the best epoch: keeps the weights of the best validation epoch and of
    the last one (as state_dicts, on the main process), and stops the run after `patience`
    epochs without improvement (on every process, which all see the same synced metric)."""

    MIN_DELTA = 1e-6
    """An epoch improves on the best only by more than this (Catalyst's early-stopping default)."""

    def __init__(self, patience: int, loader_key: str = "valid", metric_key: str = "loss") -> None:
        super().__init__(order=dl.CallbackOrder.External)
        self.patience, self.loader_key, self.metric_key = patience, loader_key, metric_key
        self.best_score = float("inf")
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_state: dict[str, torch.Tensor] | None = None

    def _state(self, runner: dl.IRunner) -> dict[str, torch.Tensor]:
        model = runner.engine.unwrap_model(runner.model) if hasattr(runner.engine, "unwrap_model") \
            else runner.model
        return {k: v.detach().cpu().clone() for k, v in copy.copy(model.state_dict()).items()}

    def on_epoch_end(self, runner: dl.IRunner) -> None:
        score = float(runner.epoch_metrics[self.loader_key][self.metric_key])
        improved = score < self.best_score - self.MIN_DELTA
        if improved:
            self.best_score, self.best_epoch = score, runner.epoch_step
        elif runner.epoch_step - self.best_epoch >= self.patience:
            runner.need_early_stop = True
        if not getattr(runner.engine, "is_main_process", True):
            return  # under DDP only rank 0 saves; the others need no copies
        self.last_state = self._state(runner)
        if improved:
            self.best_state = self.last_state
