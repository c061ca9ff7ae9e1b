"""Where a counting MeshNet's training step goes: preparing an item, forward, losses, backward.

Real items from the preprocessing cache (augmented as params.yaml trains meshnet_count: flip,
shift, intensity, zoom), the default model in bf16 autocast, batch 4, 2 threads; the median of
--steps steps after one warm-up step. Needs `dvc repro preprocess` first.

Usage: python benchmarks/bench_count_step.py --out FILE [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from gmvol.data.dataset import CachedFractions, TargetScaler, VolumeDataset, load_images, volumes_of
from gmvol.data.preprocess import read_spec
from gmvol.data.split import fit_subjects
from gmvol.heap import retain_freed_memory
from gmvol.models import build_model
from gmvol.training.config import training_configs
from gmvol.training.counting import class_priors, counting_criteria, counting_head, prepare_counting

MODEL = "meshnet_count"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path("data/cache"))
    parser.add_argument("--train", type=Path, default=Path("data/split/train.csv"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    retain_freed_memory()
    params = yaml.safe_load(Path("params.yaml").read_text())
    model_cfg, cfg = training_configs(params["train"], params["models"][MODEL], MODEL)
    table = fit_subjects(pd.read_csv(args.train))
    part = table.head(4 * (args.steps + 1))
    spec = read_spec(args.cache / "spec.json")
    cell = spec.voxel_size**3
    fractions = CachedFractions(args.cache, part["subject"].tolist())
    data = VolumeDataset(load_images(args.cache, part["subject"].tolist()), volumes_of(part),
                         TargetScaler.fit(volumes_of(table)), cfg.augment, fractions, cell)
    torch.manual_seed(0)
    model = build_model(model_cfg)
    prepare_counting(counting_head(model), data.scaler, spec.voxel_size,
                     class_priors(fractions, int(np.prod(spec.shape)), cell))
    criteria = counting_criteria(data.scaler, volumes_of(table))
    weights = {"volume": cfg.volume_weight, "segmentation": cfg.segmentation_weight, "dice": cfg.dice_weight,
               "total": cfg.total_weight}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    times: dict[str, list[float]] = {"item_s": [], "forward_s": [], "losses_s": [], "backward_s": []}
    for step in range(args.steps + 1):
        start = time.perf_counter()
        items = [data[4 * step + i] for i in range(4)]
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        prepared = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred, log_probs, region_probs = model(batch["image"])
        forward = time.perf_counter()
        inputs = {"volume": pred.float(), "total": pred.float(), "segmentation": log_probs, "dice": region_probs}
        target = {"volume": batch["target"], "total": batch["target"]}
        loss = sum(weights[k] * criteria[k](inputs[k], target.get(k, batch["fractions"])) for k in weights)
        losses = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done = time.perf_counter()
        if step:  # the first step warms up
            for key, value in zip(times, ((prepared - start) / 4, forward - prepared, losses - forward, done - losses)):
                times[key].append(value)
    result = {key: round(statistics.median(values), 4) for key, values in times.items()}
    result["step_s"] = round(4 * result["item_s"] + result["forward_s"] + result["losses_s"] + result["backward_s"], 4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": MODEL, "batch_size": 4, "grid": list(spec.shape), **result}, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
