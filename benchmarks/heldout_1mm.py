"""`gmvol predict` on real-looking scans of an anatomy it never saw: 1 mm, with a head.

Renders subjects of the held-out seed (synthesize.heldout.seeds) on FreeSurfer's 1 mm 256^3 grid
with a skull, scalp, face and neck, a 1 mm acquisition and the training contrast, writes them as
orig.mgz the way a user's scans arrive, runs the `gmvol predict` command on them, and compares the
hemisphere totals with the truth (voxel counts of the rendered labels).

    python benchmarks/heldout_1mm.py --model data/models/meshnet_count --subjects 8 --seg

It also runs `gmvol predict --no-regrid` (every scan on the model's own grid, `gmvol.regrid`) and
reports its error and time. With --seg it runs `gmvol predict` once more writing label maps, and
reports what they cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import machine, write_result

from gmvol.config import parse, read_params, section
from gmvol.regions import HEMISPHERES, REGION_COLUMNS
from gmvol.synth.cohort import SynthConfig, subject_jobs, write_prepared_seeds
from gmvol.synth.subject import synthesize_subject


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, default=Path("data/models/meshnet_count"))
    parser.add_argument("--seg", action="store_true", help="also time `gmvol predict --seg` (a counting model)")
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--voxel-size", type=float, default=1.0, help="grid of the written scans (mm)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/heldout_1mm.json"))
    args = parser.parse_args(argv)
    cfg = parse(SynthConfig, section(read_params(args.params), "synthesize"), "synthesize")
    render = cfg.render
    cfg = dataclasses.replace(
        cfg, voxel_size=args.voxel_size, workers=1, head=dataclasses.replace(cfg.head, skull_strip_fraction=0.0),
        heldout=dataclasses.replace(cfg.heldout, n_subjects=args.subjects, gray=render.gray, white=render.white,
                                    csf=render.csf, resolution_mm=(1.0, 1.0), slice_mm=(1.0, 1.0)))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = write_prepared_seeds(cfg, work / "seeds", heldout=True)  # once, for every subject
        truth = pd.DataFrame([synthesize_subject(job) for job in subject_jobs(cfg, files, work, heldout=True)])
        scans = [str(work / s) for s in truth["subject"]]  # FreeSurfer subject dirs, as users pass them
        command = [sys.executable, "-m", "gmvol", "predict", *scans, "--model", str(args.model)]
        started = time.perf_counter()
        subprocess.run([*command, "--out", str(work / "volumes.csv")], check=True)
        wall = time.perf_counter() - started
        pred = pd.read_csv(work / "volumes.csv")
        started = time.perf_counter()  # every scan on the model's own grid (gmvol.regrid)
        subprocess.run([*command, "--out", str(work / "native.csv"), "--no-regrid"], check=True)
        native_wall = time.perf_counter() - started
        native = pd.read_csv(work / "native.csv").set_index("subject").loc[truth["subject"]]
        seg_wall = None
        if args.seg:
            started = time.perf_counter()
            subprocess.run([*command, "--out", str(work / "seg_volumes.csv"), "--seg", str(work / "seg")], check=True)
            seg_wall = time.perf_counter() - started
    pred = pred.set_index("subject").loc[truth["subject"]]
    rows = []
    for (_, t), (_, p), (_, n) in zip(truth.iterrows(), pred.iterrows(), native.iterrows()):
        for hemi in HEMISPHERES:
            cols = [c for c in REGION_COLUMNS if c.startswith(hemi)]
            true_total, pred_total = float(t[cols].sum()), float(p[cols].sum())
            rows.append({"subject": t["subject"], "hemisphere": hemi, "true_mm3": true_total,
                         "predicted_mm3": pred_total, "error": pred_total / true_total - 1.0,
                         "error_no_regrid": float(n[cols].sum()) / true_total - 1.0})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    result = {"machine": machine(), "model": str(args.model), "seed": list(cfg.heldout.seeds),
              "voxel_size_mm": args.voxel_size, "subjects": args.subjects,
              "hemisphere_error_abs_median": float(table["error"].abs().median()),
              "hemisphere_error_abs_max": float(table["error"].abs().max()),
              "hemisphere_error_abs_median_no_regrid": float(table["error_no_regrid"].abs().median()),
              "seconds_per_scan_end_to_end_cli": wall / args.subjects,
              "seconds_per_scan_end_to_end_cli_no_regrid": native_wall / args.subjects,
              "seconds_per_scan_end_to_end_cli_with_seg": None if seg_wall is None else seg_wall / args.subjects,
              "rows": rows}
    write_result(args.out, result)
    print(f"median |hemisphere error| {result['hemisphere_error_abs_median']:.1%}, "
          f"max {result['hemisphere_error_abs_max']:.1%}; {result['seconds_per_scan_end_to_end_cli']:.2f} s/scan; "
          f"with --no-regrid {result['hemisphere_error_abs_median_no_regrid']:.1%}, "
          f"{result['seconds_per_scan_end_to_end_cli_no_regrid']:.2f} s/scan"
          + (f", {seg_wall / args.subjects:.2f} s/scan with --seg" if seg_wall is not None else ""))


if __name__ == "__main__":
    main()
