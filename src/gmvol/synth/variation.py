"""How much a cohort varies, measured the way the issue asks: regional CVs, and the share of
each region's variance that scaling by total gray matter explains (the total_scaling oracle)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gmvol.regions import REGION_COLUMNS


def cohort_variation(volumes: pd.DataFrame) -> dict[str, float]:
    """Summary of regional CV (min/median/max) and of R^2 of the total-GM scaling per region."""
    v = volumes[list(REGION_COLUMNS)].to_numpy(dtype=np.float64)
    cv = v.std(axis=0, ddof=1) / v.mean(axis=0)
    total = v.sum(axis=1)
    scaled = v.mean(axis=0) * (total / total.mean())[:, None]
    ss_res = ((v - scaled) ** 2).sum(axis=0)
    ss_tot = ((v - v.mean(axis=0)) ** 2).sum(axis=0)
    explained = 1.0 - ss_res / ss_tot
    return {
        "n_subjects": len(v),
        "cv_min": float(cv.min()), "cv_median": float(np.median(cv)), "cv_max": float(cv.max()),
        "regions_cv_in_0.10_0.25": int(((cv >= 0.10) & (cv <= 0.25)).sum()),
        "total_gm_cv": float(total.std(ddof=1) / total.mean()),
        "total_scaling_r2_median": float(np.median(explained)),
        "total_scaling_r2_max": float(explained.max()),
    }
