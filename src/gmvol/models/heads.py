"""Regression heads that turn a (B, C, D, H, W) feature map into (B, n_outputs) predictions.

Every head is called as ``head(features, pointwise)``, where `pointwise` is the trunk's last
per-voxel linear map (MeshNet's 1x1x1 conv). Handing it over instead of applying it first lets a
pooling head apply it *after* average pooling, which is exactly equal (both are linear) and
spares a full-resolution conv and its backward pass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gmvol.models.layers import SeparableAdaptiveAvgPool3d
from gmvol.regions import N_REGIONS
from gmvol.tissue import N_CLASSES


class PooledLinearHead(nn.Module):
    """Average-pool to a grid_size^3 grid, flatten, linear.

    grid_size 1 is the paper's global-pool head, which is location-blind by construction; a
    coarse grid (e.g. 4) keeps where features are, so the head can tell left frontal cortex from
    right occipital cortex.
    """

    def __init__(self, channels: int, n_outputs: int, grid_size: int = 1) -> None:
        super().__init__()
        self.pool = SeparableAdaptiveAvgPool3d(grid_size)
        self.linear = nn.Linear(channels * grid_size**3, n_outputs)

    def forward(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        pooled = self.pool(features)
        if pointwise is not None:
            pooled = pointwise(pooled)  # commutes with average pooling
        return self.linear(pooled.flatten(1))


class CountingHead(nn.Module):
    """Segment, then count: a regional volume is the sum over voxels of the region's softmax
    probability x voxel volume, times a learned per-region calibration factor (init 1); then
    (`compose_shares`, once `set_composition` has been fitted after training) each hemisphere's
    regional shares are pulled toward the training mean shares, its total kept.

    A 1x1x1 conv gives logits over the `gmvol.tissue` classes (the 68 regions first). The
    volumes are standardised with the target scaling held as buffers (set by `set_scaling` before
    training, restored with the state_dict), so the head answers in the same units as the
    regression heads and the rest of the pipeline needs no special case. Counting makes the
    volume scale with the brain, however small or large, instead of interpolating between
    training totals. With `emit_log_probs` set (training) it returns (volumes, log-probabilities,
    the regions' probabilities) for the per-voxel losses on the partial-volume targets: the one
    float32 log-softmax, and the one exponential, the count is made from serve them too (a softmax
    over 75 classes at every voxel is most of a step).
    """

    def __init__(self, channels: int, n_outputs: int, calibrate: bool = True) -> None:
        super().__init__()
        if n_outputs != N_REGIONS:
            raise ValueError(f"the counting head counts the {N_REGIONS} DK regions, not {n_outputs} outputs")
        self.classifier = nn.Conv3d(channels, N_CLASSES, kernel_size=1)
        self.log_calibration = nn.Parameter(torch.zeros(n_outputs), requires_grad=calibrate)
        self.register_buffer("target_mean", torch.zeros(n_outputs))
        self.register_buffer("target_std", torch.ones(n_outputs))
        self.register_buffer("voxel_mm3", torch.ones(()))
        self.register_buffer("share_prior", torch.zeros(n_outputs))
        self.register_buffer("composition_weight", torch.ones(()))
        self.emit_log_probs = False

    @torch.no_grad()
    def init_priors(self, priors: np.ndarray) -> None:
        """Start the softmax at the class priors (N_CLASSES,): every voxel counts as the average one."""
        self.classifier.bias.copy_(torch.as_tensor(np.log(np.maximum(priors, 1e-6)), dtype=torch.float32))

    @torch.no_grad()
    def set_scaling(self, mean: torch.Tensor, std: torch.Tensor, voxel_mm3: float) -> None:
        """The training set's target mean and std (mm^3) and the grid's voxel volume."""
        self.target_mean.copy_(mean)
        self.target_std.copy_(std)
        self.voxel_mm3.fill_(voxel_mm3)

    @torch.no_grad()
    def set_composition(self, share_prior: np.ndarray, weight: float) -> None:
        """The training mean share of each region in its hemisphere (68,), and how much of the
        model's own shares to keep (1: all, the unfitted state; 0: the mean shares alone)."""
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"composition weight must lie in [0, 1], got {weight}")
        self.share_prior.copy_(torch.as_tensor(share_prior, dtype=torch.float32))
        self.composition_weight.fill_(weight)

    def compose_shares(self, volumes: torch.Tensor) -> torch.Tensor:
        """(B, 68) volumes with each hemisphere's shares w x the model's + (1 - w) x the prior, its
        total unchanged: at 5 mm a region's border is invisible, and its counted share is noisier
        than the training mean's (README, "Composition"). w = 1 returns `volumes` bit for bit."""
        halves = volumes.unflatten(1, (2, -1))
        totals = halves.sum(dim=2, keepdim=True).expand_as(halves).flatten(1)
        weight = self.composition_weight
        return weight * volumes + (1.0 - weight) * self.share_prior * totals

    def logits(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        """Per-voxel class logits (B, N_CLASSES, D, H, W)."""
        return self.classifier(features if pointwise is None else pointwise(features))

    def log_probs(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        """Per-voxel float32 class log-probabilities (B, N_CLASSES, D, H, W): the count, the
        per-voxel losses and the label map are all made from these."""
        return torch.log_softmax(self.logits(features, pointwise).float(), dim=1)

    def volumes(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, 68) mm^3: softmax summed over voxels, in float32 (a bf16 sum over 10^5-10^7 voxels
        would lose the volume)."""
        return self.count(torch.log_softmax(logits.float(), dim=1))

    def count(self, log_probs: torch.Tensor) -> torch.Tensor:
        """(B, 68) mm^3 from float32 log-probabilities (B, N_CLASSES, D, H, W)."""
        return self.counted(torch.exp(log_probs[:, :N_REGIONS]))

    def counted(self, region_probs: torch.Tensor) -> torch.Tensor:
        """(B, 68) mm^3 from the regions' float32 probabilities (B, 68, D, H, W)."""
        return self.compose_shares(region_probs.sum(dim=(2, 3, 4)) * self.voxel_mm3 * torch.exp(self.log_calibration))

    def split_log_probs(self, features: torch.Tensor, pointwise: nn.Module | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """`log_probs`, and the regions' part of them (B, 68, D, H, W)."""
        log_probs = self.log_probs(features, pointwise)
        return log_probs, log_probs[:, :N_REGIONS]

    def region_log_probs(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        """The regions' log-probabilities (B, 68, D, H, W) alone: all the count needs."""
        return self.log_probs(features, pointwise)[:, :N_REGIONS]

    def standardize(self, volumes: torch.Tensor) -> torch.Tensor:
        return (volumes - self.target_mean) / self.target_std

    def forward(self, features: torch.Tensor, pointwise: nn.Module | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.emit_log_probs:
            return self.standardize(self.counted(torch.exp(self.region_log_probs(features, pointwise))))
        log_probs, regions = self.split_log_probs(features, pointwise)
        region_probs = torch.exp(regions)  # one exponential for the count and the Dice loss
        return self.standardize(self.counted(region_probs)), log_probs, region_probs

    def segment(self, features: torch.Tensor, pointwise: nn.Module | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised volumes (B, 68) and the argmax class map (B, D, H, W) of one pass."""
        log_probs = self.log_probs(features, pointwise)
        return self.standardize(self.count(log_probs)), log_probs.argmax(dim=1)


class FactoredCountingHead(CountingHead):
    """A counting head whose softmax is tissue first, then region: p(region r) = p(cortex of r's
    hemisphere) x p(r | that cortex).

    In the flat head every region's logit is its own linear read of the features, so how much of a
    voxel is cortex and which region it belongs to share one linear map; here a 9-way tissue
    softmax (cortex per hemisphere and the tissue groups) says how much is cortex, and a 34-way
    softmax per hemisphere only where it belongs. The output is the same 75-class distribution, so
    the losses, the count and the label map are those of the flat head.
    """

    N_TISSUE: int = 2 + N_CLASSES - N_REGIONS
    """Left and right cortex, then the non-cortical classes in `gmvol.tissue` order."""

    def __init__(self, channels: int, n_outputs: int, calibrate: bool = True) -> None:
        super().__init__(channels, n_outputs, calibrate)
        self.classifier = nn.Conv3d(channels, self.N_TISSUE + N_REGIONS, kernel_size=1)

    def logits(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        """Per-voxel class log-probabilities (already normalised: log_softmax leaves them as they are)."""
        return self.compose(self.raw(features, pointwise))

    def raw(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        """The classifier's float32 outputs. With gradients, or from bf16, channels first: each
        softmax runs over a channel range, whose backward on a channels_last tensor copies it
        out. At inference a float32 channels_last output is read in place (the same values; the
        copy was two fifths of the head)."""
        out = self.classifier(features if pointwise is None else pointwise(features))
        if out.dtype == torch.float32 and not out.requires_grad:
            return out
        return out.to(torch.float32, memory_format=torch.contiguous_format)

    def log_probs(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        """`logits`, which are normalised already: a second log_softmax over 75 classes at every
        voxel would cost a fifth of a training step for nothing."""
        return self.logits(features, pointwise)

    def region_log_probs(self, features: torch.Tensor, pointwise: nn.Module | None = None) -> torch.Tensor:
        """The regions' part straight from `compose_parts`: no 75-class concatenation to slice."""
        return self.compose_parts(self.raw(features, pointwise))[0]

    def split_log_probs(self, features: torch.Tensor, pointwise: nn.Module | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """The regions' part is the tensor the classes are concatenated from, not a slice of
        them: a slice's backward fills a zero tensor of all 75 classes."""
        regions, other = self.compose_parts(self.raw(features, pointwise))
        return torch.cat([regions, other], dim=1), regions

    @classmethod
    def compose(cls, raw: torch.Tensor) -> torch.Tensor:
        """(B, N_TISSUE + 68, ...) raw outputs -> (B, N_CLASSES, ...) class log-probabilities."""
        return torch.cat(cls.compose_parts(raw), dim=1)

    @classmethod
    def compose_parts(cls, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N_TISSUE + 68, ...) raw outputs -> the class log-probabilities of the 68 regions
        and of the other classes.

        torch.split, not slicing: the backward of each slice fills a zero tensor the size of
        `raw`, where a split's backward is one cat (a training step of the counting MeshNet on 2
        CPU cores: 26 ms less). The same bits as slicing (tests/test_models.py).
        """
        half = N_REGIONS // 2
        tissue_raw, lh_raw, rh_raw = torch.split(raw, [cls.N_TISSUE, half, half], dim=1)
        tissue = torch.log_softmax(tissue_raw, dim=1)
        lh_cortex, rh_cortex, other = torch.split(tissue, [1, 1, cls.N_TISSUE - 2], dim=1)
        lh = torch.log_softmax(lh_raw, dim=1) + lh_cortex
        rh = torch.log_softmax(rh_raw, dim=1) + rh_cortex
        return torch.cat([lh, rh], dim=1), other

    @torch.no_grad()
    def init_priors(self, priors: np.ndarray) -> None:
        p = torch.as_tensor(np.maximum(np.asarray(priors, dtype=np.float64), 1e-6))
        half = N_REGIONS // 2
        cortex = torch.stack([p[:half].sum(), p[half:N_REGIONS].sum()])
        self.classifier.bias.copy_(torch.log(torch.cat([cortex, p[N_REGIONS:], p[:half] / cortex[0],
                                                        p[half:N_REGIONS] / cortex[1]])).float())


HEADS: tuple[str, ...] = ("pool", "grid", "count", "count_factored")
"""Head names as written in configs."""


def make_head(name: str, channels: int, n_outputs: int, grid_size: int) -> nn.Module:
    """Build a head by its config name (grid_size is used by the 'grid' head only)."""
    if name == "pool":
        return PooledLinearHead(channels, n_outputs, 1)
    if name == "grid":
        return PooledLinearHead(channels, n_outputs, grid_size)
    if name == "count":
        return CountingHead(channels, n_outputs)
    if name == "count_factored":
        return FactoredCountingHead(channels, n_outputs)
    raise ValueError(f"unknown head {name!r}; choose one of {list(HEADS)}")
