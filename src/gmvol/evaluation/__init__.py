"""Evaluation: metrics, reference baselines, metrics.json/plot tables and figures."""

from gmvol.evaluation.baselines import mean_predictor, total_scaling
from gmvol.evaluation.figures import plot_error_boxplot, plot_normalized_loss_bars, plot_scatter_grid
from gmvol.evaluation.metrics import METRIC_COLUMNS, SUMMARY_KEYS, region_table, summary
from gmvol.evaluation.tables import (
    PREDICTORS,
    TIMING_KEYS,
    long_region_table,
    plots_table,
    predictions,
    region_tables,
    report_metrics,
)

__all__ = [
    "METRIC_COLUMNS", "PREDICTORS", "SUMMARY_KEYS", "TIMING_KEYS", "long_region_table", "mean_predictor",
    "plot_error_boxplot", "plot_normalized_loss_bars", "plot_scatter_grid", "plots_table", "predictions",
    "region_table", "region_tables", "report_metrics", "summary", "total_scaling",
]
