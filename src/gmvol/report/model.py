"""One model's section: its evaluation figures, its 10 worst regions by R², and its saliency panels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from gmvol.layout import EvalFiles, SaliencyFiles
from gmvol.report.figures import EVAL_FIGURES
from gmvol.report.formatting import fmt_mm3, fmt_share, fmt_sig
from gmvol.report.headline import verdict
from gmvol.report.html import esc, figure, note, num_cell, table, text_cell
from gmvol.report.inputs import FOCUS_KEYS, ModelInputs

N_WORST = 10

WORST_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("r2", "R²", fmt_sig), ("pearson_r", "Pearson r", fmt_sig), ("icc31", "ICC(3,1)", fmt_sig),
    ("mae_mm3", "MAE (mm³)", fmt_mm3), ("mae_pct", "MAE (%)", fmt_sig),
    ("normalized_loss", "normalized loss", fmt_sig),
)

SALIENCY_HOW_TO_READ = (
    "How to read them: each panel is one region's saliency map (how much its predicted volume depends on "
    "each voxel) minus the mean map over all 68 regions, cut through its strongest voxel; top row the "
    "map alone, bottom row over the scan. Red: the region's estimate relies on the voxel more than the "
    "average region's does. The focus shares are computed on the raw map: the share of saliency mass "
    "inside the region (its label dilated by a small tolerance band), inside the brain (region included) "
    "and outside the brain (skull, scalp, background). A model that reads volumes off the anatomy puts "
    "most of the mass in the region; much mass outside the brain means it relies on head size or the skull."
)


def _figures(model: ModelInputs, eval_dir: Path) -> str:
    """The evaluation figures in a grid, each with alt text and a caption."""
    files = EvalFiles(eval_dir / model.name)
    items = [figure(model.figures.get(f.file), f.alt, f.caption, str(getattr(files, f.file)), f.wide)
             for f in EVAL_FIGURES]
    return f'<div class="figures">{"".join(items)}</div>'


def _text(value: Any) -> str:
    """A CSV cell as text, empty where it is blank (NaN)."""
    return "" if value is None or pd.isna(value) else str(value)


def _worst_regions(model: ModelInputs, eval_dir: Path) -> str:
    """The N_WORST regions with the lowest R² (undefined R² last), from regions.csv."""
    path = EvalFiles(eval_dir / model.name).regions
    regions = model.regions
    if regions is None:
        return note(f"Region table not available: {path} was not found.")
    if "region" not in regions.columns or "r2" not in regions.columns:
        return note(f"{path} lacks a 'region' or 'r2' column; columns are {list(regions.columns)}.")
    worst = (regions.assign(r2=pd.to_numeric(regions["r2"], errors="coerce"))
             .sort_values("r2", na_position="last", kind="stable").head(N_WORST))
    shown = [c for c in WORST_COLUMNS if c[0] in worst.columns]
    head = [("#", ""), ("region", ""), ("lobe", "")] + [(label, "") for _, label, _ in shown]
    rows = [[num_cell(str(rank)), text_cell(row["region"]), text_cell(_text(row.get("lobe")))]
            + [num_cell(fmt(row[key])) for key, _, fmt in shown]
            for rank, (_, row) in enumerate(worst.iterrows(), start=1)]
    return table(head, rows)


def _panel_caption(model: ModelInputs, role: str) -> str:
    """Which region a panel shows and where its saliency mass goes, from summary.json and focus.csv."""
    region = (model.saliency or {}).get(f"{role}_region")
    text = f"{role.capitalize()} region by per-region normalized loss"
    if not region:
        return text + "."
    text += f": {region}"
    focus = model.focus
    if focus is not None and {"region", "in_region", "in_brain_other", "outside_brain"} <= set(focus.columns):
        match = focus.loc[focus["region"] == region]
        if len(match):
            row = match.iloc[0]
            parts = pd.to_numeric(pd.Series([row["in_region"], row["in_brain_other"]]), errors="coerce")
            inside = parts.sum(min_count=2)  # NaN, not 0, if either share is undefined
            text += (f" — saliency mass {fmt_share(row['in_region'])} in the region, {fmt_share(inside)} "
                     f"in the brain, {fmt_share(row['outside_brain'])} outside the brain")
    return text + "."


def _saliency(model: ModelInputs, saliency_dir: Path) -> str:
    """The focus medians, how to read them, and the best/median/worst panels."""
    files = SaliencyFiles(saliency_dir / model.name)
    summary = model.summary
    labels = ("in the region", "inside the brain", "outside the brain (skull, scalp, background)")
    shares = ", ".join(f"{fmt_share(summary.get(k))} {label}" for k, label in zip(FOCUS_KEYS, labels))
    method = (model.saliency or {}).get("method")
    parts = []
    if model.saliency is None and model.focus is None:
        parts.append(note(f"Saliency summary not available: {files.summary} was not found."))
    parts.append(f"<p><b>Focus</b> (median over the 68 regions{f', {esc(method)} maps' if method else ''}): "
                 f"{esc(shares)}.</p>")
    parts.append(f'<p class="legend">{esc(SALIENCY_HOW_TO_READ)}</p>')
    panels = [figure(model.panels.get(role), f"Saliency panel of the {role} region of {model.name}",
                     _panel_caption(model, role), str(files.panel(role)))
              for role in model.panels]
    parts.append(f'<div class="figures">{"".join(panels)}</div>')
    return "".join(parts)


def model_section(model: ModelInputs, anchor: str, eval_dir: Path, saliency_dir: Path) -> str:
    """The whole section of one model."""
    return (f'<h2 id="{esc(anchor)}">{esc(model.name)}</h2>'
            f"<p><b>Verdict:</b> {esc(verdict(model.metrics))}.</p>"
            f"<h3>Figures</h3>{_figures(model, eval_dir)}"
            f"<h3>{N_WORST} worst regions by R²</h3>{_worst_regions(model, eval_dir)}"
            f"<h3>Saliency</h3>{_saliency(model, saliency_dir)}")
