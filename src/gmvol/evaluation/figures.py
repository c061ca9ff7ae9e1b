"""Evaluation figures: per-region error box plots, predicted-vs-true scatter grid, normalized-loss bars.

Figures are built on `matplotlib.figure.Figure` (Agg canvas, no pyplot), so no global state or
display is touched, and written atomically at 150 dpi so a failed run never leaves a half PNG.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from gmvol.evaluation.metrics import aligned_arrays, region_table
from gmvol.io import atomic_path
from gmvol.regions import DK_NAMES, HEMISPHERES, REGION_COLUMNS

DPI = 150
HEMI_COLORS: dict[str, str] = {"lh": "tab:blue", "rh": "tab:orange"}
HEMI_LABELS: dict[str, str] = {"lh": "left hemisphere (lh)", "rh": "right hemisphere (rh)"}
PREDICTOR_COLORS: dict[str, str] = {"model": "tab:green", "mean_predictor": "tab:gray",
                                    "total_scaling": "tab:purple"}
PREDICTOR_LABELS: dict[str, str] = {"mean_predictor": "mean predictor (training mean)",
                                    "total_scaling": "total scaling (oracle: true total)"}
PathLike = str | os.PathLike[str]


def _new_figure(width: float, height: float, constrained: bool = True) -> Figure:
    """A Figure on the Agg canvas, independent of pyplot's global state.

    Constrained layout (unlike tight_layout) also makes room for suptitle/supxlabel and legends;
    a grid of many small panels sets its margins itself (constrained layout would take 4 s).
    """
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike) -> None:
    """Write the figure atomically as PNG at DPI."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _column(hemi: str, name: str) -> int:
    """Index into REGION_COLUMNS of `hemi`_`name`."""
    return REGION_COLUMNS.index(f"{hemi}_{name}")


def plot_error_boxplot(true: pd.DataFrame, pred: pd.DataFrame, path: PathLike, title: str) -> None:
    """Box plot of |pred - true| (mm^3) per region, as in the paper's Figs. 3/4.

    One row per DK name with its lh and rh boxes side by side (blue/orange), so hemispheric
    asymmetries in error are visible at a glance; names read horizontally on the y axis.
    """
    t, p = aligned_arrays(true, pred)
    abs_err = np.abs(p - t)
    fig = _new_figure(9.0, 13.0)
    ax = fig.add_subplot()
    rows = np.arange(len(DK_NAMES))[::-1]  # first DK name at the top
    for hemi, offset in zip(HEMISPHERES, (0.2, -0.2)):
        data = [abs_err[:, _column(hemi, name)] for name in DK_NAMES]
        color = HEMI_COLORS[hemi]
        ax.boxplot(data, positions=rows + offset, orientation="horizontal", widths=0.34, patch_artist=True,
                   boxprops={"facecolor": color, "alpha": 0.55, "edgecolor": color},
                   medianprops={"color": "black", "linewidth": 1.2}, whiskerprops={"color": color},
                   capprops={"color": color},
                   flierprops={"marker": ".", "markersize": 3, "markeredgecolor": color, "alpha": 0.6})
    ax.set_yticks(rows, DK_NAMES, fontsize=8)
    ax.set_ylim(-0.7, len(DK_NAMES) - 0.3)
    for y in rows[:-1]:
        ax.axhline(y - 0.5, color="0.9", linewidth=0.6, zorder=0)
    ax.set_xlim(left=0)
    ax.set_xlabel("absolute error |predicted - true| (mm³)")
    ax.set_ylabel("Desikan-Killiany region")
    ax.set_title(f"{title}\n(n = {t.shape[0]} test subjects)")
    ax.set_axisbelow(True)
    ax.grid(axis="x", color="0.85", linewidth=0.6)
    ax.legend(handles=[Patch(facecolor=HEMI_COLORS[h], alpha=0.55, label=HEMI_LABELS[h]) for h in HEMISPHERES],
              loc="upper center", bbox_to_anchor=(0.5, -0.05), ncols=2, fontsize=8, frameon=False)
    _save(fig, path)


def plot_scatter_grid(true: pd.DataFrame, pred: pd.DataFrame, path: PathLike) -> None:
    """Predicted vs true volume for all 68 regions, lh/rh twins side by side, with y = x and R^2.

    Small multiples show per region whether the model tracks individual differences (points
    along y = x) or collapses to a constant (a flat cloud), which the normalized loss hides.
    """
    t, p = aligned_arrays(true, pred)
    r2 = region_table(true, pred)["r2"].to_numpy()
    n_cols = 8
    n_rows = int(np.ceil(len(REGION_COLUMNS) / n_cols))
    fig = _new_figure(2.1 * n_cols, 2.05 * n_rows, constrained=False)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.045, top=0.945, wspace=0.42, hspace=0.62)
    axes = fig.subplots(n_rows, n_cols).ravel()
    order = [_column(hemi, name) for name in DK_NAMES for hemi in HEMISPHERES]
    for ax, j in zip(axes, order):
        hemi = REGION_COLUMNS[j][:2]
        lo = min(t[:, j].min(), p[:, j].min())
        hi = max(t[:, j].max(), p[:, j].max())
        pad = 0.05 * (hi - lo or hi)
        lim = (lo - pad, hi + pad)
        ax.plot(lim, lim, color="0.4", linewidth=0.8, linestyle="--")
        ax.scatter(t[:, j], p[:, j], s=6, alpha=0.6, color=HEMI_COLORS[hemi], linewidths=0)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_aspect("equal")
        ax.set_title(f"{REGION_COLUMNS[j]}\nR² = {r2[j]:.2f}", fontsize=7.5, color=HEMI_COLORS[hemi])
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(3))
        ax.tick_params(labelsize=6, length=2, pad=1)
    for ax in axes[len(order):]:
        ax.set_axis_off()
    legend_ax = axes[-1]
    legend_ax.legend(handles=[Line2D([], [], marker="o", linestyle="", color=HEMI_COLORS[h], label=HEMI_LABELS[h])
                              for h in HEMISPHERES]
                     + [Line2D([], [], color="0.4", linestyle="--", label="identity (y = x)")],
                     loc="center", fontsize=8, frameon=False)
    fig.suptitle(f"Predicted vs true gray-matter volume per region (n = {t.shape[0]} test subjects)", fontsize=12)
    fig.supxlabel("true volume (mm³)")
    fig.supylabel("predicted volume (mm³)")
    _save(fig, path)


def plot_normalized_loss_bars(region_tables: dict[str, pd.DataFrame], path: PathLike) -> None:
    """Per-region normalized loss of each predictor as grouped horizontal bars from zero.

    Putting the model beside the mean predictor and the total-scaling oracle region by region
    shows where it adds anything over "average brain" or "head size". The axis is linear so bar
    lengths stay proportional to the loss (on a log axis a bar's length depends on where it starts).
    """
    names = list(region_tables)
    n = len(REGION_COLUMNS)
    fig = _new_figure(9.0, 17.0)
    ax = fig.add_subplot()
    rows = np.arange(n)[::-1]
    height = 0.8 / len(names)
    for i, name in enumerate(names):
        values = region_tables[name].set_index("region").loc[list(REGION_COLUMNS), "normalized_loss"].to_numpy()
        ax.barh(rows + 0.4 - (i + 0.5) * height, values, height=height,
                label=PREDICTOR_LABELS.get(name, name), color=PREDICTOR_COLORS.get(name, f"C{i}"))
    ax.set_yticks(rows, list(REGION_COLUMNS), fontsize=7)
    for label, column in zip(ax.get_yticklabels(), REGION_COLUMNS):
        label.set_color(HEMI_COLORS[column[:2]])
    ax.set_ylim(-0.6, n - 0.4)
    ax.axhline(rows[len(DK_NAMES) - 1] - 0.5, color="0.5", linewidth=0.8)
    ax.set_xlabel("normalized loss  Σ(pred − true)² / Σ true²  (unitless)")
    ax.set_ylabel("region (lh blue, rh orange)")
    ax.set_title("Per-region normalized loss: model vs baselines (lower is better)", pad=22)
    ax.set_xlim(left=0)
    ax.set_axisbelow(True)
    ax.grid(axis="x", color="0.9", linewidth=0.5)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(names), fontsize=8, frameon=False)
    _save(fig, path)
