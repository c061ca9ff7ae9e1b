"""DVC stage: write the size-extrapolation set, brains smaller and larger than any training subject."""

import argparse
from pathlib import Path

from gmvol.config import params_errors, parse, read_params, section
from gmvol.synth.cohort import SynthConfig
from gmvol.synth.extrapolation import ExtrapolationConfig, synthesize_extrapolation

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", type=Path, required=True, help="train.csv: the range to lie outside")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=Path, required=True, help="the training anatomy seeds synthesize prepared")
    args = parser.parse_args()
    with params_errors(args.params):
        params = read_params(args.params)
        cfg = parse(SynthConfig, section(params, "synthesize"), "synthesize")
        ext = parse(ExtrapolationConfig, section(params, "extrapolation"), "extrapolation")
    synthesize_extrapolation(cfg, ext, args.train, args.out, args.seeds)
