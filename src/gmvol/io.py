"""Safe image loading and atomic writes.

Every error a user can cause with a bad file names the file and says what is wrong, and no
output is ever left half-written: writers go to a temporary sibling that is renamed at the end.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

MAX_AXIS = 1024
"""Largest axis length we accept; a header claiming more is refused before any allocation."""
MAX_VOXELS = 512**3


class InputError(ValueError):
    """A user-facing problem with one input file; the message names the file."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _load_header(path: Path) -> nib.spatialimages.SpatialImage:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    try:
        return nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError,
            zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"not a readable NIfTI/MGH image ({type(exc).__name__}: {exc})") from None


def load_volume(path: str | os.PathLike[str], *, dtype: type = np.float32,
                allow_4d_singleton: bool = True) -> nib.Nifti1Image:
    """Load a 3D image, validated, as a Nifti1Image holding `dtype` data.

    Refuses: missing/empty/truncated files, non-3D images, absurd header dimensions (before
    the data is read), and NaN/Inf values.
    """
    path = Path(path)
    img = _load_header(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and allow_4d_singleton and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(path, f"expected a 3D image, got {len(shape)}D with shape {tuple(img.shape)}")
    if min(shape) < 1 or max(shape) > MAX_AXIS or int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise InputError(path, f"header claims absurd dimensions {shape} (max {MAX_AXIS} per axis)")
    try:
        data = np.asarray(img.dataobj, dtype=dtype).reshape(shape)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"image data is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(path, f"image contains {bad} NaN/Inf voxel(s)")
    affine = img.affine
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise InputError(path, "image affine is singular or non-finite")
    return nib.Nifti1Image(data, affine)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix="".join(path.suffixes) or ".tmp",
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
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
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
