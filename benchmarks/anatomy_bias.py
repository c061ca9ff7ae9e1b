"""Where a model's hemisphere-total error comes from: the anatomy seed, its cortical thickness, or
the held-out set's contrast.

Per anatomy seed it gives the model's signed median hemisphere-total error (test split, and the
held-out seed from its own set) next to the seed's mean cortical thickness, read off its subjects'
label maps as cortex volume / white surface area (the generator's own measure of both). A
model that counts what it sees has no bias by seed; one that gives every brain the training cortex misses thick-cortex
seeds low and thin ones high.

With --decompose N it also renders N subjects of the held-out seed with the training contrast and
resolution, and N of the training seeds with the held-out contrast and resolution (new draws of
each: `synthesize.seed` + 1), runs `gmvol predict` on both and reports their errors: it separates
the held-out set's two novelties, the anatomy and the acquisition.

    python benchmarks/anatomy_bias.py --model meshnet_count --decompose 24
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from common import write_result

from gmvol.config import parse, read_params, section
from gmvol.evaluation.metrics import hemisphere_ratios
from gmvol.regions import HEMISPHERES
from gmvol.synth.cohort import SynthConfig, subject_jobs, write_prepared_seeds
from gmvol.synth.subject import synthesize_subject
from gmvol.synth.thickness import boundary_maps


def signed_hemisphere_errors(true: pd.DataFrame, pred: pd.DataFrame) -> pd.DataFrame:
    """(subjects x hemispheres) predicted total / true total - 1, on the subjects `pred` holds."""
    true = true.loc[pred.index]
    return pd.DataFrame(hemisphere_ratios(true, pred) - 1.0, index=pred.index, columns=list(HEMISPHERES))


def cortical_thickness_mm(labels_path: Path) -> float:
    """Mean DK cortex thickness of one label map: its volume over its white surface area, as the
    generator measures both (`gmvol.synth.thickness.boundary_maps`, in voxels of this map)."""
    img = nib.load(labels_path)
    maps = boundary_maps(np.asarray(img.dataobj))
    voxel_mm = float(np.cbrt(abs(np.linalg.det(img.affine[:3, :3]))))
    return len(maps.gm_index) * voxel_mm / max(float(maps.area_mm2.sum()), 1.0)


def summarize(errors: pd.DataFrame) -> dict[str, float]:
    """Subjects, signed median error per hemisphere and over both, and the |error| median."""
    both = errors.to_numpy().ravel()
    return {"subjects": len(errors), "bias_lh": float(errors["lh"].median()), "bias_rh": float(errors["rh"].median()),
            "bias": float(np.median(both)), "abs_error_median": float(np.median(np.abs(both)))}


def seed_table(cohorts: list[pd.DataFrame], errors: pd.DataFrame, per_seed: int) -> pd.DataFrame:
    """Per seed: subjects scored, signed median error (lh, rh, both), |error| median, thickness."""
    cohort = pd.concat(cohorts).set_index("subject")
    seeds = cohort.loc[errors.index, "seed"].astype(str)
    rows = []
    for seed, group in errors.groupby(seeds):
        members = cohort.index[cohort["seed"].astype(str) == seed][:per_seed]
        thickness = [cortical_thickness_mm(Path(cohort.at[s, "labels"])) for s in members]
        rows.append({"seed": seed, **summarize(group), "thickness_mm": float(np.mean(thickness))})
    return pd.DataFrame(rows)


def with_labels(cohort: pd.DataFrame, set_dir: Path) -> pd.DataFrame:
    return cohort.assign(labels=[str(set_dir / s / "mri" / "aparc+aseg.mgz") for s in cohort["subject"]])


def predicted_errors(model_dir: Path, truth: pd.DataFrame, work: Path) -> pd.DataFrame:
    """`gmvol predict` on the rendered subjects under `work`; their signed hemisphere errors."""
    out = work / "volumes.csv"
    subprocess.run([sys.executable, "-m", "gmvol", "predict", *[str(work / s) for s in truth["subject"]],
                    "--model", str(model_dir), "--out", str(out)], check=True)
    return signed_hemisphere_errors(truth.set_index("subject"), pd.read_csv(out).set_index("subject"))


def decompose(cfg: SynthConfig, model_dir: Path, n: int) -> dict[str, dict[str, float]]:
    """Errors on the held-out seed with the training acquisition, and on the training seeds with
    the held-out acquisition."""
    render, held = cfg.render, cfg.heldout
    fresh = dataclasses.replace(cfg, seed=cfg.seed + 1, workers=1)
    donor = dataclasses.replace(fresh, heldout=dataclasses.replace(
        held, n_subjects=n, gray=render.gray, white=render.white, csf=render.csf,
        resolution_mm=render.resolution_mm, slice_mm=render.slice_mm))
    acquisition = dataclasses.replace(fresh, n_subjects=n, render=cfg.heldout_render)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_prepared_seeds(fresh, Path(tmp) / "seeds", heldout=True)
        for name, set_cfg, heldout in (("heldout_anatomy_training_acquisition", donor, True),
                                       ("training_anatomy_heldout_acquisition", acquisition, False)):
            work = Path(tmp) / name
            truth = pd.DataFrame([synthesize_subject(job) for job in subject_jobs(set_cfg, files, work, heldout)])
            result[name] = summarize(predicted_errors(model_dir, truth, work))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="meshnet_count", help="a model name of the default study")
    parser.add_argument("--thickness-subjects", type=int, default=4, help="label maps read per seed")
    parser.add_argument("--decompose", type=int, default=0, metavar="N", help="render and predict 2 x N subjects")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/anatomy_bias.json"))
    args = parser.parse_args(argv)
    cfg = parse(SynthConfig, section(read_params(args.params), "synthesize"), "synthesize")
    eval_dir, test = Path("data/eval") / args.model, pd.read_csv("data/split/test.csv").set_index("subject")
    held_dir = Path("data/heldout_anatomy")
    held = pd.read_csv(held_dir / "cohort.csv")
    errors = pd.concat([
        signed_hemisphere_errors(test, pd.read_csv(eval_dir / "predictions.csv").set_index("subject")),
        signed_hemisphere_errors(held.set_index("subject"),
                                 pd.read_csv(eval_dir / "heldout_predictions.csv").set_index("subject"))])
    cohorts = [with_labels(pd.read_csv("data/synthetic/cohort.csv"), Path("data/synthetic")), with_labels(held, held_dir)]
    table = seed_table(cohorts, errors, args.thickness_subjects)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    training = table[table["seed"].isin(cfg.seeds)]
    result = {"model": args.model, "seeds": table.to_dict(orient="records"),
              "thickness_bias_correlation_training_seeds": float(np.corrcoef(training["thickness_mm"], training["bias"])[0, 1]),
              "thickness_bias_correlation_all_seeds": float(np.corrcoef(table["thickness_mm"], table["bias"])[0, 1])}
    print(f"correlation of seed thickness and seed bias: {result['thickness_bias_correlation_training_seeds']:.2f} "
          f"(training seeds), {result['thickness_bias_correlation_all_seeds']:.2f} (with the held-out seed)")
    if args.decompose:
        result["decomposition"] = decompose(cfg, Path("data/models") / args.model, args.decompose)
        for name, scores in result["decomposition"].items():
            print(f"{name}: |error| median {scores['abs_error_median']:.1%}, "
                  f"bias lh {scores['bias_lh']:+.1%} rh {scores['bias_rh']:+.1%}")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
