"""Synthesize a cohort in FreeSurfer's layout from real anatomies, deterministically from one
seed, in parallel; and beside it a held-out-anatomy set that training never sees."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from gmvol.config import jsonable
from gmvol.io import InputError, atomic_dir, write_csv, write_json
from gmvol.parallel import RUN_ONLY_KEYS, Executor, check_executor, parallel_map
from gmvol.synth.anatomy import SEED_NAMES
from gmvol.synth.head import HeadConfig
from gmvol.synth.montage import plot_cohort_montage
from gmvol.synth.prepare import calibrations, prepare_named, seed_volumes
from gmvol.synth.render import Range, RenderConfig
from gmvol.synth.subject import AnatomyDraws, SubjectJob, synthesize_subject
from gmvol.synth.variation import cohort_variation

SEEDS_DIR = ".seeds"
"""Prepared seeds, inside the output's temporary directory while workers read them."""


@dataclass(frozen=True)
class HeldoutConfig:
    """The held-out-anatomy set: other seeds, and contrast and resolution outside the training draws."""

    seeds: tuple[str, ...] = ("15697",)
    n_subjects: int = 40
    gray: Range = (0.60, 0.66)
    white: Range = (0.80, 1.00)
    csf: Range = (0.30, 0.40)
    resolution_mm: Range = (1.0, 1.2)
    slice_mm: Range = (6.0, 7.0)


@dataclass(frozen=True)
class SynthConfig:
    """How the synthetic cohort is made (the `synthesize` params section; defaults equal it)."""

    n_subjects: int = 670
    seed: int = 0
    voxel_size: float = 2.0       # mm; 1.0 gives FreeSurfer's 256^3 conformed grid
    fov_mm: float = 256.0
    seeds: tuple[str, ...] = ("mni152", "9861", "10021", "12876", "14380", "15496")
    seed_region_sd_max: float = 0.08  # seeds' regions pulled together to at most this log SD
    anatomy: AnatomyDraws = field(default_factory=AnatomyDraws)
    render: RenderConfig = field(default_factory=RenderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    heldout: HeldoutConfig = field(default_factory=HeldoutConfig)
    workers: int = 0              # 0: one per CPU core
    executor: Executor = "local"  # or dask: the subjects run on the cluster at dask_address
    dask_address: str = ""        # tcp://HOST:PORT or local:N (gmvol.distributed)

    def __post_init__(self) -> None:
        check_executor(self.executor, self.dask_address)
        for key, names in (("seeds", self.seeds), ("heldout.seeds", self.heldout.seeds)):
            unknown = [n for n in names if n not in SEED_NAMES]
            if unknown or not names:
                raise ValueError(f"{key}: {unknown or 'none'}; choose from {list(SEED_NAMES)}")
        shared = sorted(set(self.seeds) & set(self.heldout.seeds))
        if shared:
            raise ValueError(f"heldout.seeds {shared} are also training seeds: they would not be held out")

    @property
    def heldout_render(self) -> RenderConfig:
        h = self.heldout
        return dataclasses.replace(self.render, gray=h.gray, white=h.white, csf=h.csf,
                                   resolution_mm=h.resolution_mm, slice_mm=h.slice_mm)


def subject_name(index: int) -> str:
    return f"sub-{index + 1:04d}"


def heldout_name(index: int) -> str:
    return f"ho-{index + 1:04d}"


def _provenance(cfg: SynthConfig) -> dict:
    """What made the cohort, less where and in how many processes (which changes nothing in it)."""
    return {k: v for k, v in jsonable(cfg).items() if k not in RUN_ONLY_KEYS}


def write_set(jobs: list[SubjectJob], cfg: SynthConfig, desc: str, out: Path) -> pd.DataFrame:
    rows = parallel_map(synthesize_subject, jobs, cfg.workers, desc, executor=cfg.executor,
                        dask_address=cfg.dask_address)
    table = pd.DataFrame(rows)
    write_csv(table, out / "cohort.csv")
    write_json(_provenance(cfg), out / "synth_config.json")
    return table


def write_prepared_seeds(cfg: SynthConfig, folder: Path, heldout: bool) -> dict[str, Path]:
    """Prepare the training seeds (and the held-out ones) and save them under `folder`, one seed
    per worker: loading the volumes, then calibrating and preparing each."""
    folder.mkdir(parents=True, exist_ok=True)
    held = cfg.heldout.seeds if heldout else ()
    run = {"executor": cfg.executor, "dask_address": cfg.dask_address}
    volumes = parallel_map(seed_volumes, list(cfg.seeds), cfg.workers, "load anatomy seeds", **run)
    plan = calibrations(cfg.seeds, held, volumes, cfg.seed_region_sd_max)
    jobs = [(name, calibration, folder / f"{name}.npz") for name, calibration in plan.items()]
    paths = parallel_map(prepare_named, jobs, cfg.workers, "prepare anatomy seeds", **run)
    return dict(zip(plan, paths))


def subject_jobs(cfg: SynthConfig, files: dict[str, Path], out_dir: Path, heldout: bool = False) -> list[SubjectJob]:
    """One job per subject of the training cohort, or of the held-out-anatomy set (its own seeds,
    render settings, names and random stream)."""
    names, render, n, stream, name = ((cfg.heldout.seeds, cfg.heldout_render, cfg.heldout.n_subjects, 1, heldout_name)
                                      if heldout else (cfg.seeds, cfg.render, cfg.n_subjects, 0, subject_name))
    return [SubjectJob(index=i, stream=stream, master_seed=cfg.seed, seed_files=tuple(files[s] for s in names),
                       voxel_size=cfg.voxel_size, fov_mm=cfg.fov_mm, anatomy=cfg.anatomy, render=render,
                       head=cfg.head, name=name(i), out_dir=out_dir) for i in range(n)]


def synthesize_one(cfg: SynthConfig, index: int, out_dir: Path, heldout: bool = False) -> dict:
    """One subject of the cohort (or of the held-out set), written under `out_dir` exactly as the
    stage writes it: for benchmarks and checks that need a single scan."""
    with tempfile.TemporaryDirectory() as tmp:
        files = write_prepared_seeds(cfg, Path(tmp), heldout=heldout)
        return synthesize_subject(subject_jobs(cfg, files, Path(out_dir), heldout)[index])


def prepared_seed_files(cfg: SynthConfig, seeds_dir: Path) -> dict[str, Path]:
    """The training seeds as `synthesize_cohort` kept them in `seeds_dir` (the extrapolation set
    is drawn from them: preparing them again would cost a minute)."""
    files = {name: Path(seeds_dir) / f"{name}.npz" for name in cfg.seeds}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise InputError(missing[0], "prepared anatomy seed not found: run the synthesize stage, which writes "
                                     f"one per synthesize.seeds entry into {seeds_dir}")
    return files


def synthesize_cohort(cfg: SynthConfig, out_dir: Path, heldout_dir: Path | None = None,
                      seeds_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Write all subjects under `out_dir` (and the held-out set under `heldout_dir`; the prepared
    training seeds under `seeds_dir`), each replaced atomically, plus `cohort.csv` (each subject's
    draw and true volumes), in parallel with a progress bar; returns those tables."""
    with atomic_dir(out_dir) as tmp:
        files = write_prepared_seeds(cfg, tmp / SEEDS_DIR, heldout=heldout_dir is not None)
        table = write_set(subject_jobs(cfg, files, tmp), cfg, "synthesize", tmp)
        heldout = None
        if heldout_dir is not None:
            with atomic_dir(heldout_dir) as held:
                heldout = write_set(subject_jobs(cfg, files, held, heldout=True), cfg, "held-out anatomy", held)
        if seeds_dir is not None:
            with atomic_dir(seeds_dir) as kept:
                for name in cfg.seeds:
                    shutil.move(files[name], kept / files[name].name)
        shutil.rmtree(tmp / SEEDS_DIR)
    return table, heldout


def synthesize_study(cfg: SynthConfig, out_dir: Path, stats_json: Path, heldout_dir: Path,
                     montage_png: Path, seeds_dir: Path | None = None) -> dict:
    """The synthesize stage: the cohort, the held-out set, the prepared training seeds (for the
    extrapolation set), the cohort's variation figures (`stats_json`) and a montage of one
    subject per seed."""
    torch.set_num_threads(1)  # the worker processes use every core
    table, heldout = synthesize_cohort(cfg, out_dir, heldout_dir, seeds_dir)
    stats = cohort_variation(table)
    stats["heldout"] = cohort_variation(heldout) if heldout is not None and len(heldout) > 2 else None
    write_json(stats, stats_json)
    plot_cohort_montage(table, out_dir, heldout, heldout_dir, montage_png)
    print("cohort: totals {total_min:.0f}-{total_max:.0f} mm3; regional CV min/median/max "
          "{cv_min:.3f}/{cv_median:.3f}/{cv_max:.3f}; total-GM scaling explains a median "
          "{total_scaling_r2_median:.2f} of regional variance".format(**stats))
    return stats
