"""Choose Catalyst's engine from params, explicitly (Catalyst's own guess is unsafe on GPU)."""

from __future__ import annotations

import torch
from accelerate.state import AcceleratorState
from catalyst import dl

from gmvol.precision import resolve_precision
from gmvol.training.config import ENGINES
from gmvol.training.ddp import DDPEngine, DDPLayout, resolve_layout


def resolve_engine_name(name: str) -> str:
    """'auto' picks 'gpu' when CUDA is there, else 'cpu'."""
    if name not in ENGINES:
        raise ValueError(f"train.engine must be one of {list(ENGINES)}, got {name!r}")
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return name


def engine_device(name: str) -> str:
    """The device type an engine computes on: 'cuda' for gpu, and for ddp where CUDA is there."""
    name = resolve_engine_name(name)
    return "cuda" if name == "gpu" or (name == "ddp" and torch.cuda.is_available()) else "cpu"


def engine_precision(name: str, precision: str) -> str:
    """The precision the engine `name` trains at (`gmvol.precision.resolve_precision`)."""
    return resolve_precision(precision, engine_device(name))


def _allow_precision(mixed: str) -> None:
    """accelerate keeps one process-wide state and refuses an engine of another precision than
    the first one built ("AcceleratorState has already been initialized"). A stage process builds
    one engine, so this resets that (private) state only in a process that switches precision,
    such as the test suite; accelerate<0.28 has no public way to do it."""
    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision", mixed) != mixed:
        AcceleratorState._reset_state()


def build_engine(name: str, precision: str = "fp32", ddp: DDPLayout | None = None,
                 threads: int = 0) -> dl.Engine:
    """CPU, single GPU (optionally AMP in bf16/fp16; 'auto': bf16 where native), or DDP (`ddp`, default: one process per GPU)
    on GPUs with nccl or on CPU with gloo, through Catalyst."""
    name = resolve_engine_name(name)
    precision = engine_precision(name, precision)
    mixed = "no" if precision == "fp32" else precision
    _allow_precision(mixed)
    if name == "cpu":
        return dl.CPUEngine(mixed_precision=mixed)
    if name == "ddp":
        return DDPEngine(ddp or resolve_layout(), threads=threads, mixed_precision=mixed)
    if not torch.cuda.is_available():
        raise ValueError(f"train.engine={name!r} needs CUDA, and none is available; use 'cpu' or 'ddp'")
    return dl.GPUEngine(mixed_precision=mixed)
