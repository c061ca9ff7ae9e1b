"""Per-subject work over a pool of processes or a Dask cluster, with a progress bar: the one
scaffold the heavy stages (synthesize, preprocess) share."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Literal, TypeVar

from tqdm import tqdm

J = TypeVar("J")
R = TypeVar("R")

Executor = Literal["local", "dask"]
"""Where `parallel_map` runs: this machine's processes, or the Dask cluster at `dask_address`."""
RUN_ONLY_KEYS: tuple[str, ...] = ("workers", "executor", "dask_address")
"""Params keys that say how a stage runs, never what it writes (left out of provenance files)."""


def single_threaded_worker() -> None:
    """One torch thread per worker process: the processes already use every core."""
    import torch

    torch.set_num_threads(1)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of fresh interpreters, one torch thread each.

    'spawn', not fork: forking a process whose torch/OpenMP thread pool is already running
    deadlocks the children (seen here with the synthesizer after any torch call in the parent).
    """
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=single_threaded_worker)


def resolve_workers(workers: int) -> int:
    """0 means one worker per CPU core."""
    return workers or os.cpu_count() or 1


def check_executor(executor: str, dask_address: str) -> None:
    """A params section's executor choice, checked before any work (`ValueError`)."""
    if executor == "dask" and not dask_address:
        raise ValueError("executor 'dask' needs dask_address (tcp://HOST:PORT or local:N)")
    if executor == "dask":
        from gmvol.distributed import parse_address

        parse_address(dask_address)


def parallel_map(fn: Callable[[J], R], jobs: Iterable[J], workers: int, desc: str,
                 chunksize: int = 1, executor: Executor = "local", dask_address: str = "") -> list[R]:
    """`[fn(j) for j in jobs]` in input order, with a progress bar: in `workers` processes (0: one
    per core; 1: in this process), or with executor 'dask' one task per job on the cluster at
    `dask_address` (`gmvol.distributed`). `fn` must be a module-level function (picklable).
    A worker process that dies raises `BrokenProcessPool` either way."""
    jobs = list(jobs)
    if executor == "dask":
        from gmvol.distributed import dask_map

        return dask_map(fn, jobs, dask_address, desc)
    workers = resolve_workers(workers)
    if workers == 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, unit="subject")]
    with process_pool(workers) as pool:
        return list(tqdm(pool.map(fn, jobs, chunksize=chunksize), total=len(jobs),
                         desc=f"{desc} ({workers} workers)", unit="subject"))
