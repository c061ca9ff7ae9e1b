"""The size-extrapolation set: brains smaller and larger than any training subject.

Same seeds, draws and rendering as the training cohort, on a random stream of its own; only the
brain's scale is set so that its DK total lands 15-30% below the smallest training total or above
the largest. A model that counts gets these right; one that interpolates between training totals
returns about the training range.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gmvol.io import atomic_dir, write_json
from gmvol.regions import REGION_COLUMNS
from gmvol.synth.cohort import SynthConfig, prepared_seed_files, subject_jobs, write_prepared_seeds, write_set
from gmvol.synth.render import Range

EXTRAPOLATION_STREAM = 2


@dataclass(frozen=True)
class ExtrapolationConfig:
    """The `extrapolation` params section: how many subjects, and their DK totals as factors of
    the smallest (`below`) and largest (`above`) training total; half the subjects each."""

    n_subjects: int = 24
    below: Range = (0.72, 0.83)
    above: Range = (1.17, 1.28)

    def __post_init__(self) -> None:
        if self.n_subjects < 2:
            raise ValueError(f"n_subjects must be >= 2 (small and large brains), got {self.n_subjects}")
        if not (0 < self.below[0] <= self.below[1] < 1 < self.above[0] <= self.above[1]):
            raise ValueError(f"need 0 < below <= below < 1 < above <= above, got {self.below} and {self.above}")


def extrapolation_name(index: int) -> str:
    return f"ex-{index + 1:04d}"


def dk_totals(table: pd.DataFrame) -> np.ndarray:
    """Each subject's DK total (the sum of the 68 region columns), mm^3."""
    return table[list(REGION_COLUMNS)].to_numpy(dtype=np.float64).sum(axis=1)


def target_totals(cfg: SynthConfig, ext: ExtrapolationConfig, train_totals: np.ndarray) -> np.ndarray:
    """(n_subjects,) DK totals in mm^3: even subjects below the training range, odd ones above."""
    rng = np.random.default_rng([cfg.seed, EXTRAPOLATION_STREAM, 0])
    small = train_totals.min() * rng.uniform(*ext.below, size=ext.n_subjects)
    large = train_totals.max() * rng.uniform(*ext.above, size=ext.n_subjects)
    return np.where(np.arange(ext.n_subjects) % 2 == 0, small, large)


def synthesize_extrapolation(cfg: SynthConfig, ext: ExtrapolationConfig, train_csv: Path, out_dir: Path,
                             seeds_dir: Path | None = None) -> pd.DataFrame:
    """Write the set under `out_dir` (replaced atomically) in FreeSurfer layout, with cohort.csv
    and `range.json` (the training range it lies outside); returns the cohort table. The seeds
    are those the synthesize stage kept in `seeds_dir`, or (None) prepared again."""
    torch.set_num_threads(1)  # the worker processes use every core
    train_totals = dk_totals(pd.read_csv(train_csv))
    totals = target_totals(cfg, ext, train_totals)
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory() as seeds:
        files = (prepared_seed_files(cfg, seeds_dir) if seeds_dir is not None
                 else write_prepared_seeds(cfg, Path(seeds), heldout=False))
        jobs = [dataclasses.replace(job, index=i, stream=EXTRAPOLATION_STREAM, name=extrapolation_name(i),
                                    total_mm3=float(t))
                for i, (job, t) in enumerate(zip(subject_jobs(cfg, files, tmp)[:1] * ext.n_subjects, totals))]
        table = write_set(jobs, cfg, "extrapolation set", tmp)
        write_json({"train_total_min": float(train_totals.min()), "train_total_max": float(train_totals.max()),
                    **dataclasses.asdict(ext)}, tmp / "range.json")
    got = dk_totals(table)
    print(f"extrapolation: {len(table)} subjects, totals {got.min():.0f}-{got.max():.0f} mm3 outside the training "
          f"range {train_totals.min():.0f}-{train_totals.max():.0f}")
    return table
