"""DVC stage: write the synthetic cohort in FreeSurfer's layout."""

import argparse
from pathlib import Path

import torch

from gmvol.config import from_mapping, read_yaml
from gmvol.io import write_json
from gmvol.synth.cohort import SynthConfig, synthesize_cohort
from gmvol.synth.variation import cohort_variation

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stats", type=Path, required=True, help="cohort variation metrics (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread per worker process; the pool uses every core
    cfg = from_mapping(SynthConfig, read_yaml(args.params)["synthesize"], "synthesize")
    stats = cohort_variation(synthesize_cohort(cfg, args.out))
    write_json(stats, args.stats)
    print("cohort: regional CV min/median/max {cv_min:.3f}/{cv_median:.3f}/{cv_max:.3f}; "
          "total-GM scaling explains a median {total_scaling_r2_median:.2f} of regional variance".format(**stats))
