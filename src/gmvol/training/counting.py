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
from gmvol.regions import N_REGIONS, hemisphere_columns
from gmvol.tissue import BACKGROUND_CLASS

JOINT_LOSS = "joint_loss"
SEGMENTATION_LOSS = "segmentation_loss"
DICE_LOSS = "dice_loss"
TOTAL_LOSS = "total_loss"


class SoftCrossEntropy(nn.Module):
    """Cross-entropy against soft targets (fractions summing to 1 over dim 1), voxel mean, from
    the head's float32 log-probabilities."""

    def forward(self, log_probs: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        return -(fractions * log_probs).sum(dim=1).mean()


class SoftDiceLoss(nn.Module):
    """1 - the mean soft Dice of the 68 regions (per subject, then averaged), from the head's
    float32 region probabilities (the ones it counts).

    Unlike the voxel-mean cross-entropy, which barely notices a little probability spread over
    the many background voxels, Dice charges every bit of a region's mass outside the region:
    that spread is exactly what would make a count wrong on a brain of another size.
    """

    def forward(self, region_probs: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        p = region_probs.flatten(2)
        f = fractions[:, :N_REGIONS].float().flatten(2)
        dice = (2 * (p * f).sum(-1) + 1.0) / (p.sum(-1) + f.sum(-1) + 1.0)
        return 1.0 - dice.mean()


class HemisphereTotalLoss(nn.Module):
    """MSE of the two hemisphere totals (sums of their 34 regions), each in SDs of the training
    subjects' totals, from the standardised volumes the head returns.

    The regional volume loss is mostly the regions' shares, which a 5 mm grid barely resolves;
    the totals are what a count can get right, yet a count whose fractions hedge toward the
    training mix misses them by the anatomy (thick cortex counted low, thin high). This term
    charges exactly that, and nothing for moving volume between regions of one hemisphere. Off
    by default (`total_weight`): on the synthetic cohort it lowers the test split's error by
    learning each training anatomy's totals, and raises the held-out donor's (README).
    """

    def __init__(self, region_std: np.ndarray, fit_volumes: np.ndarray) -> None:
        super().__init__()
        membership = np.zeros((2, N_REGIONS))  # row h: 1 on hemisphere h's regions
        for row, columns in zip(membership, hemisphere_columns(), strict=True):
            row[columns] = 1.0
        totals_sd = (np.asarray(fit_volumes, dtype=np.float64) @ membership.T).std(axis=0)
        if region_std.shape != (N_REGIONS,) or not (totals_sd > 0).all():
            raise ValueError(f"need {N_REGIONS} region SDs and training totals that vary, got "
                             f"{region_std.shape} and totals SD {totals_sd}")
        # standardised difference -> mm^3 per region -> per hemisphere, in SDs of the totals
        self.register_buffer("to_totals", torch.as_tensor(membership * region_std[None] / totals_sd[:, None],
                                                          dtype=torch.float32))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (((pred.float() - target.float()) @ self.to_totals.T) ** 2).mean()


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
    head.init_priors(priors)
    head.emit_log_probs = True


def counting_criteria(scaler: TargetScaler, fit_volumes: np.ndarray) -> dict[str, nn.Module]:
    """The runner's criteria, by the key their CriterionCallback names (`fit_volumes`: the
    training subjects' (N, 68) volumes in mm^3, which scale the hemisphere-total loss)."""
    return {"volume": nn.MSELoss(), "segmentation": SoftCrossEntropy(), "dice": SoftDiceLoss(),
            "total": HemisphereTotalLoss(np.asarray(scaler.std, dtype=np.float64), fit_volumes)}


def counting_callbacks(volume_weight: float, segmentation_weight: float, dice_weight: float,
                       total_weight: float = 0.0) -> list[dl.Callback]:
    """The four losses, their weighted sum, and its backward pass and optimizer step."""
    return [
        dl.CriterionCallback(input_key="pred", target_key="target", metric_key="loss", criterion_key="volume"),
        dl.CriterionCallback(input_key="log_probs", target_key="fractions", metric_key=SEGMENTATION_LOSS,
                             criterion_key="segmentation"),
        dl.CriterionCallback(input_key="region_probs", target_key="fractions", metric_key=DICE_LOSS,
                             criterion_key="dice"),
        dl.CriterionCallback(input_key="pred", target_key="target", metric_key=TOTAL_LOSS, criterion_key="total"),
        dl.MetricAggregationCallback(metric_key=JOINT_LOSS, mode="weighted_sum",
                                     metrics={"loss": volume_weight, SEGMENTATION_LOSS: segmentation_weight,
                                              DICE_LOSS: dice_weight, TOTAL_LOSS: total_weight}),
        dl.BackwardCallback(metric_key=JOINT_LOSS),
        dl.OptimizerCallback(metric_key=JOINT_LOSS),
    ]


def runner_keys(counting: bool) -> dict[str, Any]:
    """SupervisedRunner keys: a counting model's forward returns (volumes, log-probabilities,
    region probabilities)."""
    return {"input_key": "image", "target_key": "target", "loss_key": "loss",
            "output_key": ["pred", "log_probs", "region_probs"] if counting else "pred"}
