"""File names inside the per-model output folders, spelled once for the code.

`evaluate@<model>` writes the `EvalFiles` into data/eval/<model>/ and `saliency@<model>` the
`SaliencyFiles` into data/saliency/<model>/; the report reads both. dvc.yaml must declare the
same files as outs (DVC needs them by name to keep metrics and plots in Git and images in its
cache); tests/test_drift.py fails when the two lists differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PANEL_ROLES: tuple[str, ...] = ("best", "median", "worst")
"""The saliency panels: the regions with the lowest, median and highest normalized loss."""


@dataclass(frozen=True)
class EvalFiles:
    """What evaluate writes for one model."""

    folder: Path

    metrics = property(lambda self: self.folder / "metrics.json")
    scores = property(lambda self: self.folder / "scores.json")
    predictions = property(lambda self: self.folder / "predictions.csv")
    regions = property(lambda self: self.folder / "regions.csv")
    regions_all = property(lambda self: self.folder / "regions_all.csv")
    normalized_loss_table = property(lambda self: self.folder / "normalized_loss.csv")
    boxplot = property(lambda self: self.folder / "boxplot.png")
    scatter = property(lambda self: self.folder / "scatter.png")
    normalized_loss_plot = property(lambda self: self.folder / "normalized_loss.png")


@dataclass(frozen=True)
class SaliencyFiles:
    """What saliency writes for one model; each panel is named by its role."""

    folder: Path

    summary = property(lambda self: self.folder / "summary.json")
    focus = property(lambda self: self.folder / "focus.csv")
    focus_all = property(lambda self: self.folder / "focus_all.csv")

    def panel(self, role: str) -> Path:
        """The PNG of one of PANEL_ROLES."""
        return self.folder / f"{role}.png"


def file_names(layout: type[EvalFiles | SaliencyFiles]) -> list[str]:
    """Every file name a layout declares (what dvc.yaml must list as the stage's outs)."""
    probe = layout(Path())
    names = [getattr(probe, key).name for key, value in vars(layout).items() if isinstance(value, property)]
    return names + ([probe.panel(role).name for role in PANEL_ROLES] if layout is SaliencyFiles else [])
