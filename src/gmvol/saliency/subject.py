"""Saliency analysis of one subject, end to end: maps, focus shares, and the three panels."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gmvol.io import write_csv
from gmvol.layout import SaliencyFiles
from gmvol.regions import REGION_COLUMNS, REGION_IDS
from gmvol.saliency.focus import focus_shares, focus_summary
from gmvol.saliency.maps import Method, region_saliency, subtract_mean_map
from gmvol.saliency.select import select_regions
from gmvol.saliency.slices import plot_region_panel


def _region_row(region_table: pd.DataFrame, name: str) -> pd.Series:
    """The table row of one region, whether regions are a column or the index."""
    if "region" in region_table.columns:
        return region_table.loc[region_table["region"] == name].iloc[0]
    return region_table.loc[name]


def saliency_for_subject(model: torch.nn.Module, image: np.ndarray, labels: np.ndarray,
                         region_table: pd.DataFrame, out_dir: str | os.PathLike[str],
                         method: Method = "saliency", *, loss_column: str = "normalized_loss",
                         batch_size: int = 8, ig_steps: int = 16, device: str | torch.device = "cpu",
                         dilate_mm: float = 3.0, voxel_size_mm: Sequence[float] = (1.0, 1.0, 1.0),
                         region_names: Sequence[str] = REGION_COLUMNS,
                         region_ids: Sequence[int] = REGION_IDS) -> dict[str, Any]:
    """Write `{best,median,worst}.png` and `focus.csv` to `out_dir`; return the summary.

    `region_table` holds each region's `loss_column` (e.g. normalized loss on the test set),
    which decides the three regions shown. File names are fixed (not region names) so a
    pipeline can declare them as outputs; the region shown is in each figure's title.
    """
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    files = SaliencyFiles(Path(out_dir))
    raw = region_saliency(model, image, method=method, batch_size=batch_size, ig_steps=ig_steps,
                          device=device, targets=range(len(region_names)))
    focus = focus_shares(raw, labels, region_ids, dilate_mm=dilate_mm,
                         voxel_size_mm=voxel_size_mm, region_names=region_names)
    write_csv(focus, files.focus)
    chosen = select_regions(region_table, column=loss_column)
    position = {name: i for i, name in enumerate(region_names)}
    unknown = [name for name in chosen.values() if name not in position]
    if unknown:
        raise ValueError(f"region table names {unknown} are not among the model's regions")
    centered = subtract_mean_map(raw, [position[name] for name in chosen.values()])
    shares = focus.set_index("region")
    for (role, name), centered_map in zip(chosen.items(), centered, strict=True):
        stats = {"rank": f"{role} of {len(region_table)}",
                 loss_column: float(_region_row(region_table, name)[loss_column]),
                 "in_region": float(shares.at[name, "in_region"]),
                 "outside_brain": float(shares.at[name, "outside_brain"]),
                 "method": method}
        plot_region_panel(image, centered_map, name, files.panel(role), stats)
    return {**focus_summary(focus), "method": method, **{f"{r}_region": n for r, n in chosen.items()}}
