"""A picture of what the models learn from: one synthetic subject per anatomy seed, three planes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd

from gmvol.io import atomic_path


def _first_per_seed(table: pd.DataFrame, root: Path) -> list[tuple[str, Path]]:
    firsts = table.groupby(table["seed"].astype(str), sort=False)["subject"].first()
    return [(f"{subject} (seed {seed})", root / subject / "mri" / "orig.mgz") for seed, subject in firsts.items()]


def plot_cohort_montage(table: pd.DataFrame, root: Path, heldout: pd.DataFrame | None,
                        heldout_root: Path | None, out_png: Path) -> None:
    """Axial, coronal and sagittal mid-slices of the first subject of each seed (held-out last)."""
    rows = _first_per_seed(table, root)
    if heldout is not None and heldout_root is not None and len(heldout):
        rows += [(f"{name}, held out", path) for name, path in _first_per_seed(heldout, heldout_root)]
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False)
    for (title, path), ax in zip(rows, axes):
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.dataobj, dtype=np.float32)
        mid = [n // 2 for n in data.shape]
        planes = (data[:, :, mid[2]], data[:, mid[1], :], data[mid[0], :, :])
        for a, plane, label in zip(ax, planes, ("axial", "coronal", "sagittal")):
            a.imshow(plane.T, origin="lower", cmap="gray", vmin=0, vmax=255)
            a.set_xticks([])
            a.set_yticks([])
            a.set_title(label if title is rows[0][0] else "", fontsize=8)
        ax[0].set_ylabel(title, fontsize=8)
    fig.suptitle("Synthetic subjects, one per anatomy seed", fontsize=10)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
