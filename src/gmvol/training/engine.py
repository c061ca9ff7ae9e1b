"""Choose Catalyst's engine from params, explicitly (Catalyst's own guess is unsafe on GPU)."""

from __future__ import annotations

import torch
from catalyst import dl

ENGINES = ("auto", "cpu", "gpu", "ddp")
PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_engine_name(name: str) -> str:
    """'auto' picks 'gpu' when CUDA is there, else 'cpu'."""
    if name not in ENGINES:
        raise ValueError(f"train.engine must be one of {ENGINES}, got {name!r}")
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return name


def build_engine(name: str, precision: str = "fp32", ddp_port: int = 12345) -> dl.Engine:
    """CPU, single GPU (optionally AMP in bf16/fp16) or multi-GPU DDP through Catalyst."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    name = resolve_engine_name(name)
    mixed = None if precision == "fp32" else precision
    if name == "cpu":
        if mixed == "fp16":
            raise ValueError("fp16 autocast needs a GPU; use precision bf16 or fp32 on CPU")
        return dl.CPUEngine(mixed_precision=mixed or "no")
    if not torch.cuda.is_available():
        raise ValueError(f"train.engine={name!r} needs CUDA, and none is available; use 'cpu'")
    if name == "gpu":
        return dl.GPUEngine(mixed_precision=mixed or "no")
    return dl.DistributedDataParallelEngine(mixed_precision=mixed or "no", port=ddp_port)
