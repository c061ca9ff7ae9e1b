"""The synthetic cohort: determinism, FreeSurfer ids and layout, realistic variation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from conftest import TINY_SYNTH

from gmvol.data.stats import read_aparc_stats
from gmvol.regions import COLUMN_TO_ID, DK_NAMES, REGION_COLUMNS, REGION_IDS
from gmvol.synth.anatomy import package_file
from gmvol.synth.cohort import SynthConfig, synthesize_cohort, synthesize_subject
from gmvol.synth.variation import cohort_variation


def _arrays(subject_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    t1 = np.asarray(nib.load(subject_dir / "mri" / "orig.mgz").dataobj)
    labels = np.asarray(nib.load(subject_dir / "mri" / "aparc+aseg.mgz").dataobj)
    return t1, labels


def test_same_seed_same_subject_other_seed_other_subject(tmp_path: Path) -> None:
    a = synthesize_subject(1, TINY_SYNTH, tmp_path / "a")
    b = synthesize_subject(1, TINY_SYNTH, tmp_path / "b")
    c = synthesize_subject(1, dataclasses.replace(TINY_SYNTH, seed=99), tmp_path / "c")
    assert a == b
    for x, y in zip(_arrays(tmp_path / "a" / "sub-0002"), _arrays(tmp_path / "b" / "sub-0002")):
        np.testing.assert_array_equal(x, y)
    assert a["lh_insula"] != c["lh_insula"]
    assert not np.array_equal(_arrays(tmp_path / "a" / "sub-0002")[0], _arrays(tmp_path / "c" / "sub-0002")[0])


def test_freesurfer_layout_ids_and_orientation(tiny_cohort: Path) -> None:
    subject = tiny_cohort / "sub-0001"
    for rel in ("mri/orig.mgz", "mri/aparc+aseg.mgz", "stats/lh.aparc.stats", "stats/rh.aparc.stats"):
        assert (subject / rel).is_file(), rel
    t1_img = nib.load(subject / "mri" / "orig.mgz")
    assert nib.aff2axcodes(t1_img.affine) == ("L", "I", "A")  # FreeSurfer's conformed orientation
    assert t1_img.get_data_dtype() == np.uint8
    _, labels = _arrays(subject)
    present = set(np.unique(labels).tolist())
    assert set(REGION_IDS) <= present
    assert not {1004, 2004} & present  # corpus callosum is not a DK cortical region
    assert {2, 41, 17, 53} <= present  # white matter and hippocampi, as in aparc+aseg


def test_region_ids_match_freesurfer_lookup_table() -> None:
    lut = {}
    for line in package_file("mne", "data/FreeSurferColorLUT.txt").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            lut[fields[1]] = int(fields[0])
    for column in REGION_COLUMNS:
        hemi, name = column.split("_", 1)
        assert lut[f"ctx-{hemi}-{name}"] == COLUMN_TO_ID[column]


def test_scalp_and_skull_exist_outside_the_brain(tiny_cohort: Path) -> None:
    t1, labels = _arrays(tiny_cohort / "sub-0001")
    outside = (labels == 0) & (t1 > 60)
    assert outside.sum() > 0.2 * (labels > 0).sum()  # a bright scalp shell, not an empty background


def test_cohort_variation_is_realistic(tmp_path: Path) -> None:
    cfg = SynthConfig(n_subjects=36, seed=5, voxel_size=3.0, workers=2)
    stats = cohort_variation(synthesize_cohort(cfg, tmp_path / "cohort"))
    assert 0.10 <= stats["cv_median"] <= 0.25
    assert stats["regions_cv_in_0.10_0.25"] >= 60
    assert stats["total_scaling_r2_median"] <= 0.5


def test_cohort_table_matches_stats_files(tiny_cohort: Path) -> None:
    table = pd.read_csv(tiny_cohort / "cohort.csv")
    assert len(table) == TINY_SYNTH.n_subjects
    row = table.iloc[0]
    for hemi in ("lh", "rh"):
        stats = read_aparc_stats(tiny_cohort / row["subject"] / "stats" / f"{hemi}.aparc.stats")
        assert sorted(stats) == sorted(DK_NAMES)
        for name, value in stats.items():  # GrayVol is written in whole mm^3
            assert abs(value - row[f"{hemi}_{name}"]) <= 0.5, (hemi, name)


def test_pose_varies_between_subjects(tiny_cohort: Path) -> None:
    table = pd.read_csv(tiny_cohort / "cohort.csv")
    assert table["roll_deg"].abs().max() <= 10.5
    assert table["shift_x_mm"].std() > 1.0
    assert table["head_scale"].std() > 0.005
