"""Write a finished run's files from inside the run, on the main process only.

Under DDP the runner is pickled into spawned processes, so the caller's callbacks never see the
training; the outputs must be written by the process that trained, and by exactly one of them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from catalyst import dl

from gmvol.data.dataset import TargetScaler, load_images, volumes_of
from gmvol.data.preprocess import read_spec
from gmvol.data.split import fit_subjects, fold_rows
from gmvol.io import write_json
from gmvol.models import count_parameters
from gmvol.models.card import DataSource, card_document, write_card
from gmvol.models.checkpoint import load_model, save_model, save_state_dict
from gmvol.qc import QC_FILE, build_reference
from gmvol.training.curves import BestWeightsCallback, CurvesLogger


class SaveOutputsCallback(dl.Callback):
    """At the end of the experiment, rank 0 writes model.pt (best weights), last.pt, model.json
    and the metrics JSON; the curves CSV is written by `curves`, a logger only rank 0 has."""

    def __init__(self, best: BestWeightsCallback, curves: CurvesLogger, out_dir: Path, model_cfg: Any,
                 metadata: dict[str, Any], metrics_json: Path, metrics: dict[str, Any]) -> None:
        super().__init__(order=dl.CallbackOrder.External)
        self.best, self.curves = best, curves
        self.out_dir, self.model_cfg, self.metrics_json = Path(out_dir), model_cfg, Path(metrics_json)
        self.metadata, self.metrics = metadata, metrics
        self._started = 0.0

    def on_experiment_start(self, runner: dl.IRunner) -> None:
        self._started = time.perf_counter()

    def on_experiment_end(self, runner: dl.IRunner) -> None:
        if not runner.engine.is_main_process:
            return
        seconds = time.perf_counter() - self._started
        model = runner.engine.unwrap_model(runner.model)
        best = self.best
        model.load_state_dict(best.best_state or best.last_state or model.state_dict())
        n_parameters = count_parameters(model)
        save_model(self.out_dir, model, self.model_cfg,
                   {**self.metadata, "best_epoch": best.best_epoch, "n_parameters": n_parameters})
        if best.last_state is not None:
            save_state_dict(best.last_state, self.out_dir / "last.pt")
        epochs = len(self.curves.rows)
        n_train = len(runner.loaders["train"].dataset)
        write_json({**self.metrics, "valid_loss": best.best_score, "best_epoch": best.best_epoch,
                    "train_seconds": seconds, "epochs_run": epochs,
                    "seconds_per_sample": seconds / max(1, epochs) / n_train,
                    "n_parameters": n_parameters, "world_size": runner.engine.num_processes},
                   self.metrics_json)


QC_REFERENCE_SCANS = 64
"""Training-table scans the QC reference is measured on (`gmvol.qc.FLIP_SCANS` of them forward)."""


def write_card_and_qc(out_dir: Path, source: DataSource, table: pd.DataFrame, cache_dir: Path,
                      scaler: TargetScaler, metrics: dict[str, Any]) -> None:
    """After the fit, on the node that saved the model: `card.json` (data source, training
    totals, validation metrics) and `qc.json` (the QC reference of `gmvol.qc`), both without
    clock values so the model directory stays byte-reproducible."""
    fit = fit_subjects(table)
    totals = volumes_of(fit).sum(axis=1).tolist()
    validation = {k: metrics[k] for k in ("valid_loss", "valid_loss_mean_predictor", "best_epoch", "epochs_run")}
    write_card(out_dir, card_document(Path(out_dir).name, source, totals, len(fit),
                                      len(fold_rows(table, "valid")), validation))
    model, _ = load_model(out_dir, map_location="cpu")

    def predict(image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(image)[None, None])).float().numpy()
        return scaler.inverse(out.astype(np.float64))[0]

    images = load_images(cache_dir, table["subject"].tolist()[:QC_REFERENCE_SCANS])
    reference = build_reference(list(images), totals, read_spec(Path(cache_dir) / "spec.json"), predict)
    write_json(reference.to_dict(), Path(out_dir) / QC_FILE)
