"""The preprocessing spec and cache: reorient, resample, crop/pad, normalise (the paper's steps).

The same `PreprocessSpec` is stored beside the cache and inside every model, so that
`gmvol predict` applies to a new scan exactly the steps the model was trained on.
"""

from __future__ import annotations

import json
import typing
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.affines import rescale_affine
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from nibabel.processing import conform, fwhm2sigma, smooth_image
from scipy import ndimage

from gmvol.config import jsonable, parse
from gmvol.data.fractions import SparseFractions, label_fractions
from gmvol.io import InputError, atomic_dir, load_volume, write_json
from gmvol.parallel import Executor, check_executor, parallel_map, resolve_workers

Normalization = Literal["minmax", "percentile"]
NORMALIZATIONS: tuple[str, ...] = typing.get_args(Normalization)
ROUNDING_VOXELS = 1e-6
"""How close (voxels) to a whole voxel a sampling position may be computed differently by scipy."""


@dataclass(frozen=True)
class PreprocessSpec:
    """Grid and intensity recipe. `shape` x `voxel_size` is the field of view in mm (RAS).
    Defaults equal the params file's `preprocess` section."""

    voxel_size: float = 5.0
    shape: tuple[int, int, int] = (36, 44, 38)
    orientation: str = "RAS"
    normalization: Normalization = "minmax"
    percentiles: tuple[float, float] = (0.5, 99.5)
    antialias: bool = True        # Gaussian pre-smoothing when downsampling, against aliasing

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {self.normalization!r}")
        if len(self.shape) != 3 or min(self.shape) < 8 or self.voxel_size <= 0:
            raise ValueError(f"bad grid: shape {self.shape}, voxel_size {self.voxel_size}")
        try:
            axes = sorted(axcodes2ornt(tuple(self.orientation))[:, 0])
        except ValueError:
            axes = []
        if axes != [0, 1, 2]:
            raise ValueError(f"orientation must name each axis once (e.g. RAS), got {self.orientation!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in spec.json and in every model.json."""
        return jsonable(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "preprocess") -> PreprocessSpec:
        """Strictly, as every params section is parsed (`gmvol.config.parse`)."""
        return parse(cls, d, where)


@dataclass(frozen=True)
class PreprocessConfig(PreprocessSpec):
    """The `preprocess` params section: the spec, and how many processes (or which Dask
    cluster) build the cache."""

    fraction_step_mm: float = 1.0  # partial-volume targets: label voxels split into points this far apart
    workers: int = 0              # 0: one per CPU core
    executor: Executor = "local"  # or dask: the subjects run on the cluster at dask_address
    dask_address: str = ""        # tcp://HOST:PORT or local:N (gmvol.distributed)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_executor(self.executor, self.dask_address)
        if self.fraction_step_mm <= 0:
            raise ValueError(f"fraction_step_mm must be > 0, got {self.fraction_step_mm}")

    @property
    def spec(self) -> PreprocessSpec:
        """The spec alone (what the cache and the models store)."""
        return PreprocessSpec(**{f.name: getattr(self, f.name) for f in fields(PreprocessSpec)})


def reoriented_to(img: nib.spatialimages.SpatialImage, spec: PreprocessSpec) -> nib.spatialimages.SpatialImage:
    """`img` with its axes flipped and permuted to the spec's orientation (no resampling)."""
    return img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(spec.orientation)))


def grid_affine(img: nib.spatialimages.SpatialImage, spec: PreprocessSpec) -> np.ndarray:
    """The voxel-to-world affine of the model grid that preprocessing puts `img` on: the spec's
    voxels and shape, centred on the scan's field of view, as `nibabel.processing.conform` does."""
    reoriented = reoriented_to(img, spec)
    return rescale_affine(reoriented.affine, reoriented.shape[:3], (spec.voxel_size,) * 3, spec.shape)


def grid_aligned_shift(img: nib.spatialimages.SpatialImage, spec: PreprocessSpec) -> np.ndarray | None:
    """The whole-voxel shift from the reoriented image's grid to the spec's, or None when the two
    grids differ by more than that (another voxel size, a rotation, a fraction of a voxel)."""
    voxel_map = np.linalg.inv(reoriented_to(img, spec).affine) @ grid_affine(img, spec)
    shift = np.round(voxel_map[:3, 3])
    if not (np.allclose(voxel_map[:3, :3], np.eye(3), atol=1e-6) and np.allclose(voxel_map[:3, 3], shift, atol=1e-4)):
        return None
    return shift


def grid_aligned(img: nib.Nifti1Image, spec: PreprocessSpec) -> np.ndarray | None:
    """The conformed array without interpolation when the target grid is the image's own grid
    reoriented and shifted by whole voxels (e.g. a FreeSurfer orig.mgz at 1 mm), else None.

    `nibabel.processing.conform` would interpolate anyway (seconds at 256^3); at whole-voxel shifts
    interpolation returns the voxel values themselves, so flipping, permuting and crop/padding
    (zeros outside, as conform's cval) give the same array in a fraction of the time.
    """
    shift = grid_aligned_shift(img, spec)
    if shift is None:
        return None
    data = np.asarray(reoriented_to(img, spec).dataobj)
    out = np.zeros(spec.shape, dtype=data.dtype)
    src = tuple(slice(max(0, int(t)), min(n, int(t) + m)) for t, n, m in zip(shift, data.shape, spec.shape))
    dst = tuple(slice(s.start - int(t), s.stop - int(t)) for s, t in zip(src, shift))
    if all(s.stop > s.start for s in src):
        out[dst] = data[src]
    return out


def _sampled_indices(img: nib.spatialimages.SpatialImage, spec: PreprocessSpec) -> list[np.ndarray] | None:
    """Per axis of `img`, the voxel indices that `conform`'s linear interpolation onto the spec's
    grid reads; None when an axis of `img`
    depends on more than one axis of the grid (an oblique scan), where they do not factor."""
    to_input = np.linalg.inv(img.affine) @ grid_affine(img, spec)  # as nibabel's resample_from_to
    matrix, offset = to_input[:3, :3], to_input[:3, 3]
    scale = np.abs(matrix).max()
    indices = []
    for axis, n in enumerate(img.shape[:3]):
        (sources,) = np.nonzero(np.abs(matrix[axis]) > 1e-9 * scale)
        if len(sources) != 1:
            return None
        source = int(sources[0])
        position = matrix[axis, source] * np.arange(spec.shape[source]) + offset[axis]
        # linear interpolation reads floor(x) and floor(x) + 1; x a rounding away from a whole
        # voxel may fall either side, so both sides are kept there
        lower = np.floor(position - ROUNDING_VOXELS).astype(np.int64)
        upper = np.floor(position + ROUNDING_VOXELS).astype(np.int64) + 1
        near = np.concatenate([lower, lower + 1, upper - 1, upper])
        indices.append(np.unique(np.clip(near, 0, n - 1)))
    return indices


PARTIAL_GAIN = 0.6
"""Smooth partially only when the passes it makes are at most this share of the whole ones (a
2 mm scan on the 5 mm grid keeps 4 planes in 5: the bookkeeping would cost more than it saves)."""
SLAB_PLANES = 16
"""The first (whole-scan) pass runs on slabs of this many planes: a fresh full-size output would
cost as much in page faults as the filtering."""


def _filtered_planes(data: np.ndarray, sigma: float, axis: int, keep: np.ndarray, in_slabs: bool) -> np.ndarray:
    """`ndimage.gaussian_filter1d` along `axis` (mode nearest, the dtype kept), then only the
    planes `keep` along it; each line is filtered on its own, so slabs across another axis give
    the same numbers."""
    if not in_slabs:
        return np.take(ndimage.gaussian_filter1d(data, sigma, axis=axis, mode="nearest", cval=0.0), keep, axis=axis)
    across = 2 if axis != 2 else 0
    shape = list(data.shape)
    shape[axis] = len(keep)
    out = np.empty(shape, dtype=data.dtype)
    for start in range(0, data.shape[across], SLAB_PLANES):
        slab = tuple(slice(start, start + SLAB_PLANES) if a == across else slice(None) for a in range(3))
        filtered = ndimage.gaussian_filter1d(data[slab], sigma, axis=axis, mode="nearest", cval=0.0)
        out[slab] = np.take(filtered, keep, axis=axis)
    return out


def smoothed_where_sampled(img: nib.Nifti1Image, fwhm: np.ndarray, spec: PreprocessSpec) -> nib.Nifti1Image:
    """`nibabel.processing.smooth_image(img, fwhm)`, bit for bit, at every voxel that resampling
    onto the spec's grid reads, and 0 elsewhere.

    The Gaussian is separable, and scipy applies it one axis after the other, each line on its
    own. So after an axis is filtered, only the planes the grid samples along that axis need go
    on to the next axis: a 5 mm grid samples about 2 planes in 5 of a 1 mm scan, and the three
    passes over 256^3 become about 1.6 (0.4 -> 0.3 s per 1 mm scan on 2 cores). An oblique
    scan, whose samples do not factor by axis, is smoothed whole.
    """
    indices = _sampled_indices(img, spec)
    if indices is None:
        return smooth_image(img, fwhm)
    voxel_mm = np.sqrt(np.sum(np.asarray(img.affine)[:3, :3] ** 2, axis=0))
    sigmas = fwhm2sigma(np.asarray(fwhm, dtype=float) / voxel_mm)  # as smooth_image, per axis
    data = np.asarray(img.dataobj)
    filtered = [axis for axis in range(3) if sigmas[axis] > 1e-15]  # what gaussian_filter skips
    kept = np.cumprod([1.0] + [len(indices[a]) / data.shape[a] for a in filtered[:-1]])
    if kept.sum() > PARTIAL_GAIN * len(filtered):  # a grid little coarser than the scan: no gain
        return smooth_image(img, fwhm)
    part = data
    for axis in set(range(3)) - set(filtered):
        part = np.take(part, indices[axis], axis=axis)
    for i, axis in enumerate(filtered):  # scipy's order: axis 0, 1, 2, each pass stored in the input's dtype
        part = _filtered_planes(part, sigmas[axis], axis, indices[axis], in_slabs=i == 0)
    out = np.zeros(data.shape, dtype=part.dtype)
    out[np.ix_(*indices)] = part
    return nib.Nifti1Image(out, img.affine, img.header)


def resample(img: nib.Nifti1Image, spec: PreprocessSpec, order: int) -> np.ndarray:
    """Reorient, resample and crop/pad to the spec's grid (anti-aliased when downsampling)."""
    if order > 0 and spec.antialias:
        zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
        fwhm = np.sqrt(np.clip(spec.voxel_size**2 - zooms**2, 0.0, None))
        if fwhm.max() > 0:
            img = smoothed_where_sampled(img, fwhm, spec) if grid_aligned_shift(img, spec) is None \
                else smooth_image(img, fwhm)
    aligned = grid_aligned(img, spec)
    if aligned is not None:
        return aligned
    out = conform(img, out_shape=spec.shape, voxel_size=(spec.voxel_size,) * 3, order=order,
                  cval=0.0, orientation=spec.orientation)
    return np.asarray(out.dataobj)


def normalize(data: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Min-max to [0, 1] as the paper does, or robustly between two percentiles."""
    if spec.normalization == "minmax":
        lo, hi = float(data.min()), float(data.max())
    else:
        lo, hi = (float(v) for v in np.percentile(data, spec.percentiles))
    return np.clip((data - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def preprocess_image(img: nib.Nifti1Image, spec: PreprocessSpec) -> np.ndarray:
    """A loaded T1 -> the model's input grid, float32 in [0, 1]."""
    return normalize(resample(img, spec, order=1).astype(np.float32), spec)


def preprocess_labels(img: nib.Nifti1Image, spec: PreprocessSpec) -> np.ndarray:
    """A label map -> the model's grid, nearest neighbour (for saliency focus and seg losses)."""
    return resample(img, spec, order=0).astype(np.int16)


def cache_subject(row: dict, spec: PreprocessSpec, out_dir: Path, fraction_step_mm: float = 1.0) -> str:
    """Write `<subject>.npz` with `image` and, when the subject has a label map, `labels`
    (nearest neighbour) and its partial-volume class fractions (`gmvol.data.fractions`)."""
    arrays = {"image": preprocess_image(load_volume(row["t1"]), spec)}
    if isinstance(row.get("labels"), str) and row["labels"]:
        labels = load_volume(row["labels"], dtype=np.int32)
        arrays["labels"] = preprocess_labels(labels, spec)
        fractions = label_fractions(labels, grid_affine(labels, spec), spec.shape, fraction_step_mm)
        if fractions.outside_mm3 > 0:
            print(f"warning: {row['labels']}: {fractions.outside_mm3:.0f} mm3 of DK cortex lies outside the "
                  "model grid (preprocess.shape x voxel_size); its partial-volume targets miss it")
        arrays.update(fractions.to_arrays())
    np.savez_compressed(out_dir / f"{row['subject']}.npz", **arrays)
    return str(row["subject"])


def _worker(args: tuple[dict, PreprocessSpec, Path, float]) -> str:
    """cache_subject, with any failure turned into an InputError naming the subject's T1, so a
    process pool reports the cause instead of a traceback from inside the worker."""
    try:
        return cache_subject(*args)
    except InputError:
        raise
    except Exception as exc:  # becomes the stage's one-line error
        raise InputError(args[0]["t1"], f"preprocessing failed ({type(exc).__name__}: {exc})") from exc


def build_cache(subjects_csv: Path, cfg: PreprocessConfig, out_dir: Path) -> None:
    """Preprocess every subject of subjects.csv into `out_dir` (replaced atomically) in parallel,
    with the spec written beside the arrays as `spec.json`."""
    rows = pd.read_csv(subjects_csv, keep_default_na=False).to_dict("records")
    spec = cfg.spec
    with atomic_dir(out_dir) as tmp:
        try:
            parallel_map(_worker, [(row, spec, tmp, cfg.fraction_step_mm) for row in rows], cfg.workers, "preprocess", chunksize=4,
                         executor=cfg.executor, dask_address=cfg.dask_address)
        except BrokenProcessPool:  # a worker died without a Python error: killed, out of memory
            raise InputError(subjects_csv, f"a preprocess worker process died (killed or out of memory?); "
                                           f"try fewer than {resolve_workers(cfg.workers)} workers"
                                           " or larger Dask workers") from None
        write_json(spec.to_dict(), tmp / "spec.json")
        size = sum(f.stat().st_size for f in tmp.glob("*.npz"))
    print(f"preprocess: {len(rows)} subjects cached at {spec.voxel_size} mm, grid {spec.shape} "
          f"(images, labels and class fractions: {size / 2**20:.0f} MiB)")


def read_spec(path: Path) -> PreprocessSpec:
    return PreprocessSpec.from_dict(json.loads(Path(path).read_text()))


def load_cached(cache_dir: Path, subject: str) -> dict[str, np.ndarray]:
    with np.load(Path(cache_dir) / f"{subject}.npz") as z:
        return {k: z[k] for k in z.files}


def load_cached_image(cache_dir: Path, subject: str) -> np.ndarray:
    """A subject's cached image alone: the labels and class fractions beside it in the file
    are most of what `load_cached` would decompress."""
    with np.load(Path(cache_dir) / f"{subject}.npz") as z:
        return z["image"]


def load_fractions(cache_dir: Path, subject: str) -> SparseFractions:
    """A subject's cached partial-volume targets; a clear error when the cache has none."""
    path = Path(cache_dir) / f"{subject}.npz"
    with np.load(path) as z:
        if SparseFractions.KEYS[0] not in z.files:
            raise InputError(path, "has no class fractions (the subject has no label map, or the cache "
                                   "predates them): a counting model cannot train on it")
        return SparseFractions.from_arrays({k: z[k] for k in SparseFractions.KEYS})
