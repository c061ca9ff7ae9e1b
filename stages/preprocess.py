"""DVC stage: build the preprocessing cache (one .npz per subject + spec.json)."""

import argparse
import sys
from pathlib import Path

from gmvol.config import read_yaml
from gmvol.data.preprocess import PreprocessSpec, build_cache
from gmvol.io import InputError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--subjects", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    section = dict(read_yaml(args.params)["preprocess"])
    workers = int(section.pop("workers", 0))
    try:
        build_cache(args.subjects, PreprocessSpec.from_dict(section), args.out, workers)
    except InputError as exc:
        sys.exit(f"preprocess: {exc}")
