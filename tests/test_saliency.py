"""Saliency maps, centering, slicing, focus shares and panels, on tiny models and 16^3 volumes."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gmvol.regions import N_REGIONS, REGION_COLUMNS, REGION_IDS
from gmvol.saliency import (
    argmax_slices,
    focus_shares,
    focus_summary,
    plot_region_panel,
    region_saliency,
    saliency_for_subject,
    select_regions,
    subtract_mean_map,
)
from gmvol.saliency.focus import ball
from gmvol.saliency.maps import METHODS

SHAPE = (16, 16, 16)


class TinyCNN(nn.Module):
    """A small conv regressor with 68 outputs: every output depends on the whole image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                                 nn.Dropout3d(0.5), nn.Conv3d(4, 8, 3, stride=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, N_REGIONS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MaskedEnergy(nn.Module):
    """Output r = sum of x^2 over masks[r]: its true saliency lies only inside masks[r]."""

    def __init__(self, masks: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("masks", torch.as_tensor(masks, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bdhw,rdhw->br", x[:, 0] ** 2, self.masks)


def make_labels() -> np.ndarray:
    """Background border of 2 voxels; the 12^3 interior cut into 68 contiguous runs (C order)."""
    labels = np.zeros(SHAPE, dtype=np.int32)
    runs = np.array_split(np.arange(12**3), N_REGIONS)
    interior = np.zeros(12**3, dtype=np.int32)
    for rid, run in zip(REGION_IDS, runs, strict=True):
        interior[run] = rid
    labels[2:14, 2:14, 2:14] = interior.reshape(12, 12, 12)
    return labels


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).uniform(0.1, 1.0, SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return make_labels()


def own_region_model(labels: np.ndarray) -> MaskedEnergy:
    return MaskedEnergy(np.stack([labels == rid for rid in REGION_IDS]))


@pytest.fixture(scope="module")
def cnn_maps(image: np.ndarray) -> dict[str, np.ndarray]:
    """Batched maps of the tiny CNN for both methods, computed once for several tests."""
    return {m: region_saliency(TinyCNN(), image, method=m, batch_size=8, ig_steps=4) for m in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_maps_shape_and_batching_invariance(image: np.ndarray, cnn_maps: dict[str, np.ndarray],
                                            method: str) -> None:
    batched = cnn_maps[method]
    assert batched.shape == (N_REGIONS, *SHAPE) and batched.dtype == np.float32
    assert np.isfinite(batched).all() and np.abs(batched).max() > 0
    model = TinyCNN().train()  # dropout on: eval mode must be forced or batching would differ
    picks = [0, 7, 33, 67]
    single = region_saliency(model, image, method=method, batch_size=1, ig_steps=4, targets=picks)
    np.testing.assert_allclose(batched[picks], single, rtol=1e-4, atol=1e-6 * np.abs(single).max())
    assert model.training, "the caller's train/eval mode is restored"
    if method in ("saliency", "input_x_gradient"):  # magnitudes
        assert (batched >= 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_batched_targets_are_routed_to_their_own_map(image: np.ndarray, labels: np.ndarray,
                                                     method: str) -> None:
    maps = region_saliency(own_region_model(labels), image, method=method, batch_size=8, ig_steps=4)
    for r, rid in enumerate(REGION_IDS):
        inside = labels == rid
        assert np.abs(maps[r][~inside]).max() == 0
        assert (maps[r][inside] > 0).all()
    own = labels == REGION_IDS[0]
    if method == "saliency":  # d(x^2)/dx = 2x
        np.testing.assert_allclose(maps[0][own], 2 * image[own], rtol=1e-5)
    if method == "input_x_gradient":  # x * 2x: what the voxel holds weights its gradient
        np.testing.assert_allclose(maps[0][own], 2 * image[own] ** 2, rtol=1e-5)


def test_input_x_gradient_gives_empty_voxels_nothing(image: np.ndarray) -> None:
    """Air (a 0 voxel) has a gradient, but input x gradient gives it no attribution: the point of
    the method for the in-brain share, where plain saliency counts every background voxel."""
    blank = image.copy()
    blank[:4] = 0.0
    maps = {m: region_saliency(TinyCNN(), blank, method=m, targets=[0, 5]) for m in ("saliency", "input_x_gradient")}
    assert np.abs(maps["saliency"][:, :4]).max() > 0
    assert np.abs(maps["input_x_gradient"][:, :4]).max() == 0
    np.testing.assert_allclose(maps["input_x_gradient"][:, 4:], maps["saliency"][:, 4:] * blank[4:], rtol=1e-5,
                               atol=1e-9)


def test_subtract_mean_map() -> None:
    maps = np.random.default_rng(1).normal(size=(5, 4, 4, 4)).astype(np.float32)
    centered = subtract_mean_map(maps)
    np.testing.assert_allclose(centered.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(subtract_mean_map(maps, [3, 1]), centered[[3, 1]], atol=1e-6)


def test_argmax_slices_orientation() -> None:
    """RAS in, conventional display out: anterior up (axial), superior up, L left, A right."""
    vol = np.zeros((10, 12, 14), dtype=np.float32)
    x, y, z = 2, 9, 11
    vol[x, y, z] = 1.0
    index, views = argmax_slices(vol)
    assert index == (x, y, z)
    assert views["axial"].shape == (12, 10) and views["axial"][12 - 1 - y, x] == 1
    assert views["coronal"].shape == (14, 10) and views["coronal"][14 - 1 - z, x] == 1
    assert views["sagittal"].shape == (14, 12) and views["sagittal"][14 - 1 - z, y] == 1


def test_focus_shares_partition_and_ranges(cnn_maps: dict[str, np.ndarray], labels: np.ndarray) -> None:
    for maps in cnn_maps.values():
        df = focus_shares(maps, labels, REGION_IDS)
        assert list(df.columns) == ["region", "in_region", "in_brain_other", "outside_brain", "region_share",
                                    "focus_lift"]
        np.testing.assert_allclose(df["focus_lift"], df["in_region"] / df["region_share"])
        assert df["region"].tolist() == list(REGION_COLUMNS)
        shares = df[["in_region", "in_brain_other", "outside_brain"]].to_numpy()
        assert ((shares >= 0) & (shares <= 1)).all()
        np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-9)
        assert set(focus_summary(df)) == {"focus_in_region_median", "focus_lift_median", "focus_in_brain_median",
                                          "focus_outside_brain_median"}


def test_focus_detects_where_the_model_looks(image: np.ndarray, labels: np.ndarray) -> None:
    own = focus_shares(region_saliency(own_region_model(labels), image), labels, REGION_IDS)
    np.testing.assert_allclose(own["in_region"], 1.0, atol=1e-9)
    # all of it in a region that fills a few percent of the grid: a lift of 1 / that share, far above chance
    np.testing.assert_allclose(own["focus_lift"], 1.0 / own["region_share"])
    assert (own["focus_lift"] > 3).all()
    # Output r reading region r+34 (~6 mm away, beyond the 3 mm band): the share must drop.
    far = np.stack([labels == REGION_IDS[(r + N_REGIONS // 2) % N_REGIONS] for r in range(N_REGIONS)])
    df = focus_shares(region_saliency(MaskedEnergy(far), image), labels, REGION_IDS)
    assert df["in_region"].max() < 0.05 and df["in_brain_other"].min() > 0.95
    assert (df["focus_lift"] < 0.4).all()  # below chance: it looks elsewhere
    # Every output reading only the outermost shell (label 0, >1 mm from any region): "skull".
    shell = np.ones(SHAPE, dtype=bool)
    shell[1:-1, 1:-1, 1:-1] = False
    df = focus_shares(region_saliency(MaskedEnergy(np.stack([shell] * N_REGIONS)), image),
                      labels, REGION_IDS, dilate_mm=1.0)
    np.testing.assert_allclose(df["outside_brain"], 1.0, atol=1e-9)
    summary = focus_summary(df)
    assert summary["focus_outside_brain_median"] == pytest.approx(1.0)
    assert summary["focus_in_brain_median"] == pytest.approx(0.0)


def test_ball_respects_voxel_size() -> None:
    assert ball(3.0, (1, 1, 1)).shape == (7, 7, 7)
    assert ball(3.0, (1, 1, 2)).shape == (7, 7, 3)
    assert ball(3.0, (1, 1, 1)).sum() == 123  # lattice points within radius 3


def test_select_regions_best_median_worst() -> None:
    table = pd.DataFrame({"region": ["a", "b", "c", "d", "e"],
                          "normalized_loss": [0.3, 0.1, np.nan, 0.5, 0.2]})
    assert select_regions(table) == {"best": "b", "median": "e", "worst": "d"}
    assert select_regions(table.set_index("region")) == {"best": "b", "median": "e", "worst": "d"}
    with pytest.raises(ValueError):
        select_regions(table, column="mse")


def _assert_png(path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.std() > 0


def test_plot_region_panel_writes_png(tmp_path, image: np.ndarray) -> None:
    cmap = np.random.default_rng(2).normal(size=SHAPE).astype(np.float32)
    path = tmp_path / "panel.png"
    index = plot_region_panel(image, cmap, "lh_insula", path, {"normalized_loss": 0.0123})
    assert index == argmax_slices(cmap)[0]
    _assert_png(path)


def test_saliency_for_subject_end_to_end(tmp_path, image: np.ndarray, labels: np.ndarray) -> None:
    losses = np.linspace(0.01, 0.05, N_REGIONS)
    table = pd.DataFrame({"region": REGION_COLUMNS, "normalized_loss": losses[::-1]})
    summary = saliency_for_subject(own_region_model(labels), image, labels, table, tmp_path)
    for role in ("best", "median", "worst"):
        _assert_png(tmp_path / f"{role}.png")
    focus = pd.read_csv(tmp_path / "focus.csv")
    assert len(focus) == N_REGIONS
    assert summary["best_region"] == "rh_insula" and summary["worst_region"] == "lh_bankssts"
    assert summary["focus_in_region_median"] == pytest.approx(1.0)
    json.dumps(summary)  # metrics-file ready
