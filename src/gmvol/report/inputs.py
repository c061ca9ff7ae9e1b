"""Read the report's inputs (metrics, region tables, focus shares, PNGs) and record what was read.

The report only shows what the pipeline wrote, so every loader here just parses a file; optional
files that are absent come back as None and are listed in `Sources.missing`, for the page to say so
instead of failing. Only scores.json is required: a report without the headline numbers is wrong.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gmvol.io import InputError
from gmvol.layout import PANEL_ROLES, EvalFiles, SaliencyFiles
from gmvol.report.figures import EVAL_FIGURES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FOCUS_KEYS: tuple[str, ...] = ("focus_in_region_median", "focus_lift_median", "focus_in_brain_median",
                               "focus_outside_brain_median")


@dataclass
class Sources:
    """Every input file the report looked for: those it read and those that were absent."""

    read: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)

    def exists(self, path: Path) -> bool:
        """Record `path` as read or missing; True if it is there to read."""
        present = path.is_file()
        (self.read if present else self.missing).append(path)
        return present


@dataclass(frozen=True)
class ModelInputs:
    """One model's files, parsed. `metrics` holds the three predictors of scores.json."""

    name: str
    scores_path: Path
    metrics: dict[str, dict[str, Any]]
    regions: pd.DataFrame | None
    figures: dict[str, str | None]
    focus: pd.DataFrame | None
    saliency: dict[str, Any] | None
    panels: dict[str, str | None]

    @property
    def summary(self) -> dict[str, Any]:
        """The model's metrics, with focus medians from saliency/summary.json where scores.json lacks them."""
        merged = dict(self.metrics.get("model") or {})
        for key in FOCUS_KEYS:
            if merged.get(key) is None and self.saliency:
                merged[key] = self.saliency.get(key)
        return merged


def read_json(path: Path, sources: Sources, *, required: bool = False) -> dict[str, Any] | None:
    """A JSON object from `path`; None if absent and optional."""
    if not sources.exists(path):
        if required:
            raise InputError(path, "file not found")
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not readable JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def read_csv(path: Path, sources: Sources) -> pd.DataFrame | None:
    """A CSV table from `path`; None if absent."""
    if not sources.exists(path):
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(path, f"not a readable CSV ({exc})") from None


def png_data_uri(path: Path, sources: Sources) -> str | None:
    """The PNG at `path` as a base64 data URI, so the page is one shareable file; None if absent."""
    if not sources.exists(path):
        return None
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise InputError(path, "not a PNG file (bad signature)")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def read_model_outputs(name: str, eval_dir: Path, saliency_dir: Path, sources: Sources) -> ModelInputs:
    """Parse everything the report shows for model `name`: its evaluate and saliency outputs."""
    ev, sal = EvalFiles(eval_dir / name), SaliencyFiles(saliency_dir / name)
    metrics = read_json(ev.scores, sources, required=True)
    if not isinstance(metrics.get("model"), dict):
        raise InputError(ev.scores, 'has no "model" object')
    return ModelInputs(
        name=name,
        scores_path=ev.scores,
        metrics=metrics,
        regions=read_csv(ev.regions, sources),
        figures={f.file: png_data_uri(getattr(ev, f.file), sources) for f in EVAL_FIGURES},
        focus=read_csv(sal.focus, sources),
        saliency=read_json(sal.summary, sources),
        panels={role: png_data_uri(sal.panel(role), sources) for role in PANEL_ROLES},
    )
