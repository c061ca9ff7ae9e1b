"""Where does each region's saliency go: the region itself, the rest of the brain, or the skull?

The paper only eyeballs three panels; these shares answer its question ("does the model look at
the region or at the skull?") for all 68 regions, as numbers a pipeline can track.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from gmvol.regions import ID_TO_COLUMN

SHARE_COLUMNS: tuple[str, ...] = ("in_region", "in_brain_other", "outside_brain")
FOCUS_COLUMNS: tuple[str, ...] = (*SHARE_COLUMNS, "region_share", "focus_lift")


def ball(radius_mm: float, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """Boolean structuring element: voxels whose centre lies within `radius_mm` (anisotropy-aware)."""
    vs = np.asarray(voxel_size_mm, dtype=float)
    if vs.shape != (3,) or (vs <= 0).any():
        raise ValueError(f"voxel_size_mm must be 3 positive numbers, got {voxel_size_mm}")
    half = np.floor(radius_mm / vs).astype(int)
    grid = np.meshgrid(*[np.arange(-h, h + 1) * v for h, v in zip(half, vs, strict=True)], indexing="ij")
    return sum(g**2 for g in grid) <= radius_mm**2 + 1e-9


def _dilated_box(mask: np.ndarray, structure: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """Dilate `mask` within its padded bounding box only: 68 full-volume dilations at 256^3 are slow."""
    box = ndimage.find_objects(mask.astype(np.uint8))
    if not box:
        return (slice(0, 0),) * 3, np.zeros((0, 0, 0), dtype=bool)
    pad = [s // 2 for s in structure.shape]
    sl = tuple(slice(max(b.start - p, 0), min(b.stop + p, n))
               for b, p, n in zip(box[0], pad, mask.shape, strict=True))
    return sl, ndimage.binary_dilation(mask[sl], structure=structure)


def _shares(pos: np.ndarray, brain: np.ndarray, sl: tuple[slice, ...], band: np.ndarray) -> list[float]:
    """Partition the positive mass of one map into (dilated region, other brain, outside brain)."""
    total = float(pos.sum(dtype=np.float64))
    if total <= 0:
        return [np.nan] * 3
    band_pos = pos[sl][band]
    in_region = float(band_pos.sum(dtype=np.float64))
    band_outside = float(band_pos[~brain[sl][band]].sum(dtype=np.float64))
    outside = float(pos[~brain].sum(dtype=np.float64)) - band_outside
    outside = max(outside, 0.0)
    return [in_region / total, max(total - in_region - outside, 0.0) / total, outside / total]


def focus_shares(raw_maps: np.ndarray, labels: np.ndarray, region_ids: Sequence[int],
                 dilate_mm: float = 3.0, voxel_size_mm: Sequence[float] = (1.0, 1.0, 1.0),
                 region_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Share of each region's positive saliency mass in its region, the other brain, the outside.

    Uses the raw (not mean-centred) map, positive part only (Saliency maps are |grad|, so all of
    it; for IG, what pushes the volume up). The three shares partition the mass, in this order
    of precedence: `in_region` = the region's label dilated by `dilate_mm` (a tolerance band: a
    volume is read off the region's boundary, and the band may reach past the pial surface),
    `in_brain_other` = labels > 0 outside that band, `outside_brain` = label 0 outside that
    band (skull, scalp, background). A map with no positive mass gets NaN shares.

    `region_share` is the band's share of the grid, what `in_region` would be by chance (a map
    spread evenly), and `focus_lift` = in_region / region_share: 1 is chance, 10 means the
    region draws ten times the saliency its size alone would.
    """
    if raw_maps.ndim != 4 or raw_maps.shape[1:] != labels.shape:
        raise ValueError(f"raw_maps {raw_maps.shape} must be (R, *labels.shape), labels {labels.shape}")
    if len(region_ids) != raw_maps.shape[0]:
        raise ValueError(f"{len(region_ids)} region ids for {raw_maps.shape[0]} maps")
    names = ([ID_TO_COLUMN.get(int(r), str(r)) for r in region_ids] if region_names is None
             else list(region_names))
    if len(names) != len(region_ids):
        raise ValueError(f"{len(names)} region names for {len(region_ids)} region ids")
    brain = labels > 0
    structure = ball(dilate_mm, voxel_size_mm)
    rows = []
    for name, rid, raw in zip(names, region_ids, raw_maps, strict=True):
        sl, band = _dilated_box(labels == rid, structure)
        shares = _shares(np.maximum(raw, 0), brain, sl, band)
        region_share = float(band.sum()) / labels.size
        lift = shares[0] / region_share if region_share > 0 else np.nan
        rows.append([name, *shares, region_share, lift])
    return pd.DataFrame(rows, columns=["region", *FOCUS_COLUMNS])


def focus_summary(df: pd.DataFrame) -> dict[str, float]:
    """Medians over regions: robust single numbers for a metrics file (NaN regions ignored)."""
    return {
        "focus_in_region_median": float(np.nanmedian(df["in_region"])),
        "focus_lift_median": float(np.nanmedian(df["focus_lift"])),
        "focus_in_brain_median": float(np.nanmedian(df["in_region"] + df["in_brain_other"])),
        "focus_outside_brain_median": float(np.nanmedian(df["outside_brain"])),
    }
