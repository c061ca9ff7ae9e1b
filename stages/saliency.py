"""DVC stage: Captum saliency for the 68 regions of one model (saliency@<model>)."""

import argparse
from pathlib import Path

from gmvol.config import params_errors, parse, read_params, section
from gmvol.saliency.stage import SaliencyConfig, saliency_for_model

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, required=True, help="model directory")
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--regions", type=Path, required=True, help="evaluate's regions.csv")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with params_errors(args.params):
        cfg = parse(SaliencyConfig, section(read_params(args.params), "saliency"), "saliency")
    saliency_for_model(args.model, args.test, args.regions, args.out, cfg)
