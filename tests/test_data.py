"""Ingestion, aparc.stats parsing, split, preprocessing and every kind of bad input."""

from __future__ import annotations

import gzip
import shutil
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gmvol.data.ingest import IngestConfig, ingest
from gmvol.data.preprocess import (
    PreprocessConfig,
    PreprocessSpec,
    build_cache,
    load_cached,
    preprocess_image,
    read_spec,
)
from gmvol.data.split import SplitConfig, split_subjects
from gmvol.data.stats import read_aparc_stats
from gmvol.io import InputError, load_volume
from gmvol.regions import DK_NAMES, REGION_COLUMNS

# A real FreeSurfer 7 lh.aparc.stats layout (header abridged, table rows verbatim in format).
STATS_HEADER = """# Table of FreeSurfer cortical parcellation anatomical statistics
#
# CreationTime 2017/03/02-18:02:33-GMT
# generating_program mris_anatomical_stats
# cvs_version $Id: mris_anatomical_stats.c,v 1.79 2016/03/14 15:15:34 greve Exp $
# subjectname 100307
# hemi lh
# Measure Cortex, NumVert, Number of Vertices, 134258, unitless
# Measure Cortex, WhiteSurfArea, White Surface Total Area, 91325.7, mm^2
# Measure Cortex, MeanThickness, Mean Thickness, 2.61346, mm
# NTableCols 10
# TableCol  1 ColHeader StructName
# TableCol  4 ColHeader GrayVol
# TableCol  4 FieldName Total Gray Matter Volume
# TableCol  4 Units     mm^3
# ColHeaders StructName NumVert SurfArea GrayVol ThickAvg ThickStd MeanCurv GausCurv FoldInd CurvInd
"""


def _stats_text(skip: str = "") -> str:
    rows = [f"{n:<40s} {1000 + i:5d} {700 + i:5d} {2000 + 10 * i:5d}  2.512 0.601 0.121 0.023   11     1.1"
            for i, n in enumerate(DK_NAMES) if n != skip]
    return STATS_HEADER + "\n".join(rows) + "\n"


def test_parse_freesurfer_aparc_stats(tmp_path: Path) -> None:
    path = tmp_path / "lh.aparc.stats"
    path.write_text(_stats_text())
    gray = read_aparc_stats(path)
    assert list(gray) == list(DK_NAMES)
    assert gray["bankssts"] == 2000.0 and gray["insula"] == 2330.0
    assert read_aparc_stats(path, "ThickAvg")["cuneus"] == pytest.approx(2.512)


def test_stats_missing_region_names_file_and_region(tmp_path: Path) -> None:
    path = tmp_path / "rh.aparc.stats"
    path.write_text(_stats_text(skip="entorhinal"))
    with pytest.raises(InputError, match=r"rh\.aparc\.stats.*entorhinal"):
        read_aparc_stats(path)


def test_ingest_both_target_sources_agree(tiny_cohort: Path, tmp_path: Path) -> None:
    tables = {}
    for source in ("aparc+aseg", "aparc.stats"):
        cfg = IngestConfig(subjects_dir=str(tiny_cohort), target_source=source)
        tables[source] = ingest(cfg, tmp_path / f"{source}.csv", tmp_path / f"{source}-excl.csv")
    a, b = tables["aparc+aseg"], tables["aparc.stats"]
    assert list(a.columns[3:]) == list(REGION_COLUMNS) and len(a) == 6
    np.testing.assert_allclose(a[list(REGION_COLUMNS)], b[list(REGION_COLUMNS)], atol=0.5)
    assert (a[list(REGION_COLUMNS)] > 0).all().all()


def _broken_cohort(tiny_cohort: Path, tmp_path: Path) -> Path:
    root = tmp_path / "subjects"
    shutil.copytree(tiny_cohort, root)
    orig = root / "sub-0001" / "mri" / "orig.mgz"
    orig.write_bytes(orig.read_bytes()[:300])                        # truncated
    (root / "sub-0002" / "stats" / "rh.aparc.stats").unlink()          # missing file
    lab = root / "sub-0003" / "mri" / "aparc+aseg.mgz"
    img = nib.load(lab)
    data = np.asarray(img.dataobj).copy()
    data[data == 1006] = 0                                             # lacks lh_entorhinal
    nib.save(nib.MGHImage(data, img.affine), lab)
    return root


def test_ingest_excludes_bad_subjects_with_reasons(tiny_cohort: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = _broken_cohort(tiny_cohort, tmp_path)
    table = ingest(IngestConfig(subjects_dir=str(root)), tmp_path / "s.csv", tmp_path / "x.csv")
    excluded = pd.read_csv(tmp_path / "x.csv").set_index("subject")
    assert sorted(table["subject"]) == ["sub-0004", "sub-0005", "sub-0006"]
    assert "orig.mgz" in excluded.loc["sub-0001", "file"]
    assert "not found" in excluded.loc["sub-0002", "reason"]
    assert "lh_entorhinal" in excluded.loc["sub-0003", "reason"]
    assert "3 excluded" in capsys.readouterr().out


def test_empty_subjects_dir_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty.*no subject folder"):
        ingest(IngestConfig(subjects_dir=str(tmp_path / "empty")), tmp_path / "s.csv", tmp_path / "x.csv")
    assert not (tmp_path / "s.csv").exists()


def test_split_sizes_and_determinism() -> None:
    subjects = pd.DataFrame({"subject": [f"s{i}" for i in range(670)]})
    parts = split_subjects(subjects, SplitConfig(seed=1))
    assert (len(parts["train"]), len(parts["test"])) == (536, 134)
    assert (parts["train"]["fold"] == "valid").sum() == 54
    assert not set(parts["train"]["subject"]) & set(parts["test"]["subject"])
    again = split_subjects(subjects, SplitConfig(seed=1))
    assert again["test"]["subject"].tolist() == parts["test"]["subject"].tolist()
    other = split_subjects(subjects, SplitConfig(seed=2))
    assert other["test"]["subject"].tolist() != parts["test"]["subject"].tolist()
    no_valid = split_subjects(subjects, SplitConfig(seed=1, valid_fraction=0.0))
    assert (no_valid["train"]["fold"] == "train").all()


SPEC = PreprocessSpec(voxel_size=8.0, shape=(24, 28, 24))


def test_preprocess_is_orientation_invariant(tiny_cohort: Path) -> None:
    lia = load_volume(tiny_cohort / "sub-0001" / "mri" / "orig.mgz")
    assert nib.aff2axcodes(lia.affine) == ("L", "I", "A")
    ras = nib.as_closest_canonical(lia)
    a, b = preprocess_image(lia, SPEC), preprocess_image(ras, SPEC)
    assert a.shape == SPEC.shape and a.dtype == np.float32
    assert a.min() == 0.0 and a.max() == 1.0
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_cache_has_every_subject_and_its_spec(tiny_cohort: Path, tmp_path: Path) -> None:
    ingest(IngestConfig(subjects_dir=str(tiny_cohort)), tmp_path / "s.csv", tmp_path / "x.csv")
    build_cache(tmp_path / "s.csv", PreprocessConfig(**asdict(SPEC), workers=1), tmp_path / "cache")
    assert read_spec(tmp_path / "cache" / "spec.json") == SPEC
    cached = load_cached(tmp_path / "cache", "sub-0003")
    assert cached["image"].shape == cached["labels"].shape == SPEC.shape
    assert 1035 in cached["labels"]


def _nifti(tmp_path: Path, name: str, data: np.ndarray) -> Path:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_bad_images_are_refused_with_the_file_named(tmp_path: Path) -> None:
    good = _nifti(tmp_path, "good.nii.gz", np.random.default_rng(0).random((8, 8, 8), np.float32))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:200])
    not_gzip = tmp_path / "plain.nii.gz"
    not_gzip.write_bytes(b"this is not gzip at all" * 20)
    four_d = _nifti(tmp_path, "fourd.nii.gz", np.ones((8, 8, 8, 3), np.float32))
    nan = np.ones((8, 8, 8), np.float32)
    nan[1, 2, 3] = np.nan
    with_nan = _nifti(tmp_path, "nan.nii.gz", nan)
    inf = nan.copy()
    inf[1, 2, 3] = np.inf
    with_inf = _nifti(tmp_path, "inf.nii", inf)
    cases = {truncated: "truncated|corrupt|readable", not_gzip: "readable", four_d: "3D",
             with_nan: "NaN", with_inf: "NaN/Inf", tmp_path / "missing.nii": "not found"}
    for path, reason in cases.items():
        with pytest.raises(InputError, match=reason) as err:
            load_volume(path)
        assert path.name in str(err.value)
    assert load_volume(good).shape == (8, 8, 8)


def test_absurd_header_is_refused_before_allocation(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii"
    with open(path, "wb") as fh:
        header.write_to(fh)
        fh.write(b"\0" * 64)
    with pytest.raises(InputError, match="absurd dimensions"):
        load_volume(path)


def test_failed_cache_build_leaves_nothing_behind(tiny_cohort: Path, tmp_path: Path) -> None:
    ingest(IngestConfig(subjects_dir=str(tiny_cohort)), tmp_path / "s.csv", tmp_path / "x.csv")
    table = pd.read_csv(tmp_path / "s.csv")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"garbage")[:10])
    table.loc[2, "t1"] = str(bad)
    table.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(InputError, match="bad.nii.gz"):
        build_cache(tmp_path / "s.csv", PreprocessConfig(**asdict(SPEC), workers=1), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cache")]


def test_class_fractions_sum_to_the_true_volumes(tiny_study: Path) -> None:
    """The fraction identity: per region, sum(fraction) x cell volume = voxel count x voxel volume
    of the subject's own aparc+aseg; cells are never overfilled, and background fills the rest."""
    from gmvol.data.cell_fractions import CellFractions
    from gmvol.data.fractions import label_fractions
    from gmvol.data.preprocess import grid_affine, load_fractions, read_spec
    from gmvol.regions import REGION_IDS
    from gmvol.tissue import BACKGROUND_CLASS

    table = pd.read_csv(tiny_study / "subjects.csv")
    spec = read_spec(tiny_study / "cache" / "spec.json")
    cell = spec.voxel_size**3
    for row in table.head(2).itertuples():
        img = nib.load(row.labels)
        labels = np.asarray(img.dataobj)
        voxel = float(np.prod(img.header.get_zooms()[:3]))
        true = np.array([(labels == i).sum() * voxel for i in REGION_IDS])
        cached = load_fractions(tiny_study / "cache", row.subject)
        np.testing.assert_allclose(cached.class_volumes()[:68], true, rtol=1e-9)
        dense = CellFractions.of(cached, spec.shape, cell).dense()
        np.testing.assert_allclose(dense[:68].sum(axis=(1, 2, 3), dtype=np.float64) * cell, true, rtol=1e-5)
        assert dense.sum(axis=0).max() <= 1 + 1e-5 and dense[BACKGROUND_CLASS].min() >= 0
        assert cached.count.dtype == np.uint16 and cached.klass.dtype == np.uint8
        fresh = label_fractions(img, grid_affine(img, spec), spec.shape)
        assert fresh.outside_mm3 == 0 and np.array_equal(fresh.count, cached.count)


def test_fractions_of_a_region_off_the_grid_are_reported_lost() -> None:
    from gmvol.data.fractions import label_fractions

    labels = np.zeros((10, 10, 10), dtype=np.int32)
    labels[0:2, 4:6, 4:6] = 1001   # 8 voxels, 4 of them left of the grid's first cell
    img = nib.Nifti1Image(labels, np.eye(4))
    grid = np.eye(4)
    grid[0, 3] = 2.5               # the first cell is centred on x = 2.5: voxels x = 0, 1 fall off
    fractions = label_fractions(img, grid, (8, 8, 8))
    assert fractions.class_volumes()[0] == pytest.approx(0.0)
    assert fractions.outside_mm3 == pytest.approx(8.0)


def test_fractions_put_each_sample_point_in_the_cell_it_falls_in() -> None:
    """Against a point-by-point count on an oblique, shifted grid with unequal axes: each point
    of each voxel lands in the cell whose centre is nearest along every axis."""
    from gmvol.data.fractions import TIE_BREAK, label_fractions
    from gmvol.regions import REGION_IDS
    from gmvol.tissue import BACKGROUND_CLASS, N_CLASSES, classes_of

    rng = np.random.default_rng(3)
    labels = rng.choice(np.array([0, 2, 41, *REGION_IDS[:5]], dtype=np.int32), size=(9, 7, 6))
    img = nib.Nifti1Image(labels, np.diag([1.5, 1.5, 1.5, 1.0]))
    c, s = np.cos(0.4), np.sin(0.4)
    grid = np.array([[3 * c, -3 * s, 0, 1.1], [3 * s, 3 * c, 0, -2.3], [0, 0, 3.0, 0.7], [0, 0, 0, 1]])
    shape = (4, 5, 3)
    fractions = label_fractions(img, grid, shape, step_mm=1.0)   # 2 x 2 x 2 points per voxel
    classes = classes_of(labels)
    to_grid = np.linalg.inv(grid) @ img.affine
    expected: dict[int, int] = {}
    for ijk in zip(*np.nonzero(classes != BACKGROUND_CLASS)):
        for offset in np.stack(np.meshgrid(*[[-0.25, 0.25]] * 3, indexing="ij"), -1).reshape(-1, 3):
            cell = np.floor(to_grid[:3, :3] @ (np.array(ijk) + offset) + to_grid[:3, 3] + 0.5 + TIE_BREAK).astype(int)
            if np.all((cell >= 0) & (cell < shape)):
                key = int(np.ravel_multi_index(tuple(cell), shape)) * N_CLASSES + int(classes[ijk])
                expected[key] = expected.get(key, 0) + 1
    got = dict(zip((fractions.index.astype(np.int64) * N_CLASSES + fractions.klass).tolist(), fractions.count.tolist()))
    assert got == expected and len(got) > 20
