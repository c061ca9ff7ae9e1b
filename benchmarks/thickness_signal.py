"""Does the model's grid still show a change in cortical thickness? An upper bound on what any
model could read, independent of training.

For each anatomy seed it renders the seed's own labels twice, as they are and with every region's
cortex `--change` thicker (gray matter grown into the white matter, `gmvol.synth.thickness`),
with fixed tissue intensities (the middle of the `synthesize.render` ranges), blurs both to an
acquisition resolution and averages them onto grids of 1 to 6 mm. It then asks how much of the
difference between the two images a change of contrast could explain instead: the least-squares
fit of the difference by shifts of the cortex, white matter and CSF intensities. What is left is
the part only a thickness change makes; next to it, the difference's RMS over the brain in units of
the renderer's noise averaged onto that grid.

    python benchmarks/thickness_signal.py --out benchmarks/results/thickness_signal.json
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from common import print_table, write_result
from scipy import ndimage

from gmvol.config import parse, read_params, section
from gmvol.regions import N_REGIONS
from gmvol.synth.anatomy import CEREBELLUM_WM_IDS, CSF_ID, WHITE_MATTER_IDS, load_seed
from gmvol.synth.cohort import SynthConfig
from gmvol.synth.prepare import prepare, smooth_uniform
from gmvol.synth.render import RenderConfig, intensity_table
from gmvol.synth.subject import thickness_change_mm
from gmvol.synth.thickness import change_gray_matter, thickness_to_voxels

GRIDS_MM = (1, 2, 3, 4, 5, 6)


def render_mean(labels: np.ndarray, cfg: RenderConfig) -> np.ndarray:
    """The noiseless image of a label map through the renderer's own intensity table, with the
    tissue ranges collapsed to their midpoints and no per-label jitter; the subcortical mixes are
    drawn once from a fixed seed (they are the same in both renderings, so they cancel)."""
    middle = {k: (float(np.mean(getattr(cfg, k))),) * 2 for k in ("csf", "gray", "white")}
    fixed = dataclasses.replace(cfg, **middle, contrast="t1", label_jitter=0.0, texture=(0.0, 0.0))
    codes = np.unique(labels)
    table = intensity_table(codes, np.random.default_rng(0), fixed)
    lut = np.array([table[int(c)][0] for c in codes], dtype=np.float32)
    return lut[np.searchsorted(codes, labels)]


def block_mean(volume: np.ndarray, step: int) -> np.ndarray:
    """Average over step^3 blocks: the grid's partial volume, exactly."""
    n = [d // step * step for d in volume.shape]
    v = volume[: n[0], : n[1], : n[2]]
    return v.reshape(n[0] // step, step, n[1] // step, step, n[2] // step, step).mean(axis=(1, 3, 5))


def thicker_cortex(name: str, change: float) -> tuple[np.ndarray, np.ndarray]:
    """A seed's 1 mm labels as it ships, and with every region's cortex `change` thicker."""
    seed = prepare(load_seed(name), None)
    voxels = thickness_to_voxels(thickness_change_mm(seed, np.full(N_REGIONS, change)), seed.maps)
    return seed.labels, change_gray_matter(seed.labels, seed.maps, voxels,
                                           smooth_uniform(seed.labels.shape, np.random.default_rng(0)).ravel())


def seed_signal(name: str, labels: np.ndarray, thicker: np.ndarray, acquisition_mm: float, cfg: RenderConfig,
                synth_voxel_mm: float) -> list[dict]:
    """One row per grid: the share of the thickness change's image change no contrast change explains."""
    blur = ((lambda v: ndimage.gaussian_filter(v, 0.42 * acquisition_mm)) if acquisition_mm > 1 else (lambda v: v))
    before, after = blur(render_mean(labels, cfg)), blur(render_mean(thicker, cfg))
    nuisances = [blur((thicker >= 1000).astype(np.float32)),
                 blur(np.isin(thicker, (*WHITE_MATTER_IDS, *CEREBELLUM_WM_IDS)).astype(np.float32)),
                 blur((thicker == CSF_ID).astype(np.float32))]
    brain = ndimage.binary_dilation(labels > 0, iterations=3).astype(np.float32)
    cortex_change = float(np.isin(thicker, range(1000, 3000)).sum() / np.isin(labels, range(1000, 3000)).sum() - 1)
    noise_sd = float(np.mean(cfg.noise))
    rows = []
    for step in GRIDS_MM:
        inside = block_mean(brain, step) > 0.5
        diff = (block_mean(after, step) - block_mean(before, step))[inside]
        design = np.stack([block_mean(n, step)[inside] for n in nuisances], axis=1)
        coef = np.linalg.lstsq(design, diff, rcond=None)[0]
        left = diff - design @ coef
        noise_here = noise_sd * min(1.0, (synth_voxel_mm / step) ** 1.5)   # the renderer's noise, averaged onto the grid
        rows.append({"seed": name, "acquisition_mm": acquisition_mm, "grid_mm": step, "cortex_change": cortex_change,
                     "unexplained_by_contrast": float(np.linalg.norm(left) / np.linalg.norm(diff)),
                     "cortex_shift_equivalent": float(coef[0]),
                     "signal_rms_over_noise": float(np.sqrt((left**2).mean()) / noise_here)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--change", type=float, default=0.10, help="relative thickness change of every region")
    parser.add_argument("--acquisitions", type=float, nargs="+", default=[1.0, 3.0, 5.0],
                        help="acquisition resolutions (mm) blurred to before the grid")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/thickness_signal.json"))
    args = parser.parse_args()
    cfg = parse(SynthConfig, section(read_params(args.params), "synthesize"), "synthesize")
    rows = []
    for name in (*cfg.seeds, *cfg.heldout.seeds):
        labels, thicker = thicker_cortex(name, args.change)
        for acq in args.acquisitions:
            rows += seed_signal(name, labels, thicker, acq, cfg.render, cfg.voxel_size)
    print_table(rows, ["seed", "acquisition_mm", "grid_mm", "cortex_change", "unexplained_by_contrast",
                       "cortex_shift_equivalent", "signal_rms_over_noise"])
    write_result(args.out, {"change": args.change, "rows": rows})


if __name__ == "__main__":
    main()
