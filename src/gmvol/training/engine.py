"""Choose Catalyst's engine from params, explicitly (Catalyst's own guess is unsafe on GPU)."""

from __future__ import annotations

import torch
from accelerate.state import AcceleratorState
from catalyst import dl

from gmvol.training.ddp import DDPEngine, DDPLayout, resolve_layout

ENGINES = ("auto", "cpu", "gpu", "ddp")
PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_engine_name(name: str) -> str:
    """'auto' picks 'gpu' when CUDA is there, else 'cpu'."""
    if name not in ENGINES:
        raise ValueError(f"train.engine must be one of {ENGINES}, got {name!r}")
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return name


def build_engine(name: str, precision: str = "fp32", ddp: DDPLayout | None = None,
                 threads: int = 0) -> dl.Engine:
    """CPU, single GPU (optionally AMP in bf16/fp16), or DDP (`ddp`, default: one process per GPU)
    on GPUs with nccl or on CPU with gloo, through Catalyst."""
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {PRECISIONS}, got {precision!r}")
    name = resolve_engine_name(name)
    mixed = None if precision == "fp32" else precision
    if mixed == "fp16" and (name == "cpu" or not torch.cuda.is_available()):
        raise ValueError("fp16 autocast needs a GPU; use precision bf16 or fp32 on CPU")
    # accelerate keeps one process-wide state and refuses an engine of another precision than the
    # first one built ("AcceleratorState has already been initialized"); each run builds its own.
    AcceleratorState._reset_state()
    if name == "cpu":
        return dl.CPUEngine(mixed_precision=mixed or "no")
    if name == "ddp":
        return DDPEngine(ddp or resolve_layout(), threads=threads, mixed_precision=mixed or "no")
    if not torch.cuda.is_available():
        raise ValueError(f"train.engine={name!r} needs CUDA, and none is available; use 'cpu' or 'ddp'")
    return dl.GPUEngine(mixed_precision=mixed or "no")
