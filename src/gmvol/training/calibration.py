"""After training a counting model: fit how far to trust its regional shares (`gmvol.composition`)
on the validation subjects, which the fit never trained on, and store the weight and the training
mean shares in the model's state_dict (`CountingHead.set_composition`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gmvol.composition import compose_shares, fit_composition_weight, hemisphere_shares
from gmvol.data.dataset import volumes_of
from gmvol.data.preprocess import load_cached_image
from gmvol.data.split import fit_subjects, fold_rows
from gmvol.models.checkpoint import load_model, save_model
from gmvol.models.config import model_config_from_dict
from gmvol.predict import Predictor
from gmvol.training.counting import counting_head


def normalized_loss(predicted: np.ndarray, true: np.ndarray) -> float:
    return float(((predicted - true) ** 2).mean() / (true**2).mean())


def calibrate_composition(model_dir: Path, table: pd.DataFrame, cache_dir: Path, device: str = "auto") -> dict[str, Any]:
    """Fit the saved counting model's composition weight on the validation rows of `table` (the
    training rows when there are none), predicted as `gmvol predict` would, and save it back into
    `model_dir`; returns the weight and the validation normalized loss before and after."""
    valid = fold_rows(table, "valid")
    rows = valid if not valid.empty else fit_subjects(table)
    prior = hemisphere_shares(volumes_of(fit_subjects(table))).mean(axis=0)
    predictor = Predictor(model_dir, device=device, regrid=False, composition=False)
    predicted = np.stack([predictor.predict_array(load_cached_image(cache_dir, s)) for s in rows["subject"]])
    true = volumes_of(rows)
    weight = fit_composition_weight(predicted, true, prior)
    model, document = load_model(model_dir)
    head = counting_head(model)
    if head is None:
        raise ValueError(f"{model_dir}: only a counting model has a composition to calibrate")
    head.set_composition(prior, weight)
    result = {"composition_weight": weight, "composition_subjects": len(rows),
              "valid_normalized_loss_counted": normalized_loss(predicted, true),
              "valid_normalized_loss_composed": normalized_loss(compose_shares(predicted, prior, weight), true)}
    metadata = {k: v for k, v in document.items() if k not in ("format_version", "model")}
    save_model(model_dir, model, model_config_from_dict(document["model"]), {**metadata, "composition": result})
    return result
