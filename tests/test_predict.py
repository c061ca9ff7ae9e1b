"""`gmvol predict` end to end on a tiny model and 8 mm synthetic heads: input kinds, orientation,
bad scans, bad models, output formats and BIDS derivatives. Runs main() in-process."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from nibabel.orientations import axcodes2ornt, ornt_transform

from gmvol.cli import main
from gmvol.data.dataset import TargetScaler
from gmvol.data.preprocess import PreprocessSpec
from gmvol.models import build_model, model_config_from_dict
from gmvol.models.checkpoint import ModelFileError, save_model
from gmvol.predict import TABLE_COLUMNS, Predictor, discover_inputs
from gmvol.regions import N_REGIONS, REGION_COLUMNS
from gmvol.regrid import TypicalTotals

SPEC = PreprocessSpec(voxel_size=8.0, shape=(16, 16, 16))
MODEL_CFG = {"name": "meshnet", "meshnet": {"channels": 4, "dilations": [1, 2, 1]}}
VOXEL_MM = 8.0
HEAD_SHAPE = (22, 26, 22)
COLUMNS = list(TABLE_COLUMNS)


def head(seed: int) -> nib.Nifti1Image:
    """A head-ish RAS volume: bright ellipsoid 'brain' in a dimmer shell, with smooth texture,
    centred on the scanner origin."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in HEAD_SHAPE), indexing="ij"))
    radius = np.sqrt((grid**2).sum(axis=0))
    texture = 0.2 * np.sin(3 * grid[0] + rng.uniform(0, 6)) * np.cos(2 * grid[1] + rng.uniform(0, 6))
    data = np.where(radius < 0.7, 100.0, np.where(radius < 0.9, 40.0, 0.0)) * (1 + texture)
    data = (data + rng.normal(0, 2, HEAD_SHAPE)).clip(0).astype(np.float32)
    affine = np.diag([VOXEL_MM] * 3 + [1.0])
    affine[:3, 3] = -VOXEL_MM * (np.array(HEAD_SHAPE) - 1) / 2
    return nib.Nifti1Image(data, affine)


def reoriented(img: nib.Nifti1Image, axcodes: str) -> nib.Nifti1Image:
    """The same scan in another voxel order (e.g. LIA, FreeSurfer's conformed orientation)."""
    current = axcodes2ornt(nib.aff2axcodes(img.affine))
    return img.as_reoriented(ornt_transform(current, axcodes2ornt(tuple(axcodes))))


def save_tiny_model(directory: Path) -> Path:
    """A meshnet with few channels and random weights, saved with the real save_model."""
    torch.manual_seed(0)
    cfg = model_config_from_dict(MODEL_CFG)
    scaler = TargetScaler(np.full(N_REGIONS, 100.0), np.full(N_REGIONS, 100.0))
    metadata = {"preprocess": SPEC.to_dict(), "target_scaling": scaler.to_dict(),
                "regions": list(REGION_COLUMNS)}
    save_model(directory, build_model(cfg).eval(), cfg, metadata)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def predictor(model_dir: Path) -> Predictor:
    return Predictor(model_dir, device="cpu", batch_size=2)


def predict(capsys: pytest.CaptureFixture[str], model_dir: Path, *args: str) -> tuple[int, str, str]:
    """Run `gmvol predict ARGS --model MODEL_DIR --device cpu`; (exit status, stdout, stderr)."""
    status = main(["predict", *args, "--model", str(model_dir), "--device", "cpu"])
    out, err = capsys.readouterr()
    return status, out, err


def read_table(text: str, sep: str = ",") -> pd.DataFrame:
    return pd.read_csv(StringIO(text), sep=sep, dtype={"subject": str})


def make_bids(root: Path, sessions: bool) -> list[str]:
    """Two subjects (with two sessions each when asked); returns the expected ids."""
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "toy", "BIDSVersion": "1.9.0"}))
    ids = []
    for i, sub in enumerate(("sub-01", "sub-02")):
        for ses in (("ses-a", "ses-b") if sessions else (None,)):
            anat = root / sub / (ses or "") / "anat"
            anat.mkdir(parents=True)
            name = "_".join(filter(None, (sub, ses, "T1w"))) + ".nii.gz"
            nib.save(head(i), anat / name)
            (anat / name.replace("T1w.nii.gz", "T1w.json")).write_text("{}")
            ids.append("_".join(filter(None, (sub, ses))))
    return ids


# ---- input discovery ---------------------------------------------------------------------------


def test_each_input_kind_gives_ids_and_rows(tmp_path: Path, model_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    nib.save(head(0), tmp_path / "alice.nii.gz")
    nib.save(head(1), tmp_path / "bob.nii")
    nib.save(nib.MGHImage(head(2).get_fdata(dtype=np.float32), head(2).affine), tmp_path / "carol.mgz")
    fs = tmp_path / "fs" / "dave" / "mri"
    fs.mkdir(parents=True)
    lia = reoriented(head(3), "LIA")
    nib.save(nib.MGHImage(lia.get_fdata(dtype=np.float32), lia.affine), fs / "orig.mgz")
    make_bids(tmp_path / "bids", sessions=False)
    make_bids(tmp_path / "bids_ses", sessions=True)

    names = ("alice.nii.gz", "bob.nii", "carol.mgz", "fs/dave", "bids", "bids_ses")
    inputs = [str(tmp_path / n) for n in names]
    expected = ["alice", "bob", "carol", "dave", "sub-01", "sub-02",
                "sub-01_ses-a", "sub-01_ses-b", "sub-02_ses-a", "sub-02_ses-b"]
    assert [s for s, _ in discover_inputs(inputs)] == expected
    status, out, err = predict(capsys, model_dir, *inputs, "--batch-size", "3")
    assert status == 0, err
    table = read_table(out)
    assert list(table.columns) == COLUMNS
    assert table["subject"].tolist() == expected
    assert np.allclose(table["total"], table[list(REGION_COLUMNS)].sum(axis=1), rtol=1e-4)
    # the same scan reached through different kinds gives the same row
    rows = table.set_index("subject")[list(REGION_COLUMNS)]
    assert np.allclose(rows.loc["alice"], rows.loc["sub-01"], rtol=1e-3)


@pytest.mark.parametrize("name", ["missing.nii.gz", "notes.txt", "emptydir"])
def test_unknown_or_missing_input_is_a_usage_error_naming_it(
        tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "emptydir").mkdir()
    status, out, err = predict(capsys, model_dir, str(tmp_path / name))
    assert status == 2 and out == ""
    assert str(tmp_path / name) in err and "Traceback" not in err


def test_duplicate_subject_ids_are_refused(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        nib.save(head(0), tmp_path / d / "T1.nii.gz")
    with pytest.raises(ValueError, match="subject id 'T1'"):
        discover_inputs([tmp_path / "a" / "T1.nii.gz", tmp_path / "b" / "T1.nii.gz"])


# ---- predictions ---------------------------------------------------------------------------------


def test_lia_and_ras_copies_of_a_scan_agree(tmp_path: Path, predictor: Predictor) -> None:
    ras = head(4)
    lia = reoriented(ras, "LIA")
    assert nib.aff2axcodes(lia.affine) == ("L", "I", "A")
    nib.save(nib.MGHImage(lia.get_fdata(dtype=np.float32), lia.affine), tmp_path / "lia.mgz")
    nib.save(ras, tmp_path / "ras.nii.gz")
    table = predictor.predict_files([tmp_path / "ras.nii.gz", tmp_path / "lia.mgz"], ["ras", "lia"])
    a, b = table[list(REGION_COLUMNS)].to_numpy()
    assert np.all(np.abs(a - b) <= 0.01 * np.abs(a))
    # the check has teeth: a scan read in the wrong orientation (voxels flipped, same affine)
    # moves the untrained model's outputs far more than the LIA/RAS round trip does
    mirrored = nib.Nifti1Image(np.ascontiguousarray(ras.get_fdata(dtype=np.float32)[::-1, ::-1]), ras.affine)
    assert np.abs(a - b).max() < 0.1 * np.abs(predictor.predict_image(mirrored) - a).max()
    assert np.allclose(predictor.predict_image(ras), a, rtol=1e-5)


def test_a_model_trained_with_flips_averages_the_scan_and_its_mirror_image(tmp_path: Path, model_dir: Path) -> None:
    """Its answer for the scan and for its left-right mirror image (lh/rh swapped back), averaged:
    so a mirrored copy of a scan gets the very same volumes, lh and rh swapped. A model saved
    without flips in its training settings keeps the plain answer."""
    from gmvol.data.preprocess import preprocess_image
    from gmvol.qc import mirrored
    from gmvol.regions import mirror_permutation

    flipping = tmp_path / "flips"
    shutil.copytree(model_dir, flipping)
    document = json.loads((flipping / "model.json").read_text())
    (flipping / "model.json").write_text(json.dumps({**document, "train": {"augment": {"flip": True}}}))
    averaging, plain_model = Predictor(flipping, device="cpu"), Predictor(model_dir, device="cpu")
    assert averaging.mirror_average and not plain_model.mirror_average
    scan = head(5)
    image = preprocess_image(scan, averaging.spec)
    with torch.no_grad():
        both = averaging.model(torch.from_numpy(np.stack([image, mirrored(image, averaging.spec)])[:, None]))
    plain, mirror = averaging.scaler.inverse(both.numpy().astype(np.float64))
    expected = (plain + mirror[mirror_permutation()]) / 2
    np.testing.assert_allclose(averaging.predict_image(scan), expected, rtol=1e-6)
    np.testing.assert_allclose(plain_model.predict_image(scan), plain, rtol=1e-6)
    assert np.abs(plain - expected).max() > 1e-3 * np.abs(expected).max()  # the mirror pass counts
    flipped = nib.Nifti1Image(np.ascontiguousarray(scan.get_fdata(dtype=np.float32)[::-1]), scan.affine)
    np.testing.assert_allclose(averaging.predict_image(flipped), expected[mirror_permutation()], rtol=1e-4)


def test_predict_files_keeps_order_and_times_each_scan(tmp_path: Path, predictor: Predictor) -> None:
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"s{i}.nii.gz")
        nib.save(head(i), paths[-1])
    (tmp_path / "bad.nii.gz").write_bytes(b"not an image")
    paths.insert(2, tmp_path / "bad.nii.gz")
    subjects = [p.name.split(".")[0] for p in paths]
    table = predictor.predict_files(paths, subjects)
    assert table["subject"].tolist() == [s for s in subjects if s != "bad"]
    timings = predictor.timings
    assert timings["subject"].tolist() == subjects
    good = timings[timings["error"] == ""]
    assert (good[["load_s", "preprocess_s", "forward_s"]] > 0).all().all()
    assert [f.subject for f in predictor.failures] == ["bad"]


# ---- failures ------------------------------------------------------------------------------------


def test_bad_scans_are_reported_and_skipped(tmp_path: Path, model_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    nib.save(head(0), tmp_path / "good1.nii.gz")
    nib.save(head(1), tmp_path / "good2.nii.gz")
    nib.save(head(2), tmp_path / "truncated.nii.gz")
    blob = (tmp_path / "truncated.nii.gz").read_bytes()
    (tmp_path / "truncated.nii.gz").write_bytes(blob[: len(blob) // 2])
    four_d = head(3).get_fdata(dtype=np.float32)
    nib.save(nib.Nifti1Image(np.stack([four_d, four_d], axis=-1), head(3).affine), tmp_path / "fourd.nii.gz")
    nan = head(4).get_fdata(dtype=np.float32)
    nan[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(nan, head(4).affine), tmp_path / "nan.nii.gz")
    bad = ["truncated", "fourd", "nan"]
    names = ["good1", "truncated", "fourd", "good2", "nan"]
    out = tmp_path / "volumes.csv"

    status, _, err = predict(capsys, model_dir, *(str(tmp_path / f"{n}.nii.gz") for n in names),
                             "--out", str(out))
    assert status == 1
    assert "Traceback" not in err
    for name in bad:
        assert err.count(str(tmp_path / f"{name}.nii.gz")) == 2  # live, and in the summary at the end
    assert "3 of 5 scan(s) failed" in err
    assert read_table(out.read_text())["subject"].tolist() == ["good1", "good2"]

    status, _, err = predict(capsys, model_dir, str(tmp_path / "nan.nii.gz"), "--debug")
    assert status == 1 and "NaN" in err and "Traceback" in err


def _tamper_json_invalid(d: Path) -> None:
    (d / "model.json").write_text("{not json")


def _tamper_json_architecture(d: Path) -> None:
    meta = json.loads((d / "model.json").read_text())
    meta["model"]["meshnet"]["channels"] = 7
    (d / "model.json").write_text(json.dumps(meta))


def _tamper_truncate_weights(d: Path) -> None:
    blob = (d / "model.pt").read_bytes()
    (d / "model.pt").write_bytes(blob[: len(blob) // 2])


@pytest.mark.parametrize("tamper, culprit", [(_tamper_json_invalid, "model.json"),
                                             (_tamper_json_architecture, "model"),
                                             (_tamper_truncate_weights, "model.pt")])
def test_bad_model_exits_2_with_one_line(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str],
                                         tamper: Callable[[Path], None], culprit: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    tamper(broken)
    with pytest.raises(ModelFileError):
        Predictor(broken, device="cpu")
    nib.save(head(0), tmp_path / "t1.nii.gz")
    status, out, err = predict(capsys, broken, str(tmp_path / "t1.nii.gz"))
    assert status == 2 and out == ""
    assert culprit in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# ---- outputs -------------------------------------------------------------------------------------


def test_formats_from_flag_and_suffix(tmp_path: Path, model_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    t1 = str(tmp_path / "t1.nii.gz")
    nib.save(head(0), t1)
    status, out, _ = predict(capsys, model_dir, t1, "--format", "json")
    records = json.loads(out)
    assert status == 0 and len(records) == 1 and list(records[0]) == COLUMNS
    assert predict(capsys, model_dir, t1, "--out", str(tmp_path / "v.tsv"))[0] == 0
    tsv = read_table((tmp_path / "v.tsv").read_text(), sep="\t")
    assert list(tsv.columns) == COLUMNS
    assert np.allclose(tsv[list(REGION_COLUMNS)].to_numpy()[0], [records[0][c] for c in REGION_COLUMNS])
    status, out, err = predict(capsys, model_dir, t1, "--verbose")
    assert status == 0 and list(read_table(out).columns) == COLUMNS
    assert "t1: load" in err and "preprocess" in err and "forward" in err


def test_bids_derivatives(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "bids"
    ids = make_bids(root, sessions=True)
    status, out, _ = predict(capsys, model_dir, str(root), "--bids-derivatives")
    assert status == 0 and out == ""
    derived = root / "derivatives" / "gmvol"
    table = read_table((derived / "volumes.tsv").read_text(), sep="\t")
    assert table["subject"].tolist() == ids and list(table.columns) == COLUMNS
    description = json.loads((derived / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"]
    assert description["GeneratedBy"][0]["Name"] == "gmvol" and description["GeneratedBy"][0]["Version"]
    # a second run sees derivatives/ but still only the raw subjects
    assert [s for s, _ in discover_inputs([root])] == ids


def test_label_maps_go_back_to_the_input_grid_by_nearest_cell() -> None:
    """A model-grid cell's class lands on exactly the input voxels whose centres lie in that cell,
    with its FreeSurfer id, for an input that is oblique, flipped and finer than the grid."""
    from nibabel.affines import from_matvec
    from scipy.spatial.transform import Rotation

    from gmvol.data.preprocess import PreprocessSpec, grid_affine
    from gmvol.segmentation import labels_in_input_space
    from gmvol.tissue import CLASS_IDS

    spec = PreprocessSpec(voxel_size=8.0, shape=(10, 12, 9))
    linear = Rotation.from_euler("xyz", [10, -5, 20], degrees=True).as_matrix() @ np.diag([-2.0, 2.0, 3.0])
    img = nib.Nifti1Image(np.zeros((40, 44, 30), np.float32), from_matvec(linear, [60.0, -40.0, -30.0]))
    grid = grid_affine(img, spec)
    classes = np.full(spec.shape, 68, dtype=np.uint8)   # background
    classes[4, 5, 4] = 3                                  # one cell of lh_cuneus
    labels = labels_in_input_space(classes, grid, img.affine, img.shape)
    assert labels.shape == img.shape
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in img.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    cells = np.floor(nib.affines.apply_affine(np.linalg.inv(grid) @ img.affine, ijk) + 0.5).astype(int)
    inside = (cells == [4, 5, 4]).all(axis=1).reshape(img.shape)
    assert inside.sum() > 10
    assert (labels[inside] == CLASS_IDS[3]).mean() > 0.97 and (labels[~inside] == 0).mean() > 0.999


def test_a_brain_outside_the_typical_totals_gets_voxels_scaled_to_land_inside() -> None:
    """A count outside the range scales the voxel by its excess to the power 2/3 (the count moves
    half as far as the brain): 1.2x the top of the range gives voxels 1.2^(2/3) as wide; the step
    is capped at 1.25x either way (8x the top: 1.25x, 1/8 of the bottom: 1/1.25x, not 4x and 1/4x,
    whose grid would crop the brain); a count inside keeps the model's grid."""
    typical = TypicalTotals.of(np.linspace(400e3, 600e3, 101))
    assert typical.to_list() == pytest.approx([420e3, 580e3])
    assert typical.regrid_voxel_mm(500e3, 5.0) is None
    assert typical.regrid_voxel_mm(580e3 * 1.005, 5.0) is None  # within the 1% tolerance
    assert typical.regrid_voxel_mm(1.2 * 580e3, 5.0) == pytest.approx(5.0 * 1.2 ** (2 / 3))
    assert typical.regrid_voxel_mm(420e3 / 1.2, 5.0) == pytest.approx(5.0 / 1.2 ** (2 / 3))
    assert typical.regrid_voxel_mm(8 * 580e3, 5.0) == pytest.approx(6.25)
    assert typical.regrid_voxel_mm(420e3 / 8, 5.0) == pytest.approx(4.0)
    assert typical.regrid_voxel_mm(0.0, 5.0) is None  # nothing counted: nothing to scale by
    assert TypicalTotals.from_metadata({}) is None
    with pytest.raises(ValueError):
        TypicalTotals(600e3, 400e3)


def test_no_regrid_reaches_the_predictor_settings() -> None:
    from gmvol.cli import _settings, build_parser

    parse = build_parser().parse_args
    assert _settings(parse(["predict", "a.nii.gz", "--model", "m"])).regrid
    settings = _settings(parse(["predict", "a.nii.gz", "--model", "m", "--no-regrid"]))
    assert not settings.regrid
