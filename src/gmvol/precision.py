"""Numeric precision of training and inference: one set of names, one autocast rule."""

from __future__ import annotations

import contextlib
import typing
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
