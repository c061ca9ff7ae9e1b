"""A counting model's argmax label map, written back in the input scan's own space and grid.

The model segments on its coarse grid; users look at a label map over their own scan (Freeview,
fsleyes), so each input voxel takes the class of the model-grid cell its centre falls in
(nearest neighbour: a label map is not interpolated) and is written with FreeSurfer LUT ids as
`<id>_aparc+aseg.mgz`.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from gmvol.io import atomic_path
from gmvol.tissue import BACKGROUND_ID, class_ids

SEG_SUFFIX = "_aparc+aseg.mgz"


def seg_path(seg_dir: Path, subject: str) -> Path:
    return Path(seg_dir) / f"{subject}{SEG_SUFFIX}"


def labels_in_input_space(classes: np.ndarray, grid_affine: np.ndarray, input_affine: np.ndarray,
                          input_shape: tuple[int, ...]) -> np.ndarray:
    """(model-grid classes) -> int32 FreeSurfer ids on the input grid, nearest neighbour;
    input voxels outside the model grid are background."""
    ids = class_ids(classes).astype(np.int32)
    to_grid = np.linalg.inv(grid_affine) @ input_affine
    return ndimage.affine_transform(ids, to_grid[:3, :3], offset=to_grid[:3, 3], output_shape=tuple(input_shape[:3]),
                                    order=0, mode="constant", cval=BACKGROUND_ID)


def write_segmentation(classes: np.ndarray, grid_affine: np.ndarray, input_affine: np.ndarray,
                       input_shape: tuple[int, ...], path: Path) -> Path:
    """Write the label map as MGZ, in the input's affine and shape, atomically."""
    labels = labels_in_input_space(classes, grid_affine, input_affine, input_shape)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(nib.MGHImage(labels, input_affine), str(tmp))
    return path
