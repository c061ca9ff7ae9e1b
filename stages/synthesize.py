"""DVC stage: write the synthetic cohort in FreeSurfer's layout, and its variation figures."""

import argparse
from pathlib import Path

from gmvol.config import params_errors, parse, read_params, section
from gmvol.synth.cohort import SynthConfig, synthesize_study

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stats", type=Path, required=True, help="cohort variation metrics (JSON)")
    args = parser.parse_args()
    with params_errors(args.params):
        cfg = parse(SynthConfig, section(read_params(args.params), "synthesize"), "synthesize")
    synthesize_study(cfg, args.out, args.stats)
