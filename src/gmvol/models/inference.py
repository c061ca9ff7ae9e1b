"""Inference-only rewrites of a trained model that give the same predictions, faster.

* BatchNorm folded into the preceding convolution (``torch.nn.utils.fusion``): in eval mode
  BatchNorm is a per-channel affine map, so conv + BN is one conv with rescaled weights. It spares
  two full passes over every activation (15% of a 256^3 MeshNet forward on CPU).
* Head cropping (:class:`HeadCroppedMeshNet`): a MeshNet trunk is a stack of local operations
  with a finite receptive field, and every head reduces per-voxel features by sums over boxes.
  Far from the head the input is empty, so the features there are the network's response to an
  all-zero input, which depends only on the distance to the volume's faces. That response is
  computed once on a tiny zero volume; the trunk then runs only on the head's bounding box plus
  twice the receptive radius, and the rest of the feature map is filled in from the zero
  response. With ``threshold=0`` this is exact (only voxels that are exactly 0 are skipped, e.g.
  the empty margin around a conformed 256^3 field of view); a small positive threshold also
  treats faint background noise as 0, which changes predictions slightly (measured in
  benchmarks/README.md).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from gmvol.models.meshnet import MeshNet

MIN_GAIN = 0.8
"""Crop only when the cropped box holds at most this fraction of the voxels (else no gain)."""


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` with every (conv, BatchNorm) pair of a block fused into one conv
    and ReLUs made in-place (no extra allocation); `model` itself is left untouched."""
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        children = dict(module.named_children())
        conv, norm = children.get("conv"), children.get("norm")
        if isinstance(conv, nn.Conv3d) and isinstance(norm, nn.BatchNorm3d):
            module.conv = fuse_conv_bn_eval(conv, norm)
            module.norm = nn.Identity()
        if isinstance(module, nn.ReLU):
            module.inplace = True
    return folded


def receptive_radius(model: MeshNet) -> int:
    """How far (voxels) a trunk output can see from its centre: the sum of each conv's reach."""
    return sum(m.dilation[0] * (m.kernel_size[0] // 2) for m in model.blocks.modules()
               if isinstance(m, nn.Conv3d))


def supports_head_crop(model: nn.Module) -> bool:
    """Only a translation-equivariant trunk may be cropped; coordinate channels are not."""
    return isinstance(model, MeshNet) and not model.cfg.coord_channels


def head_box(x: torch.Tensor, threshold: float) -> list[tuple[int, int]] | None:
    """[start, stop) per spatial axis of the voxels above `threshold` in any image of the batch;
    None when there is none."""
    mask = (x > threshold).any(dim=0).any(dim=0)
    if not bool(mask.any()):
        return None
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = torch.nonzero(mask.any(dim=others)).flatten()
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return box


def _zero_index(length: int, radius: int, device: torch.device) -> torch.Tensor:
    """Map each position on an axis of `length` to its place in a (2*radius + 1) zero volume that
    sees the same padding: distance < radius from a face keeps that distance, the rest is centre."""
    pos = torch.arange(length, device=device)
    far = length - 1 - pos
    return torch.where(pos < radius, pos, torch.where(far < radius, 2 * radius - far, radius))


class HeadCroppedMeshNet(nn.Module):
    """Evaluate a MeshNet on the head's bounding box only, with the same outputs (see module doc)."""

    def __init__(self, model: MeshNet, threshold: float = 0.0) -> None:
        super().__init__()
        if not supports_head_crop(model):
            raise ValueError("head cropping needs a MeshNet without coordinate channels")
        self.model = model.eval()
        self.threshold = threshold
        self.radius = receptive_radius(model)
        self._zero_response: torch.Tensor | None = None
        self.last_fraction = 1.0
        """Share of the voxels the trunk ran on in the last call (1.0: not cropped)."""

    def zero_response(self, like: torch.Tensor) -> torch.Tensor:
        """Trunk output for an all-zero (2r+1)^3 input: every padding situation an empty voxel
        can be in, computed once."""
        if self._zero_response is None or self._zero_response.device != like.device:
            side = 2 * self.radius + 1
            zeros = torch.zeros(1, like.shape[1], side, side, side, dtype=like.dtype, device=like.device)
            self._zero_response = self.model.trunk(zeros)
        return self._zero_response

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The full trunk output, computed on the head's box only where that gains time."""
        box = head_box(x, self.threshold)
        shape = x.shape[2:]
        r = self.radius
        crop = None if box is None else [(max(0, a - 2 * r), min(n, b + 2 * r)) for (a, b), n in zip(box, shape)]
        fraction = 1.0 if crop is None else float(torch.tensor([b - a for a, b in crop]).prod()) / shape.numel()
        if crop is None or fraction > MIN_GAIN or min(shape) < 2 * r + 1:
            self.last_fraction = 1.0
            return self.model.trunk(x)
        self.last_fraction = fraction
        part = self.model.trunk(x[:, :, crop[0][0]:crop[0][1], crop[1][0]:crop[1][1], crop[2][0]:crop[2][1]])
        zero = self.zero_response(x)
        idx = [_zero_index(n, r, x.device) for n in shape]
        features = zero[0][:, idx[0][:, None, None], idx[1][None, :, None], idx[2][None, None, :]]
        features = features.unsqueeze(0).repeat(x.shape[0], 1, 1, 1, 1)
        # Inner part of the crop: at least r from every cut face, so its receptive field is intact.
        inner = [(0 if a == 0 else r, (b - a) - (0 if b == n else r)) for (a, b), n in zip(crop, shape)]
        src = tuple(slice(lo, hi) for lo, hi in inner)
        dst = tuple(slice(a + lo, a + hi) for (a, _), (lo, hi) in zip(crop, inner))
        features[(slice(None), slice(None), *dst)] = part[(slice(None), slice(None), *src)]
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.trunk(x), self.model.final)

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As `MeshNet.segment`, on the cropped trunk."""
        return self.model.counting_head().segment(self.trunk(x), self.model.final)


def inference_model(model: nn.Module, crop_threshold: float | None = 0.0) -> nn.Module:
    """The fastest equivalent of `model` for prediction: BatchNorm folded, and for MeshNets the
    head crop (unless `crop_threshold` is None)."""
    folded = fold_batchnorm(model)
    if crop_threshold is not None and supports_head_crop(folded):
        return HeadCroppedMeshNet(folded, crop_threshold)
    return folded
