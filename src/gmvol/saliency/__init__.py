"""Per-region saliency: which voxels does each regional volume estimate depend on?

Follows the paper's recipe (one Captum map per region, minus the mean map, cut at the argmax,
shown for the best/median/worst region) and adds focus shares that quantify its question of
whether the model looks at the region or at the skull.
"""

from gmvol.saliency.focus import focus_shares, focus_summary
from gmvol.saliency.maps import region_saliency, subtract_mean_map
from gmvol.saliency.select import select_regions
from gmvol.saliency.slices import argmax_slices, plot_region_panel
from gmvol.saliency.subject import saliency_for_subject

__all__ = ["argmax_slices", "focus_shares", "focus_summary", "plot_region_panel", "region_saliency",
           "saliency_for_subject", "select_regions", "subtract_mean_map"]
