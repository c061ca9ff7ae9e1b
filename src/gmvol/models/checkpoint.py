"""Saving and loading trained models as a directory: ``model.pt`` + ``model.json``.

``model.pt`` holds only the state_dict (loaded with ``weights_only=True``, so a model file cannot
run code); ``model.json`` holds the config that rebuilds the architecture plus free metadata.
Every way a model directory can be broken raises :class:`ModelFileError` naming the file.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gmvol.io import InputError, atomic_path, write_json
from gmvol.models.budget import MAX_CONFIG_BYTES, MAX_WEIGHTS_BYTES, check_config_sizes, meta_model
from gmvol.models.config import ModelConfig, model_config_from_dict, model_config_to_dict
from gmvol.models.registry import build_model

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "model.json"
_RESERVED_KEYS = ("format_version", "model")


class ModelFileError(InputError):
    """A model directory is missing, corrupt, or inconsistent; the message names the file."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(path, " ".join(reason.split()))  # always one line


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """torch.save `state` to `path` atomically and byte-reproducibly.

    Saved through an open file, not a path: torch names the zip archive's records after the path
    it writes to, here a random temporary sibling, so the same weights would hash differently on
    every run and DVC would rerun every downstream stage for nothing.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)


def save_model(directory: str | os.PathLike[str], model: nn.Module, cfg: ModelConfig,
               metadata: dict[str, Any]) -> None:
    """Write ``model.pt`` then ``model.json`` into `directory`, each atomically.

    The JSON is written last, so a crash never leaves a config pointing at missing weights.
    """
    clash = sorted(set(metadata) & set(_RESERVED_KEYS))
    if clash:
        raise ValueError(f"metadata may not use the reserved key(s) {clash}")
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_state_dict(state, directory / WEIGHTS_FILE)
    write_json({"format_version": FORMAT_VERSION, "model": model_config_to_dict(cfg), **metadata},
               directory / CONFIG_FILE)


def _read_document(path: Path) -> tuple[dict[str, Any], ModelConfig]:
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelFileError(path, f"is {path.stat().st_size} bytes, more than a model config can be "
                                   f"({MAX_CONFIG_BYTES})")
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise ModelFileError(path, "not valid JSON (nested too deeply)") from None
    if not isinstance(document, dict):
        raise ModelFileError(path, f"expected a JSON object, got {type(document).__name__}")
    if document.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(path, f"unsupported format_version {document.get('format_version')!r} "
                                   f"(expected {FORMAT_VERSION})")
    if "model" not in document:
        raise ModelFileError(path, "missing the 'model' config")
    try:
        check_config_sizes(document["model"])
        return document, model_config_from_dict(document["model"])
    except (ValueError, TypeError) as exc:
        raise ModelFileError(path, f"invalid model config: {exc}") from None


def _check_archive(path: Path) -> None:
    """Size within the budget and, for torch's zip format, every entry's CRC-32 intact (torch's
    reader does not check them, so a flipped bit in a weight would load silently)."""
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(path, "file is empty")
    if size > MAX_WEIGHTS_BYTES:
        raise ModelFileError(path, f"is {size} bytes, beyond the model-file budget ({MAX_WEIGHTS_BYTES})")
    if not zipfile.is_zipfile(path):
        return  # torch's legacy format, or not torch at all: torch.load decides
    try:
        with zipfile.ZipFile(path) as archive:
            if sum(info.file_size for info in archive.infolist()) > MAX_WEIGHTS_BYTES:
                raise ModelFileError(path, "archive unpacks beyond the model-file budget")
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise ModelFileError(path, f"corrupt archive ({type(exc).__name__}: {exc})") from None
    if bad is not None:
        raise ModelFileError(path, f"corrupt archive (CRC mismatch in {bad})")


def _read_state(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    _check_archive(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ModelFileError(path, "not a PyTorch state_dict (safe weights-only loading refused its "
                                   "contents)") from None
    except Exception as exc:  # noqa: BLE001 - torch raises anything on a foreign file
        first_line = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ModelFileError(path, f"not a readable PyTorch state_dict ({type(exc).__name__}: {first_line})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(path, "does not hold a state_dict (a dict of tensors)")
    return state


def _mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str | None:
    """Describe how `found` differs from `expected` in keys, shapes or dtype kind, or None if it fits."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in found and found[k].shape != v.shape]
    kinds = [f"{k} {found[k].dtype} vs {v.dtype}" for k, v in expected.items()
             if k in found and found[k].dtype.is_floating_point != v.dtype.is_floating_point]
    problems = [f"{label} {items[:3]}{' ...' if len(items) > 3 else ''}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches (file vs config)", shapes),
                                     ("dtype mismatches (file vs config)", kinds)) if items]
    return "; ".join(problems) or None


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Keys of floating tensors holding NaN or Inf (such a model writes rows of empty cells)."""
    return [k for k, v in state.items()
            if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]


def load_model(directory: str | os.PathLike[str],
               map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from ``model.json``, load ``model.pt`` into it, return it in eval mode.

    Returns ``(model, document)`` where `document` is the whole model.json (``format_version``,
    the ``model`` config dict, and the metadata given to :func:`save_model`). Sizes are checked
    against `gmvol.models.budget` on the JSON, then on a storage-less "meta" build and the
    state_dict, before the real model is allocated.
    """
    directory = Path(directory)
    config_path, weights = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    document, cfg = _read_document(config_path)
    try:
        shapes = meta_model(cfg).state_dict()
    except ValueError as exc:
        raise ModelFileError(config_path, str(exc)) from None
    state = _read_state(weights, map_location)
    problem = _mismatch(shapes, state)
    if problem:
        raise ModelFileError(weights, f"state_dict does not match the config in {CONFIG_FILE}: {problem}")
    bad = _non_finite(state)
    if bad:
        raise ModelFileError(weights, f"{len(bad)} tensor(s) hold NaN/Inf values, e.g. {bad[0]}")
    model = build_model(cfg)
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelFileError(weights, f"state_dict cannot be loaded ({type(exc).__name__}: {exc})") from None
    return model.to(map_location).eval(), document
