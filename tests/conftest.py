"""Shared fixtures: a tiny synthetic cohort made once per test session (coarse voxels: fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gmvol.synth.cohort import SynthConfig, synthesize_cohort

TINY_SYNTH = SynthConfig(n_subjects=6, seed=3, voxel_size=4.0, workers=1)


@pytest.fixture(scope="session", autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 4 mm subjects in FreeSurfer layout (orig.mgz, aparc+aseg.mgz, ?h.aparc.stats)."""
    out = tmp_path_factory.mktemp("cohort") / "synthetic"
    synthesize_cohort(TINY_SYNTH, out)
    return out
