"""Synthesize a cohort in FreeSurfer's layout, deterministically from one seed, in parallel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from gmvol.config import jsonable
from gmvol.io import atomic_dir, write_csv, write_json
from gmvol.parallel import RUN_ONLY_KEYS, Executor, check_executor, parallel_map
from gmvol.regions import DK_NAMES, HEMISPHERES, LOBE_OF, LOBES, REGION_COLUMNS, REGION_IDS
from gmvol.synth.anatomy import load_template, region_territories
from gmvol.synth.deform import (
    Geometry,
    expansion_displacement,
    random_pose,
    sample,
    smooth_warp,
    template_coordinates,
)
from gmvol.synth.freesurfer import conformed_affine, write_aparc_stats, write_mgz
from gmvol.synth.intensity import paint_head, scanner_effects
from gmvol.synth.variation import cohort_variation

COARSE_SPACING_MM = 4


@dataclass(frozen=True)
class SynthConfig:
    """How the synthetic cohort varies (the `synthesize` params section; defaults equal it).
    They give real-cohort-like regional CVs (0.10-0.25)."""

    n_subjects: int = 670
    seed: int = 0
    voxel_size: float = 2.0       # mm; 1.0 gives FreeSurfer's 256^3 conformed grid
    fov_mm: float = 256.0
    head_scale_sd: float = 0.025  # linear head size; volumes scale with its cube
    lobe_sd: float = 0.16         # requested log-volume factor of a lobe (per hemisphere)
    region_sd: float = 0.14       # requested log-volume factor unique to each region
    # (about a third of a requested log-expansion is realised: the field is smoothed over 6 mm)
    warp_mm: float = 2.0          # peak smooth non-linear displacement
    max_rotation_deg: float = 10.0
    max_translation_mm: float = 10.0
    gamma_sd: float = 0.10
    bias_sd: float = 0.10
    noise_sd: float = 0.02
    workers: int = 0              # 0: one per CPU core
    executor: Executor = "local"  # or dask: the subjects run on the cluster at dask_address
    dask_address: str = ""        # tcp://HOST:PORT or local:N (gmvol.distributed)

    def __post_init__(self) -> None:
        check_executor(self.executor, self.dask_address)


def subject_name(index: int) -> str:
    return f"sub-{index + 1:04d}"


def regional_log_expansion(rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Log-volume change per region: a lobar factor per hemisphere plus a unique part, the
    covariance structure real cortices show (not explained by total volume alone)."""
    lobe_factor = {(h, lobe): rng.normal(0.0, cfg.lobe_sd) for h in HEMISPHERES for lobe in LOBES}
    unique = rng.normal(0.0, cfg.region_sd, size=len(REGION_COLUMNS))
    shared = np.array([lobe_factor[(h, LOBE_OF[n])] for h in HEMISPHERES for n in DK_NAMES])
    return np.clip(shared + unique, -0.5, 0.5)


def draw_geometry(rng: np.random.Generator, cfg: SynthConfig) -> Geometry:
    territory, _ = region_territories(COARSE_SPACING_MM)
    expansion = expansion_displacement(regional_log_expansion(rng, cfg), territory, COARSE_SPACING_MM)
    warp = smooth_warp(territory.shape, COARSE_SPACING_MM, cfg.warp_mm, rng)
    rotation, translation = random_pose(rng, cfg.max_rotation_deg, cfg.max_translation_mm)
    scale = float(np.exp(rng.normal(0.0, cfg.head_scale_sd)))
    return Geometry(scale=scale, rotation=rotation, translation_mm=translation,
                    displacement=expansion + warp)


def synthesize_subject(index: int, cfg: SynthConfig, out_dir: Path) -> dict[str, float]:
    """Write one subject (orig.mgz, aparc+aseg.mgz, ?h.aparc.stats); return its draw and volumes."""
    rng = np.random.default_rng([cfg.seed, index])
    tpl = load_template()
    _, coarse_affine = region_territories(COARSE_SPACING_MM)
    geom = draw_geometry(rng, cfg)
    size = round(cfg.fov_mm / cfg.voxel_size)
    affine = conformed_affine(cfg.voxel_size, size, tpl.center_mm)
    coords = template_coordinates(affine, (size,) * 3, geom, tpl.center_mm, tpl.affine, coarse_affine)
    coded = sample(tpl.coded_labels, coords, nearest=True).astype(np.int16)
    labels, tissue = np.clip(coded, 0, None), np.where(coded > 0, 1, -coded)
    brain = sample(tpl.t1, coords)
    image = paint_head(brain, tissue, rng)
    image = ndimage.gaussian_filter(image, 0.5)
    image = scanner_effects(image, rng, gamma_sd=cfg.gamma_sd, bias_sd=cfg.bias_sd,
                            noise_sd=cfg.noise_sd)
    t1 = np.clip(image / np.percentile(image[tissue > 0], 99.5) * 230.0, 0, 255).astype(np.uint8)

    name = subject_name(index)
    subject_dir = out_dir / name
    write_mgz(t1, affine, subject_dir / "mri" / "orig.mgz")
    write_mgz(labels.astype(np.int32), affine, subject_dir / "mri" / "aparc+aseg.mgz")
    counts = np.bincount(labels.ravel().clip(0), minlength=max(REGION_IDS) + 1)
    volumes = {col: float(counts[i]) * cfg.voxel_size**3 for col, i in zip(REGION_COLUMNS, REGION_IDS)}
    for hemi in HEMISPHERES:
        write_aparc_stats(subject_dir / "stats" / f"{hemi}.aparc.stats", name, hemi,
                          {n: volumes[f"{hemi}_{n}"] for n in DK_NAMES}, rng)
    angles = np.degrees(np.arctan2(geom.rotation[2, 1], geom.rotation[2, 2]))
    return {"subject": name, "head_scale": geom.scale, "roll_deg": float(angles),
            **{f"shift_{a}_mm": float(t) for a, t in zip("xyz", geom.translation_mm)}, **volumes}


def _worker(args: tuple[int, SynthConfig, Path]) -> dict[str, float]:
    return synthesize_subject(*args)


def synthesize_cohort(cfg: SynthConfig, out_dir: Path) -> pd.DataFrame:
    """Write all subjects under `out_dir` (replaced atomically) plus `cohort.csv` (each subject's
    draw and true volumes), in parallel with a progress bar; returns that table."""
    with atomic_dir(out_dir) as tmp:
        rows = parallel_map(_worker, [(i, cfg, tmp) for i in range(cfg.n_subjects)], cfg.workers,
                            "synthesize", executor=cfg.executor, dask_address=cfg.dask_address)
        table = pd.DataFrame(rows)
        write_csv(table, tmp / "cohort.csv")
        # what made the cohort, less where and in how many processes (which changes nothing in it)
        write_json({k: v for k, v in jsonable(cfg).items() if k not in RUN_ONLY_KEYS}, tmp / "synth_config.json")
    return table


def synthesize_study(cfg: SynthConfig, out_dir: Path, stats_json: Path) -> dict[str, float]:
    """The synthesize stage: the cohort under `out_dir`, and its variation figures (regional CVs,
    the share of variance total-GM scaling explains) in `stats_json`."""
    torch.set_num_threads(1)  # the worker processes use every core
    stats = cohort_variation(synthesize_cohort(cfg, out_dir))
    write_json(stats, stats_json)
    print("cohort: regional CV min/median/max {cv_min:.3f}/{cv_median:.3f}/{cv_max:.3f}; "
          "total-GM scaling explains a median {total_scaling_r2_median:.2f} of regional variance"
          .format(**stats))
    return stats
