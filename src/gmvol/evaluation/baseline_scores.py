"""The score_baselines stage: the reference predictors' own rows of `dvc metrics show`.

The mean predictor and the total-scaling oracle need no model, so they are scored once for the
study, on the same split as every model, instead of once per model.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gmvol.data.split import fit_subjects
from gmvol.evaluation.baselines import mean_predictor, total_scaling
from gmvol.evaluation.metrics import summary
from gmvol.evaluation.tables import headline
from gmvol.io import write_json
from gmvol.layout import EvalFiles
from gmvol.regions import REGION_COLUMNS


def split_volumes(train_csv: Path, test_csv: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fitted training subjects, test truth) as volume tables indexed by subject."""
    train, test = pd.read_csv(train_csv), pd.read_csv(test_csv)
    return fit_subjects(train)[list(REGION_COLUMNS)], test.set_index("subject")[list(REGION_COLUMNS)]


def score_baselines(train_csv: Path, test_csv: Path, out_dir: Path) -> dict[str, dict]:
    """The score_baselines stage: `out_dir/<baseline>/metrics.json` (the headline, as for the
    models) and `scores.json` (the full summary) for mean_predictor and total_scaling, once for
    the study, so that `dvc metrics show` has one row per predictor."""
    fit, true = split_volumes(train_csv, test_csv)
    scores = {}
    for name, values in (("mean_predictor", mean_predictor(fit, true.index)),
                         ("total_scaling", total_scaling(fit, true))):
        scores[name] = summary(true, values)
        files = EvalFiles(Path(out_dir) / name)
        write_json(scores[name], files.scores)
        write_json(headline(scores[name]), files.metrics)
    return scores
