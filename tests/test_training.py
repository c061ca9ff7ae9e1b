"""Training: augmentation, engines, a tiny 2-epoch run and the saved model's round trip."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from gmvol.composition import compose_shares, fit_composition_weight, hemisphere_shares, hemisphere_totals
from gmvol.data.dataset import AugmentConfig, TargetScaler, VolumeDataset, flip_left_right, shift, volumes_of
from gmvol.data.preprocess import PreprocessSpec
from gmvol.data.split import fit_subjects
from gmvol.models import build_model, model_config_from_dict
from gmvol.models.checkpoint import ModelFileError, load_model, save_model
from gmvol.models.heads import CountingHead
from gmvol.predict import Predictor
from gmvol.regions import REGION_COLUMNS
from gmvol.regrid import TypicalTotals
from gmvol.training.config import TrainConfig
from gmvol.training.counting import HemisphereTotalLoss
from gmvol.training.ddp import per_process_batch, resolve_layout
from gmvol.training.engine import build_engine, resolve_engine_name
from gmvol.training.loop import train_model


def test_flip_swaps_hemispheres_and_mirrors_x() -> None:
    image = np.zeros((4, 3, 2), np.float32)
    image[0, 1, 1] = 1.0
    target = np.arange(68, dtype=np.float32)
    flipped, swapped = flip_left_right(image, target)
    assert flipped[3, 1, 1] == 1.0 and flipped[0, 1, 1] == 0.0
    col = {c: i for i, c in enumerate(REGION_COLUMNS)}
    assert swapped[col["lh_insula"]] == target[col["rh_insula"]]
    assert swapped[col["rh_bankssts"]] == target[col["lh_bankssts"]]
    twice, back = flip_left_right(flipped, swapped)
    np.testing.assert_array_equal(twice, image)
    np.testing.assert_array_equal(back, target)


def test_shift_moves_content_with_zero_fill() -> None:
    image = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    out = shift(image, (1, 0, -1))
    assert out[1, 0, 0] == image[0, 0, 1] and out[0].sum() == 0 and out[:, :, 2].sum() == 0


def test_augmented_dataset_keeps_shapes_and_standardises_targets() -> None:
    volumes = np.random.default_rng(0).uniform(1000, 5000, size=(5, 68))
    scaler = TargetScaler.fit(volumes)
    data = VolumeDataset(np.random.default_rng(1).random((5, 8, 9, 10), np.float32), volumes, scaler,
                         AugmentConfig(flip=True, shift_voxels=1, intensity=0.1))
    item = data[2]
    assert item["image"].shape == (1, 8, 9, 10) and item["target"].shape == (68,)
    np.testing.assert_allclose(scaler.inverse(scaler.transform(volumes)), volumes)
    assert abs(float(data.targets.mean())) < 1e-5
    # augmentation changes the image: draws differ from the stored one and from each other
    torch.manual_seed(0)
    draws = [data[2]["image"][0].numpy() for _ in range(8)]
    assert all(not np.allclose(d, data.images[2]) for d in draws)
    assert len({d.tobytes() for d in draws}) == len(draws)
    # a flip swaps the lh/rh targets: some draws carry the mirrored target, some the original
    targets = {tuple(data[2]["target"].numpy().round(5)) for _ in range(16)}
    assert len(targets) == 2
    plain = VolumeDataset(data.images, volumes, scaler, None)
    np.testing.assert_array_equal(plain[2]["image"][0].numpy(), data.images[2])


def test_the_total_loss_charges_a_hemisphere_miscounted_and_not_volume_moved_within_one() -> None:
    rng = np.random.default_rng(0)
    volumes = rng.uniform(1000.0, 9000.0, (20, 68))
    scaler = TargetScaler.fit(volumes)
    loss = HemisphereTotalLoss(scaler.std, volumes)
    truth = volumes[:2].copy()
    moved = truth.copy()  # 500 mm^3 from one left region to another: the totals stay
    moved[:, 0] -= 500.0
    moved[:, 5] += 500.0
    standardized = lambda v: torch.as_tensor(scaler.transform(v))
    assert float(loss(standardized(moved), standardized(truth))) < 1e-8
    miscounted = truth.copy()
    miscounted[0, 40] += 2000.0  # subject 0's right hemisphere 2000 mm^3 over
    rh_sd = volumes[:, 34:].sum(axis=1).std()
    expected = (2000.0 / rh_sd) ** 2 / 4  # mean over 2 subjects x 2 hemispheres
    assert float(loss(standardized(miscounted), standardized(truth))) == pytest.approx(expected, rel=1e-3)


def test_the_composition_weight_is_fit_by_least_squares_and_keeps_each_hemisphere_total() -> None:
    rng = np.random.default_rng(3)
    predicted = rng.uniform(1000.0, 9000.0, (12, 68))
    prior = hemisphere_shares(rng.uniform(1000.0, 9000.0, (50, 68))).mean(axis=0)
    true = compose_shares(predicted, prior, 0.3)
    assert fit_composition_weight(predicted, true, prior) == pytest.approx(0.3)
    np.testing.assert_allclose(hemisphere_totals(true), hemisphere_totals(predicted))
    anchored = compose_shares(predicted, prior, 0.0)
    assert fit_composition_weight(predicted, anchored - (predicted - anchored), prior) == 0.0  # clipped at 0
    assert fit_composition_weight(predicted, predicted, prior) == 1.0
    # the head does the same in torch; unfitted (weight 1) it returns the count bit for bit
    head, counted = CountingHead(4, 68), torch.as_tensor(predicted, dtype=torch.float32)
    assert torch.equal(head.compose_shares(counted), counted)
    head.set_composition(prior, 0.3)
    np.testing.assert_allclose(head.compose_shares(counted).numpy(), true, rtol=1e-5)
    with pytest.raises(ValueError, match="weight"):
        head.set_composition(prior, 1.5)


def test_engine_is_chosen_from_params() -> None:
    from catalyst import dl

    assert isinstance(build_engine("cpu"), dl.CPUEngine)
    if not torch.cuda.is_available():
        assert resolve_engine_name("auto") == "cpu"
        with pytest.raises(ValueError, match="needs CUDA"):
            build_engine("gpu")
        with pytest.raises(ValueError, match="ddp_processes"):
            build_engine("ddp")  # one process per GPU, and there is none
    layout = resolve_layout(processes=2, backend="gloo")
    assert isinstance(build_engine("ddp", ddp=layout), dl.DistributedDataParallelEngine)
    assert layout.world_size == 2 and layout.port > 0
    with pytest.raises(ValueError, match="divisible"):
        per_process_batch(3, 2)
    with pytest.raises(ValueError, match="ddp_backend"):
        resolve_layout(2, "mpi")
    with pytest.raises(ValueError, match="fp16"):
        build_engine("cpu", "fp16")
    with pytest.raises(ValueError, match="engine must be one of"):
        build_engine("tpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_hardware_has_it(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Emulated bf16 made a counting MeshNet's CPU step 18x slower than fp32 (AVX2 CPU): 'auto'
    must train in fp32 there and in bf16 where it is native; an explicit bf16 is kept, and warned of."""
    from gmvol import precision
    from gmvol.training import engine as engines

    monkeypatch.setattr(precision, "native_bf16", lambda device_type: native)
    assert engines.engine_precision("cpu", "auto") == ("bf16" if native else "fp32")
    assert build_engine("cpu", "auto").mixed_precision == ("bf16" if native else "no")
    assert engines.engine_precision("cpu", "fp32") == "fp32"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert engines.engine_precision("cpu", "bf16") == "bf16"
    assert len([w for w in caught if "emulated" in str(w.message)]) == (0 if native else 1)
    assert TrainConfig(precision="auto").precision == "auto"


def test_native_bf16_answers_for_this_machine() -> None:
    """The CPU check is a private torch op: if a torch upgrade drops it, 'auto' silently means fp32
    everywhere; this pins that it still answers, and agrees with the CPU's flags where Linux shows them."""
    from gmvol.precision import native_bf16

    assert torch.ops.mkldnn._is_mkldnn_bf16_supported() in (True, False)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = cpuinfo.read_text()
        if "avx512_bf16" in flags or "amx_bf16" in flags:
            assert native_bf16("cpu")
        elif "avx512" not in flags:
            assert not native_bf16("cpu")
    assert not native_bf16("mps")


MESHNET = {"name": "meshnet", "meshnet": {"channels": 6, "dilations": [1, 2, 1], "head": "grid", "grid_size": 2}}


def _train_loss(model: torch.nn.Module, study: Path, scaler: TargetScaler) -> float:
    from gmvol.data.dataset import load_images, volumes_of

    table = pd.read_csv(study / "split" / "train.csv")
    x = torch.from_numpy(load_images(study / "cache", table["subject"].tolist()))[:, None]
    y = torch.from_numpy(scaler.transform(volumes_of(table)))
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model.eval()(x), y))


def test_two_epochs_lower_the_loss_and_the_model_round_trips(tiny_study: Path) -> None:
    cfg = TrainConfig(epochs=2, batch_size=2, lr=0.01, scheduler="constant", seed=1,
                      augment=AugmentConfig(flip=False, shift_voxels=0, intensity=0.0))
    out = tiny_study / "models" / "meshnet"
    metrics = train_model(model_config_from_dict(MESHNET), cfg, tiny_study / "split" / "train.csv",
                          tiny_study / "cache", out, tiny_study / "curves.csv", tiny_study / "metrics.json")
    curves = pd.read_csv(tiny_study / "curves.csv")
    assert list(curves["epoch"]) == [1, 2] and {"train_loss", "valid_loss", "lr"} <= set(curves.columns)
    model, meta = load_model(out)
    scaler = TargetScaler.from_dict(meta["target_scaling"])
    torch.manual_seed(cfg.seed)
    from gmvol.models import build_model

    untrained = build_model(model_config_from_dict(MESHNET))
    assert _train_loss(model, tiny_study, scaler) < _train_loss(untrained, tiny_study, scaler)
    assert metrics["n_parameters"] == meta["n_parameters"] > 0
    assert meta["preprocess"]["voxel_size"] == 10.0 and meta["regions"] == list(REGION_COLUMNS)
    assert (out / "last.pt").is_file()

    test = pd.read_csv(tiny_study / "split" / "test.csv")
    first = Predictor(out, device="cpu").predict_files([Path(p) for p in test["t1"]], test["subject"].tolist())
    again = Predictor(out, device="cpu").predict_files([Path(p) for p in test["t1"]], test["subject"].tolist())
    pd.testing.assert_frame_equal(first, again)
    assert (first[list(REGION_COLUMNS)] > 0).all().all()


COUNTING = {"name": "meshnet", "meshnet": {"channels": 6, "dilations": [1, 2, 1], "head": "count"}}


def test_flips_and_shifts_move_the_class_fractions_with_the_image_and_targets(tiny_study: Path) -> None:
    """Every flipped or plain draw keeps the identity: the fractions' regional sums are the
    (swapped) targets, so the two losses of a counting model never disagree. (A shift moves the
    fractions as `shift` moves the image; at this test's 10 mm it would push cortex off the grid.)"""
    from gmvol.data.dataset import CachedFractions, load_images, volumes_of
    from gmvol.data.preprocess import read_spec

    table = pd.read_csv(tiny_study / "split" / "train.csv").head(2)
    spec = read_spec(tiny_study / "cache" / "spec.json")
    subjects = table["subject"].tolist()
    scaler = TargetScaler.fit(volumes_of(table) * np.linspace(0.9, 1.1, 2)[:, None])
    data = VolumeDataset(load_images(tiny_study / "cache", subjects), volumes_of(table), scaler,
                         AugmentConfig(flip=True, shift_voxels=0, intensity=0.0),
                         CachedFractions(tiny_study / "cache", subjects), spec.voxel_size**3)
    torch.manual_seed(0)
    flipped = set()
    for _ in range(8):
        item = data[0]
        counted = item["fractions"][:68].double().sum(dim=(1, 2, 3)).numpy() * spec.voxel_size**3
        np.testing.assert_allclose(counted, scaler.inverse(item["target"].double().numpy()), rtol=1e-4)
        torch.testing.assert_close(item["fractions"].sum(dim=0), torch.ones(spec.shape), atol=1e-5, rtol=0)
        flipped.add(bool(np.isclose(counted[0], volumes_of(table)[0, 34])))
    assert flipped == {True, False}  # both flipped and plain draws were checked


def test_zoom_makes_brains_smaller_and_larger_and_recounts_their_targets(tiny_study: Path) -> None:
    """A zoomed draw's targets are its zoomed fractions' counts: sizes beyond the cohort's, with
    the identity of the two losses kept."""
    from gmvol.data.dataset import CachedFractions, load_images, volumes_of
    from gmvol.data.preprocess import read_spec

    table = pd.read_csv(tiny_study / "split" / "train.csv").head(2)
    spec = read_spec(tiny_study / "cache" / "spec.json")
    subjects = table["subject"].tolist()
    volumes = volumes_of(table)
    scaler = TargetScaler.fit(volumes * np.linspace(0.9, 1.1, 2)[:, None])
    data = VolumeDataset(load_images(tiny_study / "cache", subjects), volumes, scaler,
                         AugmentConfig(flip=False, shift_voxels=0, intensity=0.0, zoom=0.2),
                         CachedFractions(tiny_study / "cache", subjects), spec.voxel_size**3)
    torch.manual_seed(0)
    ratios = []
    for _ in range(12):
        item = data[1]
        counted = item["fractions"][:68].double().sum(dim=(1, 2, 3)).numpy() * spec.voxel_size**3
        np.testing.assert_allclose(counted, scaler.inverse(item["target"].double().numpy()), rtol=1e-4)
        ratios.append(counted.sum() / volumes[1].sum())
    assert min(ratios) < 0.85 and max(ratios) > 1.15 and max(ratios) < np.exp(0.2) ** 3 * 1.1


def test_a_counting_model_trains_on_both_losses_and_writes_label_maps(tiny_study: Path, tmp_path: Path) -> None:
    from gmvol.predict import Predictor
    from gmvol.tissue import CLASS_IDS

    cfg = TrainConfig(epochs=3, batch_size=2, lr=0.01, scheduler="constant", seed=1, volume_weight=0.01,
                      total_weight=0.01, augment=AugmentConfig(flip=True, shift_voxels=1, intensity=0.0))
    out = tmp_path / "meshnet_count"
    train_model(model_config_from_dict(COUNTING), cfg, tiny_study / "split" / "train.csv", tiny_study / "cache",
                out, tmp_path / "curves.csv", tmp_path / "metrics.json")
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert {"train_loss", "train_segmentation_loss", "valid_segmentation_loss", "valid_total_loss"} <= set(curves.columns)
    assert curves["train_segmentation_loss"].iloc[-1] < curves["train_segmentation_loss"].iloc[0]
    model, document = load_model(out)
    assert float(model.head.voxel_mm3) == 1000.0 and float(model.head.target_std.min()) > 1.0  # restored buffers
    # the composition weight, fit on the validation subjects after training, is saved in the head
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["composition_weight"] <= 1.0 and metrics["composition_subjects"] >= 1
    assert float(model.head.composition_weight) == pytest.approx(metrics["composition_weight"])
    assert document["composition"]["composition_weight"] == metrics["composition_weight"]
    assert metrics["valid_normalized_loss_composed"] <= metrics["valid_normalized_loss_counted"]
    assert float(model.head.share_prior[:34].sum()) == pytest.approx(1.0, rel=1e-5)

    test = pd.read_csv(tiny_study / "split" / "test.csv")
    seg = tmp_path / "seg"
    predictor = Predictor(out, device="cpu", seg_dir=seg)
    table = predictor.predict_files([Path(p) for p in test["t1"]], test["subject"].tolist())
    plain = Predictor(out, device="cpu").predict_files([Path(p) for p in test["t1"]], test["subject"].tolist())
    pd.testing.assert_frame_equal(table, plain)  # --seg changes no volume

    # the typical totals: the fit subjects' 10th-90th percentile; a count outside them is re-gridded
    fit_totals = volumes_of(fit_subjects(pd.read_csv(tiny_study / "split" / "train.csv"))).sum(axis=1)
    typical = TypicalTotals.from_metadata(json.loads((out / "model.json").read_text()))
    assert typical is not None and np.allclose(typical.to_list(), np.percentile(fit_totals, [10, 90]))
    native = Predictor(out, device="cpu", regrid=False).predict_files([Path(p) for p in test["t1"]],
                                                                     test["subject"].tolist())
    counted = Predictor(out, device="cpu", regrid=False, composition=False).predict_files(
        [Path(p) for p in test["t1"]], test["subject"].tolist())
    regions = list(REGION_COLUMNS)  # the composition step moves volume within hemispheres, never between
    prior = model.head.share_prior.double().numpy()
    np.testing.assert_allclose(native[regions].to_numpy(), compose_shares(counted[regions].to_numpy(), prior,
                                                                   metrics["composition_weight"]), rtol=1e-6)
    np.testing.assert_allclose(hemisphere_totals(native[regions].to_numpy()),
                               hemisphere_totals(counted[regions].to_numpy()), rtol=1e-6)
    assert not np.allclose(native[regions].to_numpy(), counted[regions].to_numpy())
    inside = native["total"].between(typical.low * 0.99, typical.high * 1.01)
    pd.testing.assert_frame_equal(table[inside], native[inside])  # bit for bit
    assert (~inside).any() and (table["total"] != native["total"])[~inside].all()  # a 3-epoch model miscounts
    for subject, t1 in zip(test["subject"], test["t1"]):
        written, scan = nib.load(seg / f"{subject}_aparc+aseg.mgz"), nib.load(t1)
        assert written.shape == scan.shape and np.allclose(written.affine, scan.affine)
        ids = np.unique(np.asarray(written.dataobj))
        assert set(ids.tolist()) <= set(CLASS_IDS)
    regression = tmp_path / "meshnet_grid"
    grid_cfg = model_config_from_dict(MESHNET)
    metadata = {k: v for k, v in json.loads((out / "model.json").read_text()).items()
                if k not in ("format_version", "model")}
    save_model(regression, build_model(grid_cfg).eval(), grid_cfg, metadata)
    with pytest.raises(ModelFileError, match="counting model"):
        Predictor(regression, device="cpu", seg_dir=seg)


def _fit(study: Path, out: Path, **overrides: object) -> dict[str, torch.Tensor]:
    """One augmentation-free epoch of the tiny MeshNet; its saved weights."""
    settings = {"epochs": 1, "batch_size": 2, "lr": 0.01, "seed": 2,
                "augment": AugmentConfig(flip=False, shift_voxels=0, intensity=0.0), **overrides}
    train_model(model_config_from_dict(MESHNET), TrainConfig(**settings), study / "split" / "train.csv",  # type: ignore[arg-type]
                study / "cache", out / "model", out / "curves.csv", out / "metrics.json")
    return torch.load(out / "model" / "model.pt", weights_only=True)


def test_reading_the_cache_per_batch_in_workers_trains_like_preloading(tiny_study: Path, tmp_path: Path) -> None:
    """preload_gib=0 reads every image from the cache inside 2 loader processes: same batches,
    same order, so the same weights as holding the images in memory."""
    from gmvol.data.dataset import CachedImages
    from gmvol.training.loop import _images

    spec = PreprocessSpec(voxel_size=10.0, shape=(18, 22, 18))
    subjects = pd.read_csv(tiny_study / "split" / "train.csv")["subject"].tolist()
    streamed_images = _images(tiny_study / "cache", subjects, spec, TrainConfig(preload_gib=0))
    held = _images(tiny_study / "cache", subjects, spec, TrainConfig())
    assert isinstance(streamed_images, CachedImages) and isinstance(held, np.ndarray)
    np.testing.assert_array_equal(np.stack([streamed_images[i] for i in range(len(subjects))]), held)
    preloaded = _fit(tiny_study, tmp_path / "preloaded")
    streamed = _fit(tiny_study, tmp_path / "streamed", preload_gib=0.0, num_workers=2)
    for name, value in preloaded.items():
        torch.testing.assert_close(streamed[name], value, rtol=0, atol=0, msg=name)


def test_bf16_autocast_trains_close_to_fp32(tiny_study: Path, tmp_path: Path) -> None:
    """precision bf16 on CPU really runs the convolutions in bf16 (weights differ from fp32) yet
    takes the same steps: each conv's weight update points the same way as fp32's (cosine > 0.9;
    Adam moves every weight by about the learning rate, so bf16 rounding flips the sign of some
    near-zero gradients and the updates cannot match element by element)."""
    torch.manual_seed(2)
    from gmvol.models import build_model

    init = build_model(model_config_from_dict(MESHNET)).state_dict()
    fp32 = _fit(tiny_study, tmp_path / "fp32", engine="cpu")
    bf16 = _fit(tiny_study, tmp_path / "bf16", engine="cpu", precision="bf16")
    convs = [k for k in fp32 if k.endswith("conv.weight")]
    assert any(not torch.equal(fp32[k], bf16[k]) for k in convs)
    for k in convs:
        cosine = torch.nn.functional.cosine_similarity((fp32[k] - init[k]).flatten(), (bf16[k] - init[k]).flatten(), 0)
        print(f"{k}: cosine {float(cosine):.3f}")
        assert cosine > 0.9, k
