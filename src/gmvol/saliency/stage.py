"""The saliency stage: Captum maps for the 68 regions on test subjects, with the model's own
preprocessing, and the focus shares that turn the paper's qualitative reading into numbers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gmvol.data.preprocess import PreprocessSpec, preprocess_image, preprocess_labels
from gmvol.io import load_volume, write_csv, write_json
from gmvol.layout import SaliencyFiles
from gmvol.models.checkpoint import load_model
from gmvol.saliency.focus import focus_summary
from gmvol.saliency.maps import Method
from gmvol.saliency.subject import saliency_for_subject


@dataclass(frozen=True)
class SaliencyConfig:
    """The `saliency` params section (defaults equal it)."""

    method: Method = "saliency"
    n_subjects: int = 2            # test subjects; the summary's figures are medians over them
    batch_size: int = 8
    ig_steps: int = 16
    dilate_mm: float = 3.0
    device: str = "cpu"


def saliency_for_model(model_dir: Path, test_csv: Path, regions_csv: Path, out_dir: Path,
                       cfg: SaliencyConfig) -> dict[str, float]:
    """Panels and focus.csv of the first test subject in `out_dir` (further subjects in
    `out_dir/<subject>/`), focus_all.csv over all of them, and metrics.json with the medians."""
    model, metadata = load_model(model_dir)
    spec = PreprocessSpec.from_dict(metadata["preprocess"])
    regions = pd.read_csv(regions_csv)
    test = pd.read_csv(test_csv, keep_default_na=False).head(cfg.n_subjects)
    frames, summaries = [], []
    for i, row in enumerate(test.itertuples()):
        if not row.labels:
            raise ValueError(f"{row.subject}: saliency focus needs its aparc+aseg label map")
        image = preprocess_image(load_volume(row.t1), spec)
        labels = preprocess_labels(load_volume(row.labels, dtype=np.int32), spec)
        target = out_dir if i == 0 else out_dir / row.subject
        summary = saliency_for_subject(model, image, labels, regions, target, cfg.method,
                               batch_size=cfg.batch_size, ig_steps=cfg.ig_steps, device=cfg.device,
                               dilate_mm=cfg.dilate_mm, voxel_size_mm=(spec.voxel_size,) * 3)
        summaries.append(summary)
        frames.append(pd.read_csv(SaliencyFiles(target).focus).assign(subject=row.subject))
    focus = pd.concat(frames, ignore_index=True)
    write_csv(focus, SaliencyFiles(out_dir).focus_all)
    # None, not NaN, where a model has no saliency at all (a constant output): JSON has no NaN
    medians = {k: None if np.isnan(v) else round(float(v), 4) for k, v in focus_summary(focus).items()}
    metrics = {
        **medians,
        "method": cfg.method, "n_subjects": len(test),
        **{k: summaries[0][k] for k in ("best_region", "median_region", "worst_region") if k in summaries[0]},
    }
    write_json(metrics, SaliencyFiles(out_dir).summary)
    print(f"saliency {Path(model_dir).name} ({len(test)} subjects): median share of saliency in the region "
          f"{metrics['focus_in_region_median']} (lift over chance {metrics['focus_lift_median']}), in the brain "
          f"{metrics['focus_in_brain_median']}, outside the brain {metrics['focus_outside_brain_median']}")
    return metrics

