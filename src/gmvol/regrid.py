"""A counting model measures a brain outside the sizes it learned on a grid scaled to that brain.

A counting MeshNet counts best the brains it saw most: at 5 mm the cortex is thinner than a
voxel, so each voxel's gray-matter fraction is read from its look, and a brain a third larger
than any in training looks unlike them (the default study's model counts such brains 20% low,
and small ones up to 28% off). FreeSurfer meets the same problem by scaling every head to a
template. Here the scan is preprocessed again on a grid whose voxels are larger (or smaller) by
the brain's size, so that, counted in voxels, it falls inside the range the model learned, and
the count is multiplied back by the voxel volume. A brain inside that range keeps its plain
answer, bit for bit.

The range is the training DK totals' 10th-90th percentile, written to model.json at training
(`typical_total_mm3`). A brain counted outside it is re-gridded once: one more preprocessing and
forward pass of that scan. Its count was itself drawn toward the range (on the extrapolation set
it moved about half as far as the brain, in log), so the step is that excess squared: the brain
lands inside the range, where the model counts it best. A second step gained nothing there.

The step is capped at MAX_VOXEL_FACTOR. A small brain counted far too low (an atrophied brain,
a poor contrast) would otherwise get voxels so small that the grid crops the brain and the
second count is worse than the first: uncapped, one brain of the extrapolation set came back
71% low (65% low after re-gridding, 35% before). On the default study the cap takes that set's
worst hemisphere error from 71% to 27% and its 90th percentile from 38% to 19%, for a median of
8.9% instead of 8.0% (README, "Predict volumes for new scans").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

TYPICAL_PERCENTILES: tuple[float, float] = (10.0, 90.0)
COUNT_SLOPE = 0.5
"""log change of a counted total per log change of the brain outside the range (0.5-0.7 measured)."""
TOLERANCE = 0.01
"""A count within 1% of the range's edge is inside."""
MAX_VOXEL_FACTOR = 1.25
"""The re-gridded voxel is at most this much wider, or narrower, than the model's: the brain's
apparent volume changes at most ~2x (1.25^3), and at 4 mm voxels the 5 mm grid's shape still
spans 144 x 176 x 152 mm, room for any brain small enough to be given them."""
METADATA_KEY = "typical_total_mm3"


@dataclass(frozen=True)
class TypicalTotals:
    """The DK totals (mm^3, on the model's own grid) a counting model counts best."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 < self.low <= self.high or not np.isfinite(self.high):
            raise ValueError(f"need 0 < low <= high, got {self.low} and {self.high}")

    @classmethod
    def of(cls, totals: np.ndarray) -> TypicalTotals:
        """The 10th-90th percentile of the training subjects' DK totals."""
        low, high = np.percentile(np.asarray(totals, dtype=np.float64), TYPICAL_PERCENTILES)
        return cls(float(low), float(high))

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> TypicalTotals | None:
        """The range stored in model.json, or None for a model saved without it."""
        stored = metadata.get(METADATA_KEY)
        return None if stored is None else cls(float(stored[0]), float(stored[1]))

    def to_list(self) -> list[float]:
        return [self.low, self.high]

    def regrid_voxel_mm(self, total_mm3: float, voxel_mm: float) -> float | None:
        """The voxel size for a brain that counted `total_mm3` on the model's own grid (`voxel_mm`):
        scaled by its excess over the range, to the power 1 / (3 COUNT_SLOPE), by at most
        MAX_VOXEL_FACTOR either way; None when the count lies inside the range."""
        target = min(max(total_mm3, self.low), self.high)
        if not np.isfinite(total_mm3) or total_mm3 <= 0 or abs(total_mm3 / target - 1) <= TOLERANCE:
            return None
        factor = (total_mm3 / target) ** (1 / (3 * COUNT_SLOPE))
        return float(voxel_mm * min(max(factor, 1 / MAX_VOXEL_FACTOR), MAX_VOXEL_FACTOR))
