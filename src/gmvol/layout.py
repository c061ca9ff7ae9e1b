"""File names inside the per-model output folders, spelled once for the code.

`evaluate@<model>` writes the `EvalFiles` into data/eval/<model>/ and `saliency@<model>` the
`SaliencyFiles` into data/saliency/<model>/; the report reads both. dvc.yaml must declare the
same files as outs (DVC needs them by name to keep metrics and plots in Git and images in its
cache); tests/test_drift.py fails when the two lists differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HELDOUT_BLOCK = "heldout_anatomy"
"""The scores.json / metrics.json key of the held-out-anatomy set's predictors (written by
evaluate, read by the report)."""
EXTRAPOLATION_BLOCK = "extrapolation"
"""The same for the size-extrapolation set."""
SET_PREDICTIONS: dict[str, str] = {HELDOUT_BLOCK: "heldout_predictions.csv",
                                   EXTRAPOLATION_BLOCK: "extrapolation_predictions.csv"}
"""The predictions file of each extra evaluation set."""

PANEL_ROLES: tuple[str, ...] = ("best", "median", "worst")
"""The saliency panels: the regions with the lowest, median and highest normalized loss."""


def _file(name: str) -> property:
    """A layout attribute: the file `name` inside the layout's folder."""
    return property(lambda self: self.folder / name)


@dataclass(frozen=True)
class EvalFiles:
    """What evaluate writes for one model."""

    folder: Path

    metrics = _file("metrics.json")
    scores = _file("scores.json")
    predictions = _file("predictions.csv")
    heldout_predictions = _file(SET_PREDICTIONS[HELDOUT_BLOCK])
    extrapolation_predictions = _file(SET_PREDICTIONS[EXTRAPOLATION_BLOCK])
    regions = _file("regions.csv")
    regions_all = _file("regions_all.csv")
    normalized_loss_table = _file("normalized_loss.csv")
    boxplot = _file("boxplot.png")
    scatter = _file("scatter.png")
    normalized_loss_plot = _file("normalized_loss.png")
    segmentation = _file("segmentation.png")      # counting models: true vs predicted label maps

    def set_predictions(self, block: str) -> Path:
        """The predictions file of an extra evaluation set (a key of SET_PREDICTIONS)."""
        return self.folder / SET_PREDICTIONS[block]


@dataclass(frozen=True)
class SaliencyFiles:
    """What saliency writes for one model; each panel is named by its role."""

    folder: Path

    summary = _file("summary.json")
    focus = _file("focus.csv")
    focus_all = _file("focus_all.csv")

    def panel(self, role: str) -> Path:
        """The PNG of one of PANEL_ROLES."""
        return self.folder / f"{role}.png"


def file_names(layout: type[EvalFiles | SaliencyFiles]) -> list[str]:
    """Every file name a layout declares (what dvc.yaml must list as the stage's outs)."""
    probe = layout(Path())
    names = [getattr(probe, key).name for key, value in vars(layout).items() if isinstance(value, property)]
    return names + ([probe.panel(role).name for role in PANEL_ROLES] if layout is SaliencyFiles else [])
