"""The strict config layer: every params section parses into its typed config, a typo in any key
or enumerated value fails naming it, and the dataclass defaults are the values in params.yaml."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gmvol.config import ConfigError, check_overrides, jsonable, merged, parse, read_params, section
from gmvol.data.ingest import IngestConfig
from gmvol.data.preprocess import PreprocessConfig
from gmvol.data.split import SplitConfig
from gmvol.evaluation.run import EvaluateConfig
from gmvol.saliency.stage import SaliencyConfig
from gmvol.study import StudyConfig
from gmvol.synth.cohort import SynthConfig
from gmvol.synth.extrapolation import ExtrapolationConfig
from gmvol.training.config import TrainConfig, training_configs

ROOT = Path(__file__).resolve().parents[1]
PARAMS = read_params(ROOT / "params.yaml")
SECTIONS: dict[str, type] = {
    "study": StudyConfig, "synthesize": SynthConfig, "ingest": IngestConfig, "split": SplitConfig,
    "preprocess": PreprocessConfig, "train": TrainConfig, "evaluate": EvaluateConfig,
    "saliency": SaliencyConfig, "extrapolation": ExtrapolationConfig,
}


def test_every_section_of_params_yaml_is_parsed_by_one_config() -> None:
    assert set(PARAMS) == set(SECTIONS) | {"models"}
    for name, cls in SECTIONS.items():
        parse(cls, PARAMS[name], name)
    for model in PARAMS["models"]:
        training_configs(PARAMS["train"], PARAMS["models"][model], model)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_defaults_are_the_values_in_params_yaml(name: str) -> None:
    """One set of defaults: a config built with no arguments is the params file's section."""
    assert jsonable(SECTIONS[name]()) == PARAMS[name]


# one typo'd key and one out-of-set (or wrongly typed) value per section
TYPOS: list[tuple[str, dict[str, Any], str]] = [
    ("study", {"modles": ["meshnet"]}, r"study: unknown key\(s\) \['modles'\]"),
    ("study", {"models": []}, r"study: models must be a non-empty list"),
    ("synthesize", {"n_subject": 3}, r"synthesize: unknown key\(s\) \['n_subject'\]"),
    ("synthesize", {"voxel_size": "2mm"}, r"synthesize.voxel_size: expected a number"),
    ("ingest", {"subject_dir": "x"}, r"ingest: unknown key\(s\) \['subject_dir'\]"),
    ("ingest", {"target_source": "aparc.stat"}, r"ingest.target_source: must be one of"),
    ("split", {"test_fracion": 0.2}, r"split: unknown key\(s\) \['test_fracion'\]"),
    ("split", {"seed": 1.5}, r"split.seed: expected an integer"),
    ("preprocess", {"voxelsize": 5.0}, r"preprocess: unknown key\(s\) \['voxelsize'\]"),
    ("preprocess", {"normalization": "zscore"}, r"preprocess.normalization: must be one of"),
    ("preprocess", {"shape": [36, 44]}, r"preprocess.shape: expected a list of 3 values"),
    ("train", {"sheduler": "onecycle"}, r"train: unknown key\(s\) \['sheduler'\]"),
    ("train", {"scheduler": "onecylce"}, r"train.scheduler: must be one of \['onecycle', 'constant'\], got 'onecylce'"),
    ("train", {"precision": "fp8"}, r"train.precision: must be one of"),
    ("train", {"augment": {"flipp": True}}, r"train.augment: unknown key\(s\) \['flipp'\]"),
    ("evaluate", {"batchsize": 4}, r"evaluate: unknown key\(s\) \['batchsize'\]"),
    ("evaluate", {"batch_size": 0}, r"evaluate: batch_size must be >= 1"),
    ("saliency", {"metod": "saliency"}, r"saliency: unknown key\(s\) \['metod'\]"),
    ("saliency", {"method": "gradcam"}, r"saliency.method: must be one of"),
    ("extrapolation", {"n_subject": 3}, r"extrapolation: unknown key\(s\) \['n_subject'\]"),
    ("extrapolation", {"below": [0.9, 1.1]}, r"extrapolation: need 0 < below"),
]


@pytest.mark.parametrize(("name", "change", "message"), TYPOS)
def test_a_typo_fails_naming_the_section_and_key(name: str, change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(SECTIONS[name], merged(PARAMS[name], change), name)


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "meshnet", "meshnet": {"chanels": 8}}, r"models.meshnet.meshnet: unknown key\(s\) \['chanels'\]"),
    ({"name": "meshnet", "meshnet": {"head": "mlp"}}, r"models.meshnet.*head must be one of"),
    ({"name": "meshnet", "train": {"epoch": 3}}, r"models.meshnet.train: unknown key\(s\) \['epoch'\]"),
    ({"name": "meshnet", "train": {"scheduler": "step"}}, r"models.meshnet.train.scheduler: must be one of"),
    ({"name": "meshnet", "train": {"augment": {"flip": "no"}}}, r"models.meshnet.train.augment.flip: expected true"),
])
def test_model_entries_and_their_train_overrides_are_strict(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        training_configs(PARAMS["train"], entry, "meshnet")


def test_overrides_merge_into_the_train_section_recursively() -> None:
    model, cfg = training_configs(PARAMS["train"], {"name": "meshnet", "meshnet": {"channels": 5},
                                                    "train": {"epochs": 3, "augment": {"flip": False}}}, "meshnet")
    assert model.meshnet.channels == 5 and cfg.epochs == 3 and cfg.lr == PARAMS["train"]["lr"]
    # a nested override changes only its own key: the other augment settings stay the section's
    assert cfg.augment.flip is False and cfg.augment.shift_voxels == PARAMS["train"]["augment"]["shift_voxels"]
    check_overrides(TrainConfig, {"augment": {"intensity": 0.2}}, "x")  # partial is fine


def test_section_names_a_missing_key() -> None:
    with pytest.raises(ConfigError, match=r"models.resnet2: missing from the params file"):
        section(PARAMS, "models.resnet2")
    assert section(PARAMS, "models.meshnet_count.meshnet.head") == PARAMS["models"]["meshnet_count"]["meshnet"]["head"]


def test_parsed_configs_are_frozen_and_typed() -> None:
    cfg = parse(PreprocessConfig, PARAMS["preprocess"], "preprocess")
    assert isinstance(cfg.shape, tuple) and isinstance(cfg.voxel_size, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.voxel_size = 1.0  # type: ignore[misc]
    assert not hasattr(cfg.spec, "workers")


def test_the_train_stage_fails_on_a_typo_before_any_work(tmp_path: Path) -> None:
    params = copy.deepcopy(PARAMS)
    params["train"]["scheduler"] = "onecylce"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), "--params", str(tmp_path / "params.yaml"),
         "--model", "meshnet_grid", "--train", "missing.csv", "--cache", "missing", "--out", str(tmp_path / "m"),
         "--curves", str(tmp_path / "c.csv"), "--metrics", str(tmp_path / "m.json"),
         "--synthetic-dir", "data/synthetic"],
        capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().endswith("train.scheduler: must be one of ['onecycle', 'constant'], got 'onecylce'")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()
