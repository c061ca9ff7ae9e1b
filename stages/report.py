"""DVC stage: the study's one-page HTML report, built only from eval and saliency outputs."""

import argparse
from pathlib import Path

from gmvol.config import params_errors, parse, read_params, section
from gmvol.report import build_report
from gmvol.study import StudyConfig

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--saliency", type=Path, required=True)
    parser.add_argument("--cohort-stats", type=Path, help="the synthesize stage's cohort_stats.json")
    parser.add_argument("--montage", type=Path, help="the synthesize stage's cohort montage")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with params_errors(args.params):
        params = read_params(args.params)  # the report shows all of them: the stage depends on all
        study = parse(StudyConfig, section(params, "study"), "study")
    build_report(list(study.models), args.eval, args.saliency, params, str(args.params), args.out,
                 args.cohort_stats, args.montage)
