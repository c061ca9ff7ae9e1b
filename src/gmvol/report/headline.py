"""The headline table: every model beside the two trivial baselines, plus a one-line verdict each.

The paper's normalized loss is tiny for any predictor that gets the average brain right, so a
model's number means little alone; putting the mean predictor and the total-scaling oracle in the
same table, and saying in words how many times better the model is, makes the comparison honest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gmvol.report.formatting import as_float, fmt_mm3, fmt_ratio, fmt_share, fmt_sig
from gmvol.report.html import Cell, esc, num_cell, table
from gmvol.report.inputs import ModelInputs

BASELINES: dict[str, str] = {
    "mean_predictor": "mean predictor",
    "total_scaling": "total scaling (oracle)",
}


@dataclass(frozen=True)
class Column:
    """One metric column: scores.json key, header, tooltip, which direction is better, formatter."""

    key: str
    label: str
    tip: str
    better: Literal["lower", "higher"]
    fmt: Callable[[Any], str] = fmt_sig


COLUMNS: tuple[Column, ...] = (
    Column("normalized_loss", "normalized loss", "MSE(pred, true) / MSE(true, 0), the paper's metric", "lower"),
    Column("mse", "MSE (mm⁶)", "mean squared error over all subjects and regions", "lower"),
    Column("mae_mm3", "MAE (mm³)", "mean absolute error over all subjects and regions", "lower", fmt_mm3),
    Column("mae_pct", "MAE (%)", "mean of |pred - true| / true, in percent", "lower"),
    Column("r2_median", "median R²", "R² around the test mean, median over the 68 regions", "higher"),
    Column("r2_pooled", "pooled R²", "1 - sum SSres / sum SStot over regions (big regions weigh more)", "higher"),
    Column("pearson_median", "median r", "Pearson r, median over regions (undefined for a constant)", "higher"),
    Column("icc_median", "median ICC(3,1)", "ICC(3,1) consistency, median over regions", "higher"),
    Column("composition_normalized_loss", "composition loss", "normalized loss of the predicted regional shares "
           "of each hemisphere on the true hemisphere totals: the regional error without the total error", "lower"),
    Column("seconds_per_scan_forward", "s/scan forward", "seconds per scan, network forward pass only", "lower"),
    Column("seconds_per_scan_end_to_end", "s/scan end-to-end", "seconds per scan, from file to volumes",
           "lower"),
    Column("focus_in_region_median", "focus in region", "median share of saliency mass inside the region",
           "higher", fmt_share),
    Column("focus_lift_median", "focus lift", "in-region share / the region's share of the grid (chance = 1), "
           "median over regions and subjects", "higher"),
    Column("focus_in_brain_median", "focus in brain", "median share of saliency mass inside the brain",
           "higher", fmt_share),
)

EXPLANATION = (
    "Why the baselines are here: the normalized loss divides the squared error by the squared true "
    "volumes, so it is already small for a predictor that knows only the average brain. The "
    "<b>mean predictor</b> predicts the training-set mean volume of each region for every subject; a "
    "model is only useful to the extent it beats it, and its R² around the test mean is about 0 (r and "
    "ICC are undefined, shown as —). <b>Total scaling</b> is an oracle: it scales the mean by each "
    "subject's <i>true</i> total gray-matter volume, which no model is given; beating it means the "
    "model captures regional differences beyond overall brain size. R², Pearson r and ICC measure "
    "whether differences between subjects are captured, which the normalized loss hides. The "
    "<b>composition loss</b> takes each predictor's regional shares of a hemisphere and applies them "
    "to the true hemisphere total: a model reads regional anatomy only where it is below the mean "
    "predictor's (the training shares)."
)


def _best(values: Sequence[float | None], better: str) -> float | None:
    """The best of the defined values; None when fewer than two models differ (nothing to single out)."""
    defined = [v for v in values if v is not None]
    if len(defined) < 2 or min(defined) == max(defined):
        return None
    return min(defined) if better == "lower" else max(defined)


def _times(model: float | None, baseline: float | None, name: str) -> str:
    """How many times lower the model's normalized loss is than `name`'s, in words."""
    if model is None or baseline is None or model <= 0 or baseline <= 0:
        return f"normalized loss vs {name}: n/a"
    ratio = baseline / model
    if abs(ratio - 1) < 0.05:
        return f"ties with {name}"
    if ratio > 1:
        return f"beats {name} {fmt_ratio(ratio)}"
    return f"loses to {name} by {fmt_ratio(1 / ratio)}"


def verdict(metrics: dict[str, dict[str, Any]]) -> str:
    """One line: the model against both baselines of its own scores.json, then its median R²."""
    model_nl = as_float((metrics.get("model") or {}).get("normalized_loss"))
    parts = [_times(model_nl, as_float((metrics.get(key) or {}).get("normalized_loss")), label)
             for key, label in BASELINES.items()]
    r2 = as_float(metrics["model"].get("r2_median"))
    r2_text = f"median R² {fmt_sig(r2)}"
    if r2 is not None and r2 <= 0:
        r2_text += " (no better than predicting each region's test mean)"
    return f"{parts[0]} in normalized loss, {parts[1]}; {r2_text}"


def _baselines_differ(models: Sequence[ModelInputs]) -> list[str]:
    """Models whose baseline rows disagree with the first model's, i.e. a different test set."""
    def key(m: ModelInputs) -> list[float | None]:
        return [as_float((m.metrics.get(b) or {}).get("normalized_loss")) for b in BASELINES]
    ref = key(models[0])
    return [m.name for m in models[1:]
            if any(a is None or b is None or abs(a - b) > 1e-9 * max(abs(a), abs(b), 1e-30)
                   for a, b in zip(key(m), ref))]


def headline_section(models: Sequence[ModelInputs], anchors: dict[str, str]) -> str:
    """The headline table with legend, the verdicts, and why the baselines are there."""
    summaries = [m.summary for m in models]
    values = [[as_float(s.get(c.key)) for c in COLUMNS] for s in summaries]
    best = [_best([row[j] for row in values], c.better) for j, c in enumerate(COLUMNS)]
    rows: list[list[Cell]] = []
    for model, row in zip(models, values):
        label = Cell(f'<a href="#{anchors[model.name]}">{esc(model.name)}</a>')
        rows.append([label] + [num_cell(c.fmt(v), bold=v is not None and v == b)
                               for c, v, b in zip(COLUMNS, row, best)])
    source = models[0]
    for key, label in BASELINES.items():
        base = source.metrics.get(key) or {}
        origin = f'<small title="{esc(source.scores_path)}">baseline, from {esc(source.name)}</small>'
        rows.append([Cell(f"{esc(label)}<br>{origin}")]
                    + [num_cell(c.fmt(base.get(c.key))) for c in COLUMNS])
    classes = ["model"] * len(models) + ["baseline first-baseline"] + ["baseline"] * (len(BASELINES) - 1)
    head = [("predictor", "")] + [(c.label, c.tip) for c in COLUMNS]
    verdicts = "".join(f'<li><a href="#{anchors[m.name]}">{esc(m.name)}</a>: {esc(verdict(m.metrics))}</li>'
                       for m in models)
    differ = _baselines_differ(models)
    warning = (f'<p class="note">The baselines of {esc(", ".join(differ))} differ from those of '
               f"{esc(source.name)}: they were evaluated on a different test set, so compare each model "
               "with its own baselines (its verdict below does).</p>" if differ else "")
    legend = ("Bold: best model in the column (baselines excluded). — : undefined or not measured. "
              "Hover a header for its definition. "
              + ("" if differ else "Baselines are identical for every model (same test set), so they are "
                 f"shown once, taken from {source.name}."))
    return (f'<h2 id="headline">Headline</h2>{table(head, rows, classes)}'
            f'<p class="legend">{esc(legend)}</p>{warning}'
            f'<h3>Verdict</h3><ul class="verdicts">{verdicts}</ul>'
            f'<p class="explain">{EXPLANATION}</p>')
