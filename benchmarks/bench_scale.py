"""Throughput of `gmvol predict` on 1 mm scans: plain, `--dask local:1` and `--dask local:2`.

Each configuration runs the real command in a fresh process, twice: on 1 scan and on N scans;
(wall(N) - wall(1)) / (N - 1) is the time per scan without the fixed start-up (interpreter,
model, cluster), which is reported on its own. Overhead per scan: Dask's time per scan minus the
plain run's; efficiency: the throughput of local:2 over twice that of local:1. The model is the
default study's MeshNet (5 mm grid) with random weights and a QC reference, so every scan also
runs its QC mirror pass, as `gmvol predict` does. Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_predict import default_grid, make_inputs, save_random_model
from common import write_result

from gmvol.data.preprocess import preprocess_image
from gmvol.io import load_t1, write_json
from gmvol.predict import Predictor
from gmvol.qc import QC_FILE, build_reference

CONFIGS = {"plain": [], "dask local:1": ["--dask", "local:1"], "dask local:2": ["--dask", "local:2"]}


def make_scans(work: Path, n: int) -> list[Path]:
    """N copies of one synthetic 1 mm orig.mgz (256^3), each its own file and id."""
    orig = make_inputs(work)["orig.mgz"]
    scans = []
    for i in range(n):
        scans.append(work / "scans" / f"scan{i:03d}.mgz")
        scans[-1].parent.mkdir(exist_ok=True)
        shutil.copyfile(orig, scans[-1])
    return scans


def add_qc_reference(model_dir: Path, scan: Path) -> None:
    """A qc.json from one scan, so that predict runs the QC mirror pass as for a trained model."""
    predictor = Predictor(model_dir, device="cpu")
    image = preprocess_image(load_t1(scan), predictor.spec)
    ref = build_reference([image], [6.8e5, 7.2e5], predictor.spec, predictor.predict_array)
    write_json(ref.to_dict(), model_dir / QC_FILE)


def wall(scans: list[Path], model: Path, out: Path, extra: list[str]) -> float:
    """Seconds of one `gmvol predict` process (no ledger reuse: a fresh --out each time)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gmvol", "predict", *map(str, scans), "--model", str(model),
                    "--out", str(out), "--device", "cpu", *extra], check=True, capture_output=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_cpu.json"))
    parser.add_argument("--scans", type=int, default=16)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scans = make_scans(work, args.scans)
        model_dict, spec = default_grid(args.params)
        model = save_random_model(work / "model", model_dict, spec)
        add_qc_reference(model, scans[0])
        rows = []
        for i, (name, extra) in enumerate(CONFIGS.items()):
            one = wall(scans[:1], model, work / f"one{i}.csv", extra)
            many = wall(scans, model, work / f"many{i}.csv", extra)
            per_scan = (many - one) / (len(scans) - 1)
            rows.append({"config": name, "startup_s": one - per_scan, "wall_s": many,
                         "s_per_scan": per_scan, "scans_per_s": 1 / per_scan})
    plain, one_worker, two_workers = rows
    for row in rows:
        row["overhead_s_per_scan"] = row["s_per_scan"] - plain["s_per_scan"]
    two_workers["efficiency_vs_local1"] = two_workers["scans_per_s"] / (2 * one_worker["scans_per_s"])
    two_workers["speedup_vs_plain"] = two_workers["scans_per_s"] / plain["scans_per_s"]
    write_result(args.out, {"n_scans": args.scans, "input": "1 mm synthetic orig.mgz, 256^3",
                            "model": "default MeshNet, 5 mm grid, random weights, with qc.json", "rows": rows})
    print(f"{'config':14} {'startup s':>9} {'s/scan':>7} {'scans/s':>8} {'overhead s/scan':>15}")
    for row in rows:
        print(f"{row['config']:14} {row['startup_s']:9.2f} {row['s_per_scan']:7.3f} {row['scans_per_s']:8.2f} "
              f"{row['overhead_s_per_scan']:15.3f}")
    print(f"local:2 efficiency vs local:1: {two_workers['efficiency_vs_local1']:.2f}; "
          f"speedup vs plain: {two_workers['speedup_vs_plain']:.2f}")


if __name__ == "__main__":
    main()
