"""Shared fixtures: a tiny synthetic cohort made once per test session (coarse voxels: fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gmvol.data.ingest import IngestConfig, ingest
from gmvol.data.preprocess import PreprocessConfig, build_cache
from gmvol.data.split import SplitConfig, write_split
from gmvol.synth.cohort import HeldoutConfig, SynthConfig, synthesize_cohort
from gmvol.synth.head import HeadConfig
from gmvol.synth.render import RenderConfig

TINY_SYNTH = SynthConfig(n_subjects=6, seed=3, voxel_size=4.0, workers=1, seeds=("mni152", "9861"),
                         render=RenderConfig(csf=(0.1, 0.15), gray=(0.45, 0.5), white=(0.85, 0.9),
                                             resolution_mm=(1.0, 2.0), slice_mm=(1.0, 3.0)),
                         head=HeadConfig(size_sd=0.0, skull_strip_fraction=0.0, crop_probability=0.0),
                         heldout=HeldoutConfig(seeds=("15697",), n_subjects=2))
"""Two training anatomies and a held-out one (the seeds take a minute to prepare, once per
session). Every head kept, of one size, and the contrast nearly fixed: four training scans must
make a QC reference under which the test scans pass and a skull-stripped or inverted scan does
not (with `size_sd` the two test heads' histograms fell outside it). Tests of the head-size draw
use `HeadConfig()`."""


@pytest.fixture(scope="session", autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 4 mm subjects in FreeSurfer layout (orig.mgz, aparc+aseg.mgz, ?h.aparc.stats), and
    beside them (`heldout_anatomy`) two subjects of the held-out seed."""
    out = tmp_path_factory.mktemp("cohort") / "synthetic"
    synthesize_cohort(TINY_SYNTH, out, out.parent / "heldout_anatomy")
    return out


@pytest.fixture(scope="session")
def tiny_study(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort ingested, split (train.csv with 1 of 4 subjects in fold valid; 2 test) and
    cached at 10 mm, 18 x 22 x 18 voxels."""
    root = tmp_path_factory.mktemp("study")
    ingest(IngestConfig(subjects_dir=str(tiny_cohort)), root / "subjects.csv", root / "excluded.csv")
    write_split(root / "subjects.csv", root / "split", SplitConfig(test_fraction=0.34, valid_fraction=0.25))
    build_cache(root / "subjects.csv", PreprocessConfig(voxel_size=10.0, shape=(18, 22, 18), workers=1), root / "cache")
    return root
