"""The model card (`card.json` in every model directory): where the training data came from,
the range of training totals, validation metrics, where the test metrics are, intended use.

Written by training, so it holds no test metrics (evaluate runs later and must not write into
the model directory, a DVC output of train): it points to data/eval/<model>/. It holds no clock
values, so model directories stay byte-reproducible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gmvol.config import jsonable
from gmvol.io import write_json

CARD_FILE = "card.json"
INTENDED_USE = ("Research: regress the 68 Desikan-Killiany cortical gray-matter volumes (mm^3, FreeSurfer "
                "aparc GrayVol) from adult T1-weighted MRI. Not for clinical use. Check qc_pass before using "
                "a row.")


@dataclass(frozen=True)
class DataSource:
    """Where the training subjects came from: `synthetic` (the cohort made by the synthesize
    stage, with its seed) or `real` (FreeSurfer/HCP subjects under `subjects_dir`)."""

    kind: Literal["synthetic", "real"] = "real"
    subjects_dir: str = ""
    synth_seed: int = 0
    synth_subjects: int = 0
    synth_voxel_size: float = 0.0
    synth_seeds: tuple[str, ...] = ()


def data_source(subjects_dir: str, synthetic_dir: str, synthesize: dict[str, Any]) -> DataSource:
    """`synthetic` when ingest reads the synthesize stage's output directory (its seed, size and
    voxel size from the `synthesize` params), else `real`."""
    if Path(subjects_dir) != Path(synthetic_dir):
        return DataSource("real", subjects_dir)
    return DataSource("synthetic", subjects_dir, int(synthesize["seed"]), int(synthesize["n_subjects"]),
                      float(synthesize["voxel_size"]), tuple(str(s) for s in synthesize["seeds"]))


def card_document(name: str, source: DataSource, totals: list[float], n_fit: int, n_valid: int,
                  validation: dict[str, Any]) -> dict[str, Any]:
    """The card as JSON-ready data."""
    data: dict[str, Any] = {"source": source.kind, "subjects_dir": source.subjects_dir,
                            "n_train_fit": n_fit, "n_validation": n_valid}
    if source.kind == "synthetic":
        data["synthetic_cohort"] = {"seed": source.synth_seed, "n_subjects": source.synth_subjects,
                                    "voxel_size_mm": source.synth_voxel_size,
                                    "anatomy_seeds": list(source.synth_seeds)}
        data["note"] = ("trained only on synthetic scans rendered from the labels of "
                        f"{len(source.synth_seeds)} real anatomies (MNI152 2009 and AHBA donors); volumes "
                        "on real scans are not validated against FreeSurfer")
    return {
        "model": name,
        "training_data": data,
        "training_totals_mm3": {"min": round(min(totals), 2), "max": round(max(totals), 2),
                                "mean": round(sum(totals) / len(totals), 2)},
        "validation": jsonable(validation),
        "test_metrics": f"data/eval/{name}/metrics.json and scores.json (written by evaluate@{name})",
        "intended_use": INTENDED_USE,
    }


def write_card(out_dir: Path, document: dict[str, Any]) -> None:
    write_json(document, Path(out_dir) / CARD_FILE)


def read_card(model_dir: Path) -> dict[str, Any] | None:
    """The model's card, or None when it has none (or an unreadable one: the card informs, it
    never stops a prediction)."""
    try:
        card = json.loads((Path(model_dir) / CARD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def synthetic_notice(model_dir: Path) -> str | None:
    """The one-line notice for a model trained only on the synthetic cohort, else None."""
    card = read_card(model_dir)
    data = card.get("training_data") if card else None
    if not isinstance(data, dict) or data.get("source") != "synthetic":
        return None
    seed = (data.get("synthetic_cohort") or {}).get("seed", "?")
    return (f"note: {Path(model_dir).name} was trained only on the synthetic cohort (seed {seed}); "
            "its volumes on real scans are not validated against FreeSurfer")
