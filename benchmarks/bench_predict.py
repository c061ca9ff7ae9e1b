"""Seconds per scan of `gmvol predict`, stage by stage: read, conform, normalise, forward, write.

Grids: the default study's (from params.yaml); the paper's 1 mm 256^3 with MeshNet-21 (pool
head), and 1 mm 256^3 with the default study's MeshNet (16 channels, which fill AVX-512 vectors;
21 channels fill two thirds of them). Inputs, both made from one synthetic 1 mm subject: a FreeSurfer `orig.mgz` (256^3, scanner
noise fills the whole field) and an HCP-like NIfTI cut to a 182x218x182 mm field of view, whose
conformed 256^3 grid has exactly empty margins. Weights are random: speed does not depend on them.

Model variants: `naive` is the model as trained (BatchNorm separate, whole grid); `fast` is what
`gmvol predict` runs: BatchNorm folded, and the trunk cropped to the non-empty box when that
saves voxels (same predictions; `trunk_voxel_fraction` says how much ran); `fast-bf16` adds
`--precision bf16` (`max_rel_change_vs_naive` is its largest relative change of a regional volume).
Then the whole `Predictor` (threads reading and conforming the next scans during the forward
pass) runs over several scans of the first input, for the overlap. On CPU every variant keeps
freed memory for the next scan (`gmvol.heap`, as `gmvol predict` does) unless --no-heap.

Usage: python benchmarks/bench_predict.py --out FILE [--device cpu|cuda] [--grids default 1mm 1mm-meshnet16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from common import median_seconds, print_table, sync, write_result

from gmvol.config import read_params
from gmvol.data.dataset import TargetScaler
from gmvol.data.preprocess import PreprocessSpec, normalize, resample
from gmvol.io import load_volume, write_csv
from gmvol.models import build_model, model_config_from_dict
from gmvol.models.checkpoint import save_model
from gmvol.predict import Predictor, ScanResult, volumes_table
from gmvol.regions import N_REGIONS, REGION_COLUMNS
from gmvol.synth.cohort import SynthConfig, subject_name, synthesize_one

PAPER_MODEL = {"name": "meshnet", "meshnet": {"channels": 21, "head": "pool"}}
PAPER_SPEC = PreprocessSpec(voxel_size=1.0, shape=(256, 256, 256))
HCP_FOV_MM = (182, 218, 182)
VARIANTS = {"naive": (None, "fp32"), "fast": (0.0, "fp32"), "fast-bf16": (0.0, "bf16")}
"""Variant -> (crop threshold, precision); threshold None: the model as trained, no folding, no crop."""
COLUMNS = ["grid", "input", "variant", "read_s", "conform_s", "normalise_s", "forward_s", "write_s",
           "end_to_end_s", "overlapped_s_per_scan", "trunk_voxel_fraction", "max_rel_change_vs_naive"]


def default_grid(params: Path) -> tuple[dict, PreprocessSpec]:
    """The default study's MeshNet config and preprocessing grid, from params.yaml."""
    p = read_params(params)
    model = dict(p["models"]["meshnet"])
    model.pop("train", None)
    spec = p["preprocess"]
    return model, PreprocessSpec(voxel_size=spec["voxel_size"], shape=tuple(spec["shape"]))


def make_inputs(work: Path) -> dict[str, Path]:
    """A 1 mm synthetic orig.mgz and the same head as an HCP-like field-of-view NIfTI."""
    synthesize_one(SynthConfig(voxel_size=1.0), 0, work)
    orig = work / subject_name(0) / "mri" / "orig.mgz"
    img = nib.load(orig)
    ras = nib.as_closest_canonical(img)
    data = np.asarray(ras.dataobj, dtype=np.float32)
    start = [(n - f) // 2 for n, f in zip(data.shape, HCP_FOV_MM)]
    cut = data[tuple(slice(s, s + f) for s, f in zip(start, HCP_FOV_MM))]
    affine = ras.affine.copy()
    affine[:3, 3] = ras.affine[:3, :3] @ np.array(start) + ras.affine[:3, 3]
    fov = work / f"{subject_name(0)}_T1w.nii.gz"
    nib.save(nib.Nifti1Image(cut, affine), fov)
    return {"orig.mgz": orig, "hcp_fov.nii.gz": fov}


def save_random_model(directory: Path, model_dict: dict, spec: PreprocessSpec) -> Path:
    """A model directory like training writes, with random weights."""
    torch.manual_seed(0)
    cfg = model_config_from_dict(model_dict)
    scaler = TargetScaler(np.full(N_REGIONS, 5000.0), np.full(N_REGIONS, 1000.0))
    save_model(directory, build_model(cfg).eval(), cfg,
               {"preprocess": spec.to_dict(), "target_scaling": scaler.to_dict(), "regions": list(REGION_COLUMNS)})
    return directory


def stage_times(predictor: Predictor, path: Path, out: Path, repeats: int,
                forward_repeats: int) -> tuple[dict[str, float], np.ndarray]:
    """Median seconds of each stage for one scan, and the predicted volumes."""
    spec, device = predictor.spec, predictor.device
    img = load_volume(path)
    img.get_fdata(dtype=np.float32)
    conformed = resample(img, spec, order=1).astype(np.float32)
    image = normalize(conformed, spec)
    volumes = predictor._forward([image])

    def read() -> None:
        load_volume(path).get_fdata(dtype=np.float32)

    def forward() -> None:
        predictor._forward([image])

    def write() -> None:
        write_csv(volumes_table([ScanResult(path.stem, path, volumes[0], None)]), out)

    times = {
        "read_s": median_seconds(read, repeats, warmup=0),
        "conform_s": median_seconds(lambda: resample(img, spec, order=1).astype(np.float32), repeats, warmup=0),
        "normalise_s": median_seconds(lambda: normalize(conformed, spec), repeats, warmup=0),
        "forward_s": median_seconds(forward, forward_repeats, warmup=0, device=device),
        "write_s": median_seconds(write, repeats, warmup=0),
    }
    times["end_to_end_s"] = sum(times.values())
    return times, volumes[0]


def overlapped(predictor: Predictor, path: Path, n_scans: int) -> float:
    """Seconds per scan of Predictor.predict_files over `n_scans` copies (prefetch threads on)."""
    paths = [path] * n_scans
    start = time.perf_counter()
    predictor.predict_files(paths, [f"s{i}" for i in range(n_scans)])
    sync(predictor.device)
    return (time.perf_counter() - start) / n_scans


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--grids", nargs="+", default=["default", "1mm", "1mm-meshnet16"],
                        choices=("default", "1mm", "1mm-meshnet16"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-heap", action="store_true", help="let malloc return freed memory (ablation)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage (median)")
    parser.add_argument("--forward-repeats-1mm", type=int, default=1,
                        help="timed 256^3 forward passes (after one untimed pass inside the set-up)")
    parser.add_argument("--scans", type=int, default=3, help="scans for the overlapped Predictor run")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        inputs = make_inputs(work)
        print(f"inputs synthesised in {time.perf_counter() - started:.1f} s")
        default_model, default_spec = default_grid(args.params)
        grids = {"default": (default_model, default_spec), "1mm": (PAPER_MODEL, PAPER_SPEC),
                 "1mm-meshnet16": (default_model, PAPER_SPEC)}
        for grid in args.grids:
            model_dict, spec = grids[grid]
            model_dir = save_random_model(work / f"model-{grid}", model_dict, spec)
            forward_repeats = args.forward_repeats_1mm if grid.startswith("1mm") else args.repeats
            for first, (input_name, path) in enumerate(inputs.items()):
                reference = None
                for variant in args.variants:
                    threshold, precision = VARIANTS[variant]
                    predictor = Predictor(model_dir, device=args.device, batch_size=1, crop_threshold=threshold,
                                          precision=precision, retain_memory=not args.no_heap)
                    if threshold is None:  # the model exactly as trained
                        predictor.model = build_model(model_config_from_dict(model_dict))
                        predictor.model.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True))
                        predictor.model = predictor.model.to(predictor.device).eval()
                    times, volumes = stage_times(predictor, path, work / "volumes.csv", args.repeats, forward_repeats)
                    reference = volumes if reference is None else reference
                    row = {"grid": grid, "input": input_name, "variant": variant, **times,
                           "trunk_voxel_fraction": getattr(predictor.model, "last_fraction", 1.0),
                           "max_rel_change_vs_naive": float(np.max(np.abs(volumes - reference) / np.abs(reference))),
                           "overlapped_s_per_scan": (overlapped(predictor, path, args.scans)
                                                     if threshold is not None and first == 0 else float("nan"))}
                    rows.append(row)
                    print_table([row], COLUMNS)
    print()
    print_table(rows, COLUMNS)
    write_result(args.out, {"device": args.device, "heap": not args.no_heap, "repeats": args.repeats,
                            "scans": args.scans, "results": rows})


if __name__ == "__main__":
    main()
