"""DVC stage: the mean-predictor and total-scaling baselines' rows, once for the study."""

import argparse
from pathlib import Path

from gmvol.evaluation.baseline_scores import score_baselines

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="data/eval: one folder per baseline")
    args = parser.parse_args()
    score_baselines(args.train, args.test, args.out)
