"""Per-item work on a Dask cluster (`dask.distributed`): the cluster behind `--dask ADDRESS` and
`executor: dask`.

ADDRESS is `tcp://HOST:PORT` (or any `scheme://`), an existing scheduler, e.g. one that
dask-jobqueue's SLURMCluster started; or `local:N`, a LocalCluster of N worker processes on this
machine (one thread each, scheduler on 127.0.0.1, no dashboard). A LocalCluster's scheduler
retries a task whose worker died once, on another worker, then fails it with `KilledWorker`
(`allowed_failures=1`); an external scheduler should be started with the same setting
(README, "Many machines").
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from tqdm import tqdm

from gmvol.parallel import single_threaded_worker

J = TypeVar("J")
R = TypeVar("R")

LOCAL = re.compile(r"local:(\d+)")
REMOTE = re.compile(r"[a-z][a-z0-9+.-]*://\S+")
ALLOWED_FAILURES = 1
"""Worker deaths a task survives: it is retried once on another worker, then reported."""


def parse_address(address: str) -> int | None:
    """N for 'local:N', None for a scheduler address; `ValueError` for anything else."""
    local = LOCAL.fullmatch(address)
    if local:
        n = int(local.group(1))
        if n < 1:
            raise ValueError(f"--dask {address}: local:N needs N >= 1 worker processes")
        return n
    if REMOTE.fullmatch(address):
        return None
    raise ValueError(f"--dask {address!r}: expected tcp://HOST:PORT (a running scheduler) or local:N")


@contextlib.contextmanager
def dask_client(address: str) -> Iterator[Any]:
    """A `distributed.Client` for ADDRESS; a `local:N` cluster is started here and closed after."""
    from distributed import Client, LocalCluster

    n_workers = parse_address(address)
    with contextlib.ExitStack() as stack:
        if n_workers is None:
            client = stack.enter_context(Client(address, timeout="60s"))
        else:
            cluster = stack.enter_context(LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, scheduler_kwargs={"allowed_failures": ALLOWED_FAILURES}))
            client = stack.enter_context(Client(cluster))
        yield client


def is_worker_death(exc: BaseException) -> bool:
    """A task failed because its worker process died (killed, out of memory), not by its code."""
    from distributed.scheduler import KilledWorker

    return isinstance(exc, KilledWorker)


def _single_threaded(fn: Callable[[J], R], job: J) -> R:
    """What a local pool worker's initializer does, on a Dask worker: one torch thread."""
    single_threaded_worker()
    return fn(job)


def dask_map(fn: Callable[[J], R], jobs: Sequence[J], address: str, desc: str) -> list[R]:
    """`[fn(j) for j in jobs]` in input order, one Dask task per job; the first job that raises
    stops the map with its error, and a job whose worker died twice raises `BrokenProcessPool`
    (as a local pool does)."""
    from distributed import as_completed

    with dask_client(address) as client:
        futures = [client.submit(_single_threaded, fn, job, pure=False) for job in jobs]
        with tqdm(total=len(futures), desc=f"{desc} (dask {address})", unit="subject") as bar:
            for future in as_completed(futures):
                error = future.exception()
                if error is not None:
                    if is_worker_death(error):
                        raise BrokenProcessPool(f"a Dask worker died twice running {desc} job "
                                                f"{futures.index(future)}: {error}")
                    raise error
                bar.update()
        return client.gather(futures)
