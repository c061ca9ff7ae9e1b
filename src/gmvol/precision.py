"""Numeric precision of training and inference: one set of names, one autocast rule."""

from __future__ import annotations

import contextlib
import typing
import warnings
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
TrainingPrecision = Literal["auto", "fp32", "bf16", "fp16"]
"""What `train.precision` accepts: 'auto' is bf16 where the device computes it natively, else fp32."""
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device_type: str) -> bool:
    """Whether `device_type` computes bf16 fast. On a CPU without AVX-512 (AVX2 CPUs: every AMD
    before Zen 4, most Intel desktops) oneDNN falls back to a slow reference path, and a counting
    MeshNet's training step takes 16 s instead of 0.9 s in fp32 (AMD Zen 3, README "Speed")."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    try:  # torch has no public CPU check; this is the one oneDNN's own bf16 paths consult
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device_type: str) -> Precision:
    """The precision to run at: 'auto' becomes bf16 where it is native and fp32 elsewhere; an
    explicit bf16 without hardware support is kept, with a warning of its cost."""
    if precision == "auto":
        return "bf16" if native_bf16(device_type) else "fp32"
    check_precision(precision, device_type)
    if precision == "bf16" and not native_bf16(device_type):
        warnings.warn(f"precision bf16 on a {device_type} without bf16 hardware: it is emulated, about 18x slower "
                      "than fp32 (precision auto picks fp32 here)", RuntimeWarning, stacklevel=2)
    return typing.cast(Precision, precision)


def check_precision(precision: str, device_type: str) -> None:
    """Refuse unknown names, and fp16 off CUDA (CPU autocast has no fast fp16 path)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device_type != "cuda":
        raise ValueError("fp16 autocast needs a GPU; use precision bf16 or fp32 on CPU")


def autocast(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for `precision` on `device_type`; fp32 is a no-op context."""
    check_precision(precision, device_type)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, _AUTOCAST_DTYPES[precision])
