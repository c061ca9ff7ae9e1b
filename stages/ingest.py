"""DVC stage: read a FreeSurfer/HCP subjects directory into subjects.csv (+ excluded.csv)."""

import argparse
import sys
from pathlib import Path

from gmvol.config import params_errors, parse, read_params, section
from gmvol.data.ingest import IngestConfig, ingest
from gmvol.io import InputError

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--subjects", type=Path, required=True)
    parser.add_argument("--excluded", type=Path, required=True)
    args = parser.parse_args()
    with params_errors(args.params):
        cfg = parse(IngestConfig, section(read_params(args.params), "ingest"), "ingest")
    try:
        ingest(cfg, args.subjects, args.excluded)
    except InputError as exc:
        sys.exit(f"ingest: {exc}")
