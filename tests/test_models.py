"""Tests for gmvol.models: shapes, heads, the fast dilated conv, configs, checkpoints, sizes."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gmvol.models import (
    MODEL_REGISTRY,
    BaselineConfig,
    FastDilatedConv3d,
    MeshNetConfig,
    ModelConfig,
    ResNetConfig,
    build_model,
    count_parameters,
    model_config_from_dict,
    model_config_to_dict,
)
from gmvol.models.checkpoint import ModelFileError, load_model, save_model
from gmvol.models.config import ARCH_NAMES
from gmvol.models.fast_conv import relayout
from gmvol.models.heads import CountingHead, FactoredCountingHead, PooledLinearHead
from gmvol.models.layers import ACTIVATIONS, SeparableAdaptiveAvgPool3d
from gmvol.precision import native_bf16
from gmvol.regions import N_REGIONS, REGION_COLUMNS
from gmvol.tissue import N_CLASSES

torch.set_num_threads(2)

SMALL = {  # CPU-sized variants of each model for the shape tests
    "meshnet": ModelConfig(name="meshnet", meshnet=MeshNetConfig(channels=8)),
    "baseline": ModelConfig(name="baseline", baseline=BaselineConfig(width=0.25)),
    "resnet": ModelConfig(name="resnet", resnet=ResNetConfig(base_channels=4, blocks_per_stage=1)),
}
GRIDS = [(24, 24, 24), (32, 40, 32)]


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in module.named_parameters()}


# --- registry and shapes -------------------------------------------------------------------------

def test_registry_covers_every_config_architecture() -> None:
    assert set(MODEL_REGISTRY) == set(ARCH_NAMES) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("grid", GRIDS)
def test_forward_shape(name: str, grid: tuple[int, int, int]) -> None:
    model = build_model(SMALL[name]).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, *grid)).shape == (2, 68)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_default_models_run_on_non_cubic_grids(name: str) -> None:
    model = build_model(ModelConfig(name=name)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 48, 56, 48)).shape == (1, 68)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_train_step_gives_finite_grads(name: str) -> None:
    model = build_model(dataclasses.replace(SMALL[name], n_outputs=5)).train()
    out = model(torch.randn(2, 1, 24, 28, 20))
    assert out.shape == (2, 5)
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_baseline_feature_sizes_match_the_256_recipe() -> None:
    """On the meta device (shapes only): 256^3 -> 4^3 x 192 before the flatten, as in the original."""
    model = build_model(ModelConfig(name="baseline")).to("meta")
    assert model.features(torch.empty(1, 1, 256, 256, 256, device="meta")).shape == (1, 192, 4, 4, 4)
    for n in (1, 5, 24):  # tiny grids never shrink to zero
        assert model.features(torch.empty(1, 1, n, n + 3, n, device="meta")).shape[2:] == (1, 1, 1)


def test_resnet_has_one_output_per_head_scale() -> None:
    cfg = ResNetConfig(base_channels=4, blocks_per_stage=1, n_stages=4, n_heads=3, combine="sum")
    model = build_model(ModelConfig(name="resnet", resnet=cfg)).eval()
    x = torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():
        outs = model.scale_outputs(x)
        assert len(outs) == 3
        torch.testing.assert_close(model(x), torch.stack(outs).sum(0))


# --- MeshNet heads and options -------------------------------------------------------------------

@pytest.mark.parametrize("head", ["pool", "grid", "count", "count_factored"])
@pytest.mark.parametrize("coord_channels", [False, True])
def test_meshnet_heads(head: str, coord_channels: bool) -> None:
    cfg = MeshNetConfig(channels=6, dilations=(1, 2, 1), head=head, grid_size=2, coord_channels=coord_channels)
    model = build_model(ModelConfig(meshnet=cfg)).eval()
    x = torch.randn(2, 1, 20, 24, 16)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 68)
        # The pooling heads apply the 1x1x1 conv after pooling; it must equal applying it first.
        torch.testing.assert_close(out, model.head(model.features(x)), rtol=1e-5, atol=1e-5)
    if head.startswith("count"):
        with torch.no_grad():
            volumes, classes = model.segment(x)
            model.head.emit_log_probs = True
            pred, log_probs, region_probs = model(x)
        assert log_probs.shape == (2, N_CLASSES, 20, 24, 16) and classes.shape == (2, 20, 24, 16)
        assert torch.equal(region_probs, torch.exp(log_probs[:, :68]))  # the count's and the Dice loss's
        torch.testing.assert_close(torch.exp(log_probs).sum(dim=1), torch.ones(2, 20, 24, 16))
        torch.testing.assert_close(classes, log_probs.argmax(dim=1))
        torch.testing.assert_close(pred, out)
        torch.testing.assert_close(volumes, out)
    else:
        with pytest.raises(TypeError, match="head='count'"):
            model.segment(x)


def _first_subject_fractions(study: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(true volumes (68,), dense class fractions (N_CLASSES, D, H, W), cell mm^3) of a study's first subject."""
    from gmvol.data.cell_fractions import CellFractions
    from gmvol.data.preprocess import load_fractions, read_spec

    table = pd.read_csv(study / "subjects.csv")
    subject = table["subject"].iloc[0]
    true = table.loc[table["subject"] == subject, list(REGION_COLUMNS)].to_numpy(dtype=np.float64)[0]
    spec = read_spec(study / "cache" / "spec.json")
    cell = spec.voxel_size**3
    return true, CellFractions.of(load_fractions(study / "cache", subject), spec.shape, cell).dense(), cell


def test_counting_head_is_exact_on_perfect_fractions(tiny_study: Path) -> None:
    """Logits whose softmax is a subject's true class fractions give back its true volumes, in mm^3
    and standardised with the buffers set_scaling stores."""
    true, fractions, cell = _first_subject_fractions(tiny_study)
    head = CountingHead(channels=4, n_outputs=68)
    mean, std = true * 0.9, true * 0.1
    head.set_scaling(torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32), cell)
    logits = torch.log(torch.from_numpy(fractions))[None]  # softmax(log f) = f; log 0 = -inf gives 0
    with torch.no_grad():
        volumes = head.volumes(logits)[0].double().numpy()
        standardized = head.standardize(head.volumes(logits))[0].double().numpy()
    np.testing.assert_allclose(volumes, true, rtol=1e-4)
    np.testing.assert_allclose(standardized, (true - mean) / std, atol=2e-3)
    assert (true > 0).all()


def test_factored_head_is_exact_on_perfect_fractions_and_starts_at_the_priors(tiny_study: Path) -> None:
    """Tissue log-shares and within-cortex region log-shares made from a subject's true fractions
    compose to those fractions, so the factored head counts its true volumes; and a head whose
    weights are zero after init_priors gives every voxel the priors."""
    true, fractions, cell = _first_subject_fractions(tiny_study)
    f = torch.from_numpy(fractions).double()
    half = N_REGIONS // 2
    cortex = torch.stack([f[:half].sum(0), f[half:N_REGIONS].sum(0)])
    def within(regions: torch.Tensor, share: torch.Tensor) -> torch.Tensor:  # any split where there is no cortex
        return torch.where(share > 0, regions / share.clamp_min(1e-12), torch.full_like(regions, 1.0 / half))
    raw = torch.log(torch.cat([cortex, f[N_REGIONS:], within(f[:half], cortex[0]),
                               within(f[half:N_REGIONS], cortex[1])]))[None]
    head = FactoredCountingHead(channels=4, n_outputs=N_REGIONS)
    head.set_scaling(torch.zeros(N_REGIONS), torch.ones(N_REGIONS), cell)
    with torch.no_grad():
        volumes = head.count(FactoredCountingHead.compose(raw.float()))[0].double().numpy()
    np.testing.assert_allclose(volumes, true, rtol=1e-4)

    priors = np.random.default_rng(0).dirichlet(np.ones(N_CLASSES))
    head.init_priors(priors)
    torch.nn.init.zeros_(head.classifier.weight)
    with torch.no_grad():
        probs = torch.exp(head.logits(torch.randn(1, 4, 2, 3, 2)))
    np.testing.assert_allclose(probs[0, :, 1, 2, 1].numpy(), priors, rtol=1e-5, atol=1e-7)


def test_factored_compose_gives_the_bits_of_per_slice_log_softmaxes() -> None:
    """compose splits its input (a faster backward on CPU): the same log-probabilities and the
    same gradients, bit for bit, as log-softmaxes of slices of it, and a distribution per voxel."""
    torch.manual_seed(0)
    n_tissue, half = FactoredCountingHead.N_TISSUE, N_REGIONS // 2
    raw = torch.randn(2, n_tissue + N_REGIONS, 5, 6, 7)
    grad_out = torch.randn(2, N_CLASSES, 5, 6, 7)
    results = []
    for fn in (FactoredCountingHead.compose, None):
        x = raw.clone().requires_grad_()
        if fn is None:
            tissue = torch.log_softmax(x[:, :n_tissue], dim=1)
            regions = x[:, n_tissue:]
            out = torch.cat([torch.log_softmax(regions[:, :half], dim=1) + tissue[:, 0:1],
                             torch.log_softmax(regions[:, half:], dim=1) + tissue[:, 1:2], tissue[:, 2:]], dim=1)
        else:
            out = fn(x)
        out.backward(grad_out)
        results.append((out.detach(), x.grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    torch.testing.assert_close(results[0][0].exp().sum(dim=1), torch.ones(2, 5, 6, 7))


def test_factored_head_infers_from_channels_last_features_the_bits_of_contiguous_ones() -> None:
    """Inference skips the copy to channels-first and the 75-class concatenation: the volumes and
    the label map are still those of the contiguous log-probabilities, bit for bit."""
    torch.manual_seed(0)
    head = FactoredCountingHead(8, N_REGIONS)
    head.set_scaling(torch.full((N_REGIONS,), 900.0), torch.full((N_REGIONS,), 90.0), 125.0)
    features = torch.randn(2, 8, 6, 7, 5).to(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        log_probs = FactoredCountingHead.compose(head.classifier(features).contiguous())
        expected = head.standardize(head.count(log_probs))
        volumes, classes = head.segment(features)
        assert torch.equal(head(features), expected)
    assert torch.equal(volumes, expected) and torch.equal(classes, log_probs.argmax(dim=1))


def test_pooled_head_commutes_with_pointwise_conv() -> None:
    head, conv = PooledLinearHead(5, 7, grid_size=3), nn.Conv3d(5, 5, 1)
    f = torch.randn(2, 5, 9, 10, 11)
    torch.testing.assert_close(head(f, conv), head(conv(f)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(9, 10, 11), (36, 44, 38), (3, 5, 2)])  # 3, 5, 2: fewer voxels than bins
@pytest.mark.parametrize("channels_last", [False, True])
def test_separable_pool_equals_adaptive_avg_pool(shape: tuple[int, int, int], channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    grad_out = torch.randn(2, 3, 4, 4, 4, dtype=torch.float64)
    results = []
    for pool in (SeparableAdaptiveAvgPool3d(4), nn.AdaptiveAvgPool3d(4)):
        xi = x.detach().clone().requires_grad_()
        y = pool(xi)
        y.backward(grad_out)
        results.append((y, xi.grad))
    for name, got, want in zip(("output", "input grad"), *results):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)
    assert results[0][1].is_contiguous(memory_format=torch.channels_last_3d if channels_last
                                       else torch.contiguous_format)


@pytest.mark.parametrize("grid_size", [1, 8])
def test_separable_pool_under_bf16_autocast_is_unbiased_and_fp32(grid_size: int) -> None:
    """Autocast pools in fp32 (as PyTorch's pooling): bf16 bin sums are rounded once, with exact
    0/1 weights, so errors stay within bf16 rounding and do not add up to a scale bias."""
    torch.manual_seed(0)
    features = torch.relu(torch.randn(2, 16, 20, 22, 19)).bfloat16().contiguous(memory_format=torch.channels_last_3d)
    exact = nn.AdaptiveAvgPool3d(grid_size)(features.double())
    with torch.autocast("cpu", torch.bfloat16):
        pooled = SeparableAdaptiveAvgPool3d(grid_size)(features)
    assert pooled.dtype == torch.float32
    error = (pooled.double() - exact) / exact.abs().max()
    assert error.abs().max() < 2**-8 and abs(float(error.mean())) < 1e-4
    assert SeparableAdaptiveAvgPool3d(grid_size)(features).dtype == torch.bfloat16  # no autocast: input's dtype


@pytest.mark.parametrize("activation", ["relu", "elu", "gelu"])
def test_meshnet_activations(activation: str) -> None:
    """The configured activation is the one in the trunk, and it shapes the output."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(meshnet=MeshNetConfig(channels=4, activation=activation, dropout=0.1)))
    kinds = {type(m) for m in model.modules()} & set(ACTIVATIONS.values())
    assert kinds == {ACTIVATIONS[activation]}
    x = torch.randn(2, 1, 16, 16, 16)
    assert model(x).shape == (2, 68)
    relu = build_model(ModelConfig(meshnet=MeshNetConfig(channels=4, activation="relu", dropout=0.1)))
    relu.load_state_dict(model.state_dict())  # same weights: only the activation differs
    same = torch.allclose(model.eval()(x), relu.eval()(x))
    assert same == (activation == "relu")


@pytest.mark.parametrize("channels", [6, 16])  # 16: the whole trunk runs channels_last
def test_fast_and_plain_meshnet_share_weights_and_outputs(channels: int) -> None:
    torch.manual_seed(0)
    fast = build_model(ModelConfig(meshnet=MeshNetConfig(channels=channels, fast_dilation=True))).train()
    plain = build_model(ModelConfig(meshnet=MeshNetConfig(channels=channels, fast_dilation=False))).train()
    assert any(getattr(m, "channels_last_output", False) for m in fast.modules()) == (channels == 16)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 1, 19, 24, 17)
    out_fast, out_plain = fast(x), plain(x)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-4, atol=1e-5)
    out_fast.sum().backward()
    out_plain.sum().backward()
    for k, g in _grads(plain).items():
        torch.testing.assert_close(_grads(fast)[k], g, rtol=1e-3, atol=1e-4, msg=k)


@pytest.mark.parametrize("channels", [6, 16])  # 16: the context sees channels_last features
def test_global_context_starts_as_the_plain_trunk_then_learns_scan_wide_modulation(channels: int) -> None:
    torch.manual_seed(0)
    with_context = build_model(ModelConfig(meshnet=MeshNetConfig(channels=channels, context_after=(2, 5))))
    plain = build_model(ModelConfig(meshnet=MeshNetConfig(channels=channels)))
    missing, unexpected = plain.load_state_dict(with_context.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("contexts.") for k in unexpected)
    x = torch.randn(2, 1, 16, 18, 16)
    torch.testing.assert_close(with_context.eval()(x), plain.eval()(x))  # zero-initialised: the identity
    optimizer = torch.optim.SGD(with_context.parameters(), lr=0.1)
    with_context.train()(x).square().mean().backward()
    last = with_context.contexts["5"].mlp[2]
    assert last.weight.grad.abs().sum() > 0  # the pooled statistics receive a gradient
    optimizer.step()
    out = with_context.eval()(x)
    assert not torch.allclose(out, plain.eval()(x))
    # the modulation is per scan: a scan's output does not depend on its batch neighbour
    torch.testing.assert_close(with_context(x[:1]), out[:1], rtol=1e-4, atol=1e-5)


def test_checkpointing_matches_and_counts_batchnorm_stats_once() -> None:
    torch.manual_seed(0)
    cfgs = [MeshNetConfig(channels=6, dilations=(1, 2, 1), dropout=0.2, checkpointing=c) for c in (False, True)]
    plain, ckpt = (build_model(ModelConfig(meshnet=c)).train() for c in cfgs)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 16, 16, 16)
    outs = []
    for model in (plain, ckpt):
        torch.manual_seed(1)  # same Dropout3d masks
        outs.append(model(x))
        outs[-1].sum().backward()
    torch.testing.assert_close(outs[0], outs[1])
    for k, g in _grads(plain).items():
        torch.testing.assert_close(_grads(ckpt)[k], g, rtol=1e-4, atol=1e-5, msg=k)
    for k, v in plain.state_dict().items():  # running stats and num_batches_tracked included
        if "running" in k:
            torch.testing.assert_close(ckpt.state_dict()[k], v, msg=k)


# --- the fast dilated convolution ---------------------------------------------------------------

@pytest.mark.parametrize("dilation", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(13, 17, 11), (16, 5, 24)])  # lengths (not) multiples of the dilation
def test_fast_conv_equals_conv3d(dilation: int, dtype: torch.dtype, channels_last: bool,
                                 shape: tuple[int, int, int]) -> None:
    torch.manual_seed(dilation)
    fast = FastDilatedConv3d(5, 6, 3, dilation=dilation).to(dtype)
    ref = nn.Conv3d(5, 6, 3, padding=dilation, dilation=dilation).to(dtype)
    assert fast.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 5, *shape, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    grad_out = torch.randn(2, 6, *shape, dtype=dtype)
    results = []
    for conv in (fast, ref):
        xi = x.detach().clone().requires_grad_()
        y = conv(xi)
        y.backward(grad_out)
        results.append((y.detach(), xi.grad, conv.weight.grad, conv.bias.grad))
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for name, got, want in zip(("output", "input grad", "weight grad", "bias grad"), *results):
        scale = float(want.abs().max())  # weight grads sum ~1e4 products: compare relative to scale
        torch.testing.assert_close(got / scale, want / scale, **tol, msg=name)
    y_fast = results[0][0]
    assert y_fast.is_contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
    with torch.no_grad():  # the inference path
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dilation", [2, 8])  # 2: bf16 weight gradient; 8: 2x3x2 sub-grids, fp32 one
def test_fast_conv_under_bf16_autocast_is_as_exact_as_bf16_allows(dilation: int) -> None:
    """Under CPU autocast the convolutions run in bf16 (8-bit mantissa: within 1% of exact), except
    the weight gradient of sub-grids thinner than the kernel (oneDNN's bf16 kernel returns garbage
    there: fp32 instead), and the bias gradient with it."""
    torch.manual_seed(dilation)
    fast = FastDilatedConv3d(16, 16, 3, dilation=dilation)
    exact = nn.Conv3d(16, 16, 3, padding=dilation, dilation=dilation).double()
    exact.load_state_dict(fast.state_dict())
    x = torch.randn(2, 16, 13, 17, 11).contiguous(memory_format=torch.channels_last_3d)
    grad_out = torch.randn(2, 16, 13, 17, 11)
    xi = x.detach().clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16):
        y = fast(xi)
    assert y.dtype == torch.bfloat16
    y.float().backward(grad_out)
    x64 = x.to(torch.bfloat16).double().requires_grad_()  # what the bf16 convolution sees
    y64 = exact(x64)
    y64.backward(grad_out.to(torch.bfloat16).double())  # the gradient reaches a bf16 output in bf16
    # without AVX512-BF16/AMX oneDNN's reference bf16 kernels round partial sums: gradients within
    # 1.5% of scale there (AMD Zen 3, dilations 1-8), against 1% on native hardware; garbage is O(1)
    grad_tol = 1e-2 if native_bf16("cpu") else 2.5e-2
    for name, got, want, tol in (("output", y.float(), y64, 1e-2), ("input grad", xi.grad, x64.grad, grad_tol),
                                 ("weight grad", fast.weight.grad, exact.weight.grad, grad_tol),
                                 ("bias grad", fast.bias.grad, exact.bias.grad, grad_tol)):
        assert torch.isfinite(got).all(), name
        scale = float(want.abs().max())
        torch.testing.assert_close(got.double() / scale, want / scale, rtol=0, atol=tol, msg=name)


def test_fast_conv_kernel_5_keeps_width_phases_apart() -> None:
    """A 5-wide kernel reaches 2 voxels across the zeros between width phases of space_to_batch."""
    torch.manual_seed(0)
    fast = FastDilatedConv3d(3, 4, 5, dilation=4).double()
    ref = nn.Conv3d(3, 4, 5, padding=8, dilation=4).double()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(1, 3, 9, 10, 23, dtype=torch.float64)
    for conv in (fast, ref):
        conv(x).square().sum().backward()
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-10, atol=1e-10)


def test_relayout_gives_one_channel_inputs_channels_last_strides_without_copying() -> None:
    x = torch.randn(2, 1, 4, 5, 6)  # contiguous in both layouts; oneDNN goes by the strides
    y = relayout(x, channels_last=True)
    assert y.data_ptr() == x.data_ptr() and y.stride() == (120, 1, 30, 6, 1)
    weight = FastDilatedConv3d(1, 16, 3).weight
    assert nn.functional.conv3d(y, weight, padding=1).is_contiguous(memory_format=torch.channels_last_3d)
    assert relayout(x[:0], channels_last=True).shape == (0, 1, 4, 5, 6)  # an empty batch too
    torch.testing.assert_close(y, x)


def test_fast_conv_rejects_even_kernels() -> None:
    with pytest.raises(ValueError, match="odd"):
        FastDilatedConv3d(1, 1, 2)


# --- configs --------------------------------------------------------------------------------------

def test_config_round_trips_through_json() -> None:
    cfg = ModelConfig(
        name="resnet", n_outputs=12,
        meshnet=MeshNetConfig(channels=30, dilations=(1, 2, 4, 8, 16, 8, 4, 2, 1), activation="elu",
                              head="count", coord_channels=True, checkpointing=True, fast_dilation=False,
                              context_after=(0, 4)),
        baseline=BaselineConfig(width=0.5, dropout=0.1),
        resnet=ResNetConfig(base_channels=8, n_stages=3, n_heads=2, combine="sum"))
    d = model_config_to_dict(cfg)
    assert model_config_from_dict(json.loads(json.dumps(d))) == cfg
    assert d["meshnet"]["dilations"] == [1, 2, 4, 8, 16, 8, 4, 2, 1]
    assert d["meshnet"]["context_after"] == [0, 4]
    assert model_config_from_dict({}) == ModelConfig()
    assert model_config_from_dict({"meshnet": {"dropout": 0}}).meshnet.dropout == 0.0


@pytest.mark.parametrize("bad, match", [
    ({"nmae": "meshnet"}, r"unknown key\(s\) \['nmae'\]"),
    ({"meshnet": {"chanels": 21}}, r"model\.meshnet: unknown key"),
    ({"name": "unet"}, "model name must be one of"),
    ({"meshnet": {"channels": "21"}}, r"model\.meshnet\.channels: expected an int"),
    ({"meshnet": {"checkpointing": 1}}, "expected true or false"),
    ({"meshnet": {"dilations": [1, "2"]}}, r"dilations\[1\]"),
    ({"meshnet": {"activation": "tanh"}}, "activation must be one of"),
    ({"meshnet": {"head": "mlp"}}, "head must be one of"),
    ({"resnet": {"n_heads": 9}}, "n_heads"),
    ({"meshnet": {"context_after": [7]}}, r"context_after must name distinct blocks in \[0, 7\)"),
    ({"meshnet": {"context_after": [2, 2]}}, "context_after must name distinct blocks"),
    ({"baseline": []}, "expected a mapping"),
])
def test_config_errors_are_clear(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        model_config_from_dict(bad)


# --- checkpoints ----------------------------------------------------------------------------------

@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, nn.Module, ModelConfig]:
    cfg = ModelConfig(meshnet=MeshNetConfig(channels=5, dilations=(1, 2), head="grid", grid_size=2))
    model = build_model(cfg)
    model.train()(torch.randn(2, 1, 12, 12, 12))  # move the BatchNorm running stats off defaults
    save_model(tmp_path / "m", model, cfg, {"epoch": 3, "targets": ["lh_bankssts"]})
    return tmp_path / "m", model.eval(), cfg


def test_checkpoint_round_trip(saved: tuple[Path, nn.Module, ModelConfig]) -> None:
    directory, model, cfg = saved
    assert sorted(p.name for p in directory.iterdir()) == ["model.json", "model.pt"]  # no temp files left
    loaded, document = load_model(directory)
    assert not loaded.training
    assert document["format_version"] == 1 and document["epoch"] == 3
    assert model_config_from_dict(document["model"]) == cfg
    x = torch.randn(2, 1, 14, 12, 10)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def _break_json(directory: Path) -> None:
    (directory / "model.json").write_text('{"format_version": 1, "model": {"name": "mesh')


def _unknown_key(directory: Path) -> None:
    doc = json.loads((directory / "model.json").read_text())
    doc["model"]["meshnet"]["depth"] = 3
    (directory / "model.json").write_text(json.dumps(doc))


def _other_architecture(directory: Path) -> None:
    doc = json.loads((directory / "model.json").read_text())
    doc["model"]["meshnet"]["channels"] = 7
    (directory / "model.json").write_text(json.dumps(doc))


def _truncate_weights(directory: Path) -> None:
    path = directory / "model.pt"
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("tamper, file, match", [
    (lambda d: (d / "model.json").unlink(), "model.json", "file not found"),
    (lambda d: (d / "model.pt").unlink(), "model.pt", "file not found"),
    (_break_json, "model.json", "not valid JSON"),
    (_unknown_key, "model.json", "invalid model config.*unknown key"),
    (_truncate_weights, "model.pt", "not a readable PyTorch state_dict"),
    (lambda d: (d / "model.pt").write_bytes(pickle.dumps(Path("x"), protocol=2)), "model.pt", "not a PyTorch state_dict"),
    (lambda d: torch.save([torch.ones(1)], d / "model.pt"), "model.pt", "does not hold a state_dict"),
    (lambda d: (d / "model.pt").write_bytes(b""), "model.pt", "file is empty"),
    (_other_architecture, "model.pt", "does not match the config"),
])
def test_broken_model_directories_raise(saved: tuple[Path, nn.Module, ModelConfig], tamper, file: str,
                                        match: str) -> None:
    directory = saved[0]
    tamper(directory)
    with pytest.raises(ModelFileError, match=match) as info:
        load_model(directory)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert message.startswith(str(directory / file))


def test_save_refuses_reserved_metadata(tmp_path: Path) -> None:
    cfg = SMALL["meshnet"]
    with pytest.raises(ValueError, match="reserved"):
        save_model(tmp_path, build_model(cfg), cfg, {"model": "x"})


# --- sizes ----------------------------------------------------------------------------------------

def test_parameter_counts() -> None:
    assert 9_000_000 <= count_parameters(build_model(ModelConfig(name="baseline"))) <= 10_000_000
    meshnet = count_parameters(build_model(ModelConfig(name="meshnet")))
    assert 70_000 <= meshnet <= 80_000  # 72k trunk (Fedorov 2017) + a 1.5k linear head
    assert count_parameters(build_model(ModelConfig(name="resnet"))) < 5_000_000
