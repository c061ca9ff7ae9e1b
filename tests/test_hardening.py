"""Issue #14, case by case: header errors nibabel/numpy raise, corrupt gzip streams, nonsense images,
outputs that would destroy inputs, signals, picklable errors, model-file budget, ingest stats.

Small real data: the 8 mm heads of test_predict, the tiny synthetic cohort, and the MNI152 T1
shipped in nilearn (skull-stripped) for the real-scan acceptance checks.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from nibabel.processing import resample_to_output
from test_predict import head, predict, save_tiny_model

from gmvol.data.dataset import TargetScaler
from gmvol.data.ingest import IngestConfig, ingest
from gmvol.data.preprocess import PreprocessConfig, build_cache
from gmvol.data.stats import read_aparc_stats
from gmvol.io import InputError, atomic_dir, load_t1, load_volume
from gmvol.models.checkpoint import ModelFileError
from gmvol.predict import Predictor, implausible_prediction
from gmvol.regions import N_REGIONS, REGION_COLUMNS
from gmvol.synth.anatomy import MNI_T1, package_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


def _mgz_bytes(path: Path) -> bytearray:
    return bytearray(gzip.decompress(path.read_bytes()))


def _save(tmp_path: Path, name: str, img: nib.spatialimages.SpatialImage) -> Path:
    nib.save(img, tmp_path / name)
    return tmp_path / name


# ---- the four header errors that used to escape, and a CRC flip ---------------------------------


def _header_error_files(tmp_path: Path) -> dict[str, Path]:
    good = head(0)
    mgz = _save(tmp_path, "base.mgz", nib.MGHImage(good.get_fdata(dtype=np.float32), good.affine))
    raw = _mgz_bytes(mgz)
    files = {}
    bad_type = raw.copy()
    bad_type[20:24] = struct.pack(">i", 99)                      # KeyError in nibabel's MGH codes
    (tmp_path / "mgh_type.mgz").write_bytes(gzip.compress(bytes(bad_type)))
    files["KeyError"] = tmp_path / "mgh_type.mgz"
    zero_dim = raw.copy()
    zero_dim[4:8] = struct.pack(">i", 0)                         # MGHError
    (tmp_path / "mgh_zero.mgz").write_bytes(gzip.compress(bytes(zero_dim)))
    files["MGHError"] = tmp_path / "mgh_zero.mgz"
    nii = bytearray(_save(tmp_path, "base.nii", good).read_bytes())
    nii[70:72] = struct.pack("<h", 255)                          # HeaderDataError
    (tmp_path / "nii_type.nii").write_bytes(bytes(nii))
    files["HeaderDataError"] = tmp_path / "nii_type.nii"
    rgb = np.zeros(good.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    files["DTypePromotionError"] = _save(tmp_path, "rgb.nii.gz", nib.Nifti1Image(rgb, good.affine))
    flipped = bytearray(mgz.read_bytes())
    flipped[len(flipped) // 2] ^= 0x10                            # one bit in the deflate stream
    (tmp_path / "crc.mgz").write_bytes(bytes(flipped))
    files["CRC"] = tmp_path / "crc.mgz"
    return files


def test_header_errors_and_crc_flip_become_input_errors(tmp_path: Path) -> None:
    files = _header_error_files(tmp_path)
    with pytest.raises((gzip.BadGzipFile, EOFError, OSError)):  # gzip -t fails it too ...
        gzip.decompress(files["CRC"].read_bytes())
    assert nib.load(files["CRC"]).shape == head(0).shape        # ... but nibabel reads it lazily
    for cause, path in files.items():
        with pytest.raises(InputError) as err:
            load_volume(path)
        assert err.value.path == str(path)
        assert ("corrupt gzip stream" if cause == "CRC" else cause) in err.value.reason


def test_one_bad_header_does_not_abort_the_batch(tmp_path: Path, model_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    files = _header_error_files(tmp_path)
    good = _save(tmp_path, "good.nii.gz", head(1))
    status, out, err = predict(capsys, model_dir, *map(str, files.values()), str(good))
    assert status == 1 and "Traceback" not in err
    assert pd.read_csv(pd.io.common.StringIO(out))["subject"].tolist() == ["good"]
    assert f"{len(files)} of {len(files) + 1} scan(s) failed" in err


# ---- nonsense images ---------------------------------------------------------------------------


def _nonsense(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    ref = head(2)
    data, affine = ref.get_fdata(dtype=np.float32), ref.affine
    sheared = affine.copy()
    sheared[0, 1] = 4.0                                            # x leans 27 degrees into y
    metre = np.diag([1000.0, 1000.0, 1000.0, 1.0])
    mask = (data > 50).astype(np.float32)
    cases = {
        "zeros": (np.zeros_like(data), affine, "constant"),
        "constant": (np.full_like(data, 70.0), affine, "constant"),
        "noisy_constant": (70 + np.random.default_rng(0).normal(0, 1, data.shape).astype(np.float32),
                           affine, "contrast"),
        "binary": (mask, affine, "intensity level"),
        "one_voxel": (np.ones((1, 1, 1), np.float32), np.eye(4), "field of view"),
        "tiny": (data[:8, :8, :8], np.eye(4), "field of view"),
        "coarse_tiny": (data[:8, :8, :8], np.diag([20.0, 20, 20, 1]), "voxel size"),
        "sheared": (data, sheared, "sheared"),
        "metre_voxels": (data, metre, "voxel size"),
        "one_hot_voxel": (np.pad(np.ones((1, 1, 1), np.float32), ((0, 21), (0, 25), (0, 21))), affine,
                          "almost empty"),
    }
    out = {}
    for name, (array, aff, reason) in cases.items():
        out[name] = (_save(tmp_path, f"{name}.nii.gz", nib.Nifti1Image(array, aff)), reason)
    for value in (0.0, -8.0):                                     # sform kept, pixdim zero or negative
        path = _save(tmp_path, f"pixdim{value:g}.nii", nib.Nifti1Image(data, affine))
        raw = bytearray(path.read_bytes())
        raw[80:84] = struct.pack("<f", value)
        path.write_bytes(bytes(raw))
        out[f"pixdim{value:g}"] = (path, "voxel sizes")
    return out


def test_nonsense_images_are_refused_with_their_reason(tmp_path: Path) -> None:
    for name, (path, reason) in _nonsense(tmp_path).items():
        with pytest.raises(InputError, match=reason) as err:
            load_t1(path)
        assert err.value.path == str(path), name
    assert load_t1(_save(tmp_path, "fine.nii.gz", head(3))).shape == head(3).shape


def test_real_scans_pass_the_checks(tmp_path: Path, tiny_cohort: Path) -> None:
    """The skull-stripped MNI152 T1 (1 mm, uint8), clinical 1x1x6 mm and 0.7 mm resamplings of it,
    an oblique copy, and the synthetic FreeSurfer-conformed subjects are all accepted (1 mm and
    0.7 mm versions: see the README, "Input checks")."""
    mni = nib.load(package_file("nilearn", MNI_T1))
    assert load_t1(package_file("nilearn", MNI_T1)).shape == mni.shape
    for zooms in ((1.0, 1.0, 6.0), (6.0, 1.0, 1.0)):
        path = _save(tmp_path, f"mni_{zooms}.nii.gz", resample_to_output(mni, voxel_sizes=zooms, order=1))
        assert np.allclose(nib.affines.voxel_sizes(load_t1(path).affine), zooms)
    tilt = np.eye(4)
    tilt[1:3, 1:3] = [[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]
    load_t1(_save(tmp_path, "oblique.nii.gz", nib.Nifti1Image(np.asarray(mni.dataobj), tilt @ mni.affine)))
    for orig in sorted(tiny_cohort.glob("sub-*/mri/orig.mgz")):
        load_t1(orig)


def test_implausible_predictions_are_refused_per_scan(tmp_path: Path, model_dir: Path) -> None:
    assert implausible_prediction(np.full(N_REGIONS, 3000.0)) is None
    bad = np.full(N_REGIONS, 3000.0)
    bad[5] = -2.0
    assert REGION_COLUMNS[5] in implausible_prediction(bad)
    bad[7] = np.nan
    assert "2 of 68" in implausible_prediction(bad)
    predictor = Predictor(model_dir, device="cpu")
    predictor.scaler = TargetScaler(np.full(N_REGIONS, -1e6), np.full(N_REGIONS, 1.0))
    table = predictor.predict_files([_save(tmp_path, "a.nii.gz", head(0))], ["a"])
    assert table.empty and "prediction refused" in predictor.failures[0].error.reason


# ---- outputs that never destroy inputs -----------------------------------------------------------


def test_out_may_not_overwrite_an_input_or_a_model_file(tmp_path: Path, model_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    scan = _save(tmp_path, "t1.nii.gz", head(0))
    (tmp_path / "link.nii.gz").symlink_to(scan)
    targets = [scan, tmp_path / "link.nii.gz", model_dir / "model.json", model_dir / "model.pt"]
    before = {p: p.read_bytes() for p in targets}
    for target in targets:
        status, out, err = predict(capsys, model_dir, str(scan), "--out", str(target))
        assert status == 2 and out == "" and "would overwrite the input" in err
        assert len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in targets} == before
    (tmp_path / "dir").mkdir()
    start = time.perf_counter()
    status, _, err = predict(capsys, model_dir, str(scan), "--out", str(tmp_path / "dir"))
    assert status == 2 and "not a regular file" in err and time.perf_counter() - start < 5


def test_all_failed_run_leaves_an_existing_out_alone(tmp_path: Path, model_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "volumes.csv"
    out.write_text("subject,earlier results\nx,1\n")
    (tmp_path / "bad.nii.gz").write_bytes(b"not an image")
    status, _, err = predict(capsys, model_dir, str(tmp_path / "bad.nii.gz"), "--out", str(out))
    assert status == 1 and "left as it was" in err
    assert out.read_text() == "subject,earlier results\nx,1\n"


def _cli(*args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "gmvol", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigint_and_sigterm_end_with_one_line_and_no_output(tmp_path: Path, model_dir: Path) -> None:
    scan = _save(tmp_path, "scan.nii.gz", head(0))
    for i in range(400):  # many ids, one file: the run lasts long enough to be interrupted
        (tmp_path / f"s{i:03d}.nii.gz").symlink_to(scan)
    links = [str(tmp_path / f"s{i:03d}.nii.gz") for i in range(400)]
    runs = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / f"{signum.name}.csv"
        runs[signum] = (out, _cli("predict", *links, "--model", str(model_dir), "--device", "cpu",
                                  "--batch-size", "1", "--out", str(out)))
    for signum, (out, proc) in runs.items():
        started = b""
        while b"predict:" not in started:  # the progress bar: the model is loaded, scans are running
            started += proc.stderr.read1(256) if proc.poll() is None else b"predict:"
        proc.send_signal(signum)
        err = (started + proc.communicate(timeout=60)[1]).decode(errors="replace")
        assert proc.returncode == 128 + signum, err[-2000:]
        assert "Traceback" not in err and f"stopped by {signum.name}" in err
        assert not out.exists() and not list(tmp_path.glob(f".{out.name}*"))


# ---- picklable errors, parallel stages, stale temp directories ------------------------------------


def test_errors_survive_pickling() -> None:
    for error in (InputError("a.nii", "bad"), ModelFileError("m/model.json", "worse")):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and (again.path, again.reason, str(again)) == (
            error.path, error.reason, str(error))


def test_parallel_preprocess_reports_the_missing_t1(tiny_study: Path, tmp_path: Path) -> None:
    table = pd.read_csv(tiny_study / "subjects.csv", keep_default_na=False)
    table.loc[1, "t1"] = str(tmp_path / "gone" / "orig.mgz")
    table.to_csv(tmp_path / "subjects.csv", index=False)
    with pytest.raises(InputError, match=r"gone/orig\.mgz: file not found"):
        build_cache(tmp_path / "subjects.csv", PreprocessConfig(voxel_size=10.0, shape=(18, 22, 18), workers=2),
                    tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob(".cache*"))


def test_temp_dirs_of_killed_runs_are_removed(tmp_path: Path) -> None:
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = tmp_path / f".cache.tmp-{dead.stdout.strip()}-{host}.abc123"
    live = tmp_path / f".cache.tmp-{os.getppid()}-{host}.def456"    # a running process: kept
    other_host = tmp_path / f".cache.tmp-{dead.stdout.strip()}-elsewhere.ghi789"
    for d in (stale, live, other_host):
        (d / "part").mkdir(parents=True)
    with atomic_dir(tmp_path / "cache") as tmp:
        (tmp / "x").write_text("x")
    assert not stale.exists() and live.exists() and other_host.exists()
    assert (tmp_path / "cache" / "x").read_text() == "x"


# ---- model-file budget ---------------------------------------------------------------------------


def _tampered_json(model_dir: Path, tmp_path: Path, edit: dict) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken, dirs_exist_ok=True)
    document = json.loads((broken / "model.json").read_text())
    for dotted, value in edit.items():
        *parents, key = dotted.split(".")
        node = document
        for p in parents:
            node = node[p]
        node[key] = value
    (broken / "model.json").write_text(json.dumps(document))
    return broken


@pytest.mark.parametrize("edit, reason", [
    ({"model.meshnet.channels": 10**6}, "budget"),
    ({"model.n_outputs": 10**9}, "budget"),
    ({"model.meshnet.head": "grid", "model.meshnet.grid_size": 2000}, "parameters"),
    ({"model.meshnet.dilations": [1] * 100_000}, "entries"),
    ({"preprocess.shape": [4096, 4096, 4096]}, "grid"),
    ({"target_scaling.mean": [float("nan")] * N_REGIONS}, "target_scaling"),
    ({"target_scaling.mean": [-1e6] * N_REGIONS}, "target_scaling"),
])
def test_model_json_beyond_the_budget_exits_2_quickly(tmp_path: Path, model_dir: Path, edit: dict,
                                                      reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _tampered_json(model_dir, tmp_path, edit)
    scan = _save(tmp_path, "t1.nii.gz", head(0))
    start = time.perf_counter()
    status, out, err = predict(capsys, broken, str(scan))
    assert time.perf_counter() - start < 5
    assert status == 2 and out == "" and reason in err and len(err.strip().splitlines()) == 1


def test_foreign_or_nan_weights_exit_2(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scan = _save(tmp_path, "t1.nii.gz", head(0))
    broken = tmp_path / "m"
    shutil.copytree(model_dir, broken)
    (broken / "model.pt").write_text("twenty bytes of text")
    status, _, err = predict(capsys, broken, str(scan))
    assert status == 2 and "model.pt" in err and len(err.strip().splitlines()) == 1
    state = torch.load(model_dir / "model.pt", weights_only=True)
    next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    torch.save(state, broken / "model.pt")
    status, _, err = predict(capsys, broken, str(scan))
    assert status == 2 and "NaN/Inf" in err


# ---- ingest stats --------------------------------------------------------------------------------


def _edit_stats(path: Path, region: str, value: str | None = None, duplicate: bool = False) -> None:
    lines = path.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.split()[:1] == [region])
    fields = lines[i].split()
    if value is not None:
        fields[3] = value                                       # GrayVol is the 4th column
        lines[i] = " ".join(fields)
    if duplicate:
        lines.append(lines[i].replace(fields[3], str(float(fields[3]) * 2)))
    path.write_text("\n".join(lines) + "\n")


def test_ingest_refuses_implausible_stats_with_reasons(tiny_cohort: Path, tmp_path: Path) -> None:
    root = tmp_path / "subjects"
    shutil.copytree(tiny_cohort, root)
    stats = {s: root / s / "stats" / "lh.aparc.stats" for s in ("sub-0001", "sub-0002", "sub-0003",
                                                                "sub-0004", "sub-0005")}
    _edit_stats(stats["sub-0001"], "cuneus", "nan")
    _edit_stats(stats["sub-0002"], "insula", "inf")
    _edit_stats(stats["sub-0003"], "fusiform", "-120")
    _edit_stats(stats["sub-0004"], "precuneus", duplicate=True)
    shutil.copy(root / "sub-0005" / "stats" / "rh.aparc.stats", stats["sub-0005"])   # '# hemi rh'
    table = ingest(IngestConfig(subjects_dir=str(root)), tmp_path / "s.csv", tmp_path / "x.csv")
    assert table["subject"].tolist() == ["sub-0006"]
    reasons = pd.read_csv(tmp_path / "x.csv").set_index("subject")["reason"]
    assert "GrayVol of cuneus nan is not a positive finite" in reasons["sub-0001"]
    assert "inf is not" in reasons["sub-0002"] and "-120 is not" in reasons["sub-0003"]
    assert "precuneus is listed twice" in reasons["sub-0004"]
    assert "hemi rh" in reasons["sub-0005"]
    path = tmp_path / "zero.stats"
    shutil.copy(root / "sub-0006" / "stats" / "lh.aparc.stats", path)
    _edit_stats(path, "bankssts", "0")
    with pytest.raises(InputError, match="0 is not a positive"):
        read_aparc_stats(path)


def test_ingest_that_excludes_everyone_writes_the_reasons(tiny_cohort: Path, tmp_path: Path) -> None:
    root = tmp_path / "subjects"
    shutil.copytree(tiny_cohort, root)
    for orig in root.glob("sub-*/mri/orig.mgz"):
        orig.write_bytes(orig.read_bytes()[:100])
    with pytest.raises(InputError, match="none of 6 subjects") as err:
        ingest(IngestConfig(subjects_dir=str(root)), tmp_path / "s.csv", tmp_path / "x.csv")
    assert str(tmp_path / "x.csv") in str(err.value)
    assert len(pd.read_csv(tmp_path / "x.csv")) == 6 and not (tmp_path / "s.csv").exists()


def test_ingest_excludes_a_subject_whose_header_nibabel_cannot_parse(tiny_cohort: Path, tmp_path: Path) -> None:
    root = tmp_path / "subjects"
    shutil.copytree(tiny_cohort, root)
    orig = root / "sub-0002" / "mri" / "orig.mgz"
    raw = _mgz_bytes(orig)
    raw[20:24] = struct.pack(">i", 99)                          # unknown MGH datatype: KeyError
    orig.write_bytes(gzip.compress(bytes(raw)))
    table = ingest(IngestConfig(subjects_dir=str(root)), tmp_path / "s.csv", tmp_path / "x.csv")
    assert len(table) == 5 and "sub-0002" not in set(table["subject"])
    excluded = pd.read_csv(tmp_path / "x.csv").set_index("subject")
    assert "KeyError" in excluded.loc["sub-0002", "reason"] and "orig.mgz" in excluded.loc["sub-0002", "file"]
