"""The benchmark scripts read the study's params: a renamed model must not break them unseen;
and the analyses they report compute what they say."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pandas as pd

from gmvol.data.preprocess import PreprocessSpec

ROOT = Path(__file__).resolve().parents[1]
CORTEX_ID, WHITE_ID, CSF_ID = 1035, 2, 24


def benchmark(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_every_training_benchmark_variant_builds_from_the_default_params() -> None:
    bench_train = benchmark("bench_train")
    from gmvol.models import build_model, model_config_from_dict

    todo = bench_train.variants(ROOT / "params.yaml", cpu=True, cuda=True)
    labels = {v["label"] for v in todo}
    assert {"meshnet fast bf16 +heap", "meshnet plain fp32", "baseline fp32 +heap"} <= labels
    assert all(slow in labels and fast in labels for slow, fast in bench_train.SPEEDUPS)
    for variant in todo:
        model = build_model(model_config_from_dict(variant["model"]))
        assert sum(p.numel() for p in model.parameters()) > 0, variant["label"]


def _slab(cortex_mm: int, offset_mm: int) -> nib.Nifti1Image:
    """A 1 mm label map: white matter, then a cortex of the given thickness, then CSF, along x."""
    x = np.broadcast_to(np.arange(40)[:, None, None], (40, 40, 40))
    edge = 12 + offset_mm
    labels = np.select([x < edge, x < edge + cortex_mm, x < 30 + offset_mm], [WHITE_ID, CORTEX_ID, CSF_ID], 0)
    return nib.Nifti1Image(labels.astype(np.int16), np.eye(4))


def test_cell_intensity_reader_counts_a_cortex_thicker_than_it_learned_low() -> None:
    bias = benchmark("cell_intensity_bias")
    means = np.array([0.475, 0.85, 0.175, 0.6])
    whole = bias.idealised_cells(_slab(2, 0), PreprocessSpec(voxel_size=5.0, shape=(9, 9, 9)), means)
    assert whole["cortex"].sum() * 125 == 2 * 40 * 40  # the grid covers the map: every cortex voxel is there
    spec = PreprocessSpec(voxel_size=5.0, shape=(8, 8, 8))
    cells = pd.concat([bias.idealised_cells(_slab(mm, offset), spec, means).assign(seed=seed, subject=f"{seed}{offset}")
                       for seed, mm in (("thin", 2), ("thick", 6)) for offset in range(5)])
    learned_thin = bias.seed_bias(bias.subject_estimates(cells, ["thin"], 0.85))
    # 5 mm cells of a 6 mm cortex hold pure gray matter, which a 2 mm cortex never shows: read as
    # a mix of white matter and CSF, it is counted far too low
    assert (learned_thin.loc["thick"] < -0.5).all()
    assert (learned_thin.loc["thin"].abs() < 0.05).all()
