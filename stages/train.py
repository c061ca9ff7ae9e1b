"""DVC stage: train one registered model (train@<model>) on the preprocessing cache."""

import argparse
from pathlib import Path

from gmvol.config import params_errors, read_params, section
from gmvol.models.card import data_source
from gmvol.training.config import training_configs
from gmvol.training.loop import train_model

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="a key of the params' `models` section")
    parser.add_argument("--train", type=Path, required=True, help="split/train.csv")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="model directory")
    parser.add_argument("--curves", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--synthetic-dir", required=True,
                        help="the synthesize stage's output: training on it makes a synthetic-only model card")
    args = parser.parse_args()
    with params_errors(args.params):
        params = read_params(args.params)
        model_cfg, cfg = training_configs(section(params, "train"), section(params, f"models.{args.model}"),
                                          args.model)
        synth = {"seed": section(params, "synthesize.seed"), "n_subjects": section(params, "synthesize.n_subjects"),
                 "voxel_size": section(params, "synthesize.voxel_size"), "seeds": section(params, "synthesize.seeds")}
        source = data_source(section(params, "ingest.subjects_dir"), args.synthetic_dir, synth)
    train_model(model_cfg, cfg, args.train, args.cache, args.out, args.curves, args.metrics, source)
