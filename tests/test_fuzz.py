"""Seeded fuzzing of the two input boundaries: scans (the loader and `gmvol predict`) and model
directories (the model loader and `gmvol predict`).

360 mutated `.mgz`, `.nii.gz` and `.nii` files (header bytes and bits, datatype, dimension,
voxel-size, affine, scaling and offset fields, voxel data, compressed-stream bit flips,
truncation, trailing bytes) and 64 mutated model directories. Asserted: nothing but the project's
own errors escapes; every file whose gzip CRC/length fails is refused; the good scan run beside
the mutants gets exactly the row of a clean run. `FUZZ_SUMMARY` holds the counts of the last run.
"""

from __future__ import annotations

import gzip
import json
import pickle
import re
import shutil
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from test_predict import head, predict, save_tiny_model

from gmvol.io import InputError, load_t1
from gmvol.models.checkpoint import ModelFileError
from gmvol.predict import Predictor

SEED = 14
N_SCANS = 360
CHUNK = 60
FUZZ_SUMMARY: dict[str, Counter] = {}

# (offset, struct format) of header fields; NIfTI-1 is little-endian as nibabel writes it, MGH big
NIFTI_FIELDS = {"dim": (40, "<8h"), "datatype": (70, "<h"), "bitpix": (72, "<h"), "pixdim": (76, "<8f"),
                "vox_offset": (108, "<f"), "scl": (112, "<2f"), "codes": (252, "<2h"),
                "quatern": (256, "<6f"), "srow": (280, "<12f"), "magic": (344, "4s"), "sizeof_hdr": (0, "<i")}
MGH_FIELDS = {"dims": (4, ">4i"), "type": (20, ">i"), "goodras": (28, ">h"), "delta": (30, ">3f"),
              "mdc": (42, ">9f"), "center": (78, ">3f"), "version": (0, ">i")}
NIFTI_TYPES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 255, -1]
MGH_TYPES = [0, 1, 2, 3, 4, 5, 6, 7, 99, -1, 2**31 - 1]
ODD_INTS = [0, -1, 1, 2, 3, 4, 5, 7, 8, 255, 1000, 32767, -32768]
ODD_FLOATS = [0.0, -1.0, -8.0, 1e-9, 1e-3, 1000.0, 1e30, float("nan"), float("inf"), -float("inf"), 4.0]


def _set_field(raw: bytearray, field: tuple[int, str], rng: np.random.Generator, pool: list) -> None:
    """Overwrite one element of a header field with a value from `pool` (ints or floats)."""
    offset, fmt = field
    values = list(struct.unpack_from(fmt, raw, offset))
    i = int(rng.integers(len(values)))
    values[i] = pool[int(rng.integers(len(pool)))]
    kind = fmt[-1]
    if kind in "hi":
        limit = 2 ** (8 * struct.calcsize(fmt[0] + kind) - 1)
        values[i] = int(np.clip(int(values[i]) if np.isfinite(values[i]) else 0, -limit, limit - 1))
    struct.pack_into(fmt, raw, offset, *values)


# ---- scan mutators: (uncompressed bytes, is_mgh, rng) -> bytes, or on the compressed stream ----


def _header_byte(raw: bytearray, mgh: bool, rng: np.random.Generator) -> bytes:
    raw[int(rng.integers(90 if mgh else 348))] = int(rng.integers(256))
    return bytes(raw)


def _header_bit(raw: bytearray, mgh: bool, rng: np.random.Generator) -> bytes:
    raw[int(rng.integers(90 if mgh else 348))] ^= 1 << int(rng.integers(8))
    return bytes(raw)


def _datatype(raw: bytearray, mgh: bool, rng: np.random.Generator) -> bytes:
    if mgh:
        _set_field(raw, MGH_FIELDS["type"], rng, MGH_TYPES)
    else:
        _set_field(raw, NIFTI_FIELDS["datatype"], rng, NIFTI_TYPES)
        if rng.random() < 0.5:
            _set_field(raw, NIFTI_FIELDS["bitpix"], rng, [0, 8, 16, 24, 32, 64, 128, -8])
    return bytes(raw)


def _dimension(raw: bytearray, mgh: bool, rng: np.random.Generator) -> bytes:
    field = MGH_FIELDS["dims"] if mgh else NIFTI_FIELDS["dim"]
    _set_field(raw, field, rng, ODD_INTS + [10**6, 2**31 - 1] if mgh else ODD_INTS)
    return bytes(raw)


def _geometry(raw: bytearray, mgh: bool, rng: np.random.Generator) -> bytes:
    names = ["delta", "mdc", "center", "goodras"] if mgh else ["pixdim", "srow", "quatern", "codes"]
    name = names[int(rng.integers(len(names)))]
    field = (MGH_FIELDS if mgh else NIFTI_FIELDS)[name]
    _set_field(raw, field, rng, ODD_INTS if field[1][-1] in "hi" else ODD_FLOATS)
    return bytes(raw)


def _scaling_or_offset(raw: bytearray, mgh: bool, rng: np.random.Generator) -> bytes:
    if mgh:
        _set_field(raw, MGH_FIELDS["version"], rng, ODD_INTS)
    else:
        name = ["scl", "vox_offset", "magic", "sizeof_hdr"][int(rng.integers(4))]
        if name == "magic":
            struct.pack_into("4s", raw, 344, [b"ni1\0", b"n+2\0", b"xxxx"][int(rng.integers(3))])
        else:
            _set_field(raw, NIFTI_FIELDS[name], rng, ODD_FLOATS + [351.0, 352.0, 1e9] if name != "sizeof_hdr"
                       else [0, 540, 347, -348, 2**31 - 1])
    return bytes(raw)


def _voxel_data(raw: bytearray, mgh: bool, rng: np.random.Generator) -> bytes:
    start = 284 if mgh else 352
    choice = int(rng.integers(4))
    if choice == 0:
        raw[start:] = bytes(len(raw) - start)                      # all zero
    elif choice == 1:
        raw[start:] = rng.integers(0, 256, len(raw) - start, dtype=np.uint8).tobytes()
    elif choice == 2:
        raw[start:] = bytes([int(rng.integers(256))]) * (len(raw) - start)
    else:
        at = start + int(rng.integers(len(raw) - start - 4))
        raw[at:at + 4] = struct.pack(">f" if mgh else "<f", float("nan"))
    return bytes(raw)


def _stream_bit(blob: bytearray, rng: np.random.Generator) -> bytes:
    """A bit of the compressed stream: deflate data, CRC or length trailer (not the gzip header)."""
    at = 10 + int(rng.integers(len(blob) - 10))
    blob[at] ^= 1 << int(rng.integers(8))
    return bytes(blob)


def _truncate(blob: bytearray, rng: np.random.Generator) -> bytes:
    return bytes(blob[: int(rng.integers(1, len(blob)))])


def _trailing(blob: bytearray, rng: np.random.Generator) -> bytes:
    return bytes(blob) + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()


RAW_MUTATORS: dict[str, Callable[[bytearray, bool, np.random.Generator], bytes]] = {
    "header_byte": _header_byte, "header_bit": _header_bit, "datatype": _datatype, "dimension": _dimension,
    "geometry": _geometry, "scaling_offset": _scaling_or_offset, "voxel_data": _voxel_data}
STREAM_MUTATORS: dict[str, Callable[[bytearray, np.random.Generator], bytes]] = {
    "stream_bit": _stream_bit, "truncate": _truncate, "trailing": _trailing}
FORMATS = (".mgz", ".nii.gz", ".nii")


def _base_files(directory: Path) -> dict[str, bytes]:
    """Uncompressed bytes of clean scans in each format and a few datatypes."""
    img = head(5)
    data = img.get_fdata(dtype=np.float32)
    images = {".mgz": [nib.MGHImage(data.astype(np.uint8), img.affine), nib.MGHImage(data, img.affine)],
              ".nii": [nib.Nifti1Image(data, img.affine), nib.Nifti1Image(data.astype(np.int16), img.affine)]}
    images[".nii.gz"] = images[".nii"]
    out = {}
    for ext, variants in images.items():
        for i, variant in enumerate(variants):
            path = directory / f"base{i}{ext}"
            nib.save(variant, path)
            blob = path.read_bytes()
            out[f"{ext}:{i}"] = gzip.decompress(blob) if ext != ".nii" else blob
    return out


def make_scan_mutants(directory: Path, n: int = N_SCANS, seed: int = SEED) -> list[tuple[Path, str]]:
    """`n` mutated scans, cycling over formats and mutators: (path, mutator name)."""
    rng = np.random.default_rng(seed)
    bases = _base_files(directory)
    plan = [(ext, m) for m in [*RAW_MUTATORS, *STREAM_MUTATORS] for ext in FORMATS
            if not (ext == ".nii" and m in ("stream_bit", "trailing"))]
    mutants = []
    for i in range(n):
        ext, name = plan[i % len(plan)]
        raw = bytearray(bases[f"{ext}:{int(rng.integers(2))}"])
        mgh = ext == ".mgz"
        if name in RAW_MUTATORS:
            raw = bytearray(RAW_MUTATORS[name](raw, mgh, rng))
            blob = gzip.compress(bytes(raw), mtime=0) if ext != ".nii" else bytes(raw)
        else:
            stream = bytearray(gzip.compress(bytes(raw), mtime=0) if ext != ".nii" else raw)
            blob = STREAM_MUTATORS[name](stream, rng)
        path = directory / f"m{i:03d}_{name}{ext}"
        path.write_bytes(blob)
        mutants.append((path, name))
    return mutants


def gzip_fails(path: Path) -> bool:
    """What `gzip -t` says: the stream of a gzip-named file does not decompress with valid CRC/length."""
    if not path.name.endswith((".gz", ".mgz")):
        return False
    try:
        gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error):
        return True
    return False


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("fuzz_model"))


def test_fuzzed_scans_through_loader_and_predict(tmp_path: Path, model_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    mutants = make_scan_mutants(tmp_path)
    counts: Counter = Counter()
    accepted, escaped = set(), []
    for path, name in mutants:
        try:
            load_t1(path)
            accepted.add(path)
            counts["accepted"] += 1
        except InputError as exc:
            counts[f"refused: {_reason_kind(exc.reason)}"] += 1
            assert exc.path == str(path)
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            escaped.append(f"{path.name}: {type(exc).__name__}: {exc}")
        if gzip_fails(path):
            counts["gzip CRC/length failed"] += 1
            assert path not in accepted, f"{path.name} fails gzip -t but was accepted"
    assert not escaped, escaped[:5]
    assert counts["gzip CRC/length failed"] >= 20 and len(accepted) >= 20   # both kinds exercised

    good = tmp_path / "good.nii.gz"
    nib.save(head(6), good)
    status, clean, _ = predict(capsys, model_dir, str(good), "--batch-size", "1")
    assert status == 0
    for start in range(0, len(mutants), CHUNK):
        chunk = [p for p, _ in mutants[start:start + CHUNK]]
        status, out, err = predict(capsys, model_dir, *map(str, chunk[: CHUNK // 2]), str(good),
                                   *map(str, chunk[CHUNK // 2:]), "--batch-size", "1")
        assert status in (0, 1) and "Traceback" not in err and "internal error" not in err
        table = pd.read_csv(StringIO(out), dtype={"subject": str})
        rows = dict(zip(table["subject"], out.splitlines()[1:]))
        assert rows["good"] == clean.splitlines()[1]                 # identical to the clean run
        predicted = {p for p in chunk if p.name.split(".")[0] in rows}
        assert predicted <= accepted & set(chunk)                    # a refused scan gets no row
        assert not any(gzip_fails(p) for p in predicted)
        for refused in set(chunk) - accepted:
            assert str(refused) in err
    counts["tried"] = len(mutants)
    FUZZ_SUMMARY["scans"] = counts
    print("\nscan fuzz:", dict(sorted(counts.items())))


def _reason_kind(reason: str) -> str:
    """A short category of a refusal reason, for the summary: the third-party exception type the
    loader caught, else the reason's first words."""
    caught = re.search(r"\(([A-Za-z_]\w*): ", reason)
    return caught.group(1) if caught else " ".join(reason.split()[:3])


# ---- model directories -------------------------------------------------------------------------


def _json_edit(**changes: object) -> Callable[[Path, np.random.Generator], None]:
    def edit(directory: Path, _rng: np.random.Generator) -> None:
        document = json.loads((directory / "model.json").read_text())
        for dotted, value in changes.items():
            *parents, key = dotted.split("__")
            node = document
            for p in parents:
                node = node.setdefault(p, {})
            node[key] = value
        (directory / "model.json").write_text(json.dumps(document))
    return edit


def _json_bytes(directory: Path, rng: np.random.Generator) -> None:
    text = bytearray((directory / "model.json").read_bytes())
    for _ in range(int(rng.integers(1, 4))):
        text[int(rng.integers(len(text)))] = int(rng.choice(list(b'{}[]":,0123456789-.eE ntfa')))
    (directory / "model.json").write_bytes(bytes(text))


def _json_truncate(directory: Path, rng: np.random.Generator) -> None:
    text = (directory / "model.json").read_bytes()
    (directory / "model.json").write_bytes(text[: int(rng.integers(len(text)))])


def _json_deep(directory: Path, _rng: np.random.Generator) -> None:
    (directory / "model.json").write_text("[" * 100_000 + "]" * 100_000)


def _pt_flip(directory: Path, rng: np.random.Generator) -> None:
    blob = bytearray((directory / "model.pt").read_bytes())
    for _ in range(int(rng.integers(1, 3))):
        blob[int(rng.integers(len(blob)))] ^= 1 << int(rng.integers(8))
    (directory / "model.pt").write_bytes(bytes(blob))


def _pt_truncate(directory: Path, rng: np.random.Generator) -> None:
    blob = (directory / "model.pt").read_bytes()
    (directory / "model.pt").write_bytes(blob[: int(rng.integers(len(blob)))])


def _pt_bytes(content: bytes) -> Callable[[Path, np.random.Generator], None]:
    def write(directory: Path, _rng: np.random.Generator) -> None:
        (directory / "model.pt").write_bytes(content)
    return write


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("executed",))


def _pt_state(change: Callable[[dict], None], legacy: bool = False) -> Callable[[Path, np.random.Generator], None]:
    def write(directory: Path, _rng: np.random.Generator) -> None:
        state = torch.load(directory / "model.pt", weights_only=True)
        change(state)
        torch.save(state, directory / "model.pt", _use_new_zipfile_serialization=not legacy)
    return write


def _first_float(state: dict) -> str:
    return next(k for k, v in state.items() if v.is_floating_point())


MODEL_MUTATORS: dict[str, Callable[[Path, np.random.Generator], None]] = {
    "channels_1e6": _json_edit(model__meshnet__channels=10**6),
    "outputs_1e9": _json_edit(model__n_outputs=10**9),
    "outputs_10": _json_edit(model__n_outputs=10),
    "grid_head_2000": _json_edit(model__meshnet__head="grid", model__meshnet__grid_size=2000),
    "dilations_1e5": _json_edit(model__meshnet__dilations=[1] * 100_000),
    "dilation_zero": _json_edit(model__meshnet__dilations=[0]),
    "channels_negative": _json_edit(model__meshnet__channels=-4),
    "channels_text": _json_edit(model__meshnet__channels="four"),
    "channels_float": _json_edit(model__meshnet__channels=4.5),
    "channels_null": _json_edit(model__meshnet__channels=None),
    "baseline_width": _json_edit(model__name="baseline", model__baseline__width=1e9),
    "resnet_stages": _json_edit(model__name="resnet", model__resnet__n_stages=4000,
                                model__resnet__n_heads=1),
    "resnet_blocks": _json_edit(model__name="resnet", model__resnet__blocks_per_stage=4096),
    "unknown_arch": _json_edit(model__name="transformer"),
    "unknown_key": _json_edit(model__meshnet__wings=2),
    "model_list": _json_edit(model=[1, 2, 3]),
    "format_version": _json_edit(format_version=2),
    "grid_huge": _json_edit(preprocess__shape=[4096, 4096, 4096]),
    "grid_small": _json_edit(preprocess__shape=[2, 2, 2]),
    "grid_2d": _json_edit(preprocess__shape=[16, 16]),
    "grid_text": _json_edit(preprocess__shape="big"),
    "voxel_zero": _json_edit(preprocess__voxel_size=0),
    "voxel_negative": _json_edit(preprocess__voxel_size=-8),
    "preprocess_unknown": _json_edit(preprocess__sharpen=True),
    "normalization": _json_edit(preprocess__normalization="zscore"),
    "scaling_nan": _json_edit(target_scaling__mean=[float("nan")] * 68),
    "scaling_inf_std": _json_edit(target_scaling__std=[float("inf")] * 68),
    "scaling_negative": _json_edit(target_scaling__mean=[-1e6] * 68),
    "scaling_zero_std": _json_edit(target_scaling__std=[0.0] * 68),
    "scaling_short": _json_edit(target_scaling__mean=[100.0] * 10),
    "scaling_text": _json_edit(target_scaling__mean="many"),
    "scaling_missing": _json_edit(target_scaling=None),
    "regions_reversed": lambda d, r: _json_edit(regions=json.loads((d / "model.json").read_text())["regions"][::-1])(d, r),
    "regions_missing": _json_edit(regions=[]),
    "json_deep": _json_deep,
    "json_text": lambda d, r: (d / "model.json").write_text("not json"),
    "json_array": lambda d, r: (d / "model.json").write_text("[]"),
    "json_missing": lambda d, r: (d / "model.json").unlink(),
    "pt_missing": lambda d, r: (d / "model.pt").unlink(),
    "pt_empty": _pt_bytes(b""),
    "pt_text_20": _pt_bytes(b"twenty bytes of text"),
    "pt_random": _pt_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()),
    "pt_pickle_evil": _pt_bytes(pickle.dumps(_Evil())),
    "pt_pickle_dict": _pt_bytes(pickle.dumps({"a": 1})),
    "pt_zip_of_junk": lambda d, r: zipfile.ZipFile(d / "model.pt", "w").writestr("data.pkl", b"junk"),
    "state_nan": _pt_state(lambda s: s[_first_float(s)].view(-1).__setitem__(0, float("nan"))),
    "state_inf": _pt_state(lambda s: s[_first_float(s)].view(-1).__setitem__(-1, float("inf"))),
    "state_missing_key": _pt_state(lambda s: s.pop(_first_float(s))),
    "state_extra_key": _pt_state(lambda s: s.__setitem__("extra.weight", torch.zeros(3))),
    "state_wrong_shape": _pt_state(lambda s: s.__setitem__(_first_float(s), torch.zeros(2, 2))),
    "state_int_weights": _pt_state(lambda s: s.__setitem__(_first_float(s), s[_first_float(s)].long())),
    "state_not_tensor": lambda d, r: torch.save({"a": [1, 2]}, d / "model.pt"),
    "state_legacy_format": _pt_state(lambda s: None, legacy=True),
}
for _i in range(6):
    MODEL_MUTATORS[f"json_bytes_{_i}"] = _json_bytes
    MODEL_MUTATORS[f"pt_flip_{_i}"] = _pt_flip
for _i in range(3):
    MODEL_MUTATORS[f"json_truncate_{_i}"] = _json_truncate
    MODEL_MUTATORS[f"pt_truncate_{_i}"] = _pt_truncate


def test_fuzzed_model_directories(tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(SEED)
    good = tmp_path / "good.nii.gz"
    nib.save(head(6), good)
    status, clean, _ = predict(capsys, model_dir, str(good))
    assert status == 0
    counts: Counter = Counter()
    for name, mutate in MODEL_MUTATORS.items():
        broken = tmp_path / name
        shutil.copytree(model_dir, broken)
        mutate(broken, rng)
        try:
            Predictor(broken, device="cpu")
            loaded = True
        except ModelFileError as exc:
            loaded = False
            counts[f"refused: {_reason_kind(exc.reason)}"] += 1
        status, out, err = predict(capsys, broken, str(good))
        assert "Traceback" not in err and "executed" not in out + err, name
        if loaded:  # a harmless change (padding, whitespace) or a changed number: still a row or a refusal
            counts["accepted"] += 1
            assert status in (0, 1), (name, err)
            assert status == 1 or pd.read_csv(StringIO(out))["subject"].tolist() == ["good"]
            counts["identical to clean"] += out == clean
        else:
            assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, (name, err)
    counts["tried"] = len(MODEL_MUTATORS)
    assert counts["tried"] >= 50
    FUZZ_SUMMARY["models"] = counts
    print("\nmodel fuzz:", dict(sorted(counts.items())))
