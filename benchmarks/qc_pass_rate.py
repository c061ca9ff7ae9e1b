"""QC pass rate on default-study-like test scans, without the full default study: a small
cohort made with the default `synthesize` settings (2 mm, another seed), preprocessed on the
default grid, MeshNet trained with the default settings for fewer epochs, then `gmvol predict`
on the held-out subjects. Prints the share with qc_pass and writes JSON."""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
from common import write_result

from gmvol.cli import main as gmvol
from gmvol.config import parse, read_params, section
from gmvol.data.ingest import IngestConfig, ingest
from gmvol.data.preprocess import PreprocessConfig, build_cache
from gmvol.data.split import SplitConfig, write_split
from gmvol.models.card import data_source
from gmvol.qc import SCORES, read_reference
from gmvol.synth.cohort import SynthConfig, synthesize_cohort
from gmvol.training.config import training_configs
from gmvol.training.loop import train_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/qc_pass_rate.json"))
    args = parser.parse_args(argv)
    params = read_params(args.params)
    synth = replace(parse(SynthConfig, section(params, "synthesize"), "synthesize"),
                    n_subjects=args.subjects, seed=11)
    pre = parse(PreprocessConfig, section(params, "preprocess"), "preprocess")
    model_cfg, cfg = training_configs(section(params, "train"), section(params, "models.meshnet"), "meshnet")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize_cohort(synth, root / "synthetic")
        ingest(IngestConfig(subjects_dir=str(root / "synthetic")), root / "subjects.csv", root / "excluded.csv")
        write_split(root / "subjects.csv", root / "split", parse(SplitConfig, section(params, "split"), "split"))
        build_cache(root / "subjects.csv", pre, root / "cache")
        source = data_source(str(root / "synthetic"), str(root / "synthetic"),
                             {"seed": synth.seed, "n_subjects": synth.n_subjects, "voxel_size": synth.voxel_size,
                              "seeds": list(synth.seeds)})
        train_model(model_cfg, replace(cfg, epochs=args.epochs), root / "split" / "train.csv", root / "cache",
                    root / "meshnet", root / "curves.csv", root / "metrics.json", source)
        test = pd.read_csv(root / "split" / "test.csv")
        subjects = [str(Path(t1).parents[1]) for t1 in test["t1"]]
        gmvol(["predict", *subjects, "--model", str(root / "meshnet"), "--out", str(root / "v.csv")])
        table = pd.read_csv(root / "v.csv")
        bounds = read_reference(root / "meshnet").bounds
    result = {"n_subjects": args.subjects, "epochs": args.epochs, "n_test": len(table),
              "pass_rate": float(table["qc_pass"].mean()),
              "bounds": bounds,
              "scores": {s: {"min": float(table[s].min()), "max": float(table[s].max())} for s in SCORES},
              "failed": table.loc[~table["qc_pass"], ["subject", *SCORES]].to_dict("records")}
    write_result(args.out, result)
    print(f"qc_pass on {len(table)} default-study-like test scans: {result['pass_rate']:.1%}")


if __name__ == "__main__":
    main()
