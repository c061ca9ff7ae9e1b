"""The `study` params section: which entries of the `models` section the pipeline runs.

dvc.yaml's `foreach` over `study.models` defines train@, evaluate@ and saliency@ per model, and
the report shows the same list. Keeping that list out of the `train` section means adding a
model changes no params that the other models' stages depend on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StudyConfig:
    """Defaults equal the params file's `study` section."""

    models: tuple[str, ...] = ("meshnet_count", "meshnet_grid", "baseline")

    def __post_init__(self) -> None:
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be a non-empty list of distinct names, got {list(self.models)}")
