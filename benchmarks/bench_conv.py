"""Time one MeshNet-21 training step per sample on CPU: fast dilated conv vs plain nn.Conv3d.

Variants, timed in interleaved rounds (so machine noise hits all alike), median of N per variant:
  plain     nn.Conv3d, default (channels-first) layout -- what a naive MeshNet does
  plain_cl  nn.Conv3d with channels_last_3d activations -- the gain from the memory layout alone
  fast      FastDilatedConv3d (space-to-batch for dilation > 1, channels_last kernels), the default

Usage: python benchmarks/bench_conv.py --out FILE [--grids 32 48] [--batch 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gmvol.models import MeshNetConfig, ModelConfig, build_model, count_parameters
from gmvol.models.fast_conv import relayout

VARIANTS: dict[str, tuple[bool, bool]] = {
    "plain": (False, False),
    "plain_cl": (False, True),
    "fast": (True, False),
}
"""Variant -> (fast_dilation, run the activations in channels_last_3d)."""


def training_step(fast: bool, channels_last: bool, grid: int, batch: int) -> Callable[[], None]:
    """A closure running forward + MSE + backward of a fresh MeshNet-21 on a random batch."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="meshnet", meshnet=MeshNetConfig(fast_dilation=fast))).train()
    if channels_last:
        # A 1-channel input is both layouts at once and the first conv answers channels-first,
        # so switch its output to channels_last; the later convs keep that layout.
        model.blocks[0].conv.register_forward_hook(lambda _m, _i, out: relayout(out, channels_last=True))
    x = torch.randn(batch, 1, grid, grid, grid)
    y = torch.randn(batch, 68)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()

    return step


def time_grid(grid: int, batch: int, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per sample of each variant at one grid size."""
    steps = {name: training_step(fast, cl, grid, batch) for name, (fast, cl) in VARIANTS.items()}
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) / batch for name, t in times.items()}


def parameter_counts() -> dict[str, int]:
    """Parameters of each default model. All end in adaptive/global pooling, so the count is the
    same at every grid size (checked by running a 48^3 forward pass of each)."""
    counts = {}
    for name in ("meshnet", "baseline", "resnet"):
        model = build_model(ModelConfig(name=name)).eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, 48, 48, 48))
        counts[name] = count_parameters(model)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grids", type=int, nargs="+", default=[32, 48], help="cubic grid sides")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    rows = []
    print(f"MeshNet-21 training step, s/sample (batch {args.batch}, {args.threads} threads, "
          f"median of {args.repeats})")
    print(f"{'grid':>6} {'plain':>9} {'plain_cl':>9} {'fast':>9} {'plain/fast':>11}")
    for grid in args.grids:
        t = time_grid(grid, args.batch, args.repeats, args.warmup)
        row = {"grid": grid, **{f"{k}_s_per_sample": v for k, v in t.items()},
               "speedup_plain_over_fast": t["plain"] / t["fast"]}
        rows.append(row)
        print(f"{grid:>5}^3 {t['plain']:>9.3f} {t['plain_cl']:>9.3f} {t['fast']:>9.3f} "
              f"{row['speedup_plain_over_fast']:>10.2f}x", flush=True)

    counts = parameter_counts()
    print("parameters (same at 48^3 and 256^3): " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    result = {"batch": args.batch, "threads": args.threads, "repeats": args.repeats, "warmup": args.warmup,
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
              "results": rows, "parameters": counts}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
