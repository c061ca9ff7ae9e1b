"""DVC stage: the study's one-page HTML report, built only from eval and saliency outputs."""

import argparse
from pathlib import Path

from gmvol.config import read_yaml
from gmvol.report import build_report

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--saliency", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    models = list(read_yaml(args.params)["train"]["models"])
    build_report(models, args.eval, args.saliency, Path(args.params), args.out)
