"""A tiny copy of the study in a temporary git + DVC repo, for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY_PARAMS = {
    "synthesize": {"n_subjects": 10, "voxel_size": 4.0, "workers": 1, "seeds": ["mni152", "9861"],
                   "heldout": {"seeds": ["15697"], "n_subjects": 3}},
    "split": {"valid_fraction": 0.25},
    "preprocess": {"voxel_size": 10.0, "shape": [18, 22, 18], "workers": 1},
    "extrapolation": {"n_subjects": 2},
    "train": {"epochs": 1, "batch_size": 2, "threads": 2},
    "models": {"meshnet_grid": {"meshnet": {"channels": 4, "dilations": [1, 2, 1], "grid_size": 2},
                                "train": {"epochs": 1}},
               "meshnet_count": {"meshnet": {"channels": 4, "dilations": [1, 2, 1]}, "train": {"epochs": 1}},
               "meshnet_pool": {"meshnet": {"channels": 4, "dilations": [1, 2, 1]}, "train": {"epochs": 1}},
               "baseline": {"baseline": {"width": 0.05}, "train": {"epochs": 1}}},
    "saliency": {"n_subjects": 1},
}


def merge(base: dict, update: dict) -> dict:
    """Recursive dict update (update wins)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run(cmd: list[str], cwd: Path, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's environment first on PATH (stage commands say `python`),
    plus `env`."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1", **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check)


def make_study(path: Path, params: dict | None = None) -> Path:
    """Copy stages/src/dvc.yaml into `path`, write tiny params, and commit it as a git + DVC repo."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("stages", "src"):
        shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "dvc.yaml", path / "dvc.yaml")
    shutil.copy(ROOT / ".dvcignore", path / ".dvcignore")
    full = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), merge(TINY_PARAMS, params or {}))
    (path / "params.yaml").write_text(yaml.safe_dump(full, sort_keys=False))
    run(["git", "init", "-q"], path)
    dvc("init", "-q", cwd=path)
    dvc("config", "core.analytics", "false", cwd=path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "tiny study"], path)
    return path
