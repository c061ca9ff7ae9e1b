"""The evaluate stage: predict the test scans end to end (as `gmvol predict` does), then score
the model next to both baselines and draw the paper's figures."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from gmvol.data.preprocess import grid_affine, preprocess_image
from gmvol.evaluation.baseline_scores import split_volumes
from gmvol.evaluation.figures import plot_error_boxplot, plot_normalized_loss_bars, plot_scatter_grid
from gmvol.evaluation.response import has_draws, response_scores
from gmvol.evaluation.segmentation_figure import plot_label_maps, plot_no_segmentation
from gmvol.evaluation.tables import (
    headline,
    long_region_table,
    plots_table,
    region_tables,
    report_metrics,
    set_scores,
)
from gmvol.io import InputError, load_t1, load_volume, write_csv, write_json
from gmvol.layout import EvalFiles
from gmvol.predict import Predictor
from gmvol.regions import REGION_COLUMNS
from gmvol.segmentation import labels_in_input_space


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` params section (defaults equal it)."""

    device: str = "auto"          # auto: cuda when available, else cpu; or cpu, cuda, cuda:1, ...
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def set_table(set_dir: Path) -> pd.DataFrame:
    """A synthetic evaluation set (its cohort.csv: the held-out anatomy, the extrapolation set)
    with each subject's T1 path."""
    table = pd.read_csv(Path(set_dir) / "cohort.csv")
    return table.assign(t1=[str(Path(set_dir) / s / "mri" / "orig.mgz") for s in table["subject"]])


def _predict(predictor: Predictor, table: pd.DataFrame, desc: str) -> tuple[pd.DataFrame, float]:
    """Predictions of every scan of `table` (subject, t1), failing on the first unreadable one;
    and the wall time."""
    bar = tqdm(total=len(table), desc=desc, unit="scan")
    started = time.perf_counter()
    pred = predictor.predict_files([Path(p) for p in table["t1"]], table["subject"].tolist(),
                                   on_result=lambda _: bar.update())
    wall = time.perf_counter() - started
    bar.close()
    if predictor.failures:
        bad = predictor.failures[0]
        raise InputError(bad.path, f"could not be predicted ({bad.error.reason if bad.error else '?'})")
    return pred, wall


def plot_segmentation(predictor: Predictor, row: pd.Series, path: Path) -> None:
    """The first test scan's true and predicted label maps (a regression model's panel says it
    does not segment)."""
    if not predictor.segments or not row.get("labels"):  # nothing to compare: no scan to read
        plot_no_segmentation(path, f"{predictor.model_dir.name} regresses volumes: it has no label map to show"
                             if not predictor.segments else "the test scan has no label map")
        return
    img = load_t1(Path(row["t1"]))
    true = np.asarray(load_volume(row["labels"], dtype=np.int32).dataobj)
    *_, classes = predictor.segment_array(preprocess_image(img, predictor.spec))
    predicted = labels_in_input_space(classes, grid_affine(img, predictor.spec), img.affine, img.shape)
    plot_label_maps(img, true, predicted, path, str(row["subject"]))


def evaluate_model(model_dir: Path, train_csv: Path, test_csv: Path, out_dir: Path,
                   cfg: EvaluateConfig, extra_sets: Mapping[str, Path] | None = None) -> dict:
    """Write the `EvalFiles` to `out_dir`: predictions, region tables, scores.json (every block:
    the model and both baselines, on the test split and on each of `extra_sets`, keyed by block
    name: the held-out anatomy, the extrapolation set), metrics.json (the model's headline, and
    each extra block's), the three figures. Returns the scores."""
    fit, true = split_volumes(train_csv, test_csv)
    test = pd.read_csv(test_csv)
    name = Path(model_dir).name
    predictor = Predictor(model_dir, device=cfg.device, batch_size=cfg.batch_size)
    pred, wall = _predict(predictor, test, f"evaluate {name}")
    pred_values = pred.set_index("subject")[list(REGION_COLUMNS)].loc[true.index]
    timings = {"seconds_per_scan_forward": float(predictor.timings["forward_s"].mean()),
               "seconds_per_scan_end_to_end": wall / len(test)}
    metrics = report_metrics(fit, true, pred_values, timings)
    tables = region_tables(fit, true, pred_values)
    headlines = headline(metrics["model"])
    files = EvalFiles(Path(out_dir))
    for block, set_dir in (extra_sets or {}).items():
        held = set_table(set_dir)
        held_pred, _ = _predict(predictor, held, f"evaluate {name} on {block}")
        held_true = held.set_index("subject")[list(REGION_COLUMNS)]
        held_values = held_pred.set_index("subject")[list(REGION_COLUMNS)].loc[held_true.index]
        metrics[block] = set_scores(fit, held_true, held_values)
        headlines[block] = {k: headline(v) for k, v in metrics[block].items()}
        draws = held.set_index("subject")
        if has_draws(draws):  # a synthetic set: how much of each known change the model reports
            metrics[block]["response"] = response_scores(held_true, held_values, draws)
        write_csv(held_pred, files.set_predictions(block))
        h = metrics[block]
        print(f"evaluate {name}, {block}: normalized loss {h['model']['normalized_loss']:.4g} "
              f"(mean predictor {h['mean_predictor']['normalized_loss']:.4g}), median R2 "
              f"{h['model']['r2_median']:.3f}, hemisphere error {h['model']['hemisphere_error_median']:.2%}")

    write_csv(pred, files.predictions)
    write_csv(tables["model"], files.regions)
    write_csv(long_region_table(tables), files.regions_all)
    write_csv(plots_table(tables), files.normalized_loss_table)
    write_json(metrics, files.scores)
    write_json(headlines, files.metrics)
    plot_error_boxplot(true, pred_values, files.boxplot,
                       f"{name}: absolute error per region on {len(true)} test scans")
    plot_scatter_grid(true, pred_values, files.scatter)
    plot_normalized_loss_bars(tables, files.normalized_loss_plot)
    plot_segmentation(predictor, test.iloc[0], files.segmentation)
    m = metrics["model"]
    print(f"evaluate {name}: normalized loss {m['normalized_loss']:.4g} "
          f"(mean predictor {metrics['mean_predictor']['normalized_loss']:.4g}), "
          f"median R2 {m['r2_median']:.3f}, MAE {m['mae_pct']:.2f}%")
    return metrics

