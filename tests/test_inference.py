"""Inference fast paths give the model's own predictions: BatchNorm folding, head cropping, the
interpolation-free conform of grid-aligned scans, and bf16 autocast within a stated tolerance."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from nibabel.processing import conform, smooth_image

from gmvol.data.preprocess import PreprocessSpec, grid_aligned, resample, smoothed_where_sampled
from gmvol.models import MeshNetConfig, ModelConfig, build_model
from gmvol.models.inference import HeadCroppedMeshNet, fold_batchnorm, inference_model, receptive_radius

DILATIONS = (1, 2, 4, 1)


def trained_like(head: str, **cfg: object) -> torch.nn.Module:
    """A small MeshNet whose BatchNorm running statistics have moved away from (0, 1)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(meshnet=MeshNetConfig(channels=5, head=head, grid_size=3,
                                                          dilations=DILATIONS, **cfg))).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 1, 30, 34, 32) * 2 + 0.5)
    return model.eval()


def boxed_input() -> torch.Tensor:
    """Two 'heads': non-zero only inside boxes, one touching a face of the volume."""
    x = torch.zeros(2, 1, 70, 64, 60)
    torch.manual_seed(1)
    x[0, :, 20:45, 10:30, 25:40] = torch.rand(25, 20, 15)
    x[1, :, 0:30, 15:34, 20:38] = torch.rand(30, 19, 18)
    return x


@pytest.mark.parametrize("head", ["pool", "grid", "count"])
def test_folded_and_cropped_meshnet_match_the_model(head: str) -> None:
    model = trained_like(head)
    x = boxed_input()
    with torch.inference_mode():
        reference = model(x)
        folded = fold_batchnorm(model)
        cropped = HeadCroppedMeshNet(fold_batchnorm(model))
        torch.testing.assert_close(folded(x), reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(cropped(x), reference, rtol=1e-5, atol=1e-6)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())  # original untouched
    assert cropped.radius == receptive_radius(model) == sum(DILATIONS)
    assert 0.3 < cropped.last_fraction < 0.8  # it really ran on a crop


def test_crop_falls_back_to_the_whole_volume_when_nothing_is_empty() -> None:
    model = trained_like("pool")
    x = torch.rand(1, 1, 40, 40, 40)
    cropped = HeadCroppedMeshNet(fold_batchnorm(model))
    with torch.inference_mode():
        torch.testing.assert_close(cropped(x), model(x), rtol=1e-5, atol=1e-6)
    assert cropped.last_fraction == 1.0


def test_coordinate_channels_are_never_cropped() -> None:
    model = trained_like("pool", coord_channels=True)
    assert not isinstance(inference_model(model, 0.0), HeadCroppedMeshNet)
    with pytest.raises(ValueError, match="coordinate"):
        HeadCroppedMeshNet(model)


def test_bf16_autocast_stays_close_to_fp32() -> None:
    """bf16 keeps 8 bits of mantissa: predictions (standardised units, spread ~1) within 0.05."""
    model = fold_batchnorm(trained_like("grid"))
    x = boxed_input()
    with torch.inference_mode():
        fp32 = model(x)
        with torch.autocast("cpu", torch.bfloat16):
            bf16 = model(x).float()
    assert (bf16 - fp32).abs().max() < 0.05
    assert not torch.equal(bf16, fp32)  # autocast really ran in bf16


def _lia_image(shape: tuple[int, int, int], voxel: float) -> nib.MGHImage:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, shape).astype(np.uint8)
    affine = np.array([[-voxel, 0, 0, 0], [0, 0, voxel, 0], [0, -voxel, 0, 0], [0, 0, 0, 1]], dtype=float)
    affine[:3, 3] = -affine[:3, :3] @ (np.array(shape) / 2) + [1.0, -3.0, 2.0]
    return nib.MGHImage(data, affine)


@pytest.mark.parametrize("shape", [(32, 32, 32), (20, 36, 28), (40, 30, 33)])
def test_grid_aligned_conform_equals_nibabel(shape: tuple[int, int, int]) -> None:
    img = _lia_image((32, 32, 32), 2.0)
    spec = PreprocessSpec(voxel_size=2.0, shape=shape)
    fast = grid_aligned(img, spec)
    assert fast is not None
    slow = np.asarray(conform(img, out_shape=shape, voxel_size=(2.0,) * 3, order=1, cval=0.0,
                              orientation="RAS").dataobj)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(resample(img, spec, order=1), slow)


def test_other_grids_still_interpolate() -> None:
    img = _lia_image((32, 32, 32), 2.0)
    spec = PreprocessSpec(voxel_size=3.0, shape=(24, 24, 24))
    assert grid_aligned(img, spec) is None
    slow = np.asarray(conform(img, out_shape=spec.shape, voxel_size=(3.0,) * 3, order=1, cval=0.0,
                              orientation="RAS").dataobj)
    np.testing.assert_array_equal(resample(img, PreprocessSpec(voxel_size=3.0, shape=(24, 24, 24),
                                                               antialias=False), order=1), slow)


def _smoothed_then_conformed(img: nib.Nifti1Image, spec: PreprocessSpec) -> np.ndarray:
    """What resample did before the partial smoothing: nibabel's smooth_image on the whole scan."""
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    smoothed = smooth_image(img, np.sqrt(np.clip(spec.voxel_size**2 - zooms**2, 0.0, None)))
    return np.asarray(conform(smoothed, out_shape=spec.shape, voxel_size=(spec.voxel_size,) * 3, order=1,
                              cval=0.0, orientation=spec.orientation).dataobj)


def _as_float(img: nib.spatialimages.SpatialImage, affine: np.ndarray | None = None) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine if affine is None else affine)


@pytest.mark.parametrize("case", ["lia_1mm", "thick_slices", "ras_off_grid", "oblique"])
@pytest.mark.parametrize("voxel", [5.0, 3.7])
def test_partial_smoothing_is_nibabels_where_the_grid_samples(case: str, voxel: float) -> None:
    """Smoothing only the planes the grid samples gives the anti-aliased resampling bit for bit,
    for a conformed scan, thick slices (one axis not smoothed), a RAS scan off the grid by a
    fraction of a voxel, and an oblique scan (smoothed whole)."""
    img = _as_float(_lia_image((80, 84, 76), 1.0))
    if case == "thick_slices":
        img = nib.Nifti1Image(np.ascontiguousarray(np.asarray(img.dataobj)[:, ::5]), img.affine @ np.diag([1, 5, 1, 1]))
    if case == "ras_off_grid":
        img = _as_float(img, np.diag([1.0, 1.0, 1.0, 1.0]) + np.array([[0, 0, 0, -40.3], [0, 0, 0, -41.6],
                                                                       [0, 0, 0, -37.2], [0, 0, 0, 0]]))
    if case == "oblique":
        turn = np.eye(4)
        turn[:2, :2] = [[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]]
        img = _as_float(img, turn @ img.affine)
    spec = PreprocessSpec(voxel_size=voxel, shape=(8, 10, 9))
    expected = _smoothed_then_conformed(img, spec)
    assert expected.std() > 0
    np.testing.assert_array_equal(resample(img, spec, order=1), expected)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    partial = np.asarray(smoothed_where_sampled(img, np.sqrt(np.clip(voxel**2 - zooms**2, 0, None)), spec).dataobj)
    if case in ("lia_1mm", "ras_off_grid"):  # most of the scan is never read, and left 0
        assert np.mean(partial == 0) > 0.8
