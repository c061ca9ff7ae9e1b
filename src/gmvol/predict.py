"""Inference with a trained model: find the T1s, read and preprocess them, regress the 68 volumes.

Kept free of CLI concerns so that the evaluation stage runs exactly the code `gmvol predict` runs.
Reading and preprocessing (I/O, gzip and scipy, which mostly release the GIL) run in a small
thread pool a few scans ahead of the forward pass, so neither waits for the other. Each scan
runs forward on its own, with its mirror image (a batch of two that depends on the scan alone): a
scan's row must not depend on which other scans share its batch (float32 kernels round
differently per batch), so local, Dask and resumed runs agree bit for bit. Every row carries the QC scores of `gmvol.qc`.

A model trained with left-right flips (`train.augment.flip`, in model.json) has learned both
orientations, so a scan's volumes are then the mean of two predictions: of the scan and of its
mirror image (lh/rh swapped back), run as one batch of two. The mirrored pass is the one QC's
qc_flip needs anyway. On the default study's 134 test scans this lifts the counting MeshNet's
median regional R^2 from 0.04 to 0.17 (normalized loss 0.0346 -> 0.0307; the baseline: no
change). A model trained without flips (the grid head) keeps its plain answer: averaging in a
view it never saw cost it 0.02 in R^2.
"""

from __future__ import annotations

import functools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from gmvol.composition import compose_shares
from gmvol.data.dataset import TargetScaler
from gmvol.data.preprocess import PreprocessSpec, grid_affine, preprocess_image
from gmvol.heap import retain_freed_memory
from gmvol.io import InputError, load_t1
from gmvol.models.budget import check_grid
from gmvol.models.checkpoint import CONFIG_FILE, ModelFileError, load_model
from gmvol.models.config import model_config_from_dict
from gmvol.models.heads import CountingHead
from gmvol.models.inference import inference_model
from gmvol.precision import autocast, resolve_precision
from gmvol.qc import (
    QC_COLUMNS,
    QCReference,
    image_scores,
    mirrored,
    prediction_scores,
    qc_columns,
    read_reference,
)
from gmvol.regions import REGION_COLUMNS, mirror_permutation
from gmvol.regrid import TypicalTotals
from gmvol.segmentation import seg_path, write_segmentation

T1_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".mgz", ".mgh")
FREESURFER_T1 = Path("mri") / "orig.mgz"
TIMING_COLUMNS: tuple[str, ...] = ("load_s", "preprocess_s", "forward_s", "seg_s")


# ---------------------------------------------------------------------------------------------
# input discovery


def _strip_t1_extension(name: str) -> str | None:
    """'sub-01.nii.gz' -> 'sub-01'; None when the name has no T1 image extension."""
    for ext in T1_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return None


def is_bids_root(path: Path) -> bool:
    """A BIDS dataset root: has dataset_description.json or sub-* folders."""
    return path.is_dir() and ((path / "dataset_description.json").is_file()
                              or any(p.is_dir() for p in path.glob("sub-*")))


def _bids_id(t1: Path, subject_dir: Path, session_dir: Path | None) -> str:
    """sub-X[_ses-Y], plus any other entities of the file name (acq-, run-, ...) so that
    several T1w images of one session keep distinct ids."""
    stem = (_strip_t1_extension(t1.name) or t1.name).removesuffix("_T1w")
    extra = [e for e in stem.split("_") if "-" in e and not e.startswith(("sub-", "ses-"))]
    return "_".join([subject_dir.name] + ([session_dir.name] if session_dir else []) + extra)


def discover_bids(root: Path) -> list[tuple[str, Path]]:
    """Every `sub-*/[ses-*/]anat/*_T1w.nii[.gz]` under a BIDS root, sorted by id."""
    found: list[tuple[str, Path]] = []
    for subject_dir in sorted(p for p in root.glob("sub-*") if p.is_dir()):
        sessions = sorted(p for p in subject_dir.glob("ses-*") if p.is_dir())
        for session_dir in [None, *sessions]:
            anat = (session_dir or subject_dir) / "anat"
            for t1 in sorted(anat.glob("*_T1w.nii*")):
                if _strip_t1_extension(t1.name) is not None:
                    found.append((_bids_id(t1, subject_dir, session_dir), t1))
    if not found:
        raise InputError(root, "BIDS root holds no sub-*/[ses-*/]anat/*_T1w.nii[.gz] image")
    return sorted(found)


def input_kind(path: Path) -> str:
    """'file', 'freesurfer' or 'bids': how an INPUT is read; `InputError` when it is none of them."""
    if not path.exists():
        raise InputError(path, "no such file or directory")
    if path.is_file():
        if _strip_t1_extension(path.name) is None:
            raise InputError(path, f"not a T1 image (expected one of {', '.join(T1_EXTENSIONS)})")
        return "file"
    if (path / FREESURFER_T1).is_file():
        return "freesurfer"
    if is_bids_root(path):
        return "bids"
    raise InputError(path, f"directory is neither a FreeSurfer subject ({FREESURFER_T1} missing) "
                           "nor a BIDS root (no dataset_description.json or sub-* folders)")


def discover_input(item: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """One INPUT -> its (subject id, T1 path) pairs; see `discover_inputs`."""
    path = Path(item)
    kind = input_kind(path)
    if kind == "file":
        return [(str(_strip_t1_extension(path.name)), path)]
    if kind == "freesurfer":
        return [(path.resolve().name, path / FREESURFER_T1)]
    return discover_bids(path)


def discover_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[tuple[str, Path]]:
    """Expand INPUTs into (subject id, T1 path) pairs, in the order given.

    An INPUT is a T1 file (id: file name without extension), a FreeSurfer subject dir (its
    mri/orig.mgz; id: dir name) or a BIDS root (id: sub-X or sub-X_ses-Y). Raises `InputError`
    naming the input when it is missing or of none of these kinds, or when two scans share an id
    (their rows could not be told apart).
    """
    found: list[tuple[str, Path]] = []
    seen: dict[str, Path] = {}
    for item in inputs:
        for subject, t1 in discover_input(item):
            if subject in seen:
                raise InputError(t1, f"subject id {subject!r} is also the id of {seen[subject]}")
            seen[subject] = t1
            found.append((subject, t1))
    return found


# ---------------------------------------------------------------------------------------------
# prediction


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; asking for an absent cuda is an error, not a
    silent fallback (the user would mis-read the timings)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r} (expected auto, cpu or cuda)")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available to torch")
    return torch.device(name)


@dataclass(frozen=True)
class ScanResult:
    """One scan's outcome: volumes (68,) in mm^3, or the error that stopped it; timings in s
    (forward_s is the scan's share of its batch's forward pass)."""

    subject: str
    path: Path
    volumes: np.ndarray | None
    error: InputError | None
    load_s: float = 0.0
    preprocess_s: float = 0.0
    forward_s: float = 0.0
    qc: dict[str, float] = field(default_factory=dict)
    grids: tuple[np.ndarray, np.ndarray, tuple[int, ...]] | None = None
    """(model-grid affine, input affine, input shape): where a label map goes back to (--seg)."""
    seg_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _prepare(subject: str, path: Path, spec: PreprocessSpec,
             ref: QCReference | None) -> tuple[ScanResult, np.ndarray | None]:
    """Load and preprocess one scan and score its input for QC (runs in a worker thread); a bad
    scan becomes a failed result."""
    start = time.perf_counter()
    try:
        img = load_t1(path)
    except InputError as exc:
        return ScanResult(subject, path, None, exc, load_s=time.perf_counter() - start), None
    loaded = time.perf_counter()
    try:
        image = preprocess_image(img, spec)
        scores = image_scores(img, image, spec, ref)
    except Exception as exc:  # noqa: BLE001 - whatever breaks here is this scan's problem, not the run's
        error = InputError(path, f"preprocessing failed ({type(exc).__name__}: {exc})")
        error.__cause__ = exc  # keeps the original traceback for --debug
        return ScanResult(subject, path, None, error, loaded - start, time.perf_counter() - loaded), None
    grids = (grid_affine(img, spec), np.asarray(img.affine), tuple(img.shape[:3]))
    return ScanResult(subject, path, None, None, loaded - start, time.perf_counter() - loaded, qc=scores,
                      grids=grids), image


def _read_metadata(metadata: dict, path: Path) -> tuple[PreprocessSpec, TargetScaler]:
    """The preprocess spec and target scaling of model.json, checked: a grid within the budget,
    68 outputs, and a finite scaling with positive means and spreads (a NaN or negative one
    would write empty cells or negative volumes for every scan)."""
    try:
        spec = PreprocessSpec.from_dict(metadata["preprocess"])
        check_grid(spec.shape)
        scaler = TargetScaler.from_dict(metadata["target_scaling"])
        regions = tuple(metadata["regions"])
        n_outputs = model_config_from_dict(metadata["model"]).n_outputs
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"bad metadata ({type(exc).__name__}: {exc})") from None
    n = len(REGION_COLUMNS)
    if regions != REGION_COLUMNS or n_outputs != n or not scaler.mean.shape == scaler.std.shape == (n,):
        raise ModelFileError(path, f"regions/outputs/target_scaling do not match the {n} Desikan-Killiany regions")
    if not (np.isfinite(scaler.mean).all() and np.isfinite(scaler.std).all()
            and (scaler.mean > 0).all() and (scaler.std > 0).all()):
        raise ModelFileError(path, "target_scaling must hold finite, positive means and standard deviations")
    return spec, scaler


def trained_with_flips(metadata: dict) -> bool:
    """Whether model.json says the model was trained with left-right flips (so its answer for a
    mirrored scan is as good as for the scan); False for a model saved without training settings."""
    augment = metadata.get("train", {}).get("augment", {})
    return isinstance(augment, dict) and augment.get("flip") is True


def implausible_prediction(volumes: np.ndarray) -> str | None:
    """Why a (68,) prediction is no measurement (non-finite or non-positive volumes), or None."""
    bad = ~np.isfinite(volumes) | (volumes <= 0)
    if not bad.any():
        return None
    first = int(np.flatnonzero(bad)[0])
    return (f"prediction refused: {int(bad.sum())} of {volumes.size} volumes are not finite and positive "
            f"(e.g. {REGION_COLUMNS[first]} = {volumes[first]:.4g} mm^3); the scan is unlike the "
            "training scans or the model is broken")


@dataclass(frozen=True)
class PredictorSettings:
    """What builds a `Predictor`, as a picklable value (a Dask worker builds its own from it)."""

    model_dir: str
    device: str = "auto"
    batch_size: int = 4
    crop_threshold: float | None = 0.0
    precision: str = "fp32"
    seg_dir: str | None = None
    regrid: bool = True
    composition: bool = True

    def build(self) -> Predictor:
        return Predictor(**asdict(self))


class Predictor:
    """A loaded model with its preprocessing spec and target scaling, ready for new scans."""

    def __init__(self, model_dir: str | os.PathLike[str], device: str = "auto", batch_size: int = 4,
                 workers: int = 2, crop_threshold: float | None = 0.0, precision: str = "fp32",
                 retain_memory: bool = True, seg_dir: str | os.PathLike[str] | None = None,
                 regrid: bool = True, composition: bool = True) -> None:
        """Load model.pt/model.json once; raises `ModelFileError` for a bad model directory.

        `crop_threshold`: run a MeshNet on the bounding box of the voxels above it only (0: exact,
        None: never crop; see `gmvol.models.inference`). `precision` 'bf16' autocasts the forward
        pass (and 'fp16', on CUDA only): faster on GPUs and on CPUs with bf16 instructions
        (AVX512-BF16, AMX), slower on CPUs without them; speed and tolerance are measured in
        benchmarks/README.md.
        `retain_memory` (CPU): keep freed activation memory for the next scan instead of
        page-faulting it back in (`gmvol.heap`).
        `seg_dir`: also write each scan's argmax label map there (`gmvol.segmentation`); needs a
        counting model (head 'count' or 'count_factored').
        `regrid`: count a brain outside the counting model's typical sizes on a grid scaled to it
        (`gmvol.regrid`); False keeps every scan on the model's own grid.
        `composition`: pull a counting model's regional shares toward the training mean by its
        fitted weight (`gmvol.composition`); False reports the raw counts.
        """
        if batch_size < 1 or workers < 1:
            raise ValueError("batch_size and workers must be at least 1")
        self.model_dir = Path(model_dir)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device.type)  # warns where bf16 is emulated
        self.batch_size = batch_size
        self.workers = workers
        model, self.metadata = load_model(self.model_dir, map_location="cpu")
        self.spec, self.scaler = _read_metadata(self.metadata, self.model_dir / CONFIG_FILE)
        self.qc_reference = read_reference(self.model_dir)
        self.mirror_average = trained_with_flips(self.metadata)
        """Whether a scan's volumes average it and its mirror image (see the module docstring)."""
        self.seg_dir = None if seg_dir is None else Path(seg_dir)
        head = getattr(model, "head", None)
        self.segments = isinstance(head, CountingHead)
        """Whether the model makes label maps (a counting model)."""
        self.composition: tuple[np.ndarray, float] | None = None
        """A counting model's (share prior, weight), applied once to the mirror average: the
        network's own composition step would give a mirrored scan the other hemisphere's prior."""
        if isinstance(head, CountingHead):
            prior = head.share_prior.double().numpy().copy()
            self.composition = (prior, float(head.composition_weight)) if composition else None
            head.set_composition(prior, 1.0)
        self.typical = TypicalTotals.from_metadata(self.metadata) if regrid and self.segments else None
        """The totals the counting model counts best (None: never re-grid)."""
        if self.seg_dir is not None and not self.segments:
            raise ModelFileError(self.model_dir / CONFIG_FILE, "--seg needs a counting model (meshnet head 'count' or 'count_factored'), "
                                 "which segments; this model only regresses volumes")
        self.model = inference_model(model, crop_threshold).to(self.device).eval()
        if self.device.type == "cuda":  # cuDNN's fast 3D kernels (tensor cores) want channels_last
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        if retain_memory and self.device.type == "cpu":
            retain_freed_memory()
        self.timings = timings_table([])
        self.failures: list[ScanResult] = []

    def _forward(self, images: list[np.ndarray]) -> np.ndarray:
        """Preprocessed (D, H, W) images -> (B, 68) volumes in mm^3."""
        batch = torch.from_numpy(np.stack(images)[:, None]).to(self.device, non_blocking=True)
        with torch.inference_mode(), autocast(self.device.type, self.precision):
            standardized = self.model(batch).float().cpu().numpy().astype(np.float64)
        return self.scaler.inverse(standardized)

    def _pair(self, image: np.ndarray) -> list[np.ndarray]:
        return [image, mirrored(image, self.spec)]

    def mean_of_pair(self, plain: np.ndarray, mirror: np.ndarray) -> np.ndarray:
        """A scan's volumes: for a model trained with flips, the mean of its prediction and its
        mirror image's (lh/rh swapped back), else the plain prediction."""
        mean = (plain + mirror[mirror_permutation()]) / 2.0 if self.mirror_average else plain
        return mean if self.composition is None else compose_shares(mean, *self.composition)

    def predict_pair(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One preprocessed image -> the (68,) predictions in mm^3 of it and of its mirror image
        (lh/rh as the network gave them), one batch of two."""
        plain, mirror = self._forward(self._pair(image))
        return plain, mirror

    def segment_array(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One preprocessed image -> `predict_pair`'s two predictions and the class map of the
        plain pass on the model grid (a counting model)."""
        batch = torch.from_numpy(np.stack(self._pair(image))[:, None]).to(self.device)
        with torch.inference_mode(), autocast(self.device.type, self.precision):
            standardized, classes = self.model.segment(batch)
        plain, mirror = self.scaler.inverse(standardized.float().cpu().numpy().astype(np.float64))
        return plain, mirror, classes[0].cpu().numpy().astype(np.uint8)

    def on_scaled_grid(self, load: Callable[[], nib.spatialimages.SpatialImage], plain: np.ndarray,
                       mirror: np.ndarray, classes: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The model grid's predictions (and class map) of a scan, or, when its count lies outside
        the model's typical totals, those of a grid scaled to the brain (`gmvol.regrid`), in mm^3;
        with that grid's affine (None: the model's own grid). `load` reads the scan, if needed."""
        total = float(self.mean_of_pair(plain, mirror).sum())
        voxel_mm = None if self.typical is None else self.typical.regrid_voxel_mm(total, self.spec.voxel_size)
        if voxel_mm is None:
            return plain, mirror, classes, None
        img, spec = load(), replace(self.spec, voxel_size=voxel_mm)
        image = preprocess_image(img, spec)
        if classes is None:
            plain, mirror = self.predict_pair(image)
        else:
            plain, mirror, classes = self.segment_array(image)
        scale = (voxel_mm / self.spec.voxel_size) ** 3
        return plain * scale, mirror * scale, classes, grid_affine(img, spec)

    def predict_array(self, image: np.ndarray) -> np.ndarray:
        """One preprocessed image -> its (68,) volumes in mm^3 on the model grid (see the module docstring)."""
        return self.mean_of_pair(*self.predict_pair(image))

    def predict_image(self, img: nib.spatialimages.SpatialImage) -> np.ndarray:
        """One loaded T1 (any orientation and grid) -> (68,) volumes in mm^3, REGION_COLUMNS order."""
        plain, mirror, _, _ = self.on_scaled_grid(lambda: img, *self.predict_pair(preprocess_image(img, self.spec)), None)
        return self.mean_of_pair(plain, mirror)

    def predict_one(self, subject: str, path: Path) -> ScanResult:
        """One scan, read, preprocessed and predicted in this thread (a Dask task's work)."""
        return next(self._run_batch([_prepare(subject, Path(path), self.spec, self.qc_reference)]))

    def iter_files(self, paths: list[Path], subjects: list[str]) -> Iterator[ScanResult]:
        """Predict scans in batches, yielding one `ScanResult` per scan in input order; while a
        batch runs forward, the thread pool already reads and preprocesses the next ones."""
        if len(paths) != len(subjects):
            raise ValueError(f"{len(paths)} paths but {len(subjects)} subjects")
        jobs = iter(zip(subjects, paths, strict=True))
        pending: deque[Future[tuple[ScanResult, np.ndarray | None]]] = deque()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gmvol-prefetch")

        def submit_next() -> None:
            job = next(jobs, None)
            if job is not None:
                pending.append(pool.submit(_prepare, job[0], Path(job[1]), self.spec, self.qc_reference))

        try:
            for _ in range(2 * self.batch_size):
                submit_next()
            batch: list[tuple[ScanResult, np.ndarray | None]] = []
            while pending:
                batch.append(pending.popleft().result())
                submit_next()
                if sum(image is not None for _, image in batch) == self.batch_size or not pending:
                    yield from self._run_batch(batch)
                    batch = []
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _run_batch(self, batch: list[tuple[ScanResult, np.ndarray | None]]) -> Iterator[ScanResult]:
        """Forward the good scans of a batch, each with its mirror image; failed ones pass through
        in place."""
        for result, image in batch:
            if image is None:
                yield result
                continue
            start = time.perf_counter()
            seg_s = 0.0
            classes = None
            if self.seg_dir is not None and result.grids is not None:
                plain, mirror, classes = self.segment_array(image)
            else:
                plain, mirror = self.predict_pair(image)
            # read again only if re-gridded (about one scan in five): holding every prefetched scan
            # instead would keep 2 x batch_size full-resolution images (64 MB each at 1 mm) in memory
            plain, mirror, classes, scaled_grid = self.on_scaled_grid(functools.partial(load_t1, result.path), plain,
                                                                      mirror, classes)
            if classes is not None and result.grids is not None:
                seg_start = time.perf_counter()
                model_grid, input_affine, input_shape = result.grids
                write_segmentation(classes, model_grid if scaled_grid is None else scaled_grid, input_affine,
                                   input_shape, seg_path(self.seg_dir, result.subject))
                seg_s = time.perf_counter() - seg_start
            values = self.mean_of_pair(plain, mirror)
            forward_s = time.perf_counter() - start - seg_s
            problem = implausible_prediction(values)
            scores = {**result.qc, **prediction_scores(plain, mirror, self.qc_reference)}
            yield ScanResult(result.subject, result.path, None if problem else values,
                             InputError(result.path, problem) if problem else None,
                             result.load_s, result.preprocess_s, forward_s, scores, seg_s=seg_s)

    def predict_files(self, paths: list[Path], subjects: list[str],
                      on_result: Callable[[ScanResult], None] | None = None) -> pd.DataFrame:
        """Volumes table (subject, 68 regions, total) of the scans that could be read.

        Scans that failed are left out of the table and listed in `self.failures`; per-scan
        timings of the call are in `self.timings` (see `timings_table`). `on_result` sees each
        scan as it finishes (progress bars, live error reports).
        """
        results = []
        for result in self.iter_files(paths, subjects):
            results.append(result)
            if on_result is not None:
                on_result(result)
        self.timings = timings_table(results)
        self.failures = [r for r in results if not r.ok]
        return volumes_table(results, self.qc_reference)


TABLE_COLUMNS: tuple[str, ...] = ("subject", *REGION_COLUMNS, "total", *QC_COLUMNS)


def scan_row(result: ScanResult, reference: QCReference | None) -> dict[str, Any]:
    """A successful scan's row: subject, the 68 volumes (mm^3), total, qc_* scores and qc_pass,
    as plain Python values (what the ledger stores, so a resumed run writes the same table)."""
    assert result.volumes is not None
    volumes = [float(v) for v in result.volumes]
    return {"subject": result.subject, **dict(zip(REGION_COLUMNS, volumes)),
            "total": float(np.sum(result.volumes)), **qc_columns(result.qc, reference)}


def rows_table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The volumes table from rows, columns in TABLE_COLUMNS order (empty QC cells stay NaN)."""
    table = pd.DataFrame(list(rows), columns=list(TABLE_COLUMNS))
    numeric = [c for c in TABLE_COLUMNS if c not in ("subject", "qc_pass")]
    table[numeric] = table[numeric].astype(float)
    return table.astype({"qc_pass": bool})


def volumes_table(results: Iterable[ScanResult], reference: QCReference | None = None) -> pd.DataFrame:
    """subject, the 68 REGION_COLUMNS (mm^3), their total and the QC columns, one row per
    successful scan."""
    return rows_table(scan_row(r, reference) for r in results if r.ok)


def timings_table(results: Iterable[ScanResult]) -> pd.DataFrame:
    """subject, path, load_s, preprocess_s, forward_s and error ('' when fine), one row per scan."""
    return pd.DataFrame(
        [(r.subject, str(r.path), r.load_s, r.preprocess_s, r.forward_s, r.seg_s, r.error.reason if r.error else "")
         for r in results],
        columns=["subject", "path", *TIMING_COLUMNS, "error"])
