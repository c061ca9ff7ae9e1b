"""What a grid cell's intensity says about its cortex, by anatomy seed: the seed bias an ideal
reader of cell intensities would have, on a grid of each size.

Each subject's label map gives its exact class fractions on the grid (`gmvol.data.fractions`); an
idealised scan of it paints the mean intensity of each tissue (the middle of the render ranges of
params.yaml: cortex and other gray matter, white matter, CSF) with no noise, blur or random
contrast. Over the training seeds pooled, three estimators learn the cortex fraction of a cell by
binning: from the cell's intensity alone; from it and the mean of its 3x3x3 neighbourhood; and
from it and the spread of its 8 half-size sub-cells (what a twice finer image folded into the
cell's channels holds).
Per seed (the held-out one scored by what the training seeds taught), the benchmark reports the
median over subjects of (estimated / true cortex volume - 1). A model that reads gray matter
from intensity inherits this bias; one that does better has learned more than the cell's
intensity and its neighbourhood's mean. Compare with `anatomy_bias.py` (the trained model's bias).
It also gives the response of the cell reader's total to the known thickness and size draws, within
seeds, as `evaluate` measures a model's (`gmvol.evaluation.response`). With --random-contrast
each subject's tissue means are drawn from the render ranges instead and divided by its white
matter (which pure white-matter cells give away): a reader that must also guess the contrast.

The label maps are on the synthesis grid (2 mm by default): cells finer than about 1.5x it alias.
Needs `dvc repro synthesize` (data/synthetic, data/heldout_anatomy).

    python benchmarks/cell_intensity_bias.py --subjects 10 --voxel-sizes 5 4 3 [--random-contrast]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from common import write_result
from scipy import ndimage

from gmvol.config import parse, read_params, section
from gmvol.data.fractions import label_fractions
from gmvol.data.preprocess import PreprocessSpec, grid_affine
from gmvol.evaluation.response import response_scores
from gmvol.regions import N_REGIONS, REGION_COLUMNS
from gmvol.synth.cohort import SynthConfig
from gmvol.synth.render import RenderConfig
from gmvol.tissue import BACKGROUND_CLASS, N_CLASSES, TISSUE_GROUPS

BINS = 85
"""Intensity bins between 0 and the white-matter mean (cell), a third as many for the neighbourhood."""


def tissue_groups(klass: np.ndarray) -> np.ndarray:
    """Class -> 0 cortex, 1 white matter, 2 CSF, 3 other gray matter (subcortex, cerebellum,
    brainstem); -1 for background (`gmvol.tissue.TISSUE_GROUPS`, by name)."""
    table = np.full(N_CLASSES, 3)
    table[:N_REGIONS] = 0
    for k, (name, _, _) in enumerate(TISSUE_GROUPS):
        if "White-Matter" in name:
            table[N_REGIONS + k] = 1
        elif name == "CSF":
            table[N_REGIONS + k] = 2
    table[BACKGROUND_CLASS] = -1
    return table[klass]


def idealised_image(labels: nib.spatialimages.SpatialImage, spec: PreprocessSpec,
                    means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(intensity on the grid, (cells, tissue groups) volume shares) of an idealised scan."""
    fractions = label_fractions(labels, grid_affine(labels, spec), spec.shape, 1.0)
    group = tissue_groups(fractions.klass.astype(np.int64))
    keep = group >= 0
    volume = np.zeros((int(np.prod(spec.shape)), len(means)))
    np.add.at(volume, (fractions.index[keep], group[keep]), fractions.count[keep].astype(np.float64))
    share = volume / volume.sum(axis=1).max()  # a full cell holds the most sample points
    return (share @ means).reshape(spec.shape), share


def idealised_cells(labels: nib.spatialimages.SpatialImage, spec: PreprocessSpec, means: np.ndarray) -> pd.DataFrame:
    """Per brain cell of the grid: its idealised intensity, its neighbourhood's mean, the spread
    (SD) of its 8 half-size sub-cells (what a finer image folded into the cell would add), and its
    cortex fraction."""
    intensity, share = idealised_image(labels, spec, means)
    half = dataclasses.replace(spec, voxel_size=spec.voxel_size / 2, shape=tuple(2 * n for n in spec.shape))
    fine = idealised_image(labels, half, means)[0]  # the same field of view and centre: cells of 2^3
    blocks = fine.reshape(spec.shape[0], 2, spec.shape[1], 2, spec.shape[2], 2)
    spread = blocks.std(axis=(1, 3, 5)).ravel()
    around = ndimage.uniform_filter(intensity, 3, mode="constant").ravel()
    inside = share.sum(axis=1) > 0
    return pd.DataFrame({"intensity": intensity.ravel()[inside], "around": around[inside],
                         "spread": spread[inside], "cortex": share[inside, 0]})


ESTIMATORS = {"cell": None, "cell_and_neighbourhood": "around", "cell_and_subcells": "spread"}
"""Each estimator bins the cell's intensity and, but for the first, one more feature."""


def subject_estimates(cells: pd.DataFrame, training_seeds: list[str], white: float) -> pd.DataFrame:
    """Per subject: its seed, its true cortex (in cells) and each estimator's."""
    cells = cells.reset_index(drop=True)  # concatenated subjects repeat row labels: align by position
    cell_bin = np.digitize(cells["intensity"], np.linspace(0.0, white, BINS + 1))
    fit = cells["seed"].isin(training_seeds)
    estimated = {}
    for name, feature in ESTIMATORS.items():
        key = pd.Series(cell_bin if feature is None else
                        cell_bin * 1000 + np.digitize(cells[feature], np.linspace(0.0, white, BINS // 3)))
        learned = cells["cortex"][fit].groupby(key[fit]).mean()
        estimated[name] = key.map(learned).fillna(0.0).to_numpy()
    per = cells.assign(**estimated).groupby(["seed", "subject"])[["cortex", *ESTIMATORS]].sum()
    return per.reset_index("seed")


def seed_bias(per: pd.DataFrame) -> pd.DataFrame:
    """Median (estimated / true - 1) of each seed's cortex, for each estimator (`subject_estimates`)."""
    return per[list(ESTIMATORS)].div(per["cortex"], axis=0).sub(1.0).groupby(per["seed"]).median()


def draw_response(per: pd.DataFrame, draws: pd.DataFrame) -> dict[str, float]:
    """How much of the known thickness and size draws the cell reader's total carries (1: all),
    within seeds, as `gmvol.evaluation.response` measures a model."""
    def as_regions(total: pd.Series) -> pd.DataFrame:  # total_response sums the 68 columns
        return pd.DataFrame({REGION_COLUMNS[0]: total, **{c: 0.0 for c in REGION_COLUMNS[1:]}}, index=total.index)
    return response_scores(as_regions(per["cortex"]), as_regions(per["cell"]), draws)


def tissue_means(render: RenderConfig, rng: np.random.Generator | None) -> np.ndarray:
    """Cortex, white matter, CSF and other gray matter: the render ranges' middles, or (with
    `rng`) one random draw from them divided by its white matter, which a reader can find."""
    pick = (lambda r: float(np.mean(r))) if rng is None else (lambda r: float(rng.uniform(*r)))
    gray, white, csf = pick(render.gray), pick(render.white), pick(render.csf)
    means = np.array([gray, white, csf, gray + 0.3 * (white - gray)])
    return means if rng is None else means / white


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--subjects", type=int, default=10, help="label maps per seed")
    parser.add_argument("--voxel-sizes", type=float, nargs="+", default=[5.0, 4.0, 3.0])
    parser.add_argument("--random-contrast", action="store_true",
                        help="each subject's tissue means drawn from the render ranges (normalised to its white matter)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cell_intensity_bias.json"))
    args = parser.parse_args(argv)
    params = read_params(args.params)
    cfg = parse(SynthConfig, section(params, "synthesize"), "synthesize")
    fov = np.asarray(params["preprocess"]["shape"], float) * float(params["preprocess"]["voxel_size"])
    sets = [(Path("data/synthetic"), pd.read_csv("data/synthetic/cohort.csv")),
            (Path("data/heldout_anatomy"), pd.read_csv("data/heldout_anatomy/cohort.csv"))]
    subjects = [(folder, str(seed), subject) for folder, table in sets
                for seed, group in table.groupby(table["seed"].astype(str)) for subject in group["subject"].head(args.subjects)]
    labels = {subject: nib.load(folder / subject / "mri" / "aparc+aseg.mgz") for folder, _, subject in subjects}
    rng = np.random.default_rng(0) if args.random_contrast else None
    means = {subject: tissue_means(cfg.render, rng) for _, _, subject in subjects}
    white = max(m[1] for m in means.values())
    draws = pd.concat([table for _, table in sets]).set_index("subject")
    result: dict = {"subjects_per_seed": args.subjects, "contrast": "random" if rng else "fixed",
                    "tissue_means": None if rng else means[subjects[0][2]].round(4).tolist(), "grids": {}}
    for size in args.voxel_sizes:
        spec = PreprocessSpec(voxel_size=size, shape=tuple(round(float(f) / size) for f in fov))
        cells = pd.concat([idealised_cells(labels[subject], spec, means[subject]).assign(seed=seed, subject=subject)
                           for _, seed, subject in subjects])
        per = subject_estimates(cells, list(cfg.seeds), white)
        bias = seed_bias(per)
        training = per[per["seed"].isin(cfg.seeds)]
        response = draw_response(training, draws.loc[training.index])
        print(f"{size:g} mm grid {spec.shape}: median bias of the cortex by seed (training seeds' fit)")
        print(bias.to_string(float_format=lambda v: f"{v:+.3f}"))
        print(f"  response of the cell reader's total to the thickness draw {response['thickness_change']:.2f} "
              f"+- {response['thickness_change_se']:.2f}, to brain size {response['brain_scale']:.2f} "
              f"+- {response['brain_scale_se']:.2f} ({len(training)} training-seed subjects)")
        result["grids"][f"{size:g}mm"] = {"shape": list(spec.shape), "bias": bias.round(4).to_dict(orient="index"),
                                          "response": {k: round(v, 4) for k, v in response.items()}}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
