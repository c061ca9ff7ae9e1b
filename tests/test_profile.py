"""The README's full-scale profile (one `dvc exp run -S ...` line) must be valid params: every key
exists, every section builds its typed config, and it really is the paper's scale."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from gmvol.config import parse, read_params, section
from gmvol.data.preprocess import PreprocessConfig
from gmvol.synth.cohort import SynthConfig
from gmvol.training.config import TrainConfig, training_configs

ROOT = Path(__file__).resolve().parents[1]


def profile_overrides(heading: str) -> list[str]:
    """The -S values of the first ```bash block under `heading` in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, f"no bash block under {heading!r}"
    words = shlex.split(block.group(1).replace("\\\n", " "), comments=True)
    assert words[:3] == ["dvc", "exp", "run"]
    return [words[i + 1] for i, w in enumerate(words) if w == "-S"]


def apply(params: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """What `dvc exp run -S key=value` does to params.yaml; an unknown key fails here."""
    out = copy.deepcopy(params)
    for item in overrides:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            assert part in node, f"{key}: no section {part!r} in params.yaml"
            node = node[part]
        assert leaf in node, f"{key}: no key {leaf!r} in params.yaml"
        node[leaf] = yaml.safe_load(value)
    return out


def train_config(params: dict[str, Any], model: str) -> TrainConfig:
    """What stages/train.py builds: the same function, on the same sections."""
    return training_configs(section(params, "train"), section(params, f"models.{model}"), model)[1]


def test_full_scale_profile_is_the_papers_scale() -> None:
    params = apply(read_params(ROOT / "params.yaml"), profile_overrides("## The paper's full scale"))
    synth = parse(SynthConfig, params["synthesize"], "synthesize")
    spec = parse(PreprocessConfig, params["preprocess"], "preprocess").spec
    assert synth.n_subjects == 670 and synth.voxel_size == 1.0
    assert spec.voxel_size == 1.0 and spec.shape == (256, 256, 256)
    for name in ("meshnet_count", "meshnet_grid"):
        meshnet = training_configs(params["train"], params["models"][name], name)[0]
        assert meshnet.meshnet.channels == 21 and meshnet.meshnet.checkpointing
    for model in params["study"]["models"]:
        cfg = train_config(params, model)
        # the models' precision is 'auto' (a per-model key, so a train.precision override cannot reach
        # it): bf16 on every GPU that computes it (Ampere and later), fp32 on older ones
        assert cfg.engine == "gpu" and cfg.precision == "auto"
        assert cfg.epochs >= 20  # per-model overrides must not silently keep the CPU defaults
    meshnet_train = train_config(params, "meshnet_count")
    assert meshnet_train.batch_size >= 1
    # the 1 mm training images cannot be held in memory: they are streamed, by loader processes
    images_gib = 536 * 256**3 * 4 / 2**30
    assert images_gib > meshnet_train.preload_gib and meshnet_train.num_workers > 0
    assert params["saliency"]["device"] == "cuda"  # 68 backward passes at 256^3 are for a GPU
