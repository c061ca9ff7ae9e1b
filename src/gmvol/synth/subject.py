"""One synthetic subject, from one prepared anatomy seed: thickness and area change, size and
pose, then a head and an image rendered from the labels. Truth is the voxel count of the
subject's own label grid."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gmvol.regions import DK_NAMES, HEMISPHERES, LOBE_OF, LOBES, N_REGIONS, REGION_COLUMNS, REGION_IDS
from gmvol.synth.deform import (
    Geometry,
    expansion_displacement,
    random_pose,
    sample,
    smooth_warp,
    template_coordinates,
)
from gmvol.synth.freesurfer import conformed_affine, write_aparc_stats, write_mgz
from gmvol.synth.head import HeadConfig, head_codes, head_frame
from gmvol.synth.prepare import COARSE_SPACING_MM, PreparedSeed, load_prepared, smooth_uniform
from gmvol.synth.render import RenderConfig, acquisition_mm, paint, resample_acquisition, scanner_effects
from gmvol.synth.thickness import change_gray_matter, thickness_to_voxels

MAX_THINNING = 0.5
"""A region keeps at least half its thickness however thin it is drawn."""


@dataclass(frozen=True)
class AnatomyDraws:
    """How much brains vary, per subject (part of the `synthesize` params section)."""

    brain_scale_sd: float = 0.036       # log linear brain size (volume SD ~ 3x); Student-t tails
    brain_scale_df: float = 3.0         # degrees of freedom of that t: a few very small and large brains
    thickness_sd: float = 0.04          # cortical thickness change, as a fraction of the region's own
    thickness_lobe_sd: float = 0.06     # mean thickness: of the whole cortex, of a lobe (per
    thickness_region_sd: float = 0.08   # hemisphere), unique to a region
    lobe_sd: float = 0.16               # requested log-area factor of a lobe (per hemisphere)
    region_sd: float = 0.14             # requested log-area factor unique to a region
    warp_mm: float = 2.0                # peak smooth non-linear displacement
    max_rotation_deg: float = 10.0
    max_translation_mm: float = 10.0


@dataclass(frozen=True)
class SubjectJob:
    """Everything a worker needs for one subject (picklable)."""

    index: int
    stream: int                          # 0: the training cohort; 1: the held-out anatomy
    master_seed: int
    seed_files: tuple[Path, ...]
    voxel_size: float
    fov_mm: float
    anatomy: AnatomyDraws
    render: RenderConfig
    head: HeadConfig
    name: str = ""
    out_dir: Path = field(default=Path("."))
    total_mm3: float | None = None       # a DK total to scale the brain to (the extrapolation set)


def lobar_draw(rng: np.random.Generator, lobe_sd: float, region_sd: float) -> np.ndarray:
    """(68,) a factor per lobe and hemisphere plus a part unique to each region: the covariance
    real cortices show (not explained by total volume alone)."""
    lobe = {(h, lobe): rng.normal(0.0, lobe_sd) for h in HEMISPHERES for lobe in LOBES}
    unique = rng.normal(0.0, region_sd, size=N_REGIONS)
    return np.array([lobe[(h, LOBE_OF[n])] for h in HEMISPHERES for n in DK_NAMES]) + unique


def brain_scale(rng: np.random.Generator, draws: AnatomyDraws) -> float:
    """Linear brain size: Student-t in log space with SD brain_scale_sd, clipped at 6 SD."""
    df = draws.brain_scale_df
    t = rng.standard_t(df) / np.sqrt(df / (df - 2.0)) if df > 2 else rng.standard_normal()
    return float(np.exp(draws.brain_scale_sd * np.clip(t, -6.0, 6.0)))


def thickness_change_mm(seed: PreparedSeed, relative: np.ndarray) -> np.ndarray:
    """(68,) mm of thickness change: a fraction of each region's mean thickness (volume / white
    surface area), so that thin and thick regions vary alike in relative terms."""
    volume = np.bincount(seed.maps.gm_region, minlength=N_REGIONS)
    return relative * volume / np.maximum(seed.maps.area_mm2, 1.0)


def draw_labels(seed: PreparedSeed, rng: np.random.Generator, draws: AnatomyDraws) -> tuple[np.ndarray, float]:
    """The seed's labels with this subject's cortical thickness; returns (labels, global relative change)."""
    global_change = float(rng.normal(0.0, draws.thickness_sd))
    relative = np.clip(global_change + lobar_draw(rng, draws.thickness_lobe_sd, draws.thickness_region_sd),
                       -MAX_THINNING, 1.0)
    voxels = thickness_to_voxels(thickness_change_mm(seed, relative), seed.maps)
    patches = smooth_uniform(seed.labels.shape, rng, only_at=seed.maps.movable).ravel()
    return change_gray_matter(seed.labels, seed.maps, voxels, patches), global_change


def draw_geometry(seed: PreparedSeed, rng: np.random.Generator, draws: AnatomyDraws) -> Geometry:
    expansion = expansion_displacement(np.clip(lobar_draw(rng, draws.lobe_sd, draws.region_sd), -0.5, 0.5),
                                       seed.territory, COARSE_SPACING_MM)
    warp = smooth_warp(seed.territory.shape, COARSE_SPACING_MM, draws.warp_mm, rng)
    rotation, translation = random_pose(rng, draws.max_rotation_deg, draws.max_translation_mm)
    return Geometry(scale=brain_scale(rng, draws), rotation=rotation, translation_mm=translation,
                    displacement=expansion + warp)


def render_subject(job: SubjectJob) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float | str]]:
    """(uint8 T1, int32 labels, affine, the draw) of one subject, nothing written."""
    rng = np.random.default_rng([job.master_seed, job.stream, job.index])
    seed = load_prepared(job.seed_files[int(rng.integers(len(job.seed_files)))])
    labels, thickness = draw_labels(seed, rng, job.anatomy)
    geom = draw_geometry(seed, rng, job.anatomy)
    size = round(job.fov_mm / job.voxel_size)
    affine = conformed_affine(job.voxel_size, size, seed.center_mm)
    def sampled(geometry: Geometry) -> np.ndarray:
        coords = template_coordinates(affine, (size,) * 3, geometry, seed.center_mm, seed.affine, seed.coarse_affine)
        return sample(labels.astype(np.float32), coords, nearest=True).astype(np.int32)

    out_labels = sampled(geom)
    if job.total_mm3 is not None:  # volume goes with scale^3: measure once, then rescale to the target
        total = float(np.isin(out_labels, REGION_IDS).sum()) * job.voxel_size**3 / geom.scale**3
        geom = dataclasses.replace(geom, scale=float((job.total_mm3 / total) ** (1 / 3)))
        out_labels = sampled(geom)
    q = head_frame(affine, out_labels.shape, geom.rotation, seed.center_mm + geom.translation_mm)
    codes, blank, head = head_codes(out_labels, q, job.voxel_size, rng, job.head)
    del q
    image = paint(codes, rng, job.render)
    acquired = acquisition_mm(rng, job.render)
    image = scanner_effects(resample_acquisition(image, job.voxel_size, acquired), rng, job.render)
    image[blank] = 0.0
    scale = np.percentile(image[codes > 0], 99.5)
    t1 = np.clip(image / scale * 230.0, 0, 255).astype(np.uint8)
    angles = np.degrees(np.arctan2(geom.rotation[2, 1], geom.rotation[2, 2]))
    draw = {"seed": seed.name, "brain_scale": geom.scale, "thickness_change": thickness,
            "roll_deg": float(angles), **{f"shift_{a}_mm": float(t) for a, t in zip("xyz", geom.translation_mm)},
            **{f"acquired_{a}_mm": float(v) for a, v in zip("ijk", acquired)}, **head}
    return t1, out_labels, affine, draw


def synthesize_subject(job: SubjectJob) -> dict[str, float | str]:
    """Write one subject (orig.mgz, aparc+aseg.mgz, ?h.aparc.stats) under job.out_dir; return
    its draw and true volumes."""
    t1, labels, affine, draw = render_subject(job)
    subject_dir = job.out_dir / job.name
    write_mgz(t1, affine, subject_dir / "mri" / "orig.mgz")
    write_mgz(labels, affine, subject_dir / "mri" / "aparc+aseg.mgz")
    counts = np.bincount(labels.ravel().clip(0), minlength=max(REGION_IDS) + 1)
    volumes = {col: float(counts[i]) * job.voxel_size**3 for col, i in zip(REGION_COLUMNS, REGION_IDS)}
    rng = np.random.default_rng([job.master_seed, job.stream, job.index, 1])
    for hemi in HEMISPHERES:
        write_aparc_stats(subject_dir / "stats" / f"{hemi}.aparc.stats", job.name, hemi,
                          {n: volumes[f"{hemi}_{n}"] for n in DK_NAMES}, rng)
    return {"subject": job.name, **draw, **volumes}
