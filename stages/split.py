"""DVC stage: deterministic 80/20 train/test split (validation subjects marked inside train)."""

import argparse
from pathlib import Path

from gmvol.config import params_errors, parse, read_params, section
from gmvol.data.split import SplitConfig, write_split

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--subjects", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with params_errors(args.params):
        cfg = parse(SplitConfig, section(read_params(args.params), "split"), "split")
    write_split(args.subjects, args.out, cfg)
