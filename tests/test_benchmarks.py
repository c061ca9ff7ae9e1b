"""The benchmark scripts read the study's params: a renamed model must not break them unseen."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_training_benchmark_variant_builds_from_the_default_params() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_train
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from gmvol.models import build_model, model_config_from_dict

    todo = bench_train.variants(ROOT / "params.yaml", cpu=True, cuda=True)
    labels = {v["label"] for v in todo}
    assert {"meshnet fast bf16 +heap", "meshnet plain fp32", "baseline fp32 +heap"} <= labels
    assert all(slow in labels and fast in labels for slow, fast in bench_train.SPEEDUPS)
    for variant in todo:
        model = build_model(model_config_from_dict(variant["model"]))
        assert sum(p.numel() for p in model.parameters()) > 0, variant["label"]
