"""A deterministic train/test split (80/20 by default), with an optional validation carve-out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gmvol.io import write_csv


@dataclass(frozen=True)
class SplitConfig:
    """The `split` params section (defaults equal it)."""

    seed: int = 0
    test_fraction: float = 0.2
    valid_fraction: float = 0.1   # of the training part; 0 disables the validation split

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1 or not 0 <= self.valid_fraction < 1:
            raise ValueError("split fractions must be in (0, 1) for test and [0, 1) for valid")


def fold_rows(table: pd.DataFrame, fold: str) -> pd.DataFrame:
    """The rows of `fold` ('train' or 'valid'); a table without a fold column is all of them."""
    return table[table["fold"] == fold] if "fold" in table else table


def fit_subjects(train_table: pd.DataFrame) -> pd.DataFrame:
    """The subjects models and baselines are fitted on: train.csv without its validation rows."""
    return fold_rows(train_table, "train")


def split_subjects(subjects: pd.DataFrame, cfg: SplitConfig) -> dict[str, pd.DataFrame]:
    """Shuffle by `cfg.seed`; test = round(n * test_fraction) (134 of 670), train = the rest (536).

    The validation subjects stay inside train (the 80% part), marked by `fold == "valid"`, so
    train/test keep the paper's 80/20 while early stopping still has held-out subjects.
    """
    order = np.random.default_rng(cfg.seed).permutation(len(subjects))
    n_test = round(len(subjects) * cfg.test_fraction)
    n_valid = round((len(subjects) - n_test) * cfg.valid_fraction)
    test, rest = np.sort(order[:n_test]), order[n_test:]
    valid = set(rest[:n_valid].tolist())
    train = subjects.iloc[np.sort(rest)].copy()
    train.insert(1, "fold", ["valid" if i in valid else "train" for i in np.sort(rest)])
    return {"train": train.reset_index(drop=True), "test": subjects.iloc[test].reset_index(drop=True)}


def write_split(subjects_csv: Path, out_dir: Path, cfg: SplitConfig) -> dict[str, pd.DataFrame]:
    """Write train.csv (with its `fold` column) and test.csv (same columns as subjects.csv)."""
    parts = split_subjects(pd.read_csv(subjects_csv), cfg)
    for name, part in parts.items():
        write_csv(part, out_dir / f"{name}.csv")
    n_valid = int((parts["train"]["fold"] == "valid").sum())
    print(f"split: train {len(parts['train'])} (of which valid {n_valid}), test {len(parts['test'])}")
    return parts
