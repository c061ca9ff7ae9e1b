"""DVC stage: evaluate one trained model (evaluate@<model>) on the test split, the held-out anatomy and the extrapolation set."""

import argparse
from pathlib import Path

from gmvol.config import params_errors, parse, read_params, section
from gmvol.evaluation.run import EvaluateConfig, evaluate_model
from gmvol.layout import EXTRAPOLATION_BLOCK, HELDOUT_BLOCK

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True, help="held-out-anatomy subjects")
    parser.add_argument("--extrapolation", type=Path, required=True, help="size-extrapolation subjects")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with params_errors(args.params):
        cfg = parse(EvaluateConfig, section(read_params(args.params), "evaluate"), "evaluate")
    evaluate_model(args.model, args.train, args.test, args.out, cfg,
                   {HELDOUT_BLOCK: args.heldout, EXTRAPOLATION_BLOCK: args.extrapolation})
