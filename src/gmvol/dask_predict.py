"""`gmvol predict --dask ADDRESS`: one Dask task per scan, each worker process loading the model
once and keeping it for every scan it is given.

Results come back as scans finish (the caller records each in the ledger and orders the table
by input at the end). A scan that fails is a failed `ScanResult`, never an exception; a task
whose worker died is retried once on another worker by the scheduler (`gmvol.distributed`),
then reported failed with that reason. Paths are resolved here: workers on other nodes need the
model and the scans at the same paths (shared storage).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from gmvol.distributed import dask_client, is_worker_death
from gmvol.io import InputError
from gmvol.predict import Predictor, PredictorSettings, ScanResult

_PREDICTORS: dict[PredictorSettings, Predictor] = {}
_LOCK = threading.Lock()


def worker_predictor(settings: PredictorSettings) -> Predictor:
    """This worker process's Predictor for `settings`, built on first use and kept."""
    with _LOCK:
        if settings not in _PREDICTORS:
            _PREDICTORS[settings] = settings.build()
        return _PREDICTORS[settings]


def predict_task(settings: PredictorSettings, subject: str, path: str) -> ScanResult:
    """The work of one scan on a Dask worker."""
    return worker_predictor(settings).predict_one(subject, Path(path))


def failed_on_cluster(subject: str, path: Path, exc: BaseException) -> ScanResult:
    """A scan whose task raised or whose worker died, as a failed result with the reason."""
    if is_worker_death(exc):
        reason = "the Dask worker running it died, also on its retry (killed or out of memory?)"
    else:
        reason = f"failed on a Dask worker ({type(exc).__name__}: {exc})"
    return ScanResult(subject, path, None, InputError(path, reason))


def iter_dask_results(scans: Sequence[tuple[str, Path]], settings: PredictorSettings,
                      address: str) -> Iterator[ScanResult]:
    """Predict `scans` (subject, path) on the cluster at `address`, yielding in finishing order."""
    from distributed import as_completed

    settings = PredictorSettings(**{**settings.__dict__, "model_dir": str(Path(settings.model_dir).absolute())})
    with dask_client(address) as client:
        futures = {client.submit(predict_task, settings, subject, str(Path(path).absolute()), pure=False):
                   (subject, Path(path)) for subject, path in scans}
        for future in as_completed(futures):
            subject, path = futures.pop(future)
            error = future.exception()
            yield failed_on_cluster(subject, path, error) if error is not None else future.result()
            future.release()
