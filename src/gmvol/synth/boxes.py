"""Bounding boxes, so that distance transforms run only where their answer can differ.

A Euclidean distance transform of a map whose measured-to voxels all lie inside a box gives, in
that box, the same distances and the same nearest voxels as on the whole grid (its passes see
the same sites at the same relative positions; a 1 mm seed is three times its brain's box).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def bounding_box(mask: np.ndarray, pad: int) -> tuple[slice, ...] | None:
    """The bounding box of `mask` grown by `pad` voxels (clipped to the grid); None when empty."""
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found:
        return None
    return tuple(slice(max(b.start - pad, 0), min(b.stop + pad, n)) for b, n in zip(found[0], mask.shape))


def grid_flat_index(local: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Flat indices into the box, as flat indices into the whole grid (their order is kept)."""
    box_shape = tuple(b.stop - b.start for b in box)
    coords = np.unravel_index(local, box_shape)
    return np.ravel_multi_index(tuple(c + b.start for c, b in zip(coords, box)), shape)
