"""DVC stage: write the synthetic cohort and the held-out-anatomy set in FreeSurfer's layout,
the cohort's variation figures and a montage of its subjects."""

import argparse
from pathlib import Path

from gmvol.config import params_errors, parse, read_params, section
from gmvol.synth.cohort import SynthConfig, synthesize_study

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True, help="held-out-anatomy subjects")
    parser.add_argument("--stats", type=Path, required=True, help="cohort variation metrics (JSON)")
    parser.add_argument("--montage", type=Path, required=True, help="one subject per seed (PNG)")
    parser.add_argument("--seeds", type=Path, required=True, help="the prepared training anatomy seeds")
    args = parser.parse_args()
    with params_errors(args.params):
        cfg = parse(SynthConfig, section(read_params(args.params), "synthesize"), "synthesize")
    synthesize_study(cfg, args.out, args.stats, args.heldout, args.montage, args.seeds)
