"""Per-scan QC and the model card, on a tiny model trained on the tiny study: in-distribution
test scans pass, a skull-stripped, a cut and a contrast-inverted copy of one fail; the card says
where the data came from; models without qc.json still get qc_fov and qc_pass."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from test_predict import predict, read_table

from gmvol.data.dataset import AugmentConfig
from gmvol.models import model_config_from_dict
from gmvol.models.card import CARD_FILE, data_source, synthetic_notice
from gmvol.predict import TABLE_COLUMNS
from gmvol.qc import QC_FILE, SCORES, read_reference
from gmvol.regions import REGION_COLUMNS
from gmvol.training.config import TrainConfig
from gmvol.training.loop import train_model

MESHNET = {"name": "meshnet", "meshnet": {"channels": 4, "dilations": [1, 2, 1]}}


@pytest.fixture(scope="module")
def trained(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(epochs=2, batch_size=2, lr=0.01, scheduler="constant", seed=1,
                      augment=AugmentConfig(flip=False, shift_voxels=0, intensity=0.0))
    source = data_source("data/synthetic", "data/synthetic",
                         {"seed": 3, "n_subjects": 6, "voxel_size": 4.0, "seeds": ["mni152", "9861"]})
    train_model(model_config_from_dict(MESHNET), cfg, tiny_study / "split" / "train.csv", tiny_study / "cache",
                out / "meshnet", out / "curves.csv", out / "metrics.json", source)
    return out / "meshnet"


def test_the_card_says_where_the_training_data_came_from(trained: Path, tiny_study: Path) -> None:
    card = json.loads((trained / CARD_FILE).read_text())
    assert card["training_data"]["source"] == "synthetic"
    assert card["training_data"]["synthetic_cohort"] == {"seed": 3, "n_subjects": 6, "voxel_size_mm": 4.0,
                                                               "anatomy_seeds": ["mni152", "9861"]}
    train = pd.read_csv(tiny_study / "split" / "train.csv")
    totals = train.loc[train["fold"] != "valid", list(REGION_COLUMNS)].sum(axis=1)
    assert card["training_totals_mm3"]["min"] == pytest.approx(totals.min(), abs=0.01)
    assert card["training_totals_mm3"]["max"] == pytest.approx(totals.max(), abs=0.01)
    assert card["validation"]["valid_loss"] > 0 and "data/eval/meshnet" in card["test_metrics"]
    assert not any("second" in key or "time" in key for key in json.dumps(card).split('"'))
    assert "not validated against FreeSurfer" in synthetic_notice(trained)
    real = data_source("/data/fs", "data/synthetic", {"seed": 0, "n_subjects": 1, "voxel_size": 2.0})
    assert real.kind == "real"


def _variants(t1: Path, labels: Path, out: Path) -> dict[str, Path]:
    """Out-of-distribution copies of one test scan."""
    img = nib.load(t1)
    data = np.asarray(img.dataobj, dtype=np.float32)
    brain = np.asarray(nib.load(labels).dataobj) > 0
    first, last = data.shape[2] // 4, 3 * data.shape[2] // 4  # a slab: the middle half of one axis
    variants = {"stripped": np.where(brain, data, 0), "inverted": np.where(data > 0.05 * data.max(),
                                                                         data.max() - data, 0),
                "slab": data[:, :, first:last]}
    paths = {}
    for name, values in variants.items():
        affine = img.affine.copy()
        if name == "slab":
            affine[:3, 3] = img.affine[:3, :3] @ [0, 0, first] + img.affine[:3, 3]
        paths[name] = out / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(values.astype(np.float32), affine), paths[name])
    return paths


def test_qc_passes_test_scans_and_flags_unlike_ones(trained: Path, tiny_study: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    ref = read_reference(trained)
    assert ref is not None and ref.n_scans == 4 and set(ref.bounds) == {"qc_edge", "qc_hist", "qc_flip"}
    test = pd.read_csv(tiny_study / "split" / "test.csv")
    variants = _variants(Path(test["t1"][0]), Path(test["labels"][0]), tmp_path)
    subjects = [str(Path(t1).parents[1]) for t1 in test["t1"]]  # FreeSurfer dirs: ids sub-XXXX
    status, out, err = predict(capsys, trained, *subjects, *map(str, variants.values()))
    assert status == 0, err
    table = read_table(out).set_index("subject")
    assert list(table.reset_index().columns) == list(TABLE_COLUMNS)
    assert table[list(SCORES)].notna().all().all()
    assert table.loc[test["subject"], "qc_pass"].all(), (table[list(SCORES)].to_string(), ref.bounds)
    assert not table.loc[list(variants), "qc_pass"].any(), table[list(SCORES)]
    assert table.loc["slab", "qc_fov"] < 0.9
    assert table.loc["inverted", "qc_hist"] > ref.bounds["qc_hist"]
    assert "3 of 5 predicted scan(s) failed QC" in err
    assert "not validated against FreeSurfer" in err


def test_a_model_without_qc_reference_gets_fov_and_pass_only(trained: Path, tiny_study: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    old = tmp_path / "old"
    old.mkdir()
    for name in ("model.pt", "model.json"):
        (old / name).write_bytes((trained / name).read_bytes())
    assert read_reference(old) is None and synthetic_notice(old) is None
    t1 = pd.read_csv(tiny_study / "split" / "test.csv")["t1"][0]
    status, out, _ = predict(capsys, old, t1)
    row = read_table(out).iloc[0]
    assert status == 0 and row["qc_fov"] == 1.0 and bool(row["qc_pass"])
    assert row[["qc_edge", "qc_hist", "qc_total", "qc_flip"]].isna().all()
    (old / QC_FILE).write_text('{"hist": [1]}')
    assert predict(capsys, old, t1)[0] == 2
