"""Training seconds per sample and peak memory, per model and per speed option.

One training step = forward, MSE, backward and an AdamW step on a random batch. Every variant runs
in its own subprocess (so peak memory is its own: RSS growth on CPU, max_memory_allocated on
CUDA). The variants are timed in interleaved rounds -- each round runs every variant once, as the
median of --repeats steps after warm-up -- and the result is the median over rounds, so that
machine noise hits all variants alike.

CPU, default grid (from params.yaml), MeshNet side by side: plain nn.Conv3d vs the fast dilated
path (FastDilatedConv3d), each in fp32 and bf16 autocast, with and without gradient checkpointing,
with and without keeping freed memory (gmvol.heap, what training on CPU does); MeshNet-21 (the
paper's width); the baseline and resnet. Then MeshNet-21 at 128^3 for memory per sample (x8
estimates 256^3). CUDA (when present): every model at the default grid and at 1 mm 256^3, fp32 vs
bf16 AMP, with and without checkpointing.

Usage: python benchmarks/bench_train.py --out FILE [--rounds 3] [--repeats 5] [--match REGEX]
       [--cuda-only] [--cpu-only]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import median_seconds, print_table, sync, write_result

from gmvol.config import read_params
from gmvol.heap import retain_freed_memory
from gmvol.models import build_model, model_config_from_dict

PAPER_MESHNET = {"name": "meshnet", "meshnet": {"channels": 21, "head": "pool"}}
FULL_GRID = (256, 256, 256)
SPEEDUPS = (
    ("meshnet plain fp32", "meshnet fast bf16 +heap"),   # the CPU training path vs a plain model
    ("meshnet plain fp32 +heap", "meshnet fast bf16 +heap"),
    ("meshnet plain fp32 +heap", "meshnet fast fp32 +heap"),  # the convolution alone, fp32
    ("meshnet plain bf16 +heap", "meshnet fast bf16 +heap"),  # the convolution alone, bf16
    ("meshnet fast bf16", "meshnet fast bf16 +heap"),     # the heap alone
    ("meshnet plain fp32 +ckpt", "meshnet fast bf16 +heap +ckpt"),
    ("meshnet-21 plain fp32 +heap", "meshnet-21 fast bf16 +heap"),
    ("meshnet fast fp32 +heap +context", "meshnet fast fp32 +heap"),  # the cost of meshnet.context_after
)
"""(slower, faster) label pairs whose ratio is reported."""


def variants(params: Path, cpu: bool, cuda: bool) -> list[dict[str, Any]]:
    """Every (model, grid, options) combination to time."""
    p = read_params(params)
    grid = tuple(p["preprocess"]["shape"])
    batch = int(p["train"]["batch_size"])
    # the direct-regression MeshNet of the default study (its grid head) stands for "meshnet"
    models = {label: {k: v for k, v in p["models"][name].items() if k != "train"}
              for label, name in (("meshnet", "meshnet_grid"), ("baseline", "baseline"))}
    models["resnet"] = {"name": "resnet"}
    out: list[dict[str, Any]] = []

    def add(label: str, model: dict, device: str, grid: tuple, batch: int, **opts: Any) -> None:
        out.append({"label": label, "model": model, "device": device, "grid": list(grid), "batch": batch,
                    "fast": True, "checkpointing": False, "amp": False, "heap": device == "cpu", **opts})

    def meshnet(base: dict, **cfg: Any) -> dict:
        return {"name": "meshnet", "meshnet": {**base["meshnet"], **cfg}}

    if cpu:
        for name, base in (("meshnet", models["meshnet"]), ("meshnet-21", PAPER_MESHNET)):
            for fast in (False, True):
                for amp in (False, True):
                    if name == "meshnet-21" and fast != amp:
                        continue  # the paper's width: plain fp32 vs the fast path only
                    label = f"{name} {'fast' if fast else 'plain'} {'bf16' if amp else 'fp32'} +heap"
                    add(label, meshnet(base, fast_dilation=fast), "cpu", grid, batch, fast=fast, amp=amp)
        m = models["meshnet"]
        add("meshnet plain fp32", meshnet(m, fast_dilation=False), "cpu", grid, batch, fast=False, heap=False)
        add("meshnet fast bf16", m, "cpu", grid, batch, amp=True, heap=False)
        add("meshnet plain fp32 +ckpt", meshnet(m, fast_dilation=False, checkpointing=True), "cpu", grid, batch,
            fast=False, checkpointing=True, heap=False)
        add("meshnet fast bf16 +heap +ckpt", meshnet(m, checkpointing=True), "cpu", grid, batch, amp=True,
            checkpointing=True)
        add("meshnet fast fp32 +heap +context", meshnet(m, context_after=[2, 5]), "cpu", grid, batch)
        add("baseline fp32 +heap", models["baseline"], "cpu", grid, batch)
        add("resnet fp32 +heap", models["resnet"], "cpu", grid, batch)
        # Memory of the paper's model per sample, for the full-scale profile: activations grow
        # with the voxel count, so 128^3 x 8 estimates 256^3 where no GPU is at hand.
        for amp, ckpt in ((False, False), (True, False), (True, True)):
            add(f"meshnet-21 128^3 {'bf16' if amp else 'fp32'}{' +ckpt' if ckpt else ''}",
                meshnet(PAPER_MESHNET, checkpointing=ckpt), "cpu", (128, 128, 128), 1, amp=amp,
                checkpointing=ckpt, repeats=1, rounds=1)
    if cuda:
        for name, model in (("meshnet", models["meshnet"]), ("baseline", models["baseline"]),
                            ("resnet", models["resnet"])):
            for amp in (False, True):
                add(f"{name} {'bf16' if amp else 'fp32'}", model, "cuda", grid, batch, amp=amp)
        for amp in (False, True):
            for ckpt in (False, True):
                add(f"meshnet-21 256^3 {'bf16' if amp else 'fp32'}{' +ckpt' if ckpt else ''}",
                    meshnet(PAPER_MESHNET, checkpointing=ckpt), "cuda", FULL_GRID, 1, amp=amp, checkpointing=ckpt)
        add("meshnet-21 256^3 bf16 +ckpt batch 4", meshnet(PAPER_MESHNET, checkpointing=True), "cuda", FULL_GRID, 4,
            amp=True, checkpointing=True)
        for amp in (False, True):
            add(f"baseline 256^3 {'bf16' if amp else 'fp32'}", {"name": "baseline"}, "cuda", FULL_GRID, 1, amp=amp)
            add(f"resnet 256^3 {'bf16' if amp else 'fp32'}", {"name": "resnet"}, "cuda", FULL_GRID, 1, amp=amp)
    return out


def rss_mib() -> float:
    """Current resident memory of this process (MiB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run_one(v: dict[str, Any], repeats: int, threads: int) -> dict[str, Any]:
    """Time one variant in this process (called in a fresh subprocess)."""
    torch.set_num_threads(threads)
    if v["heap"]:
        retain_freed_memory()
    device = torch.device(v["device"])
    torch.manual_seed(0)
    model = build_model(model_config_from_dict(v["model"])).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as gmvol.training.loop
    x = torch.rand(v["batch"], 1, *v["grid"], device=device)
    y = torch.randn(v["batch"], 68, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=v["amp"]):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        optimizer.step()

    before = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - start
    seconds = median_seconds(step, repeats, warmup=1, device=device)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before)
    return {"s_per_sample": seconds / v["batch"], "first_step_s": first, "peak_mib": peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="JSON file to write (required unless --one)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant and round (median)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median over them)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--match", help="only the variants whose label matches this regular expression")
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--cuda-only", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one), args.repeats, args.threads)))
        return
    if args.out is None:
        parser.error("--out is required")
    cuda = torch.cuda.is_available() and not args.cpu_only
    todo = [v for v in variants(args.params, cpu=not args.cuda_only, cuda=cuda)
            if args.match is None or re.search(args.match, v["label"])]
    runs: dict[str, list[dict[str, Any]]] = {v["label"]: [] for v in todo}
    errors: dict[str, str] = {}
    columns = ["label", "device", "grid", "batch", "s_per_sample", "first_step_s", "peak_mib"]
    for round_index in range(args.rounds):
        for v in todo:
            if round_index >= v.get("rounds", args.rounds) or v["label"] in errors:
                continue
            done = subprocess.run([sys.executable, __file__, "--one", json.dumps(v), "--threads", str(args.threads),
                                   "--repeats", str(v.get("repeats", args.repeats))],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{v['label']}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                errors[v["label"]] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
                continue
            runs[v["label"]].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_index + 1}: {v['label']}: {runs[v['label']][-1]['s_per_sample']:.4f} s/sample",
                  flush=True)
    rows = []
    for v in todo:
        row = {**v, "grid": "x".join(map(str, v["grid"])), "rounds": len(runs[v["label"]])}
        if v["label"] in errors:
            row["error"] = errors[v["label"]]
        for key in ("s_per_sample", "first_step_s", "peak_mib"):
            if runs[v["label"]]:
                row[key] = statistics.median(r[key] for r in runs[v["label"]])
        rows.append(row)
    by_label = {r["label"]: r.get("s_per_sample") for r in rows}
    ratios = {f"{slow} / {fast}": by_label[slow] / by_label[fast]
              for slow, fast in SPEEDUPS if by_label.get(slow) and by_label.get(fast)}
    # the same ratio within each round (both timed minutes apart at most), then its spread
    per_round = {f"{slow} / {fast}": [a["s_per_sample"] / b["s_per_sample"] for a, b in zip(runs[slow], runs[fast])]
                 for slow, fast in SPEEDUPS if runs.get(slow) and runs.get(fast)}
    print()
    print_table(rows, columns)
    for k, r in ratios.items():
        rounds = ", ".join(f"{x:.2f}" for x in per_round.get(k, []))
        print(f"speed-up {k}: {r:.2f}x (per round: {rounds})")
    write_result(args.out, {"repeats": args.repeats, "rounds": args.rounds, "threads": args.threads,
                            "results": rows, "speedups": ratios, "speedups_per_round": per_round})


if __name__ == "__main__":
    main()
