"""The classes a counting model segments: the 68 DK regions first, then a few tissue groups.

Class k < 68 is REGION_COLUMNS[k]. The others group aparc+aseg's remaining labels into what a
cortical count needs to tell apart from cortex: background, white matter and other gray matter
per hemisphere, the brainstem and CSF. Few classes keep the per-voxel softmax cheap (it runs on
every voxel of the grid). Each class is written with a FreeSurfer LUT id, so an argmax label map
reads as an aparc+aseg: other gray matter (subcortical nuclei, cerebellar cortex) appears as
Left-/Right-undetermined (29/61), white matter as Left-/Right-Cerebral-White-Matter.
"""

from __future__ import annotations

import functools

import numpy as np

from gmvol.regions import N_REGIONS, REGION_COLUMNS, REGION_IDS, mirror_permutation

TISSUE_GROUPS: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("Unknown", 0, (0, 85)),
    ("Left-Cerebral-White-Matter", 2, (2, 7, 30, 77, 78, 251, 252, 253, 254, 255)),
    ("Right-Cerebral-White-Matter", 41, (41, 46, 62, 79)),
    ("Left-undetermined", 29, (3, 8, 10, 11, 12, 13, 17, 18, 19, 20, 26, 27, 28, 29, 80, 1000, 1004)),
    ("Right-undetermined", 61, (42, 47, 49, 50, 51, 52, 53, 54, 55, 56, 58, 59, 60, 61, 81, 2000, 2004)),
    ("Brain-Stem", 16, (16,)),
    ("CSF", 24, (4, 5, 14, 15, 24, 31, 43, 44, 63, 72)),
)
"""(LUT name, LUT id written, aparc+aseg ids counted in it) of each non-cortical class; ids in no
group (rare ones) count as background: they hold no DK volume."""

CLASS_IDS: tuple[int, ...] = (*REGION_IDS, *(lut for _, lut, _ in TISSUE_GROUPS))
"""FreeSurfer LUT id of each class, in class order."""
CLASS_NAMES: tuple[str, ...] = (*REGION_COLUMNS, *(name for name, _, _ in TISSUE_GROUPS))
N_CLASSES: int = len(CLASS_IDS)
BACKGROUND_CLASS: int = N_REGIONS
BACKGROUND_ID: int = 0
"""Class index of background (FreeSurfer 'Unknown', id 0)."""
MIRRORED_GROUPS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4))
"""Left/right pairs among TISSUE_GROUPS (positions), swapped by a left-right flip."""


@functools.lru_cache(maxsize=1)
def _lookup() -> np.ndarray:
    table = np.full(max(max(ids) for _, _, ids in TISSUE_GROUPS) + 2001, BACKGROUND_CLASS, dtype=np.uint8)
    for k, (_, _, ids) in enumerate(TISSUE_GROUPS):
        table[list(ids)] = N_REGIONS + k
    table[list(REGION_IDS)] = np.arange(N_REGIONS, dtype=np.uint8)
    return table


def classes_of(labels: np.ndarray) -> np.ndarray:
    """FreeSurfer label ids -> class indices (uint8); ids in no class are background."""
    table = _lookup()
    inside = (labels >= 0) & (labels < table.size)
    return np.where(inside, table[np.clip(labels, 0, table.size - 1)], BACKGROUND_CLASS).astype(np.uint8)


def class_ids(classes: np.ndarray) -> np.ndarray:
    """Class indices -> FreeSurfer LUT ids (int32)."""
    return np.asarray(CLASS_IDS, dtype=np.int32)[classes]


@functools.lru_cache(maxsize=1)
def class_mirror_permutation() -> tuple[int, ...]:
    """Class permutation of a left-right flip: DK regions and left/right tissue classes swap."""
    perm = list(mirror_permutation()) + list(range(N_REGIONS, N_CLASSES))
    for left, right in MIRRORED_GROUPS:
        perm[N_REGIONS + left], perm[N_REGIONS + right] = N_REGIONS + right, N_REGIONS + left
    return tuple(perm)
