"""DVC stage: build the preprocessing cache (one .npz per subject + spec.json)."""

import argparse
import sys
from pathlib import Path

from gmvol.config import params_errors, parse, read_params, section
from gmvol.data.preprocess import PreprocessConfig, build_cache
from gmvol.io import InputError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--subjects", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with params_errors(args.params):
        cfg = parse(PreprocessConfig, section(read_params(args.params), "preprocess"), "preprocess")
    try:
        build_cache(args.subjects, cfg, args.out)
    except InputError as exc:
        sys.exit(f"preprocess: {exc}")
