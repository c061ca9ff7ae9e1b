"""Per-subject work over a pool of processes, with a progress bar: the one scaffold the heavy
stages (synthesize, preprocess) share."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

J = TypeVar("J")
R = TypeVar("R")


def _single_threaded_worker() -> None:
    import torch

    torch.set_num_threads(1)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of fresh interpreters, one torch thread each.

    'spawn', not fork: forking a process whose torch/OpenMP thread pool is already running
    deadlocks the children (seen here with the synthesizer after any torch call in the parent).
    """
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_single_threaded_worker)


def resolve_workers(workers: int) -> int:
    """0 means one worker per CPU core."""
    return workers or os.cpu_count() or 1


def parallel_map(fn: Callable[[J], R], jobs: Iterable[J], workers: int, desc: str,
                 chunksize: int = 1) -> list[R]:
    """`[fn(j) for j in jobs]` in input order, in `workers` processes (0: one per core; 1: in
    this process), with a progress bar. `fn` must be a module-level function (picklable)."""
    jobs = list(jobs)
    workers = resolve_workers(workers)
    if workers == 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, unit="subject")]
    with process_pool(workers) as pool:
        return list(tqdm(pool.map(fn, jobs, chunksize=chunksize), total=len(jobs),
                         desc=f"{desc} ({workers} workers)", unit="subject"))
