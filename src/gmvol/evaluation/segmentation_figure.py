"""The report's look at a counting model's by-product: one test scan's true and predicted label
maps side by side, in the scan's own grid (what `gmvol predict --seg` writes)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from matplotlib.colors import ListedColormap
from nibabel.orientations import aff2axcodes

from gmvol.evaluation.figures import PathLike, _new_figure, _save
from gmvol.tissue import CLASS_IDS, N_CLASSES, classes_of

BACKGROUND_RGBA = (0.0, 0.0, 0.0, 0.0)


def _colormap() -> ListedColormap:
    """A fixed colour per class (background transparent), the same in both panels."""
    rng = np.random.default_rng(13)
    colours = np.column_stack([rng.uniform(0.15, 1.0, size=(N_CLASSES, 3)), np.full(N_CLASSES, 0.75)])
    colours[CLASS_IDS.index(0)] = BACKGROUND_RGBA
    return ListedColormap(colours)


def _slices(volume: np.ndarray, affine: np.ndarray, centre: np.ndarray) -> list[np.ndarray]:
    """Axial and coronal slices through `centre` (voxel), displayed upright (RAS)."""
    ras = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
    data = np.asarray(ras.dataobj)
    c = np.round(nib.affines.apply_affine(np.linalg.inv(ras.affine) @ affine, centre)).astype(int)
    c = np.clip(c, 0, np.asarray(data.shape) - 1)
    return [np.rot90(data[:, :, c[2]]), np.rot90(data[:, c[1], :])]


def plot_label_maps(t1: nib.spatialimages.SpatialImage, true_labels: np.ndarray, predicted_labels: np.ndarray,
                    path: PathLike, subject: str) -> None:
    """Axial and coronal slices of the T1 with the true (left) and predicted (right) label maps."""
    if aff2axcodes(t1.affine) is None or true_labels.shape != predicted_labels.shape:
        raise ValueError(f"label maps {true_labels.shape} and {predicted_labels.shape} differ")
    brain = np.argwhere(true_labels > 0)
    centre = brain.mean(axis=0) if len(brain) else np.asarray(true_labels.shape) / 2
    image = np.asarray(t1.dataobj, dtype=np.float32)
    cmap = _colormap()
    fig = _new_figure(9.0, 8.0)
    axes = fig.subplots(2, 2)
    for col, (labels, title) in enumerate(((true_labels, "true (aparc+aseg)"), (predicted_labels, "predicted"))):
        classes = classes_of(labels)
        for row, (anat, lab) in enumerate(zip(_slices(image, t1.affine, centre), _slices(classes, t1.affine, centre))):
            ax = axes[row, col]
            ax.imshow(anat, cmap="gray", interpolation="nearest")
            ax.imshow(np.ma.masked_equal(lab, CLASS_IDS.index(0)), cmap=cmap, vmin=-0.5, vmax=N_CLASSES - 0.5,
                      interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title)
    fig.suptitle(f"{subject}: label maps in the scan's own grid (68 DK regions, white matter, other gray matter, CSF)")
    _save(fig, path)


def plot_no_segmentation(path: PathLike, message: str) -> None:
    """The panel of a model that has no label map to show, saying why (the file always exists)."""
    fig = _new_figure(6.0, 1.2)
    fig.text(0.5, 0.5, message, ha="center", va="center")
    _save(fig, path)
