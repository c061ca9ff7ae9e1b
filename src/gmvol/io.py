"""Safe image loading and atomic writes.

Every error a user can cause with a bad file names the file and says what is wrong, and no
output is ever left half-written: writers go to a temporary sibling that is renamed at the end.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import json
import os
import shutil
import socket
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from gmvol.checks.gzipped import gunzip_verified, is_gzip
from gmvol.checks.scan import check_t1

MAX_AXIS = 1024
"""Largest axis length we accept; a header claiming more is refused before any allocation."""
MAX_VOXELS = 512**3
HEADER_SLACK_BYTES = 16 << 20
"""Decompressed bytes allowed beyond header + voxel data (NIfTI extensions, MGH footer tags)."""


class InputError(ValueError):
    """A user-facing problem with one input file; the message names the file."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # pickle would call cls(message) and fail; process pools must see the real error
        return type(self), (self.path, self.reason)


def _describe(exc: BaseException) -> str:
    """'KeyError: 99', on one line and short, for messages about third-party failures."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _checked_shape(path: Path, img: nib.spatialimages.SpatialImage, allow_4d_singleton: bool) -> tuple[int, ...]:
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and allow_4d_singleton and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(path, f"expected a 3D image, got {len(shape)}D with shape {tuple(img.shape)}")
    if min(shape) < 1 or max(shape) > MAX_AXIS or int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise InputError(path, f"header claims absurd dimensions {shape} (max {MAX_AXIS} per axis)")
    return shape


def _raw_pixdims(img: nib.spatialimages.SpatialImage, head: bytes) -> np.ndarray:
    """Voxel sizes as the file states them: nibabel silently turns NIfTI pixdims of 0 into 1 and
    negative ones into their absolute value, which would change the voxel size unnoticed."""
    if isinstance(img.header, nib.Nifti1Header):  # Nifti2Header derives from it
        raw = type(img.header)(head[: img.header.sizeof_hdr], check=False)
        return np.asarray(raw["pixdim"][1:4], dtype=float)
    return np.asarray(img.header.get_zooms()[:3], dtype=float)


def _read(path: Path, allow_4d_singleton: bool) -> tuple[nib.spatialimages.SpatialImage, tuple[int, ...]]:
    """Header first (dimensions refused before allocation), then the verified bytes."""
    if not path.is_file():
        raise InputError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    img = nib.load(str(path))
    shape = _checked_shape(path, img, allow_4d_singleton)
    if is_gzip(path):
        data_bytes = int(np.prod(img.shape, dtype=np.int64)) * img.header.get_data_dtype().itemsize
        limit = int(img.header.get_data_offset()) + data_bytes + HEADER_SLACK_BYTES
        try:
            stream = gunzip_verified(path, limit)
        except ValueError as exc:
            raise InputError(path, str(exc)) from None
        img = type(img).from_stream(stream)
        head = stream.getbuffer()[:1024].tobytes()
    else:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    zooms = _raw_pixdims(img, head)
    if not (np.isfinite(zooms).all() and (zooms > 0).all()):
        raise InputError(path, f"header voxel sizes {zooms.tolist()} are not all positive and finite")
    return img, shape


def _load(path: Path, dtype: type, allow_4d_singleton: bool) -> nib.Nifti1Image:
    img, shape = _read(path, allow_4d_singleton)
    try:
        data = np.asarray(img.dataobj, dtype=dtype).reshape(shape)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"image data is truncated or corrupt ({_describe(exc)})") from None
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(path, f"image contains {bad} NaN/Inf voxel(s)")
    affine = img.affine
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise InputError(path, "image affine is singular or non-finite")
    return nib.Nifti1Image(data, affine)


def load_volume(path: str | os.PathLike[str], *, dtype: type = np.float32,
                allow_4d_singleton: bool = True) -> nib.Nifti1Image:
    """Load a 3D image, validated, as a Nifti1Image holding `dtype` data.

    The one loader boundary: every failure, whatever nibabel, numpy, gzip or zlib raised, becomes
    an `InputError` naming the file, so one bad scan never stops a batch. Refuses missing, empty,
    truncated and CRC-corrupt files, non-3D images, absurd dimensions (before the data is read),
    non-positive voxel sizes, NaN/Inf values and singular affines.
    """
    path = Path(path)
    try:
        return _load(path, dtype, allow_4d_singleton)
    except InputError:
        raise
    except Exception as exc:  # the loader boundary: see the docstring
        raise InputError(path, f"not a readable NIfTI/MGH image ({_describe(exc)})") from exc


def load_t1(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """`load_volume` plus the plausibility checks of a brain T1 (`gmvol.checks.scan`): a mask,
    a constant, a tiny grid or a sheared affine is refused instead of being measured."""
    img = load_volume(path)
    try:
        check_t1(np.asarray(img.dataobj), img.affine)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    return img


def _temp_prefix(path: Path) -> str:
    """'.NAME.tmp-PID-HOST.': lets a later run tell a killed run's leftovers from a live run's."""
    return f".{path.name}.tmp-{os.getpid()}-{socket.gethostname()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary siblings of `path` that runs killed on this host left (SIGKILL, power
    loss: no `finally` ran); a live run's, or another host's on a shared disk, are kept."""
    path = Path(path)
    stem, host = f".{path.name}.tmp-", socket.gethostname()
    removed = []
    for tmp in path.parent.glob(f"{glob.escape(stem)}*"):
        pid, _, rest = tmp.name[len(stem):].partition("-")
        if pid.isdigit() and rest.startswith(f"{host}.") and not _pid_alive(int(pid)):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix="".join(path.suffixes) or ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; outputs are shared
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds.
    Temporary directories of killed earlier runs are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_image(img: nib.spatialimages.SpatialImage, path: str | os.PathLike[str]) -> None:
    """Write a NIfTI or MGH image atomically (format from the file name)."""
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write a CSV atomically."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write JSON atomically, pretty-printed and key-sorted so diffs across commits stay small."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
