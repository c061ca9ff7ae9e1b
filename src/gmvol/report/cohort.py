"""What the models learn from and how they do on brains they never saw: the cohort montage with
its variation figures, and the held-out-anatomy and size-extrapolation tables beside the test split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmvol.layout import EXTRAPOLATION_BLOCK, HELDOUT_BLOCK
from gmvol.report.formatting import as_float, fmt_mm3, fmt_sig
from gmvol.report.headline import BASELINES
from gmvol.report.html import Cell, esc, figure, num_cell, table
from gmvol.report.inputs import ModelInputs, Sources, png_data_uri, read_json

HELDOUT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("normalized_loss", "normalized loss", "MSE(pred, true) / MSE(true, 0) on this set"),
    ("normalized_loss_region_median", "median regional normalized loss", "the same per region, median over the 68"),
    ("r2_median", "median R²", "R² around this set's mean, median over the 68 regions"),
    ("icc_median", "median ICC(3,1)", "consistency, median over regions"),
    ("mae_pct", "MAE (%)", "mean of |pred - true| / true"),
    ("hemisphere_error_median", "hemisphere error",
     "median over subjects and hemispheres of |predicted hemisphere total / true - 1|"),
    ("composition_normalized_loss", "composition loss",
     ("normalized loss of the predicted regional shares on the true hemisphere totals (below the mean "
      "predictor's: the model reads regional anatomy)")),
)


THICKNESS_TIP = ("how much of a change in cortical thickness the predicted total reports, within each "
                 "anatomy seed (100%: all of it; 0: none; gmvol.evaluation.response)")


def _pct(value: Any) -> str:
    v = as_float(value)
    return "—" if v is None else f"{100 * v:.1f}%"


def _held_cells(held: dict[str, Any]) -> list[Cell]:
    """One predictor's held-out columns (hemisphere error as a percentage)."""
    return [num_cell(_pct(held.get(k)) if k == "hemisphere_error_median" else fmt_sig(held.get(k)))
            for k, _, _ in HELDOUT_COLUMNS]


@dataclass(frozen=True)
class EvaluationSet:
    """An extra evaluation set as the report shows it: scores.json block, page anchor, title, legend."""

    block: str
    anchor: str
    title: str
    legend: str


EVALUATION_SETS: tuple[EvaluationSet, ...] = (
    EvaluationSet(HELDOUT_BLOCK, "heldout", "Held-out anatomy",
                  "Subjects rendered from an anatomy seed that no training subject was drawn from, with contrast "
                  "and slice thickness outside the training draws (synthesize.heldout). The baselines use the "
                  "training-set means, as on the test split."),
    EvaluationSet(EXTRAPOLATION_BLOCK, "extrapolation", "Size extrapolation",
                  "Brains 15-30% smaller than the smallest and larger than the largest training subject "
                  "(DK totals; `extrapolation` params), from the training seeds and draws. A model that "
                  "interpolates between training totals fails here however well it does on the test split; "
                  "the mean predictor's hemisphere error is how far the training mean is from these brains."),
)


def evaluation_set_section(models: Sequence[ModelInputs], anchors: dict[str, str], spec: EvaluationSet) -> str:
    """Each model on one extra evaluation set, its test-split normalized loss beside it, then the baselines."""
    title = f'<h2 id="{spec.anchor}">{esc(spec.title)}</h2>'
    if not any(spec.block in m.metrics for m in models):
        return f'{title}<p class="note">No {esc(spec.block)} scores in scores.json (evaluate ran without that set).</p>'
    head = [("predictor", ""), ("test-split normalized loss", "on the 80/20 test split"),
            ("ratio", "this set's / test-split normalized loss: 1 means nothing lost on these brains")]
    head += [(label, tip) for _, label, tip in HELDOUT_COLUMNS]
    head.append(("thickness response", THICKNESS_TIP))
    rows: list[list[Cell]] = []
    for m in models:
        block = m.metrics.get(spec.block) or {}
        held = block.get("model") or {}
        test_nl, held_nl = as_float((m.metrics.get("model") or {}).get("normalized_loss")), as_float(held.get("normalized_loss"))
        ratio = "—" if not test_nl or held_nl is None else f"{held_nl / test_nl:.2f}×"
        thickness = (block.get("response") or {}).get("thickness_change")
        rows.append([Cell(f'<a href="#{anchors[m.name]}">{esc(m.name)}</a>'), num_cell(fmt_sig(test_nl)),
                     num_cell(ratio), *_held_cells(held), num_cell(_pct(thickness))])
    source = next(m for m in models if spec.block in m.metrics)
    for key, label in BASELINES.items():
        held = source.metrics[spec.block].get(key) or {}
        test = source.metrics.get(key) or {}
        rows.append([Cell(esc(label)), num_cell(fmt_sig(test.get("normalized_loss"))), num_cell("—"),
                     *_held_cells(held), num_cell("—")])
    classes = ["model"] * len(models) + ["baseline first-baseline"] + ["baseline"] * (len(BASELINES) - 1)
    return f'{title}{table(head, rows, classes)}<p class="legend">{esc(spec.legend)}</p>'


def evaluation_sets_section(models: Sequence[ModelInputs], anchors: dict[str, str]) -> str:
    """Every extra evaluation set's table, in EVALUATION_SETS order."""
    return "".join(evaluation_set_section(models, anchors, spec) for spec in EVALUATION_SETS)


def cohort_section(stats_json: Path | None, montage_png: Path | None, sources: Sources) -> str:
    """The montage of one synthetic subject per seed, and the cohort's variation in one line."""
    if stats_json is None and montage_png is None:
        return ""
    stats = read_json(stats_json, sources) if stats_json else None
    line = ""
    if stats:
        seeds = ", ".join(f"{esc(s)} {fmt_mm3(v['mean'])}" for s, v in (stats.get("totals_per_seed") or {}).items())
        line = (f"<p>{stats.get('n_subjects')} subjects; DK totals {fmt_mm3(stats.get('total_min'))}–"
                f"{fmt_mm3(stats.get('total_max'))} mm³ (mean per seed: {seeds}); regional CV "
                f"{fmt_sig(stats.get('cv_min'))}–{fmt_sig(stats.get('cv_max'))}; total-GM scaling explains a "
                f"median {fmt_sig(stats.get('total_scaling_r2_median'))} of regional variance.</p>")
    uri = png_data_uri(montage_png, sources) if montage_png else None
    return ('<h2 id="cohort">The synthetic cohort</h2>' + line
            + figure(uri, "cohort montage", "One synthetic subject per anatomy seed (held-out seed last): "
                     "images rendered from labels, with heads, fields of view and resolutions drawn at random.",
                     str(montage_png), wide=True))
