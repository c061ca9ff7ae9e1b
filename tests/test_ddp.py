"""DDP through Catalyst's engine on CPU: 2 gloo processes must train like 1 process at the same
global batch and seed.

The model is the BatchNorm-free baseline with dropout 0 (BatchNorm would use per-process batch
statistics, and SyncBatchNorm refuses CPU tensors in torch 2.13), augmentation is off, and 4
training / 2 validation subjects with a global batch of 2 give full batches only (accelerate tops
an incomplete last batch up with samples from the epoch's start), so the two runs compute the same
thing up to float32 summation order: gloo averages two 1-sample gradients where one process takes
the mean over 2 samples.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest
import torch

from gmvol.data.dataset import AugmentConfig
from gmvol.models import build_model, model_config_from_dict
from gmvol.training.config import TrainConfig
from gmvol.training.ddp import resolve_layout
from gmvol.training.loop import train_model

BASELINE = {"name": "baseline", "baseline": {"width": 0.05, "dropout": 0.0}}
# The runs differ only by float32 summation order (~1e-7 relative per operation); after 4 Adam
# steps the largest weight difference measured is 3e-7. The tolerance leaves ~30x margin for other
# CPUs' kernels, yet a wrong update shows: each Adam step moves a weight by about its learning rate
# (4e-4 at the first OneCycle step, 1e-2 at the peak), so a rank that steps on its own half batch
# (gradients not averaged; measured 1.7e-2 off), ranks that share one set of weights (2.2e-2 off)
# or that shuffle differently (4.8e-3 off) fail the comparison.
RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(autouse=True)
def _gloo_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gloo finds its interface by resolving the hostname, which fails on some CI runners; the
    test runs on one machine, so loopback does (the spawned ranks inherit the environment)."""
    if "GLOO_SOCKET_IFNAME" not in os.environ and "lo" in {name for _, name in socket.if_nameindex()}:
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")


@pytest.fixture(scope="module")
def ddp_table(tiny_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 6 cached subjects: 4 in fold train, 2 in fold valid (whole batches of 2)."""
    table = pd.read_csv(tiny_study / "subjects.csv").sort_values("subject").reset_index(drop=True)
    table["fold"] = ["train"] * 4 + ["valid"] * 2
    path = tmp_path_factory.mktemp("ddp") / "train.csv"
    table.to_csv(path, index=False)
    return path


def _train(study: Path, table: Path, out: Path, **overrides: object) -> dict:
    settings = {"seed": 5, "epochs": 2, "batch_size": 2, "lr": 1e-2, "scheduler": "onecycle",
                "augment": AugmentConfig(flip=False, shift_voxels=0, intensity=0.0), **overrides}
    cfg = TrainConfig(**settings)  # type: ignore[arg-type]
    return train_model(model_config_from_dict(BASELINE), cfg, table, study / "cache", out / "model",
                       out / "curves.csv", out / "metrics.json")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_two_gloo_processes_train_like_one(tiny_study: Path, ddp_table: Path, tmp_path: Path) -> None:
    single = _train(tiny_study, ddp_table, tmp_path / "single", engine="cpu")
    ddp = _train(tiny_study, ddp_table, tmp_path / "ddp", engine="ddp", ddp_processes=2,
                 ddp_backend="gloo")

    # really two processes, and rank 0 wrote every output
    assert single["world_size"] == 1 and ddp["world_size"] == 2 and ddp["engine"] == "ddp"
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text()) == ddp
    for name in ("model/model.pt", "model/last.pt", "model/model.json", "curves.csv"):
        assert (tmp_path / "ddp" / name).is_file(), name

    torch.manual_seed(5)
    init = build_model(model_config_from_dict(BASELINE)).state_dict()
    for file in ("model.pt", "last.pt"):
        one, two = _weights(tmp_path / "single" / "model" / file), _weights(tmp_path / "ddp" / "model" / file)
        assert one.keys() == two.keys()
        moved = max(float((one[k] - init[k]).abs().max()) for k in one)
        diff = max(float((one[k] - two[k]).abs().max()) for k in one)
        print(f"{file}: max |single - ddp| = {diff:.2e}, max |trained - init| = {moved:.2e}")
        assert moved > 100 * ATOL  # so a wrong update (>= the first step's lr, 4e-4) cannot hide
        for k in one:
            torch.testing.assert_close(two[k], one[k], rtol=RTOL, atol=ATOL, msg=k)

    # the validation loss is reduced across ranks (mean of per-rank means of equal-sized shards)
    curves = [pd.read_csv(tmp_path / run / "curves.csv") for run in ("single", "ddp")]
    pd.testing.assert_frame_equal(curves[0], curves[1], rtol=RTOL, atol=ATOL)
    assert ddp["valid_loss"] == pytest.approx(single["valid_loss"], rel=RTOL)


def test_ddp_refuses_a_global_batch_it_cannot_share(tiny_study: Path, ddp_table: Path,
                                                    tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="divisible by the 2 DDP processes"):
        _train(tiny_study, ddp_table, tmp_path, engine="ddp", ddp_processes=2, ddp_backend="gloo",
               batch_size=3)


def test_multi_node_layout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="NODE_RANK"):
        resolve_layout(processes=2, backend="gloo", nodes=3)
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.7")
    with pytest.raises(ValueError, match="fixed port"):
        resolve_layout(processes=2, backend="gloo", nodes=3)
    monkeypatch.setenv("MASTER_PORT", "29400")
    layout = resolve_layout(processes=2, backend="gloo", nodes=3)
    assert (layout.world_size, layout.first_rank, layout.address, layout.port) == (6, 2, "10.0.0.7", 29400)
