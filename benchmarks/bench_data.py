"""Data-stage throughput, subjects per second: synthesize and preprocess, serial vs parallel.

Runs the real stage functions (`synthesize_cohort`, `ingest`, `build_cache`) on a small cohort
at the default study's settings (from params.yaml), once with 1 worker and once with --workers.
The parallel runs use spawned processes (fork after torch is unsafe), so their start-up cost is
included, as it is in `dvc repro`.

Usage: python benchmarks/bench_data.py --out FILE [--subjects 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from common import print_table, write_result

from gmvol.config import parse, read_params
from gmvol.data.ingest import IngestConfig, ingest
from gmvol.data.preprocess import PreprocessConfig, build_cache
from gmvol.synth.cohort import SynthConfig, synthesize_cohort


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="processes of the parallel runs")
    args = parser.parse_args(argv)
    params = read_params(args.params)
    synth = dataclasses.replace(parse(SynthConfig, params["synthesize"], "synthesize"), n_subjects=args.subjects)
    preprocess = parse(PreprocessConfig, params["preprocess"], "preprocess")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for workers in (1, args.workers):
            cohort = work / f"synthetic-{workers}"
            start = time.perf_counter()
            synthesize_cohort(dataclasses.replace(synth, workers=workers), cohort)
            rows.append({"stage": "synthesize", "workers": workers, "subjects": args.subjects,
                         "seconds": time.perf_counter() - start})
        subjects_csv = work / "subjects.csv"
        ingest(IngestConfig(subjects_dir=str(work / f"synthetic-{args.workers}")), subjects_csv,
               work / "excluded.csv")
        for workers in (1, args.workers):
            start = time.perf_counter()
            build_cache(subjects_csv, dataclasses.replace(preprocess, workers=workers), work / f"cache-{workers}")
            rows.append({"stage": "preprocess", "workers": workers, "subjects": args.subjects,
                         "seconds": time.perf_counter() - start})
    for row in rows:
        row["subjects_per_s"] = row["subjects"] / row["seconds"]
    print_table(rows, ["stage", "workers", "subjects", "seconds", "subjects_per_s"])
    write_result(args.out, {"synthesize": dataclasses.asdict(synth), "preprocess": preprocess.spec.to_dict(),
                            "results": rows})


if __name__ == "__main__":
    main()
