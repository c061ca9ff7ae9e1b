"""Joint training of a counting model: the volumes it counts, and the partial-volume fractions
it counts them from.

The volume loss (MSE of standardised volumes, the `loss` every model reports) keeps the sums
right; the per-voxel soft cross-entropy against the fractions teaches where each region is and
how much of a voxel it fills, which is what lets a count generalise to brains of other sizes.
Both run through Catalyst's own callbacks: one CriterionCallback per loss and a weighted sum
that is back-propagated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from catalyst import dl
from torch import nn

from gmvol.data.dataset import TargetScaler
from gmvol.data.fractions import SparseFractions
from gmvol.models.heads import CountingHead
from gmvol.regions import N_REGIONS
from gmvol.tissue import BACKGROUND_CLASS

JOINT_LOSS = "joint_loss"
SEGMENTATION_LOSS = "segmentation_loss"
DICE_LOSS = "dice_loss"


class SoftCrossEntropy(nn.Module):
    """Cross-entropy against soft targets (fractions summing to 1 over dim 1), voxel mean, from
    the head's float32 log-probabilities."""

    def forward(self, log_probs: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        return -(fractions * log_probs).sum(dim=1).mean()


class SoftDiceLoss(nn.Module):
    """1 - the mean soft Dice of the 68 regions (per subject, then averaged), from the head's
    float32 log-probabilities.

    Unlike the voxel-mean cross-entropy, which barely notices a little probability spread over
    the many background voxels, Dice charges every bit of a region's mass outside the region:
    that spread is exactly what would make a count wrong on a brain of another size.
    """

    def forward(self, log_probs: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        p = torch.exp(log_probs[:, :N_REGIONS]).flatten(2)
        f = fractions[:, :N_REGIONS].float().flatten(2)
        dice = (2 * (p * f).sum(-1) + 1.0) / (p.sum(-1) + f.sum(-1) + 1.0)
        return 1.0 - dice.mean()


def counting_head(model: nn.Module) -> CountingHead | None:
    """The model's counting head, or None for a regression model."""
    head = getattr(model, "head", None)
    return head if isinstance(head, CountingHead) else None


def class_priors(fractions: Sequence[SparseFractions], n_cells: int, cell_mm3: float) -> np.ndarray:
    """(N_CLASSES,) mean share of the grid each class fills over the training subjects."""
    volumes = np.sum([f.class_volumes() for f in fractions], axis=0) / (len(fractions) * n_cells * cell_mm3)
    volumes[BACKGROUND_CLASS] = max(1.0 - volumes.sum(), 1e-3)
    return volumes


def prepare_counting(head: CountingHead, scaler: TargetScaler, voxel_mm: float, priors: np.ndarray) -> None:
    """Give the head the training targets' scaling and the grid's voxel volume; start its
    softmax at the class priors (a uniform start would count each region over the whole grid, a
    hundred standard deviations off, and the first epochs would only unlearn that); and make it
    return its log-probabilities too (for the per-voxel losses)."""
    head.set_scaling(torch.as_tensor(scaler.mean, dtype=torch.float32),
                     torch.as_tensor(scaler.std, dtype=torch.float32), voxel_mm**3)
    with torch.no_grad():
        head.classifier.bias.copy_(torch.as_tensor(np.log(np.maximum(priors, 1e-6)), dtype=torch.float32))
    head.emit_log_probs = True


def counting_criteria() -> dict[str, nn.Module]:
    """The runner's criteria, by the key their CriterionCallback names."""
    return {"volume": nn.MSELoss(), "segmentation": SoftCrossEntropy(), "dice": SoftDiceLoss()}


def counting_callbacks(volume_weight: float, segmentation_weight: float, dice_weight: float) -> list[dl.Callback]:
    """The three losses, their weighted sum, and its backward pass and optimizer step."""
    return [
        dl.CriterionCallback(input_key="pred", target_key="target", metric_key="loss", criterion_key="volume"),
        dl.CriterionCallback(input_key="log_probs", target_key="fractions", metric_key=SEGMENTATION_LOSS,
                             criterion_key="segmentation"),
        dl.CriterionCallback(input_key="log_probs", target_key="fractions", metric_key=DICE_LOSS, criterion_key="dice"),
        dl.MetricAggregationCallback(metric_key=JOINT_LOSS, mode="weighted_sum",
                                     metrics={"loss": volume_weight, SEGMENTATION_LOSS: segmentation_weight,
                                              DICE_LOSS: dice_weight}),
        dl.BackwardCallback(metric_key=JOINT_LOSS),
        dl.OptimizerCallback(metric_key=JOINT_LOSS),
    ]


def runner_keys(counting: bool) -> dict[str, Any]:
    """SupervisedRunner keys: a counting model's forward returns (volumes, log-probabilities)."""
    return {"input_key": "image", "target_key": "target", "loss_key": "loss",
            "output_key": ["pred", "log_probs"] if counting else "pred"}
