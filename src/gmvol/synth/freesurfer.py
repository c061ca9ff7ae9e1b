"""Writers of FreeSurfer's own layout, so synthetic and real subjects share one ingestion path."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from gmvol.io import atomic_path, save_image
from gmvol.regions import DK_NAMES

STATS_COLUMNS = ("StructName", "NumVert", "SurfArea", "GrayVol", "ThickAvg", "ThickStd",
                 "MeanCurv", "GausCurv", "FoldInd", "CurvInd")


def conformed_affine(voxel_mm: float, size: int, center_mm: np.ndarray) -> np.ndarray:
    """FreeSurfer's conformed LIA affine (orig.mgz: columns point Left, Inferior, Anterior)."""
    axes = np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float) * voxel_mm
    affine = np.eye(4)
    affine[:3, :3] = axes
    affine[:3, 3] = center_mm - axes @ np.full(3, size / 2.0)
    return affine


def write_mgz(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write a .mgz atomically (FreeSurfer's compressed MGH)."""
    save_image(nib.MGHImage(data, affine), path)


def write_aparc_stats(path: Path, subject: str, hemi: str, gray_vol_mm3: dict[str, float],
                      rng: np.random.Generator) -> None:
    """Write `?h.aparc.stats` in FreeSurfer's table format. GrayVol carries the target; the
    surface columns are plausible fillers (area = volume / thickness) so parsers see real rows."""
    lines = [
        "# Table of FreeSurfer cortical parcellation anatomical statistics",
        "#",
        "# CreationTime synthetic",
        "# generating_program gmvol.synth",
        f"# subjectname {subject}",
        f"# hemi {hemi}",
        "# AnnotationFile ../label/" + f"{hemi}.aparc.annot",
        "# NTableCols 10",
        "# TableCol  1 ColHeader StructName",
        "# TableCol  4 ColHeader GrayVol",
        "# TableCol  4 Units     mm^3",
        "# ColHeaders " + " ".join(STATS_COLUMNS),
    ]
    for name in DK_NAMES:
        vol = gray_vol_mm3[name]
        thick = rng.uniform(2.2, 3.0)
        area = vol / thick
        lines.append(f"{name:<40s} {int(area / 0.85):5d} {int(area):5d} {round(vol):5d} "
                     f"{thick:5.3f} {rng.uniform(0.5, 0.8):5.3f} {rng.uniform(0.1, 0.16):5.3f} "
                     f"{rng.uniform(0.5, 1.5):5.3f} {rng.integers(5, 40):5d} {rng.uniform(1, 5):5.1f}")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
