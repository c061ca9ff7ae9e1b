"""How much a cohort varies, measured the way the issue asks: regional CVs, totals and their
range per seed, and the share of each region's variance that scaling by total gray matter
explains (the total_scaling oracle)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gmvol.regions import REGION_COLUMNS


def cohort_variation(volumes: pd.DataFrame) -> dict:
    """Regional CV (min/median/max), DK totals (range, CV, per seed), R^2 of total-GM scaling
    per region, and how much head size follows brain size (it should not)."""
    v = volumes[list(REGION_COLUMNS)].to_numpy(dtype=np.float64)
    cv = v.std(axis=0, ddof=1) / v.mean(axis=0)
    total = v.sum(axis=1)
    scaled = v.mean(axis=0) * (total / total.mean())[:, None]
    ss_res = ((v - scaled) ** 2).sum(axis=0)
    ss_tot = ((v - v.mean(axis=0)) ** 2).sum(axis=0)
    explained = 1.0 - ss_res / ss_tot
    stats = {
        "n_subjects": len(v),
        "cv_min": float(cv.min()), "cv_median": float(np.median(cv)), "cv_max": float(cv.max()),
        "regions_cv_in_0.10_0.25": int(((cv >= 0.10) & (cv <= 0.25)).sum()),
        "total_min": float(total.min()), "total_max": float(total.max()), "total_mean": float(total.mean()),
        "total_gm_cv": float(total.std(ddof=1) / total.mean()),
        "total_scaling_r2_median": float(np.median(explained)),
        "total_scaling_r2_max": float(explained.max()),
    }
    if "seed" in volumes:
        by_seed = pd.Series(total, index=volumes.index).groupby(volumes["seed"].astype(str))
        stats["totals_per_seed"] = {str(s): {"n": len(t), "min": float(t.min()), "mean": float(t.mean()),
                                             "max": float(t.max())} for s, t in by_seed}
    radii = [c for c in ("head_radius_lr_mm", "head_radius_ap_mm", "head_radius_si_mm") if c in volumes]
    if len(radii) == 3 and len(v) > 2:
        head = np.prod(volumes[radii].to_numpy(dtype=np.float64), axis=1)
        stats["head_brain_correlation"] = float(np.corrcoef(head, total)[0, 1])
    if "skull_stripped" in volumes:
        stats["skull_stripped_fraction"] = float(volumes["skull_stripped"].mean())
    return stats
