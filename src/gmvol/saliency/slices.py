"""Three orthogonal cuts through a map's argmax voxel, and the paper's per-region figure.

Arrays are assumed RAS with axes (x: L->R, y: P->A, z: I->S) and ~isotropic voxels (the
conformed 1 mm grid). Slices come back ready for `imshow(origin='upper')` in the conventional
neurological display: axial with anterior up, coronal/sagittal with superior up, the subject's
left on the viewer's left, anterior on the right in sagittal. Every panel is labelled with its
sides, so nobody has to guess the convention.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from gmvol.io import atomic_path

VIEWS: tuple[str, ...] = ("axial", "coronal", "sagittal")
# view -> (fixed axis, (horizontal axis, vertical axis), (left, right, bottom, top) side letters)
_LAYOUT: dict[str, tuple[int, tuple[int, int], tuple[str, str, str, str]]] = {
    "axial": (2, (0, 1), ("L", "R", "P", "A")),
    "coronal": (1, (0, 2), ("L", "R", "I", "S")),
    "sagittal": (0, (1, 2), ("P", "A", "I", "S")),
}
_AXIS = "xyz"


def _cut(volume: np.ndarray, view: str, index: tuple[int, int, int]) -> np.ndarray:
    """2D slice of `view` through `index`, rows top-down (so the last axis listed ends up up)."""
    fixed, _, _ = _LAYOUT[view]
    plane = np.take(volume, index[fixed], axis=fixed)  # remaining axes keep their order
    return plane.T[::-1, :]


def argmax_slices(volume: np.ndarray) -> tuple[tuple[int, int, int], dict[str, np.ndarray]]:
    """Voxel index of the (signed) maximum and the axial/coronal/sagittal slices through it."""
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {volume.shape}")
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(volume)), volume.shape))
    return index, {view: _cut(volume, view, index) for view in VIEWS}  # type: ignore[return-value]


def _display_point(view: str, index: tuple[int, int, int], shape: tuple[int, ...]) -> tuple[int, int]:
    """(column, row) of the argmax voxel inside the displayed slice of `view`."""
    _, (h, v), _ = _LAYOUT[view]
    return index[h], shape[v] - 1 - index[v]


def _format_stats(stats: Mapping[str, object]) -> str:
    """'key = value' pairs, floats to 4 significant digits, so long titles stay one line."""
    return "   ".join(f"{k.replace('_', ' ')} = {v:.4g}" if isinstance(v, (float, np.floating))
                      else f"{k.replace('_', ' ')} = {v}" for k, v in stats.items())


def _decorate(ax: Axes, view: str, index: tuple[int, int, int], shape: tuple[int, ...],
              dark: bool) -> None:
    """Side letters, axis names and a marker at the argmax, so orientation is never ambiguous."""
    fixed, (h, v), (left, right, bottom, top) = _LAYOUT[view]
    ink, halo = ("white", "black") if dark else ("black", "white")
    outline = [patheffects.withStroke(linewidth=2.5, foreground=halo)]
    for text, x, y, ha, va in ((left, 0.02, 0.5, "left", "center"), (right, 0.98, 0.5, "right", "center"),
                               (bottom, 0.5, 0.02, "center", "bottom"), (top, 0.5, 0.98, "center", "top")):
        ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color=ink, fontsize=12,
                fontweight="bold", path_effects=outline)
    col, row = _display_point(view, index, shape)
    ax.plot(col, row, marker="+", color="lime", markersize=14, markeredgewidth=1.8)
    ax.set_title(f"{view}  {_AXIS[fixed]} = {index[fixed]}", fontsize=11)
    ax.set_xlabel(f"{_AXIS[h]}: {left} \u2192 {right}", fontsize=9)
    ax.set_ylabel(f"{_AXIS[v]}: {bottom} \u2192 {top}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_region_panel(image: np.ndarray, centered_map: np.ndarray, region_name: str,
                      path: str | os.PathLike[str], stats: Mapping[str, object] | None = None,
                      overlay_threshold: float = 0.2) -> tuple[int, int, int]:
    """Write the paper's figure for one region: 2x3 PNG, map alone (top) and over the scan (bottom).

    The colour scale is symmetric around 0 because a mean-centred map is signed (red: the region
    relies on the voxel more than the average region does). In the overlay, |map| below
    `overlay_threshold` x max is transparent so the anatomy underneath stays readable.
    Returns the argmax voxel the slices cut through.
    """
    if image.shape != centered_map.shape:
        raise ValueError(f"image {image.shape} and map {centered_map.shape} differ in shape")
    index, map_slices = argmax_slices(centered_map)
    scale = float(np.abs(centered_map).max()) or 1.0
    norm = Normalize(vmin=-scale, vmax=scale)
    fig = Figure(figsize=(13, 9.2), dpi=100, layout="constrained")
    axes = fig.subplots(2, 3)
    for col, view in enumerate(VIEWS):
        plane, scan = map_slices[view], _cut(image, view, index)
        top, bottom = axes[0, col], axes[1, col]
        mappable = top.imshow(plane, cmap="RdBu_r", norm=norm, interpolation="nearest")
        bottom.imshow(scan, cmap="gray", interpolation="nearest")
        bottom.imshow(np.ma.masked_where(np.abs(plane) < overlay_threshold * scale, plane),
                      cmap="RdBu_r", norm=norm, alpha=0.8, interpolation="nearest")
        _decorate(top, view, index, image.shape, dark=False)
        _decorate(bottom, view, index, image.shape, dark=True)
    for ax, label in zip(axes[:, 0], ("saliency map", "map over scan"), strict=True):
        ax.annotate(label, xy=(-0.16, 0.5), xycoords="axes fraction", rotation=90, ha="center",
                    va="center", fontsize=12, fontweight="bold")
    bar = fig.colorbar(mappable, ax=axes, shrink=0.8, location="right")
    bar.formatter.set_powerlimits((-2, 3))  # 1e-4-sized gradients read as "x1e-4", not 0.00010
    bar.set_label("saliency minus mean over regions", fontsize=10)
    subtitle = _format_stats(stats or {})
    fig.suptitle(f"{region_name}\n{subtitle}" if subtitle else region_name, fontsize=14)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return index
