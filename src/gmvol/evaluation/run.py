"""The evaluate stage: predict the test scans end to end (as `gmvol predict` does), then score
the model next to both baselines and draw the paper's figures."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from gmvol.evaluation.figures import plot_error_boxplot, plot_normalized_loss_bars, plot_scatter_grid
from gmvol.evaluation.report import long_region_table, plots_table, region_tables, report_metrics
from gmvol.io import InputError, write_csv, write_json
from gmvol.predict import Predictor
from gmvol.regions import REGION_COLUMNS


def evaluate_model(model_dir: Path, train_csv: Path, test_csv: Path, out_dir: Path,
                   device: str = "auto", batch_size: int = 4) -> dict:
    """Write predictions.csv, regions.csv, regions_all.csv, normalized_loss.csv, metrics.json
    and boxplot/scatter/normalized_loss PNGs to `out_dir`; return the metrics."""
    train = pd.read_csv(train_csv)
    test = pd.read_csv(test_csv)
    predictor = Predictor(model_dir, device=device, batch_size=batch_size)
    bar = tqdm(total=len(test), desc=f"evaluate {Path(model_dir).name}", unit="scan")
    started = time.perf_counter()
    pred = predictor.predict_files([Path(p) for p in test["t1"]], test["subject"].tolist(),
                                   on_result=lambda _: bar.update())
    wall = time.perf_counter() - started
    bar.close()
    if predictor.failures:
        bad = predictor.failures[0]
        raise InputError(bad.path, f"could not be predicted ({bad.error.reason if bad.error else '?'})")
    true = test.set_index("subject")[list(REGION_COLUMNS)]
    pred_values = pred.set_index("subject")[list(REGION_COLUMNS)].loc[true.index]
    timings = {"seconds_per_scan_forward": float(predictor.timings["forward_s"].mean()),
               "seconds_per_scan_end_to_end": wall / len(test)}
    fit = train[train["fold"] == "train"] if "fold" in train else train
    fit = fit[list(REGION_COLUMNS)]
    metrics = report_metrics(fit, true, pred_values, timings)
    tables = region_tables(fit, true, pred_values)

    write_csv(pred, out_dir / "predictions.csv")
    write_csv(tables["model"], out_dir / "regions.csv")
    write_csv(long_region_table(tables), out_dir / "regions_all.csv")
    write_csv(plots_table(tables), out_dir / "normalized_loss.csv")
    write_json(metrics, out_dir / "metrics.json")
    name = Path(model_dir).name
    plot_error_boxplot(true, pred_values, out_dir / "boxplot.png",
                       f"{name}: absolute error per region on {len(true)} test scans")
    plot_scatter_grid(true, pred_values, out_dir / "scatter.png")
    plot_normalized_loss_bars(tables, out_dir / "normalized_loss.png")
    m = metrics["model"]
    print(f"evaluate {name}: normalized loss {m['normalized_loss']:.4g} "
          f"(mean predictor {metrics['mean_predictor']['normalized_loss']:.4g}), "
          f"median R2 {m['r2_median']:.3f}, MAE {m['mae_pct']:.2f}%")
    return metrics
